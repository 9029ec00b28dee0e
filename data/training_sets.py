"""Samplers of clean training images for priors: ``sampler(batch, generator) -> (B, C, H, W)``.

Every sampler draws all its randomness from the ``torch.Generator`` it is given, so training that
restores the generator's state resumes on exactly the same batches.

* ``ellipse_sampler``: random-ellipse CT phantoms made on the fly (the standard synthetic CT
  training set: a body-like outer ellipse plus random inner ellipses of random attenuation,
  values in [0, 1]); vectorized in torch, fast enough to feed training on a CPU.
* ``read_image_folder`` / ``image_folder_sampler``: a user's images (``.npy``,
  ``.png``/``.jpg``/``.tif``, DICOM with or without ``.dcm``, fastMRI ``.h5``), each min-max
  normalized unless ``normalize=False``; a file that cannot be read, or has a NaN or infinite
  pixel, is refused by name.
* ``complex_sampler``: turns a real sampler into 2-channel complex images (real, imag) with a
  smooth random phase, for MRI priors.
* ``real_ct_slices``: the real 512×512 head CT slices that pydicom ships (two patients), in the
  same normalized attenuation as the phantoms; ``mix_samplers`` draws from several samplers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.dicom import is_dicom_file
from data.nifti import is_nifti, nifti_slices

__all__ = [
    "ellipse_sampler",
    "image_folder_sampler",
    "image_files",
    "read_image_file",
    "read_image_folder",
    "ImageFolder",
    "KSpaceOnlyError",
    "complex_sampler",
    "real_ct_slices",
    "mix_samplers",
    "Sampler",
]

# Real CT slices shipped inside pydicom's test data (JPEG 2000 coded, 512×512, two head scans of
# two patients). pydicom's CT_small.dcm is the toolkit's *test* slice and is never trained on.
REAL_CT_FILES = ("693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm")
TEST_CT_FILE = "CT_small.dcm"

Sampler = Callable[[int, torch.Generator], torch.Tensor]


def _u(gen: torch.Generator, shape, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def ellipse_sampler(size: int = 64, max_ellipses: int = 12) -> Sampler:
    """Random-ellipse phantoms (B, 1, size, size) in [0, 1].

    Each image: a large outer ellipse (the body, value 0.3–0.6) and up to ``max_ellipses`` inner
    ellipses, each adding a random value in [−0.3, 0.5] inside it (some overlap), clipped to [0, 1].
    """
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")

    def sample(batch: int, gen: torch.Generator) -> torch.Tensor:
        n = max_ellipses + 1
        cx = _u(gen, (batch, n), -0.5, 0.5)
        cy = _u(gen, (batch, n), -0.5, 0.5)
        ax = _u(gen, (batch, n), 0.05, 0.45)
        ay = _u(gen, (batch, n), 0.05, 0.45)
        th = _u(gen, (batch, n), 0.0, math.pi)
        val = _u(gen, (batch, n), -0.3, 0.5)
        active = torch.rand((batch, n), generator=gen) < _u(gen, (batch, 1), 0.3, 1.0)
        # outer body ellipse
        cx[:, 0], cy[:, 0] = _u(gen, batch, -0.05, 0.05), _u(gen, batch, -0.05, 0.05)
        ax[:, 0], ay[:, 0] = _u(gen, batch, 0.7, 0.95), _u(gen, batch, 0.55, 0.9)
        val[:, 0] = _u(gen, batch, 0.3, 0.6)
        active[:, 0] = True
        c, s = torch.cos(th)[..., None, None], torch.sin(th)[..., None, None]
        dx = xs - cx[..., None, None]
        dy = ys - cy[..., None, None]
        u = (c * dx + s * dy) / ax[..., None, None]
        v = (-s * dx + c * dy) / ay[..., None, None]
        inside = (u * u + v * v <= 1.0).float() * active[..., None, None].float()
        img = (inside * val[..., None, None]).sum(1, keepdim=True)
        body = inside[:, :1]
        return (img * body).clamp(0.0, 1.0)

    return sample


class KSpaceOnlyError(ValueError):
    """A fastMRI ``.h5`` file with k-space and no reference image (``reconstruction_rss`` /
    ``_esc``: the test and challenge files): nothing to train on; skipped, with a warning, in
    a training folder (as a DICOMDIR is)."""


IMAGE_SUFFIXES = (".npy", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".h5", ".hdf5")


def image_files(folder: str | Path) -> list[Path]:
    """The training image files under ``folder`` (searched recursively, sorted, hidden files
    skipped): those with a suffix in ``IMAGE_SUFFIXES``, NIfTI volumes (.nii, .nii.gz), and
    DICOM files with another or no suffix (``IM0000``, UID names) by ``data.dicom.is_dicom_file``,
    the rule `recon batch` and `recon tune` search folders with."""
    root = Path(folder)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and (p.suffix.lower() in IMAGE_SUFFIXES or is_nifti(p) or is_dicom_file(p))
    )


def _load_array(path: Path) -> np.ndarray:
    """The array stored in one image file (any exception on an unreadable file)."""
    suffix = path.suffix.lower()
    if is_nifti(path):  # a volume: its axial slices (third axis), as the Colin27 slices
        return np.stack(nifti_slices(path))
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            key = next((k for k in ("reconstruction_rss", "reconstruction_esc") if k in f), None)
            if key is None and "kspace" in f:
                raise KSpaceOnlyError(
                    f"{path}: k-space only (a fastMRI test or challenge file): no reference "
                    "image (reconstruction_rss/_esc) to train on"
                )
            if key is None:
                raise ValueError("no reconstruction_rss/_esc dataset to train on")
            return np.asarray(f[key])
    if suffix not in IMAGE_SUFFIXES or suffix == ".dcm":
        import pydicom

        from data.dicom import NoPixelDataError

        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            raise NoPixelDataError(f"{path}: no image (a DICOMDIR, report or structure set?)")
        if int(getattr(ds, "SamplesPerPixel", 1)) > 1:  # colour (pydicom gives RGB): its grey
            from skimage import color

            return color.rgb2gray(ds.pixel_array[..., :3])
        slope = float(getattr(ds, "RescaleSlope", 1.0))
        return ds.pixel_array.astype(np.float32) * slope + float(getattr(ds, "RescaleIntercept", 0))
    from skimage import color, io

    arr = io.imread(path)
    if arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha
        return arr[..., 0]
    return color.rgb2gray(arr[..., :3]) if arr.ndim == 3 else arr


def _why(exc: Exception) -> str:
    """The first sentence of a reader's error, without advice meant for its API (pydicom's
    "Use force=True", imageio's "pip install" plugins)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "backend" in text:  # imageio: "Could not find a backend to open ..."
        return "not a valid image of its type"
    return text.split(". ")[0].rstrip(".")


