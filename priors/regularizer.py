"""Evaluating the regularizer R of a learned proximal network f = ∇ψ.

If f = prox_R and f = ∇ψ with ψ convex, then (Fang et al. 2024, Gribonval & Nikolova 2020)

    R(x) = <x, u> − ½||x||² − ψ(u),   where f(u) = x,

up to an additive constant. u is found by minimizing the convex function u ↦ ψ(u) − <x, u>, whose
gradient is f(u) − x; the minimum value is −ψ*(x), so R(x) = ψ*(x) − ½||x||² even where the
inversion residual ||f(u) − x|| does not vanish (x outside the range of a non-smooth f). We use
L-BFGS with a strong-Wolfe line search from u₀ = x and report the relative residual per item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RegularizerValue", "evaluate_regularizer", "invert_prox"]


@dataclass
class RegularizerValue:
    value: torch.Tensor  # (B,) R(x)
    u: torch.Tensor  # (B, ...) the preimage, f(u) ≈ x
    residual: torch.Tensor  # (B,) ||f(u) − x|| / ||x||
    iterations: int


def invert_prox(
    model, x: torch.Tensor, iters: int = 300, tol: float = 1e-7, u0: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """u minimizing ψ(u) − <x, u> (so ∇ψ(u) = x), from u₀ (default x); returns (u, iterations)."""
    x = x.detach()
    start = x if (u0 is None or u0.shape != x.shape) else u0.detach()
    u = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [u],
        lr=1.0,
        max_iter=iters,
        tolerance_grad=tol * float(x.abs().max().clamp_min(1e-30)),
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        obj = (model.potential(u) - (u * x).flatten(1).sum(1)).sum()
        obj.backward()
        return obj

    with torch.enable_grad():
        opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    return u.detach(), n_iter


def evaluate_regularizer(
    model, x: torch.Tensor, iters: int = 300, tol: float = 1e-7, u0: torch.Tensor | None = None
) -> RegularizerValue:
    """R(x) for a batch x (B, ...) with the inversion residual; see the module docstring.
    ``u0`` warm-starts the inversion (e.g. the previous iterate's preimage in a solver)."""
    u, n_iter = invert_prox(model, x, iters=iters, tol=tol, u0=u0)
    with torch.no_grad():
        psi = model.potential(u)
        xf, uf = x.flatten(1), u.flatten(1)
        value = (xf * uf).sum(1) - 0.5 * xf.pow(2).sum(1) - psi
    fu = model.prox(u, create_graph=False)
    res = (fu - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-30)
    return RegularizerValue(value=value.detach(), u=u, residual=res.detach(), iterations=n_iter)
