"""Coil sensitivity maps: simulated birdcage maps and ESPIRiT estimation (SigPy)."""

from __future__ import annotations

import numpy as np

__all__ = ["birdcage_maps", "espirit_maps"]


def birdcage_maps(n_coils: int, shape: tuple[int, int], r: float = 1.5) -> np.ndarray:
    """(C, H, W) complex64 birdcage maps (SigPy), normalized so Σ_c |S_c|² = 1 everywhere."""
    import sigpy.mri

    if n_coils < 1:
        raise ValueError(f"need ≥ 1 coil, got {n_coils}")
    s = sigpy.mri.birdcage_maps((n_coils, *shape), r=r).astype(np.complex64)
    return (s / np.sqrt((np.abs(s) ** 2).sum(0, keepdims=True))).astype(np.complex64)


def espirit_maps(
    kspace: np.ndarray, calib_width: int = 24, thresh: float = 0.02, crop: float = 0.95
) -> np.ndarray:
    """ESPIRiT maps (C, H, W) complex64 from multi-coil k-space (C, H, W) (its centre region)."""
    from sigpy.mri.app import EspiritCalib

    k = np.asarray(kspace)
    if k.ndim != 3:
        raise ValueError(f"ESPIRiT needs multi-coil k-space (C, H, W), got shape {k.shape}")
    kernel = min(6, max(2, calib_width // 2))
    app = EspiritCalib(
        k, calib_width=calib_width, kernel_width=kernel, thresh=thresh, crop=crop, show_pbar=False
    )
    return app.run().astype(np.complex64)
