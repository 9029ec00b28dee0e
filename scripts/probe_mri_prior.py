"""PnP-ADMM with one MRI prior on the MRI validation slices (``recon tune mri``'s default
validation set: Colin27 slices never used as test), with the shipped MRI presets; optionally
with the prior converted to a local mean split first. One JSON line: mean PSNR and per slice.

    .venv/bin/python scripts/probe_mri_prior.py --prior aelpn-mri
    .venv/bin/python scripts/probe_mri_prior.py --prior aelpn-mri --local-mean 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recon.pipeline import load_presets
from recon.tune.problems import PROBLEMS, build_case, mri_validation_scans, run_method


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="aelpn-mri", help="shipped name or checkpoint")
    ap.add_argument("--problem", default="mri-random4", choices=[p for p in PROBLEMS if "mri" in p])
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--local-mean", type=float, default=None, help="convert: local mean (σ px)")
    ap.add_argument(
        "--sigma",
        default=None,
        metavar="C[,S]",
        help="for a prior that takes the noise level: prior_sigma_noise C (and floor "
        "prior_sigma_rel S)",
    )
    ap.add_argument("--rho", type=float, default=None, help="rho_rel (default: the preset's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prior, tmp = args.prior, tempfile.TemporaryDirectory()
    if args.local_mean:
        from priors.checkpoint import save_rebuilt

        out = Path(tmp.name) / "local-mean.safetensors"
        prior = save_rebuilt(prior, out, local_mean_sigma=args.local_mean)
    cases = [build_case(args.problem, s, seed=0) for s in mri_validation_scans()]
    presets = load_presets("mri")
    over: dict = {} if args.rho is None else {"rho_rel": args.rho}
    if args.sigma:
        c, _, s = args.sigma.partition(",")
        over["prior_sigma_noise"] = float(c)
        if s:
            over["prior_sigma_rel"] = float(s)
    t0 = time.perf_counter()
    per = {
        c.scan: round(run_method(c, "pnp-admm", prior, presets, args.iters, over)["psnr"], 3)
        for c in cases
    }
    row = {"prior": args.prior, "local_mean_sigma": args.local_mean, "problem": args.problem}
    row.update(over)
    row.update(psnr=round(float(np.mean(list(per.values()))), 3), per_scan=per)
    row.update(seconds=round(time.perf_counter() - t0, 1))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
