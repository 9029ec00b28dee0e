"""Forward and adjoint time of the ASTRA CT operator (CPU projectors), median of repeats.

.venv/bin/python scripts/bench_ct_operator.py
"""

from __future__ import annotations

import statistics
import time

import torch

from operators.ct import CTOperator


def _time(fn, x, repeats=5):
    fn(x)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    print(f"torch threads: {torch.get_num_threads()}")
    print("| geometry | image | views | batch | A (ms) | Aᵀ (ms) | A+Aᵀ per slice (ms) |")
    print("|---|---|---|---|---|---|---|")
    for geom, size, views in (("parallel", 256, 180), ("parallel", 512, 50), ("fan", 256, 180)):
        op = CTOperator(image_size=size, views=views, geometry=geom)
        for batch in (1, 8):
            x = torch.rand(batch, 1, size, size)
            y = op.forward(x)
            tf, ta = _time(op.forward, x), _time(op.adjoint, y)
            per = 1000 * (tf + ta) / batch
            cells = [geom, f"{size}²", views, batch, f"{1000 * tf:.1f}", f"{1000 * ta:.1f}"]
            print("| " + " | ".join(map(str, cells)) + f" | {per:.1f} |")


if __name__ == "__main__":
    main()
