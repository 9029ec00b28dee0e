"""The one-call Python API: a problem, then its reconstruction.

    from recon.api import ct_problem, mri_problem, solve
    problem = ct_problem(hu_image, views=60, noise=0.01)          # HU in, HU out (units="auto")
    result = solve(problem, solver="pnp-admm", prior="aelpn-ct")  # presets, σ rule, ρ inside
    result.image, result.psnr, result.history
    mri = mri_problem(kspace, accel=4)     # (C, H, W) k-space, or a magnitude image + coils=
    solve(mri, solver="tv").image          # magnitude, cropped to the recon size

``ct_problem`` is the CT set-up `recon ct` runs for every slice: the image in normalized
attenuation u = (HU + 1000)/2500 (a.u. images as they are), ASTRA's projector, Gaussian
(``noise``, relative to max |sinogram|) or Poisson (``photons``) data seeded by ``seed``, and the
FBP start. ``solve`` runs a solver with the shipped presets (``recon/presets/ct.json``, a
``config`` file on top) exactly as `recon ct` does, and maps the result back to the input's
units; a warm start (``start=``) is in internal units: ``problem.from_units(image)``.
``mri_problem`` is `recon mri`'s set-up of one slice (mask, ESPIRiT maps checked against the
calibration data, the k-space noise measured in the corners, fastMRI's zero-filled baseline);
``solve`` on it runs the MRI presets as `recon mri` does and reports fastMRI's metrics on the
recon-size crop.

Speed: `recon` keeps freed memory for reuse (``recon.memory.retain_freed_memory``), which
nearly halves a 512² learned prox on glibc; a script that calls this API does the same with
``from recon.memory import retain_freed_memory; retain_freed_memory()`` once at its start.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recon.mri import MRIProblem

__all__ = ["CTProblem", "MRIProblem", "Result", "ct_problem", "mri_problem", "solve"]

DEFAULT_PRIOR = {"ct": "crr-ct", "mri": "ridge-mri"}  # the CLI's --prior defaults
MU_WATER_PER_MM = 0.02
HU_OFFSET, HU_SCALE = 1000.0, 2500.0  # u = (HU + 1000) / 2500


@dataclass
class CTProblem:
    """A simulated CT scan: ``op`` (the projector), data ``y``, the FBP image ``x0`` and the
    reference ``x_true`` (1, 1, H, W) in internal units, its ``data_range``, the input's
    ``units`` ('HU' or 'a.u.'), the ``noise`` that was added, the FBP's seconds and the input
    ``image`` (H, W) itself (the reference results are measured against)."""

    op: object
    y: torch.Tensor
    x0: torch.Tensor
    x_true: torch.Tensor
    data_range: float
    units: str
    noise: dict
    fbp_seconds: float
    image: np.ndarray

    def to_units(self, x: torch.Tensor) -> np.ndarray:
        """An internal image (1, 1, H, W) as (H, W) float32 in the input's units."""
        a = x[0, 0].detach().cpu().numpy().astype(np.float64)
        return (a * HU_SCALE - HU_OFFSET if self.units == "HU" else a).astype(np.float32)

    def from_units(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """An (H, W) image in the input's units as an internal image (1, 1, H, W) float32 on
        the problem's device, u = (HU + 1000)/2500 for HU (a.u.: as it is): the inverse of
        ``to_units``, e.g. for ``solve(problem, start=problem.from_units(image))``."""
        a = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
        if a.shape != self.image.shape:
            raise ValueError(f"expected an image of shape {self.image.shape}, got {a.shape}")
        a = a.astype(np.float64)
        u = (a + HU_OFFSET) / HU_SCALE if self.units == "HU" else a
        return torch.from_numpy(u.astype(np.float32))[None, None].to(self.x0.device)


@dataclass
class Result:
    """``image`` (H, W) float32 in the problem's units, its PSNR/SSIM against the reference
    (data range of the reference), the internal image ``x``, and the solver's record:
    ``params`` holds the settings used, ``solver`` (as asked, or the default chosen: 'fbp',
    'zero-filled', 'tv', 'pnp-admm', 'pnp-pgd') and ``algorithm`` (what ran it: 'fbp',
    'zero-filled', 'pnp-admm', 'pnp-pgd' or 'pnp-fista', the accelerated PGD).
    ``unusable``: why the image is not usable (the solver diverged, or it ended far from the
    data: `recon ct`/`recon mri` exit 3 then), else None; ``solve`` also warns then."""

    image: np.ndarray
    psnr: float
    ssim: float
    x: torch.Tensor
    iterations: int
    seconds: float
    converged: bool
    stop_reason: str
    params: dict
    history: dict = field(default_factory=dict)
    objective: str = ""
    unusable: str | None = None


def _checked(result: Result, record: dict) -> Result:
    """``result`` with ``unusable`` set from the run's record (``unusable_reason``), warning
    (RuntimeWarning) when the image is not usable, as `recon ct` does on stderr."""
    from recon.pipeline import unusable_reason

    result.unusable = unusable_reason(record, result.history)
    if result.unusable:
        warnings.warn(
            f"recon.api.solve: the image is not usable: {result.unusable}",
            RuntimeWarning,
            stacklevel=3,
        )
    return result


HU_TOO_SMALL = 10.0  # an image in HU whose values all lie within ±10 HU is not in HU
HU_BELOW = -100.0  # an image with values below this is in HU (attenuation is never negative)


AU_NEGATIVE_BELOW = -0.02  # × peak: an a.u. image this negative may be HU without air


def auto_units(image: np.ndarray, source: str = "the image", option: str = "units='HU'") -> str:
    """'HU' when ``image`` has values below ``HU_BELOW`` (−100; air is −1000 HU, attenuation is
    never negative), else 'a.u.': the rule of ``units='auto'`` here and of `recon ct --units`.
    An image read as a.u. that still goes below ``AU_NEGATIVE_BELOW`` × its peak (an HU crop
    inside the body, fat at −100 to −50 HU and no air) gets a warning naming ``option``."""
    lo, peak = float(np.min(image)), float(np.max(np.abs(image)))
    if lo < HU_BELOW:
        return "HU"
    if lo < AU_NEGATIVE_BELOW * peak:
        warnings.warn(
            f"{source}: read as attenuation-like a.u. (no value below {HU_BELOW:.0f}), yet it "
            f"goes down to {lo:.4g} and attenuation is never negative; if it is in HU (a crop "
            f"without air), pass {option}",
            stacklevel=3,
        )
    return "a.u."


def _device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; ValueError for a name torch does not know or for CUDA when
    no CUDA device is available (torch would fail later, inside the projector)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r}: not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: no CUDA device is available; use device='cpu'")
    return dev


