"""LIDC-IDRI style CT DICOM: single files and series folders, in HU (pydicom).

HU = stored value · RescaleSlope + RescaleIntercept (1 and 0 when absent). A series is ordered
by the distance of ImagePositionPatient along the slice normal (ImageOrientationPatient's row ×
column cosines; z when absent), InstanceNumber when positions are missing; duplicate positions are
dropped, and scanner padding (PixelPaddingValue, or HU ≤ −2000) is clipped to −1024 HU. Every
error is a ``DicomError`` (a ValueError) naming the file or folder it is about. In a series
folder, hidden files and sidecar files (``SIDECAR_SUFFIXES``, e.g. LIDC's annotation XML) are
skipped, and so are localizers (ImageType LOCALIZER), with a warning; every other file must be
a readable CT slice of the same size. A file whose Modality is not CT (an MR image, say) is
refused rather than labelled HU. Uneven slice spacing is said by ``uneven_spacing_warning`` for
the slices a run writes (recon.nii.gz's affine takes their mean step), not when reading.

Compressed pixel data is decoded by pydicom's plugins: python-gdcm (a dependency, Apache-2.0)
decodes JPEG Lossless (process 14, common in clinical archives), JPEG-LS and JPEG 2000; pydicom
itself decodes RLE; 12-bit JPEG Extended (process 4) needs pylibjpeg-libjpeg (GPL-3.0, the
``jpeg12`` extra). ``DECODERS_HINT`` says so in the error when a plugin is missing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DicomError",
    "CTSlice",
    "CTVolume",
    "read_dicom_file",
    "read_dicom_series",
    "resample_to_spacing",
    "decode_pixels",
    "grid_geometry",
    "warn_no_image",
    "is_dicom_file",
    "DICOM_SUFFIXES",
    "slice_normal",
    "slice_gaps",
    "even_slice_spacing",
    "uneven_spacing_warning",
]

PADDING_HU = -1024.0
# Files that sit next to the slices in real series folders (LIDC-IDRI keeps its annotation XML
# there) and are skipped; any other file that is not DICOM is an error naming it.
SIDECAR_SUFFIXES = frozenset({".xml", ".txt", ".json", ".csv", ".md", ".log"})
# A file with one of these suffixes is DICOM; one with a suffix in OTHER_SUFFIXES is not (and is
# not opened); any other file (IM0001, a UID name such as 1.3.6.1.4.1.14519.5.2.1.353454709,
# whose "suffix" is its last number) is DICOM when its preamble says so: ``is_dicom_file``.
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima"})
OTHER_SUFFIXES = SIDECAR_SUFFIXES | frozenset(
    {".npy", ".npz", ".nrrd", ".nhdr", ".nii", ".gz", ".h5", ".hdf5", ".mat", ".safetensors",
     ".pt", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".cfl", ".hdr", ".zip"}
)  # fmt: skip
DECODERS_HINT = (
    "python-gdcm decodes JPEG Lossless, JPEG-LS and JPEG 2000 (pip install python-gdcm); "
    "12-bit JPEG Extended needs pylibjpeg with pylibjpeg-libjpeg (pip install pylibjpeg "
    "pylibjpeg-libjpeg)"
)


class DicomError(ValueError):
    """A DICOM file or series that cannot be read as CT."""


class NoPixelDataError(DicomError):
    """A DICOM object without an image (DICOMDIR, a structured report, a presentation state,
    RT structures): skipped, with a warning, when it sits in a series folder."""


@dataclass
class CTSlice:
    """One slice: ``hu`` (H, W) float32 in HU, ``pixel_spacing`` (row, col) in mm (1, 1 when the
    file has none), ImagePositionPatient and InstanceNumber when present, the source path."""

    hu: np.ndarray
    pixel_spacing: tuple[float, float]
    position: tuple[float, float, float] | None
    instance: int | None
    path: Path
    orientation: tuple[float, ...] | None = None  # ImageOrientationPatient (row, column cosines)
    thickness: float | None = None  # SliceThickness, mm
    series_uid: str | None = None  # SeriesInstanceUID
    localizer: bool = False  # ImageType holds LOCALIZER (a scout / topogram)


@dataclass
class CTVolume:
    """A series: ``hu`` (S, H, W) float32 ordered along the patient axis, the first slice's
    ``pixel_spacing`` (row, col) mm, each slice's sort key (z position, or instance number when
    positions are missing) and source path; when every slice has them, each slice's
    ImagePositionPatient (x, y, z) mm, the first slice's ImageOrientationPatient and
    SliceThickness (the geometry ``data.nifti.dicom_affine`` and ``data.dicom_write`` use)."""

    hu: np.ndarray
    pixel_spacing: tuple[float, float]
    positions: list[float] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    patient_positions: list[tuple[float, float, float]] | None = None
    orientation: tuple[float, ...] | None = None
    thickness: float | None = None


def grid_geometry(
    col_step: np.ndarray, row_step: np.ndarray, step: np.ndarray, origin: np.ndarray, n: int
) -> tuple[list[tuple[float, float, float]], tuple[float, ...], float]:
    """The DICOM (LPS) geometry of n slices on a regular grid, from the mm steps between
    columns, rows and slices and the first voxel's position: each slice's position origin +
    k·step, ImageOrientationPatient (col_step/|col_step|, row_step/|row_step|) and the slice
    thickness |step| (the volume readers of ``data.nrrd`` and ``data.nifti``)."""
    positions = [tuple(float(v) for v in origin + k * step) for k in range(n)]
    unit = np.concatenate(
        [col_step / np.linalg.norm(col_step), row_step / np.linalg.norm(row_step)]
    )
    return positions, tuple(float(v) for v in unit), float(np.linalg.norm(step))


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is taken for a DICOM file when a folder is searched (`recon batch`,
    `recon tune --inputs`, `recon train --data`): True when its suffix is a DICOM one
    (``DICOM_SUFFIXES``); False when it names another known kind (``OTHER_SUFFIXES``: .npy,
    NRRD, NIfTI, .h5, pictures, .json, .txt, ...); otherwise True when the file has the DICOM
    preamble's 'DICM' magic at byte 128, whatever its name (IM0001, or a UID name with dots)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in OTHER_SUFFIXES:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom_file(path: str | Path) -> CTSlice:
    """One CT slice in HU: stored · RescaleSlope + RescaleIntercept (defaults 1, 0), padding
    (PixelPaddingValue, or ≤ −2000 HU) set to −1024; a DicomError naming the file if the file
    is not DICOM, is corrupt, has no pixel data or is not a single 2-D slice."""
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise DicomError(f"{path}: no such DICOM file")
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # InvalidDicomError, EOFError, struct/Value errors on corrupt data
        why = str(exc).split(". Use force=True")[0]  # pydicom's advice is for its API, not us
        raise DicomError(f"{path}: not a readable DICOM file ({why})") from None
    if "PixelData" not in ds:
        meta = getattr(ds, "file_meta", None)
        sop = getattr(ds, "SOPClassUID", None) or getattr(meta, "MediaStorageSOPClassUID", None)
        kind = str(getattr(sop, "name", "") or "")
        if kind and "Image" not in kind:  # not an image object: DICOMDIR, SR, RT structures
            raise NoPixelDataError(f"{path}: a {kind} object, no image")
        raise DicomError(f"{path}: DICOM file has no pixel data")
    modality = str(getattr(ds, "Modality", "CT") or "CT").upper()
    if modality != "CT":
        raise DicomError(
            f"{path}: Modality {modality}, not CT: recon ct reconstructs CT slices in HU "
            "(for MRI k-space use recon mri with a fastMRI .h5 file)"
        )
    raw = decode_pixels(ds, path)
    if raw.ndim != 2:
        raise DicomError(f"{path}: expected a 2-D slice, got pixel array of shape {raw.shape}")
    if "Modality" not in ds and "RescaleIntercept" not in ds:
        warnings.warn(
            f"{path}: no Modality and no RescaleSlope/RescaleIntercept: its stored values "
            f"({int(raw.min())} to {int(raw.max())}) are taken as HU",
            stacklevel=2,
        )
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    hu = raw.astype(np.float64) * slope + intercept
    pad = getattr(ds, "PixelPaddingValue", None)
    if pad is not None:
        hu[raw == pad] = PADDING_HU
    hu[hu <= -2000] = PADDING_HU
    spacing = tuple(float(v) for v in getattr(ds, "PixelSpacing", (1.0, 1.0)))
    pos = getattr(ds, "ImagePositionPatient", None)
    inst = getattr(ds, "InstanceNumber", None)
    iop = getattr(ds, "ImageOrientationPatient", None)
    thick = getattr(ds, "SliceThickness", None)
    return CTSlice(
        hu=hu.astype(np.float32),
        pixel_spacing=(spacing[0], spacing[1]),
        position=tuple(float(v) for v in pos) if pos is not None else None,
        instance=int(inst) if inst is not None else None,
        path=path,
        orientation=tuple(float(v) for v in iop) if iop is not None and len(iop) == 6 else None,
        thickness=float(thick) if thick not in (None, "") else None,
        series_uid=str(getattr(ds, "SeriesInstanceUID", "") or "") or None,
        localizer=_is_localizer(getattr(ds, "ImageType", None)),
    )


def _is_localizer(image_type) -> bool:
    """Whether an ImageType value (a string or a list of them) holds LOCALIZER."""
    if image_type is None:
        return False
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return any("LOCALIZER" in str(v).upper() for v in values)


def decode_pixels(ds, path: str | Path) -> np.ndarray:
    """The stored pixel values of a read dataset ``ds`` (any transfer syntax a plugin decodes);
    a DicomError naming ``path`` and the transfer syntax when there are none or no installed
    decoder can read them."""
    if "PixelData" not in ds:
        raise DicomError(f"{path}: DICOM file has no pixel data")
    try:
        return ds.pixel_array
    except Exception as exc:  # decoders raise many kinds
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or str(syntax or "unknown transfer syntax")
        reason = " ".join(str(exc).split())
        uncompressed = syntax is not None and not getattr(syntax, "is_compressed", True)
        expected = int(getattr(ds, "Rows", 0)) * int(getattr(ds, "Columns", 0))
        expected = expected * int(getattr(ds, "BitsAllocated", 16)) // 8
        if uncompressed and len(ds.PixelData) < expected:
            raise DicomError(
                f"{path}: pixel data holds {len(ds.PixelData)} bytes, {expected} expected for "
                f"{ds.Rows}×{ds.Columns} ({name}): a truncated or damaged file"
            ) from None
        raise DicomError(
            f"{path}: cannot decode pixel data ({name}): {reason[:300]}. {DECODERS_HINT}"
        ) from None


def read_dicom_series(folder: str | Path) -> CTVolume:
    """All slices in a folder as one HU volume (S, H, W), ordered by their position along the
    slice normal (InstanceNumber when any position is missing), duplicate positions dropped
    (first kept, with a warning). A folder holding several series (SeriesInstanceUID) is
    refused.

    Raises DicomError naming the folder when it holds no DICOM files, and naming the file for
    an unreadable file or a slice whose size differs from the first one (both sizes given)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: not a folder")
    entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    files = [p for p in entries if p.suffix.lower() not in SIDECAR_SUFFIXES]
    if not files:
        subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if subs:  # a patient or study folder (LIDC-IDRI-0001/<study>/<series>/)
            raise DicomError(
                f"{folder}: no DICOM files in it, but {len(subs)} subfolder(s) (e.g. {subs[0]}): "
                f"give a series folder, or `recon batch ct --inputs {folder} --per volume` for "
                "every series under it"
            )
        what = "empty folder" if not entries else f"only {', '.join(p.name for p in entries[:3])}"
        raise DicomError(f"{folder}: no DICOM files ({what})")
    slices, skipped = [], []
    for p in files:
        try:
            slices.append(read_dicom_file(p))
        except NoPixelDataError:
            skipped.append(p)
    if skipped:
        warn_no_image(folder, len(skipped), skipped[0].name)
    if not slices:
        raise DicomError(f"{folder}: no DICOM image files ({len(skipped)} without pixel data)")
    scouts = [s.path.name for s in slices if s.localizer]
    if scouts and len(scouts) == len(slices):
        raise DicomError(f"{folder}: only localizer images (ImageType LOCALIZER), no axial slices")
    if scouts:  # a scout or topogram exported with the series (its UID or its own)
        slices = [s for s in slices if not s.localizer]
        more = f", and {len(scouts) - 5} more" if len(scouts) > 5 else ""
        warnings.warn(
            f"{folder}: {len(scouts)} localizer image(s) skipped (ImageType LOCALIZER: "
            f"{', '.join(scouts[:5])}{more})",
            stacklevel=2,
        )
    _check_sizes(slices)
    first = slices[0]
    for s in slices[1:]:
        if (
            s.orientation is not None
            and first.orientation is not None
            and not np.allclose(s.orientation, first.orientation, atol=1e-4)
        ):
            raise DicomError(
                f"{s.path}: ImageOrientationPatient {_fmt(s.orientation)} differs from "
                f"{_fmt(first.orientation)} of {first.path.name} (a localizer or another "
                "series?): give each series its own folder"
            )
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise DicomError(
                f"{s.path}: PixelSpacing {_fmt(s.pixel_spacing)} mm differs from "
                f"{_fmt(first.pixel_spacing)} of {first.path.name}: one series has one grid"
            )
    by_series: dict[str, Path] = {}
    for s in slices:
        if s.series_uid is not None:
            by_series.setdefault(s.series_uid, s.path)
    no_uid = [s.path for s in slices if s.series_uid is None]
    if by_series and no_uid:  # one series has its UID on every slice
        raise DicomError(
            f"{folder}: {len(no_uid)} of {len(slices)} slices have no SeriesInstanceUID (e.g. "
            f"{no_uid[0].name}) while {next(iter(by_series.values())).name} has one: two series "
            "in one folder? give each series its own folder"
        )
    if len(by_series) > 1:
        a, b = list(by_series.values())[:2]
        raise DicomError(
            f"{folder}: holds {len(by_series)} series (SeriesInstanceUID differs, e.g. {a.name} "
            f"and {b.name}); give each series its own folder"
        )
    missing = [s.path for s in slices if s.position is None]
    if missing and len(missing) < len(slices):
        warnings.warn(
            f"{folder}: {len(missing)} of {len(slices)} slices have no ImagePositionPatient "
            f"(e.g. {missing[0].name}): the series is ordered by InstanceNumber and carries no "
            "geometry (NIfTI at the origin, no positions in the derived DICOM)",
            stacklevel=2,
        )
    located = not missing
    if located:
        normal = slice_normal(slices[0].orientation)  # distance along it orders the slices
        key = [round(float(np.dot(s.position, normal)), 6) for s in slices]
    else:
        key = [float(s.instance if s.instance is not None else i) for i, s in enumerate(slices)]
    order = np.argsort(key, kind="stable")
    kept, seen, dropped = [], {}, []
    for i in order:
        if key[i] in seen:
            dropped.append((slices[i].path, slices[seen[key[i]]].path))
            continue
        seen[key[i]] = i
        kept.append(i)
    if dropped:
        warnings.warn(
            f"{folder}: {len(dropped)} slice(s) at the position of another were left out (e.g. "
            f"{dropped[0][0].name}, at the position of {dropped[0][1].name})",
            stacklevel=2,
        )
    first = slices[kept[0]]
    return CTVolume(
        hu=np.stack([slices[i].hu for i in kept]),
        pixel_spacing=first.pixel_spacing,
        positions=[key[i] for i in kept],
        paths=[slices[i].path for i in kept],
        patient_positions=[slices[i].position for i in kept] if located else None,
        orientation=first.orientation,
        thickness=first.thickness,
    )


