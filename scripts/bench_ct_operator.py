"""Forward / adjoint / FBP time of the ASTRA CT operator (CPU projectors), median of repeats.

    .venv/bin/python scripts/bench_ct_operator.py [--repeats 5]

ASTRA's CPU projectors are single-threaded; a batch is a loop over its items, so time grows
linearly with the batch size.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import astra
import torch

from operators.ct import CTOperator

CASES = (
    ("parallel", 256, 180),
    ("parallel", 512, 50),
    ("fan", 256, 180),
)


def median_seconds(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, repeats: int):
    fn(x)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(
        f"astra {astra.__version__}, torch {torch.__version__}, {platform.processor() or '?'}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print("| geometry | image | views | batch | A (ms) | Aᵀ (ms) | FBP (ms) | A+Aᵀ per item (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    for geom, size, views in CASES:
        op = CTOperator(image_size=size, views=views, geometry=geom)
        for batch in (1, 8):
            x = torch.rand(batch, 1, size, size)
            y = op.forward(x)
            tf = median_seconds(op.forward, x, args.repeats)
            ta = median_seconds(op.adjoint, y, args.repeats)
            tb = median_seconds(op.fbp, y, max(1, args.repeats // 2))
            per = 1000 * (tf + ta) / batch
            cells = [geom, f"{size}²", views, batch] + [f"{1000 * t:.1f}" for t in (tf, ta, tb)]
            print("| " + " | ".join(map(str, cells)) + f" | {per:.1f} |", flush=True)
        op.close()


if __name__ == "__main__":
    main()
