"""Compare FBP, TV-ADMM and PnP-ADMM with the shipped priors on one CT problem, each over a small
grid of its strength parameter (TV weight_rel or ADMM rho_rel); prints a markdown table.

    .venv/bin/python scripts/compare_ct.py --input phantom:shepp-logan --size 256 --views 60
    .venv/bin/python scripts/compare_ct.py --input bundled:ct-small --views 60
    .venv/bin/python scripts/compare_ct.py --input real-ct-val --views 90 --photons 1e5 \
        --methods tv ridge-ct aelpn-ct
    .venv/bin/python scripts/compare_ct.py --input bundled:ct-small --views 60 --noise 0.04 \
        --methods crr-ct --checkpoint runs/my-crr.safetensors --grid 0.05,0.1,0.2

``--input runs/lung-ct/lung2_image.nrrd --slice 30`` is a slice of the lung CT test volume
(``scripts/fetch_lung_ct.py``; never trained on). ``--input real-ct-val`` is the whole 512²
slice of pydicom-data the CT validation windows come from (a patient no prior was trained on).
Learned priors run with their preset's σ rule. PSNR and SSIM are `recon ct`'s: in the input's
units (HU for DICOM), against the input image (SSIM depends on the intensity convention).

Note: the grid is evaluated on the image it reports on (an oracle choice for every method alike);
`recon tune` is where parameters are chosen on separate validation images. ``--defaults`` runs
each method once at what ``recon ct`` would use (its preset and noise rules, chosen on
validation problems only), the same protocol for every method:

    .venv/bin/python scripts/compare_ct.py --input bundled:ct-small --noise 0.04 --defaults \
        --methods tv ridge-ct crr-ct aelpn-ct
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from recon.api import ct_problem
from recon.ct import load_ct_input
from recon.pipeline import (
    image_metrics,
    load_presets,
    merge_section,
    preset_prior_sigma,
    presets_for_prior,
    reconstruct,
    solve_with_presets,
)

GRIDS = {
    "tv": ("weight_rel", (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)),
    "ridge-ct": ("rho_rel", (0.003, 0.01, 0.03, 0.1, 0.3)),
    "crr-ct": ("rho_rel", (0.003, 0.01, 0.03, 0.1)),
    "aelpn-ct": ("rho_rel", (0.001, 0.003, 0.01, 0.03)),
    "lpn-ct": ("rho_rel", (0.001, 0.003, 0.01, 0.03)),
}


def _load(name: str, size: int, slice_index: int | None = None):
    if name == "real-ct-val":
        from recon.ct import CTInput
        from recon.tune.problems import ct_real_validation_slice

        scan = ct_real_validation_slice()
        return CTInput(np.asarray(scan.image, np.float32), scan.units, scan.pixel_size, name)
    return load_ct_input(name, size, slice_index)


def _score(pb, x: torch.Tensor) -> dict:
    """PSNR/SSIM of the internal image x as `recon ct` scores it: in the input's units (HU for
    DICOM), against the input image, data range its max − min (SSIM depends on the units)."""
    ref = pb.image
    return image_metrics(pb.to_units(x), ref, float(ref.max() - ref.min()))


def _at_defaults(method: str, args, pb) -> tuple:
    """One run of ``method`` as ``recon ct`` would run it: the shipped presets and noise rules
    (updated by ``--config`` as ``recon ct --config`` does)."""
    checkpoint = args.checkpoint
    prior = method if method == "tv" else checkpoint or method  # --prior tv: the one TV
    presets = load_presets("ct", args.config)
    if checkpoint and method != "tv":  # the weights run with the named prior's sections
        presets = presets_for_prior(presets, method)
    rec = solve_with_presets(presets, pb.op, pb.y, pb.x0, "pnp-admm", prior)
    key = "weight_rel" if method == "tv" else "rho_rel"
    used = rec.params.get(f"{key}_used", rec.params.get(key))
    setting = f"preset ({key}={used:.3g})"
    label = method if method == "tv" or not checkpoint else checkpoint
    return (label, setting, _score(pb, rec.x), rec.iterations, rec.seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default="phantom:shepp-logan")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument(
        "--slice", type=int, default=None, help="a DICOM series or NRRD volume: this slice"
    )
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--geometry", choices=("parallel", "fan"), default="parallel")
    ap.add_argument("--noise", type=float, default=0.01, help="Gaussian, relative")
    ap.add_argument("--photons", type=float, default=None, help="Poisson, incident photons")
    ap.add_argument(
        "--iters", type=int, default=40, help="ADMM iterations of the learned priors (TV: twice)"
    )
    ap.add_argument("--methods", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    ap.add_argument(
        "--grid", default=None, help="comma-separated values replacing each method's grid"
    )
    ap.add_argument(
        "--sigma-noise",
        type=float,
        default=None,
        help="σ-input priors: prior_sigma_noise instead of the preset's",
    )
    ap.add_argument(
        "--checkpoint",
        default=None,
        help="learned methods run these weights (a recon train checkpoint) with the named "
        "prior's preset and grid, e.g. --methods crr-ct --checkpoint runs/new.safetensors",
    )
    ap.add_argument(
        "--defaults",
        action="store_true",
        help="no grid: each method once with recon ct's defaults (presets and noise rules)",
    )
    ap.add_argument("--config", default=None, help="with --defaults: presets as recon ct --config")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    inp = _load(args.input, args.size, args.slice)
    pb = ct_problem(
        inp.image, units=inp.units, views=args.views, pixel_size=inp.pixel_size,
        noise=args.noise, photons=args.photons, seed=0, geometry=args.geometry,
    )  # fmt: skip
    op, y, x0 = pb.op, pb.y, pb.x0
    noise = f"{args.photons:g} photons" if args.photons is not None else f"noise {args.noise}"
    rows = [("FBP", "-", _score(pb, x0), 0, pb.fbp_seconds)]
    if args.defaults:
        rows += [_at_defaults(m, args, pb) for m in args.methods]
    for method in [] if args.defaults else args.methods:
        key, grid = GRIDS[method]
        if args.grid:
            grid = tuple(float(v) for v in args.grid.split(","))
        best = None
        for v in grid:
            if method == "tv":
                params = {
                    "weight_rel": v,
                    "rho_rel": 0.02,
                    "iters": 2 * args.iters,
                    "tol": 1e-5,
                    "cg_iters": 10,
                    "tv_iters": 50,
                }
                rec = reconstruct(op, y, x0, "tv", None, params)
            else:
                params = {"rho_rel": v, "iters": args.iters, "tol": 1e-4, "cg_iters": 10}
                params.update(preset_prior_sigma("ct", "pnp-admm", method))  # (σ-input priors)
                if args.sigma_noise is not None:
                    over = {"prior_sigma_noise": args.sigma_noise, "prior_sigma_rel": None}
                    params = merge_section(params, over)
                prior = args.checkpoint or method
                rec = reconstruct(op, y, x0, "pnp-admm", prior, params)
            m = _score(pb, rec.x)
            print(f"{method} {key}={v}: {m['psnr']:.2f} dB, {rec.seconds:.1f} s", file=sys.stderr)
            if best is None or m["psnr"] > best[2]["psnr"]:
                label = method if method == "tv" or not args.checkpoint else args.checkpoint
                best = (label, f"{key}={v}", m, rec.iterations, rec.seconds)
        rows.append(best)
    shape = f"{pb.image.shape[0]}×{pb.image.shape[1]}"
    print(f"{args.input} ({shape}), {args.geometry}, {args.views} views, {noise}")
    print("| method | best setting | PSNR (dB) | SSIM | iterations | seconds |")
    print("|---|---|---|---|---|---|")
    for name, setting, m, it, sec in rows:
        print(f"| {name} | {setting} | {m['psnr']:.2f} | {m['ssim']:.3f} | {it} | {sec:.1f} |")


if __name__ == "__main__":
    main()