def _check_op(op, shape: tuple[int, ...], **given) -> None:
    """ValueError unless ``op`` takes (1, 1, *shape) images and each scan setting in ``given``
    that is not None equals the op's own (an op without that attribute: any given is refused,
    it cannot apply)."""
    domain = tuple(getattr(op, "domain_shape", ()))
    if domain[-2:] != tuple(shape):
        raise ValueError(
            f"op: a projector for images of shape {domain[-2:]}, the image is {tuple(shape)}"
        )
    for name, value in given.items():
        if value is None:
            continue
        own = getattr(op, name, None)
        if isinstance(own, str) or own is None:
            same = own == value
        else:
            same = isinstance(value, numbers.Real) and np.isclose(own, value, rtol=1e-9, atol=0)
        if not same:
            has = "has none" if own is None else f"has {name}={own!r}"
            raise ValueError(
                f"{name}={value!r} with op=: the projector fixes the scan and {has}; leave "
                f"{name} out (or build op with it)"
            )


def ct_problem(
    image: np.ndarray | torch.Tensor,
    *,
    units: str = "auto",
    views: int | None = None,
    arc: float | None = None,
    geometry: str | None = None,
    pixel_size: float | None = None,
    noise: float = 0.01,
    photons: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    fbp_filter: str = "ram-lak",
    op=None,
) -> CTProblem:
    """Simulate a scan of ``image`` (H, W) in ``units`` ('HU', 'a.u.' or 'auto', the default:
    HU when it has values below −100, else a.u., as `recon ct`; ``problem.units`` says which
    was taken; HU are mapped to u = (HU + 1000)/2500): ``views`` projections
    over ``arc`` degrees (180 parallel, 360 fan), Gaussian noise of std ``noise`` × max|sinogram|
    or, with ``photons``, Poisson counts (μ = μ_water(1 + HU/1000) per mm, ``pixel_size`` mm).
    ``op``: a projector built before for images of this size (a series reuses one); it fixes
    the scan, so ``views`` (default 60), ``arc``, ``geometry`` (default 'parallel') and
    ``pixel_size`` (default 1) given with it must agree with it (ValueError otherwise)."""
    from data.ct_noise import add_gaussian_noise, add_poisson_noise
    from operators.ct import CTOperator
    from recon.pipeline import Timer

    if units not in ("auto", "HU", "a.u."):
        raise ValueError(f"units must be 'auto', 'HU' or 'a.u.', got {units!r}")
    if photons is None and not 0 <= noise <= 1:
        raise ValueError(f"noise={noise}: a fraction of the sinogram's largest value, 0 to 1")
    img = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image (H, W), got shape {img.shape}")
    if not np.isfinite(img).all():
        bad = int(np.size(img) - np.isfinite(img).sum())
        raise ValueError(f"the image holds {bad} NaN or infinite value(s): expected finite values")
    device = _device(device)
    if units == "auto":
        units = auto_units(img)
    peak = float(np.abs(img).max())
    if units == "HU" and peak < HU_TOO_SMALL:
        raise ValueError(
            f"units='HU', but every value is within ±{peak:.3g} (air is −1000 HU, bone above "
            "300): pass units='a.u.' for an image in attenuation-like units"
        )
    if units == "a.u." and photons is not None and float(img.min()) < -0.1 * peak:
        raise ValueError(
            f"photons: Poisson counts need attenuation ≥ 0, and this a.u. image goes down to "
            f"{float(img.min()):.4g}; pass units='HU' for an image in HU"
        )
    ref = (img.astype(np.float64) + HU_OFFSET) / HU_SCALE if units == "HU" else img
    ref = np.ascontiguousarray(ref, dtype=np.float32)
    if op is None:
        op = CTOperator(image_size=ref.shape, views=60 if views is None else views, arc=arc,
                        geometry=geometry or "parallel",
                        pixel_size=1.0 if pixel_size is None else pixel_size)  # fmt: skip
    else:
        _check_op(op, ref.shape, views=views, arc=arc, geometry=geometry, pixel_size=pixel_size)
    x_true = torch.from_numpy(ref)[None, None].to(device)
    clean = op.forward(x_true)
    if photons is not None:
        mu = MU_WATER_PER_MM * HU_SCALE / 1000.0 if units == "HU" else MU_WATER_PER_MM
        y = add_poisson_noise(clean, photons, seed=seed, mu_scale=mu)
        desc = {"type": "poisson", "photons": photons, "mu_scale": mu}
    else:
        y = add_gaussian_noise(clean, noise, seed=seed)
        desc = {"type": "gaussian", "rel": noise}
    with Timer() as t:
        x0 = op.fbp(y, filter=fbp_filter)
    drange = float(ref.max() - ref.min())
    return CTProblem(op, y, x0, x_true, drange, units, desc, t.seconds, img.astype(np.float32))