def slice_normal(orientation: tuple[float, ...] | None) -> np.ndarray:
    """The slice normal r × c of ImageOrientationPatient's row and column cosines (z when there
    are none): the axis slices are ordered and spaced along (z axial, y coronal)."""
    if orientation is None:
        return np.array([0.0, 0.0, 1.0])
    return np.cross(orientation[:3], orientation[3:])


def slice_gaps(
    positions: list[tuple[float, float, float]], orientation: tuple[float, ...] | None
) -> np.ndarray:
    """The distances (mm) from each slice to the next along ``slice_normal(orientation)``, for
    slices at ``positions`` (LPS) in order."""
    along = np.asarray(positions, dtype=np.float64).reshape(-1, 3) @ slice_normal(orientation)
    return np.diff(along)


def _even(gaps: np.ndarray) -> bool:
    """Gaps equal to within 1 % of their mean (and 1 µm): one step describes them."""
    return bool(gaps.max() - gaps.min() <= 0.01 * abs(float(gaps.mean())) + 1e-3)


def even_slice_spacing(
    positions: list[tuple[float, float, float]] | None, orientation: tuple[float, ...] | None
) -> float | None:
    """The spacing (mm, > 0) between slices at ``positions`` along the slice normal when they
    are evenly spaced (``slice_gaps`` equal to within 1 %), else None; None too for fewer than
    two slices or no positions (the derived DICOM's SpacingBetweenSlices)."""
    if not positions or len(positions) < 2:
        return None
    gaps = slice_gaps(positions, orientation)
    return float(abs(gaps.mean())) if _even(gaps) and abs(gaps.mean()) > 0 else None


