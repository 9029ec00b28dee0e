"""PnP-ADMM with one prior over a list of rho_rel, on the real CT validation windows, the test
slice or a Shepp–Logan phantom (one of ``recon.tune.problems.PROBLEMS``, default 60 parallel views
and 1 % Gaussian noise).

    .venv/bin/python scripts/probe_ct_prior.py --prior runs/my-prior.safetensors --on val
    .venv/bin/python scripts/probe_ct_prior.py --prior aelpn-ct --rho 0.03 --on test
    .venv/bin/python scripts/probe_ct_prior.py --prior aelpn-ct --on shepp-logan --size 128
    .venv/bin/python scripts/probe_ct_prior.py --prior aelpn-ct --on val-phantoms
    .venv/bin/python scripts/probe_ct_prior.py --prior runs/p.safetensors --tile 64 --tile-stride 32
    .venv/bin/python scripts/probe_ct_prior.py --prior aelpn-ct --local-mean 8
    .venv/bin/python scripts/probe_ct_prior.py --prior aelpn-ct --denoise 0.05,0.1,0.2
    .venv/bin/python scripts/probe_ct_prior.py --prior aelpn-ct --denoise 0.03,0.1 --with-tv \
        --told 0.8,1,1.3,1.6 --on val-phantoms
    .venv/bin/python scripts/probe_ct_prior.py --prior runs/ni.safetensors --sigma-rel 0.05,0.1
    .venv/bin/python scripts/probe_ct_prior.py --prior tv --rho 0.02,0.04,0.07   # TV weight_rel

For training choices (σ, architecture, fine-tuning): choose with ``--on val`` (the four real
windows of ``recon tune ct --val real-ct``, a patient never trained on); ``--on test`` is the
bundled slice, the toolkit's test image, to report on, not to choose by. The problems are built
by ``recon.tune.problems.build_case`` and solved by ``run_method`` with the shipped CT presets, as
``recon bench grid`` and ``recon tune`` do. One JSON line per rho_rel (the mean over the scans,
and each scan's PSNR); for a prior that takes the noise level, per (prior_sigma_rel, rho_rel).
``--denoise`` measures one prox of the noisy scans instead (such a prior is told c·σ, ``--told``),
``--with-tv`` beside the TV prox at its best weight.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from priors.checkpoint import save_rebuilt
from recon.ct import load_ct_input
from recon.pipeline import load_presets
from recon.tune.problems import (
    PROBLEMS,
    Scan,
    build_case,
    ct_real_validation_scans,
    ct_real_validation_slice,
    ct_test_scans,
    ct_validation_scans,
    run_method,
)
from solvers.metrics import psnr


def scans_for(on: str, size: int) -> list[Scan]:
    if on == "val":
        return ct_real_validation_scans()
    if on == "test":
        return ct_test_scans(n_phantoms=0)  # the bundled slice
    if on == "train-windows":  # 128² windows of the real slices priors train on (fit, not skill)
        from data.training_sets import real_ct_slices

        corners = ((192, 192), (256, 128))
        return [
            Scan(f"train{i}-r{r}c{c}", np.ascontiguousarray(im[r : r + size, c : c + size]))
            for i, im in enumerate(real_ct_slices())
            for r, c in corners
        ]
    if on == "val-phantoms":  # seeded ellipse phantoms of recon tune ct's synthetic validation
        return ct_validation_scans(size)
    if on == "val-slice":  # the whole 512² slice the validation windows come from
        return [ct_real_validation_slice()]
    inp = load_ct_input("phantom:shepp-logan", size=size)
    return [Scan(on, inp.image, inp.units, inp.pixel_size)]


def _noisy_scans(scans: list[Scan], sigma: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(clean, noisy) pairs: each scan scaled to [0, 1] (the LPN is not scale-equivariant; the
    AE-LPN does not care) plus Gaussian noise of std σ, seeded per scan."""
    pairs = []
    for i, scan in enumerate(scans):
        x = torch.as_tensor(np.asarray(scan.image, dtype=np.float32))[None, None]
        x = (x - x.min()) / (x.max() - x.min())
        gen = torch.Generator().manual_seed(i)
        pairs.append((x, x + sigma * torch.randn(x.shape, generator=gen)))
    return pairs


def _mean_psnr(denoise, pairs) -> float:
    """Mean PSNR over (clean, noisy) pairs of images scaled to [0, 1] (data range 1)."""
    return float(np.mean([psnr(denoise(v), x, 1.0) for x, v in pairs]))


