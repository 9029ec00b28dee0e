"""Measurement noise for simulated CT, seeded.

* Gaussian: y = Ax + e, e ~ N(0, (rel·max|Ax|)²) per batch item.
* Poisson transmission (Beer–Lambert): counts N ~ Poisson(I₀·exp(−μ·Ax)), zero counts replaced by
  0.1, and the log-transformed data y = −log(N/I₀)/μ. ``mu_scale`` μ converts the sinogram's units
  to attenuation line integrals (e.g. images in relative attenuation u = μ/μ_water and lengths in
  mm: μ = μ_water = 0.02/mm).
"""

from __future__ import annotations

import torch

__all__ = ["add_gaussian_noise", "add_poisson_noise"]


def add_gaussian_noise(sino: torch.Tensor, rel: float, seed: int = 0) -> torch.Tensor:
    """sino + rel·max|sino|·n, n standard normal, per batch item; shape (B, ...)."""
    if rel < 0:
        raise ValueError(f"noise level must be ≥ 0, got {rel}")
    gen = torch.Generator().manual_seed(int(seed))
    n = torch.randn(sino.shape, generator=gen, dtype=torch.float64).to(sino.device, sino.dtype)
    scale = sino.abs().flatten(1).amax(1).view(-1, *([1] * (sino.ndim - 1)))
    return sino + rel * scale * n


def add_poisson_noise(
    sino: torch.Tensor, photons: float, seed: int = 0, mu_scale: float = 1.0
) -> torch.Tensor:
    """Beer–Lambert transmission noise with I₀ = ``photons`` per detector pixel (see module)."""
    if photons <= 0 or mu_scale <= 0:
        raise ValueError(f"photons and mu_scale must be > 0, got {photons}, {mu_scale}")
    gen = torch.Generator().manual_seed(int(seed))
    rate = photons * torch.exp(-mu_scale * sino.detach().to("cpu", torch.float64))
    counts = torch.poisson(rate, generator=gen).clamp_min(0.1)
    y = -torch.log(counts / photons) / mu_scale
    return y.to(sino.device, sino.dtype)
