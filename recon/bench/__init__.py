"""`recon bench`: benchmarks that print and save their tables and figures.

Each benchmark lives in its own module that defines ``add_bench_parser(bsub)`` (one sub-parser
named after the benchmark) and ``run_bench(args) -> int``; ``BENCHES`` lists them. A module that
is not present (an optional benchmark) is skipped.

recon bench denoise --model NAME=CHECKPOINT ... --out DIR
    PSNR/SSIM vs test noise level and the affine sweep for learned priors (``recon.bench.denoise``).
"""

from __future__ import annotations

import argparse
import importlib

BENCHES = (
    "recon.bench.denoise",
    "recon.bench.robustness",
    "recon.bench.grid",
    "recon.bench.peers",
    "recon.bench.speed",
)


def _modules():
    for name in BENCHES:
        try:
            yield importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks (denoise, robustness, grid, ...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bsub = p.add_subparsers(dest="bench", required=True)
    for mod in _modules():
        mod.add_bench_parser(bsub)
        for name in bsub.choices:
            if bsub.choices[name].get_default("bench_run") is None:
                bsub.choices[name].set_defaults(bench_run=mod.run_bench)


def run(args: argparse.Namespace) -> int:
    return int(args.bench_run(args) or 0)
