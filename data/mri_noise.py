"""The measurement noise level of MRI k-space, estimated from the data alone.

Thermal noise in k-space is white complex Gaussian; the signal of an image concentrates at low
spatial frequencies. In the outer corners of k-space (beyond 3/8 of the extent from the centre
along both axes) the samples are mostly noise, so the median of their magnitudes gives the
noise: for complex noise of standard deviation σ per real and imaginary part, |n| is Rayleigh
with median σ·√(2 ln 2). The median ignores the minority of samples that still carry signal.

Masks that leave the corners empty (SigPy's Poisson-disc masks sample inside the inscribed
ellipse only) and non-Cartesian trajectories use the outer ring instead: the samples at an
elliptical radius ≥ ``RING`` of the half extent (Cartesian: of the (H, W) grid; non-Cartesian:
of the coordinates' extent), where an image's spectrum has decayed almost as far as in the
corners: on BART's and ISMRMRD's phantoms with noise 0.1–0.4 % of max|k| the ring reads 3–50 %
above the corner estimate (most at the lowest noise, where the phantoms' edges still show), on
a brain slice the same to 1 %.

With the centred orthonormal DFT (``operators.mri.fft2c``) the same σ is the noise of each coil
image per pixel, and of the SENSE-combined image Σ conj(S_c)·I_c when Σ|S_c|² = 1.
"""

from __future__ import annotations

import numpy as np

__all__ = ["estimate_kspace_noise", "estimate_noncartesian_noise", "CORNER", "RING"]

CORNER = 1 / 8  # each corner block spans this fraction of each axis
RING = 0.85  # the outer ring: elliptical radius ≥ this fraction of the half extent
MIN_SAMPLES = 64
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


def ring_mask(shape: tuple[int, int], fraction: float = RING) -> np.ndarray:
    """(H, W) bool: the grid points at elliptical radius in [fraction, 1] of the half extent
    (centre at (H // 2, W // 2), fastMRI's convention)."""
    h, w = shape
    ky = (np.arange(h) - h // 2) / (h / 2)
    kx = (np.arange(w) - w // 2) / (w / 2)
    r = np.hypot(ky[:, None], kx[None, :])
    return (r >= fraction) & (r <= 1.0)


def _rayleigh_sigma(values: np.ndarray, where: str) -> float:
    if values.size < MIN_SAMPLES:
        raise ValueError(
            f"only {values.size} sampled k-space values in the {where}: too few to estimate "
            "the noise level"
        )
    return float(np.median(values) / _RAYLEIGH_MEDIAN)


def estimate_kspace_noise(kspace: np.ndarray, mask: np.ndarray | None = None) -> float:
    """σ of the k-space noise per real/imaginary part from Cartesian k-space (C, H, W) or
    (H, W): the Rayleigh median of |k| over the *sampled* samples (``mask`` > 0, default
    |k| ≠ 0) in the four corner blocks (``CORNER`` of each axis), or, when fewer than 64 lie
    there, in the outer ring (``RING``). Samples that are exactly zero are never counted: no
    noisy measurement is, so they are zero padding (fastMRI's knee files pad the phase-encode
    columns beyond those acquired) or zero-filling. Raises ValueError when both have fewer
    than 64."""
    k = np.asarray(kspace)
    if k.ndim == 2:
        k = k[None]
    if k.ndim != 3 or not np.iscomplexobj(k):
        raise ValueError(f"expected complex k-space (C, H, W) or (H, W), got {k.dtype} {k.shape}")
    sampled = k != 0
    if mask is not None:
        sampled &= np.broadcast_to(np.asarray(mask) > 0, k.shape)  # (W,) or (H, W)
    corners = np.broadcast_to(corner_mask(k.shape[-2:]), k.shape) & sampled
    if int(corners.sum()) >= MIN_SAMPLES:
        return _rayleigh_sigma(np.abs(k[corners]), "outer corners")
    ring = np.broadcast_to(ring_mask(k.shape[-2:]), k.shape) & sampled
    return _rayleigh_sigma(np.abs(k[ring]), "outer corners or the outer ring")


def estimate_noncartesian_noise(samples: np.ndarray, coord: np.ndarray) -> float:
    """σ of the k-space noise per real/imaginary part from non-Cartesian samples (C, K) or (K,)
    at coordinates ``coord`` (K, 2): the Rayleigh median of |y| over the samples at elliptical
    radius ≥ ``RING`` of the coordinates' extent along each axis (the outer ends of radial
    spokes). Raises ValueError when fewer than 64 samples lie there."""
    y = np.asarray(samples)
    if y.ndim == 1:
        y = y[None]
    c = np.asarray(coord, dtype=np.float64)
    if not np.iscomplexobj(y) or c.ndim != 2 or c.shape != (y.shape[-1], 2):
        raise ValueError(
            f"expected complex samples (C, K) and coordinates (K, 2), got {y.dtype} {y.shape} "
            f"and {c.shape}"
        )
    half = np.maximum(np.abs(c).max(axis=0), 1e-30)
    r = np.hypot(c[:, 0] / half[0], c[:, 1] / half[1])
    return _rayleigh_sigma(np.abs(y[:, r >= RING]).ravel(), "outer ring")