def read_image_file(path: str | Path, complex_images: str = "refuse") -> list[np.ndarray]:
    """2-D float32 images from one file (a volume or stack gives its slices).

    Raises a ValueError naming the file when it cannot be read, holds no numbers, has a NaN or
    infinite pixel, or is not 2-D or 3-D (``data.dicom.NoPixelDataError`` for a DICOM object
    without an image, ``KSpaceOnlyError`` for a fastMRI file without one). A 3-D array
    (H, W, 1) is one image, as (1, H, W) is; (H, W, 3|4) is RGB(A) and gives its grey level;
    other 3-D arrays are stacks of slices.
    Complex values are refused (``complex_images="refuse"``) or replaced by their magnitude
    (``"magnitude"``)."""
    from data.dicom import NoPixelDataError

    path = Path(path)
    try:
        arr = np.asarray(_load_array(path))
    except (NoPixelDataError, KSpaceOnlyError):
        raise
    except Exception as exc:  # decoders raise anything on a truncated or foreign file
        raise ValueError(f"{path}: unreadable ({_why(exc)})") from None
    if arr.dtype.kind not in "buifc":
        raise ValueError(f"{path}: holds {arr.dtype} values, not numbers")
    if np.iscomplexobj(arr):
        if complex_images != "magnitude":
            raise ValueError(
                f"{path}: complex values, but 1-channel training takes real images (--channels "
                "2 trains a complex MRI prior on their magnitude with a smooth random phase)"
            )
        arr = np.abs(arr)
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(f"{path}: {bad} pixel(s) are NaN or infinite; fix or remove the file")
    arr = arr.astype(np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:  # channels-last (H, W, 1): one image, not H of W×1
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and min(arr.shape[:2]) > 4:
        from skimage import color  # an RGB(A) array (H, W, 3|4), not a stack of H×3 slices

        arr = color.rgb2gray(arr[..., :3]).astype(np.float32)
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3:
        return list(arr)
    raise ValueError(f"{path}: expected a 2-D image or a stack of them, got shape {arr.shape}")


@dataclass
class ImageFolder:
    """The usable training images of a folder, file by file."""

    root: Path
    files: list[Path]  # the files with at least one image of at least patch × patch, sorted
    images: list[list[np.ndarray]]  # each such file's images of at least patch × patch
    too_small: int  # images left out for being smaller than patch × patch
    skipped: int = 0  # files without an image (DICOMDIR, k-space-only fastMRI), skipped
    constant: int = 0  # constant images (normalize=True: nothing to train on), skipped


def read_image_folder(
    folder: str | Path, patch: int, normalize: bool = True, complex_images: str = "refuse"
) -> ImageFolder:
    """Every image under ``folder`` (``image_files``) read with ``read_image_file``, each min-max
    normalized unless ``normalize=False``; those smaller than ``patch`` × ``patch`` are counted
    and left out, and files without an image (a DICOMDIR, a k-space-only fastMRI file) and
    (with ``normalize``) constant images are skipped with a warning. Raises a ValueError naming
    the folder when it holds no image files, or the file that cannot be used."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of training images")
    files = image_files(root)
    if not files:
        raise ValueError(
            f"{root}: no training images found (looked for {', '.join(IMAGE_SUFFIXES)}, "
            ".nii, .nii.gz and "
            "DICOM files without a suffix)"
        )
    from data.dicom import NoPixelDataError, warn_no_image

    kept: list[Path] = []
    images: list[list[np.ndarray]] = []
    too_small = 0
    no_image: list[Path] = []
    kspace_only: list[Path] = []
    constant: list[tuple[Path, float]] = []
    for path in files:
        usable = []
        try:
            found = read_image_file(path, complex_images)
        except NoPixelDataError:
            no_image.append(path)
            continue
        except KSpaceOnlyError:
            kspace_only.append(path)
            continue
        for im in found:
            if min(im.shape) < patch:
                too_small += 1
                continue
            if normalize:
                lo, hi = float(im.min()), float(im.max())
                if not hi > lo:  # min-max scaling would make it all zero: nothing to learn
                    constant.append((path, lo))
                    continue
                im = (im - lo) / (hi - lo)
            usable.append(im.astype(np.float32))
        if usable:
            kept.append(path)
            images.append(usable)
    if no_image:
        warn_no_image(root, len(no_image), no_image[0].relative_to(root))
    if kspace_only:
        import warnings

        warnings.warn(
            f"{root}: {len(kspace_only)} fastMRI file(s) with k-space only skipped (e.g. "
            f"{kspace_only[0].relative_to(root)}): no reference image (reconstruction_rss/_esc) "
            "to train on",
            stacklevel=2,
        )
    if constant:
        import warnings

        path, value = constant[0]
        warnings.warn(
            f"{root}: {len(constant)} constant image(s) skipped (e.g. {path.relative_to(root)}: "
            f"every pixel {value:g}): nothing to train on",
            stacklevel=2,
        )
    skipped = len(no_image) + len(kspace_only)
    return ImageFolder(root, kept, images, too_small, skipped, len(constant))


def image_folder_sampler(
    folder: str | Path, patch: int = 64, normalize: bool = True
) -> tuple[Sampler, int]:
    """Patches from every image under ``folder`` (``read_image_folder``); returns (sampler,
    number of images used)."""
    from data.natural import patch_sampler

    found = read_image_folder(folder, patch, normalize)
    images = [im for ims in found.images for im in ims]
    if not images:
        raise ValueError(f"{found.root}: no image is at least {patch}×{patch}")
    return patch_sampler(images, patch), len(images)


def complex_sampler(real: Sampler, max_cycles: float = 1.0) -> Sampler:
    """(B, 2, H, W) = magnitude·(cos θ, sin θ) with θ a smooth random phase (low-order 2-D
    polynomial plus a constant, up to ``max_cycles`` wraps across the image)."""

    def sample(batch: int, gen: torch.Generator) -> torch.Tensor:
        mag = real(batch, gen)[:, :1]
        h, w = mag.shape[-2:]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        coef = _u(gen, (batch, 6), -1.0, 1.0) * math.pi * max_cycles
        basis = torch.stack([torch.ones_like(xx), xx, yy, xx * yy, xx * xx, yy * yy])
        theta = torch.einsum("bk,khw->bhw", coef, basis)[:, None]
        return torch.cat([mag * torch.cos(theta), mag * torch.sin(theta)], dim=1)

    return sample


def hu_to_unit(hu: np.ndarray) -> np.ndarray:
    """Normalized attenuation (HU + 1000) / 2500 clipped to [0, 1] (air 0, dense bone ~1): the
    convention of the phantoms and of ``recon ct``'s internal images."""
    return np.clip((np.asarray(hu, dtype=np.float32) + 1000.0) / 2500.0, 0.0, 1.0)


def real_ct_slices() -> list[np.ndarray]:
    """The real CT slices in ``REAL_CT_FILES`` as normalized attenuation (512, 512) float32.

    Scanner padding (values below −1024 HU outside the field of view) becomes air. Raises a
    ValueError naming the file when pydicom cannot decode it (JPEG 2000 needs Pillow with
    OpenJPEG, which scikit-image's Pillow wheel includes)."""
    import pydicom
    from pydicom.data import get_testdata_file

    out = []
    for name in REAL_CT_FILES:
        path = get_testdata_file(name)
        if path is None or Path(path).name == TEST_CT_FILE:
            raise ValueError(f"pydicom's test file {name} is missing")
        ds = pydicom.dcmread(path)
        try:
            raw = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # a decoder plugin is missing or the file is damaged
            raise ValueError(f"{path}: cannot decode its pixel data ({exc})") from None
        hu = raw * float(getattr(ds, "RescaleSlope", 1.0)) + float(
            getattr(ds, "RescaleIntercept", 0.0)
        )
        out.append(hu_to_unit(hu))
    return out


def mix_samplers(parts: list[tuple[Sampler, float]]) -> Sampler:
    """A sampler drawing each item from ``parts[i][0]`` with probability ``parts[i][1]``
    (normalized); items keep the order of the parts (the mix is per batch, seeded)."""
    probs = torch.tensor([float(w) for _, w in parts])
    if (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"mixture weights must be >= 0 and not all zero, got {probs.tolist()}")

    def sample(batch: int, gen: torch.Generator) -> torch.Tensor:
        which = torch.multinomial(probs, batch, replacement=True, generator=gen)
        counts = torch.bincount(which, minlength=len(parts)).tolist()
        return torch.cat([s(n, gen) for (s, _), n in zip(parts, counts, strict=True) if n])

    return sample
