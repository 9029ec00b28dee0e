"""fastMRI HDF5 files: read, write (same layout), submission files, evaluation, synthetic files.

Layout (fastMRI):
- dataset ``kspace``: complex64, (slices, coils, H, W) multi-coil or (slices, H, W) single-coil;
  H is the readout (frequency-encode) axis, W the phase-encode columns; images are centred:
  image = fftshift(IFFT_ortho(ifftshift(kspace))) over the last two axes;
- ``reconstruction_rss`` (multi-coil; single-coil files also have ``reconstruction_esc``):
  float32 (slices, h, w), the reference cropped to the recon size (320×320 for knee);
- attributes ``acquisition`` (the protocol, e.g. CORPD_FBK), ``max`` and ``norm`` (max and
  Frobenius norm of the reference volume), ``patient_id``;
- dataset ``ismrmrd_header``: ISMRMRD XML (namespace http://www.ismrm.org/ISMRMRD) whose
  encoding/encodedSpace/matrixSize and encoding/reconSpace/matrixSize give the encoded and recon
  sizes; matrixSize x is along H (readout), y along W; encodingLimits/kspace_encoding_step_1
  gives the acquired phase-encode columns (the others are zero padding).
Submissions hold one dataset, ``reconstruction`` (slices, h, w) float32.

Evaluation follows fastMRI's evaluate.py, per volume on magnitudes cropped to the target size:
NMSE = ||gt − pred||²/||gt||², PSNR with data_range = max(gt volume), SSIM = mean over slices
(skimage defaults) with the same data_range.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FastMRIError",
    "FastMRIFile",
    "read_fastmri",
    "count_slices",
    "write_fastmri",
    "write_reconstruction",
    "center_crop",
    "evaluate",
    "check_maps",
    "simulate_multicoil",
    "make_synthetic_fastmri",
    "SYNTHETIC_SCALE",
]

NS = "http://www.ismrm.org/ISMRMRD"

#: Maximum image magnitude of synthetic files: fastMRI k-space and reconstructions are tiny
#: (image magnitudes ~1e-5..1e-3, knee RSS maxima ~1e-4..5e-4), so synthetic images are scaled
#: to a maximum of 1e-3 (and their k-space follows through the unitary FFT).
SYNTHETIC_SCALE = 1e-3
# more coils than receive arrays have (fastMRI: 15-20): a sign of a misplaced coil axis
MAX_COILS = 64

SliceSel = int | slice | Sequence[int] | None


class FastMRIError(ValueError):
    """A fastMRI file that is missing, malformed, or does not fit the request (names the file)."""


@dataclass
class FastMRIFile:
    """One fastMRI file's content.

    kspace: (S, [C,] H, W) complex64. reference: (S, h, w) float32 or None, from
    ``reference_key``. encoding_size / recon_size: (H, W) and (h, w) from the header (None
    without header). encoding_limits: (min, max, center) of kspace_encoding_step_1, or None.
    mask: (W,) bool, the sampled columns of an undersampled file (fastMRI's test and challenge
    sets: k-space zero outside them), or None for fully sampled k-space.
    """

    path: Path
    kspace: np.ndarray
    reference: np.ndarray | None
    reference_key: str | None
    attrs: dict[str, Any] = field(default_factory=dict)
    encoding_size: tuple[int, int] | None = None
    recon_size: tuple[int, int] | None = None
    encoding_limits: tuple[int, int, int] | None = None
    mask: np.ndarray | None = None

    @property
    def is_multicoil(self) -> bool:
        return self.kspace.ndim == 4

    @property
    def acquisition(self) -> str | None:
        return self.attrs.get("acquisition")

    @property
    def n_slices(self) -> int:
        return int(self.kspace.shape[0])


# --- ISMRMRD header ------------------------------------------------------------------------


def _header(encoding: tuple[int, int], recon: tuple[int, int], limits: tuple[int, int, int]) -> str:
    """A minimal ISMRMRD header: experimentalConditions and one Cartesian encoding."""

    def space(tag: str, hw: tuple[int, int]) -> str:
        # matrixSize x runs along H (readout), y along W (phase encode), as in fastMRI.
        return (
            f"<{tag}><matrixSize><x>{hw[0]}</x><y>{hw[1]}</y><z>1</z></matrixSize>"
            f"<fieldOfView_mm><x>{float(hw[0])}</x><y>{float(hw[1])}</y><z>1.0</z>"
            f"</fieldOfView_mm></{tag}>"
        )

    lo, hi, ctr = limits
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="{NS}">'
        "<experimentalConditions><H1resonanceFrequency_Hz>127728000</H1resonanceFrequency_Hz>"
        f"</experimentalConditions><encoding>{space('encodedSpace', encoding)}"
        f"{space('reconSpace', recon)}<encodingLimits><kspace_encoding_step_1>"
        f"<minimum>{lo}</minimum><maximum>{hi}</maximum><center>{ctr}</center>"
        "</kspace_encoding_step_1></encodingLimits><trajectory>cartesian</trajectory>"
        "</encoding></ismrmrdHeader>"
    )


def _parse_header(xml: str, path: Path):
    """(encoding (H, W), recon (h, w), limits (min, max, center) or None) from the XML."""

    def q(*tags: str) -> str:
        return "/".join(f"{{{NS}}}{t}" for t in tags)

    try:
        enc = ET.fromstring(xml).find(q("encoding"))
        sizes = []
        for tag in ("encodedSpace", "reconSpace"):
            ms = enc.find(q(tag, "matrixSize"))
            sizes.append((int(ms.find(q("x")).text), int(ms.find(q("y")).text)))
        lim = enc.find(q("encodingLimits", "kspace_encoding_step_1"))
        limits = None
        if lim is not None:
            limits = tuple(int(lim.find(q(t)).text) for t in ("minimum", "maximum", "center"))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise FastMRIError(f"{path}: unreadable ismrmrd_header ({exc})") from None
    return sizes[0], sizes[1], limits


# --- reading ---------------------------------------------------------------------------------


def _open(path: Path):
    import h5py

    if path.is_dir():
        raise FastMRIError(f"{path}: a folder; give a fastMRI or ISMRMRD .h5 file")
    if not path.is_file():
        raise FastMRIError(f"{path}: no such fastMRI file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise FastMRIError(f"{path}: not a readable HDF5 file ({exc})") from None


def _indices(sel: SliceSel, n: int, path: Path) -> list[int]:
    if sel is None:
        return list(range(n))
    if isinstance(sel, slice):
        return list(range(n))[sel]
    items = [sel] if isinstance(sel, (int, np.integer)) else list(sel)
    out = []
    for i in items:
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise FastMRIError(f"{path}: slice {i} out of range (0..{n - 1})")
        out.append(int(i) % n)
    return out


def _read_rows(ds, idx: list[int]) -> np.ndarray:
    """ds[idx] for any index list (h5py wants increasing unique indices)."""
    if not idx:
        return np.zeros((0, *ds.shape[1:]), dtype=ds.dtype)
    uniq = sorted(set(idx))
    block = ds[uniq[0] : uniq[-1] + 1] if len(uniq) == uniq[-1] - uniq[0] + 1 else ds[uniq]
    pos = {j: k for k, j in enumerate(uniq)}
    return np.asarray(block)[[pos[j] for j in idx]]


def read_fastmri(path: str | Path, slices: SliceSel = None) -> FastMRIFile:
    """Read a fastMRI file, all slices or ``slices`` (int, slice or list; an int keeps the
    leading slice axis of length 1). Raises FastMRIError naming the file when it is missing or
    unreadable, has no ``kspace``, a kspace that is not complex (S, [C,] H, W), or NaN/inf."""
    path = Path(path)
    f = _open(path)
    with f:
        ds = _kspace_dataset(f, path)
        if ds.dtype.kind != "c" and ds.ndim in (4, 5) and ds.shape[-1] == 2:
            raise FastMRIError(
                f"{path}: kspace of shape {ds.shape} and dtype {ds.dtype} holds real and "
                "imaginary parts on its last axis; fastMRI stores complex k-space (slices, "
                "[coils,] H, W): k[..., 0] + 1j * k[..., 1]"
            )
        if ds.ndim == 4 and ds.shape[1] > MAX_COILS and ds.shape[-1] < ds.shape[1] // 4:
            raise FastMRIError(
                f"{path}: kspace of shape {ds.shape} reads as {ds.shape[1]} coils of "
                f"{ds.shape[2]}×{ds.shape[3]}: is the coil axis last? fastMRI stores (slices, "
                "coils, H, W): np.moveaxis(k, -1, 1)"
            )
        if ds.ndim not in (3, 4):
            raise FastMRIError(
                f"{path}: kspace must be (slices, [coils,] H, W), got shape {ds.shape}"
            )
        if ds.dtype.kind != "c":
            raise FastMRIError(f"{path}: kspace must be complex, got dtype {ds.dtype}")
        idx = _indices(slices, ds.shape[0], path)
        kspace = _read_rows(ds, idx).astype(np.complex64)
        if not np.all(np.isfinite(kspace)):
            raise FastMRIError(f"{path}: kspace contains NaN or infinite values")
        key = next((k for k in ("reconstruction_rss", "reconstruction_esc") if k in f), None)
        if key and (f[key].ndim != 3 or f[key].shape[0] != ds.shape[0]):
            raise FastMRIError(
                f"{path}: kspace {ds.shape} has {ds.shape[0]} slices but {key} "
                f"{f[key].shape} is not {ds.shape[0]} images (slices, h, w)"
                + ("; multi-coil kspace is (slices, coils, H, W)" if ds.ndim == 3 else "")
            )
        ref = _read_rows(f[key], idx).astype(np.float32) if key else None
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        enc = rec = limits = None
        if "ismrmrd_header" in f:
            raw = f["ismrmrd_header"][()]
            xml = raw.decode() if isinstance(raw, bytes) else str(raw)
            enc, rec, limits = _parse_header(xml, path)
        mask = _read_mask(f, ds.shape[-1], path)
    return FastMRIFile(path, kspace, ref, key, attrs, enc, rec, limits, mask)


def _read_mask(f, width: int, path: Path) -> np.ndarray | None:
    """The file's ``mask`` dataset (fastMRI test/challenge files: the sampled columns, (W,)) as
    bool, or None; a ``mask`` that is not W values of 0/1 (some other data under that name) is
    ignored with a warning naming the file (zero-filled k-space is still found as such:
    ``recon.mri.measured_samples``)."""
    import warnings

    if "mask" not in f or not hasattr(f["mask"], "shape"):
        return None
    m = np.asarray(f["mask"][()])
    ok = m.ndim == 1 and m.shape[0] == width and m.dtype.kind in "biuf"
    if not (ok and np.isin(m, (0, 1)).all() and m.any()):
        warnings.warn(
            f"{path}: 'mask' ({m.dtype} {m.shape}) is not one 0/1 value per k-space column "
            f"({width}), as fastMRI's; ignored",
            stacklevel=3,
        )
        return None
    return m.astype(bool)


def count_slices(path: str | Path) -> int:
    """Number of slices in a fastMRI file's kspace (without reading the data)."""
    path = Path(path)
    with _open(path) as f:
        return int(_kspace_dataset(f, path).shape[0])


