"""Small MRI files in the fastMRI layout that more than one test reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def noisy_oversampled_phantom(path: Path, noise: float = 0.01) -> Path:
    """A one-slice, 6-coil fastMRI file of Shepp-Logan 48² inside a 2× oversampled readout
    (k-space 96 × 48, recon size 48²), with complex Gaussian k-space noise of std ``noise`` ×
    max|k| (seed 0): a small, noisy multi-coil scan."""
    import h5py

    from data.fastmri import make_synthetic_fastmri
    from data.phantoms import shepp_logan

    img = np.pad(shepp_logan(48), ((24, 24), (0, 0)))[None]
    out = make_synthetic_fastmri(path, img, n_coils=6, seed=3, recon_size=(48, 48))
    with h5py.File(out, "r+") as f:
        k = f["kspace"][()]
        g = np.random.default_rng(0)
        sigma = noise * float(np.abs(k).max())
        f["kspace"][...] = k + sigma * (
            g.standard_normal(k.shape) + 1j * g.standard_normal(k.shape)
        )
    return Path(out)
