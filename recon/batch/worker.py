"""The code a `recon batch` task runs on a Dask worker: the `recon ct` / `recon mri` pipeline on
each of its units, one torch thread, priors loaded once per worker process.

Prior cache: the pipelines load their prior with ``priors.checkpoint.load_prior`` (imported when
``recon.pipeline.reconstruct`` runs). On its first task, a worker process replaces that function
by a caching wrapper keyed by (name or path, file modification time, device, dtype), so a worker
loads each prior once however many tasks it runs. Priors are read-only during reconstruction;
the one piece of state a learned prior keeps between calls (the warm start of its regularizer
evaluation) is cleared before each reuse, so a cached prior gives the same result as a fresh
one. ``worker_stats()`` reports how many loads the process did (the tests check it is one).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from recon.batch.plan import OPTIONS_MARK, Unit
from recon.batch.summary import SUMMARY_KEYS, WARNINGS_FILE

__all__ = ["run_task", "worker_stats", "install_prior_cache", "warning_texts"]

_STATS = {"prior_loads": 0, "prior_hits": 0, "units": 0}
_CACHE: dict[tuple, Any] = {}
_READY = False


def install_prior_cache() -> None:
    """Make ``priors.checkpoint.load_prior`` cache its results in this process (idempotent)."""
    import priors.checkpoint as ck

    if getattr(ck.load_prior, "_batch_cache", False):
        return
    original = ck.load_prior

    def load_prior_cached(name_or_path, device="cpu", dtype=None):
        import torch

        dtype = torch.float32 if dtype is None else dtype
        name = str(name_or_path)
        path = ck.shipped_priors().get(name) or Path(name)
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        key = (name, stamp, str(device), str(dtype))
        if key not in _CACHE:
            _STATS["prior_loads"] += 1
            _CACHE[key] = original(name_or_path, device=device, dtype=dtype)
        else:
            _STATS["prior_hits"] += 1
        prior = _CACHE[key]
        if hasattr(prior, "_last_preimage"):
            prior._last_preimage = None
        return prior

    load_prior_cached._batch_cache = True
    load_prior_cached.__doc__ = original.__doc__
    ck.load_prior = load_prior_cached


def _setup() -> None:
    global _READY
    if _READY:
        return
    import torch

    from recon.memory import retain_freed_memory

    torch.set_num_threads(1)
    retain_freed_memory()
    install_prior_cache()
    _READY = True


def worker_stats() -> dict[str, Any]:
    """This process: pid, host, units run, prior loads and cache hits, peak RSS (MB)."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "units": _STATS["units"],
        "prior_loads": _STATS["prior_loads"],
        "prior_hits": _STATS["prior_hits"],
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def run_unit(modality: str, options: dict[str, Any], unit: dict[str, Any]) -> dict[str, Any]:
    """Reconstruct one unit with the `recon ct|mri` options; never raises (errors recorded)."""
    _setup()
    out = Path(unit["out"])
    row: dict[str, Any] = {
        "name": unit["name"],
        "input": unit["input"],
        "out": unit["out"],
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    digest = options.get("_digest")
    mark = out / OPTIONS_MARK
    if Unit(**unit).finished(digest) and not options.get("_redo"):
        return {**row, "status": "skipped"}  # finished by an earlier attempt of this task
    mark.unlink(missing_ok=True)  # until the new metrics.json is in place
    (out / WARNINGS_FILE).unlink(missing_ok=True)  # the earlier run's; this one writes its own
    ns = argparse.Namespace(**{k: v for k, v in options.items() if not k.startswith("_")})
    ns.input, ns.slice, ns.out, ns.quiet = unit["input"], unit["slice"], unit["out"], True
    if modality == "ct":
        from recon.ct import reconstruct_input
    elif unit.get("whole"):
        from recon.mri import reconstruct_file as reconstruct_input
    else:
        from recon.mri import reconstruct_input
    for stale in out.glob(".*.tmp") if out.is_dir() else ():
        stale.unlink(missing_ok=True)  # left by a process killed mid-write (never final names)
    t0 = time.perf_counter()
    said: list[warnings.WarningMessage] = []
    try:
        # what the pipeline warns about goes back with the row (the batch prints it as one
        # line per warning, and keeps it in the summary), not to the worker's stderr. The
        # interpreter's filters still decide what is said (no "always": the defaults hide
        # DeprecationWarning, ResourceWarning, ...; -W / PYTHONWARNINGS are kept); entering
        # catch_warnings resets the once-per-location registries, so each scan says its own
        with warnings.catch_warnings(record=True) as said:
            metrics = reconstruct_input(ns, out)
    except Exception as exc:  # noqa: BLE001 - a failed scan is recorded, the others go on
        return {
            **row,
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "wall_seconds": time.perf_counter() - t0,
            **warning_texts(said),
        }
    finally:
        _STATS["units"] += 1
    said_texts = warning_texts(said)
    if said_texts:  # kept with the scan: a rerun that skips it lists them again (metrics_row)
        from recon.outputs import save_json

        save_json(out / WARNINGS_FILE, said_texts)
    if digest is not None:  # after metrics.json: a crash in between only costs a redo
        from recon.outputs import atomic_write

        atomic_write(mark, lambda tmp: tmp.write_text(digest + "\n"))
    return {
        **row,
        "status": "done",
        "n_slices": len(metrics.get("slices") or []) or 1,  # a volume unit counts its slices
        "metrics": {k: metrics.get(k) for k in SUMMARY_KEYS if k in metrics},
        "wall_seconds": time.perf_counter() - t0,
        **said_texts,
    }


def warning_texts(said: list[warnings.WarningMessage]) -> dict[str, list[str]]:
    """``{"warnings": [...]}`` with one line per distinct warning in ``said`` (in order): the
    message of this project's warnings, as `recon ct` prints them; ``Category: message (file:
    line)`` for others. Empty when nothing was said."""
    from recon.cli import is_own_file

    texts: list[str] = []
    for w in said:
        text = " ".join(str(w.message).split())
        if not is_own_file(w.filename):
            text = f"{w.category.__name__}: {text} ({Path(w.filename).name}:{w.lineno})"
        if text not in texts:
            texts.append(text)
    return {"warnings": texts} if texts else {}


def run_task(modality: str, options: dict[str, Any], units: list[dict[str, Any]]) -> dict:
    """A Dask task: run each unit in turn; returns {"rows": [...], "worker": worker_stats()}."""
    rows = [run_unit(modality, options, u) for u in units]
    return {"rows": rows, "worker": worker_stats()}
