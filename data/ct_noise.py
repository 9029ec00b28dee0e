"""Seeded measurement noise for simulated CT sinograms (B, ...), torch in and out.

* Gaussian: y = A x + e, e ~ N(0, σ²) with σ = rel · max|A x| per batch item.
* Poisson transmission (Beer–Lambert): with I₀ = ``photons`` incident photons per detector
  element, counts N ~ Poisson(I₀ · exp(−μ · p)) for a sinogram p, zero counts replaced by 0.1
  (so the log stays finite), and the measured sinogram is y = −log(N / I₀) / μ.

Units for Poisson noise: μ·p must be the dimensionless attenuation line integral ∫ μ dl. So
either the image is a linear attenuation coefficient (per mm, e.g. ``data.ct_units.hu_to_mu``
of a HU image) and the operator's ``pixel_size`` is in mm, with ``mu_scale = 1``; or the image
is in other units and ``mu_scale`` converts its sinogram to attenuation (for an image u with
μ = c·u, mu_scale = c). A HU image must not be projected and fed here directly: HU are not
proportional to attenuation (air is −1000 HU, μ = 0).

Randomness comes from a ``torch.Generator`` seeded with ``seed`` (CPU, float64), so the noise
is the same on every device and dtype.
"""

from __future__ import annotations

import torch

__all__ = ["add_gaussian_noise", "add_poisson_noise", "ZERO_COUNT"]

ZERO_COUNT = 0.1


def add_gaussian_noise(
    sino: torch.Tensor, rel: float, seed: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """sino + rel · max|sino| · n per batch item, n ~ N(0, 1) i.i.d.; same shape/device/dtype.

    n comes from ``generator`` (a CPU generator, advanced by the draw) when one is given, as when
    many noisy sinograms are drawn from one training stream; otherwise from a fresh generator
    seeded with ``seed``."""
    if not rel >= 0:
        raise ValueError(f"relative noise level must be ≥ 0, got {rel}")
    gen = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    n = torch.randn(sino.shape, generator=gen, dtype=torch.float64)
    n = n.to(device=sino.device, dtype=sino.dtype)
    scale = sino.detach().abs().flatten(1).amax(1).view(-1, *([1] * (sino.ndim - 1)))
    return sino + rel * scale * n


def add_poisson_noise(
    sino: torch.Tensor, photons: float, seed: int = 0, mu_scale: float = 1.0
) -> torch.Tensor:
    """−log(N / I₀) / μ with N ~ Poisson(I₀ · exp(−μ · sino)), N = 0 -> 0.1; see module.

    Args:
        sino: noiseless sinogram (B, ...), such that ``mu_scale · sino`` is ∫ μ dl.
        photons: I₀, incident photons per detector element (> 0).
        seed: seed of the generator.
        mu_scale: μ, the factor turning ``sino`` into attenuation line integrals.
    """
    if not (photons > 0 and mu_scale > 0):
        raise ValueError(f"photons and mu_scale must be > 0, got {photons}, {mu_scale}")
    gen = torch.Generator().manual_seed(int(seed))
    rate = photons * torch.exp(-mu_scale * sino.detach().to("cpu", torch.float64))
    counts = torch.poisson(rate, generator=gen)
    counts = torch.where(counts > 0, counts, torch.full_like(counts, ZERO_COUNT))
    y = -torch.log(counts / photons) / mu_scale
    return y.to(device=sino.device, dtype=sino.dtype)
