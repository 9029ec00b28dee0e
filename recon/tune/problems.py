"""Benchmark/tuning problems, the seeded test and validation scans, and one solver run on them.

Shared by ``recon bench grid`` (test scans) and ``recon tune`` (validation scans), so both
simulate measurements exactly as ``recon ct`` / ``recon mri`` do (the operator, noise and mask
builders of ``recon.ct`` / ``recon.mri`` are reused, not duplicated).

Problems (``PROBLEMS``):
    CT, 1 % Gaussian noise (std = 0.01 × max|sinogram|): ``ct-par60`` / ``ct-par30`` (parallel
    beam, 60 / 30 views over 180°), ``ct-limited120`` (parallel, 60 views over 120°),
    ``ct-fan`` (fan beam, 60 views over 360°).
    MRI, 8 simulated coils: ``mri-random4`` / ``mri-random8`` / ``mri-equi4`` / ``mri-equi8``
    (fastMRI 1-D masks, centre fraction 0.32/R), ``mri-radial4`` (NUFFT, π/2·N/4 spokes).

Scans: CT test = random-ellipse phantoms with seeds ``CT_TEST_SEEDS`` plus the real slice
``bundled:ct-small``; CT validation = phantoms with seeds from ``CT_VAL_SEED0`` on (disjoint).
MRI test = Colin27 T1 axial slices ``MRI_TEST_SLICES`` (135 is ``bundled:brain-t1``); MRI
validation = other held-out slices ``MRI_VAL_SLICES`` (never trained on, never tested on).
"""

from __future__ import annotations

import glob as globlib
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "PROBLEMS",
    "Scan",
    "Case",
    "ct_test_scans",
    "ct_validation_scans",
    "mri_test_scans",
    "mri_validation_scans",
    "scans_from_glob",
    "check_disjoint",
    "build_case",
    "run_method",
    "modality_of",
]

CT_NOISE = 0.01
MRI_COILS = 8
PROBLEMS: dict[str, dict[str, Any]] = {
    "ct-par60": {"geometry": "parallel", "views": 60, "arc": None},
    "ct-par30": {"geometry": "parallel", "views": 30, "arc": None},
    "ct-limited120": {"geometry": "parallel", "views": 60, "arc": 120.0},
    "ct-fan": {"geometry": "fan", "views": 60, "arc": None},
    "mri-random4": {"mask": "random", "accel": 4.0},
    "mri-random8": {"mask": "random", "accel": 8.0},
    "mri-equi4": {"mask": "equispaced", "accel": 4.0},
    "mri-equi8": {"mask": "equispaced", "accel": 8.0},
    "mri-radial4": {"mask": "radial", "accel": 4.0},
}
CT_TEST_SEEDS = (1001, 1002)
CT_VAL_SEED0 = 2001
MRI_TEST_SLICES = (135, 129, 141)  # 135 = bundled:brain-t1
MRI_VAL_SLICES = (123, 147, 126, 144, 121, 132, 138)
BRAIN_SIZE = (208, 176)


def modality_of(problem: str) -> str:
    """'ct' or 'mri' from a problem name (``ct-...`` / ``mri-...``)."""
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem {problem!r}; known: {', '.join(PROBLEMS)}")
    return problem.split("-", 1)[0]


@dataclass
class Scan:
    """One ground-truth image to simulate measurements from.

    image: (H, W) float32 reference in its own units (HU for DICOM/bundled CT, magnitude for MRI).
    kspace: measured multi-coil k-space (C, H, W) complex64 (fastMRI input) or None (simulate).
    """

    name: str
    image: np.ndarray
    units: str = "a.u."
    pixel_size: float = 1.0
    kspace: np.ndarray | None = None
    recon_size: tuple[int, int] | None = None

    def digest(self) -> str:
        """Content hash of the reference image (used to prove validation ≠ test)."""
        a = np.ascontiguousarray(np.asarray(self.image, np.float32))
        return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()[:16]


