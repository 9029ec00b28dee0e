"""Seconds per iteration and time to a PSNR plateau for PnP-PGD (FISTA) and PnP-ADMM.

Problems: CT 256×256 Shepp–Logan, 60 parallel views, 1 % Gaussian noise; MRI 256×256, 8 coils
(birdcage maps, known), 4× fastMRI random mask, from the bundled held-out brain slice resized.
"Plateau": the first iteration whose PSNR is within 0.1 dB of the run's best.

    .venv/bin/python scripts/bench_solvers.py [--ct-prior P] [--mri-prior P] [--iters 40]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from skimage.transform import resize

from data.bundled import load_bundled
from data.coils import birdcage_maps
from data.ct_noise import add_gaussian_noise
from data.masks import fastmri_random_mask
from data.phantoms import shepp_logan
from operators.ct import CTOperator
from operators.mri import SENSE
from priors.base import ComplexAsChannels
from priors.checkpoint import load_prior
from solvers import pnp_admm, pnp_pgd


def _plateau(history: dict) -> tuple[int, float]:
    psnr = np.array(history["psnr"], dtype=float)
    k = int(np.argmax(psnr >= psnr.max() - 0.1))
    return k + 1, float(history["seconds"][k])


def _row(name, solver, res) -> dict:
    k, t = _plateau(res.history)
    n = res.iterations
    return {
        "problem": name,
        "solver": solver,
        "best_psnr": round(max(res.history["psnr"]), 2),
        "final_psnr": round(res.history["psnr"][-1], 2),
        "iterations": n,
        "s_per_iter": round(res.seconds / n, 3),
        "plateau_iter": k,
        "plateau_s": round(t, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ct-prior", default="aelpn-ct")
    ap.add_argument("--mri-prior", default="aelpn-mri")
    ap.add_argument("--iters", type=int, default=40)
    args = ap.parse_args()
    rows = []

    ref = torch.from_numpy(shepp_logan(256))[None, None]
    op = CTOperator(image_size=256, views=60)
    y = add_gaussian_noise(op.forward(ref), 0.01, seed=0)
    x0 = op.fbp(y)
    prior = load_prior(args.ct_prior)
    kw = dict(iters=args.iters, tol=0.0, x0=x0, reference=ref)
    rows.append(
        _row("CT 256² 60 views", "PnP-FISTA", pnp_pgd(op, y, prior, accelerated=True, **kw))
    )
    rows.append(
        _row(
            "CT 256² 60 views",
            "PnP-ADMM",
            pnp_admm(op, y, prior, rho=0.03 * op.norm_sq(), cg_iters=10, **kw),
        )
    )

    img = resize(load_bundled("brain-t1"), (256, 256), anti_aliasing=True)
    x_true = torch.from_numpy((1e-3 * img).astype(np.complex64))[None, None]
    maps = birdcage_maps(8, (256, 256))
    mop = SENSE(maps, fastmri_random_mask(256, 4, 0.08, seed=0))
    ym = mop.forward(x_true)
    ym = ym + 5e-6 * torch.randn_like(ym) * (ym != 0)  # noise on the acquired samples only
    mprior = ComplexAsChannels(load_prior(args.mri_prior))
    kw = dict(
        iters=args.iters,
        tol=0.0,
        x0=mop.adjoint(ym),
        reference=x_true,
        data_range=float(x_true.abs().max()),
    )
    rows.append(
        _row("MRI 256² 8 coils 4×", "PnP-FISTA", pnp_pgd(mop, ym, mprior, accelerated=True, **kw))
    )
    rows.append(
        _row(
            "MRI 256² 8 coils 4×",
            "PnP-ADMM",
            pnp_admm(mop, ym, mprior, rho=0.05 * mop.norm_sq(), cg_iters=10, **kw),
        )
    )

    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print(
        json.dumps(
            {
                "torch_threads": torch.get_num_threads(),
                "ct_prior": args.ct_prior,
                "mri_prior": args.mri_prior,
            }
        )
    )


if __name__ == "__main__":
    main()
