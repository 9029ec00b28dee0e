"""PnP-ADMM.

    x_{k+1} = argmin_x D(x) + (ρ/2)||x − (z_k − u_k)||²      (closed form or warm-started CG)
    z_{k+1} = prox(x_{k+1} + u_k)
    u_{k+1} = u_k + x_{k+1} − z_{k+1}

with D(x) = (λ/2)||Ax − y||² and u the scaled dual variable. The x-update solves
(λAᴴA + ρI) x = λAᴴy + ρ(z − u) with the operator's ``solve_normal`` when it has a closed form
(e.g. single-coil Cartesian MRI), else by conjugate gradients warm-started at the previous x and
stopped when the residual has dropped by ``cg_tol`` relative to its warm-start residual (or after
``cg_iters``). With prox = prox_R the fixed points minimize D(x)/ρ + R(x).

Start: x = z = x0 (default 0: Aᴴy is about ||A||² times the image's scale), u = 0. Returned
image: z, the prior's output (the prior-consistent iterate); the monitor's rel_change,
divergence test and callback use z too.

Exact affine equivariance when the prox is: with y' = a·y + b·A1 and x0' = a·x0 + b·1, the
right-hand side becomes a·rhs + b·(λAᴴA + ρI)1, the CG warm start a·x + b·1, so its residuals
scale by a and its iterates are a·x_k + b·1; CG's stopping rule (relative to its initial
residual) and the closed form are invariant too. Hence x' = a·x + b·1, z' = a·z + b·1, u' = a·u.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from operators.base import LinearOperator, norm
from priors.base import Prior, has_free_regularizer
from solvers.cg import conjugate_gradient
from solvers.inputs import as_prior, check_positive, check_prox_output, check_start
from solvers.monitor import Monitor
from solvers.result import SolverResult

__all__ = ["pnp_admm"]


RHO_REL = 0.01
"""The default ρ is RHO_REL·λ·||A||² (``op.norm_sq()``): the CT presets' rho_rel."""

MX_REFRESH = 10
"""ADMM recomputes (λAᴴA + ρI)x exactly every this many iterations (else it is carried)."""


def _norm(t: torch.Tensor) -> float:
    return float(norm(t))


