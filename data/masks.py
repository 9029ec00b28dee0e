"""Undersampling patterns: fastMRI's 1-D Cartesian masks, Poisson-disc 2-D masks, radial and
spiral trajectories. Every random pattern takes a seed and is reproducible from it.

Cartesian masks are 1-D over the last axis (phase-encode columns), float32 0/1 of shape (W,), to
be broadcast over the rows. Trajectories are (K, 2) float32 coordinates in SigPy's convention:
cycles per field of view in [−N/2, N/2), column 0 along H (rows), column 1 along W (columns).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "default_center_fraction",
    "fastmri_random_mask",
    "fastmri_equispaced_mask",
    "poisson_disc_mask",
    "radial_trajectory",
    "spiral_trajectory",
    "acceleration",
]

#: Full-spoke golden angle (Winkelmann et al. 2007): π/φ = 180°·0.618… ≈ 111.25°.
GOLDEN_ANGLE = np.pi * (np.sqrt(5.0) - 1.0) / 2.0


def default_center_fraction(accel: float) -> float:
    """fastMRI's pairing: 0.08 for 4×, 0.04 for 8× (in general 0.32/accel)."""
    if not accel >= 1:
        raise ValueError(f"acceleration must be ≥ 1, got {accel}")
    return 0.32 / float(accel)


def acceleration(mask: np.ndarray) -> float:
    """Achieved acceleration: number of entries / number sampled (mask.size / Σ mask)."""
    m = np.asarray(mask, dtype=np.float64)
    total = float(m.sum())
    if total <= 0:
        raise ValueError("the mask samples nothing")
    return m.size / total


def _check(width: int, accel: float, center_fraction: float | None) -> tuple[float, int]:
    """Validate (W, R, cf); return (cf, n_low = round(W·cf))."""
    if int(width) != width or width < 2:
        raise ValueError(f"mask width must be an integer ≥ 2, got {width}")
    if not np.isfinite(accel) or accel < 1:
        raise ValueError(f"acceleration must be ≥ 1, got {accel}")
    cf = default_center_fraction(accel) if center_fraction is None else float(center_fraction)
    if not 0 < cf < 1:
        raise ValueError(f"centre fraction must be in (0, 1), got {center_fraction}")
    return cf, int(round(width * cf))


def _center(width: int, n_low: int) -> np.ndarray:
    """fastMRI's centre block: columns pad .. pad + n_low − 1 with pad = (W − n_low + 1) // 2."""
    m = np.zeros(width, dtype=np.float32)
    pad = (width - n_low + 1) // 2
    m[pad : pad + n_low] = 1
    return m


def fastmri_random_mask(
    width: int, accel: float, center_fraction: float | None = None, seed: int = 0
) -> np.ndarray:
    """fastMRI's RandomMaskFunc, 1-D over W columns, float32 (W,) of 0/1.

    The central n_low = round(W·cf) columns are always kept; every column is also kept
    independently with probability p = (W/R − n_low)/(W − n_low), so the expected number of
    columns is ≈ W/R. ``center_fraction`` defaults to ``default_center_fraction(accel)``.
    Raises ValueError when the centre alone exceeds W/R columns (p < 0).
    """
    cf, n_low = _check(width, accel, center_fraction)
    if n_low > width / accel:
        raise ValueError(
            f"centre fraction {cf} keeps {n_low} columns, more than the "
            f"{width / accel:.1f} an acceleration of {accel} allows"
        )
    if n_low >= width:
        return np.ones(width, dtype=np.float32)
    rng = np.random.default_rng(seed)
    prob = (width / accel - n_low) / (width - n_low)
    m = (rng.random(width) < prob).astype(np.float32)
    return np.maximum(m, _center(width, n_low))


def fastmri_equispaced_mask(
    width: int,
    accel: float,
    center_fraction: float | None = None,
    seed: int = 0,
    exact_fraction: bool = False,
) -> np.ndarray:
    """fastMRI's equispaced masks, 1-D over W columns, float32 (W,) of 0/1.

    Default (fastMRI's EquiSpacedMaskFunc, GRAPPA-like): the central round(W·cf) columns plus
    columns offset, offset + R, offset + 2R, … with a random offset in [0, round(R)). The
    centre adds columns, so the achieved acceleration is below R (about
    1/(1/R + cf − cf/R)); this is how fastMRI defines it.

    ``exact_fraction=True`` (fastMRI's EquispacedMaskFractionFunc): the spacing is widened to
    R·(n_low − W)/(n_low·R − W) so that the total is ≈ W/R columns, as for the random mask.
    """
    cf, n_low = _check(width, accel, center_fraction)
    rng = np.random.default_rng(seed)
    if exact_fraction:
        if n_low > width / accel:
            raise ValueError(
                f"centre fraction {cf} keeps {n_low} columns, more than the "
                f"{width / accel:.1f} an acceleration of {accel} allows"
            )
        if n_low >= width:
            return np.ones(width, dtype=np.float32)
        spacing = accel * (n_low - width) / (n_low * accel - width)
    else:
        spacing = float(accel)
    offset = int(rng.integers(0, max(int(round(spacing)), 1)))
    cols = np.round(np.arange(offset, width, spacing)).astype(int)
    m = np.zeros(width, dtype=np.float32)
    m[cols[cols < width]] = 1
    return np.maximum(m, _center(width, n_low))