def uneven_spacing_warning(
    where: str, volume: CTVolume, indices: list[int] | None = None
) -> str | None:
    """What to tell a user when the slices ``indices`` (default all) of ``volume``, those
    written into recon.nii.gz, are not evenly spaced along the slice normal (its affine takes
    their mean step): their range of gaps, the widest and the files around it ("a slice
    missing?" when it is over 1.5× the median); None when they are evenly spaced, fewer than
    three, or without positions. ``where`` starts the message (the folder, and the range)."""
    if not volume.patient_positions:
        return None
    ks = list(range(len(volume.hu))) if indices is None else list(indices)
    if len(ks) < 3:
        return None
    gaps = slice_gaps([volume.patient_positions[k] for k in ks], volume.orientation)
    if _even(gaps):
        return None
    g = int(np.argmax(np.abs(gaps)))
    names = [volume.paths[k].name for k in ks] if volume.paths else [f"slice {k}" for k in ks]
    missing = " (a slice missing?)" if abs(gaps[g]) > 1.5 * float(np.median(np.abs(gaps))) else ""
    return (
        f"{where}: uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm along the "
        f"slice normal; the widest, {abs(gaps[g]):.3g} mm, between {names[g]} and "
        f"{names[g + 1]}{missing}): recon.nii.gz takes the mean, {abs(gaps.mean()):.3g} mm, so "
        "slices between sit off their place there (the derived DICOM keeps each position)"
    )


