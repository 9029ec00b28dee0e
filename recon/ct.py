"""`recon ct`: simulate sparse-view / limited-angle CT from an image and reconstruct it.

Input (``--input``): a DICOM file, a DICOM series folder, an NRRD (``.nrrd``/``.nhdr``) or NIfTI
(``.nii``/``.nii.gz``) volume in HU (every slice, or ``--slice K|A:B``), a ``.npy`` image,
``phantom:shepp-logan`` / ``phantom:ellipses`` (``--size N``), or ``bundled:ct-small`` (the real
CT slice pydicom ships; the demo slice, never trained on).

Units: DICOM input is in HU. Internally the reconstruction works in normalized attenuation
u = (HU + 1000)/2500 (air 0, water 0.4, dense bone ≈ 1: the [0, 1]-like range the shipped priors
were trained in, which a non-equivariant LPN needs; an AE-LPN gives the same result in any affine
convention), projections are line integrals in mm·u (pixel spacing from the file), and Poisson
noise uses μ = 2.5·μ_water per mm·u with μ_water = 0.02/mm. Outputs are mapped back to HU.
Other inputs are taken as attenuation-like values in their own units (pixel size 1).

Writes into ``--out``: recon.npy (float32, input units), recon.png, metrics.json, history.json,
convergence.png, comparison.png (reference, FBP, reconstruction, |error|); for a DICOM series
or a volume also recon.nii.gz (the DICOM geometry) and dicom/ (a derived series in HU).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.dicom import CTVolume
from data.nifti import is_nifti
from data.nrrd import is_nrrd
from recon.api import HU_OFFSET, HU_SCALE, auto_units
from recon.argtypes import count, number
from recon.outputs import prepare_out_dir, start_outputs, write_outputs
from recon.pipeline import (
    GivenStore,
    SolveOptions,
    add_solver_arguments,
    device_for,
    exit_status,
    fbp_reconstruction,
    image_metrics,
    load_presets,
    set_threads,
    solve_with_presets,
    versions,
    warn_about_run,
    warn_unused_options,
)


@dataclass
class CTInput:
    image: np.ndarray  # (H, W) float32, in the input's units
    units: str  # "HU" or "a.u."
    pixel_size: float  # mm (1.0 when unknown)
    source: str


def phantom_size(args: argparse.Namespace) -> int:
    """``--size`` (default 256) for a ``phantom:`` input; ValueError when it is given for an
    input that has its own size (it would be ignored)."""
    size = getattr(args, "size", None)
    if size is not None and not str(args.input).startswith("phantom:"):
        raise ValueError(
            f"--size {size}: only phantom: inputs are made at a chosen size; {args.input} is "
            "reconstructed at its own"
        )
    return 256 if size is None else int(size)


NPY_UNITS = ("auto", "HU", "a.u.")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


def npy_units(image: np.ndarray, units: str, source: str) -> str:
    """The units of a ``.npy`` image: ``units`` when 'HU' or 'a.u.', else (auto) HU when it has
    values below −100 (air is −1000 HU; attenuation-like values are never negative), else a.u.
    Auto-detected HU is said on stderr, with the option that overrides it; a.u. that go
    negative get a warning (``recon.api.auto_units``)."""
    if units not in NPY_UNITS:
        raise ValueError(f"--units {units}: expected one of {', '.join(NPY_UNITS)}")
    if units != "auto":
        return units
    if auto_units(image, source, "--units HU") == "HU":
        lo = float(image.min())
        print(
            f"{source}: read as HU (values down to {lo:.0f}); --units a.u. for "
            "attenuation-like values",
            file=sys.stderr,
        )
        return "HU"
    return "a.u."


def check_units_option(spec: str, units: str | None) -> None:
    """ValueError when ``--units`` is given for an input that carries its own units."""
    if units is not None and not str(spec).lower().endswith(".npy"):
        raise ValueError(
            f"--units {units}: only a .npy image takes its units from this option; {spec} "
            "carries its own (DICOM, NRRD, NIfTI: HU; phantoms: a.u.)"
        )


def load_ct_input(
    spec: str,
    size: int = 256,
    slice_index: int | None = None,
    seed: int = 0,
    units: str | None = None,
) -> CTInput:
    """The image of ``spec`` with its units and pixel size. ``units`` (auto, HU, a.u.) applies to
    ``.npy`` images only (``npy_units``); other inputs carry their own units, and giving it for
    them is refused (it would be ignored)."""
    check_units_option(spec, units)
    if spec.startswith("phantom:"):
        from data.phantoms import random_ellipses, shepp_logan

        name = spec.split(":", 1)[1]
        if name == "shepp-logan":
            img = shepp_logan(size)
        elif name == "ellipses":
            img = random_ellipses(size, seed=seed)
        else:
            raise ValueError(f"--input {spec}: unknown phantom {name!r} (shepp-logan, ellipses)")
        return CTInput(np.asarray(img, np.float32), "a.u.", 1.0, spec)
    if spec.startswith("bundled:"):
        from data.bundled import load_bundled

        sl = load_bundled(spec.split(":", 1)[1])
        return CTInput(np.asarray(sl.hu, np.float32), "HU", float(sl.pixel_spacing[0]), spec)
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"--input {path}: no such file or folder")
    if path.suffix.lower() == ".npy":
        from data.npy import load_npy_image

        img = load_npy_image(path).astype(np.float32)
        return CTInput(img, npy_units(img, units or "auto", str(path)), 1.0, str(path))
    from data.dicom import read_dicom_file

    if path.suffix.lower() in PICTURE_SUFFIXES:
        raise ValueError(
            f"--input {path}: a picture file holds no CT units; give a DICOM file or series, an "
            "NRRD or NIfTI volume, or the image as .npy (np.save; HU or attenuation-like, --units)"
        )
    if path.is_dir() or is_volume_file(path):
        vol = read_ct_volume(path)
        k = len(vol.hu) // 2 if slice_index is None else slice_index
        if not 0 <= k < len(vol.hu):
            raise ValueError(f"--slice {k}: the volume {path} has {len(vol.hu)} slices")
        return CTInput(
            np.asarray(vol.hu[k], np.float32), "HU", float(vol.pixel_spacing[0]), f"{path}[{k}]"
        )
    sl = read_dicom_file(path)
    return CTInput(np.asarray(sl.hu, np.float32), "HU", float(sl.pixel_spacing[0]), str(path))


def to_internal(img: np.ndarray, units: str) -> np.ndarray:
    return (img + HU_OFFSET) / HU_SCALE if units == "HU" else img


def from_internal(x: np.ndarray, units: str) -> np.ndarray:
    return x * HU_SCALE - HU_OFFSET if units == "HU" else x


def parse_window(spec: str | None, ref: np.ndarray, units: str) -> tuple[float, float]:
    """Display range (lo, hi): a named/explicit CT window, else the reference's range."""
    if spec:
        from data.windows import parse_window as parse

        level, width = parse(spec)
        return level - width / 2, level + width / 2
    return float(ref.min()), float(ref.max())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ct",
        help="simulate and reconstruct CT",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input",
        required=True,
        help="a DICOM file or series folder, an NRRD or NIfTI volume (HU), a .npy image, "
        "phantom:shepp-logan, phantom:ellipses or bundled:ct-small",
    )
    p.add_argument(
        "--slice",
        "--slices",
        dest="slice",
        default=None,
        help="slices of a DICOM series folder or an NRRD/NIfTI volume: K, A:B (A..B-1) or all "
        "(default: all; each slice starts from its neighbour's result, and a killed run resumes)",
    )
    add_options(p)


