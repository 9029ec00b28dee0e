"""Batched conjugate gradients for Hermitian positive-definite systems M x = b."""

from __future__ import annotations

from collections.abc import Callable

import torch

from operators.base import inner

__all__ = ["conjugate_gradient"]


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    iters: int = 20,
    tol: float = 1e-6,
) -> tuple[torch.Tensor, int]:
    """Solve M x = b for each batch item (real or complex), warm-started at x0.

    Stops when every item's residual ||b − Mx|| ≤ tol·||b||, or after ``iters`` iterations.
    Step sizes are per batch item. Scaling b and x0 by a > 0 scales every iterate by a (so
    PnP-ADMM stays exactly equivariant). Returns (x, iterations used).
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = inner(r, r)
    bnorm = inner(b, b).sqrt()
    done = rs.sqrt() <= tol * bnorm
    k = 0
    for k in range(1, iters + 1):
        if bool(done.all()):
            k -= 1
            break
        mp = matvec(p)
        denom = inner(p, mp)
        alpha = torch.where(done | (denom <= 0), torch.zeros_like(rs), rs / denom.clamp_min(1e-300))
        x = x + _bcast(alpha, x).to(x.dtype) * p
        r = r - _bcast(alpha, r).to(r.dtype) * mp
        rs_new = inner(r, r)
        beta = torch.where(done, torch.zeros_like(rs), rs_new / rs.clamp_min(1e-300))
        p = r + _bcast(beta, p).to(p.dtype) * p
        rs = rs_new
        done = done | (rs.sqrt() <= tol * bnorm)
    return x, k
