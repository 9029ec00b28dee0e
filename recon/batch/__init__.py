"""`recon batch ct|mri`: reconstruct many scans with Dask, locally or on a cluster.

    recon batch ct  --inputs FOLDER|GLOB|FILE ... --out DIR [`recon ct` options but --slice]
    recon batch mri --inputs FOLDER|GLOB|FILE ... --out DIR [every `recon mri` option]

Each scan is reconstructed exactly as `recon ct` / `recon mri` would with the same options (same
code, same files: recon.npy, recon.png, metrics.json, history.json, convergence.png,
comparison.png, and reconstruction.h5 for MRI), into DIR mirroring the input layout (see
``recon.batch.plan``). One Dask task per slice, or per volume with ``--per volume``: each MRI
``.h5`` file whole, as `recon mri --input FILE` does it, and each CT DICOM series folder whole,
as `recon ct --input FOLDER` does it.

Cluster: by default a local one with one worker *process* per core (``--workers N``), one thread
and one torch thread each; ``--scheduler ADDRESS`` (e.g. tcp://host:8786, started with
``dask scheduler`` and ``dask worker ADDRESS --nthreads 1`` on each machine, all seeing DIR and
the inputs under the same paths) uses an existing cluster instead. Each worker loads a prior
once, whatever the number of its tasks.

Resume: a scan is finished when its metrics.json exists (written atomically and last) and its
.batch-options digest (written after it) matches the run's options, so a
rerun of the same command after a crash, Ctrl-C or a killed worker reconstructs only the scans
not finished; DIR/batch.json records the options, and a rerun with different options into the
same DIR is refused (``--redo`` recomputes everything). A failing scan is recorded with its error
in DIR/failures.json and does not stop the others; DIR/summary.md and summary.json hold the
metrics per scan, their mean, the failures and each worker's prior loads and peak memory.
Exit status: 0 when every scan is finished, 1 when some failed, 3 when none failed but some image
is unusable (diverged or far from the data, as ``recon ct`` exits 3), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from recon.batch.plan import (
    NEUTRAL_OPTIONS,
    Unit,
    find_inputs,
    group_tasks,
    options_digest,
    plan_units,
)
from recon.batch.summary import exit_status, metrics_row, summarize, write_summary
from recon.outputs import prepare_out_dir, save_json

__all__ = ["add_parser", "run"]

BATCH_ONLY = ("inputs", "per", "workers", "scheduler", "redo", "out", "quiet", "slice")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="reconstruct many scans with Dask (local or cluster)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modal = p.add_subparsers(dest="modality", required=True, metavar="ct|mri")
    from recon import ct, mri

    for name, module in (("ct", ct), ("mri", mri)):
        q = modal.add_parser(
            name,
            help=f"every `recon {name}` option applies to each scan",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        q.add_argument(
            "--inputs",
            nargs="+",
            required=True,
            metavar="FOLDER|GLOB|FILE",
            help="folders (searched recursively), glob patterns (quote them; ** allowed), files",
        )
        q.add_argument(
            "--per",
            choices=["slice", "volume"],
            default="slice",
            help="one Dask task per slice (default) or per volume, reconstructed whole: an .h5 "
            "file (one reconstruction.h5, volume metrics) or a CT DICOM series folder (NIfTI "
            "and DICOM series outputs)",
        )
        q.add_argument("--workers", type=int, default=None, help="local cluster size (cores)")
        q.add_argument("--scheduler", default=None, help="address of an existing Dask cluster")
        q.add_argument(
            "--redo", action="store_true", help="recompute finished scans too (new options)"
        )
        module.add_options(q)
        if name == "ct":  # refused in run with a line saying why (argparse: "unrecognized")
            q.add_argument("--slice", "--slices", dest="slice", help=argparse.SUPPRESS)
        for action in q._actions:  # `recon mri --slice` also takes A:B; a batch does not (run)
            if name == "mri" and action.dest == "slice":  # (ct's stays hidden: it is refused)
                action.help = (
                    "the slice of each fastMRI file: K, or all (the default); no A:B ranges"
                )
        q.set_defaults(out=None)  # required for a batch (checked in run: one-line error)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline options every task gets (paths made absolute for the workers)."""
    opts = {
        k: v
        for k, v in vars(args).items()
        if k not in BATCH_ONLY and k not in ("func", "command", "modality", "debug", "given")
    }
    for key in ("config", "prior"):
        if opts.get(key) and Path(opts[key]).exists():
            opts[key] = str(Path(opts[key]).resolve())
    return opts