def _ct_phantom(size: int, seed: int) -> Scan:
    from recon.ct import load_ct_input

    inp = load_ct_input("phantom:ellipses", size=size, seed=seed)
    return Scan(f"ellipses-s{seed}", inp.image, inp.units, inp.pixel_size)


def ct_test_scans(size: int = 128, n_phantoms: int = len(CT_TEST_SEEDS), real: bool = True):
    """The CT test set: ``n_phantoms`` seeded ellipse phantoms (size²) and the real slice."""
    from recon.ct import load_ct_input

    if not 0 <= n_phantoms <= len(CT_TEST_SEEDS):
        raise ValueError(f"n_phantoms must be in 0..{len(CT_TEST_SEEDS)}, got {n_phantoms}")
    scans = [_ct_phantom(size, s) for s in CT_TEST_SEEDS[:n_phantoms]]
    if real:
        inp = load_ct_input("bundled:ct-small")
        scans.append(Scan("ct-small", inp.image, inp.units, inp.pixel_size))
    return scans


# Real CT for validation, from the pydicom-data package (pydicom's larger test files): an abdominal
# slice (patient PANCREAS_0001, 512², 0.86 mm), a patient in neither the training set
# (``data.training_sets.REAL_CT_FILES``) nor the test slice. Its validation scans are four windows
# through the body, centred at the pixels below (disjoint at 128²), at native resolution, like the
# test slice: a native-resolution 128² crop (0.66 mm) with the scanner's noise and fine texture.
# (pydicom-data's other CT, eCT_Supplemental.dcm, is a processed image: quantized values and
# −1024 HU holes inside the brain, so it is not used.)
REAL_CT_VAL_FILE = "explicit_VR-UN.dcm"
REAL_CT_VAL_WINDOWS = ((256, 256), (256, 128), (256, 384), (128, 256))


def ct_real_validation_slice() -> Scan:
    """The whole ``REAL_CT_VAL_FILE`` slice in HU (clipped below at −1024), from which the
    validation windows are cut.

    Needs the ``pydicom-data`` package (installed by ``make venv``); a clear error otherwise."""
    from pydicom.data import get_testdata_file

    from data.dicom import read_dicom_file

    try:
        path = get_testdata_file(REAL_CT_VAL_FILE, download=False)
    except TypeError:  # older pydicom without the download flag
        path = get_testdata_file(REAL_CT_VAL_FILE)
    if path is None:
        raise ValueError(
            f"real CT validation slice {REAL_CT_VAL_FILE} not found: install the pydicom-data "
            "package (pip install pydicom-data), or pass your own scans with --inputs"
        )
    sl = read_dicom_file(path)
    hu = np.maximum(sl.hu, -1024.0)
    return Scan(Path(REAL_CT_VAL_FILE).stem, hu, "HU", sl.pixel_spacing[0])


def ct_real_validation_scans(size: int = 128) -> list[Scan]:
    """Real CT validation scans: ``size``² windows of ``REAL_CT_VAL_FILE`` in HU at native
    resolution, centred at ``REAL_CT_VAL_WINDOWS`` (see ``ct_real_validation_slice``)."""
    full = ct_real_validation_slice()
    hu = full.image
    scans = []
    for r, c in REAL_CT_VAL_WINDOWS:
        r, c = r - size // 2, c - size // 2
        img = hu[max(r, 0) : r + size, max(c, 0) : c + size]
        if r < 0 or c < 0 or img.shape != (size, size):
            raise ValueError(
                f"{REAL_CT_VAL_FILE}: a {size}² window at ({r}, {c}) leaves the {hu.shape} slice"
            )
        name = f"{full.name}-r{r}c{c}"
        scans.append(Scan(name, np.ascontiguousarray(img), "HU", full.pixel_size))
    return scans


