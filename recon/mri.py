"""`recon mri`: retrospectively undersample MRI k-space and reconstruct it.

Input (``--input``): a fastMRI ``.h5`` file (every slice, or ``--slice K`` / ``A:B``; single- or
multi-coil), a ``.npy`` magnitude image or ``bundled:brain-t1`` (a held-out Colin27 T1 slice) to
simulate ``--coils`` coils from (smooth random phase, birdcage maps, fastMRI-like magnitudes).
Undersampling: ``--mask random|equispaced`` (fastMRI, 1-D over columns, ``--accel``,
``--center-fraction``), ``poisson`` (2-D variable density) or ``radial`` (NUFFT; ``--accel``
sets the spoke count). Coil maps: ESPIRiT from the acquired centre (multi-coil).

Values stay in the file's units (fastMRI k-space is tiny, ~1e-5..1e-3): the AE-LPN needs no
normalization. Metrics follow fastMRI: magnitude, centre crop to the recon size, data_range =
the reference's maximum. Writes recon.npy, recon.png (magnitude),
metrics.json, history.json, convergence.png, comparison.png and reconstruction.h5 (submission
layout). recon.npy and reconstruction.h5 hold the magnitude cropped to the recon size.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from recon.argtypes import count, number
from recon.outputs import prepare_out_dir, start_outputs, write_outputs
from recon.pipeline import (
    GivenStore,
    SolveOptions,
    Timer,
    add_solver_arguments,
    device_for,
    exit_status,
    load_presets,
    set_threads,
    solve_with_presets,
    unusable_slices,
    versions,
    warn_about_run,
    warn_unused_options,
)


def _is_file_input(spec: str) -> bool:
    return not (spec.startswith("bundled:") or spec.endswith(".npy"))


class MRIInput(NamedTuple):
    """One slice to reconstruct: k-space (C, H, W) complex64, the reference image (h, w) or
    None, the recon size (h, w), a description of where it came from, and ``measured``: the
    sampled columns (W,) or samples (H, W) of k-space that is already undersampled (a fastMRI
    test-set file's ``mask``, or ``measured_samples``), or None for fully sampled k-space
    (undersampled by ``--mask``)."""

    kspace: np.ndarray
    reference: np.ndarray | None
    recon_size: tuple[int, int]
    source: str
    measured: np.ndarray | None = None


def measured_samples(k: np.ndarray) -> np.ndarray | None:
    """What k-space (C, H, W) stored zero-filled measured: None when every sample inside the box
    spanned by the non-zero ones holds data (fully sampled; all-zero columns or rows at the
    edges are zero padding, as in fastMRI's knee files, not undersampling); else the measured
    columns (W,) when whole columns are missing, or the measured samples (H, W). No noisy
    measurement is exactly zero."""
    nz = np.abs(k).max(axis=0) > 0
    rows, cols = np.flatnonzero(nz.any(axis=1)), np.flatnonzero(nz.any(axis=0))
    if rows.size == 0 or nz[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all():
        return None
    columns = nz.any(axis=0)
    return columns if (nz == columns[None]).all() else nz


def load_kspace(
    spec: str, slice: int | str | None = None, coils: int = 8, seed: int = 0
) -> MRIInput:
    """Slice ``slice`` of a fastMRI file ``spec`` (an int; otherwise the middle one), or a
    ``.npy`` magnitude image / ``bundled:NAME`` simulated with ``coils`` coils (``seed`` sets
    their phase); ValueError naming the input when it is missing or when ``slice`` is given
    for a single image."""
    from data.fastmri import center_crop, count_slices, read_fastmri, simulate_multicoil
    from data.peer_mri import is_ismrmrd, read_ismrmrd_cartesian, rss_center

    if not _is_file_input(spec):
        if slice is not None:
            raise ValueError(f"--slice {slice}: {spec} is one image; --slice selects slices "
                             "of a fastMRI .h5 file")  # fmt: skip
        if spec.startswith("bundled:"):
            from data.bundled import load_bundled

            img = load_bundled(spec.split(":", 1)[1])
        else:
            path = Path(spec)
            if not path.exists():
                raise ValueError(f"--input {path}: no such file")
            img = load_magnitude_npy(path)
        if float(np.abs(img).max()) == float(np.abs(img).min()):
            raise ValueError(f"--input {spec}: a constant image: nothing to reconstruct or score")
        k, ref, _ = simulate_multicoil(np.abs(img), coils, seed)
        return MRIInput(k, ref, ref.shape, f"{spec} simulated with {coils} coils")
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"--input {path}: no such file")
    if is_ismrmrd(path):  # fully sampled one-slice raw data: fastMRI's RSS reference from it
        if slice not in (None, 0):
            raise ValueError(f"--slice {slice}: {path} is a one-slice ISMRMRD file")
        k, size, _ = read_ismrmrd_cartesian(path)
        desc = f"{path} (ISMRMRD, {k.shape[0]} coils)"
        return MRIInput(k, rss_center(k, size), tuple(size), desc)
    index = slice if isinstance(slice, int) else count_slices(path) // 2
    f = read_fastmri(path, slices=index)
    k = f.kspace[0] if f.is_multicoil else f.kspace[0][None]
    if not np.any(k):
        raise ValueError(f"{path}: slice {index}'s k-space is all zero (nothing measured)")
    measured = f.mask if f.mask is not None else measured_samples(k)
    if measured is not None:
        k = k * measured  # the file's mask says what was measured
    size = f.recon_size or f.kspace.shape[-2:]
    fits = f.reference is not None and all(
        r <= n for r, n in zip(f.reference.shape[-2:], size, strict=True)
    )
    if f.recon_size is None and fits:
        size = f.reference.shape[-2:]  # no header: fastMRI's evaluation crops to the target
    ref = None if f.reference is None else center_crop(f.reference[0], size)
    if ref is not None and tuple(ref.shape) != tuple(size):
        raise ValueError(
            f"{path}: {f.reference_key} is {f.reference.shape[-2]}×{f.reference.shape[-1]}, "
            f"smaller than the {size[0]}×{size[1]} reconstruction it should score (the "
            "ismrmrd_header's reconSpace, else the k-space size)"
        )
    source = f"{path}[{index}] ({f.acquisition})"
    return MRIInput(k.astype(np.complex64), ref, tuple(size), source, measured)


def file_slices(path: Path) -> int:
    """Slices in a k-space file: a fastMRI file's, or 1 for a (one-slice) ISMRMRD file."""
    from data.fastmri import count_slices
    from data.peer_mri import is_ismrmrd

    return 1 if is_ismrmrd(path) else count_slices(path)


def _load_args(args: argparse.Namespace, index: int | None = None) -> MRIInput:
    """``load_kspace`` with the `recon mri` options (slice ``index``, default ``--slice``);
    ``--coils`` only for an image input (a k-space file has its own coils: ValueError)."""
    coils = getattr(args, "coils", None)
    if coils is not None and _is_file_input(args.input):
        raise ValueError(
            f"--coils {coils}: {args.input} holds measured k-space with its own coils; --coils "
            "sets how many are simulated from an image input (.npy, bundled:)"
        )
    index = args.slice if index is None else index
    return load_kspace(args.input, index, 8 if coils is None else coils, args.seed)


def parse_slices(spec: str | int | None, n: int, path: str | Path) -> list[int]:
    """The slices ``--slice`` selects in a file of ``n`` slices: None or 'all' -> every slice,
    'K' -> [K], 'A:B' -> A..B−1 (Python's half-open range; either end may be left out).
    ValueError naming the file when the selection is malformed or empty."""
    if spec is None or spec == "all":
        return list(range(n))
    text = str(spec).strip()
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            lo = int(a) if a.strip() else 0
            hi = int(b) if b.strip() else n
            if not (0 <= lo < hi <= n):
                raise ValueError
            return list(range(lo, hi))
        k = int(text)
    except ValueError:
        raise ValueError(
            f"--slice {spec!r}: {path} has slices 0..{n - 1}; give K, A:B (A..B−1) or all"
        ) from None
    if not 0 <= k < n:
        raise ValueError(f"--slice {k}: {path} has slices 0..{n - 1}")
    return [k]


def load_magnitude_npy(path: str | Path) -> np.ndarray:
    """The magnitude of the finite 2-D image in a .npy file (``data.npy.load_npy_image``; a
    complex image gives its magnitude, with a warning that its phase is not used; a real one
    going below −1 % of its peak, with a warning naming its minimum: a magnitude image is ≥ 0
    (up to interpolation's overshoot), and an HU CT slice would be simulated as |HU|);
    ValueError naming the file otherwise."""
    import warnings

    from data.npy import load_npy_image

    image = load_npy_image(path, complex_ok=True)
    if np.iscomplexobj(image):
        warnings.warn(
            f"{path}: a complex image; its magnitude is simulated (coils, k-space, noise) and "
            "its phase is not used",
            UserWarning,
            stacklevel=2,
        )
    elif image.size and float(image.min()) < -0.01 * float(np.abs(image).max()):
        warnings.warn(
            f"{path}: negative values (min {float(image.min()):.4g}) in an MRI magnitude image "
            "(an HU CT slice?); their magnitudes |values| are used",
            UserWarning,
            stacklevel=2,
        )
    return np.abs(image)


MIN_CALIBRATION = 6  # fully sampled centre columns ESPIRiT needs


def calibration_width(mask: np.ndarray) -> int:
    """Width of the fully sampled block of columns around the k-space centre."""
    cols = mask.max(axis=0) > 0
    c = len(cols) // 2
    lo = hi = c
    while lo > 0 and cols[lo - 1]:
        lo -= 1
    while hi < len(cols) - 1 and cols[hi + 1]:
        hi += 1
    width = hi - lo + 1 if cols[c] else 0
    # ESPIRiT takes the block [c − w//2, c − w//2 + w) centred like this; the sampled run may be
    # off-centre by a column, so shrink w until that block lies inside [lo, hi]
    while width > 0 and (c - width // 2 < lo or c - width // 2 + width - 1 > hi):
        width -= 1
    if width < MIN_CALIBRATION:
        raise ValueError(
            f"only {width} fully sampled centre columns: ESPIRiT needs at least "
            f"{MIN_CALIBRATION} (raise --center-fraction, or lower --accel)"
        )
    return width


CALIBRATION_ROWS = 24  # k-space rows ESPIRiT calibrates on with a column mask (BART's -r)
MAPS_REFIT_ABOVE = 0.2  # ESPIRiT's support crop dropped signal: refit with a looser one
MAPS_CHECK_ABOVE = 0.11  # from here to MAPS_REFIT_ABOVE, held-out columns decide the crop
MAPS_UNUSABLE_ABOVE = 0.5  # no smooth maps explain the coils: reconstruct without SENSE
REFIT_CROP = 0.8  # BART ecalib's default support threshold
MAPS_CROP = 0.95  # ESPIRiT's support threshold (SigPy's default) on a square calibration block
# ... and on CALIBRATION_ROWS × width, whose better-estimated eigenvalues come closer to 1 off
# the object: at 0.95 the support grew (bundled slice 0.566 -> 0.590 of the image, TV -0.35 dB)
COLUMN_MASK_CROP = 0.97


def checked_maps(
    ku: np.ndarray, width: int, height: int | None = None, sampled: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
    """ESPIRiT maps of undersampled k-space (C, H, W) and how well they explain its fully
    sampled centre (``data.coils.unexplained_calibration``): (maps, record for metrics.json).
    ``height`` None: a column mask, whose ``width`` centre columns are calibrated over
    ``CALIBRATION_ROWS`` rows at least, as BART's ``ecalib`` does (a square block of ``width``
    rows left ESPIRiT's calibration matrix with fewer rows than unknowns for narrow centres:
    on ISMRMRD's Shepp-Logan at 4x, 0.19 of the calibration data unexplained and TV 32.9 dB,
    against 0.12 and 37.1 dB with 24 rows; every row breaks the maps on noisy data, where the
    outer rows hold mostly noise).

    The maps come from ESPIRiT with its support crop (``MAPS_CROP``, ``COLUMN_MASK_CROP`` on
    the rectangle); when they leave more than
    ``MAPS_REFIT_ABOVE`` of the calibration data unexplained (signal outside the support they
    detect, e.g. surface coils with a fast fall-off), they are refit with ``REFIT_CROP`` and the
    better of the two is kept. Between ``MAPS_CHECK_ABOVE`` and that, with the column mask
    ``sampled`` (H, W) given, the refit is kept when it predicts held-out measured columns
    better (``heldout_column_error``): there the calibration residual alone does not tell (on
    BART's phantoms 0.95 maps left 0.17-0.20 and lost 1-17 dB to 0.8; on ISMRMRD's Shepp-Logan
    they left 0.16-0.20 and won by 0.1-0.4 dB; docs/results/mri-other-data.md). The record says
    which, and ``usable`` is False when even the better leaves more than
    ``MAPS_UNUSABLE_ABOVE`` (the caller then falls back). With a column mask the record also
    holds ``heldout_error_kept``, the kept maps' held-out error over the central
    ``CALIBRATION_ROWS`` rows; above ``HELDOUT_WARN_ABOVE`` `recon mri` warns
    (docs/results/mri-other-data.md)."""
    from data.coils import espirit_maps, unexplained_calibration

    start = time.perf_counter()
    rows = height or min(ku.shape[-2], max(width, CALIBRATION_ROWS))  # column masks: a rectangle
    crop = COLUMN_MASK_CROP if rows > width else MAPS_CROP
    maps = espirit_maps(ku, calib_width=width, calib_height=rows, crop=crop)
    u = unexplained_calibration(ku, maps, width, height)
    record = {"method": "espirit", "calibration": [rows, width], "crop": crop, "unexplained": u}
    check = sampled is not None and height is None and u > MAPS_CHECK_ABOVE
    if u > MAPS_REFIT_ABOVE or check:
        refit = espirit_maps(ku, calib_width=width, crop=REFIT_CROP, calib_height=rows)
        u0 = unexplained_calibration(ku, refit, width, height)
        record[f"unexplained_with_crop_{crop:g}"] = u
        better = u0 < u
        if u <= MAPS_REFIT_ABOVE:  # a doubtful fit: which maps predict unseen columns?
            e, e0 = (heldout_column_error(ku, sampled, m, width) for m in (maps, refit))
            record["heldout_error"] = {f"{crop:g}": e, f"{REFIT_CROP:g}": e0}
            better = e0 < e
        if better:
            maps, record["crop"], record["unexplained"] = refit, REFIT_CROP, u0
    record["usable"] = record["unexplained"] <= MAPS_UNUSABLE_ABOVE
    if sampled is not None and height is None:  # how well the kept maps predict unseen columns
        record["heldout_error_kept"] = heldout_column_error(
            ku, sampled, maps, width, rows=CALIBRATION_ROWS
        )
    record["seconds"] = time.perf_counter() - start
    return maps, record


# kept maps predicting the central rows of unseen columns 3 times as badly as zeros: warn
HELDOUT_WARN_ABOVE = 3.0


def heldout_column_error(
    ku: np.ndarray,
    sampled: np.ndarray,
    maps: np.ndarray,
    width: int,
    iters: int = 20,
    rows: int | None = None,
) -> float:
    """How well SENSE with ``maps`` predicts measured columns it was not fitted on: every
    second one of the quarter of the sampled columns outside the calibration block (``width``
    centred columns) nearest the centre is held out, x is fitted to the others by ``iters``
    conjugate-gradient steps on AᴴAx = Aᴴy (from 0: early stopping is the only
    regularization), and ||y_held − A_held x||² / ||y_held||² is returned, over every row or
    over the central ``rows`` (where the signal stands above the noise: noise the fit amplifies
    raises the error over every row, 0.52 -> 2.61 on a 48² phantom from 0.2 % to 1 % noise of
    max|k|, over 24 rows 0.45 -> 1.99). ``checked_maps`` compares crops over every row (as
    validated) and warns over the central rows."""
    from operators.mri import SENSE
    from solvers.cg import conjugate_gradient

    h, w = sampled.shape
    c = w // 2
    calib = range(c - width // 2, c - width // 2 + width)
    outer = sorted((j for j in np.flatnonzero(sampled.any(axis=0)) if j not in calib),
                   key=lambda j: abs(j - c))  # fmt: skip
    held = outer[: max(4, len(outer) // 4)][::2]
    if not held:
        return float("nan")
    fit, test = sampled.copy(), np.zeros_like(sampled)
    fit[:, held], test[:, held] = False, sampled[:, held]
    if rows is not None and rows < h:
        test[: h // 2 - rows // 2] = False
        test[h // 2 - rows // 2 + rows :] = False
    a, b = SENSE(maps, fit), SENSE(maps, test)
    y = torch.from_numpy((ku * fit[None])[None])
    with torch.no_grad():
        x, _ = conjugate_gradient(a.normal, a.adjoint(y), iters=iters, tol=0.0)
        pred = b.forward(x)[0].numpy()
    target = ku * test[None]
    return float(np.sum(np.abs(pred - target) ** 2) / max(np.sum(np.abs(target) ** 2), 1e-300))


MASKS = ("random", "equispaced", "poisson", "radial")
COLUMN_MASKS = ("random", "equispaced")  # fastMRI's: whole columns, the readout fully sampled
# Radial data: a NUFFT accurate to about 1e-6 of the discrete Fourier model (SigPy's defaults,
# oversampling 1.25 and width 4, are off by a few 1e-3), and AᴴA by Toeplitz embedding, which
# is as accurate and 5-20x faster than a NUFFT pair (operators.mri.NonCartesianSENSE). The
# solvers' hot loop only calls AᴴA; the slower, accurate NUFFT runs a few times per slice.
RADIAL_NUFFT = {"oversamp": 2.0, "width": 6, "toeplitz": True}


class SampledKspace(NamedTuple):
    """What undersampling one slice gives: the forward operator, the measured data y
    (1, C, ...), the mask's description (for metrics.json; with ``coil_maps``, how the maps
    were checked) and the coil maps (C, H, W) used, or None."""

    op: object
    y: torch.Tensor
    mask: dict
    maps: np.ndarray | None


COLUMN_MASKS = ("random", "equispaced")


def column_center_fraction(
    center_fraction: float | None, accel: float, width: int, calibrate: bool
) -> float:
    """The centre fraction of a column mask: the one given, else fastMRI's 0.32/accel, raised
    when the maps are calibrated from it (``calibrate``) to ESPIRiT's 6 centred columns on a
    narrow image (7 on an odd width, where a block of 6 sits off-centre and
    ``calibration_width`` shrinks it to 5), where the acceleration leaves room for them."""
    from data.masks import default_center_fraction

    if center_fraction is not None:
        return float(center_fraction)
    cf = default_center_fraction(accel)
    floor = (MIN_CALIBRATION + 1.25) / width
    return max(cf, floor) if calibrate and floor * accel <= 1 else cf


def given_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A sampling mask given as an array, (W,) columns or (H, W), as (H, W) bool; ValueError
    when it does not fit k-space of ``shape`` (H, W), is not 0/1 or samples nothing."""
    m = np.asarray(mask)
    h, w = shape
    if m.shape not in ((w,), (h, w)) or m.dtype.kind not in "biuf":
        raise ValueError(
            f"mask of shape {m.shape} ({m.dtype}): expected the sampled columns (W,) = ({w},) "
            f"or a 0/1 array (H, W) = {shape} for k-space of that size"
        )
    if not np.isin(m, (0, 1)).all() or not m.any():
        raise ValueError("mask: expected 0/1 (or bool) values with at least one sample")
    return np.broadcast_to(m.astype(bool), (h, w)).copy()


def is_column_mask(sampled: np.ndarray) -> bool:
    """Whether a mask (H, W) samples whole columns (every row alike): fastMRI's masks."""
    return bool((sampled == sampled[:1]).all())


def _calibration_block(sampled: np.ndarray) -> int:
    """Side of the largest fully sampled square centred in a 2-D mask (H, W)."""
    h, w = sampled.shape
    side = 0
    while side + 2 <= min(h, w):
        r0, c0 = h // 2 - (side + 2) // 2, w // 2 - (side + 2) // 2
        if not sampled[r0 : r0 + side + 2, c0 : c0 + side + 2].all():
            break
        side += 2
    return side


def sample_kspace(
    k: np.ndarray,
    mask: str | np.ndarray = "random",
    accel: float = 4.0,
    center_fraction: float | None = None,
    seed: int = 0,
) -> SampledKspace:
    """Undersample fully sampled k-space ``k`` (C, H, W) with ``mask`` (random | equispaced:
    fastMRI columns; poisson: 2-D variable density; radial: NUFFT spokes, ``accel`` setting
    their count), or with a mask array (``given_mask``: the columns (W,) or samples (H, W) that
    were measured; ``accel``, ``center_fraction`` and ``seed`` are then not used), and build the
    operator: a masked FFT for one coil, SENSE with checked ESPIRiT maps for several
    (``checked_maps``, calibrated on the fully sampled centre)."""
    from data.coils import espirit_maps
    from data.masks import (
        fastmri_equispaced_mask,
        fastmri_random_mask,
        poisson_disc_mask,
        radial_trajectory,
    )
    from operators.mri import SENSE, MaskedFFT, NonCartesianSENSE, ifft2c

    c, h, w = k.shape
    given = not isinstance(mask, str)
    kind = "given" if given else mask
    if not given and kind not in MASKS:
        raise ValueError(f"--mask {kind!r}: expected one of {', '.join(MASKS)}")
    cf = column_center_fraction(center_fraction, accel, w, c > 1 and kind in COLUMN_MASKS)
    if given:
        sampled = given_mask(mask, (h, w))
    elif kind in ("random", "equispaced"):
        fn = fastmri_random_mask if kind == "random" else fastmri_equispaced_mask
        sampled = np.broadcast_to(fn(w, accel, cf, seed=seed)[None], (h, w)).copy()
    elif kind == "poisson":
        calib = min(16, min(h, w) // 4)
        sampled = poisson_disc_mask((h, w), accel, seed=seed, calib=calib)
    else:
        sampled = None
    desc = {"type": kind, "accel": accel, "center_fraction": cf, "seed": seed}
    if given:
        desc = {"type": "given", "columns": is_column_mask(sampled)}
    if sampled is not None:
        if not sampled.any():
            raise ValueError(
                f"--accel {accel:g} with centre fraction {cf:g} samples no k-space column "
                f"of {w}: lower --accel or raise --center-fraction"
            )
        desc["achieved_accel"] = float(sampled.size / sampled.sum())
        if given:
            desc["accel"] = desc["achieved_accel"]
        ku = k * sampled[None]
        if c == 1:
            op = MaskedFFT(sampled)
            return SampledKspace(op, torch.from_numpy(ku[None]), desc, None)
        columns = kind in COLUMN_MASKS or (given and desc["columns"])
        if columns:  # ESPIRiT calibrates on the centred fully sampled columns
            try:
                width, height = calibration_width(sampled), None
            except ValueError as exc:
                if not given:
                    raise
                raise ValueError(
                    f"the mask's fully sampled centre: {str(exc).split(' (')[0]}"
                ) from None
        else:  # 2-D masks: on the centred fully sampled square
            if given:
                calib = _calibration_block(sampled)
                if calib < MIN_CALIBRATION:
                    raise ValueError(
                        f"the mask's fully sampled centre is {calib}×{calib}: ESPIRiT needs at "
                        f"least {MIN_CALIBRATION}×{MIN_CALIBRATION} to estimate the coil maps"
                    )
            width = height = calib
        maps, desc["coil_maps"] = checked_maps(ku, width, height, sampled if columns else None)
        op = SENSE(maps, sampled)
        return SampledKspace(op, torch.from_numpy(ku[None]), desc, maps)
    # radial: sample the coil images along spokes; maps from a fully sampled 24×24 centre
    n_read = max(h, w)
    spokes = max(1, int(round(np.pi / 2 * n_read / accel)))
    # spokes reach each axis's Nyquist radius (h/2 rows, w/2 columns): elliptical for h ≠ w
    coord = radial_trajectory(spokes, n_read) * np.array([h / n_read, w / n_read], np.float32)
    desc.update(spokes=spokes, readout=n_read)
    centre = np.zeros_like(k)
    r0, c0 = h // 2 - 12, w // 2 - 12
    centre[:, r0 : r0 + 24, c0 : c0 + 24] = k[:, r0 : r0 + 24, c0 : c0 + 24]
    maps = espirit_maps(centre, calib_width=24) if c > 1 else np.ones((1, h, w), np.complex64)
    op = NonCartesianSENSE(maps, coord, **RADIAL_NUFFT)
    coil_imgs = ifft2c(torch.from_numpy(k))[None]
    import sigpy as sp

    kw = {"oversamp": op.oversamp, "width": op.width}
    y = np.stack([sp.nufft(coil_imgs[0, i].numpy(), coord, **kw) for i in range(c)])[None]
    return SampledKspace(op, torch.from_numpy(y.astype(np.complex64)), desc, maps)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mri",
        help="undersample and reconstruct MRI",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input",
        required=True,
        help="a fastMRI .h5 file, a fully sampled one-slice ISMRMRD .h5 file, a .npy magnitude "
        "image or bundled:brain-t1 (images are simulated with --coils coils)",
    )
    add_options(p)


def add_options(p: argparse.ArgumentParser) -> None:
    """The `recon mri` options other than --input (shared with `recon batch mri`)."""
    p.add_argument(
        "--slice",
        default=None,
        help="slices of a fastMRI file: K, A:B (A..B−1) or all (the default)",
    )
    p.add_argument(
        "--coils",
        type=count(1, 64),
        default=None,
        help="coils simulated from an image input (.npy, bundled:; default 8); a k-space file "
        "has its own",
    )
    p.add_argument(
        "--mask",
        choices=MASKS,
        default="random",
        action=GivenStore,
        help="undersampling (default random); a file that is already undersampled (a 'mask' "
        "dataset, as fastMRI's test set) is reconstructed from its own samples",
    )
    p.add_argument(
        "--accel", type=number(1), default=4.0, action=GivenStore, help="acceleration (default 4)"
    )
    p.add_argument(
        "--center-fraction",
        type=number(0, 1, lo_open=True),
        default=None,
        action=GivenStore,
        help="fully sampled centre of a column mask, as a fraction of the columns (default "
        "0.32 / accel, and at least the 6 columns ESPIRiT needs on multi-coil data)",
    )
    p.add_argument(
        "--solver",
        choices=["pnp-admm", "pnp-pgd", "zero-filled", "tv"],
        default=None,
        help="default: pnp-pgd (FISTA) with ridge-mri, pnp-admm with the other priors",
    )
    p.add_argument(
        "--prior",
        action=GivenStore,
        default="ridge-mri",
        help="ridge-mri (firmly nonexpansive, closed form; the default) | crr-mri (the exact "
        "prox of a learned convex regularizer: better on piecewise-constant phantoms, about 8x "
        "slower on the bundled slice) | aelpn-mri | lpn-mri | tv | CHECKPOINT",
    )
    p.add_argument(
        "--normalize",
        choices=["none", "max"],
        default="none",
        help="'max': solve on k-space scaled so the zero-filled image's maximum is 1, then scale "
        "back (what a non-equivariant prior such as lpn-mri needs; the AE-LPN gives the same "
        "image either way; default none)",
    )
    add_solver_arguments(p, "mri")


# The solver `recon mri` runs a prior with when --solver is not given. ridge-mri with PnP-FISTA
# (the presets' pnp-pgd section: 300 iterations, σ of ADMM's problem scaled by step·ρ) beats its
# PnP-ADMM on the 12 validation problems by 0.67 dB (27.55 -> 28.22; 11 of 12 gain;
# scripts/tune_mri_noise.py, docs/results/mri-other-data.md). The deep AE-LPNs are not firmly
# nonexpansive, so PGD/FISTA carry no guarantee with them: they keep ADMM.
DEFAULT_SOLVER = {"ridge-mri": "pnp-pgd"}


def default_solver(prior: str | Path | None) -> str:
    """The solver `recon mri` (and ``recon.api.solve``) uses with ``prior`` by default; a
    checkpoint takes that of the shipped prior it stands for, as it takes its presets
    (``recon.pipeline.shipped_source``)."""
    name = str(prior)
    if name.endswith(".safetensors"):
        from recon.pipeline import shipped_source

        name = shipped_source(name) or name
    return DEFAULT_SOLVER.get(name, "pnp-admm")


def _resolve_solver(args: argparse.Namespace) -> None:
    """Fill in --solver's default where an entry point first reads it (``reconstruct_slice``,
    ``reconstruct_file``; `recon mri`, `recon batch` and the benches all go through them)."""
    if getattr(args, "solver", None) is None:
        args.solver = default_solver(args.prior)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    prepare_out_dir(args.out, inputs=(args.input,))
    _resolve_solver(args)
    warn_unused_options(args)
    if _is_file_input(args.input):
        return exit_status(reconstruct_file(args, Path(args.out)))
    return exit_status(reconstruct_input(args, Path(args.out)))


@dataclass
class SliceRecon:
    """One reconstructed slice: magnitudes cropped to the recon size (h, w), the solver's
    record and history, and what metrics.json says about the problem."""

    image: np.ndarray
    zero_filled: np.ndarray
    reference: np.ndarray | None
    record: dict
    history: dict
    seconds: float
    zf_seconds: float
    info: dict


@dataclass
class MRIProblem:
    """One undersampled slice, ready to reconstruct: the operator ``op``, the data ``y``
    (1, C, ...), the adjoint start ``x0`` (1, 1, H, W), fastMRI's zero-filled RSS image (H, W),
    the reference (H, W) or None, the recon size (h, w) results are cropped to, and ``info``
    for metrics.json (mask, coils, coil-map check, measured k-space noise)."""

    op: object
    y: torch.Tensor
    x0: torch.Tensor
    zero_filled: np.ndarray
    reference: np.ndarray | None
    recon_size: tuple[int, int]
    info: dict
    zf_seconds: float

    @property
    def maps_usable(self) -> bool:
        """False when the coil maps cannot explain the calibration data (use zero-filled)."""
        return self.info.get("coil_maps", {}).get("usable", True)

    @property
    def kspace_noise(self) -> float | None:
        return self.info.get("kspace_noise")


def mri_problem(
    kspace: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    recon_size: tuple[int, int] | None = None,
    mask: str | np.ndarray = "random",
    accel: float = 4.0,
    center_fraction: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> MRIProblem:
    """Undersample fully sampled ``kspace`` (C, H, W) (``sample_kspace``; a ``mask`` array: the
    samples that were measured), measure the data's noise (``measured_noise``) and form the
    start image and the zero-filled baseline (``start_images``). With a ``recon_size`` at most
    half as tall as the k-space and a column mask, the readout oversampling is removed first
    (``remove_readout_oversampling``; the noise is still measured on the full grid,
    ``full_grid_noise``)."""
    size = tuple(recon_size or kspace.shape[-2:])
    full, oversampling = kspace, 1
    if isinstance(mask, str):
        columns = mask in COLUMN_MASKS
    else:
        m = given_mask(mask, kspace.shape[-2:])
        columns = is_column_mask(m)
        mask = m[0] if columns else m  # (W,): the same columns of the reduced k-space
    if recon_size is not None and columns:
        kspace, oversampling = remove_readout_oversampling(kspace, size[0])
    op, y, mask_desc, _ = sample_kspace(kspace, mask, accel, center_fraction, seed)
    info: dict = {"mask": mask_desc, "coils": int(kspace.shape[0]), "recon_size": list(size)}
    if oversampling > 1:
        info["readout_oversampling_removed"] = oversampling
    maps_record = mask_desc.pop("coil_maps", None)
    if maps_record is not None:
        info["coil_maps"] = maps_record
    noise = measured_noise(op, y) if oversampling == 1 else full_grid_noise(full, op)
    if noise is not None:
        info["kspace_noise"] = noise
    y = y.to(device_for(device) if isinstance(device, str) else device)
    with Timer() as t_zf:
        x0, zf = start_images(op, y)
    return MRIProblem(op, y, x0, zf, reference, size, info, t_zf.seconds)


def remove_readout_oversampling(kspace: np.ndarray, height: int) -> tuple[np.ndarray, int]:
    """(k-space (C, H/2, W), 2) when the readout (rows, axis −2, fully sampled by fastMRI's
    column masks) is oversampled twice over for a recon ``height`` ≤ H/2 (fastMRI: 640 rows for
    a 320-row recon), else (kspace, 1) unchanged.

    The coil images along the readout, ifft_c over axis −2, keep their central H/2 rows (the
    rows ``data.fastmri.center_crop`` keeps), and fft_c takes them back: the image the
    reduced k-space shows is exactly those rows of the full one (orthonormal transforms, so the
    noise per sample is unchanged), and a column mask samples the same columns of it. With the
    readout fully sampled the data term decouples row by row, so only the prior near the two
    cut rows sees the cut; every solver runs on half the pixels."""
    from data.fastmri import center_crop

    c, h, w = kspace.shape
    if h % 4 or 2 * height > h:
        return kspace, 1
    ax = -2
    imgs = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kspace, axes=ax), axis=ax, norm="ortho"),
                           axes=ax)  # fmt: skip
    kept = center_crop(imgs, (h // 2, w))
    k = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(kept, axes=ax), axis=ax, norm="ortho"), axes=ax)
    return k.astype(kspace.dtype), 2


def full_grid_noise(kspace: np.ndarray, op) -> float | None:
    """The k-space noise of the full-grid k-space (C, H, W) under the column mask of ``op``
    (built for the readout-reduced data): the same noise per sample (the reduction is
    orthonormal), measured where the presets' rules were tuned, with twice the corner samples
    and half the signal power per sample there (``remove_readout_oversampling``)."""
    m = _cartesian_mask(op)
    return None if m is None else _kspace_noise(kspace * m[0], m[0])


def _cartesian_mask(op) -> np.ndarray | None:
    """The (H, W) sampling mask of a Cartesian operator as numpy, or None."""
    m = getattr(op, "mask", None)
    if m is None:
        return None
    return m.cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)


def _kspace_noise(samples: np.ndarray, mask: np.ndarray) -> float | None:
    """``data.mri_noise.estimate_kspace_noise``, None when too few samples lie at the edges."""
    from data.mri_noise import estimate_kspace_noise

    try:
        return estimate_kspace_noise(samples, mask)
    except ValueError:
        return None


def _non_cartesian(op) -> bool:
    """Whether ``op`` samples k-space off the grid (``NonCartesianSENSE``: it has ``coord``)."""
    return getattr(op, "coord", None) is not None


def measured_noise(op, y: torch.Tensor) -> float | None:
    """The noise level the presets' rules take, from the measurements y (1, C, ...) alone
    (``data.mri_noise``): the k-space noise σ in the corners (or the outer ring) of a Cartesian
    mask; σ/||A|| at the outer ends of non-Cartesian spokes. None when too few samples lie there
    (the rules then use the blind estimate of the start image).

    Why σ/||A||: with a Cartesian mask and RSS-normalised maps ||A|| = 1 and a sample's noise is
    the image's noise per pixel. Spokes sample the centre of k-space ||A||² times over, so the
    image's noise there is σ/||A||; told σ itself, the Cartesian rules over-regularize radial
    data (validation, radial 4×/8×, PnP-ADMM + ``ridge-mri``: 31.5 dB against 38.0 with σ/||A||
    and 37.8 with no noise estimate, docs/results/mri-other-data.md)."""
    from data.mri_noise import estimate_noncartesian_noise

    samples = y[0].detach().cpu().numpy()
    if _non_cartesian(op):
        try:
            sigma = estimate_noncartesian_noise(samples, np.asarray(op.coord))
        except ValueError:
            return None
        return sigma / math.sqrt(op.norm_sq())
    m = _cartesian_mask(op)
    return None if m is None else _kspace_noise(samples, m)


def start_images(op, y: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """The solvers' start x0 (1, 1, H, W) and the zero-filled baseline image (H, W).

    Cartesian masks: x0 = Aᴴy, the SENSE-combined zero-filled image (in image units: the maps
    are RSS-normalised and the FFT orthonormal), and fastMRI's baseline rss(ifft2c(y)).
    Non-Cartesian (radial spokes): the gridding image x0 = Aᴴ(w ⊙ y), w the Pipe–Menon weights
    scaled so that Aᴴ(w ⊙ Ax) ≈ x (``NonCartesianSENSE.dcf``), also the baseline. Aᴴy alone is
    not in image units there: the spokes sample the centre of k-space many times over, which
    makes it larger by about that oversampling (its range ×24 at 4× and ×12 at 8× on a 192²
    brain slice), and the start, the presets' rules relative to its range and the baseline would
    all inherit it."""
    from operators.mri import ifft2c, rss, zero_filled

    with torch.no_grad():
        if _non_cartesian(op):
            x0 = zero_filled(op, y, op.dcf())
            return x0, x0.abs()[0, 0].cpu().numpy()
        return op.adjoint(y), rss(ifft2c(y), dim=1)[0].cpu().numpy()


def solve_mri(
    problem: MRIProblem,
    solver: str,
    prior: str | Path | None,
    presets: dict,
    *,
    normalize: str = "none",
    options: SolveOptions | None = None,
) -> tuple[np.ndarray, dict, dict, float]:
    """(complex image (H, W), solver record, history, seconds) of ``solver`` ('zero-filled',
    'tv', 'pnp-admm', 'pnp-pgd') with ``prior`` and the presets. ``normalize='max'`` scales the
    data so that the zero-filled image peaks at 1 (and back), for priors that are not
    scale-equivariant (`recon mri --normalize`). ``options``: the preset's overrides and the
    reporting (``recon.pipeline.SolveOptions``; its strength × the regularizer's weight)."""
    p = problem
    if solver == "zero-filled":
        record = {"converged": True, "stop_reason": "closed form", "iterations": 0, "params": {}}
        return p.zero_filled.astype(np.complex64), record, {}, p.zf_seconds
    dev = p.y.device
    ref = p.reference
    drange = float(ref.max()) if ref is not None else None
    ref_t = None
    if ref is not None and ref.shape == tuple(p.x0.shape[-2:]):
        ref_t = torch.from_numpy(ref)[None, None].to(dev)
    zmax = float(p.zero_filled.max())
    c = 1.0 / zmax if normalize == "max" and zmax > 0 else 1.0
    noise = p.kspace_noise
    rec = solve_with_presets(
        presets, p.op, p.y * c, p.x0 * c, solver, prior,
        reference=None if ref_t is None else ref_t * c,
        data_range=None if drange is None else drange * c,
        noise_level=None if noise is None else noise * c,
        options=options,
    )  # fmt: skip
    x_img = (rec.x[0, 0].detach().cpu().numpy() / c).astype(np.complex64)
    record = rec.record()
    record["params"]["normalize"] = {"mode": normalize, "kspace_scale": c}
    return x_img, record, rec.history, rec.seconds


MASK_OPTIONS = ("mask", "accel", "center_fraction")  # what undersampling a file that has it


def reconstruct_slice(
    args: argparse.Namespace,
    k: np.ndarray,
    ref: np.ndarray | None,
    size: tuple[int, int],
    presets: dict | None = None,
    measured: np.ndarray | None = None,
) -> SliceRecon:
    """Undersample k-space (C, H, W) as ``args`` says and reconstruct it with ``args.solver``;
    k-space that is already undersampled (``measured``: its sampled columns, from the file) is
    reconstructed from those samples as it is."""
    from data.fastmri import center_crop

    _resolve_solver(args)
    problem = mri_problem(
        k, reference=ref, recon_size=size,
        mask=args.mask if measured is None else measured, accel=args.accel,
        center_fraction=args.center_fraction, seed=args.seed, device=args.device,
    )  # fmt: skip
    info = problem.info
    if measured is not None:
        info["mask"]["type"] = "file"  # the file's own undersampling
    solver = args.solver
    if not problem.maps_usable and solver != "zero-filled":
        solver = info["fallback"] = "zero-filled"
        print(
            f"warning: {args.input}: the coil maps leave "
            f"{info['coil_maps']['unexplained']:.0%} of the fully sampled centre unexplained (a "
            "SENSE model does not fit these coils); writing the zero-filled RSS image "
            f"instead of --solver {args.solver} (metrics.json: fallback)",
            file=sys.stderr,
        )
    held = info.get("coil_maps", {}).get("heldout_error_kept", 0.0)
    if held > HELDOUT_WARN_ABOVE and solver != "zero-filled":
        warnings.warn(
            f"{args.input}: SENSE with these coil maps predicts held-out measured columns "
            f"{held:.1f} times worse than zeros would (the maps do not fit these coils or this "
            "field of view); the image may be worse than zero-filled: compare metrics.json's "
            "baseline, or try --solver zero-filled",
            stacklevel=2,
        )
    if solver != "zero-filled" and presets is None:
        presets = load_presets("mri", args.config)
    x_img, record, history, seconds = solve_mri(
        problem, solver, args.prior, presets or {}, normalize=args.normalize,
        options=SolveOptions.from_args(args),
    )  # fmt: skip
    return SliceRecon(
        image=center_crop(np.abs(x_img), size),
        zero_filled=center_crop(problem.zero_filled, size),
        reference=None if ref is None else center_crop(ref, size),
        record=record,
        history=history,
        seconds=seconds,
        zf_seconds=problem.zf_seconds,
        info=info,
    )


def _label(args: argparse.Namespace) -> str:
    label = args.solver if args.solver in ("zero-filled", "tv") else f"{args.solver} + {args.prior}"
    strength = getattr(args, "strength", 1.0)
    if strength == 1.0 or args.solver == "zero-filled":
        return label
    return f"{label}, strength {strength:g}"


def _run_metrics(args: argparse.Namespace, r: SliceRecon, source: str) -> dict:
    return {
        "iterations": r.record["iterations"],
        "seconds": r.seconds,
        "converged": r.record["converged"],
        "stop_reason": r.record["stop_reason"],
        "solver": args.solver,
        "prior": None if args.solver in ("zero-filled", "tv") else args.prior,
        "parameters": r.record["params"],
        "objective": r.record.get("objective", ""),
        "start_data_fidelity": r.record.get("start_data_fidelity"),
        "norm_ratio": r.record.get("norm_ratio"),
        "input": source,
        **r.info,
        "seed": args.seed,
        "device": args.device,
        "versions": versions(),
    }


def reconstruct_input(args: argparse.Namespace, out: Path) -> dict:
    """Reconstruct one slice of ``args.input`` (``args.slice``, default the middle one) with
    the `recon mri` options in ``args``; write the output files into ``out`` (metrics.json last)
    and return the metrics."""
    inp = _load_args(args)
    _warn_file_mask(args, inp)
    r = reconstruct_slice(args, inp.kspace, inp.reference, inp.recon_size, measured=inp.measured)
    return _write_run(args, Path(out), [r], inp.source)


def _warn_file_mask(args: argparse.Namespace, inp: MRIInput) -> None:
    """Say once that k-space from the file is already undersampled, naming the --mask options
    given that it therefore does not use."""
    unused = _given_mask_options(args)
    if inp.measured is None or (getattr(args, "quiet", False) and not unused):
        return
    n, w = int(inp.measured.sum()), inp.measured.size
    what = "columns" if inp.measured.ndim == 1 else "samples"
    line = (
        f"{args.input}: k-space already undersampled ({n} of {w} {what} measured, "
        f"{w / n:.2f}×): reconstructed from those samples"
    )
    if unused:
        line += f"; {', '.join(unused)} not used"
    warnings.warn(line, stacklevel=2)


def _given_mask_options(args: argparse.Namespace) -> list[str]:
    given = getattr(args, "given", set())
    return [f"--{d.replace('_', '-')}" for d in MASK_OPTIONS if d in given]


def reconstruct_file(args: argparse.Namespace, out: Path) -> dict:
    """Reconstruct the slices ``args.slice`` selects (default: all) of a fastMRI file, one after
    the other, printing each slice's result; write reconstruction.h5 (slices, h, w) in the
    submission layout and recon.npy with the volume, the figures and history of the middle
    selected slice, and metrics.json last: fastMRI's volume metrics (NMSE and PSNR over the
    volume, SSIM averaged over slices) against ``reconstruction_rss``/``_esc`` when the file has
    it, the zero-filled baseline's, and per slice its metrics, iterations and seconds."""
    from data.fastmri import evaluate

    _resolve_solver(args)
    path = Path(args.input)
    if not path.exists():
        raise ValueError(f"--input {path}: no such file")
    slices = parse_slices(args.slice, file_slices(path), path)
    presets = load_presets("mri", args.config) if args.solver != "zero-filled" else None
    results: list[SliceRecon] = []
    rows = []
    for n, index in enumerate(slices, 1):
        inp = _load_args(args, index)
        if n == 1:
            _warn_file_mask(args, inp)
        r = reconstruct_slice(
            args, inp.kspace, inp.reference, inp.recon_size, presets, measured=inp.measured
        )
        results.append(r)
        row = {"slice": index, "iterations": r.record["iterations"], "seconds": r.seconds}
        row["stop_reason"] = r.record["stop_reason"]
        if r.reference is not None:
            row.update({k2: evaluate(r.reference, r.image)[k2] for k2 in ("psnr", "ssim")})
        rows.append(row)
        where = f"slice {index}: " if len(slices) > 1 else ""
        warn_about_run(r.record, r.history, row, where=where)
        if not args.quiet and len(slices) > 1:
            tail = f"PSNR {row['psnr']:.2f} dB, " if "psnr" in row else ""
            print(
                f"slice {index} ({n}/{len(slices)}): {tail}{row['iterations']} iterations, "
                f"{row['seconds']:.1f} s",
                flush=True,
            )
    return _write_run(args, Path(out), results, str(path), rows, slices)


def _write_run(
    args: argparse.Namespace,
    out: Path,
    results: list[SliceRecon],
    source: str,
    rows: list[dict] | None = None,
    slices: list[int] | None = None,
) -> dict:
    """The output files of one or more reconstructed slices (metrics.json last); the metrics.

    Quality: fastMRI's metrics of the stacked slices against their references, and the
    zero-filled baseline's. The figures and history show the middle slice. With ``rows`` (a
    file's slices): totals over the slices and the per-slice rows; else the single slice's
    run is checked by ``warn_about_run``."""
    from data.fastmri import evaluate, write_reconstruction

    volume = np.stack([r.image for r in results])
    mid = results[len(results) // 2]
    metrics: dict = {}
    if all(r.reference is not None for r in results):
        gt = np.stack([r.reference for r in results])
        zf = np.stack([r.zero_filled for r in results])
        seconds_zf = float(sum(r.zf_seconds for r in results))
        metrics.update(evaluate(gt, volume))
        metrics["baseline"] = {"name": "zero-filled", **evaluate(gt, zf), "seconds": seconds_zf}
    metrics.update(_run_metrics(args, mid, source))
    label = f"MRI {_label(args)}"
    what = ""
    if rows is None:
        warn_about_run(mid.record, mid.history, metrics)
    else:
        metrics.update(
            iterations=int(sum(r.record["iterations"] for r in results)),
            seconds=float(sum(r.seconds for r in results)),
            converged=all(r.record["converged"] for r in results),
            stop_reason=mid.record["stop_reason"] if len(results) == 1 else "see slices",
            slices=rows,
            shown_slice=slices[len(slices) // 2],
        )
        bad = unusable_slices(rows)
        if bad is not None:
            metrics["unusable"] = bad
        what = f" ({len(slices)} slices)" if len(slices) > 1 else f" (slice {slices[0]})"
        if len(slices) > 1:
            label += f", slice {slices[len(slices) // 2]}"
    hi = float(mid.reference.max()) if mid.reference is not None else float(mid.image.max())
    start_outputs(out, writes=("reconstruction.h5",))  # metrics.json first, then stale
    write_reconstruction(out / "reconstruction.h5", volume)
    write_outputs(
        out, mid.image, mid.reference, ("zero-filled", mid.zero_filled), metrics, mid.history,
        label, (0.0, hi), volume=volume if len(results) > 1 else None,
    )  # fmt: skip
    if not args.quiet:
        print(f"{_label(args)}{what}: {_summary(metrics)} -> {out}/")
    return metrics


def _summary(m: dict) -> str:
    msg = "no reference image in the input (reconstruction_rss/_esc): no PSNR, "
    if "psnr" in m:
        msg = (
            f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} "
            f"(zero-filled {m['baseline']['psnr']:.2f} dB), "
        )
    return msg + f"{m['iterations']} iterations, {m['seconds']:.1f} s, {m['stop_reason']}"
