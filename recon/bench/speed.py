"""`recon bench speed`: where the time of a CT reconstruction goes, measured side by side.

    recon bench speed --out out/bench-speed            # 512² real slice, 90 views, 1e5 photons

1. The prox of each learned prior (``--priors``) on the 512² real CT slice: seconds per call,
   with the network on channels-last inputs (the default, ``priors.lpn.CHANNELS_LAST``) and
   without; and the same convolutions alone. The shapes of every convolution one prox runs
   (input, filters, stride, padding, dilation, groups) are recorded, then each is replayed on
   its own, forward plus the input-gradient backward a prox needs; their total time over the
   prox's time is the prox's fraction of the raw convolution rate (1 = nothing but convolutions).
2. ``recon ct`` on the same slice for FBP, TV-ADMM and PnP-ADMM with each prior (``--no-solvers``
   skips it): seconds and PSNR from its metrics.json, with every speed-up on and then each one
   off in turn: channels-last inputs; the projections through ASTRA's sparse matrix
   (``--projection-matrix on``) or its FP/BP algorithms (``off``); the Fourier-preconditioned
   CG of the x-update (``operators.precond``) or plain CG with its former 10 iterations; freed
   memory kept for reuse (``recon.memory``) or handed back to the OS. Poisson noise is drawn
   from the simulated sinogram, which the two projection paths compute to float32 round-off
   apart, so the noise (and the PSNR) may differ slightly.

Everything runs in one process with the same threads (the row without retained memory in a
child process with the same threads), so the ratios compare like with like on a shared
machine. Writes table.md and speed.json into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from recon.argtypes import count
from recon.outputs import atomic_write

__all__ = ["best_seconds", "conv_calls", "replay_convs", "time_prox"]


def conv_calls(fn) -> list[dict]:
    """Run ``fn()`` once and return the convolutions it called (F.conv2d and
    F.conv_transpose2d, from modules or not), as shapes and settings."""
    calls: list[dict] = []
    orig = {"conv2d": F.conv2d, "conv_transpose2d": F.conv_transpose2d}

    def recorder(kind):
        def call(x, w, bias=None, stride=1, padding=0, *rest, **kw):
            extra = dict(zip(_REST[kind], rest, strict=False), **kw)
            calls.append({"kind": kind, "x": tuple(x.shape), "w": tuple(w.shape),
                          "bias": bias is not None, "stride": stride, "padding": padding,
                          "dtype": x.dtype, **extra})  # fmt: skip
            return orig[kind](x, w, bias, stride, padding, *rest, **kw)

        return call

    try:
        F.conv2d, F.conv_transpose2d = recorder("conv2d"), recorder("conv_transpose2d")
        fn()
    finally:
        F.conv2d, F.conv_transpose2d = orig["conv2d"], orig["conv_transpose2d"]
    return calls


_REST = {"conv2d": ("dilation", "groups"), "conv_transpose2d": ("output_padding", "groups",
                                                                 "dilation")}  # fmt: skip


def replay_convs(calls: list[dict], channels_last: bool, repeats: int = 3) -> tuple[float, float]:
    """(seconds, GFLOP) of running every recorded convolution alone, forward and the backward
    to its input (the filters need no gradient in a prox): the best of ``repeats`` passes."""
    work = []
    flops = 0.0
    for c in calls:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(c["x"], dtype=c["dtype"]).contiguous(memory_format=fmt)
        w = torch.randn(c["w"], dtype=c["dtype"])
        kw = {k: c[k] for k in ("stride", "padding", "dilation", "groups", "output_padding")
              if k in c}  # fmt: skip
        op = F.conv2d if c["kind"] == "conv2d" else F.conv_transpose2d
        with torch.no_grad():
            y_shape = op(x, w, **kw).shape
        k_in = c["w"][1] * c["w"][2] * c["w"][3]  # MACs per output (conv2d)
        if c["kind"] == "conv2d":
            macs = k_in * y_shape[0] * y_shape[1] * y_shape[2] * y_shape[3]
        else:
            macs = (
                c["w"][1]
                * c["w"][2]
                * c["w"][3]
                * x.shape[0]
                * x.shape[1]
                * x.shape[2]
                * x.shape[3]
            )
        flops += 2 * 2 * macs  # forward and input-gradient, 2 FLOP per MAC
        work.append((op, x, w, kw, torch.randn(y_shape, dtype=c["dtype"])))
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up
        t0 = time.perf_counter()
        for op, x, w, kw, gy in work:
            xg = x.detach().requires_grad_(True)
            y = op(xg, w, **kw)
            (gx,) = torch.autograd.grad(y, xg, gy)
        best = min(best, time.perf_counter() - t0)
    return best, flops / 1e9


def best_seconds(fn, repeats: int = 3) -> float:
    """Best seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_prox(prior, x: torch.Tensor, repeats: int = 3) -> float:
    """Best seconds of ``prior.prox(x)`` over ``repeats`` calls after one warm-up."""
    return best_seconds(lambda: prior.prox(x), repeats)