MAX_SIZE = 4096  # a 4096² phantom and its sinogram take ~1 GiB; 100000² would take 75 GiB


def add_options(p: argparse.ArgumentParser) -> None:
    """The `recon ct` options other than --input/--slice (shared with `recon batch ct`)."""
    p.add_argument(
        "--size", type=count(8, MAX_SIZE, " (a phantom's pixels per side)"), default=None,
        help="a phantom: input's pixels per side (default 256); other inputs keep their own size",
    )  # fmt: skip
    p.add_argument(
        "--units",
        choices=NPY_UNITS,
        default=None,
        help="a .npy image's units (default auto: HU when it has values below -100, else "
        "attenuation-like a.u.); DICOM, NRRD and NIfTI inputs are HU",
    )
    p.add_argument(
        "--geometry", choices=["parallel", "fan"], default="parallel", help="(default parallel)"
    )
    p.add_argument(
        "--views", type=count(1, 100_000), default=60, help="projection angles (default 60)"
    )
    p.add_argument(
        "--arc",
        type=number(0, 360, lo_open=True),
        default=None,
        help="degrees (default 180 parallel, 360 fan)",  # fmt: skip
    )
    p.add_argument(
        "--projection-matrix",
        choices=["auto", "on", "off"],
        default="auto",
        help="project with ASTRA's sparse matrix of the projector (about 2× faster per call, "
        "multi-threaded) or its FP/BP algorithms; auto (the default): the matrix when it fits "
        "in 1.5 GiB",
    )
    noise = p.add_mutually_exclusive_group()
    noise.add_argument(
        "--noise",
        type=number(0, 1),
        default=0.01,
        metavar="REL",
        help="Gaussian, std = REL × max|sinogram|, 0 to 1 (default 0.01)",
    )
    noise.add_argument(
        "--photons",
        type=number(0, lo_open=True),
        default=None,
        help="Poisson, incident photons (instead of --noise)",
    )
    p.add_argument(
        "--solver",
        choices=["pnp-admm", "pnp-pgd", "fbp", "tv"],
        default="pnp-admm",
        help="(default pnp-admm)",
    )
    p.add_argument(
        "--prior",
        action=GivenStore,
        default="crr-ct",
        help="crr-ct (the exact prox of a learned convex regularizer; the default) | ridge-ct "
        "(firmly nonexpansive, closed form; 2.5-3x faster) | aelpn-ct | lpn-ct | tv | "
        "CHECKPOINT",
    )
    p.add_argument(
        "--window",
        default=None,
        help="PNG window: lung, mediastinum, bone, brain or L,W (default: the reference's range)",
    )
    add_solver_arguments(p, "ct")


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    prepare_out_dir(args.out, inputs=(args.input,))
    warn_unused_options(args)
    return exit_status(reconstruct_input(args, Path(args.out)))


