"""Classical priors with the same ``prox``/``regularizer`` interface as the learned ones.

All act on batches (B, C, H, W), real or complex (a complex image is handled as its real and
imaginary parts, i.e. as 2C real channels), and ``regularizer`` returns one value per item, (B,).

* ``TVPrior(weight)``: R(x) = weight·TV(x), isotropic total variation coupling the channels,
  TV(x) = Σ_p sqrt(Σ_c |∇x_c(p)|²) with forward differences and Neumann boundary (for a complex
  image this is Σ_p |∇x(p)|, the complex modulus). Its prox is computed on the dual by the fast
  gradient projection of Beck & Teboulle (2009) and stopped by a duality-gap certificate.
  TV(a·x + b) = a·TV(x) for a > 0, so prox_{wTV}(v + b) = prox_{wTV}(v) + b (shift-equivariant)
  but prox_{wTV}(a·v) = a·prox_{(w/a)TV}(v): at a fixed weight it is NOT scale-equivariant, which is
  why pipelines scale the weight with the image's intensity range.
* ``WaveletPrior(weight)``: R(x) = weight·||detail coefficients of Wx||₁ for an orthonormal
  periodized wavelet W (PyWavelets), prox = soft-thresholding of the detail bands. The coarse
  approximation band is not penalized, so the prox is shift-equivariant like TV.
* ``QuadraticPrior(mu)``: R = μ/2·||x||², prox(v) = v/(1 + μ).
* ``CenteredQuadraticPrior(mu)``: R = μ/2·||P⊥x||² (P⊥ removes each image's per-channel mean),
  prox(v) = P₁v + P⊥v/(1 + μ): an exactly affine-equivariant prox with a known minimizer, for
  testing solvers.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

__all__ = [
    "TVPrior",
    "WaveletPrior",
    "QuadraticPrior",
    "CenteredQuadraticPrior",
    "grad2d",
    "div2d",
    "tv",
]


# --- finite differences ------------------------------------------------------------------------
def grad2d(x: torch.Tensor) -> torch.Tensor:
    """Forward differences (B, C, H, W) -> (B, C, 2, H, W) (vertical, horizontal), zero at the
    far border (Neumann boundary)."""
    g = x.new_empty(*x.shape[:2], 2, *x.shape[2:])
    gy, gx = g[:, :, 0], g[:, :, 1]
    torch.sub(x[..., 1:, :], x[..., :-1, :], out=gy[..., :-1, :])
    gy[..., -1, :] = 0
    torch.sub(x[..., :, 1:], x[..., :, :-1], out=gx[..., :, :-1])
    gx[..., :, -1] = 0
    return g


def div2d(p: torch.Tensor) -> torch.Tensor:
    """Divergence (B, C, 2, H, W) -> (B, C, H, W), the negative adjoint of ``grad2d``:
    <∇x, p> = −<x, div p>."""
    py, px = p[:, :, 0], p[:, :, 1]
    d = torch.empty_like(py)
    d[..., 0, :] = py[..., 0, :]
    torch.sub(py[..., 1:-1, :], py[..., :-2, :], out=d[..., 1:-1, :])
    torch.neg(py[..., -2, :], out=d[..., -1, :])
    d[..., :, 0] += px[..., :, 0]
    d[..., :, 1:-1] += px[..., :, 1:-1] - px[..., :, :-2]
    d[..., :, -1] -= px[..., :, -2]
    return d


def _as_real(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Complex (B, C, H, W) -> real (B, 2C, H, W) (real parts, then imaginary parts)."""
    if x.is_complex():
        return torch.cat([x.real, x.imag], dim=1), True
    return x, False


def _back(x: torch.Tensor, was_complex: bool) -> torch.Tensor:
    if not was_complex:
        return x
    c = x.shape[1] // 2
    return torch.complex(x[:, :c], x[:, c:])


