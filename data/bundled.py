"""Real sample data shipped with the dependencies, for the demo and the tests (never trained on).

* ``ct-small``: the real 128×128 CT slice pydicom ships (``CT_small.dcm``), read in HU.
* ``brain-t1``: a 208×176 axial slice (135) of the Colin27 T1 brain (``ch2.nii.gz`` from Debian's
  mricron-data, BSD-3), magnitude in [0, 1]; held out from MRI prior training (slices 30–114).
"""

from __future__ import annotations

from pathlib import Path

from data.dicom import read_dicom_file

__all__ = ["load_bundled", "BUNDLED"]

BUNDLED = ("ct-small", "brain-t1")


def load_bundled(name: str):
    """``ct-small`` -> CTSlice (HU); ``brain-t1`` -> (H, W) float32 magnitude image."""
    if name == "brain-t1":
        import numpy as np

        path = Path(__file__).parent / "bundled" / "brain_t1_colin27_axial135.npy"
        return np.load(path).astype(np.float32)
    if name == "ct-small":
        from pydicom.data import get_testdata_file

        return read_dicom_file(get_testdata_file("CT_small.dcm"))
    raise ValueError(f"unknown bundled data {name!r}; available: {', '.join(BUNDLED)}")
