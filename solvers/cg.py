"""Batched conjugate gradients for Hermitian positive-definite systems M x = b.

For each batch item i, CG minimizes ½<x, Mx> − Re<b, x> over the Krylov space; step sizes
α_i = ||r_i||²/<p_i, M p_i> and β_i = ||r_i⁺||²/||r_i||² are per item (inner products over all
but the batch axis, ``operators.base.inner``), so the items of a batch are independent problems
solved together. Works for real and complex tensors, on any device (pure torch).

Affine invariance (what keeps PnP-ADMM exactly equivariant): if b' = a·b + M c and
x0' = a·x0 + c, then r' = a·r, p' = a·p, the step sizes are unchanged, and every iterate is
x_k' = a·x_k + c. The stopping rule relative_to='initial' (||r_k|| ≤ tol·||r_0||) is invariant
too; relative_to='rhs' (||r_k|| ≤ tol·||b||, the usual rule) is not, since ||b'|| ≠ a·||b||.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from operators.base import inner

__all__ = ["conjugate_gradient"]


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) real -> broadcastable to ``like`` (B, ...)."""
    return v.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    iters: int = 20,
    tol: float = 1e-6,
    *,
    relative_to: Literal["rhs", "initial"] = "rhs",
    mx0: torch.Tensor | None = None,
    return_mx: bool = False,
    precond: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, torch.Tensor]:
    """Solve M x = b per batch item, M Hermitian positive definite, warm-started at x0.

    Args:
        matvec: x -> M x on tensors shaped like b (B, ...).
        b: right-hand side (B, ...), real or complex.
        x0: starting point (default 0).
        iters: maximal number of iterations (matvecs, beyond the one for the initial residual).
        tol: stop once every item has ||b − M x|| ≤ tol·||b|| (relative_to='rhs') or
            ≤ tol·||b − M x0|| (relative_to='initial').
        mx0: M x0 when the caller already has it (saves the initial residual's matvec).
        return_mx: also return M x, as b − r from the recursively updated residual r (no
            matvec; it drifts from the true M x by round-off, so a caller that chains solves
            recomputes it now and then).
        precond: r -> P r, a symmetric positive definite approximation of M⁻¹ (preconditioned
            CG: the same solution in fewer iterations when P is good; the stopping rule still
            measures ||b − M x||). P linear keeps the affine invariance above.

    Returns:
        (x, number of iterations used), and M x with ``return_mx``. Items that have converged
        are frozen.
    """
    if relative_to not in ("rhs", "initial"):
        raise ValueError(f"relative_to must be 'rhs' or 'initial', got {relative_to!r}")
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        x = x0.clone()
        r = b - (matvec(x) if mx0 is None else mx0)
    rs = inner(r, r)
    scale = rs.sqrt() if relative_to == "initial" else inner(b, b).sqrt()
    threshold = tol * scale
    done = rs.sqrt() <= threshold
    z = r if precond is None else precond(r)
    rz = rs if precond is None else inner(r, z)  # <r, P r>: β's and α's numerator
    p = z.clone()
    k = 0
    while k < iters and not bool(done.all()):
        k += 1
        mp = matvec(p)
        denom = inner(p, mp)
        ok = ~done & (denom > 0)
        alpha = torch.where(ok, rz / torch.where(ok, denom, torch.ones_like(denom)), 0.0)
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * mp
        rs_new = inner(r, r)
        z = r if precond is None else precond(r)
        rz_new = rs_new if precond is None else inner(r, z)
        beta = torch.where(ok, rz_new / torch.where(ok, rz, torch.ones_like(rz)), 0.0)
        p = z + _bcast(beta, p) * p
        rs = torch.where(ok, rs_new, rs)
        rz = torch.where(ok, rz_new, rz)
        done = done | ~ok | (rs.sqrt() <= threshold)
    if return_mx:
        return x, k, b - r
    return x, k
