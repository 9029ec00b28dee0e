"""Forward / adjoint / FBP time of the ASTRA CT operator (CPU projectors), median of repeats.

    .venv/bin/python scripts/bench_ct_operator.py [--repeats 5] [--threads 2]

Each case runs twice, side by side: through ASTRA's FP/BP algorithms (single-threaded) and
through ASTRA's sparse projection matrix of the same projector (rows split over ``--threads``;
the matrix's one-off build time is given apart). A batch is a loop over its items, so time
grows linearly with the batch size.
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
    ("parallel", 512, 90),
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
    ap.add_argument("--threads", type=int, default=1, help="torch threads (matrix row blocks)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"astra {astra.__version__}, torch {torch.__version__}, {platform.processor() or '?'}, "
        f"{os.cpu_count()} CPUs, {args.threads} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| geometry | image | views | path | batch | A (ms) | Aᵀ (ms) | FBP (ms) "
        "| A+Aᵀ per item (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for geom, size, views in CASES:
        for matrix in (False, True):
            op = CTOperator(image_size=size, views=views, geometry=geom, matrix=matrix)
            path = "matrix" if matrix else "FP/BP"
            if matrix:
                t0 = time.perf_counter()
                op.forward(torch.zeros(1, 1, size, size))
                path += f" (built in {time.perf_counter() - t0:.1f} s)"
            for batch in (1, 8):
                x = torch.rand(batch, 1, size, size)
                y = op.forward(x)
                tf = median_seconds(op.forward, x, args.repeats)
                ta = median_seconds(op.adjoint, y, args.repeats)
                tb = median_seconds(op.fbp, y, max(1, args.repeats // 2))
                per = 1000 * (tf + ta) / batch
                cells = [geom, f"{size}²", views, path, batch]
                cells += [f"{1000 * t:.1f}" for t in (tf, ta, tb)]
                print("| " + " | ".join(map(str, cells)) + f" | {per:.1f} |", flush=True)
            op.close()


if __name__ == "__main__":
    main()