def _check_record(out: Path, modality: str, options: dict[str, Any], redo: bool) -> None:
    """Refuse to mix results of different options in one --out (unless --redo); record ours."""
    record = out / "batch.json"
    if record.is_file() and not redo:
        import json

        try:
            old = json.loads(record.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{record}: not valid JSON ({exc}); remove it or use --redo") from None
        before = {"modality": old.get("modality"), **(old.get("options") or {})}
        now = {"modality": modality, **save_json_roundtrip(options)}
        keys = (set(before) | set(now)) - set(NEUTRAL_OPTIONS)
        diff = sorted(k for k in keys if before.get(k) != now.get(k))
        if diff:
            changes = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in diff)
            raise ValueError(
                f"--out {out}: holds a batch run with other options ({changes}); "
                "use a new --out, or --redo to recompute every scan"
            )
    save_json(record, {"modality": modality, "options": options})


def save_json_roundtrip(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as it reads back from JSON (tuples become lists, ...), for comparisons."""
    import json

    from recon.outputs import jsonable

    return json.loads(json.dumps(jsonable(obj)))


def _client(args: argparse.Namespace):
    """(client, cluster or None): the --scheduler cluster or a new local process cluster."""
    from distributed import Client, LocalCluster

    if args.scheduler:
        try:
            return Client(args.scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"--scheduler {args.scheduler}: cannot connect ({exc})") from None
    n = args.workers or _cores()
    # The worker processes start with SIGINT ignored (inherited; Python then installs no
    # KeyboardInterrupt handler in them), so Ctrl-C reaches this process only, which closes the
    # cluster; their logs stop at CRITICAL, so the heartbeats that fail while it closes say
    # nothing. A task's own errors reach us as its exception (failures.json), not as logs.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return Client(cluster), cluster


def _execute(
    tasks: list[list[Unit]], modality: str, options: dict[str, Any], args: argparse.Namespace
) -> tuple[dict[str, dict], dict[tuple, dict], float, float, int]:
    """Run the tasks; (rows by unit name, worker stats, startup s, wall s, workers)."""
    from distributed import as_completed

    from recon.batch.worker import run_task
    from solvers.progress import progress_bar

    t_start = time.perf_counter()
    client, cluster = _client(args)
    rows: dict[str, dict] = {}
    workers: dict[tuple, dict] = {}
    try:
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
        startup = time.perf_counter() - t_start
        t0 = time.perf_counter()
        run_id = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                run_task,
                modality,
                options,
                [u.to_dict() for u in task],
                key=f"recon-batch-{run_id}-{i}",
                pure=False,
            ): task
            for i, task in enumerate(tasks)
        }
        total = sum(len(t) for t in tasks)
        with progress_bar(
            total=total, desc=f"recon batch {modality}", unit="scan", disable=args.quiet
        ) as bar:
            n_failed = 0
            for fut in as_completed(futures):
                task = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: record, go on
                    err = f"{type(exc).__name__}: {exc}"
                    if type(exc).__name__ == "KilledWorker":
                        err += " (the worker process died running it: out of memory?)"
                    res = {"rows": [_failed(u, err) for u in task], "worker": None}
                for row in res["rows"]:
                    rows[row["name"]] = row
                    n_failed += row["status"] == "failed"
                    for text in row.get("warnings", ()):  # shown with --quiet too, as recon ct
                        bar.write(f"recon batch: warning: {row['name']}: {text}", file=sys.stderr)
                w = res["worker"]
                if w is not None:
                    key = (w["host"], w["pid"])
                    if key not in workers or w["units"] >= workers[key]["units"]:
                        workers[key] = w
                bar.update(len(task))
                if n_failed:
                    bar.set_postfix(failed=n_failed)
        wall = time.perf_counter() - t0
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return rows, workers, startup, wall, n_workers


def _failed(unit: Unit, error: str) -> dict[str, Any]:
    return {
        "name": unit.name,
        "input": unit.input,
        "out": unit.out,
        "status": "failed",
        "error": error,
    }


def _refuse_ignored_options(args: argparse.Namespace, files: list[Path]) -> None:
    """Refuse up front, not once per scan, the options no input of the run would use: ``--size``
    (files keep their own size), ``--coils`` when an input is measured k-space (``.h5``) and
    ``--units`` when an input is not a ``.npy`` image (DICOM carries its own)."""
    if getattr(args, "size", None) is not None:
        raise ValueError(
            f"--size {args.size}: batch inputs are files, reconstructed at their own size"
        )
    own_units = [f for f in files if f.suffix.lower() != ".npy"]
    if getattr(args, "units", None) is not None and own_units:
        raise ValueError(
            f"--units {args.units}: {len(own_units)} input(s) carry their own units (e.g. "
            f"{own_units[0]}); --units sets the units of .npy images"
        )
    kspace = [f for f in files if f.suffix.lower() == ".h5"]
    if getattr(args, "coils", None) is not None and kspace:
        raise ValueError(
            f"--coils {args.coils}: {len(kspace)} input(s) hold measured k-space with their own "
            f"coils (e.g. {kspace[0]}); --coils sets the coils simulated from .npy images"
        )


def run(args: argparse.Namespace) -> int:
    if not args.out:
        raise ValueError(f"recon batch {args.modality}: --out DIR is required")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers}: must be at least 1")
    if args.workers is not None and args.scheduler:
        raise ValueError("--workers sizes the local cluster; with --scheduler it has no effect")
    modality = args.modality
    if modality == "ct" and getattr(args, "slice", None) is not None:
        raise ValueError(
            f"--slice {args.slice}: recon batch ct reconstructs each scan whole (a DICOM series "
            "folder with --per volume: every slice); for some slices of one series, use "
            "recon ct --input FOLDER --slice A:B"
        )
    prepare_out_dir(args.out, inputs=tuple(args.inputs))
    out = Path(args.out).resolve()
    files = find_inputs(args.inputs, modality, exclude=out)
    _refuse_ignored_options(args, files)
    raw = getattr(args, "slice", None) if modality == "mri" else None
    try:
        slice_index = None if raw in (None, "all") else int(raw)
    except ValueError:
        raise ValueError(f"--slice {raw!r}: recon batch takes one slice index K, or all") from None
    named = {Path(spec).resolve() for spec in args.inputs if Path(spec).is_file()}
    units, plan_failures = plan_units(files, modality, out, slice_index, args.per, named)
    options = _options(args)
    _check_record(out, modality, options, args.redo)
    digest = options_digest(modality, options)
    todo = units if args.redo else [u for u in units if not u.finished(digest)]
    tasks = group_tasks(todo, args.per)
    got: dict[str, dict] = {}
    workers: dict = {}
    startup = wall = 0.0
    n_workers = 0
    if tasks:
        got, workers, startup, wall, n_workers = _execute(
            tasks, modality, {**options, "_redo": args.redo, "_digest": digest}, args
        )
    rows = []
    for u in units:
        row = got.get(u.name)
        if row is None or row["status"] == "skipped":
            if not u.finished(digest):  # cannot happen unless files vanished under us
                rows.append(_failed(u, "no result and no metrics.json"))
                continue
            row = metrics_row(u.name, u.out, "skipped")
        rows.append(row)
    rows += [{**f, "status": "failed", "metrics": {}} for f in plan_failures]
    n_done = sum(r.get("n_slices", 1) for r in rows if r["status"] == "done")  # slices
    summary = summarize(
        rows,
        {i: w for i, w in enumerate(workers.values())},
        {
            "modality": modality,
            "out": str(out),
            "per": args.per,
            "cluster": args.scheduler or f"local, {n_workers} worker processes",
            "workers": n_workers,
            "startup_seconds": startup,
            "wall_seconds": wall,
            "slices_per_minute": 60.0 * n_done / wall if wall > 0 and n_done else None,
        },
    )
    text = write_summary(out, summary)
    c = summary["counts"]
    if not args.quiet:
        print(text)
    print(
        f"recon batch {modality}: {c['done']} reconstructed, {c['skipped']} already finished, "
        f"{c['failed']} failed"
        + (f", {len(summary['unusable'])} unusable" if summary.get("unusable") else "")
        + f" -> {out}/summary.md"
        + (f" (errors in {out}/failures.json)" if c["failed"] else "")
    )
    return exit_status(summary)
