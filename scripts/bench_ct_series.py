"""A whole CT series through `recon ct`: slices per minute, peak memory, and a run killed
mid-series that resumes without redoing a finished slice.

    .venv/bin/python scripts/bench_ct_series.py --out out/bench-series --slices 64 \
        --solver fbp --kill-after 20
    .venv/bin/python scripts/bench_ct_series.py --out out/bench-series --slices 8 \
        --solver pnp-admm --prior aelpn-ct --kill-after 3
    .venv/bin/python scripts/bench_ct_series.py ... --device cuda     # on a GPU machine

The series (``--slices`` of 512², axial, 2.5 mm apart) is simulated from real CT: the 512² slices
pydicom and pydicom-data ship (``data.training_sets.real_ct_slices`` and the validation slice),
blended smoothly from one to the next along z, written as a DICOM series with
``data.dicom_write.write_dicom_series``. `recon ct --input SERIES` runs as a child process; it is
sent SIGKILL once ``--kill-after`` slices are saved, then rerun with the same command. Prints and
writes (``OUT/series.json``) slices per minute of both runs, the children's peak resident memory,
how many slices the rerun resumed and how many it reconstructed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_series(folder: Path, n: int) -> None:
    from data.dicom_write import write_dicom_series
    from data.training_sets import real_ct_slices
    from recon.tune.problems import ct_real_validation_slice

    hus = [u * 2500.0 - 1000.0 for u in real_ct_slices()] + [ct_real_validation_slice().image]
    vol = []
    for k in range(n):
        t = k * len(hus) / n
        a, w = int(t), t - int(t)
        vol.append((1 - w) * hus[a] + w * hus[(a + 1) % len(hus)])
    write_dicom_series(
        folder,
        np.stack(vol).astype(np.float32),
        None,
        pixel_spacing=(0.7, 0.7),
        positions=[(0.0, 0.0, 2.5 * k) for k in range(n)],
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        thickness=2.5,
        description="simulated from real CT slices (scripts/bench_ct_series.py)",
        series_description="bench series",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--out", default="out/bench-series")
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--solver", default="fbp")
    ap.add_argument("--prior", default=None)
    ap.add_argument("--views", type=int, default=90)
    ap.add_argument("--photons", type=float, default=1e5)
    ap.add_argument("--kill-after", type=int, default=None, help="slices saved before SIGKILL")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--range", default=None, help="reconstruct only these slices (A:B)")
    args = ap.parse_args()
    out = Path(args.out)
    series = out / f"series-{args.slices}"
    if not series.is_dir():
        make_series(series, args.slices)
    run_out = out / f"recon-{args.solver}{'-' + args.prior if args.prior else ''}"
    cmd = [sys.executable, "-m", "recon.cli", "ct", "--input", str(series), "--views",
           str(args.views), "--photons", str(args.photons), "--solver", args.solver,
           "--device", args.device, "--quiet", "--out", str(run_out)]  # fmt: skip
    if args.prior:
        cmd += ["--prior", args.prior]
    if args.range:
        cmd += ["--slice", args.range]
    report: dict = {"command": " ".join(cmd[2:]), "slices": args.slices}
    cache = run_out / ".slices"
    if args.kill_after:
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd)
        while child.poll() is None:
            if cache.is_dir() and len(list(cache.glob("*.npz"))) >= args.kill_after:
                child.send_signal(signal.SIGKILL)
                child.wait()
                break
            time.sleep(0.2)
        saved = len(list(cache.glob("*.npz"))) if cache.is_dir() else 0
        report["killed_after_slices"] = saved
        report["killed_run_seconds"] = time.perf_counter() - t0
        report["metrics_after_kill"] = (run_out / "metrics.json").exists()
    t0 = time.perf_counter()
    rc = subprocess.run(cmd).returncode
    report["rerun_seconds"] = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"recon ct failed (exit {rc})")
    m = json.loads((run_out / "metrics.json").read_text())
    done = len(m["slices"])
    report.update(
        reconstructed_slices=done,
        resumed_slices=m["resumed_slices"],
        reconstructed_in_rerun=done - m["resumed_slices"],
        iterations_per_slice=[r["iterations"] for r in m["slices"]],
        psnr_per_slice=[round(r["psnr"], 2) for r in m["slices"]],
        slices_per_minute_rerun=m["slices_per_minute"],
        psnr_volume=m["psnr"],
        fbp_psnr_volume=m["baseline"]["psnr"],
        solver_seconds_per_slice=m["seconds"] / done,
        peak_rss_gib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
        cpu_threads=os.cpu_count(),
    )
    (out / "series.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