def _kspace_dataset(f, path: Path):
    """The file's ``kspace`` dataset, with at least one slice; FastMRIError naming the file
    when it is missing, not a dataset (a group) or empty."""
    import h5py

    if "kspace" not in f:
        raise FastMRIError(f"{path}: no 'kspace' dataset (found: {sorted(f.keys())})")
    ds = f["kspace"]
    if not isinstance(ds, h5py.Dataset):
        raise FastMRIError(f"{path}: 'kspace' is an HDF5 {type(ds).__name__}, not a dataset")
    if ds.ndim == 0 or ds.shape[0] == 0:
        raise FastMRIError(f"{path}: 'kspace' holds no slices (shape {ds.shape})")
    return ds


# --- writing ---------------------------------------------------------------------------------


def _atomic_h5(path: Path, fill: Callable[[Any], None]) -> None:
    """Write an HDF5 file via a temporary file in the same folder and os.replace."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_fastmri(
    path: str | Path,
    kspace: np.ndarray,
    reference: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    encoding_size: tuple[int, int] | None = None,
    recon_size: tuple[int, int] | None = None,
    reference_key: str | None = None,
    mask: np.ndarray | None = None,
) -> Path:
    """Write a file in fastMRI's layout, atomically; returns the path.

    kspace: (S, [C,] H, W) complex. reference: (S, h, w) real, stored as ``reference_key``
    (default ``reconstruction_rss`` for multi-coil, ``reconstruction_esc`` for single-coil).
    encoding_size defaults to (H, W), recon_size to the reference's (h, w) (else (H, W)).
    Attributes: ``max``/``norm`` of the reference, ``patient_id`` ("synthetic") and
    ``acquisition`` ("multicoil"/"singlecoil"; real files hold the protocol) unless ``attrs``
    overrides them. ``mask`` (W,) 0/1: an undersampled file as fastMRI's test set stores it
    (dataset ``mask``, k-space zeroed outside the sampled columns).
    """
    path = Path(path)
    k = np.asarray(kspace)
    if k.ndim not in (3, 4):
        raise FastMRIError(f"{path}: kspace must be (slices, [coils,] H, W), got shape {k.shape}")
    k = k.astype(np.complex64)
    ref = None
    if reference is not None:
        ref = np.asarray(reference)
        if np.iscomplexobj(ref) or ref.ndim != 3 or ref.shape[0] != k.shape[0]:
            raise FastMRIError(
                f"{path}: reference must be real (slices={k.shape[0]}, h, w), got "
                f"{ref.dtype} {ref.shape}"
            )
        ref = ref.astype(np.float32)
    h, w = k.shape[-2:]
    enc = tuple(int(s) for s in (encoding_size or (h, w)))
    rec = tuple(int(s) for s in (recon_size or (ref.shape[-2:] if ref is not None else enc)))
    limits = (0, w - 1, w // 2)
    multi = k.ndim == 4
    key = reference_key or ("reconstruction_rss" if multi else "reconstruction_esc")
    m = None if mask is None else np.asarray(mask).astype(bool)
    if m is not None and m.shape != (w,):
        raise FastMRIError(f"{path}: mask must be one value per column ({w},), got {m.shape}")

    def fill(f) -> None:
        f.create_dataset("kspace", data=k if m is None else k * m)
        if m is not None:
            f.create_dataset("mask", data=m)
        if ref is not None:
            f.create_dataset(key, data=ref)
        f.create_dataset("ismrmrd_header", data=np.bytes_(_header(enc, rec, limits)))
        base: dict[str, Any] = {
            "acquisition": "multicoil" if multi else "singlecoil",
            "patient_id": "synthetic",
        }
        if ref is not None:
            base.update(max=float(ref.max()), norm=float(np.linalg.norm(ref)))
        for name, val in {**base, **(attrs or {})}.items():
            f.attrs[name] = val

    _atomic_h5(path, fill)
    return path


def write_reconstruction(path: str | Path, recon: np.ndarray) -> Path:
    """fastMRI submission layout, atomically: dataset ``reconstruction`` (slices, h, w) float32.

    A single (h, w) slice gets a leading slice axis; complex input is stored as its magnitude.
    """
    path = Path(path)
    arr = np.asarray(recon)
    arr = np.abs(arr) if np.iscomplexobj(arr) else arr
    arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise FastMRIError(f"{path}: reconstruction must be (slices, h, w), got {arr.shape}")
    _atomic_h5(path, lambda f: f.create_dataset("reconstruction", data=arr))
    return path


# --- evaluation ------------------------------------------------------------------------------


def center_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The central size = (h, w) block of the last two axes (clamped to the array's size; the
    block starts at (H − h) // 2, (W − w) // 2, as in fastMRI)."""
    h, w = x.shape[-2:]
    th, tw = min(int(size[0]), h), min(int(size[1]), w)
    r, c = (h - th) // 2, (w - tw) // 2
    return x[..., r : r + th, c : c + tw]


