"""The Jacobian of a learned prox f = ∇ψ: its largest eigenvalue, and a penalty on it.

For ψ convex and twice differentiable, the Jacobian of f = ∇ψ is the Hessian ∇²ψ(x): symmetric
and positive semidefinite. f is *firmly nonexpansive* (2f − Id is 1-Lipschitz; Bauschke &
Combettes) iff 0 ⪯ ∇²ψ(x) ⪯ I at every x, i.e. iff λ_max(∇²ψ(x)) ≤ 1 everywhere; f is then the
prox of a *convex* regularizer R, and PnP-PGD (step < 2/(λ||A||²)) and PnP-ADMM (any ρ) converge
(seed 001). With λ_max > 1 somewhere f is still a prox (of a nonconvex R), and PnP may run away.

Everything here works on Hessian-vector products ∇²ψ(x)·v, computed exactly by a double
backward through the network (no finite differences): one first-order graph g = ∇ψ(x) is built
with ``create_graph=True`` and each product is the vector-Jacobian product ∂⟨g, v⟩/∂x. ψ sums
over the batch without coupling images, so ∇²ψ is block diagonal and one batched product gives
each image's own H_i·v_i.

* ``top_eigenvalue``: batched Lanczos with full reorthogonalization, run until every image's
  largest Ritz value θ is certain to the asked relative tolerance. What the numbers mean, per
  image: θ ≤ λ_max(H_i) always (a Ritz value is a Rayleigh quotient), and H_i has an eigenvalue
  in [θ − r, θ + r] with r = ||H_i y − θ y|| the residual of the Ritz vector y
  (Krylov–Bogoliubov). So θ is a lower bound on λ_max and r says how well it has converged.
* ``eigenvalue_penalty``: a few power iterations (no graph) find a direction v close to the top
  eigenvector; the Rayleigh quotient vᵀHv is then recomputed with a graph, so its gradient with
  respect to the weights is vᵀ(∂H)v, the derivative of λ_max at a simple eigenvalue. The penalty
  is mean relu(vᵀHv − target)².

With ψ 2-homogeneous in (x, σ) (the AE-LPN), ∇²ψ(a·x + b; a·σ) = ∇²ψ(x; σ) for a > 0: the
eigenvalues do not depend on the intensity convention, so one certificate covers all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["EigenEstimate", "hessian_operator", "top_eigenvalue", "eigenvalue_penalty"]

HVP = Callable[[torch.Tensor], torch.Tensor]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image inner products (B,) of two (B, ...) tensors."""
    return (a * b).flatten(1).sum(1)


def _per_image(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.ndim - 1)))


def hessian_operator(model, x: torch.Tensor, create_graph: bool = False) -> HVP:
    """v -> ∇²ψ(x)·v for the potential ψ of ``model`` (a ``LearnedProx``), x (B, C, H, W).

    The first-order graph is built once here; every call reuses it (one backward each). With
    ``create_graph`` the products keep a graph to the weights (for a training penalty). A model
    whose prox is computed by an inner solve gives its Jacobian itself (``jacobian_operator``,
    e.g. ``priors.ridge`` in mode "prox")."""
    if hasattr(model, "jacobian_operator") and getattr(model, "mode", None) == "prox":
        if create_graph:
            raise ValueError("no eigenvalue penalty for a prox computed by an inner solve")
        return model.jacobian_operator(x)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        psi = model.potential(xg).sum()
        (g,) = torch.autograd.grad(psi, xg, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            (hv,) = torch.autograd.grad(
                g, xg, grad_outputs=v, retain_graph=True, create_graph=create_graph
            )
        return hv

    return hvp


@dataclass
class EigenEstimate:
    """The largest Ritz value per image and how sure it is.

    value: θ (B,), a lower bound on λ_max of each image's Jacobian;
    residual: r (B,), an eigenvalue lies in [θ − r, θ + r];
    iterations: Hessian-vector products used; converged: r ≤ tol·θ for every image."""

    value: torch.Tensor
    residual: torch.Tensor
    iterations: int
    converged: bool


def top_eigenvalue(
    hvp: HVP,
    shape: torch.Size | tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    max_iters: int = 60,
    tol: float = 1e-3,
    seed: int = 0,
) -> EigenEstimate:
    """Largest eigenvalue of each image's symmetric operator ``hvp`` by batched Lanczos.

    Full reorthogonalization against every earlier Lanczos vector (memory: max_iters images),
    which keeps the Ritz values honest in floating point. Stops when every image's residual
    bound is ≤ tol·θ, or after ``max_iters`` products."""
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(tuple(shape), generator=gen, dtype=dtype).to(device)
    q = q / _per_image(_dot(q, q).sqrt(), q)
    basis: list[torch.Tensor] = []
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    theta = resid = torch.zeros(shape[0], dtype=dtype)
    converged = False
    for k in range(max_iters):
        basis.append(q)
        w = hvp(q).to(dtype)
        a = _dot(w, q)
        alphas.append(a)
        for p in basis:  # full reorthogonalization (twice is enough, Kahan–Parlett)
            w = w - _per_image(_dot(w, p), w) * p
        for p in basis:
            w = w - _per_image(_dot(w, p), w) * p
        b = _dot(w, w).sqrt()
        t = torch.diag_embed(torch.stack(alphas, 1))
        if k:
            off = torch.stack(betas, 1)
            t = t + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        evals, evecs = torch.linalg.eigh(t.cpu())
        theta = evals[:, -1]
        resid = (b.cpu() * evecs[:, -1, -1]).abs()
        if bool((resid <= tol * theta.abs().clamp_min(1e-30)).all()):
            converged = True
            break
        betas.append(b)
        q = w / _per_image(b.clamp_min(torch.finfo(dtype).tiny), w)
    return EigenEstimate(theta, resid, len(basis), converged)


def eigenvalue_penalty(
    model,
    x: torch.Tensor,
    target: float,
    iters: int = 4,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty, estimates): mean relu(vᵀ∇²ψ(x)v − target)² over the images of x, with v from
    ``iters`` power iterations (no graph) and the final Rayleigh quotient differentiable in the
    weights. ``estimates`` (B,) are the Rayleigh quotients, detached (lower bounds on λ_max)."""
    hvp = hessian_operator(model, x, create_graph=True)
    v = torch.randn(x.shape, generator=generator).to(x)
    for _ in range(iters):
        v = v / _per_image(_dot(v, v).sqrt().clamp_min(1e-30), v)
        v = hvp(v).detach()
    v = v / _per_image(_dot(v, v).sqrt().clamp_min(1e-30), v)
    rq = _dot(v, hvp(v))
    return torch.relu(rq - target).pow(2).mean(), rq.detach()
