"""`recon bench`: benchmarks that print and save their figures.

recon bench denoise --model NAME=CHECKPOINT ... --out DIR
    PSNR/SSIM vs test noise level and the affine sweep for learned priors (see
    ``recon.bench_denoise``), prox cost on a 512×512 slice, training seconds per step.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks (denoise, ...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bsub = p.add_subparsers(dest="bench", required=True)
    d = bsub.add_parser("denoise", help="denoising PSNR vs noise level and affine sweep")
    d.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=CHECKPOINT",
        help="a prior to evaluate (shipped name or .safetensors path); repeatable",
    )
    d.add_argument("--out", default="out/bench-denoise")
    d.add_argument("--size", type=int, default=128, help="held-out images cropped to this size")


def run(args: argparse.Namespace) -> int:
    if args.bench == "denoise":
        from recon.bench_denoise import run_denoise_bench

        models = {}
        for spec in args.model:
            name, _, path = spec.partition("=")
            models[name] = path or name
        run_denoise_bench(models, Path(args.out), args.size)
        print((Path(args.out) / "table.md").read_text())
        print(f"plot: {Path(args.out) / 'denoise.png'}")
        return 0
    raise ValueError(f"unknown benchmark {args.bench!r}")
