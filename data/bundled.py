"""Real sample data shipped with the dependencies, for the demo and the tests (never trained on).

* ``ct-small``: the real 128×128 CT slice pydicom ships (``CT_small.dcm``), read in HU.
"""

from __future__ import annotations

from data.dicom import CTSlice, read_dicom_file

__all__ = ["load_bundled", "BUNDLED"]

BUNDLED = ("ct-small",)


def load_bundled(name: str) -> CTSlice:
    if name == "ct-small":
        from pydicom.data import get_testdata_file

        return read_dicom_file(get_testdata_file("CT_small.dcm"))
    raise ValueError(f"unknown bundled data {name!r}; available: {', '.join(BUNDLED)}")