def ct_validation_scans(size: int = 128, n: int = 3) -> list[Scan]:
    """CT validation set: ellipse phantoms with seeds CT_VAL_SEED0.. (disjoint from the test)."""
    seeds = [CT_VAL_SEED0 + i for i in range(n)]
    assert not set(seeds) & set(CT_TEST_SEEDS)
    return [_ct_phantom(size, s) for s in seeds]


def brain_slices(slices) -> list[Scan]:
    from data.fastmri import center_crop
    from data.nifti import COLIN27, nifti_slices

    # centre crop to the bundled slice's even 208×176 (odd sizes misplace the k-space centre)
    imgs = [center_crop(im, BRAIN_SIZE) for im in nifti_slices(COLIN27, list(slices))]
    return [
        Scan(f"colin27-z{z}", im.astype(np.float32)) for z, im in zip(slices, imgs, strict=True)
    ]


def mri_test_scans(n: int = 2) -> list[Scan]:
    """The MRI test set: ``bundled:brain-t1`` (Colin27 slice 135), then slices 129, 141 when
    Debian's mricron-data is installed (else the bundled slice only)."""
    from data.bundled import load_bundled
    from data.nifti import COLIN27

    scans = [Scan("colin27-z135", np.abs(load_bundled("brain-t1")).astype(np.float32))]
    if n > 1 and COLIN27.exists():
        scans += brain_slices(MRI_TEST_SLICES[1:n])
    return scans[:n]


def mri_validation_scans(n: int = 3) -> list[Scan]:
    """MRI validation set: held-out Colin27 slices not in the test set (needs mricron-data)."""
    from data.nifti import COLIN27

    if not COLIN27.exists():
        raise ValueError(
            f"{COLIN27} is missing: install Debian's mricron-data for the synthetic MRI "
            "validation set, or pass your own scans with --inputs GLOB"
        )
    slices = list(MRI_VAL_SLICES[:n])
    assert not set(slices) & set(MRI_TEST_SLICES)
    return brain_slices(slices)


def scans_from_glob(modality: str, pattern: str) -> list[Scan]:
    """A user's scans: CT DICOM files/folders or .npy images; MRI .npy magnitudes or fastMRI .h5
    (the middle slice, k-space and reference). ``pattern``: a GLOB, or a folder (its files of
    the modality's kinds, searched as `recon batch` does). Raises ValueError when nothing
    matches."""
    if Path(pattern).is_dir():
        from recon.batch.plan import is_input_file
        from recon.ct import is_volume_file

        paths = sorted(
            str(f)
            for f in Path(pattern).rglob("*")
            if f.is_file() and is_input_file(f, modality) and not is_volume_file(f)
        )  # (a CT volume is many scans: not a validation image)
        if not paths:
            kinds = "fastMRI .h5 or .npy" if modality == "mri" else "DICOM or .npy"
            raise ValueError(f"--inputs {pattern}: a folder with no {kinds} files")
        _warn_other_modality(pattern, modality)
    else:
        paths = sorted(globlib.glob(pattern, recursive=True))
    if not paths:
        raise ValueError(f"--inputs {pattern}: no file matches")
    scans = []
    skipped: list[str] = []
    for p in paths:
        if modality == "ct":
            from data.dicom import NoPixelDataError
            from recon.ct import load_ct_input

            try:
                inp = load_ct_input(p)
            except NoPixelDataError:  # a DICOMDIR or report beside the images
                skipped.append(p)
                continue
            scans.append(Scan(Path(p).name, inp.image, inp.units, inp.pixel_size))
        elif p.endswith(".h5"):
            from recon.mri import load_kspace

            k, ref, size, _, measured = load_kspace(p, coils=MRI_COILS)
            if ref is None:
                raise ValueError(f"{p}: no reconstruction_rss/_esc reference to tune against")
            if measured is not None:
                raise ValueError(
                    f"{p}: k-space already undersampled (a 'mask'); tuning undersamples fully "
                    "sampled k-space as each --problem says"
                )
            scans.append(Scan(Path(p).name, ref.astype(np.float32), kspace=k, recon_size=size))
        else:
            from recon.mri import load_magnitude_npy

            img = load_magnitude_npy(p)  # warns about negative values
            scans.append(Scan(Path(p).name, np.abs(img).astype(np.float32)))
    if skipped:
        from data.dicom import warn_no_image

        warn_no_image(f"--inputs {pattern}", len(skipped), Path(skipped[0]).name)
    if not scans:
        raise ValueError(f"--inputs {pattern}: no image among the files it matches")
    return scans