def _check_sizes(slices: list[CTSlice]) -> None:
    """DicomError naming a slice whose size differs from the series' (the size most slices
    have), with both sizes and the number of slices of each."""
    from collections import Counter

    sizes = Counter(s.hu.shape for s in slices)
    if len(sizes) < 2:
        return
    common, n = sizes.most_common(1)[0]
    odd = [s for s in slices if s.hu.shape != common]
    example = next(s for s in slices if s.hu.shape == common)
    others = f" (and {len(odd) - 1} more file(s) of other sizes)" if len(odd) > 1 else ""
    raise DicomError(
        f"{odd[0].path}: slice size {odd[0].hu.shape[0]}×{odd[0].hu.shape[1]} differs from "
        f"{common[0]}×{common[1]} of the other {n} slice(s) (e.g. {example.path.name}){others}: "
        "not a slice of this series; move it out of the folder"
    )


def warn_no_image(where: str | Path, n: int, example: str | Path) -> None:
    """Warn that ``n`` DICOM objects without an image (``NoPixelDataError``: a DICOMDIR, a
    report, a structure set) were skipped under ``where``, naming one (``example``); the
    warning points at the caller of the function that calls this."""
    warnings.warn(
        f"{where}: {n} DICOM object(s) without an image skipped (e.g. {example}: a DICOMDIR, "
        "report or structure set)",
        stacklevel=3,
    )


def _fmt(values) -> str:
    """A short list of numbers for a message: [0.661, 0.9]."""
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def resample_to_spacing(
    image: np.ndarray, spacing: tuple[float, float], new_spacing: tuple[float, float]
) -> np.ndarray:
    """Resample a (H, W) image from ``spacing`` to ``new_spacing`` mm (bilinear)."""
    from scipy.ndimage import zoom

    if min(spacing) <= 0 or min(new_spacing) <= 0:
        raise ValueError(f"pixel spacings must be > 0, got {spacing} -> {new_spacing}")
    factors = (spacing[0] / new_spacing[0], spacing[1] / new_spacing[1])
    return zoom(image.astype(np.float32), factors, order=1)