def _slice_path() -> Path:
    from pydicom.data import get_testdata_file

    from recon.tune.problems import REAL_CT_VAL_FILE

    path = get_testdata_file(REAL_CT_VAL_FILE, download=False)
    if path is None:
        raise ValueError(f"{REAL_CT_VAL_FILE} not found: pip install pydicom-data")
    return Path(path)


def prox_rows(priors: list[str], size: int, repeats: int) -> list[dict]:
    import priors.lpn as lpn
    from priors.checkpoint import load_prior
    from priors.lpn import takes_noise_level, told_noise_level
    from recon.tune.problems import ct_real_validation_slice

    hu = ct_real_validation_slice().image
    x = torch.as_tensor((hu[:size, :size] + 1000.0) / 2500.0, dtype=torch.float32)[None, None]
    x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in priors:
        model = load_prior(name).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        row: dict = {"prior": name, "size": size}
        with told_noise_level(model, 0.02) if takes_noise_level(model) else nullcontext():
            for cl in (False, True):
                lpn.CHANNELS_LAST = cl
                key = "channels_last" if cl else "contiguous"
                row[f"prox_s_{key}"] = time_prox(model, x, repeats)
                calls = conv_calls(lambda m=model: m.prox(x))
                raw, gflop = replay_convs(calls, cl, repeats)
                row[f"convs_s_{key}"] = raw
                row[f"conv_fraction_{key}"] = raw / row[f"prox_s_{key}"]
            row["convolutions"] = len(calls)
            row["gflop"] = gflop
        lpn.CHANNELS_LAST = True
        rows.append(row)
    return rows


def _speedups(**off: bool) -> dict:
    """The speed-ups of a solver row, all on unless named False (None: not applicable)."""
    row = {"channels_last": True, "projection_matrix": True, "preconditioner": True,
           "retained_memory": True}  # fmt: skip
    row.update(off)
    return row