def denoise_row(
    prior: str, scans: list[Scan], sigmas: list[float], told: list[float], tv: bool
) -> dict[str, dict]:
    """Mean PSNR (dB) of one prox f(x + n) over ``scans`` per σ: the prior (one that takes the
    noise level told c·σ for each c in ``told``, best kept) and, with ``tv``, the TV prox at the
    best weight w·σ of a grid (an oracle choice per σ, so TV gets the better of the two deals)."""
    from priors.checkpoint import load_prior
    from priors.classical import TVPrior
    from priors.lpn import takes_noise_level, told_noise_level

    model = load_prior(prior)
    rows: dict[str, dict] = {"prior": {}, **({"tv": {}} if tv else {})}
    for sigma in sigmas:
        pairs = _noisy_scans(scans, sigma)
        if takes_noise_level(model):
            best = []
            for c in told:
                with told_noise_level(model, c * sigma):
                    best.append((_mean_psnr(model.prox, pairs), c))
            top, c = max(best)
            rows["prior"][str(sigma)] = {"psnr": round(top, 2), "told": c}
        else:
            rows["prior"][str(sigma)] = {"psnr": round(_mean_psnr(model.prox, pairs), 2)}
        if tv:
            grid = [
                (_mean_psnr(TVPrior(weight=w * sigma, iters=100).prox, pairs), w)
                for w in (0.3, 0.5, 0.7, 1.0, 1.4, 2.0)
            ]
            top, w = max(grid)
            rows["tv"][str(sigma)] = {"psnr": round(top, 2), "weight_over_sigma": w}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="aelpn-ct", help="shipped name or checkpoint")
    ap.add_argument("--rho", default="0.01,0.03,0.1", help="comma-separated rho_rel values")
    ap.add_argument(
        "--solver",
        default="pnp-admm",
        choices=["pnp-admm", "pnp-fista"],
        help="pnp-fista: --rho lists step_rel values instead (the shipped pnp-pgd preset, "
        "accelerated)",
    )
    ap.add_argument(
        "--on",
        default="val",
        choices=["val", "val-phantoms", "val-slice", "train-windows", "test", "shepp-logan"],
    )
    ap.add_argument("--size", type=int, default=128, help="Shepp–Logan size")
    ap.add_argument("--problem", default="ct-par60", choices=[p for p in PROBLEMS if "ct" in p])
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--noise", type=float, default=0.01, help="CT Gaussian noise (× max|sinogram|)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tile", type=int, default=None, help="evaluate the prior tiled (AE-LPN)")
    ap.add_argument("--tile-stride", type=int, default=None)
    ap.add_argument(
        "--local-mean", type=float, default=None, help="evaluate with a local mean split (σ px)"
    )
    ap.add_argument(
        "--denoise",
        default=None,
        help="instead of PnP: one prox of the noisy scans at these comma-separated σ (× range)",
    )
    ap.add_argument(
        "--told",
        default="1",
        help="with --denoise, a prior that takes the noise level is told c·σ for these "
        "comma-separated c (the best is reported)",
    )
    ap.add_argument(
        "--with-tv", action="store_true", help="with --denoise, also the TV prox (best weight)"
    )
    ap.add_argument(
        "--sigma-rel",
        default=None,
        help="for a prior that takes the noise level: comma-separated prior_sigma_rel values",
    )
    ap.add_argument(
        "--sigma-noise",
        default=None,
        help="... or comma-separated prior_sigma_noise values (σ = C × the start image's noise "
        "estimate), with --sigma-floor as prior_sigma_rel",
    )
    ap.add_argument("--sigma-floor", type=float, default=None, help="prior_sigma_rel floor")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    prior = args.prior
    changes: dict = {}
    if args.tile:  # tile_stride None: ConvLPN's default
        changes.update(tile=args.tile, tile_stride=args.tile_stride)
    if args.local_mean:
        changes["local_mean_sigma"] = args.local_mean
    if changes:
        prior = save_rebuilt(args.prior, Path(tmp.name) / "changed.safetensors", **changes)
    if args.denoise:
        sig = [float(v) for v in args.denoise.split(",")]
        told = [float(v) for v in args.told.split(",")]
        psnr = denoise_row(prior, scans_for(args.on, args.size), sig, told, args.with_tv)
        print(json.dumps({"prior": args.prior, **changes, "on": args.on, "denoise_psnr": psnr}))
        return
    scans = scans_for(args.on, args.size)
    cases = [build_case(args.problem, s, seed=0, ct_noise=args.noise) for s in scans]
    presets = load_presets("ct")
    if args.prior == "tv":  # TV-ADMM over weight_rel (--rho lists the weights), preset iters
        for w in (float(v) for v in args.rho.split(",")):
            over = {"weight_rel": w, "weight_noise": None}  # this weight, not the noise rule
            per = {c.scan: round(run_method(c, "pnp-admm", "tv", presets, None, over)["psnr"], 3)
                   for c in cases}  # fmt: skip
            row = {"prior": "tv", "on": args.on, "noise": args.noise, "weight_rel": w}
            row.update(psnr=round(float(np.mean(list(per.values()))), 3), per_scan=per)
            print(json.dumps(row), flush=True)
        return
    key = "prior_sigma_noise" if args.sigma_noise else "prior_sigma_rel"
    values = args.sigma_noise or args.sigma_rel
    sigmas = [None] if not values else [float(v) for v in values.split(",")]
    grid = [(s, float(r)) for s in sigmas for r in args.rho.split(",")]
    for s, r in grid:
        t0 = time.perf_counter()
        per = {}
        step = "rho_rel" if args.solver == "pnp-admm" else "step_rel"
        over = {step: r, "tol": 1e-5}
        if s:  # this σ rule replaces the preset's (None drops a key of it)
            over.update({"prior_sigma_noise": None, "prior_sigma_rel": None, key: s})
            if args.sigma_noise:
                over["prior_sigma_rel"] = args.sigma_floor
        for case in cases:
            out = run_method(case, args.solver, prior, presets, args.iters, over)
            per[case.scan] = round(out["psnr"], 3)
        row = {"prior": args.prior, **changes, "on": args.on, "noise": args.noise}
        row.update({"solver": args.solver, step: r})
        row.update({key: s} if s else {})
        if s and args.sigma_noise:
            row["prior_sigma_rel"] = args.sigma_floor
        row.update(psnr=round(float(np.mean(list(per.values()))), 3), per_scan=per)
        row.update(problem=args.problem, seconds=round(time.perf_counter() - t0, 1))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
