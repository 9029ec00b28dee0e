"""The measurement noise level of MRI k-space, estimated from the data alone.

Thermal noise in k-space is white complex Gaussian; the signal of an image concentrates at low
spatial frequencies. In the outer corners of k-space (beyond 3/8 of the extent from the centre
along both axes) the samples are mostly noise, so the median of their magnitudes gives the
noise: for complex noise of standard deviation σ per real and imaginary part, |n| is Rayleigh
with median σ·√(2 ln 2). The median ignores the minority of samples that still carry signal.

With the centred orthonormal DFT (``operators.mri.fft2c``) the same σ is the noise of each coil
image per pixel, and of the SENSE-combined image Σ conj(S_c)·I_c when Σ|S_c|² = 1.
"""

from __future__ import annotations

import numpy as np

__all__ = ["estimate_kspace_noise", "CORNER"]

CORNER = 1 / 8  # each corner block spans this fraction of each axis
_RAYLEIGH_MEDIAN = float(np.sqrt(2 * np.log(2)))


def corner_mask(shape: tuple[int, int], fraction: float = CORNER) -> np.ndarray:
    """(H, W) bool: the four corner blocks of k-space, each ``fraction`` of H by of W."""
    h, w = shape
    rh, rw = max(1, int(round(h * fraction))), max(1, int(round(w * fraction)))
    rows = np.zeros(h, bool)
    cols = np.zeros(w, bool)
    rows[:rh] = rows[-rh:] = True
    cols[:rw] = cols[-rw:] = True
    return rows[:, None] & cols[None, :]


def estimate_kspace_noise(kspace: np.ndarray, mask: np.ndarray | None = None) -> float:
    """σ of the k-space noise per real/imaginary part from Cartesian k-space (C, H, W) or
    (H, W): the Rayleigh median of |k| over the *sampled* samples (``mask`` > 0, default
    |k| ≠ 0) in the four corner blocks (``CORNER`` of each axis). Raises ValueError when
    fewer than 64 samples lie there (give the full k-space or a mask that samples the edges)."""
    k = np.asarray(kspace)
    if k.ndim == 2:
        k = k[None]
    if k.ndim != 3 or not np.iscomplexobj(k):
        raise ValueError(f"expected complex k-space (C, H, W) or (H, W), got {k.dtype} {k.shape}")
    sel = np.broadcast_to(corner_mask(k.shape[-2:]), k.shape)
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask) > 0, k.shape[-2:])
        sel = sel & np.broadcast_to(m, k.shape)
    else:
        sel = sel & (k != 0)
    values = np.abs(k[sel])
    if values.size < 64:
        raise ValueError(
            f"only {values.size} sampled k-space values in the outer corners: too few to "
            "estimate the noise level"
        )
    return float(np.median(values) / _RAYLEIGH_MEDIAN)
