"""NIfTI volumes (through nibabel) as 2-D slices, e.g. for training MRI priors.

The shipped MRI priors are trained on the Colin27 T1 brain (``ch2.nii.gz`` from Debian's
``mricron-data``, BSD-3), axial slices; slices ``HELD_OUT`` are never trained on: the bundled MRI
demo slice comes from there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["COLIN27", "HELD_OUT", "TRAIN_SLICES", "nifti_slices"]

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
TRAIN_SLICES = range(30, 115)  # axial slices with brain in them
HELD_OUT = range(120, 150)


def nifti_slices(
    path: str | Path, slices: range | list[int] | None = None, axis: int = 2
) -> list[np.ndarray]:
    """2-D float32 slices of a NIfTI volume along ``axis``, scaled to [0, 1] by the volume max."""
    path = Path(path)
    if not path.exists():
        hint = " (install Debian's mricron-data)" if path == COLIN27 else ""
        raise ValueError(f"{path}: no such NIfTI file{hint}")
    import nibabel as nib

    try:
        vol = np.asarray(nib.load(str(path)).get_fdata(), dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for bad files
        raise ValueError(f"{path}: not a readable NIfTI volume ({exc})") from None
    if vol.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {vol.shape}")
    vol = vol / max(float(vol.max()), 1e-30)
    idx = range(vol.shape[axis]) if slices is None else slices
    return [np.ascontiguousarray(np.rot90(np.take(vol, i, axis=axis))) for i in idx]
