"""PnP-ADMM with one prior over a list of rho_rel, on the real CT validation slices or the test
slice (60 parallel views, 1 % Gaussian noise).

    .venv/bin/python scripts/probe_ct_prior.py --prior runs/my-prior.safetensors --on val
    .venv/bin/python scripts/probe_ct_prior.py --prior aelpn-ct --rho 0.03 --group d4 --on test

For training choices (σ, architecture, fine-tuning): choose with ``--on val`` (the three real
slices of ``recon tune ct --val real-ct``, two patients, never trained on); ``--on test`` is the
bundled slice, the toolkit's test image, to report on, not to choose by. One JSON line per
rho_rel (the mean over the slices, and each slice's PSNR).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from data.ct_noise import add_gaussian_noise
from operators.ct import CTOperator
from priors.checkpoint import load_prior
from recon.ct import load_ct_input, to_internal
from recon.pipeline import image_metrics
from recon.tune_problems import ct_real_validation_scans
from solvers import pnp_admm
from solvers.equivariant import GroupAveragedPrior


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="aelpn-ct", help="shipped name or checkpoint")
    ap.add_argument("--rho", default="0.01,0.03,0.1", help="comma-separated rho_rel values")
    ap.add_argument("--group", default="none", choices=["none", "flips", "d4"])
    ap.add_argument("--on", default="val", choices=["val", "test"])
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.on == "test":
        inp = load_ct_input("bundled:ct-small")
        scans = [("ct-small", to_internal(inp.image, inp.units), inp.pixel_size)]
    else:
        scans = [
            (v.name, to_internal(v.image, v.units), v.pixel_size)
            for v in ct_real_validation_scans()
        ]
    problems = []
    for name, ref, pixel in scans:
        op = CTOperator(image_size=ref.shape, views=args.views, pixel_size=pixel)
        y = add_gaussian_noise(op.forward(torch.from_numpy(ref)[None, None]), args.noise, seed=0)
        problems.append((name, np.asarray(ref), op, y, op.fbp(y)))
    prior = load_prior(args.prior)
    if args.group != "none":
        prior = GroupAveragedPrior(prior, args.group)
    for r in (float(v) for v in args.rho.split(",")):
        t0 = time.perf_counter()
        per = {}
        for name, ref, op, y, x0 in problems:
            res = pnp_admm(
                op,
                y,
                prior,
                lam=1.0,
                rho=r * op.norm_sq(),
                x0=x0,
                iters=args.iters,
                tol=1e-5,
                cg_iters=10,
            )
            m = image_metrics(res.x[0, 0].numpy(), ref, float(ref.max() - ref.min()))
            per[name] = round(m["psnr"], 3)
        row = {"prior": args.prior, "group": args.group, "on": args.on, "rho_rel": r}
        row.update(psnr=round(float(np.mean(list(per.values()))), 3), per_scan=per)
        row.update(seconds=round(time.perf_counter() - t0, 1))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
