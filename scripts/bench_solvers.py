"""Benchmark PnP-FISTA/PGD and PnP-ADMM: seconds per iteration and time to a PSNR plateau.

Problems (float32, CPU unless --device cuda):
* CT: 256×256 Shepp–Logan, 60 parallel-beam views over 180°, Gaussian noise with
  std = 1 % of max |sinogram|, started from FBP.
* MRI: the bundled held-out brain slice resized to 256×256, 8 birdcage coils (known maps), 4×
  fastMRI random column mask (8 % centre), complex Gaussian noise on the acquired samples with std
  = ``--mri-noise`` × their RMS, started from the SENSE-combined adjoint; PSNR with data_range =
  the reference maximum (the fastMRI convention).

Plateau: the first iteration whose PSNR is within 0.1 dB of the run's final PSNR; its time is the
solver's cumulative seconds there (monitor work excluded).

Priors: ``--prior tv`` (default) uses TVPrior for both solvers on the *same* model
D(x) + β·TV(x), D = ½||Ax − y||²: the prior weight is γβ for PGD (it minimizes γD + R) and β/ρ for
ADMM (D/ρ + R). Any other name is loaded with ``priors.load_prior`` (imported only then), e.g.
``--prior aelpn-ct``; MRI wraps it in ``ComplexAsChannels``.

    .venv/bin/python scripts/bench_solvers.py --threads 1 [--prior tv] [--iters 100] [--problems ct]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from priors.base import ComplexAsChannels
from priors.classical import TVPrior
from solvers import SolverResult, pnp_admm, pnp_pgd


def plateau(history: dict[str, list], within_db: float = 0.1) -> tuple[int, float]:
    """(first iteration within ``within_db`` of the final PSNR, solver seconds at it)."""
    psnr = np.array([np.nan if v is None else v for v in history["psnr"]], dtype=float)
    final = psnr[~np.isnan(psnr)][-1]
    k = int(np.argmax(psnr >= final - within_db))
    return int(history["iteration"][k]), float(history["seconds"][k])


def _load_learned(name: str, device: torch.device) -> Any:
    try:
        from priors import load_prior
    except ImportError:  # not re-exported yet
        from priors.checkpoint import load_prior
    return load_prior(name, device=device)


def ct_problem(size: int, views: int, noise: float, device: torch.device) -> dict[str, Any]:
    from data.phantoms import shepp_logan
    from operators.ct import CTOperator
    from recon.api import ct_problem as simulate

    op = CTOperator(image_size=size, views=views, geometry="parallel")
    if device.type == "cuda":
        op.device = device
    pb = simulate(shepp_logan(size), units="a.u.", noise=noise, seed=0, device=device, op=op)
    return dict(op=op, y=pb.y, x0=pb.x0, reference=pb.x_true, data_range=None, complex=False)


def mri_problem(
    size: int, coils: int, accel: float, noise: float, device: torch.device
) -> dict[str, Any]:
    from skimage.transform import resize

    from data.bundled import load_bundled
    from data.coils import birdcage_maps
    from data.masks import fastmri_random_mask
    from operators.mri import SENSE

    img = resize(load_bundled("brain-t1"), (size, size), anti_aliasing=True)
    ref = torch.from_numpy(img.astype(np.complex64))[None, None].to(device)
    op = SENSE(birdcage_maps(coils, (size, size)), fastmri_random_mask(size, accel, 0.08, seed=0))
    y = op.forward(ref)
    acquired = y != 0
    rms = float(y[acquired].abs().pow(2).mean().sqrt())
    gen = torch.Generator().manual_seed(0)
    n = torch.randn(y.shape, generator=gen, dtype=torch.complex64).to(device)
    y = y + noise * rms * n * acquired
    data_range = float(ref.abs().max())
    return dict(op=op, y=y, x0=op.adjoint(y), reference=ref, data_range=data_range, complex=True)


def run(
    problem: dict[str, Any], args: argparse.Namespace, prior: str, beta: float, rho_rel: float
) -> list:
    op, y, x0 = problem["op"], problem["y"], problem["x0"]
    norm_sq = op.norm_sq()
    gamma = 0.99 / norm_sq
    rho = rho_rel * norm_sq

    def make(weight: float) -> Any:  # a fresh prior per run: no warm-start state is shared
        if prior == "tv":
            return TVPrior(weight, iters=args.tv_iters, tol=1e-3, warm_start=True)
        learned = _load_learned(prior, x0.device)
        return ComplexAsChannels(learned) if problem["complex"] else learned

    common = dict(
        iters=args.iters,
        tol=0.0,
        x0=x0,
        reference=problem["reference"],
        data_range=problem["data_range"],
        objective_every=0,
    )
    results: list[tuple[str, SolverResult]] = [
        ("PnP-FISTA", pnp_pgd(op, y, make(gamma * beta), step=gamma, accelerated=True, **common)),
        ("PnP-ADMM", pnp_admm(op, y, make(beta / rho), rho=rho, cg_iters=args.cg_iters, **common)),
    ]
    if args.plain_pgd:
        results.append(("PnP-PGD", pnp_pgd(op, y, make(gamma * beta), step=gamma, **common)))
    rows = []
    for solver, res in results:
        k, t = plateau(res.history)
        rows.append(
            {
                "solver": solver,
                "psnr_iter1": round(res.history["psnr"][0], 2),
                "final_psnr": round(res.history["psnr"][-1], 2),
                "iterations": res.iterations,
                "s_per_iter": round(res.seconds / res.iterations, 4),
                "plateau_iter": k,
                "plateau_s": round(t, 2),
                "stop": res.stop_reason,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default="tv", help="'tv' or a name/path for priors.load_prior")
    ap.add_argument("--mri-prior", help="prior for the MRI problem (default: --prior)")
    ap.add_argument("--problems", default="ct,mri")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--ct-noise", type=float, default=0.01)
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--accel", type=float, default=4.0)
    ap.add_argument("--mri-noise", type=float, default=0.02)
    ap.add_argument("--tv-beta-ct", type=float, default=10.0, help="β in D + β·TV (CT)")
    ap.add_argument("--tv-beta-mri", type=float, default=0.002, help="β in D + β·TV (MRI)")
    ap.add_argument("--tv-iters", type=int, default=50)
    ap.add_argument("--rho-rel-ct", type=float, default=0.03, help="ρ = rho_rel·||A||²")
    ap.add_argument("--rho-rel-mri", type=float, default=0.05)
    ap.add_argument("--cg-iters", type=int, default=10)
    ap.add_argument("--plain-pgd", action="store_true", help="also run PnP-PGD without momentum")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in [p.strip() for p in args.problems.split(",") if p.strip()]:
        if name == "ct":
            problem = ct_problem(args.size, args.views, args.ct_noise, device)
            label = f"CT {args.size}² {args.views} views"
            beta, rho_rel, prior = args.tv_beta_ct, args.rho_rel_ct, args.prior
        elif name == "mri":
            problem = mri_problem(args.size, args.coils, args.accel, args.mri_noise, device)
            label = f"MRI {args.size}² {args.coils} coils {args.accel:g}×"
            beta, rho_rel = args.tv_beta_mri, args.rho_rel_mri
            prior = args.mri_prior or args.prior
        else:
            raise SystemExit(f"unknown problem {name!r} (ct, mri)")
        for row in run(problem, args, prior, beta, rho_rel):
            rows.append({"problem": label, "prior": prior, **row})
            print(json.dumps(rows[-1]), file=sys.stderr)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "machine": platform.machine(),
    }
    print(json.dumps(env))
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "env": env, "args": vars(args)}, default=str)
        )


if __name__ == "__main__":
    main()