def pnp_admm(
    op: LinearOperator,
    y: torch.Tensor,
    prior: Prior,
    *,
    lam: float = 1.0,
    rho: float | None = None,
    iters: int = 100,
    tol: float = 1e-5,
    x0: torch.Tensor | None = None,
    cg_iters: int = 20,
    cg_tol: float = 1e-6,
    precondition: bool = True,
    reference: torch.Tensor | None = None,
    data_range: float | None = None,
    objective_every: int = 0,
    growth: float = 1e3,
    progress: bool = False,
    callback: Callable[[int, torch.Tensor], bool | None] | None = None,
) -> SolverResult:
    """PnP-ADMM; fixed points minimize D(x)/ρ + R(x).

    Args:
        op, y: forward operator and data (B, *op.range_shape).
        prior: anything with ``prox(v)``, or a callable denoiser v -> x (``solvers.inputs``);
            with ``regularizer`` the objective D/ρ + R is monitored.
        lam: λ in D(x) = (λ/2)||Ax − y||².
        rho: the ADMM penalty ρ > 0, which is part of the model: the fixed points minimize
            D(x)/ρ + R(x), so ρ weighs the prior against the data and must follow the scale
            of AᴴA. Choose ρ = rho_rel·λ·||A||² with ||A||² = ``op.norm_sq()`` (cached); the
            CT presets use rho_rel 0.005–0.02, the MRI presets 0.0001–0.003 (larger: smoother).
            Default (None): ``RHO_REL``·λ·||A||² = 0.01·λ·||A||², recorded in the result's
            params (``rho``, and ``rho_rule`` for this default). A fixed ρ such as 1 is
            scale-blind: on a 128² CT projector (||A||² ≈ 7700) it leaves the prior almost no
            weight against the data.
        iters, tol: at most ``iters`` iterations; stop when ||z_{k+1} − z_k||/||z_k|| ≤ tol (for
            a batch: for every item).
        x0: start (B, *op.domain_shape); default 0 (the first x-update is then the
            regularized least-squares image; Aᴴy, the former default, is about ||A||² times the
            image's scale and cost a 128² CT phantom 52 iterations against 31 to the same
            image). An image-scale start (FBP, the zero-filled image) saves iterations.
        cg_iters, cg_tol: CG budget and residual reduction for the x-update when the operator
            has no closed-form ``solve_normal``.
        precondition: precondition that CG with the operator's ``normal_preconditioner`` when
            it has one (CT: ``operators.precond``); the same x-update in fewer CG iterations.
        reference, data_range, objective_every, growth, progress: see ``solvers.monitor``.
        callback: called as callback(k, z_k) after each accepted iteration; returning True stops.

    Returns:
        SolverResult with x = z (the last accepted one on divergence) and, in the history,
        ``primal_residual`` ||x − z||, ``dual_residual`` ρ||z − z_prev|| and ``cg_iterations``.
    """
    check_positive(lam=lam)
    rho_rule = None
    if rho is None:
        rho, rho_rule = RHO_REL * lam * op.norm_sq(), f"{RHO_REL:g}·λ·||A||²"
    check_positive(rho=rho)
    prior = as_prior(prior)
    check_start(op, y, x0)
    with torch.no_grad():
        aty = lam * op.adjoint(y)
        x = torch.zeros_like(aty) if x0 is None else x0.detach().clone()
    z, u = x.clone(), torch.zeros_like(x)
    mon = Monitor(
        op,
        y,
        lam=lam,
        prior=prior,
        objective_weight=1.0 / rho,
        max_iters=iters,
        tol=tol,
        reference=reference,
        data_range=data_range,
        objective_every=objective_every,
        growth=growth,
        progress=progress,
        desc="PnP-ADMM",
        extra_keys=("cg_iterations",),
    )
    mon.start(z)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return lam * op.normal(v) + rho * v

    reason, k, cg_used, closed_form = "max iterations", 0, [], True
    precond = op.normal_preconditioner(lam, rho, x) if precondition else None
    mx: torch.Tensor | None = None  # (λAᴴA + ρI) x, carried from one CG solve to the next
    free_r, reg = has_free_regularizer(prior), None  # R(z) from the prox itself
    for k in range(1, iters + 1):
        with torch.no_grad():
            rhs = aty + rho * (z - u)
            solved = op.solve_normal(rhs, lam, rho)
            n_cg = None
            if solved is None:
                closed_form = False
                # M x of the last solve comes back from its residual; recomputed every
                # MX_REFRESH iterations so the recursion's round-off cannot build up
                fresh = mx is None or k % MX_REFRESH == 0
                solved, n_cg, mx = conjugate_gradient(
                    normal, rhs, x, cg_iters, cg_tol, relative_to="initial",
                    mx0=None if fresh else mx, return_mx=True, precond=precond,
                )  # fmt: skip
                cg_used.append(n_cg)
            x = solved
            if free_r:
                z_new, r_new = prior.prox_and_regularizer(x + u)
                reg = float(r_new.sum())
            else:
                z_new = check_prox_output(prior.prox(x + u), x)
            u = u + x - z_new
            primal = _norm(x - z_new)
            dual = rho * _norm(z_new - z)
        stop = mon.record(
            k, z_new, z, primal=primal, dual=dual, extra={"cg_iterations": n_cg}, regularizer=reg
        )
        if stop is not None and stop.startswith("diverged"):
            reason = stop
            break
        z = z_new
        done = mon.after_accept(stop, callback, k, z)
        if done is not None:
            reason = done
            break
    mon.close()
    params = {
        "solver": "pnp-admm",
        "lam": float(lam),
        "rho": float(rho),
        "iters": int(iters),
        "tol": float(tol),
        "cg_iters": int(cg_iters),
        "cg_tol": float(cg_tol),
        "cg_preconditioner": None if precond is None else "the operator's normal_preconditioner",
        "x_update": "closed form" if closed_form else "cg",
        "x0": "0" if x0 is None else "given",
    }
    if rho_rule is not None:
        params["rho_rule"] = rho_rule
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
        objective=f"D(x)/ρ + R(x), D(x) = (λ/2)||Ax − y||², ρ = {rho:.6g}, λ = {lam:g}",
    )
