"""fastMRI HDF5 files: read, write (same layout), submission files, evaluation, synthetic files.

Layout (fastMRI): dataset ``kspace`` complex64 (slices, [coils,] H, W); optional
``reconstruction_rss`` / ``reconstruction_esc`` (slices, h, w), the reference cropped to the recon
size; attributes ``acquisition``, ``max``, ``norm``, ``patient_id``; dataset ``ismrmrd_header``
(XML) with encoding/encodedSpace/matrixSize and encoding/reconSpace/matrixSize. Submissions hold
``reconstruction``. Evaluation follows fastMRI's evaluate.py: per volume, on magnitudes cropped to
the target size, NMSE, PSNR and mean SSIM with data_range = the reference volume's max.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FastMRIError",
    "FastMRIFile",
    "read_fastmri",
    "write_fastmri",
    "write_reconstruction",
    "center_crop",
    "evaluate",
    "check_maps",
    "count_slices",
    "make_synthetic_fastmri",
    "simulate_multicoil",
]

NS = "http://www.ismrm.org/ISMRMRD"


class FastMRIError(ValueError):
    """A fastMRI file that is missing, malformed, or does not fit the request."""


@dataclass
class FastMRIFile:
    path: Path
    kspace: np.ndarray  # (S, [C,] H, W) complex64
    reference: np.ndarray | None
    reference_key: str | None
    attrs: dict[str, Any] = field(default_factory=dict)
    encoding_size: tuple[int, int] | None = None
    recon_size: tuple[int, int] | None = None

    @property
    def is_multicoil(self) -> bool:
        return self.kspace.ndim == 4

    @property
    def acquisition(self) -> str | None:
        return self.attrs.get("acquisition")


def _header(encoding: tuple[int, int], recon: tuple[int, int]) -> str:
    def size(tag: str, hw: tuple[int, int]) -> str:
        return (
            f"<{tag}><matrixSize><x>{hw[1]}</x><y>{hw[0]}</y><z>1</z></matrixSize>"
            f"<fieldOfView_mm><x>{hw[1]}</x><y>{hw[0]}</y><z>1</z></fieldOfView_mm></{tag}>"
        )

    return (
        f'<?xml version="1.0" encoding="utf-8"?><ismrmrdHeader xmlns="{NS}"><encoding>'
        f"{size('encodedSpace', encoding)}{size('reconSpace', recon)}</encoding></ismrmrdHeader>"
    )


def _parse_sizes(xml: str, path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    try:
        root = ET.fromstring(xml)
        enc = root.find(f"{{{NS}}}encoding")
        out = []
        for tag in ("encodedSpace", "reconSpace"):
            ms = enc.find(f"{{{NS}}}{tag}/{{{NS}}}matrixSize")
            out.append((int(ms.find(f"{{{NS}}}y").text), int(ms.find(f"{{{NS}}}x").text)))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise FastMRIError(f"{path}: unreadable ismrmrd_header ({exc})") from None
    return out[0], out[1]


def read_fastmri(path: str | Path, slices: int | slice | list[int] | None = None) -> FastMRIFile:
    """Read a fastMRI file (optionally only some slices); clear errors naming the file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FastMRIError(f"{path}: no such fastMRI file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FastMRIError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        if "kspace" not in f:
            raise FastMRIError(f"{path}: no 'kspace' dataset (found: {sorted(f.keys())})")
        ds = f["kspace"]
        if ds.ndim not in (3, 4):
            raise FastMRIError(
                f"{path}: kspace must be (slices, [coils,] H, W), got shape {ds.shape}"
            )
        sel = slice(None) if slices is None else slices
        if isinstance(sel, int):
            if not 0 <= sel < ds.shape[0]:
                raise FastMRIError(f"{path}: slice {sel} out of range (0..{ds.shape[0] - 1})")
            sel = [sel]
        kspace = np.asarray(ds[sel]).astype(np.complex64)
        if not np.all(np.isfinite(kspace.view(np.float32))):
            raise FastMRIError(f"{path}: kspace contains NaN or infinite values")
        key = next((k for k in ("reconstruction_rss", "reconstruction_esc") if k in f), None)
        ref = np.asarray(f[key][sel]).astype(np.float32) if key else None
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        enc = rec = None
        if "ismrmrd_header" in f:
            raw = f["ismrmrd_header"][()]
            enc, rec = _parse_sizes(raw.decode() if isinstance(raw, bytes) else str(raw), path)
    return FastMRIFile(path, kspace, ref, key, attrs, enc, rec)


def count_slices(path: str | Path) -> int:
    """Number of slices in a fastMRI file's kspace (without reading it)."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "kspace" not in f:
                raise FastMRIError(f"{path}: no 'kspace' dataset (found: {sorted(f.keys())})")
            return int(f["kspace"].shape[0])
    except OSError as exc:
        raise FastMRIError(f"{path}: not a readable HDF5 file ({exc})") from None


def _atomic_h5(path: Path, fill) -> None:
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
) -> Path:
    """Write a file in fastMRI's layout (atomically)."""
    path = Path(path)
    k = np.asarray(kspace, dtype=np.complex64)
    if k.ndim not in (3, 4):
        raise FastMRIError(f"{path}: kspace must be (slices, [coils,] H, W), got shape {k.shape}")
    enc = encoding_size or tuple(k.shape[-2:])
    rec = recon_size or (tuple(reference.shape[-2:]) if reference is not None else enc)
    acq = "multicoil" if k.ndim == 4 else "singlecoil"

    def fill(f) -> None:
        f.create_dataset("kspace", data=k)
        if reference is not None:
            key = "reconstruction_rss" if k.ndim == 4 else "reconstruction_esc"
            f.create_dataset(key, data=np.asarray(reference, dtype=np.float32))
        f.create_dataset("ismrmrd_header", data=np.bytes_(_header(enc, rec)))
        base = {"acquisition": acq, "patient_id": "synthetic"}
        if reference is not None:
            base.update(max=float(np.max(reference)), norm=float(np.linalg.norm(reference)))
        for key, val in {**base, **(attrs or {})}.items():
            f.attrs[key] = val

    _atomic_h5(path, fill)
    return path


def write_reconstruction(path: str | Path, recon: np.ndarray) -> Path:
    """fastMRI submission layout: dataset 'reconstruction' (slices, h, w) float32."""
    arr = np.asarray(recon, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    _atomic_h5(Path(path), lambda f: f.create_dataset("reconstruction", data=arr))
    return Path(path)


def center_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = x.shape[-2:]
    th, tw = min(size[0], h), min(size[1], w)
    r, c = (h - th) // 2, (w - tw) // 2
    return x[..., r : r + th, c : c + tw]


def evaluate(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """fastMRI metrics on magnitude volumes (S, h, w) (or one slice): NMSE, PSNR, SSIM."""
    from skimage.metrics import structural_similarity

    gt = np.abs(np.asarray(gt, dtype=np.complex128 if np.iscomplexobj(gt) else np.float64))
    pred = np.abs(np.asarray(pred, dtype=np.complex128 if np.iscomplexobj(pred) else np.float64))
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {gt.shape}")
    dr = float(gt.max())
    mse = float(np.mean((gt - pred) ** 2))
    return {
        "nmse": float(np.sum((gt - pred) ** 2) / np.sum(gt**2)),
        "psnr": float(10 * np.log10(dr**2 / mse)) if mse > 0 else float("inf"),
        "ssim": float(
            np.mean(
                [structural_similarity(g, p, data_range=dr) for g, p in zip(gt, pred, strict=True)]
            )
        ),
        "data_range": dr,
    }


def check_maps(maps: np.ndarray, kspace: np.ndarray, path: str | Path = "coil maps") -> None:
    """Coil maps (C, H, W) must match one slice's multi-coil k-space (C, H, W)."""
    if tuple(np.shape(maps)) != tuple(np.shape(kspace)[-3:]):
        raise FastMRIError(
            f"{path}: coil maps of shape {tuple(np.shape(maps))} do not match k-space coils/size "
            f"{tuple(np.shape(kspace)[-3:])}"
        )


def _smooth_phase(
    shape: tuple[int, int], rng: np.random.Generator, cycles: float = 1.0
) -> np.ndarray:
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    c = rng.uniform(-1, 1, 6) * np.pi * cycles
    return c[0] + c[1] * xx + c[2] * yy + c[3] * xx * yy + c[4] * xx**2 + c[5] * yy**2


def simulate_multicoil(
    image: np.ndarray, n_coils: int = 8, seed: int = 0, scale: float = 1e-3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kspace (C, H, W) complex64, RSS reference (H, W), maps (C, H, W)) from a magnitude image:
    smooth random phase, birdcage maps, centred orthonormal FFT; the image is scaled so that its
    maximum is ``scale`` (fastMRI-like magnitudes, 1e-5 to 1e-3)."""
    from data.coils import birdcage_maps

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D magnitude image, got shape {img.shape}")
    rng = np.random.default_rng(seed)
    x = scale * img / max(float(img.max()), 1e-30) * np.exp(1j * _smooth_phase(img.shape, rng))
    maps = birdcage_maps(n_coils, img.shape)
    coils = maps * x[None]
    dims = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coils, axes=dims), norm="ortho"), axes=dims)
    ref = np.sqrt((np.abs(coils) ** 2).sum(0))
    return k.astype(np.complex64), ref.astype(np.float32), maps


def make_synthetic_fastmri(
    path: str | Path,
    image: np.ndarray,
    n_coils: int = 8,
    seed: int = 0,
    scale: float = 1e-3,
    recon_size: tuple[int, int] | None = None,
) -> Path:
    """A multi-coil fastMRI-format file from a magnitude image (see ``simulate_multicoil``);
    the reference is the RSS of the coil images cropped to ``recon_size`` (default: full)."""
    k, ref, _ = simulate_multicoil(image, n_coils, seed, scale)
    rec = recon_size or ref.shape
    return write_fastmri(
        path,
        k[None],
        center_crop(ref, rec)[None],
        attrs={"patient_id": f"synthetic-{seed}"},
        recon_size=rec,
    )
