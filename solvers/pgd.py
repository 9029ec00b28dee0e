"""PnP proximal gradient descent (and its accelerated, FISTA variant).

    x_{k+1} = prox(x_k − γ ∇D(x_k)),   D(x) = (λ/2)||Ax − y||²,   ∇D(x) = λ Aᴴ(Ax − y).

With a prior whose ``prox`` is prox_R (R including its own strength), a fixed point minimizes
γ·D(x) + R(x): the step γ sets the balance, so it is part of the model, not just of the
algorithm. The default γ = 0.99/(λ||A||²) is inside the convergence range for convex R.
The iteration is exactly affine-equivariant when the prox is: nothing else is added (no clamping,
no normalization), so data a·y + b·A1 started at a·x₀ + b·1 gives iterates a·x_k + b·1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from operators.base import LinearOperator, inner
from solvers.monitor import Monitor
from solvers.result import SolverResult

__all__ = ["pnp_pgd"]


def pnp_pgd(
    op: LinearOperator,
    y: torch.Tensor,
    prior,
    *,
    lam: float = 1.0,
    step: float | None = None,
    iters: int = 100,
    tol: float = 1e-5,
    x0: torch.Tensor | None = None,
    accelerated: bool = False,
    reference: torch.Tensor | None = None,
    data_range: float | None = None,
    objective_every: int = 0,
    growth: float = 1e4,
    progress: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> SolverResult:
    """PnP-PGD from x0 (default Aᴴy); returns the last iterate and its history.

    accelerated: FISTA momentum with adaptive restart (momentum is reset when the step goes
    against the previous direction), which keeps equivariance (the test is invariant to a·x + b).
    """
    if step is None:
        step = 0.99 / (lam * op.norm_sq())
    if step <= 0 or lam <= 0:
        raise ValueError(f"step and lam must be > 0, got step={step}, lam={lam}")
    x = op.adjoint(y) if x0 is None else x0.clone()
    mon = Monitor(
        op,
        y,
        lam,
        prior,
        step,
        iters,
        tol,
        reference,
        data_range,
        objective_every,
        growth=growth,
        progress=progress,
        desc="PnP-FISTA" if accelerated else "PnP-PGD",
    )
    mon.start(x)
    z, t = x, 1.0
    reason, k = "max iterations", 0
    for k in range(1, iters + 1):
        with torch.no_grad():
            grad = lam * op.adjoint(op.forward(z) - y)
            x_new = prior.prox(z - step * grad)
        if accelerated:
            if float(inner(z - x_new, x_new - x).sum()) > 0:  # adaptive restart
                t = 1.0
                z = x_new
            else:
                t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
                z = x_new + ((t - 1) / t_new) * (x_new - x)
                t = t_new
        else:
            z = x_new
        stop = mon.record(k, x_new, x)
        if stop is not None and stop.startswith("diverged"):
            reason = stop
            break
        x = x_new
        if callback is not None:
            callback(k, x)
        if stop is not None:
            reason = stop
            break
    return SolverResult(
        x=x,
        history=mon.history,
        converged=reason == "tolerance",
        stop_reason=reason,
        iterations=k,
        seconds=mon.seconds,
        params={"lam": lam, "step": step, "iters": iters, "tol": tol, "accelerated": accelerated},
        objective=f"γ·D(x) + R(x) with γ = {step:.4g}, D = (λ/2)||Ax − y||², λ = {lam:g}",
    )