@dataclass
class CTSliceRecon:
    """One simulated and reconstructed slice: images in the input's units (H, W) float32, the
    reconstruction in internal units (1, 1, H, W) (a neighbour's warm start), the solver's record
    and history, seconds of the solver and of FBP, and the noise that was added."""

    image: np.ndarray
    fbp: np.ndarray
    internal: torch.Tensor
    record: dict
    history: dict
    seconds: float
    fbp_seconds: float
    noise: dict


def ct_operator(args: argparse.Namespace, shape: tuple[int, int], pixel_size: float):
    """The scan the `recon ct` options describe, for images of ``shape`` with ``pixel_size``."""
    from operators.ct import CTOperator

    return CTOperator(
        image_size=shape,
        views=args.views,
        arc=args.arc,
        geometry=args.geometry,
        pixel_size=pixel_size,
        matrix={"auto": None, "on": True, "off": False}[getattr(args, "projection_matrix", "auto")],
    )


def reconstruct_slice(
    args: argparse.Namespace,
    image: np.ndarray,
    units: str,
    op,
    presets: dict,
    seed: int,
    start: torch.Tensor | None = None,
) -> CTSliceRecon:
    """Simulate the scan of ``image`` (input units) with noise seeded by ``seed``
    (``recon.api.ct_problem``), and reconstruct it with ``args.solver`` (FBP start; the solver's
    iterations start from ``start`` when given, in internal units)."""
    from recon.api import ct_problem

    pb = ct_problem(
        image, units=units, noise=args.noise, photons=args.photons, seed=seed,
        device=device_for(args.device), fbp_filter=presets.get("fbp", {}).get("filter", "ram-lak"),
        op=op,
    )  # fmt: skip
    if args.solver == "fbp":
        rec = fbp_reconstruction(pb.x0, pb.fbp_seconds, presets)
    else:
        start = start.to(pb.x0) if start is not None else None
        rec = solve_with_presets(
            presets, op, pb.y, pb.x0, args.solver, args.prior, reference=pb.x_true,
            data_range=pb.data_range, start=start, options=SolveOptions.from_args(args),
        )  # fmt: skip
    return CTSliceRecon(
        pb.to_units(rec.x), pb.to_units(pb.x0), rec.x.detach(), rec.record(), rec.history,
        rec.seconds, pb.fbp_seconds, pb.noise,
    )  # fmt: skip


def run_metrics(args: argparse.Namespace, record: dict, op, units: str, source: str) -> dict:
    """What metrics.json says about the run besides image quality."""
    return dict(
        iterations=record["iterations"],
        converged=record["converged"],
        stop_reason=record["stop_reason"],
        solver=args.solver,
        prior=None if args.solver in ("fbp", "tv") else args.prior,
        parameters=record["params"],
        objective=record.get("objective", ""),
        start_data_fidelity=record.get("start_data_fidelity"),
        norm_ratio=record.get("norm_ratio"),
        input=source,
        units=units,
        geometry=op.describe(),
        seed=args.seed,
        device=args.device,
        versions=versions(),
    )


def method_label(args: argparse.Namespace) -> str:
    return args.solver if args.solver in ("fbp", "tv") else f"{args.solver} + {args.prior}"