def _warn_other_modality(folder: str, modality: str) -> None:
    """Warn (one line) about the files of a folder that are scans of the other modality only
    (a fastMRI .h5 beside CT .npy slices): they were skipped without a word."""
    import warnings

    from recon.batch.plan import is_input_file

    other = "ct" if modality == "mri" else "mri"
    skipped = [
        f
        for f in Path(folder).rglob("*")
        if f.is_file() and is_input_file(f, other) and not is_input_file(f, modality)
    ]
    if skipped:
        kinds = ", ".join(sorted({f.suffix.lower() or f.name for f in skipped}))
        warnings.warn(
            f"--inputs {folder}: {len(skipped)} file(s) ({kinds}) skipped: recon {other} "
            f"inputs, not recon {modality}'s",
            UserWarning,
            stacklevel=3,
        )


def check_disjoint(validation: list[Scan], test: list[Scan]) -> None:
    """Raise ValueError when a validation scan has the same content as a test scan."""
    test_digests = {s.digest(): s.name for s in test}
    clash = [(v.name, test_digests[v.digest()]) for v in validation if v.digest() in test_digests]
    if clash:
        pairs = ", ".join(f"{a} = test {b}" for a, b in clash)
        raise ValueError(f"validation scans overlap the test set ({pairs}): refusing to tune")


@dataclass
class Case:
    """A simulated problem ready to solve.

    op: the forward operator; y: data (1, *range); x0: FBP / adjoint start (1, 1, H, W);
    reference: ground truth (1, 1, H, W) in the solver's units; data_range: for PSNR/SSIM;
    baseline: FBP / zero-filled image (h, w) for metrics; noise_level: the noise σ measured in
    MRI k-space (image units, as `recon mri` measures it), None for CT (blind estimate).
    """

    modality: str
    problem: str
    scan: str
    op: Any
    y: torch.Tensor
    x0: torch.Tensor
    reference: torch.Tensor
    data_range: float
    baseline_name: str
    baseline: np.ndarray
    baseline_seconds: float
    crop: tuple[int, int] | None = None
    ref_np: np.ndarray = field(default_factory=lambda: np.zeros(0))
    noise_level: float | None = None

    def metrics(self, x: torch.Tensor | np.ndarray) -> dict[str, float]:
        """PSNR/SSIM/NMSE of an image (tensor (1, 1, H, W) or array (H, W)) against the truth:
        CT data_range = max − min of the reference; MRI fastMRI's (magnitude, centre crop,
        data_range = reference max)."""
        a = x[0, 0].detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if self.modality == "ct":
            from recon.pipeline import image_metrics

            return image_metrics(a, self.ref_np, self.data_range)
        from data.fastmri import center_crop, evaluate

        size = self.crop or self.ref_np.shape
        return evaluate(center_crop(self.ref_np, size), center_crop(np.abs(a), size))


