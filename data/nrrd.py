"""CT volumes in NRRD (``.nrrd``, or a detached ``.nhdr`` header), as 3D Slicer and many research
data sets store them, read with pynrrd into the same ``CTVolume`` a DICOM series gives.

The voxel values are taken as HU (NRRD has no rescale tags); values ≤ −2000 (scanner padding)
become −1024 HU as in ``data.dicom``. Geometry: NRRD lists its axes fastest first (x, y, z);
slice k is ``data[:, :, k].T`` (rows along y, columns along x), the pixel spacing (row, col) is
(|d_y|, |d_x|) from ``space directions``, and when the space is a patient frame (LPS, DICOM's, or
RAS/LAS, turned into LPS by flipping the signs of the coordinates that point the other way) each
slice's position is ``space origin + k·d_z`` with the orientation (d_x/|d_x|, d_y/|d_y|).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.dicom import PADDING_HU, CTVolume, DicomError, grid_geometry

__all__ = ["NRRD_SUFFIXES", "NrrdError", "is_nrrd", "read_nrrd_volume"]

NRRD_SUFFIXES = (".nrrd", ".nhdr")
# NRRD patient spaces -> the sign flips that take their coordinates to DICOM's LPS
_TO_LPS = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "lps": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "las": (1.0, -1.0, 1.0),
}


class NrrdError(DicomError):
    """An NRRD file that cannot be read as a CT volume (a ValueError, like DicomError)."""


def is_nrrd(path: str | Path) -> bool:
    return Path(path).suffix.lower() in NRRD_SUFFIXES


def read_nrrd_volume(path: str | Path) -> CTVolume:
    """The NRRD file at ``path`` as a HU volume (S, H, W) float32; a 2-D image gives one slice.

    Raises NrrdError naming the file when pynrrd is missing, the file is unreadable, or its data
    is not a scalar 2-D or 3-D image."""
    path = Path(path)
    if not path.is_file():
        raise NrrdError(f"{path}: no such NRRD file")
    try:
        import nrrd
    except ImportError:
        raise NrrdError(f"{path}: reading NRRD needs pynrrd (pip install pynrrd)") from None
    try:
        data, header = nrrd.read(str(path))
    except Exception as exc:  # NRRDError, zlib/EOF errors on truncated data
        raise NrrdError(f"{path}: not a readable NRRD file ({exc})") from None
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    if any(k not in ("domain", "space", "none", "???") for k in kinds):
        raise NrrdError(f"{path}: expected a scalar image, got axis kinds {kinds}")
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or min(data.shape) < 1:
        raise NrrdError(f"{path}: expected a 2-D image or a 3-D volume, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise NrrdError(f"{path}: expected real voxel values, got {data.dtype}")
    hu = np.ascontiguousarray(np.transpose(data, (2, 1, 0))).astype(np.float32)
    hu[hu <= -2000.0] = PADDING_HU  # as data.dicom does
    if not np.isfinite(hu).all():
        raise NrrdError(f"{path}: the volume holds NaN or infinite values")

    dirs = header.get("space directions")
    spacing, positions, orientation, thickness = (1.0, 1.0), None, None, None
    if dirs is not None:
        d = np.asarray(dirs, dtype=np.float64)
        if d.ndim == 2 and d.shape[0] >= 2 and np.isfinite(d[:2]).all():
            dx, dy = d[0], d[1]
            spacing = (float(np.linalg.norm(dy)), float(np.linalg.norm(dx)))
            if min(spacing) <= 0:
                raise NrrdError(f"{path}: space directions give a zero pixel spacing {spacing}")
            flip = _TO_LPS.get(str(header.get("space", "")).lower())
            origin = np.asarray(header.get("space origin", [np.nan] * 3), dtype=np.float64)
            if (
                flip is not None
                and d.shape == (3, 3)
                and origin.shape == (3,)
                and np.isfinite(d).all()
                and np.isfinite(origin).all()
            ):
                d, origin = d * np.asarray(flip), origin * np.asarray(flip)  # rows: directions
                positions, orientation, thickness = grid_geometry(d[0], d[1], d[2], origin, len(hu))
    return CTVolume(
        hu=hu,
        pixel_spacing=spacing,
        positions=[float(k) for k in range(len(hu))]
        if positions is None
        else [float(p[2]) for p in positions],
        paths=[],
        patient_positions=positions,
        orientation=orientation,
        thickness=thickness,
    )
