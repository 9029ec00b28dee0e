"""BART's .cfl/.hdr array format, and the array layout conversions the peer comparison needs.

A BART array NAME is two files: ``NAME.hdr``, text whose line after ``# Dimensions`` lists the
dimensions (BART writes 16, trailing ones included), and ``NAME.cfl``, the complex64 values as
raw little-endian (real, imaginary) float32 pairs in column-major (Fortran) order.

BART's MRI dimension order is (READ, PHASE, SLICE, COIL, MAPS, ...): our multi-coil k-space
(C, H, W) becomes the BART array (H, W, 1, C), and BART's image (H, W) is our (H, W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.outputs import atomic_write

__all__ = [
    "CflError",
    "write_cfl",
    "read_cfl",
    "kspace_to_bart",
    "bart_to_kspace",
]

BART_DIMS = 16


class CflError(ValueError):
    """A .cfl/.hdr pair that is missing, malformed or truncated."""


def _base(name: str | Path) -> Path:
    """The array's base name: ``x``, ``x.cfl`` and ``x.hdr`` all name the pair x.cfl/x.hdr."""
    p = Path(name)
    return p.with_suffix("") if p.suffix in (".cfl", ".hdr") else p


def write_cfl(name: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` (any numeric dtype, at most 16 dimensions) as ``name.hdr`` + ``name.cfl``.

    Values are stored as complex64 in column-major order; each file is written atomically, the
    header last, so a reader never sees a header whose data file is incomplete.
    Returns the base path (without suffix), the name BART's command line takes.
    """
    a = np.asarray(array)
    if a.ndim > BART_DIMS:
        raise CflError(f"BART arrays have at most {BART_DIMS} dimensions, got {a.ndim}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise CflError(f"cannot store dtype {a.dtype} in a .cfl file (numeric arrays only)")
    base = _base(name)
    data = np.asfortranarray(a.astype(np.complex64, copy=False))
    dims = list(a.shape) + [1] * (BART_DIMS - a.ndim)
    header = "# Dimensions\n" + " ".join(str(d) for d in dims) + " \n"
    raw = data.ravel(order="F").astype("<c8", copy=False).tobytes()
    atomic_write(base.with_suffix(".cfl"), lambda tmp: tmp.write_bytes(raw))
    atomic_write(base.with_suffix(".hdr"), lambda tmp: tmp.write_text(header))
    return base


def _read_dims(hdr: Path) -> list[int]:
    try:
        lines = hdr.read_text().splitlines()
    except FileNotFoundError:
        raise CflError(f"{hdr}: no such header file") from None
    for i, line in enumerate(lines):
        if line.strip().startswith("# Dimensions"):
            if i + 1 >= len(lines):
                break
            try:
                dims = [int(t) for t in lines[i + 1].split()]
            except ValueError:
                raise CflError(
                    f"{hdr}: dimensions line is not integers: {lines[i + 1]!r}"
                ) from None
            if not dims or any(d < 0 for d in dims):
                raise CflError(f"{hdr}: invalid dimensions {dims}")
            return dims
    raise CflError(f"{hdr}: no '# Dimensions' line followed by the dimensions")


def read_cfl(name: str | Path, squeeze_trailing: bool = True) -> np.ndarray:
    """Read the BART array ``name`` (.hdr + .cfl) as complex64 with the header's dimensions.

    Trailing singleton dimensions are dropped unless ``squeeze_trailing`` is False (BART always
    writes 16). Raises CflError naming the file when either file is missing, the header is
    malformed, or the data file holds fewer or more bytes than the dimensions need (truncated).
    """
    base = _base(name)
    dims = _read_dims(base.with_suffix(".hdr"))
    cfl = base.with_suffix(".cfl")
    if not cfl.exists():
        raise CflError(f"{cfl}: no such data file")
    n = int(np.prod(dims, dtype=np.int64))
    need, have = 8 * n, cfl.stat().st_size
    if have != need:
        what = "truncated" if have < need else "longer than its header says"
        raise CflError(
            f"{cfl}: {what}: {have} bytes, but dimensions {dims} need {need} (complex64)"
        )
    data = np.fromfile(cfl, dtype="<c8", count=n).astype(np.complex64)
    if squeeze_trailing:
        while len(dims) > 1 and dims[-1] == 1:
            dims = dims[:-1]
    return data.reshape(dims, order="F")


def kspace_to_bart(kspace: np.ndarray) -> np.ndarray:
    """Our multi-coil k-space (C, H, W) -> BART's layout (H, W, 1, C)."""
    k = np.asarray(kspace)
    if k.ndim != 3:
        raise ValueError(f"expected multi-coil k-space (C, H, W), got shape {k.shape}")
    return np.transpose(k, (1, 2, 0))[:, :, None, :]


def bart_to_kspace(array: np.ndarray) -> np.ndarray:
    """BART's (H, W, 1, C) (or (H, W, C)) -> our (C, H, W)."""
    a = np.asarray(array)
    if a.ndim == 4:
        if a.shape[2] != 1:
            raise ValueError(f"expected BART k-space (H, W, 1, C), got shape {a.shape}")
        a = a[:, :, 0, :]
    if a.ndim != 3:
        raise ValueError(f"expected BART k-space (H, W, 1, C), got shape {a.shape}")
    return np.transpose(a, (2, 0, 1))