def evaluate(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """fastMRI metrics of one volume (S, h, w) or slice (h, w), on magnitudes.

    NMSE = ||gt − pred||²/||gt||²; PSNR = 10·log10(max(gt)²/MSE) (inf if identical);
    SSIM = mean over slices of skimage's SSIM with data_range = max(gt). Returns
    {"nmse", "psnr", "ssim", "data_range"}.
    """
    from skimage.metrics import structural_similarity

    gt = np.abs(np.asarray(gt)).astype(np.float64)
    pred = np.abs(np.asarray(pred)).astype(np.float64)
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {gt.shape}")
    if gt.ndim != 3:
        raise ValueError(f"expected a volume (S, h, w) or a slice (h, w), got {gt.shape}")
    dr = float(gt.max())
    err = float(np.sum((gt - pred) ** 2))
    mse = err / gt.size
    ssim = [structural_similarity(g, p, data_range=dr) for g, p in zip(gt, pred, strict=True)]
    return {
        "nmse": err / float(np.sum(gt**2)),
        "psnr": float(10 * np.log10(dr**2 / mse)) if mse > 0 else float("inf"),
        "ssim": float(np.mean(ssim)),
        "data_range": dr,
    }


def check_maps(maps: np.ndarray, kspace: np.ndarray, path: str | Path = "coil maps") -> None:
    """Raise FastMRIError (naming ``path``) unless coil maps (C, H, W) match the coils and size
    of multi-coil k-space (C, H, W) or (S, C, H, W)."""
    ms, ks = tuple(np.shape(maps)), tuple(np.shape(kspace))
    if len(ks) not in (3, 4):
        raise FastMRIError(f"{path}: k-space must be (C, H, W) or (S, C, H, W), got {ks}")
    if ms != ks[-3:]:
        raise FastMRIError(
            f"{path}: coil maps of shape {ms} do not match k-space (coils, H, W) = {ks[-3:]}"
        )


# --- synthetic files -------------------------------------------------------------------------


def _smooth_phase(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random smooth phase map: a quadratic polynomial in x, y on [−1, 1]², |coeff| ≤ π."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    c = rng.uniform(-1, 1, 6) * np.pi
    return c[0] + c[1] * xx + c[2] * yy + c[3] * xx * yy + c[4] * xx**2 + c[5] * yy**2


def simulate_multicoil(
    image: np.ndarray, n_coils: int = 8, seed: int = 0, scale: float = SYNTHETIC_SCALE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-coil k-space from one real magnitude image (H, W).

    x = scale·image/max(image)·exp(iφ) with φ a smooth random phase (seeded); coil images
    S_c·x with RSS-normalized birdcage maps; k_c = F(S_c x), F the centred orthonormal DFT.
    Returns (kspace (C, H, W) complex64, RSS reference sqrt(Σ|S_c x|²) = |x| (H, W) float32,
    maps (C, H, W) complex64).
    """
    from data.coils import birdcage_maps

    img = np.asarray(image)
    if img.ndim != 2 or np.iscomplexobj(img):
        raise ValueError(f"expected a real 2-D magnitude image, got {img.dtype} {img.shape}")
    img = np.abs(img.astype(np.float64))
    if not np.all(np.isfinite(img)) or img.max() <= 0:
        raise ValueError("the image must be finite and not all zero")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    x = scale * img / img.max() * np.exp(1j * _smooth_phase(img.shape, rng))
    maps = birdcage_maps(n_coils, img.shape)
    coils = maps * x[None]
    ax = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coils, axes=ax), norm="ortho"), axes=ax)
    ref = np.sqrt((np.abs(coils) ** 2).sum(0))
    return k.astype(np.complex64), ref.astype(np.float32), maps


def make_synthetic_fastmri(
    path: str | Path,
    image: np.ndarray,
    n_coils: int = 8,
    seed: int = 0,
    scale: float = SYNTHETIC_SCALE,
    recon_size: tuple[int, int] | None = None,
    acquisition: str = "multicoil",
    patient_id: str | None = None,
) -> Path:
    """Write a multi-coil fastMRI-format file simulated from a magnitude image (H, W) or volume
    (S, H, W) (each slice through ``simulate_multicoil`` with seed + slice index).

    Image magnitudes are scaled to a maximum of ``scale`` (default 1e-3, fastMRI-like). The
    reference ``reconstruction_rss`` is the RSS of the coil images centre-cropped to
    ``recon_size`` (default: the full image); attrs max/norm/acquisition/patient_id are set.
    """
    vol = np.asarray(image)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise ValueError(f"expected an image (H, W) or a volume (S, H, W), got {vol.shape}")
    sims = [simulate_multicoil(s, n_coils, seed + i, scale) for i, s in enumerate(vol)]
    k = np.stack([s[0] for s in sims])
    rec = tuple(int(v) for v in (recon_size or vol.shape[-2:]))
    if not (0 < rec[0] <= vol.shape[-2] and 0 < rec[1] <= vol.shape[-1]):
        raise ValueError(f"recon_size {rec} must fit inside the image {vol.shape[-2:]}")
    ref = center_crop(np.stack([s[1] for s in sims]), rec)
    attrs = {"acquisition": acquisition, "patient_id": patient_id or f"synthetic-{seed}"}
    return write_fastmri(path, k, ref, attrs=attrs, recon_size=rec)
