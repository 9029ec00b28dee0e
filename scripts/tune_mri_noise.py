"""Grid of MRI regularization strengths on validation problems from three generators.

The validation problems (none is a test case of ``recon bench peers --mri``):

* the Colin27 T1 slice 123 simulated with 8 birdcage coils (``data.fastmri``), noiseless
  and with k-space noise 0.1 % of max|k|;
* BART's phantom at 192² with 8 coils (its maximum), noise 0.1 % and 0.4 % (``data.peer_mri``);
* ISMRMRD's Shepp–Logan at 96² (readout oversampling 2) with 12 coils, noise 0.1 % and 0.4 %;

each under fastMRI random masks 4× (centre 0.08) and 8× (centre 0.04, at least 10 columns),
seed 1. For every problem it records the k-space noise estimate σ̂ (``data.mri_noise``), the
zero-filled image's blind noise estimate and range, and the PSNR of TV-ADMM over a grid of
weights (relative to the range) and ρ, and of PnP-ADMM with ``--prior`` over a grid of σ
(relative to the range) and ρ; one JSON line per run.

    python scripts/tune_mri_noise.py --out runs/tune-mri-noise.jsonl --method tv
    python scripts/tune_mri_noise.py --out runs/tune-mri-noise-ridge.jsonl --method prior
    python scripts/tune_mri_noise.py --out runs/tune-mri-rules.jsonl --method rule \
        --solver tv --rules '{"weight_rel": 0.04, "rho_noise": 3, "rho_rel": 0.003}'

``--method rule`` runs candidate rules (preset keys, relative to the measured k-space noise as
`recon mri` does) instead of a grid, one JSON object per ``--rules`` argument.

Needs ``bart`` and ``ismrmrd-tools`` (``apt-get install bart ismrmrd-tools mricron-data``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon.mri import MASKS  # noqa: E402

TV_WEIGHTS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
TV_RHOS = (0.003, 0.01, 0.03)
PRIOR_SIGMAS = (0.005, 0.01, 0.02, 0.04)
PRIOR_RHOS = (0.01, 0.03, 0.1, 0.3)


def problems():
    """(name, k-space (C, H, W), reference (h, w), recon size) of the validation set."""
    from data.fastmri import simulate_multicoil
    from data.peer_mri import add_kspace_noise, bart_phantom, ismrmrd_shepp_logan
    from recon.tune.problems import brain_slices

    for scan in brain_slices((123,)):
        k, ref, _ = simulate_multicoil(scan.image, 8, seed=1)
        for noise in (0.0, 0.001):
            yield f"{scan.name}-n{noise}", add_kspace_noise(k, noise, 1), ref, ref.shape
    for data, tag in (
        (bart_phantom(192, 8), "bart192"),
        (ismrmrd_shepp_logan(96, 12), "ismrmrd96"),
    ):
        for noise in (0.001, 0.004):
            k = add_kspace_noise(data.kspace, noise, 1)
            yield f"{tag}-n{noise}", k, data.reference, data.recon_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--method", choices=["tv", "prior", "rule"], required=True)
    ap.add_argument("--solver", default="tv", help="with --method rule: tv or pnp-admm")
    ap.add_argument("--rules", nargs="*", default=[], type=json.loads)
    ap.add_argument("--prior", default="ridge-mri")
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument(
        "--only", default="", help="comma-separated substrings: run only the problems named so"
    )
    ap.add_argument("--accels", default="4,8", help="comma-separated accelerations (4, 8)")
    ap.add_argument(
        "--mask",
        default="random",
        choices=MASKS,
        help="undersampling (`recon mri --mask`); the start image and the noise measured as "
        "`recon mri` does (recon.mri.start_images, measured_noise)",
    )
    ap.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help="with --method rule: × the rule's regularizer weight (`recon mri --strength`)",
    )
    args = ap.parse_args()
    strength = args.strength
    if not strength > 0:
        ap.error(f"--strength must be > 0, got {strength}")
    only = [w for w in args.only.split(",") if w]
    accels = {float(a) for a in args.accels.split(",")}
    if args.method == "rule" and not args.rules:
        ap.error("--method rule needs --rules JSON [JSON ...] (the rules to score)")
    torch.set_num_threads(1)
    from data.fastmri import center_crop, evaluate
    from recon.mri import measured_noise, sample_kspace, start_images
    from recon.pipeline import blind_noise_estimate, intensity_range, reconstruct

    out = Path(args.out)
    done = set()
    if out.exists():
        done = {json.dumps(json.loads(ln)["key"]) for ln in out.read_text().splitlines() if ln}
    matched = 0
    for name, k, ref, size in problems():
        if only and not any(w in name for w in only):
            continue
        matched += 1
        for accel, cf in ((4.0, 0.08), (8.0, 0.04)):
            if accel not in accels:
                continue
            cf = max(cf, 10 / k.shape[-1])  # at least 10 fully sampled columns for ESPIRiT
            op, y, _, _ = sample_kspace(k, args.mask, accel, cf, seed=1)
            x0, _ = start_images(op, y)
            feats = {
                "kspace_noise": measured_noise(op, y),
                "blind_noise": blind_noise_estimate(x0),
                "range": intensity_range(x0),
            }
            gt = center_crop(ref, size)
            if args.method == "rule":
                prior = None if args.solver == "tv" else args.prior
                grid = [
                    (args.solver, prior, {"tv_iters": 50, **r} if prior is None else r)
                    for r in args.rules
                ]
            elif args.method == "tv":
                grid = [
                    ("tv", None, {"weight_rel": w, "rho_rel": r, "tv_iters": 50})
                    for w in TV_WEIGHTS
                    for r in TV_RHOS
                ]
            else:
                grid = [
                    ("pnp-admm", args.prior, {"prior_sigma_rel": s, "rho_rel": r})
                    for s in PRIOR_SIGMAS
                    for r in PRIOR_RHOS
                ]
            for solver, prior, p in grid:
                key = [name, accel, solver, prior, p]
                if args.mask != "random":  # rows of the default mask keep their old keys
                    key.append(args.mask)
                if strength != 1.0:
                    key.append({"strength": strength})
                if json.dumps(key) in done:
                    continue
                t0 = time.perf_counter()
                params = {"lam": 1.0, "iters": args.iters, "tol": 1e-6, "cg_iters": 10, **p}
                noise = feats["kspace_noise"] if args.method == "rule" else None
                if strength != 1.0:
                    params["strength"] = strength
                rec = reconstruct(op, y, x0, solver, prior, params, noise_level=noise)
                img = center_crop(np.abs(rec.x[0, 0].numpy()), size)
                m = evaluate(gt, img)
                row = {
                    "key": key,
                    **feats,
                    "psnr": m["psnr"],
                    "ssim": m["ssim"],
                    "seconds": time.perf_counter() - t0,
                }
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(name, accel, p, f"{m['psnr']:.2f}", flush=True)
    if only and not matched:
        ap.error(f"--only {args.only}: matches no problem")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
