"""Undersampling patterns: fastMRI's 1-D Cartesian masks, Poisson-disc 2-D masks, radial and
spiral trajectories. Every random pattern takes a seed and is reproducible."""

from __future__ import annotations

import numpy as np

__all__ = [
    "default_center_fraction",
    "fastmri_random_mask",
    "fastmri_equispaced_mask",
    "poisson_disc_mask",
    "radial_trajectory",
    "spiral_trajectory",
]


def default_center_fraction(accel: float) -> float:
    """fastMRI's convention: 0.08 for 4×, 0.04 for 8× (0.32/accel in general)."""
    return 0.32 / accel


def _check(width: int, accel: float, center_fraction: float) -> int:
    if width < 2:
        raise ValueError(f"mask width must be ≥ 2, got {width}")
    if accel < 1:
        raise ValueError(f"acceleration must be ≥ 1, got {accel}")
    if not 0 < center_fraction < 1:
        raise ValueError(f"centre fraction must be in (0, 1), got {center_fraction}")
    n_low = int(round(width * center_fraction))
    if n_low > width / accel:
        raise ValueError(
            f"centre fraction {center_fraction} keeps {n_low} columns, more than the "
            f"{width / accel:.0f} an acceleration of {accel} allows"
        )
    return n_low


def _center(width: int, n_low: int) -> np.ndarray:
    m = np.zeros(width, dtype=np.float32)
    start = (width - n_low + 1) // 2
    m[start : start + n_low] = 1
    return m


def fastmri_random_mask(
    width: int, accel: float, center_fraction: float | None = None, seed: int = 0
) -> np.ndarray:
    """fastMRI RandomMaskFunc: the central round(W·cf) columns, and every other column with
    probability (W/accel − n_low)/(W − n_low). Returns (W,) float32 of 0/1."""
    cf = default_center_fraction(accel) if center_fraction is None else center_fraction
    n_low = _check(width, accel, cf)
    rng = np.random.default_rng(seed)
    prob = (width / accel - n_low) / (width - n_low)
    m = _center(width, n_low)
    m[rng.random(width) < prob] = 1
    return m


def fastmri_equispaced_mask(
    width: int, accel: float, center_fraction: float | None = None, seed: int = 0
) -> np.ndarray:
    """fastMRI EquispacedMaskFunc: the central block plus equispaced columns from a random
    offset, the spacing adjusted so that the total is W/accel columns (as fastMRI does:
    spacing = accel·(n_low − W)/(n_low·accel − W)). Returns (W,) float32 of 0/1."""
    cf = default_center_fraction(accel) if center_fraction is None else center_fraction
    n_low = _check(width, accel, cf)
    rng = np.random.default_rng(seed)
    m = _center(width, n_low)
    spacing = accel * (n_low - width) / (n_low * accel - width)
    offset = int(rng.integers(0, max(int(round(spacing)), 1)))
    cols = np.around(np.arange(offset, width - 1, spacing)).astype(int)
    m[cols] = 1
    return m


def poisson_disc_mask(
    shape: tuple[int, int], accel: float, seed: int = 0, calib: int = 16
) -> np.ndarray:
    """Variable-density Poisson-disc 2-D mask (SigPy), (H, W) float32 of 0/1, with a fully
    sampled calib×calib centre (calib capped at a quarter of the smaller side)."""
    import sigpy.mri

    if accel < 1:
        raise ValueError(f"acceleration must be ≥ 1, got {accel}")
    calib = min(calib, min(shape) // 4)
    m = sigpy.mri.poisson(tuple(shape), accel, calib=(calib, calib), seed=seed, dtype=np.complex64)
    return np.abs(m).astype(np.float32)


def radial_trajectory(n_spokes: int, n_readout: int, golden: bool = True) -> np.ndarray:
    """Radial spokes through the k-space centre, (n_spokes·n_readout, 2) float32, SigPy units."""
    if n_spokes < 1 or n_readout < 2:
        raise ValueError(f"need ≥ 1 spoke and ≥ 2 readout points, got {n_spokes}, {n_readout}")
    step = np.pi * (3 - np.sqrt(5)) if golden else np.pi / n_spokes
    ang = np.arange(n_spokes) * step
    r = np.arange(n_readout) - n_readout / 2
    kx = r[None, :] * np.cos(ang)[:, None]
    ky = r[None, :] * np.sin(ang)[:, None]
    return np.stack([ky.ravel(), kx.ravel()], axis=1).astype(np.float32)


def spiral_trajectory(size: int, n_interleaves: int = 8, n_points: int = 1024) -> np.ndarray:
    """Archimedean spiral interleaves reaching |k| = size/2, (n_interleaves·n_points, 2)."""
    if size < 4 or n_interleaves < 1 or n_points < 8:
        raise ValueError("spiral needs size ≥ 4, ≥ 1 interleave and ≥ 8 points")
    t = np.linspace(0, 1, n_points)
    turns = size / (2 * n_interleaves)
    r = t * size / 2 * 0.999
    out = []
    for i in range(n_interleaves):
        th = 2 * np.pi * turns * t + 2 * np.pi * i / n_interleaves
        out.append(np.stack([r * np.sin(th), r * np.cos(th)], axis=1))
    return np.concatenate(out).astype(np.float32)
