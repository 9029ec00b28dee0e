"""Image quality against a reference: PSNR, SSIM, NMSE, with one data-range convention.

PSNR = 10·log10(data_range² / mean|x − ref|²), where ``data_range`` defaults to the reference's
max − min (the convention of scikit-image and of every table in this project); pass it
explicitly to score in fixed units (e.g. 1 for images scaled to [0, 1], or the range of the
undegraded image when comparing several reconstructions of it). Complex inputs are scored on
their magnitude. Everything is computed in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["psnr", "image_metrics", "real64"]

Image = np.ndarray | torch.Tensor


def real64(a: Image) -> np.ndarray:
    """The image as a float64 NumPy array on the CPU, its magnitude if complex (same shape)."""
    if isinstance(a, torch.Tensor):
        a = a.detach()
        a = a.abs() if a.is_complex() else a
        return a.to("cpu", torch.float64).numpy()
    a = np.asarray(a)
    return np.abs(a).astype(np.float64) if np.iscomplexobj(a) else a.astype(np.float64)


def _range(ref: np.ndarray, data_range: float | None) -> float:
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    if not rng > 0:
        raise ValueError("data_range must be > 0 (a constant reference needs an explicit one)")
    return rng


def psnr(x: Image, ref: Image, data_range: float | None = None) -> float:
    """PSNR (dB) of x against ref (same shape, any layout); inf when they are equal, NaN when x
    holds a NaN or an infinity (a failed image scores nothing, never a perfect inf), −inf when
    the squared error of finite values overflows."""
    a, r = real64(x), real64(ref)
    if a.shape != r.shape:
        raise ValueError(f"shapes differ: {a.shape} vs reference {r.shape}")
    if not (np.isfinite(a).all() and np.isfinite(r).all()):
        return math.nan
    with np.errstate(over="ignore"):
        mse = float(np.mean((a - r) ** 2))
    if not math.isfinite(mse):  # finite values whose squared error overflows: no likeness
        return -math.inf
    return 10.0 * math.log10(_range(r, data_range) ** 2 / mse) if mse > 0 else math.inf


def image_metrics(x: Image, ref: Image, data_range: float | None = None) -> dict[str, float]:
    """PSNR, SSIM and NMSE = ||x − ref||²/||ref||² of a 2-D image (magnitude if complex)."""
    from skimage.metrics import structural_similarity

    a, r = real64(x), real64(ref)
    rng = _range(r, data_range)
    return {
        "psnr": psnr(a, r, rng),
        "ssim": float(structural_similarity(a, r, data_range=rng)),
        "nmse": float(np.sum((a - r) ** 2) / np.sum(r**2)),
        "data_range": rng,
    }
