"""Writing a reconstructed CT volume as a DICOM series that viewers and PACS accept.

Each slice is a CT Image Storage object (explicit VR little endian): stored values
round(HU) + 3024 as unsigned 16 bits with RescaleSlope 1 and RescaleIntercept −3024 (HU from
−3024 to 62511, clipped there: a reconstruction undershoots air's −1024 HU, and those values
are kept), the source slice's geometry (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing, SliceThickness) and patient and study identity, a new SeriesInstanceUID shared by
the series, a new SOPInstanceUID per slice, ImageType DERIVED\\SECONDARY and a
DerivationDescription naming the method; WindowCenter/WindowWidth when a window is given (recon
ct: its PNGs' grey scale) and SpacingBetweenSlices when the slices are evenly spaced. Without a
source study (an NRRD volume), the series gets one new StudyInstanceUID and FrameOfReferenceUID
for all its slices. The series is written into a temporary folder beside the destination, made
readable as the umask allows, and moved into place at the end, so a reader sees the whole
series or none of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["write_dicom_series", "HU_INTERCEPT"]

HU_INTERCEPT = -3024.0
# copied from each source slice when present: who, which study, where the slice lies
COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "StudyDescription",
    "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "Manufacturer", "KVP", "BodyPartExamined",
    "PatientPosition", "SliceLocation",
)  # fmt: skip


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters, as DICOM allows (repr of a float64 can
    take 18: strict readers refuse it)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def write_dicom_series(
    folder: str | Path,
    volume_hu: np.ndarray,
    sources: list[Path] | None,
    *,
    pixel_spacing: tuple[float, float],
    positions: list[tuple[float, float, float]] | None = None,
    orientation: tuple[float, ...] | None = None,
    thickness: float | None = None,
    description: str,
    series_description: str = "recon",
    window: tuple[float, float] | None = None,
) -> list[Path]:
    """Write ``volume_hu`` (S, H, W) as ``folder``/IM_0001.dcm ... in the series order, each
    slice with the identity of ``sources[k]`` (when given) and the geometry given here; returns
    the file paths. ``description`` goes into DerivationDescription (at most 1024 characters).
    ``window`` (center, width) in HU becomes WindowCenter/WindowWidth (a viewer's initial grey
    scale; width at least 1, as DICOM requires), and SpacingBetweenSlices is written when the
    positions are evenly spaced along the slice normal (``data.dicom.even_slice_spacing``)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from data.dicom import even_slice_spacing

    volume_hu = np.asarray(volume_hu)
    if volume_hu.ndim != 3:
        raise ValueError(f"expected a volume (S, H, W), got shape {volume_hu.shape}")
    n = len(volume_hu)
    if sources is not None and len(sources) != n:
        raise ValueError(f"{len(sources)} source files for {n} slices")
    if positions is not None and len(positions) != n:
        raise ValueError(f"{len(positions)} positions for {n} slices")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700: others could not read the series
    series_uid = generate_uid()
    between = even_slice_spacing(positions, orientation)
    study_uid, frame_uid = generate_uid(), generate_uid()  # when the sources have none
    try:
        names = []
        for k in range(n):
            src = pydicom.dcmread(sources[k], stop_before_pixels=True) if sources else None
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(str(tmp / "x"), {}, file_meta=meta, preamble=b"\0" * 128)
            if src is not None:
                for key in COPIED:
                    if key in src:
                        setattr(ds, key, src.data_element(key).value)
                series_number = int(getattr(src, "SeriesNumber", 0) or 0) + 1000
            else:
                series_number = 1000
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            if "StudyInstanceUID" not in ds:
                ds.StudyInstanceUID = study_uid
            if "FrameOfReferenceUID" not in ds:
                ds.FrameOfReferenceUID = frame_uid
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_number
            ds.SeriesDescription = series_description[:64]
            ds.Modality = "CT"
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.DerivationDescription = description[:1024]
            ds.InstanceNumber = k + 1
            ds.Rows, ds.Columns = volume_hu.shape[1:]
            ds.PixelSpacing = [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])]
            if positions is not None:
                ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
            if orientation is not None:
                ds.ImageOrientationPatient = [_ds(v) for v in orientation]
            if thickness is not None:
                ds.SliceThickness = _ds(thickness)
            if between is not None:
                ds.SpacingBetweenSlices = _ds(between)
            if window is not None:
                ds.WindowCenter = _ds(window[0])
                ds.WindowWidth = _ds(max(float(window[1]), 1.0))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1.0, HU_INTERCEPT, "HU"
            stored = np.clip(np.rint(volume_hu[k].astype(np.float64) - HU_INTERCEPT), 0, 65535)
            ds.PixelData = stored.astype("<u2").tobytes()
            name = tmp / f"IM_{k + 1:04d}.dcm"
            ds.save_as(str(name), enforce_file_format=True)
            names.append(folder / name.name)
        if folder.exists():  # an older series of the same run: replaced as a whole
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names