def reconstruct_input(args: argparse.Namespace, out: Path) -> dict:
    """Reconstruct ``args.input`` with the `recon ct` options in ``args``; write the output
    files into ``out`` (metrics.json last) and return the metrics. A DICOM series folder goes
    to ``recon.ct_series.reconstruct_series`` (every slice, or those ``--slice`` selects)."""
    size = phantom_size(args)  # refuses --size for inputs with their own size, series too
    if _is_series(args.input):
        from recon.ct_series import reconstruct_series

        check_units_option(args.input, getattr(args, "units", None))  # (files: load_ct_input)

        return reconstruct_series(args, Path(out))
    if args.slice is not None:
        raise ValueError(
            f"--slice {args.slice}: --input {args.input} is a single image; --slice selects "
            "slices of a DICOM series folder or an NRRD/NIfTI volume"
        )
    out = Path(out)
    inp = load_ct_input(args.input, size, None, args.seed, getattr(args, "units", None))
    check_image_size(args.input, inp.image.shape)
    if float(inp.image.max()) == float(inp.image.min()):
        raise ValueError(
            f"--input {args.input}: a constant image (every pixel {float(inp.image.min()):g}): "
            "its simulated scan holds no structure, and PSNR/SSIM need a range"
        )
    op = ct_operator(args, inp.image.shape, inp.pixel_size)
    presets = load_presets("ct", args.config)
    r = reconstruct_slice(args, inp.image, inp.units, op, presets, args.seed)
    ref = inp.image
    drange = float(ref.max() - ref.min())
    metrics = image_metrics(r.image, ref, drange)
    fbp_metrics = image_metrics(r.fbp, ref, drange)
    metrics.update(seconds=r.seconds)
    metrics.update(run_metrics(args, r.record, op, inp.units, inp.source))
    metrics.update(baseline={"name": "fbp", **fbp_metrics, "seconds": r.fbp_seconds}, noise=r.noise)
    label = method_label(args)
    display = parse_window(args.window, ref, inp.units)
    metrics["display"] = display_record(args.window, display, inp.units)
    warn_about_run(r.record, r.history, metrics)
    start_outputs(out, writes=())  # a volume's or an MRI run's files from before go
    write_outputs(out, r.image, ref, ("FBP", r.fbp), metrics, r.history, f"CT {label}", display)
    if not args.quiet:
        w = metrics.get("parameters", {}).get("weight_rel_used")
        tv_note = "" if w is None else f", TV weight_rel {w:.3g} from the noise"
        print(
            f"{label}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} "
            f"(FBP {fbp_metrics['psnr']:.2f} dB), {r.record['iterations']} iterations, "
            f"{r.seconds:.1f} s, {r.record['stop_reason']}{tv_note} -> {out}/"
        )
    return metrics


def display_record(window: str | None, display: tuple[float, float], units: str) -> dict:
    """What metrics.json says about the PNGs' grey scale: the ``--window`` asked for (None: the
    reference's range), the (lo, hi) it gave and their units."""
    return {"window": window, "range": [float(display[0]), float(display[1])], "units": units}


MIN_SIZE = 8  # the smallest image side recon ct reconstructs


def check_image_size(spec: str | Path, shape: tuple[int, ...], what: str = "image") -> None:
    """ValueError naming ``--input spec`` when images of ``shape`` (H, W) are under
    ``MIN_SIZE`` on a side (``what``: "image", or "slices" for a volume's)."""
    h, w = shape[-2:]
    if min(h, w) < MIN_SIZE:
        size = f"a {h}×{w} image" if what == "image" else f"{h}×{w} {what}"
        raise ValueError(f"--input {spec}: {size}; recon ct needs at least {MIN_SIZE}×{MIN_SIZE}")


def is_volume_file(path: str | Path) -> bool:
    """An NRRD or NIfTI file: a CT volume in HU."""
    return is_nrrd(path) or is_nifti(path)


def _is_series(spec: str) -> bool:
    """A DICOM series folder or an NRRD or NIfTI volume (reconstructed slice by slice)."""
    if spec.startswith(("phantom:", "bundled:")):
        return False
    return Path(spec).is_dir() or is_volume_file(spec)


def read_ct_volume(path: str | Path) -> CTVolume:
    """A CT volume in HU: an NRRD file (``data.nrrd``), a NIfTI file (``data.nifti``) or a
    DICOM series folder."""
    from data.dicom import read_dicom_series
    from data.nifti import read_nifti_volume
    from data.nrrd import read_nrrd_volume

    if is_nrrd(path):
        return read_nrrd_volume(path)
    return read_nifti_volume(path) if is_nifti(path) else read_dicom_series(path)
