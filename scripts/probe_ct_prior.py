"""PnP-ADMM with one prior on the bundled CT slice (60 views, 1 % noise) over a list of rho_rel.

    .venv/bin/python scripts/probe_ct_prior.py --prior runs/my-prior.safetensors --rho 0.01,0.03
    .venv/bin/python scripts/probe_ct_prior.py --prior aelpn-ct --rho 0.03 --group d4

A diagnostic for training choices (σ, architecture, fine-tuning). The bundled slice is the
toolkit's *test* image: choosing a shipped prior or preset by this number would be tuning on the
test set, so use `recon tune ct --val real-ct` (or your own scans) to choose, and this to look.
Prints one JSON line per rho_rel.
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
from solvers import pnp_admm
from solvers.equivariant import GroupAveragedPrior


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="aelpn-ct", help="shipped name or checkpoint")
    ap.add_argument("--rho", default="0.01,0.03,0.1", help="comma-separated rho_rel values")
    ap.add_argument("--group", default="none", choices=["none", "flips", "d4"])
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    inp = load_ct_input("bundled:ct-small")
    ref = to_internal(inp.image, inp.units)
    op = CTOperator(image_size=ref.shape, views=args.views, pixel_size=inp.pixel_size)
    y = add_gaussian_noise(op.forward(torch.from_numpy(ref)[None, None]), args.noise, seed=0)
    x0 = op.fbp(y)
    prior = load_prior(args.prior)
    if args.group != "none":
        prior = GroupAveragedPrior(prior, args.group)
    dr = float(ref.max() - ref.min())
    for r in (float(v) for v in args.rho.split(",")):
        t0 = time.perf_counter()
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
        m = image_metrics(res.x[0, 0].numpy(), np.asarray(ref), dr)
        row = {"prior": args.prior, "group": args.group, "rho_rel": r}
        row.update({k: round(v, 3) for k, v in m.items() if k in ("psnr", "ssim")})
        row.update(iterations=res.iterations, seconds=round(time.perf_counter() - t0, 1))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
