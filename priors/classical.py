"""Classical priors with the same ``prox``/``regularizer`` interface as the learned ones.

* ``TVPrior(weight)``: R(x) = weight·TV(x), isotropic TV coupling channels (for complex images the
  real and imaginary parts are the channels): TV(x) = Σ_p sqrt(Σ_c |∇x_c(p)|²), forward
  differences with Neumann boundary. Its prox is computed by Beck & Teboulle's fast gradient
  projection on the dual (FGP, 2009). Shift-equivariant (∇(x + b) = ∇x) but not scale-equivariant
  at a fixed weight: prox_{wTV}(a·v) = a·prox_{(w/a)TV}(v), which is why pipelines scale the weight
  with the image's intensity range.
* ``QuadraticPrior(mu)``: R = μ/2·||x||², prox(v) = v/(1 + μ).
* ``CenteredQuadraticPrior(mu)``: R = μ/2·||P⊥x||² (P⊥ removes each image's per-channel mean),
  prox(v) = P₁v + P⊥v/(1 + μ): an exactly affine-equivariant prox with a known minimizer, for tests.
"""

from __future__ import annotations

import torch

__all__ = ["TVPrior", "QuadraticPrior", "CenteredQuadraticPrior", "grad2d", "div2d", "tv"]


def grad2d(x: torch.Tensor) -> torch.Tensor:
    """Forward differences (B, C, H, W) -> (B, C, 2, H, W), zero at the far border."""
    gy = torch.zeros_like(x)
    gx = torch.zeros_like(x)
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack([gy, gx], dim=2)


def div2d(p: torch.Tensor) -> torch.Tensor:
    """Divergence, the negative adjoint of ``grad2d``: <grad x, p> = −<x, div p>.

    With TV(x) = max_{|p|≤1} <∇x, p>, the prox of λ·TV at v is v + λ·div p* where p* minimizes
    ||v + λ·div p||² over the unit balls (the dual problem FGP solves)."""
    py, px = p[:, :, 0], p[:, :, 1]
    dy = torch.zeros_like(py)
    dx = torch.zeros_like(px)
    dy[..., 0, :] = py[..., 0, :]
    dy[..., 1:-1, :] = py[..., 1:-1, :] - py[..., :-2, :]
    dy[..., -1, :] = -py[..., -2, :]
    dx[..., :, 0] = px[..., :, 0]
    dx[..., :, 1:-1] = px[..., :, 1:-1] - px[..., :, :-2]
    dx[..., :, -1] = -px[..., :, -2]
    return dy + dx


def _as_real(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.is_complex():
        return torch.cat([x.real, x.imag], dim=1), True
    return x, False


def _back(x: torch.Tensor, was_complex: bool) -> torch.Tensor:
    if not was_complex:
        return x
    c = x.shape[1] // 2
    return torch.complex(x[:, :c], x[:, c:])


def tv(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV per batch item (B,), channels coupled."""
    x, _ = _as_real(x)
    g = grad2d(x)
    return g.pow(2).sum(dim=(1, 2)).sqrt().flatten(1).sum(1)


class TVPrior:
    """prox of weight·TV by FGP on the dual (``iters`` iterations, stop at ``tol`` rel. change)."""

    def __init__(self, weight: float, iters: int = 100, tol: float = 1e-6) -> None:
        if weight < 0:
            raise ValueError(f"TV weight must be ≥ 0, got {weight}")
        self.weight, self.iters, self.tol = float(weight), int(iters), float(tol)
        self._warm: torch.Tensor | None = None

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        if self.weight == 0:
            return v.clone()
        vr, was_complex = _as_real(v)
        lam = self.weight
        b, c, h, w = vr.shape
        p = torch.zeros(b, c, 2, h, w, dtype=vr.dtype, device=vr.device)
        r, t = p, 1.0
        step = 1.0 / (8.0 * lam)
        for _ in range(self.iters):
            g = grad2d(vr + lam * div2d(r))
            q = r + step * g
            norm = q.pow(2).sum(dim=(1, 2), keepdim=True).sqrt().clamp_min(1.0)
            p_new = q / norm
            t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
            r = p_new + ((t - 1) / t_new) * (p_new - p)
            delta = float((p_new - p).flatten().norm()) / max(float(p_new.flatten().norm()), 1e-30)
            p, t = p_new, t_new
            if delta <= self.tol:
                break
        return _back(vr + lam * div2d(p), was_complex)

    def regularizer(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * tv(x)


class QuadraticPrior:
    def __init__(self, mu: float) -> None:
        self.mu = float(mu)

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        return v / (1.0 + self.mu)

    def regularizer(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.mu * x.abs().pow(2).flatten(1).sum(1)


class CenteredQuadraticPrior:
    def __init__(self, mu: float) -> None:
        self.mu = float(mu)

    @staticmethod
    def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = x.mean(dim=(-2, -1), keepdim=True)
        return m, x - m

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        m, u = self._split(v)
        return m + u / (1.0 + self.mu)

    def regularizer(self, x: torch.Tensor) -> torch.Tensor:
        _, u = self._split(x)
        return 0.5 * self.mu * u.abs().pow(2).flatten(1).sum(1)
