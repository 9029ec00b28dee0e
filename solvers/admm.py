"""PnP-ADMM.

    x_{k+1} = argmin_x D(x) + (ρ/2)||x − (z_k − u_k)||²      (closed form or warm-started CG)
    z_{k+1} = prox(x_{k+1} + u_k)
    u_{k+1} = u_k + x_{k+1} − z_{k+1}

with D(x) = (λ/2)||Ax − y||². The x-update solves (λAᴴA + ρI) x = λAᴴy + ρ(z − u) by the
operator's ``solve_normal`` when it has a closed form (single-coil Cartesian MRI), else by
conjugate gradients warm-started at the previous x. With prox = prox_R the iteration's fixed
points minimize D(x)/ρ + R(x). The returned image is z (it lies in the prior's range). Exactly
affine-equivariant when the prox is: CG's iterates scale with the data (see ``solvers.cg``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from operators.base import LinearOperator
from solvers.cg import conjugate_gradient
from solvers.monitor import Monitor
from solvers.result import SolverResult

__all__ = ["pnp_admm"]


def pnp_admm(
    op: LinearOperator,
    y: torch.Tensor,
    prior,
    *,
    lam: float = 1.0,
    rho: float = 1.0,
    iters: int = 100,
    tol: float = 1e-5,
    x0: torch.Tensor | None = None,
    cg_iters: int = 20,
    cg_tol: float = 1e-6,
    reference: torch.Tensor | None = None,
    data_range: float | None = None,
    objective_every: int = 0,
    growth: float = 1e4,
    progress: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> SolverResult:
    """PnP-ADMM from x0 (default Aᴴy); returns z and its history."""
    if rho <= 0 or lam <= 0:
        raise ValueError(f"rho and lam must be > 0, got rho={rho}, lam={lam}")
    x = op.adjoint(y) if x0 is None else x0.clone()
    z, u = x.clone(), torch.zeros_like(x)
    mon = Monitor(
        op,
        y,
        lam,
        prior,
        1.0 / rho,
        iters,
        tol,
        reference,
        data_range,
        objective_every,
        growth=growth,
        progress=progress,
        desc="PnP-ADMM",
    )
    mon.start(x)
    with torch.no_grad():
        aty = lam * op.adjoint(y)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return lam * op.normal(v) + rho * v

    reason, k, cg_used = "max iterations", 0, []
    for k in range(1, iters + 1):
        with torch.no_grad():
            rhs = aty + rho * (z - u)
            closed = op.solve_normal(rhs, lam, rho)
            if closed is None:
                x, n_cg = conjugate_gradient(normal, rhs, x, cg_iters, cg_tol)
                cg_used.append(n_cg)
            else:
                x = closed
            z_new = prior.prox(x + u)
            u = u + x - z_new
        primal = float(torch.linalg.vector_norm(x - z_new))
        dual = rho * float(torch.linalg.vector_norm(z_new - z))
        stop = mon.record(k, z_new, z, primal, dual)
        if stop is not None and stop.startswith("diverged"):
            reason = stop
            break
        z = z_new
        if callback is not None:
            callback(k, z)
        if stop is not None:
            reason = stop
            break
    params = {
        "lam": lam,
        "rho": rho,
        "iters": iters,
        "tol": tol,
        "cg_iters": cg_iters,
        "cg_tol": cg_tol,
        "x_update": "closed form" if not cg_used else "cg",
    }
    if cg_used:
        params["cg_iterations_mean"] = sum(cg_used) / len(cg_used)
    return SolverResult(
        x=z,
        history=mon.history,
        converged=reason == "tolerance",
        stop_reason=reason,
        iterations=k,
        seconds=mon.seconds,
        params=params,
        objective=f"D(x)/ρ + R(x) with ρ = {rho:.4g}, D = (λ/2)||Ax − y||², λ = {lam:g}",
    )
