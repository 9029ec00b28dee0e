"""The result of a solver run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["SolverResult"]


@dataclass
class SolverResult:
    """x: the reconstruction (the operator's domain: (B, C, H, W), complex for MRI);
    history: per-iteration monitor values (plain lists, JSON-serializable);
    converged / stop_reason: why the run ended ('tolerance', 'max iterations', 'diverged: ...');
    objective: the function the iteration minimizes, in words; params: the parameters used."""

    x: torch.Tensor
    history: dict[str, list] = field(default_factory=dict)
    converged: bool = False
    stop_reason: str = ""
    iterations: int = 0
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    objective: str = ""

    def summary(self) -> dict[str, Any]:
        last = {k: v[-1] for k, v in self.history.items() if v and k != "iteration"}
        return {
            "converged": self.converged,
            "stop_reason": self.stop_reason,
            "iterations": self.iterations,
            "seconds": self.seconds,
            "params": self.params,
            "objective": self.objective,
            "last": last,
        }

    def to_json(self) -> str:
        return json.dumps({**self.summary(), "history": self.history})
