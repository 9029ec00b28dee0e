"""2-D images from ``.npy`` files: no pickles, numbers only, finite, errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["load_npy_image"]


def load_npy_image(path: str | Path, complex_ok: bool = False) -> np.ndarray:
    """The 2-D numeric array in ``path`` (``allow_pickle=False``; a single image stored as
    (H, W, 1) or (1, H, W) is read as (H, W)). ValueError naming the file when it is
    unreadable, not one 2-D image, not numeric, holds NaN/inf, or is complex and
    ``complex_ok`` is False (a CT image is real: dropping the imaginary part silently would
    reconstruct something else than the file holds)."""
    try:
        img = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (ValueError, EOFError, OSError) as exc:  # garbage, truncated or empty files
        why = str(exc) or type(exc).__name__
        if "allow_pickle" in why:  # numpy's guess for any file without the .npy magic header
            why = "no .npy header: text, pickled or other data are not read"
        raise ValueError(f"{path}: not a readable .npy array ({why})") from None
    if not isinstance(img, np.ndarray):  # an .npz archive
        raise ValueError(f"{path}: an .npz archive, not one .npy array")
    shape = img.shape
    if img.ndim == 3 and img.shape[-1] == 1:  # channels-last (H, W, 1)
        img = img[..., 0]
    elif img.ndim == 3 and img.shape[0] == 1:  # channels-first (1, H, W)
        img = img[0]
    if img.ndim != 2 or not np.issubdtype(img.dtype, np.number):
        raise ValueError(
            f"{path}: expected a 2-D numeric image (H, W), (H, W, 1) or (1, H, W), got "
            f"{img.dtype} {shape}"
        )
    if np.iscomplexobj(img) and not complex_ok:
        raise ValueError(f"{path}: complex values; give a real image (its magnitude or real part)")
    if not np.all(np.isfinite(img)):
        raise ValueError(f"{path}: image contains NaN or infinite values")
    return img