def poisson_disc_mask(
    shape: tuple[int, int], accel: float, seed: int = 0, calib: int = 16
) -> np.ndarray:
    """Variable-density Poisson-disc 2-D mask (``sigpy.mri.poisson``), (H, W) float32 of 0/1.

    A fully sampled calib×calib centre is included (calib is capped at a quarter of the smaller
    side). SigPy tunes the disc radius until the achieved acceleration is within 10 % of R.
    """
    import sigpy.mri

    h, w = (int(s) for s in shape)
    if h < 4 or w < 4:
        raise ValueError(f"Poisson-disc mask needs a shape of at least 4×4, got {tuple(shape)}")
    if not np.isfinite(accel) or accel < 1:
        raise ValueError(f"acceleration must be ≥ 1, got {accel}")
    if calib < 0:
        raise ValueError(f"calib must be ≥ 0, got {calib}")
    calib = min(int(calib), min(h, w) // 4)
    if calib * calib > h * w / accel:
        raise ValueError(f"a {calib}×{calib} calibration region exceeds 1/{accel} of the samples")
    m = sigpy.mri.poisson((h, w), accel, calib=(calib, calib), seed=seed, dtype=np.complex64)
    return (np.abs(m) > 0).astype(np.float32)


def radial_trajectory(n_spokes: int, n_readout: int, golden: bool = True) -> np.ndarray:
    """Full radial spokes through the k-space centre, (n_spokes·n_readout, 2) float32.

    Spoke s has angle s·111.25° (golden, Winkelmann 2007) or s·π/n_spokes (uniform over
    [0, π)); its samples are at radii r = −N/2, …, N/2 − 1 with N = n_readout (so an image of
    side N is covered up to its Nyquist radius). Coordinates: (k_row, k_col) = r·(sin θ, cos θ).
    """
    if int(n_spokes) != n_spokes or n_spokes < 1:
        raise ValueError(f"need an integer ≥ 1 of spokes, got {n_spokes}")
    if int(n_readout) != n_readout or n_readout < 2:
        raise ValueError(f"need an integer ≥ 2 of readout points, got {n_readout}")
    step = GOLDEN_ANGLE if golden else np.pi / n_spokes
    ang = np.arange(n_spokes) * step
    r = np.arange(n_readout) - n_readout / 2
    k_row = r[None, :] * np.sin(ang)[:, None]
    k_col = r[None, :] * np.cos(ang)[:, None]
    return np.stack([k_row.ravel(), k_col.ravel()], axis=1).astype(np.float32)


def spiral_trajectory(size: int, n_interleaves: int = 8, n_points: int = 1024) -> np.ndarray:
    """Archimedean spiral interleaves, (n_interleaves·n_points, 2) float32.

    Each interleave runs from the centre to |k| < size/2 with constant radial speed; the arms
    are rotated by 2π/n_interleaves, and the number of turns (size/(2·n_interleaves)) puts
    neighbouring arms one cycle apart: Nyquist-sampled for an image of side ``size``. To
    undersample R-fold keep every R-th arm: ``traj.reshape(n_interleaves, n_points, 2)[::R]``.
    """
    if size < 4:
        raise ValueError(f"spiral needs size ≥ 4, got {size}")
    if n_interleaves < 1 or n_points < 8:
        raise ValueError(
            f"spiral needs ≥ 1 interleave and ≥ 8 points, got {n_interleaves}, {n_points}"
        )
    t = np.linspace(0.0, 1.0, int(n_points))
    turns = size / (2.0 * n_interleaves)
    r = t * (size / 2.0) * 0.999  # stays inside [−N/2, N/2)
    arms = []
    for i in range(int(n_interleaves)):
        th = 2 * np.pi * turns * t + 2 * np.pi * i / n_interleaves
        arms.append(np.stack([r * np.sin(th), r * np.cos(th)], axis=1))
    return np.concatenate(arms).astype(np.float32)