def _flat_sum(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _pointwise_norm(g: torch.Tensor) -> torch.Tensor:
    """|∇x|(p) over channels and directions: (B, C, 2, H, W) -> (B, 1, 1, H, W)."""
    return g.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()


def tv(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV per batch item, (B,), channels coupled (complex: real/imag as channels)."""
    x, _ = _as_real(x)
    return _flat_sum(_pointwise_norm(grad2d(x)))


# --- TV ----------------------------------------------------------------------------------------
class TVPrior:
    """R(x) = weight·TV(x); prox by fast gradient projection (FGP) on the dual.

    The prox of λ·TV at v is x = v + λ·div p*, where p* minimizes ||v + λ·div p||² over
    |p(pixel)| ≤ 1 (the pointwise norm over channels and the two directions). FGP takes steps
    1/(8λ) on that dual (||div||² ≤ 8) with Nesterov momentum and projection onto the unit balls.

    Stopping: every ``check_every`` iterations the duality gap
    G = P(x) − D(p) = ||λ div p||² + λTV(x) − λ<∇v, p> ≥ 0 is evaluated per batch item; since the
    primal is 1-strongly convex, ||x − prox(v)|| ≤ sqrt(2G). The loop stops when
    sqrt(2G) ≤ tol·||x − v|| for every item (a certified relative accuracy of the prox
    displacement), or after ``iters`` iterations. G is built from differences only, so the
    iteration and its stopping are shift-invariant (prox(v + b) = prox(v) + b to round-off).
    In float32 the gap is only known to about sqrt(eps·λTV(v)), so tol < ~1e-3 then usually
    runs all ``iters``.

    warm_start: start the dual from the previous call's p* when the shape matches (much faster
    inside PnP loops). The certificate still holds, but when ``iters`` is hit first the output
    depends (slightly) on the call history, so the map is then no longer one fixed function.
    """

    def __init__(
        self,
        weight: float,
        iters: int = 100,
        tol: float = 1e-4,
        *,
        check_every: int = 5,
        warm_start: bool = False,
    ) -> None:
        if weight < 0:
            raise ValueError(f"TV weight must be ≥ 0, got {weight}")
        if iters < 1:
            raise ValueError(f"iters must be ≥ 1, got {iters}")
        self.weight, self.iters, self.tol = float(weight), int(iters), float(tol)
        self.check_every, self.warm_start = max(1, int(check_every)), bool(warm_start)
        self._p: torch.Tensor | None = None
        self.last_iterations = 0
        self.last_gap: torch.Tensor | None = None

    def _gap(self, v: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(duality gap, ||x − v||) per item for the primal point x = v + λ div p."""
        lam = self.weight
        d = lam * div2d(p)
        dd = _flat_sum(d * d)
        gap = dd + lam * tv(v + d) - lam * _flat_sum(grad2d(v) * p)
        return gap.clamp_min(0.0), dd.sqrt()

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        """argmin_x weight·TV(x) + ½||x − v||² for v (B, C, H, W), real or complex."""
        if self.weight == 0:
            return v.clone()
        vr, was_complex = _as_real(v)
        lam = self.weight
        b, c, h, w = vr.shape
        p = self._p
        if not self.warm_start or p is None or p.shape != (b, c, 2, h, w) or p.dtype != vr.dtype:
            p = torch.zeros(b, c, 2, h, w, dtype=vr.dtype, device=vr.device)
        p = p.to(vr.device)
        r, t = p, 1.0
        step = 1.0 / (8.0 * lam)
        k = 0
        for k in range(1, self.iters + 1):
            q = r + step * grad2d(vr + lam * div2d(r))
            p_new = q / _pointwise_norm(q).clamp_min(1.0)
            t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            r = p_new + ((t - 1.0) / t_new) * (p_new - p)
            p, t = p_new, t_new
            if k % self.check_every == 0 or k == self.iters:
                gap, disp = self._gap(vr, p)
                if bool(((2.0 * gap).sqrt() <= self.tol * disp).all()):
                    break
        self.last_iterations = k
        self.last_gap = gap.detach()
        if self.warm_start:
            self._p = p.detach()
        return _back(vr + lam * div2d(p), was_complex)

    def regularizer(self, x: torch.Tensor) -> torch.Tensor:
        """weight·TV(x), shape (B,)."""
        return self.weight * tv(x)

    def __repr__(self) -> str:
        return f"TVPrior(weight={self.weight:g}, iters={self.iters}, tol={self.tol:g})"


# --- wavelets ----------------------------------------------------------------------------------
class WaveletPrior:
    """R(x) = weight·Σ|d| over the detail coefficients d of an orthonormal wavelet transform.

    W: ``levels``-level 2-D discrete wavelet transform (PyWavelets, mode 'periodization'), which
    is orthonormal when H and W are divisible by 2^levels (checked). Then
    prox_R(v) = Wᵀ soft(W v, weight) exactly, thresholding only the detail bands. Constant images
    have zero detail coefficients, so prox(v + b) = prox(v) + b; like TV it is not
    scale-equivariant at a fixed weight. Complex images: real and imaginary parts are
    thresholded separately (R is the ℓ₁ norm of both). Runs in numpy on the CPU.
    """

    def __init__(self, weight: float, wavelet: str = "db4", levels: int = 3) -> None:
        import pywt

        if weight < 0:
            raise ValueError(f"wavelet weight must be ≥ 0, got {weight}")
        if levels < 1:
            raise ValueError(f"levels must be ≥ 1, got {levels}")
        self.weight, self.wavelet, self.levels = float(weight), pywt.Wavelet(wavelet), int(levels)

    def _coeffs(self, x: np.ndarray) -> list:
        import pywt

        h, w = x.shape[-2:]
        if h % 2**self.levels or w % 2**self.levels:
            raise ValueError(
                f"WaveletPrior: image {h}×{w} must be divisible by 2^levels = {2**self.levels}"
            )
        with warnings.catch_warnings():  # "boundary effects": harmless with periodization
            warnings.simplefilter("ignore", UserWarning)
            return pywt.wavedec2(x, self.wavelet, mode="periodization", level=self.levels)

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        """Soft-threshold the detail coefficients by ``weight``; (B, C, H, W) -> same."""
        import pywt

        vr, was_complex = _as_real(v)
        arr = vr.detach().to("cpu", torch.float64).numpy()
        coeffs = self._coeffs(arr)
        out = [coeffs[0]] + [
            tuple(pywt.threshold(d, self.weight, mode="soft") for d in band) for band in coeffs[1:]
        ]
        rec = pywt.waverec2(out, self.wavelet, mode="periodization")
        x = torch.from_numpy(np.ascontiguousarray(rec)).to(vr.device, vr.dtype)
        return _back(x, was_complex)

    def regularizer(self, x: torch.Tensor) -> torch.Tensor:
        """weight·||detail coefficients||₁ per item, (B,)."""
        xr, _ = _as_real(x)
        coeffs = self._coeffs(xr.detach().to("cpu", torch.float64).numpy())
        total = np.zeros(xr.shape[0])
        for band in coeffs[1:]:
            for d in band:
                total += np.abs(d).reshape(d.shape[0], -1).sum(axis=1)
        return torch.from_numpy(self.weight * total).to(x.device, xr.dtype)


# --- quadratics --------------------------------------------------------------------------------
class QuadraticPrior:
    """R(x) = μ/2·||x||², prox(v) = v/(1 + μ) (real or complex)."""

    def __init__(self, mu: float) -> None:
        if mu < 0:
            raise ValueError(f"mu must be ≥ 0, got {mu}")
        self.mu = float(mu)

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        return v / (1.0 + self.mu)

    def regularizer(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.mu * _flat_sum(x.abs().pow(2))


class CenteredQuadraticPrior:
    """R(x) = μ/2·||P⊥x||², P⊥x = x − (per-image, per-channel mean);
    prox(v) = P₁v + P⊥v/(1 + μ), exactly equivariant to v -> a·v + b for every real a and b."""

    def __init__(self, mu: float) -> None:
        if mu < 0:
            raise ValueError(f"mu must be ≥ 0, got {mu}")
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
        return 0.5 * self.mu * _flat_sum(u.abs().pow(2))
