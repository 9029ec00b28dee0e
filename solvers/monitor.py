"""Convergence monitoring shared by the solvers: what happened at each iteration, and when to stop.

History (plain lists, one entry per iteration, ``None`` where a value was not computed):
``iteration``, ``rel_change`` = ||x_{k+1} − x_k|| / ||x_k||,
``data_fidelity`` D(x) = (λ/2)||Ax − y||²,
``primal_residual`` / ``dual_residual`` (ADMM), ``regularizer`` R(x) and ``objective`` w·D(x) + R(x)
every ``objective_every`` iterations when the prior can evaluate R (w = γ for PnP-PGD, 1/ρ for
PnP-ADMM: the function a fixed point minimizes), ``psnr`` / ``ssim`` against a reference
(magnitude for complex images), ``seconds`` (cumulative solver time, metric evaluation excluded).

Stopping: ``tolerance`` (rel_change ≤ tol), ``max iterations``, or divergence: a non-finite iterate
or ||x|| beyond ``growth`` times the starting scale; the solver then returns the last good iterate.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from operators.base import LinearOperator
from priors.base import has_regularizer

__all__ = ["Monitor"]

KEYS = (
    "iteration",
    "rel_change",
    "data_fidelity",
    "primal_residual",
    "dual_residual",
    "regularizer",
    "objective",
    "psnr",
    "ssim",
    "seconds",
)


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


class Monitor:
    def __init__(
        self,
        op: LinearOperator,
        y: torch.Tensor,
        lam: float,
        prior: Any,
        objective_weight: float,
        max_iters: int,
        tol: float,
        reference: torch.Tensor | None = None,
        data_range: float | None = None,
        objective_every: int = 0,
        ssim_every: int = 5,
        growth: float = 1e4,
        progress: bool = False,
        desc: str = "",
    ) -> None:
        self.op, self.y, self.lam, self.prior = op, y, lam, prior
        self.w, self.max_iters, self.tol = objective_weight, max_iters, tol
        self.objective_every = objective_every if has_regularizer(prior) else 0
        self.ssim_every, self.growth = ssim_every, growth
        self.history: dict[str, list] = {k: [] for k in KEYS}
        self.ref = None if reference is None else self._mag(reference)
        if self.ref is not None and data_range is None:
            data_range = float(self.ref.max() - self.ref.min())
        self.data_range = data_range
        self.seconds = 0.0
        self._t0 = time.perf_counter()
        self._scale = 1.0
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=max_iters, desc=desc or "solve", leave=False)

    @staticmethod
    def _mag(t: torch.Tensor) -> np.ndarray:
        t = t.detach()
        return (t.abs() if t.is_complex() else t).to("cpu", torch.float64).numpy()[0, 0]

    def start(self, x0: torch.Tensor) -> None:
        """Remember the starting scale (for runaway detection) and start the clock."""
        aty = self.op.adjoint(self.y)
        self._scale = max(_norm(x0), _norm(aty) / max(self.op.norm_sq(), 1e-30), 1e-30)
        self._t0 = time.perf_counter()

    def data_fidelity(self, x: torch.Tensor) -> float:
        return 0.5 * self.lam * _norm(self.op.forward(x) - self.y) ** 2

    def record(
        self,
        k: int,
        x: torch.Tensor,
        x_prev: torch.Tensor,
        primal: float | None = None,
        dual: float | None = None,
    ) -> str | None:
        """Log iteration k (1-based) for iterate x; returns a stop reason or None to go on."""
        self.seconds += time.perf_counter() - self._t0
        h = self.history
        finite = bool(torch.isfinite(torch.view_as_real(x) if x.is_complex() else x).all())
        nx = _norm(x) if finite else math.inf
        rel = _norm(x - x_prev) / max(_norm(x_prev), 1e-30) if finite else math.inf
        vals: dict[str, Any] = dict.fromkeys(KEYS)
        vals.update(
            iteration=k,
            rel_change=rel,
            primal_residual=primal,
            dual_residual=dual,
            seconds=self.seconds,
        )
        reason = None
        if not finite:
            reason = f"diverged: non-finite values at iteration {k}"
        elif nx > self.growth * self._scale:
            reason = (
                f"diverged: ||x|| grew to {nx:.3g} (> {self.growth:g}× the start) at iteration {k}"
            )
        if reason is None:
            with torch.no_grad():
                vals["data_fidelity"] = self.data_fidelity(x)
            if self.objective_every and (k % self.objective_every == 0 or k == 1):
                reg = self._regularizer(x)
                vals["regularizer"] = reg
                vals["objective"] = self.w * vals["data_fidelity"] + reg
            if self.ref is not None:
                mag = self._mag(x)
                mse = float(np.mean((mag - self.ref) ** 2))
                vals["psnr"] = 10 * math.log10(self.data_range**2 / mse) if mse > 0 else math.inf
                if self.ssim_every and (k % self.ssim_every == 0 or k == 1):
                    from skimage.metrics import structural_similarity

                    vals["ssim"] = float(
                        structural_similarity(mag, self.ref, data_range=self.data_range)
                    )
            if rel <= self.tol:
                reason = "tolerance"
            elif k >= self.max_iters:
                reason = "max iterations"
        for key in KEYS:
            h[key].append(vals[key])
        if self._bar is not None:
            post = {"rel": f"{rel:.2e}"}
            if vals["psnr"] is not None:
                post["psnr"] = f"{vals['psnr']:.2f}"
            self._bar.set_postfix(post)
            self._bar.update(1)
            if reason is not None:
                self._bar.close()
        self._t0 = time.perf_counter()
        return reason

    def _regularizer(self, x: torch.Tensor) -> float:
        return float(self.prior.regularizer(x).sum())