def solver_rows(
    priors: list[str], views: int, photons: float, quick: bool = False, on_row=None
) -> list[dict]:
    """``recon ct`` on the 512² slice for FBP, TV and PnP-ADMM with each prior, every speed-up
    on and then each one off in turn (``quick``: every speed-up on only). A row without retained
    memory runs in a child process (glibc's allocator settings are process-wide); its wall time
    includes that process's start. Without the preconditioner, CG takes the 10 iterations it
    needed before it. ``on_row(rows, total)`` is called after each row (to write it out)."""
    import os
    import subprocess
    import sys

    import priors.lpn as lpn
    from recon.cli import main

    path = _slice_path()
    na = dict(channels_last=None, preconditioner=None)
    methods = [("fbp", None, _speedups(projection_matrix=False, **na)),
               ("tv", None, _speedups(projection_matrix=False, channels_last=None)),
               ("tv", None, _speedups(channels_last=None))]  # fmt: skip
    for p in priors:
        if not quick:
            methods += [
                ("pnp-admm", p, _speedups(**{k: False}))
                for k in ("channels_last", "projection_matrix", "preconditioner", "retained_memory")
            ]
        methods.append(("pnp-admm", p, _speedups()))
    if quick:  # every speed-up on: FBP, TV and each prior once
        methods = [methods[0], methods[2], *methods[3:]]
    rows = []
    threads = str(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        for i, (solver, prior, on) in enumerate(methods):
            lpn.CHANNELS_LAST = on["channels_last"] is not False
            out = Path(tmp) / f"row{i}"
            args = ["ct", "--input", str(path), "--views", str(views), "--photons", str(photons),
                    "--solver", solver, "--quiet", "--out", str(out), "--threads", threads,
                    "--projection-matrix", "on" if on["projection_matrix"] else "off"]  # fmt: skip
            if prior:
                args += ["--prior", prior]
            off = [k for k, v in on.items() if v is False]
            print(f"bench speed: solver row {i + 1}/{len(methods)}: {solver}"
                  f"{' + ' + prior if prior else ''}{', without ' + ', '.join(off) if off else ''}",
                  file=sys.stderr, flush=True)  # fmt: skip
            if on["preconditioner"] is False:
                cfg = Path(tmp) / f"row{i}.json"
                cfg.write_text(json.dumps({solver: {"precondition": False, "cg_iters": 10}}))
                args += ["--config", str(cfg)]
            t0 = time.perf_counter()
            if on["retained_memory"]:
                ok = main(args) == 0
            else:
                env = {**os.environ, "RECON_RETAIN_MEMORY": "0"}
                cmd = [sys.executable, "-m", "recon.cli", *args]
                ok = subprocess.run(cmd, env=env).returncode == 0
            wall = time.perf_counter() - t0
            if not ok:
                raise RuntimeError(f"recon {' '.join(args)} failed")
            m = json.loads((out / "metrics.json").read_text())
            rows.append({"method": solver if not prior else f"{solver} + {prior}", **on,
                         "psnr": m["psnr"], "seconds": m["seconds"], "wall_seconds": wall,
                         "iterations": m["iterations"]})  # fmt: skip
            if on_row is not None:
                on_row(rows, len(methods))
    lpn.CHANNELS_LAST = True
    return rows


def _ms(seconds: float) -> str:
    """Seconds as milliseconds, 3 significant digits: a small prox took 0.00 s in the table."""
    return f"{1000 * seconds:.3g}"


def _table(prox: list[dict], solvers: list[dict], meta: dict) -> str:
    lines = [f"# recon bench speed ({meta['date']}, {meta['threads']} threads, {meta['cpu']})", ""]
    if meta.get("partial"):
        lines += [f"**Partial: {meta['partial']}** (the run was stopped or is still running).", ""]
    lines += [
        "Fraction of raw conv rate: the prox's convolutions replayed alone over the whole prox "
        "(1: nothing but convolutions; above 1 at small sizes, where each call's overhead is "
        "timed too).",
        "",
    ]
    lines += [
        "| prior | prox ms (contiguous) | prox ms (channels-last) | convolutions alone ms | "
        "fraction of raw conv rate | GFLOP/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in prox:
        lines.append(
            f"| {r['prior']} | {_ms(r['prox_s_contiguous'])} | {_ms(r['prox_s_channels_last'])} | "
            f"{_ms(r['convs_s_channels_last'])} | {r['conv_fraction_channels_last']:.2f} | "
            f"{r['gflop'] / r['prox_s_channels_last']:.1f} |"
        )
    if solvers:
        lines += ["", "| method | channels-last | projection matrix | CG preconditioner | "
                  "retained memory | PSNR dB | solver s | wall s (with simulation, set-up) | "
                  "iterations |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip

        def flag(v):
            return "–" if v is None else ("on" if v else "**off**")

        for r in solvers:
            flags = " | ".join(
                flag(r.get(k))
                for k in ("channels_last", "projection_matrix", "preconditioner", "retained_memory")
            )
            lines.append(f"| {r['method']} | {flags} | {r['psnr']:.2f} | {r['seconds']:.1f} "
                         f"| {r['wall_seconds']:.1f} | {r['iterations']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def add_bench_parser(bsub) -> None:
    s = bsub.add_parser(
        "speed",
        help="prox and solver time on a 512² CT slice, against the raw convolution rate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--out", default="out/bench-speed")
    s.add_argument("--priors", nargs="+", default=["aelpn-ct"])
    s.add_argument(
        "--size",
        type=count(1, 512, " (the slice's side)"),
        default=512,
        help="side of the slice the prox timings run on (default 512); the solver rows always "
        "reconstruct the whole 512² slice (minutes; --no-solvers skips them)",
    )
    s.add_argument("--views", type=count(), default=90)
    s.add_argument("--photons", type=float, default=1e5)
    s.add_argument("--repeats", type=count(), default=3)
    s.add_argument("--no-solvers", action="store_true", help="time the prox only")
    s.add_argument(
        "--quick",
        action="store_true",
        help="one repeat, and the solver rows with every speed-up on only (no each-off rows)",
    )
    s.add_argument("--threads", type=int, default=None)


def run_bench(args: argparse.Namespace) -> int:
    import platform

    from recon.pipeline import set_threads

    set_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "timing": f"best of {repeats} after a warm-up",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write(prox: list[dict], solvers: list[dict], partial: str | None = None) -> str:
        info = {**meta, **({"partial": partial} if partial else {})}
        text = json.dumps({"meta": info, "prox": prox, "solvers": solvers}, indent=1)
        atomic_write(out / "speed.json", lambda tmp: tmp.write_text(text))
        table = _table(prox, solvers, info)
        atomic_write(out / "table.md", lambda tmp: tmp.write_text(table))
        return table

    prox = prox_rows(args.priors, args.size, repeats)
    solvers: list[dict] = []
    if not args.no_solvers:
        write(prox, [], "prox rows only so far")

        def on_row(rows: list[dict], total: int) -> None:
            write(prox, rows, None if len(rows) == total else f"{len(rows)} of {total} solver rows")

        solvers = solver_rows(args.priors, args.views, args.photons, args.quick, on_row)
    table = write(prox, solvers)
    print(table)
    return 0