def mri_problem(
    data: np.ndarray,
    *,
    coils: int = 8,
    mask: str | np.ndarray = "random",
    accel: float = 4.0,
    center_fraction: float | None = None,
    seed: int = 0,
    reference: np.ndarray | None = None,
    recon_size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
) -> MRIProblem:
    """Undersample ``data``: fully sampled complex k-space (C, H, W) (``recon_size`` optional;
    ``reference`` by default fastMRI's: the RSS of its coil images, cropped to the recon size),
    or a real 2-D magnitude image simulated with ``coils`` coils
    (smooth random phase and birdcage maps seeded by ``seed``; the image is the reference).
    ``mask``: random | equispaced (fastMRI columns), poisson or radial; or your own, as an
    array of the measured columns (W,) or samples (H, W), 0/1, with a fully sampled centre for
    the coil maps. k-space that is already undersampled (zero outside the measured columns)
    needs its mask as an array, and has no default reference."""
    from data.fastmri import MAX_COILS, simulate_multicoil
    from recon.mri import measured_samples
    from recon.mri import mri_problem as build

    arr = np.asarray(data)
    if arr.ndim == 2 and not np.iscomplexobj(arr):
        if not np.isfinite(arr).all():
            raise ValueError("the image holds NaN or infinite values")
        arr, reference, _ = simulate_multicoil(np.abs(arr), coils, seed)
    elif arr.ndim != 3:
        raise ValueError(f"expected k-space (C, H, W) or a real 2-D image, got shape {arr.shape}")
    elif not np.iscomplexobj(arr):
        raise ValueError(
            f"a real {arr.shape} array: k-space (C, H, W) is complex; a magnitude image is 2-D"
        )
    elif arr.shape[0] > MAX_COILS and arr.shape[-1] < arr.shape[0] // 4:
        raise ValueError(
            f"k-space of shape {arr.shape} reads as {arr.shape[0]} coils of {arr.shape[1]}×"
            f"{arr.shape[2]}: is it (H, W, C)? k-space is (C, H, W): np.moveaxis(k, -1, 0)"
        )
    elif (got := measured_samples(arr)) is not None:
        if isinstance(mask, str):
            what = "columns" if got.ndim == 1 else "samples"
            raise ValueError(
                f"k-space already undersampled ({int(got.sum())} of {got.size} {what} hold "
                f"data) and mask={mask!r} would undersample it again: pass what was measured, "
                "mask=recon.mri.measured_samples(kspace)"
            )
    elif reference is None:
        from data.peer_mri import rss_center

        # fully sampled k-space: fastMRI's reference, the RSS of its coil images
        reference = rss_center(arr, tuple(recon_size or arr.shape[-2:]))
    return build(
        arr.astype(np.complex64), reference=reference, recon_size=recon_size, mask=mask,
        accel=accel, center_fraction=center_fraction, seed=seed, device=device,
    )  # fmt: skip


