"""The result of a solver run."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["SolverResult"]


@dataclass
class SolverResult:
    """What a solver returns.

    Attributes:
        x: the reconstruction, on the operator's domain (B, C, H, W), complex for MRI.
        history: per-iteration monitor values, a dict of equally long plain lists
            (JSON-serializable; see ``solvers.monitor``).
        converged: True when the run stopped on its tolerance.
        stop_reason: 'tolerance', 'max iterations', 'stopped by callback' or 'diverged: ...'.
        iterations: iterations run (the last one may be the rejected, diverged one).
        seconds: solver wall time, monitor work excluded.
        params: the parameters used (plain numbers and strings).
        objective: the function the iteration minimizes at its fixed points, in words.
    """

    x: torch.Tensor
    history: dict[str, list] = field(default_factory=dict)
    converged: bool = False
    stop_reason: str = ""
    iterations: int = 0
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    objective: str = ""

    def to_dict(self, include_history: bool = True) -> dict[str, Any]:
        """Everything but the image, as plain data."""
        out: dict[str, Any] = {
            "converged": self.converged,
            "stop_reason": self.stop_reason,
            "iterations": self.iterations,
            "seconds": self.seconds,
            "params": self.params,
            "objective": self.objective,
            "final": {k: v[-1] for k, v in self.history.items() if v and k != "iteration"},
        }
        if include_history:
            out["history"] = self.history
        return out

    def to_json(self, include_history: bool = True, indent: int | None = None) -> str:
        """``to_dict`` as strict JSON (non-finite numbers are already None in the history)."""
        return json.dumps(self.to_dict(include_history), indent=indent, allow_nan=False)

    def summary(self) -> str:
        """One line: how the run ended, in how many iterations and seconds, final metrics."""
        parts = [
            f"{self.stop_reason} after {self.iterations} iterations, {self.seconds:.3g} s",
        ]
        final = self.to_dict(include_history=False)["final"]
        for key, fmt in (("rel_change", ".2e"), ("objective", ".6g"), ("psnr", ".2f")):
            if final.get(key) is not None:
                parts.append(f"{key} {final[key]:{fmt}}")
        return "; ".join(parts)

    def plot(self, path: str | os.PathLike, title: str = "") -> Path:
        """The convergence plot of ``history`` as a PNG (see ``solvers.monitor.plot_history``)."""
        from solvers.monitor import plot_history

        return plot_history(self.history, path, title=title)
