"""NIfTI volumes (through nibabel): 2-D slices for training MRI priors, CT volumes in HU read
into the ``CTVolume`` a DICOM series gives (``read_nifti_volume``), and the volumes `recon ct`
writes (``write_nifti_volume``, with ``dicom_affine``).

The shipped MRI priors are trained on the Colin27 T1 brain (``ch2.nii.gz`` from Debian's
``mricron-data``, BSD-3), axial slices; slices ``HELD_OUT`` are never trained on: the bundled MRI
demo slice comes from there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "COLIN27",
    "HELD_OUT",
    "TRAIN_SLICES",
    "nifti_slices",
    "dicom_affine",
    "write_nifti_volume",
    "is_nifti",
    "read_nifti_volume",
]

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
    try:
        import nibabel as nib
    except ImportError:
        raise ValueError(
            f"{path}: reading NIfTI needs nibabel (pip install nibabel, or the project's mri extra)"
        ) from None

    try:
        vol = np.asarray(nib.load(str(path)).get_fdata(), dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for bad files
        raise ValueError(f"{path}: not a readable NIfTI volume ({exc})") from None
    while vol.ndim > 3 and vol.shape[-1] == 1:  # (X, Y, Z, 1): one time point
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {vol.shape}")
    vol = vol / max(float(vol.max()), 1e-30)
    idx = range(vol.shape[axis]) if slices is None else slices
    return [np.ascontiguousarray(np.rot90(np.take(vol, i, axis=axis))) for i in idx]


def dicom_affine(
    positions: list[tuple[float, float, float]] | None,
    orientation: tuple[float, ...] | None,
    pixel_spacing: tuple[float, float],
    thickness: float | None = None,
) -> np.ndarray:
    """The NIfTI (RAS+) affine of a DICOM series stored as data[i, j, k] = volume[k, j, i]
    (i the column, j the row, k the slice in the series' order).

    DICOM's patient frame is LPS: voxel (i, j, k) sits at P₀ + i·Δc·r + j·Δr·c + k·s, with
    r, c the row and column direction cosines of ImageOrientationPatient, (Δr, Δc) PixelSpacing
    (between rows, between columns), P₀ the first slice's ImagePositionPatient and s the step
    between slice positions ((P_last − P₀)/(n − 1)). NIfTI's frame is RAS, so x and y change
    sign. Without positions, an axial identity orientation with the slice thickness (1 mm when
    unknown) as the step."""
    r, c = (np.array(orientation[:3]), np.array(orientation[3:])) if orientation else (None, None)
    if r is None:
        r, c = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    dr, dc = float(pixel_spacing[0]), float(pixel_spacing[1])
    if positions and len(positions) > 1:
        p0 = np.array(positions[0], dtype=np.float64)
        step = (np.array(positions[-1], dtype=np.float64) - p0) / (len(positions) - 1)
    else:
        p0 = np.array(positions[0], dtype=np.float64) if positions else np.zeros(3)
        step = np.cross(r, c) * float(thickness or 1.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = r * dc, c * dr, step, p0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_nifti_volume(path: str | Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    """A (S, H, W) volume as NIfTI-1 (float32, data[i, j, k] = volume[k, j, i]) with ``affine``,
    in mm; ``.nii`` or ``.nii.gz`` by the name. Written under a temporary name in the same folder
    and moved into place, so a crash leaves no half-written file."""
    import os
    import uuid

    import nibabel as nib

    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    data = np.ascontiguousarray(np.transpose(np.asarray(volume, np.float32), (2, 1, 0)))
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}{suffix}"
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def is_nifti(path: str | Path) -> bool:
    return Path(path).name.lower().endswith((".nii", ".nii.gz"))


def read_nifti_volume(path: str | Path):
    """A NIfTI CT volume in HU as a ``data.dicom.CTVolume`` (S, H, W) float32: the inverse of
    ``write_nifti_volume`` (volume[k, j, i] = data[i, j, k], slices along the third axis), the
    values as stored after the header's scl_slope/scl_inter (HU; ≤ −2000 becomes −1024 as in
    ``data.dicom``) and the geometry from the affine, taken from NIfTI's RAS to DICOM's LPS:
    pixel spacing (row, col), each slice's position P₀ + k·s, the row and column directions.
    A ``data.dicom.DicomError`` (a ValueError) naming the file when it cannot be read or is
    not a real 2-D or 3-D image."""
    from data.dicom import PADDING_HU, CTVolume, DicomError, grid_geometry, slice_normal

    path = Path(path)
    if not path.is_file():
        raise DicomError(f"{path}: no such NIfTI file")
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises several types for bad files
        raise DicomError(f"{path}: not a readable NIfTI volume ({exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or min(data.shape) < 1:
        raise DicomError(f"{path}: expected a 2-D image or a 3-D volume, got shape {data.shape}")
    hu = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    if not np.isfinite(hu).all():
        raise DicomError(f"{path}: the volume holds NaN or infinite values")
    hu[hu <= -2000.0] = PADDING_HU
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(img.affine, dtype=np.float64)
    col_step, row_step, step, p0 = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3]
    dc, dr = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    if not (dr > 0 and dc > 0):
        raise DicomError(f"{path}: its affine gives a zero pixel spacing")
    positions, orientation, thickness = grid_geometry(col_step, row_step, step, p0, len(hu))
    normal = slice_normal(orientation)
    return CTVolume(
        hu=hu,
        pixel_spacing=(dr, dc),
        positions=[float(np.dot(p, normal)) for p in positions],
        paths=[],
        patient_positions=positions,
        orientation=orientation,
        thickness=thickness or None,
    )