MRI_SOLVERS = ("zero-filled", "tv", "pnp-admm", "pnp-pgd")


def _solve_mri(
    problem: MRIProblem, solver: str, prior, config, iters, tol, progress, strength
) -> Result:
    from data.fastmri import center_crop, evaluate
    from recon.mri import solve_mri
    from recon.pipeline import SolveOptions, load_presets

    if not problem.maps_usable:
        solver = "zero-filled"  # as `recon mri` does (it also warns): SENSE does not fit
    presets = load_presets("mri", config) if solver != "zero-filled" else {}
    options = SolveOptions(iters=iters, tol=tol, strength=strength, progress=progress)
    x, record, history, seconds = solve_mri(problem, solver, prior, presets, options=options)
    image = center_crop(np.abs(x), problem.recon_size).astype(np.float32)
    m = {"psnr": float("nan"), "ssim": float("nan")}
    if problem.reference is not None:
        m = evaluate(center_crop(problem.reference, problem.recon_size), image)
    result = Result(image=image, psnr=m["psnr"], ssim=m["ssim"],
                    x=torch.from_numpy(x)[None, None], iterations=record["iterations"],
                    seconds=seconds, converged=record["converged"],
                    stop_reason=record["stop_reason"], history=history,
                    params={**record["params"], "solver": solver,
                            "algorithm": _ran(solver, record)},
                    objective=record.get("objective", ""))  # fmt: skip
    return _checked(result, record)


def solve(
    problem: CTProblem | MRIProblem,
    solver: str | None = None,
    prior: str | Path | None = None,
    *,
    config: str | Path | None = None,
    iters: int | None = None,
    tol: float | None = None,
    start: torch.Tensor | None = None,
    progress: bool = False,
    strength: float = 1.0,
) -> Result:
    """Reconstruct ``problem`` with ``solver`` ('pnp-admm', 'pnp-pgd', 'tv' or 'fbp') and
    ``prior`` (a shipped name, a checkpoint path or 'tv'; ignored by 'tv' and 'fbp') using the
    shipped presets (``config``: a JSON file of overrides, as `recon ct --config`), with the
    presets' σ rule and step sizes relative to the operator. ``start``: a warm start
    instead of the FBP image, (1, 1, H, W) in internal units (u = (HU + 1000)/2500 for HU, a.u.
    as they are; ``problem.x0`` and ``Result.x`` are in them): ``problem.from_units(image)``
    converts an image in the input's units, as ``result.image`` is.

    ``prior`` None: the modality's default (``DEFAULT_PRIOR``, as `recon ct`/`recon mri`);
    ``solver`` None: 'pnp-admm', or for MRI the prior's (``recon.mri.default_solver``). An
    ``MRIProblem``: ``solver`` 'zero-filled', 'tv', 'pnp-admm' or 'pnp-pgd' with the MRI presets;
    the image is the magnitude cropped to the recon size, PSNR/SSIM fastMRI's.

    ``strength``: × the regularizer's weight the presets' rules give (TV's weight, or ρ of a
    prior's problem, for every solver alike; ``recon.pipeline.reconstruct``), as `recon mri
    --strength`."""
    given = {"config": config, "prior": prior, "solver": solver, "iters": iters, "tol": tol}
    given["strength"] = None if strength == 1.0 else strength
    _warn_unused(solver, prior, {**given, "start": start})
    try:
        return _solve(problem, solver, prior, config, iters, tol, start, progress, strength)
    except ValueError as exc:  # CheckpointError too: its type is kept
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (keyword_message(exc.args[0], given), *exc.args[1:])
        raise


