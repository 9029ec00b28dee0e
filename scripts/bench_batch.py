"""Throughput of `recon batch ct` with 1 and 2 local Dask workers: slices per minute, each
worker's peak memory (RSS) and the parallel efficiency.

    .venv/bin/python scripts/bench_batch.py   # 8 slices 128², PnP-ADMM + aelpn-ct
    .venv/bin/python scripts/bench_batch.py --solver tv --iters 30

The slices are random-ellipse phantoms (``data.phantoms.random_ellipses``, seeds 0..N-1) saved as
.npy files; each run is a fresh `recon batch ct --workers W` process (a new local cluster, one
torch thread per worker) into its own output folder. Throughput counts the reconstruction phase
(first task submitted to last result, from the run's summary.json); the cluster start-up is
reported apart. Parallel efficiency E(W) = throughput(W) / (W · throughput(1)).
Writes OUT/results.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def make_slices(folder: Path, n: int, size: int) -> None:
    from data.phantoms import random_ellipses

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(folder / f"slice{i:03d}.npy", random_ellipses(size, seed=i).astype(np.float32))


def run_batch(inputs: Path, out: Path, workers: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "recon.cli", "batch", "ct", "--inputs", str(inputs)]
    cmd += ["--out", str(out), "--workers", str(workers), "--quiet", "--redo"]
    cmd += ["--solver", args.solver, "--iters", str(args.iters), "--tol", "0"]
    cmd += ["--views", str(args.views)]
    if args.solver != "tv":
        cmd += ["--prior", args.prior]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"recon batch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    s = json.loads((out / "summary.json").read_text())
    return {
        "workers": workers,
        "slices": s["counts"]["done"],
        "recon_seconds": s["wall_seconds"],
        "startup_seconds": s["startup_seconds"],
        "total_seconds": total,
        "slices_per_minute": s["slices_per_minute"],
        "peak_rss_mb": [w["peak_rss_mb"] for w in s["workers"]],
        "prior_loads": [w["prior_loads"] for w in s["workers"]],
        "mean_psnr": s["mean"]["psnr"],
    }


def table(rows: list[dict], setup: str) -> str:
    ones = [r["slices_per_minute"] for r in rows if r["workers"] == 1]
    base = sum(ones) / len(ones) if ones else rows[0]["slices_per_minute"] / rows[0]["workers"]
    lines = [
        f"{setup}",
        "",
        "| workers | slices/min | efficiency | recon s | start-up s | peak RSS per worker (MB) "
        "| prior loads per worker | mean PSNR (dB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        eff = r["slices_per_minute"] / (r["workers"] * base)
        r["efficiency"] = eff
        lines.append(
            f"| {r['workers']} | {r['slices_per_minute']:.2f} | {eff:.2f} "
            f"| {r['recon_seconds']:.1f} | {r['startup_seconds']:.1f} "
            f"| {', '.join(f'{m:.0f}' for m in r['peak_rss_mb'])} "
            f"| {', '.join(str(n) for n in r['prior_loads'])} | {r['mean_psnr']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--views", type=int, default=60)
    p.add_argument("--solver", default="pnp-admm", choices=["pnp-admm", "pnp-pgd", "tv"])
    p.add_argument("--prior", default="aelpn-ct")
    p.add_argument("--iters", type=int, default=10, help="fixed iterations (--tol 0)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default="out/bench-batch")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "slices"
        make_slices(inputs, args.slices, args.size)
        rows = []
        for w in args.workers:
            rows.append(run_batch(inputs, out / f"workers{w}", w, args))
            print(json.dumps(rows[-1]), flush=True)
    prior = "" if args.solver == "tv" else f" + {args.prior}"
    setup = (
        f"{args.slices} random-ellipse slices {args.size}x{args.size}, {args.views} parallel "
        f"views, 1 % noise, {args.solver}{prior}, {args.iters} iterations each, "
        "local Dask cluster (processes, 1 thread each)"
    )
    text = table(rows, setup)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"setup": setup, "runs": rows}, indent=1))
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