def build_case(problem: str, scan: Scan, seed: int = 0, ct_noise: float = CT_NOISE) -> Case:
    """Simulate ``problem`` on ``scan`` (noise / coil phase / mask seeded by ``seed``; CT:
    Gaussian noise of std ``ct_noise`` × max|sinogram|)."""

    spec = PROBLEMS[problem] if problem in PROBLEMS else None
    modality = modality_of(problem)
    assert spec is not None
    if modality == "ct":  # the set-up `recon ct` runs (recon.api.ct_problem)
        from recon.api import ct_problem

        pb = ct_problem(
            scan.image, units=scan.units, views=spec["views"], arc=spec["arc"],
            geometry=spec["geometry"], pixel_size=scan.pixel_size, noise=ct_noise, seed=seed,
        )  # fmt: skip
        ref = pb.x_true[0, 0].numpy()
        return Case(
            "ct", problem, scan.name, pb.op, pb.y, pb.x0, pb.x_true, pb.data_range, "fbp",
            pb.x0[0, 0].numpy().copy(), pb.fbp_seconds, ref_np=ref,
        )  # fmt: skip
    from data.fastmri import simulate_multicoil
    from recon.mri import mri_problem

    if scan.kspace is not None:
        k, ref = scan.kspace, scan.image
    else:
        k, ref, _ = simulate_multicoil(np.abs(scan.image), MRI_COILS, seed)
    # the set-up `recon mri` runs: readout oversampling removed, the noise measured in k-space
    pb = mri_problem(
        k, reference=ref, recon_size=scan.recon_size, mask=spec["mask"], accel=spec["accel"],
        seed=seed,
    )  # fmt: skip
    if not pb.maps_usable:
        raise ValueError(
            f"{scan.name}: its coil maps cannot explain the calibration data (recon mri falls "
            "back to the zero-filled image there): nothing to tune or benchmark on it"
        )
    ref_t = None
    if ref.shape == tuple(pb.x0.shape[-2:]):
        ref_t = torch.from_numpy(np.ascontiguousarray(ref))[None, None]
    return Case(
        "mri", problem, scan.name, pb.op, pb.y, pb.x0, ref_t, float(ref.max()), "zero-filled",
        np.asarray(pb.zero_filled), pb.zf_seconds, crop=pb.recon_size,
        ref_np=np.asarray(ref, np.float32), noise_level=pb.kspace_noise,
    )  # fmt: skip


def _plateau(psnr: list) -> int | None:
    """First iteration (1-based) whose PSNR is within 0.1 dB of the run's best PSNR."""
    vals = [(i + 1, v) for i, v in enumerate(psnr) if v is not None and math.isfinite(v)]
    if not vals:
        return None
    best = max(v for _, v in vals)
    return next(i for i, v in vals if v >= best - 0.1)


def run_method(
    case: Case,
    solver: str,
    prior: str,
    presets: dict,
    iters: int | None = None,
    overrides: dict | None = None,
) -> dict[str, Any]:
    """Solve ``case`` with (solver, prior) and the presets; returns metrics, iterations,
    convergence, seconds (solver wall time, monitoring excluded) and the PSNR/rel-change/seconds
    histories. ``overrides`` replace entries of the method's params (tuning uses this)."""
    from recon.pipeline import merge_section, method_params, reconstruct, unusable_reason

    pipe_solver, prior_name, params = method_params(presets, solver, prior)
    if iters is not None:
        params["iters"] = int(iters)
    params = merge_section(params, overrides or {})
    rec = reconstruct(
        case.op, case.y, case.x0, pipe_solver, prior_name, params,
        reference=case.reference, data_range=case.data_range, noise_level=case.noise_level,
    )  # fmt: skip
    m = case.metrics(rec.x)
    h = rec.history
    return {
        **m,
        "iterations": rec.iterations,
        "converged": rec.converged,
        "stop_reason": rec.stop_reason,
        "unusable": unusable_reason(rec.record(), h),
        "iters_to_plateau": _plateau(h.get("psnr", [])),
        "best_psnr": max((v for v in h.get("psnr", []) if v is not None), default=None),
        "seconds": rec.seconds,
        "seconds_per_iter": rec.seconds / max(rec.iterations, 1),
        "params": {k: v for k, v in rec.params.items() if isinstance(v, int | float | str)},
        "history": {k: h.get(k, []) for k in ("psnr", "rel_change", "seconds")},
    }
