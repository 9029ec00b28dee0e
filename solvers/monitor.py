"""Convergence monitoring shared by the solvers: what happened at each iteration, and when to stop.

History: a dict of equally long plain lists (JSON-serializable), one entry per iteration and
``None`` where a value was not computed (or was not finite), so ``history[key][i]`` always belongs
to ``history['iteration'][i]``:

* ``iteration`` (1-based), ``rel_change`` = ||x_k − x_{k−1}|| / ||x_{k−1}|| (for a batch, the
  largest over its items, so ``tol`` holds for each problem),
* ``data_fidelity`` D(x_k) = (λ/2)||A x_k − y||²,
* ``primal_residual`` ||x − z|| and ``dual_residual`` ρ||z − z_prev|| (PnP-ADMM; None for PGD),
* ``regularizer`` R(x_k) and ``objective`` w·D(x_k) + R(x_k), when the prior can evaluate R
  (``priors.base.has_regularizer``), at iteration 1, every ``objective_every`` iterations and at
  the last one; w is the solver's weight on the data term, w = γ for PnP-PGD (a fixed point
  minimizes γD + R) and w = 1/ρ for PnP-ADMM (D/ρ + R),
* ``psnr`` (every iteration) and ``ssim`` (every ``ssim_every``) against a ``reference``, on the
  magnitude for complex images, with ``data_range`` = max − min of the reference magnitude unless
  given (MRI passes the reference maximum),
* ``seconds``: cumulative solver wall time, *excluding* the monitor's own work (metrics, data
  fidelity, objective, callbacks), which is accumulated separately in ``monitor_seconds``,
* optional solver-specific extra keys (e.g. ADMM's ``cg_iterations``).

Stopping (``record`` returns a reason): ``'tolerance'`` when rel_change ≤ tol (converged),
``'max iterations'``, or ``'diverged: ...'`` when the iterate has a non-finite value or
||x_k|| > growth·max(||x_0||, ||Aᴴy||/||A||²) (runaway growth; ||Aᴴy||/||A||² is a lower bound on
the norm of a least-squares solution, so the scale is meaningful even from x_0 = 0). On divergence
the solver returns the previous, last good iterate.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from operators.base import LinearOperator, norm
from priors.base import has_regularizer
from solvers.metrics import psnr, real64

__all__ = ["Monitor", "plot_history", "HISTORY_KEYS", "rising_change"]

HISTORY_KEYS = (
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
    "monitor_seconds",
)


def _norm(t: torch.Tensor) -> float:
    return float(norm(t))


def _finite_or_none(v: Any) -> Any:
    """JSON-safe number: non-finite floats become None."""
    if v is None:
        return None
    if isinstance(v, bool | int):
        return v
    v = float(v)
    return v if math.isfinite(v) else None


def rel_change(x: torch.Tensor, x_prev: torch.Tensor) -> float:
    """max over the batch's items of ||x_b − x_prev_b|| / ||x_prev_b||: a batch counts as
    converged when each of its problems has (one pooled norm let a large, settled item hide a
    small one still moving)."""
    d = (x - x_prev).reshape(x.shape[0], -1)
    p = x_prev.reshape(x.shape[0], -1)
    if d.is_complex():
        d, p = torch.view_as_real(d).flatten(1), torch.view_as_real(p).flatten(1)
    num = torch.linalg.vector_norm(d, dim=1)
    den = torch.linalg.vector_norm(p, dim=1)
    den = den.clamp_min(torch.finfo(den.dtype).tiny)
    return float((num / den).max())


def _all_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(torch.view_as_real(x) if x.is_complex() else x).all())


class Monitor:
    """Records one solver run and decides when it stops (see the module docstring).

    Args:
        op, y, lam: the data term D(x) = (λ/2)||Ax − y||².
        prior: the prior (R is evaluated when it has ``regularizer``).
        objective_weight: w in the monitored objective w·D + R (γ for PGD, 1/ρ for ADMM).
        max_iters, tol: iteration budget and tolerance on rel_change.
        reference, data_range: ground truth (B, C, H, W) for PSNR/SSIM, and their data range.
        objective_every: evaluate R every this many iterations (0: never).
        ssim_every: SSIM cadence; default every iteration up to 128² pixels, else every 5th.
        growth: runaway factor for the divergence test.
        progress: show a tqdm bar with PSNR / rel change; desc: its label.
        extra_keys: solver-specific history keys filled through ``record(..., extra=...)``.
    """

    def __init__(
        self,
        op: LinearOperator,
        y: torch.Tensor,
        *,
        lam: float,
        prior: Any,
        objective_weight: float,
        max_iters: int,
        tol: float,
        reference: torch.Tensor | None = None,
        data_range: float | None = None,
        objective_every: int = 10,
        ssim_every: int | None = None,
        growth: float = 1e3,
        progress: bool = False,
        desc: str = "solve",
        extra_keys: Sequence[str] = (),
    ) -> None:
        self.op, self.y, self.lam, self.prior = op, y, float(lam), prior
        self.w, self.max_iters, self.tol = float(objective_weight), int(max_iters), float(tol)
        self.objective_every = int(objective_every) if has_regularizer(prior) else 0
        self.growth = float(growth)
        self.keys = HISTORY_KEYS + tuple(extra_keys)
        self.history: dict[str, list] = {k: [] for k in self.keys}
        self.ref = None if reference is None else self._magnitude(reference)
        if self.ref is not None and data_range is None:
            data_range = float(self.ref.max() - self.ref.min())
        self.data_range = None if data_range is None else float(data_range)
        if self.ref is not None and not self.data_range:
            raise ValueError("data_range must be > 0 (the reference is constant: pass data_range)")
        if ssim_every is None:
            ssim_every = 1 if self.ref is None or self.ref[0].size <= 128 * 128 else 5
        self.ssim_every = int(ssim_every)
        self.seconds = 0.0
        self.monitor_seconds = 0.0
        self.scale = 1.0
        self._t0 = time.perf_counter()
        self._bar = None
        if progress:
            from solvers.progress import progress_bar

            self._bar = progress_bar(total=self.max_iters, desc=desc, leave=False)

    # --- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _magnitude(t: torch.Tensor) -> np.ndarray:
        """(B, C, H, W) -> float64 numpy magnitude (CPU), for PSNR/SSIM."""
        arr = real64(t)
        return arr.reshape(-1, *arr.shape[-2:])

    def data_fidelity(self, x: torch.Tensor) -> float:
        """D(x) = (λ/2)||Ax − y||² (summed over the batch)."""
        with torch.no_grad():
            return 0.5 * self.lam * self.op.residual_sq(x, self.y)

    def regularizer(self, x: torch.Tensor) -> float:
        """R(x) summed over the batch."""
        with torch.no_grad():
            return float(self.prior.regularizer(x).sum())

    def psnr(self, x: torch.Tensor) -> float:
        return psnr(self._magnitude(x), self.ref, self.data_range)

    def ssim(self, x: torch.Tensor) -> float:
        from skimage.metrics import structural_similarity

        mag = self._magnitude(x)
        vals = [
            structural_similarity(a, r, data_range=self.data_range)
            for a, r in zip(mag, self.ref, strict=True)
        ]
        return float(np.mean(vals))

    # --- the run ---------------------------------------------------------------------------
    def start(self, x0: torch.Tensor) -> None:
        """Set the runaway scale max(||x0||, ||Aᴴy||/||A||²) and start the clock."""
        t = time.perf_counter()
        with torch.no_grad():
            aty = _norm(self.op.adjoint(self.y))
        ls_scale = aty / self.op.norm_sq() if self.op.norm_sq() > 0 else 0.0
        scale = max(_norm(x0), ls_scale)
        self.scale = scale if scale > 0 and math.isfinite(scale) else 1.0
        self.monitor_seconds += time.perf_counter() - t
        self._t0 = time.perf_counter()

    def record(
        self,
        k: int,
        x: torch.Tensor,
        x_prev: torch.Tensor,
        *,
        primal: float | None = None,
        dual: float | None = None,
        extra: dict[str, Any] | None = None,
        regularizer: float | None = None,
    ) -> str | None:
        """Log iteration k (1-based) with iterate x (previous x_prev); returns a stop reason or
        None to go on."""
        now = time.perf_counter()
        self.seconds += now - self._t0
        vals: dict[str, Any] = dict.fromkeys(self.keys)
        vals.update(extra or {})
        vals.update(iteration=k, primal_residual=primal, dual_residual=dual)
        reason = None
        if not _all_finite(x):
            reason = f"diverged: non-finite values at iteration {k}"
        else:
            nx = _norm(x)
            vals["rel_change"] = rel_change(x, x_prev)
            if nx > self.growth * self.scale:
                reason = (
                    f"diverged: ||x|| = {nx:.3g} exceeds {self.growth:g}× the starting scale "
                    f"{self.scale:.3g} at iteration {k}"
                )
        if reason is None:
            if vals["rel_change"] <= self.tol:
                reason = "tolerance"
            elif k >= self.max_iters:
                reason = "max iterations"
            vals["data_fidelity"] = self.data_fidelity(x)
            every = self.objective_every
            if regularizer is not None:  # given by the prox itself (free): every iteration
                vals["regularizer"] = regularizer
                vals["objective"] = self.w * vals["data_fidelity"] + regularizer
            elif every and (k == 1 or k % every == 0 or reason is not None):
                vals["regularizer"] = self.regularizer(x)
                vals["objective"] = self.w * vals["data_fidelity"] + vals["regularizer"]
            if self.ref is not None:
                vals["psnr"] = self.psnr(x)
                if self.ssim_every and (k == 1 or k % self.ssim_every == 0 or reason is not None):
                    vals["ssim"] = self.ssim(x)
        self.monitor_seconds += time.perf_counter() - now
        vals["seconds"], vals["monitor_seconds"] = self.seconds, self.monitor_seconds
        for key in self.keys:
            self.history[key].append(_finite_or_none(vals[key]))
        if self._bar is not None:
            rel = vals["rel_change"]
            post = {"rel": "nan" if rel is None else f"{rel:.2e}"}
            if vals["psnr"] is not None:
                post["psnr"] = f"{vals['psnr']:.2f}"
            self._bar.set_postfix(post)
            self._bar.update(1)
            if reason is not None:
                self.close()
        self._t0 = time.perf_counter()
        return reason

    def call(self, fn: Callable[..., Any] | None, *args: Any) -> Any:
        """Run a user callback, counting its time as monitor time, not solver time."""
        if fn is None:
            return None
        t = time.perf_counter()
        out = fn(*args)
        self.monitor_seconds += time.perf_counter() - t
        self._t0 = time.perf_counter()
        return out

    def after_accept(
        self, stop: str | None, callback: Callable[..., Any] | None, k: int, x: torch.Tensor
    ) -> str | None:
        """Once iterate k is accepted: run the callback (returning True stops the run) and give
        the reason to stop now, or None to go on."""
        if self.call(callback, k, x) is True:
            return "stopped by callback" if stop is None else stop
        return stop

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


RUNAWAY_FACTOR, RUNAWAY_RUN = 10.0, 5  # rising_change's defaults (recon's warning names them)


def rising_change(
    rel_change: Sequence[float | None],
    factor: float = RUNAWAY_FACTOR,
    run: int = RUNAWAY_RUN,
) -> int | None:
    """The iteration (1-based) at which a run's relative change ||z_k − z_{k−1}||/||z_{k−1}|| had
    grown for ``run`` iterations in a row to ≥ ``factor`` × its smallest value so far; None if
    it never did.

    A converging run's relative change falls (FISTA's may ripple, but not by 10×). One that
    falls and then grows geometrically is running away slowly: it has left its best iterate
    behind without the blow-up that the divergence test (||x|| past ``growth`` × the start)
    catches. Measured: a PnP-ADMM run on a limited-angle phantom fell to 9.2e-3 at iteration 13
    and grew 1.3× per iteration to 0.15 at 30 while its PSNR fell from 15.6 to 10.9 dB."""
    smallest, rising, prev = math.inf, 0, None
    for k, r in enumerate(rel_change, start=1):
        if r is None or not math.isfinite(r):
            prev = None
            continue
        rising = rising + 1 if prev is not None and r > prev else 0
        smallest, prev = min(smallest, r), r
        if rising >= run and r >= factor * smallest:
            return k
    return None


def _present(history: dict[str, list], key: str) -> tuple[list[float], list[float]]:
    its = history.get("iteration", [])
    pairs = [(i, v) for i, v in zip(its, history.get(key, []), strict=False) if v is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_history(history: dict[str, list], path: str | os.PathLike, title: str = "") -> Path:
    """Draw rel change (log), the objective (or the data fidelity when R is unknown) and PSNR
    per iteration into a PNG at ``path`` (written atomically); returns the path.

    Uses matplotlib's Agg canvas directly, so no global backend is changed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels: list[tuple[str, str, bool]] = [("rel_change", "relative change", True)]
    if _present(history, "objective")[0]:
        panels.append(("objective", "objective w·D + R", False))
    elif _present(history, "data_fidelity")[0]:
        panels.append(("data_fidelity", "data fidelity D", True))
    if _present(history, "psnr")[0]:
        panels.append(("psnr", "PSNR (dB)", False))
    fig = Figure(figsize=(4.0 * len(panels), 3.2))
    FigureCanvasAgg(fig)
    for i, (key, label, log) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        its, vals = _present(history, key)
        positive = [(a, v) for a, v in zip(its, vals, strict=True) if not log or v > 0]
        if positive:
            ax.plot(*zip(*positive, strict=True), marker="." if len(positive) < 40 else None)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