def _warn_unused(solver: str | None, prior, given: dict) -> None:
    """Warn (UserWarning) about keywords ``solver`` does not read, as `recon ct` warns about
    its options (``recon.pipeline.unused_options``): a prior other than 'tv' with 'tv', 'fbp' or
    'zero-filled'; iters, tol, strength and start with the closed forms 'fbp' and
    'zero-filled'."""
    from recon.pipeline import unused_options

    names = {k for k, v in given.items() if v is not None}
    unused = [u.split()[0].lstrip("-") for u in unused_options(solver, prior, names)]
    if solver in ("fbp", "zero-filled") and "start" in names:
        unused.append("start")
    if unused:
        what = "TV is its regularizer" if solver == "tv" else "a closed form"
        warnings.warn(
            f"recon.api.solve: {', '.join(unused)} not used by solver={solver!r} ({what})",
            UserWarning,
            stacklevel=3,
        )


def _ran(solver: str, record: dict) -> str:
    """The algorithm that ran ``solver``: 'fbp' or 'zero-filled' (closed forms), else the
    iterative solver (TV's too): 'pnp-admm', 'pnp-pgd' or, accelerated, 'pnp-fista'."""
    if solver in ("fbp", "zero-filled"):
        return solver
    run = record.get("solver_run") or solver
    return "pnp-fista" if run == "pnp-pgd" and record["params"].get("accelerated") else run


FLAGS = ("config", "prior", "solver", "iters", "tol", "strength")


def keyword_message(message: str, given: dict) -> str:
    """An error of the code `recon ct`/`recon mri` share (``recon.pipeline``) in the words of
    this API: ``--config PATH`` becomes ``config='PATH'``, ``--solver X`` ``solver='X'``, a bare
    ``--prior`` ``prior=``, and ``parameter 'iters'`` (or 'tol', 'strength') the keyword when
    that keyword was given (else it came from the presets or the config file)."""
    import re

    for key, value in given.items():
        if value is not None:
            message = message.replace(f"--{key} {Path(value) if key == 'config' else value}",
                                      f"{key}={str(value)!r}")  # fmt: skip
            message = message.replace(f"parameter {key!r}", key)
    message = re.sub(r"--solver ([\w-]+)", r"solver='\1'", message)
    return re.sub(rf"--({'|'.join(FLAGS)})(?![\w-])", r"\1=", message)


def _solve(problem, solver, prior, config, iters, tol, start, progress, strength) -> Result:
    from recon.pipeline import SolveOptions, fbp_reconstruction, load_presets, solve_with_presets
    from solvers.metrics import image_metrics

    if isinstance(problem, MRIProblem):
        from recon.mri import default_solver

        prior = DEFAULT_PRIOR["mri"] if prior is None else prior
        solver = default_solver(prior) if solver is None else solver
        if solver not in MRI_SOLVERS:
            raise ValueError(
                f"solver {solver!r} for an MRI problem: one of {', '.join(MRI_SOLVERS)}"
            )
        if start is not None:
            raise ValueError("start: not supported for MRI problems")
        return _solve_mri(problem, solver, prior, config, iters, tol, progress, strength)

    prior = DEFAULT_PRIOR["ct"] if prior is None else prior
    solver = "pnp-admm" if solver is None else solver
    presets = load_presets("ct", config)
    if solver == "fbp":
        rec = fbp_reconstruction(problem.x0, problem.fbp_seconds, presets)
    else:
        rec = solve_with_presets(
            presets, problem.op, problem.y, problem.x0, solver,
            None if solver == "tv" else prior, reference=problem.x_true,
            data_range=problem.data_range, start=start,
            options=SolveOptions(iters=iters, tol=tol, strength=float(strength), progress=progress),
        )  # fmt: skip
    ref = problem.image
    image = problem.to_units(rec.x)
    m = image_metrics(image, ref, float(ref.max() - ref.min()))
    result = Result(image=image, psnr=m["psnr"], ssim=m["ssim"], x=rec.x.detach(),
                    iterations=rec.iterations, seconds=rec.seconds, converged=rec.converged,
                    stop_reason=rec.stop_reason, history=rec.history,
                    params={**rec.params, "solver": solver,
                            "algorithm": _ran(solver, rec.record())},
                    objective=rec.objective)  # fmt: skip
    return _checked(result, rec.record())
