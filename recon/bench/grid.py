"""`recon bench grid`: problems × solvers × priors over a small seeded test set.

Problems (``recon.tune.problems.PROBLEMS``): CT parallel 60 / 30 views, limited angle 120°, fan
beam; MRI 4×/8× random and equispaced, radial 4×. Solvers: PnP-PGD, accelerated PGD (FISTA
with adaptive restart), PnP-ADMM. Priors: every shipped learned prior of the modality and TV,
plus the FBP / zero-filled baselines. Parameters come from the shipped presets (or
``--config``), with ``--iters`` iterations for every run in place of the presets' counts (one
budget for every method; the tolerance still stops a run early).

Each cell (problem, scan, solver, prior) is stored as ``cells/<problem>/<scan>/<method>.json``,
written atomically with a hash of its settings; a rerun with the same settings skips it, so an
interrupted grid resumes where it stopped. Then ``results.json``, ``table.md``,
``psnr_vs_time.png`` and ``convergence.png`` are rebuilt from the cells.

Peak memory is the peak resident set size (RSS, /proc/self/statm sampled every 5 ms) above the
RSS at the start of the cell, in MiB: it counts torch, numpy and ASTRA buffers alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.outputs import atomic_write, save_json
from recon.pipeline import SOLVERS, prior_key
from recon.tune.problems import (
    PROBLEMS,
    Scan,
    build_case,
    ct_test_scans,
    modality_of,
    mri_test_scans,
    run_method,
)

__all__ = ["GridSpec", "run_grid", "priors_for", "add_bench_parser", "run_bench"]

QUICK_PROBLEMS = ("ct-par60", "mri-random4")


class PeakRSS:
    """Context manager: peak RSS above the starting RSS (MiB), sampled by a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_mib: float | None = None

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * _page_size()
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> PeakRSS:
        self._base = self._rss()
        self._peak = self._base or 0
        self._stop = threading.Event()
        if self._base is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            r = self._rss()
            if r is not None and r > self._peak:
                self._peak = r
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._base is not None:
            self._thread.join()
            r = self._rss() or 0
            self.peak_mib = (max(self._peak, r) - self._base) / 2**20


def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE")


def priors_for(modality: str) -> list[str]:
    """The shipped learned priors of the modality (``priors/weights/*-<modality>``: AE-LPN,
    LPN, then the convex-ridge ones), then TV."""
    from priors.checkpoint import shipped_priors

    order = {"aelpn": 0, "lpn": 1, "ridge": 2, "crr": 3}
    names = [p for p in shipped_priors() if p.endswith(f"-{modality}")]
    names.sort(key=lambda p: (order.get(p.rsplit("-", 1)[0], len(order)), p))
    return names + ["tv"]


class GridSpec:
    """What the grid runs: problems, scans per modality, solvers, priors, iteration cap."""

    def __init__(
        self,
        problems: list[str],
        ct_scans: list[Scan],
        mri_scans: list[Scan],
        solvers: list[str],
        priors: dict[str, list[str]],
        iters: int,
        presets: dict[str, dict],
        seed: int = 0,
    ) -> None:
        self.problems, self.solvers, self.priors = problems, solvers, priors
        self.scans = {"ct": ct_scans, "mri": mri_scans}
        self.iters, self.presets, self.seed = iters, presets, seed

    def cells(self, problem: str) -> list[tuple[str, str]]:
        """(solver, prior) pairs of a problem, the baseline first as ('baseline', name)."""
        m = modality_of(problem)
        base = "fbp" if m == "ct" else "zero-filled"
        return [("baseline", base)] + [(s, p) for s in self.solvers for p in self.priors[m]]

    def settings_hash(self, problem: str, scan: Scan, solver: str, prior: str) -> str:
        """Hash of everything a cell's result depends on (a changed setting reruns the cell)."""
        m = modality_of(problem)
        key = {
            "problem": PROBLEMS[problem],
            "scan": scan.digest(),
            "solver": solver,
            "prior": prior,
            "iters": self.iters if solver != "baseline" else None,
            "presets": self.presets[m] if solver != "baseline" else None,
            "seed": self.seed,
            "version": 2,  # 2: MRI cases as recon mri builds them; presets not by file name
        }
        weights = _prior_file_digest(prior) if solver != "baseline" else None
        if weights:  # a learned prior: retrained or converted weights rerun the cell
            key["weights"] = weights
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _cell_path(out: Path, problem: str, scan: str, solver: str, prior: str) -> Path:
    return out / "cells" / problem / scan / f"{solver}+{prior_key(prior)}.json"


def _load_cell(path: Path, digest: str) -> tuple[dict | None, bool]:
    """(the finished cell at ``path`` if it was run with these settings, whether a cell run
    with other settings is there)."""
    try:
        cell = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None, False
    same = cell.get("settings_hash") == digest
    return (cell if same else None), not same


def run_grid(spec: GridSpec, out: Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every cell of ``spec`` into ``out``; returns {"cells": [...], "ran": n,
    "skipped": n}. Each finished cell is written atomically before the next one starts."""
    from solvers.progress import progress_bar

    todo = []
    for problem in spec.problems:
        for scan in spec.scans[modality_of(problem)]:
            for solver, prior in spec.cells(problem):
                todo.append((problem, scan, solver, prior))
    cells, ran, skipped, replaced = [], 0, 0, 0
    bar = progress_bar(total=len(todo), desc="bench grid", disable=not progress, unit="cell")
    case_key, case = None, None
    for problem, scan, solver, prior in todo:
        digest = spec.settings_hash(problem, scan, solver, prior)
        path = _cell_path(out, problem, scan.name, solver, prior)
        cell, other = _load_cell(path, digest)
        replaced += other
        if cell is not None:
            skipped += 1
        else:
            bar.set_postfix_str(f"{problem} {scan.name} {solver} {prior}")
            if case_key != (problem, scan.name):
                case, case_key = build_case(problem, scan, spec.seed), (problem, scan.name)
            cell = _run_cell(case, solver, prior, spec)
            cell.update(
                problem=problem, scan=scan.name, solver=solver, prior=prior, settings_hash=digest
            )
            save_json(path, cell)
            ran += 1
        cells.append(cell)
        bar.update(1)
    bar.close()
    return {"cells": cells, "ran": ran, "skipped": skipped, "replaced": replaced}


def _run_cell(case, solver: str, prior: str, spec: GridSpec) -> dict[str, Any]:
    torch.manual_seed(spec.seed)
    if solver == "baseline":
        return {
            **case.metrics(case.baseline),
            "iterations": 0,
            "converged": True,
            "stop_reason": "closed form",
            "iters_to_plateau": None,
            "seconds": case.baseline_seconds,
            "seconds_per_iter": None,
            "peak_mib": None,
            "history": {},
        }
    presets = spec.presets[case.modality]
    with PeakRSS() as mem:
        res = run_method(case, solver, prior, presets, iters=spec.iters)
    res["peak_mib"] = mem.peak_mib
    return res


# --- reporting -----------------------------------------------------------------------------------
def _method(c: dict) -> str:
    prior = prior_key(c["prior"])
    return prior if c["solver"] == "baseline" else f"{c['solver']} + {prior}"


def load_checkpoint(path: str):
    """The prior of a checkpoint given to ``--priors``; ValueError naming the file when it
    cannot be loaded."""
    from priors.checkpoint import CheckpointError, load_prior

    try:
        return load_prior(path)
    except (CheckpointError, OSError) as exc:
        raise ValueError(f"--priors {path}: {exc}") from None


def checkpoint_modality(model) -> str:
    """'ct' or 'mri' for a checkpoint's prior: by its image channels (1: CT, 2: complex MRI)."""
    channels = getattr(model, "config", dict)().get("in_channels", 1)
    return "mri" if channels == 2 else "ct"


def _check_sigma_rules(path: str, model, solvers: list[str], presets: dict) -> None:
    """ValueError (naming the preset entry to add) when the checkpoint at ``path`` (its prior
    ``model``) takes the noise level and a solver's preset section gives it no σ rule: found
    here, not cells later."""
    from priors.lpn import takes_noise_level
    from recon.pipeline import has_sigma_rule, method_params, missing_sigma_rule

    if not takes_noise_level(model):
        return
    for solver in solvers:
        base, _, params = method_params(presets, solver, path)
        if not has_sigma_rule(params):
            raise ValueError(f"--priors {path}: {missing_sigma_rule(path, base)}")


def _check_prior_names(asked: list[str], priors: dict[str, list[str]], mods: set[str]) -> None:
    """ValueError for ``--priors`` the grid would drop or mix up: one of a modality that no
    problem left to run has (it would give no row), or two that share a name (cells, tables and
    a ``--config``'s per-prior sections are filed by the file stem, ``prior_key``)."""
    from recon.pipeline import prior_key

    running = {p for m in mods for p in priors[m]}
    unused = [p for p in dict.fromkeys(asked) if p not in running]
    if unused:
        other = "/".join(sorted({m for m, v in priors.items() for p in v if p in unused}))
        raise ValueError(
            f"--priors {' '.join(unused)}: for {other}, but the problems left to run are "
            f"{'/'.join(sorted(mods))} (see --modality/--problems)"
        )
    seen: dict[str, str] = {}
    for p in dict.fromkeys(asked):
        key = prior_key(p)
        if key in seen:
            raise ValueError(
                f"--priors {seen[key]} {p}: both are named {key!r} in the grid's cells and "
                "tables (by file stem): rename one of the checkpoints"
            )
        seen[key] = p


def summarize(cells: list[dict]) -> list[dict]:
    """Mean over scans per (problem, method): PSNR, SSIM, iterations, converged count, seconds,
    s/iteration, peak MiB."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["problem"], _method(c)), []).append(c)

    def mean(rows, key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    rows = []
    for (problem, method), cs in groups.items():
        rows.append(
            {
                "problem": problem,
                "method": method,
                "solver": cs[0]["solver"],
                "prior": cs[0]["prior"],
                "scans": len(cs),
                "psnr": mean(cs, "psnr"),
                "ssim": mean(cs, "ssim"),
                "iterations": mean(cs, "iterations"),
                "converged": sum(bool(c["converged"]) for c in cs if c["solver"] != "baseline"),
                "unusable": sum(bool(c.get("unusable")) for c in cs),
                "iters_to_plateau": mean(cs, "iters_to_plateau"),
                "seconds": mean(cs, "seconds"),
                "seconds_per_iter": mean(cs, "seconds_per_iter"),
                "peak_mib": mean(cs, "peak_mib"),
            }
        )
    return rows


def _fmt(v, f: str) -> str:
    return "–" if v is None else format(v, f)


def table_markdown(rows: list[dict], iters: int, scans: dict[str, list[str]]) -> str:
    """The grid table: one block per problem, best PSNR in bold."""
    lines = [
        f"Mean over the test scans (CT: {', '.join(scans['ct']) or '–'}; "
        f"MRI: {', '.join(scans['mri']) or '–'}); at most {iters} iterations. "
        "`iters` = iterations run (converged by tolerance / scans), `plateau` = first iteration "
        "within 0.1 dB of the run's best PSNR, `s` = solver seconds, `MiB` = peak RSS above the "
        "cell's start; `unusable k/n`: k of the n scans ended diverged or far from the data "
        "(`recon.pipeline.unusable_reason`).",
        "",
        "| problem | method | PSNR (dB) | SSIM | iters (conv.) | plateau | s | s/iter | MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        block = [r for r in rows if r["problem"] == problem]
        best = max((r["psnr"] for r in block if r["psnr"] is not None), default=None)
        for r in block:
            ps = _fmt(r["psnr"], ".2f")
            if r["psnr"] is not None and r["psnr"] == best:
                ps = f"**{ps}**"
            it = (
                "–"
                if r["solver"] == "baseline"
                else f"{r['iterations']:.0f} ({r['converged']}/{r['scans']})"
            )
            method = r["method"]
            if r.get("unusable"):
                method += f" (unusable {r['unusable']}/{r['scans']})"
            lines.append(
                f"| {problem} | {method} | {ps} | {_fmt(r['ssim'], '.3f')} | {it} | "
                f"{_fmt(r['iters_to_plateau'], '.0f')} | {_fmt(r['seconds'], '.2f')} | "
                f"{_fmt(r['seconds_per_iter'], '.3f')} | {_fmt(r['peak_mib'], '.0f')} |"
            )
    lines += ["", "Mean PSNR (dB) over all problems of a modality:", ""]
    for m in ("ct", "mri"):
        mrows = [r for r in rows if modality_of(r["problem"]) == m]
        if not mrows:
            continue
        lines += [f"| {m.upper()} method | mean PSNR | mean SSIM | mean s |", "|---|---|---|---|"]
        for meth in dict.fromkeys(r["method"] for r in mrows):  # the order of the blocks above
            sel = [r for r in mrows if r["method"] == meth and r["psnr"] is not None]
            if sel:
                bad, n = sum(r.get("unusable") or 0 for r in sel), sum(r["scans"] for r in sel)
                label = f"{meth} (unusable {bad}/{n})" if bad else meth
                lines.append(
                    f"| {label} | {np.mean([r['psnr'] for r in sel]):.2f} | "
                    f"{np.mean([r['ssim'] for r in sel]):.3f} | "
                    f"{np.mean([r['seconds'] for r in sel]):.2f} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


def _family(prior: str) -> str:
    """aelpn-ct -> aelpn (one line style per prior family across modalities)."""
    return prior_key(prior).split("-")[0]


def plot_grid(cells: list[dict], out: Path) -> list[Path]:
    """psnr_vs_time.png (PSNR vs solver seconds, one panel per solver, first scan of each
    problem) and convergence.png (relative change vs iteration, one panel per problem)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from recon.outputs import save_figure

    runs = [c for c in cells if c["solver"] != "baseline" and c.get("history")]
    if not runs:
        return []
    first_scan = {}
    for c in runs:
        first_scan.setdefault(c["problem"], c["scan"])
    runs = [c for c in runs if c["scan"] == first_scan[c["problem"]]]
    solvers = list(dict.fromkeys(c["solver"] for c in runs))
    problems = list(dict.fromkeys(c["problem"] for c in runs))
    families = list(dict.fromkeys(_family(c["prior"]) for c in runs))
    # one look per prior family: 4 line styles, then the same with markers (up to 12 families)
    looks = [(ls, mk) for mk in ("", "o", "s") for ls in ("-", "--", ":", "-.")]
    styles = {f: looks[i % len(looks)] for i, f in enumerate(families)}

    def look(family: str) -> dict:
        ls, mk = styles[family]
        return {"ls": ls, "marker": mk or None, "markevery": 0.15, "markersize": 3.5}

    colors = {p: f"C{i}" for i, p in enumerate(problems)}
    mods = list(dict.fromkeys(modality_of(p) for p in problems))
    paths = []
    fig, axes = plt.subplots(
        len(mods), len(solvers), figsize=(5 * len(solvers), 3.8 * len(mods)), squeeze=False
    )
    for row, mod in zip(axes, mods, strict=True):
        for ax, s in zip(row, solvers, strict=True):
            finals: list[float] = []
            lowest = math.inf
            for c in runs:
                if c["solver"] != s or modality_of(c["problem"]) != mod:
                    continue
                h = c["history"]
                pts = [
                    (t, p)
                    for t, p in zip(h.get("seconds", []), h.get("psnr", []), strict=False)
                    if t is not None and p is not None
                ]
                if pts:
                    t, p = zip(*pts, strict=True)
                    ax.plot(t, p, color=colors[c["problem"]], lw=1.2, **look(_family(c["prior"])))
                    finals.append(p[-1])
                    lowest = min(lowest, min(p))
            if finals:  # a run far below the others (a poor prior) does not flatten them
                ax.set_ylim(bottom=max(lowest, float(np.median(finals)) - 10.0) - 0.5)
            ax.set(xlabel="seconds", ylabel="PSNR (dB)", title=f"{mod.upper()}: {s}")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.grid(alpha=0.3)
        handles = [
            plt.Line2D([], [], color=colors[p], label=p) for p in problems if modality_of(p) == mod
        ]
        handles += [plt.Line2D([], [], color="k", label=f, **look(f)) for f in families]
        row[-1].legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle("PSNR vs solver time (first test scan of each problem)", fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(out / "psnr_vs_time.png", fig))

    ncol = min(len(problems), 5)
    nrow = -(-len(problems) // ncol)
    n_legend = len(solvers) + len(families)
    legend_cols = min(n_legend, 2 * ncol + 1, 8)  # about 1.8 inches per legend entry
    legend_rows = -(-n_legend // legend_cols)
    height = 3.2 * nrow + 0.25 * legend_rows
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(max(3.8 * ncol, 1.8 * legend_cols), height), squeeze=False
    )
    for ax, prob in zip(axes.flat, problems, strict=False):
        for c in (c for c in runs if c["problem"] == prob):
            rc = [v for v in c["history"].get("rel_change", []) if v is not None and v > 0]
            ax.semilogy(
                range(1, len(rc) + 1),
                rc,
                color=f"C{solvers.index(c['solver'])}",
                lw=1.1,
                **look(_family(c["prior"])),
            )
        ax.set_title(prob, fontsize=9)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(problems) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("||x⁺ − x|| / ||x||")
    # one legend for the figure, below the panels: every solver (colour), every prior (style)
    handles = [plt.Line2D([], [], color=f"C{i}", label=s) for i, s in enumerate(solvers)]
    handles += [plt.Line2D([], [], color="k", label=f, **look(f)) for f in families]
    fig.legend(handles=handles, loc="lower center", ncol=legend_cols, fontsize=7)
    fig.suptitle("Convergence (colour: solver, line style: prior)", fontsize=10)
    fig.tight_layout(rect=(0, (0.1 + 0.25 * legend_rows) / height, 1, 1))
    paths.append(save_figure(out / "convergence.png", fig))
    return paths


def _prior_file_digest(prior: str) -> str | None:
    """SHA-256 (16 hex digits) of a learned prior's weights file (shipped name or path), or
    None for priors without one (tv, fbp, zero-filled)."""
    from priors.checkpoint import shipped_priors

    path = shipped_priors().get(prior) or Path(prior)
    if not path.suffix == ".safetensors" or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _weight_digests(names) -> dict[str, str]:
    """First 16 hex digits of the SHA-256 of each shipped prior's weights file (provenance)."""
    from priors.checkpoint import shipped_priors

    have = shipped_priors()
    return {
        n: hashlib.sha256(have[n].read_bytes()).hexdigest()[:16] for n in sorted(names) if n in have
    }


def write_report(spec: GridSpec, result: dict, out: Path, command: str = "") -> None:
    """results.json, table.md and the plots, from the cells."""
    cells = result["cells"]
    rows = summarize(cells)
    scans = {m: [s.name for s in spec.scans[m]] for m in ("ct", "mri")}
    scans = {
        m: v if any(modality_of(p) == m for p in spec.problems) else [] for m, v in scans.items()
    }
    table = table_markdown(rows, spec.iters, scans)
    if command:
        table = f"Command: `{command}` (timings under load, 1 torch thread)\n\n" + table
    save_json(
        out / "results.json",
        {
            "command": command,
            "iters": spec.iters,
            "problems": {p: PROBLEMS[p] for p in spec.problems},
            "scans": scans,
            "memory": "peak RSS above the cell's starting RSS (MiB), /proc/self/statm every 5 ms",
            "seconds": "solver wall time, monitoring (PSNR/SSIM) excluded; torch 1 thread",
            "prior_weights_sha256": _weight_digests(
                {c["prior"] for c in cells if c["solver"] != "baseline"}
            ),
            "summary": rows,
            "cells": [{k: v for k, v in c.items() if k != "history"} for c in cells],
        },
    )
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(table))
    plot_grid(cells, out)


def add_bench_parser(bsub) -> None:
    from recon.argtypes import count

    g = bsub.add_parser(
        "grid",
        help="problems × solvers × priors on a seeded test set (resumable)",
        description=__doc__,
    )
    g.add_argument("--out", default="out/bench-grid")
    g.add_argument(
        "--quick",
        action="store_true",
        help="1 scan per modality, one problem each (ct-par60, mri-random4), 5 iters",
    )
    g.add_argument("--modality", choices=["ct", "mri", "both"], default="both")
    g.add_argument("--problems", nargs="+", default=None, choices=list(PROBLEMS))
    g.add_argument("--solvers", nargs="+", default=None, choices=list(SOLVERS))
    g.add_argument(
        "--priors",
        nargs="+",
        default=None,
        help="restrict priors (e.g. tv crr-ct); a checkpoint path (.safetensors) adds your own",
    )
    g.add_argument(
        "--iters",
        type=count(1),
        default=None,
        help="iterations of every run, in place of the presets' counts (the tolerance "
        "still stops a run early; default 30; quick 5)",
    )
    g.add_argument("--size", type=count(8, 4096), default=128, help="CT phantom size")
    g.add_argument(
        "--ct-phantoms", type=count(0, 2), default=2, help="seeded phantoms in the CT set (0-2)"
    )
    g.add_argument("--no-real-ct", action="store_true", help="leave out bundled:ct-small")
    g.add_argument("--mri-scans", type=count(1, 3), default=2, help="Colin27 test slices (1-3)")
    g.add_argument("--ct-config", default=None, help="CT presets JSON (default: shipped)")
    g.add_argument("--mri-config", default=None, help="MRI presets JSON (default: shipped)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings)")
    g.add_argument("--quiet", action="store_true")


def spec_from_args(args) -> GridSpec:
    """Validate the flags and build the grid (``--quick``: 1 scan and 1 problem per
    modality, 5 iterations)."""
    from recon.pipeline import load_presets

    iters = args.iters if args.iters is not None else (5 if args.quick else 30)
    if iters < 1:
        raise ValueError(f"--iters must be ≥ 1, got {iters}")
    if args.problems:
        problems = list(args.problems)
    else:
        problems = list(QUICK_PROBLEMS) if args.quick else list(PROBLEMS)
    if args.modality != "both":
        problems = [p for p in problems if modality_of(p) == args.modality]
    if not problems:
        raise ValueError(f"--problems/--modality {args.modality}: no problem left to run")
    mods = {modality_of(p) for p in problems}
    n_ph = 1 if args.quick else args.ct_phantoms
    real = not (args.no_real_ct or args.quick)
    if not (0 <= n_ph <= 2) or (n_ph == 0 and not real):
        raise ValueError("--ct-phantoms must be 0..2 (and not 0 with --no-real-ct)")
    if not 1 <= args.mri_scans <= 3:
        raise ValueError(f"--mri-scans must be 1..3, got {args.mri_scans}")
    ct = ct_test_scans(args.size, n_ph, real) if "ct" in mods else []
    mri = mri_test_scans(1 if args.quick else args.mri_scans) if "mri" in mods else []
    priors = {m: priors_for(m) for m in ("ct", "mri")}
    models = {}  # your own checkpoints, each loaded once
    if args.priors:
        checkpoints = [p for p in args.priors if p.endswith(".safetensors")]
        unknown = set(args.priors) - set(priors["ct"]) - set(priors["mri"]) - set(checkpoints)
        if unknown:
            raise ValueError(
                f"--priors {' '.join(sorted(unknown))}: not shipped "
                f"(available: {', '.join(dict.fromkeys(priors['ct'] + priors['mri']))}, or a "
                "checkpoint path ending in .safetensors)"
            )
        priors = {m: [p for p in v if p in args.priors] for m, v in priors.items()}
        for path in checkpoints:  # your own priors, each in the modality of its channels
            models[path] = load_checkpoint(path)
            priors[checkpoint_modality(models[path])].append(path)
        _check_prior_names(args.priors, priors, mods)
    presets = {
        "ct": load_presets("ct", args.ct_config),
        "mri": load_presets("mri", args.mri_config),
    }
    solvers = list(args.solvers or SOLVERS)
    for m in mods:  # before any cell runs: a checkpoint that takes σ needs its σ rule
        for prior in priors[m]:
            if prior in models:
                _check_sigma_rules(prior, models[prior], solvers, presets[m])
    return GridSpec(problems, ct, mri, solvers, priors, iters, presets, args.seed)


def _command(args) -> str:
    """The `recon bench grid` command line that reproduces ``args`` (non-default flags)."""
    import shlex

    parts = ["recon", "bench", "grid"]
    defaults = {"out": "out/bench-grid", "modality": "both", "size": 128, "ct_phantoms": 2,
                "mri_scans": 2, "seed": 0, "threads": 1}  # fmt: skip
    for key, val in vars(args).items():
        if key in ("command", "bench", "func", "bench_run", "quiet", "given") or val in (
            None,
            False,
        ):
            continue
        if defaults.get(key) == val:
            continue
        flag = "--" + key.replace("_", "-")
        if val is True:
            parts.append(flag)
        elif isinstance(val, list):
            parts += [flag, *map(str, val)]
        else:
            parts += [flag, str(val)]
    return " ".join(shlex.quote(p) for p in parts)


def run_bench(args) -> int:
    torch.set_num_threads(max(1, args.threads))
    spec = spec_from_args(args)
    out = Path(args.out)
    result = run_grid(spec, out, progress=not args.quiet)
    write_report(spec, result, out, _command(args))
    if not args.quiet:
        print((out / "table.md").read_text())
        print(f"{result['ran']} cells run, {result['skipped']} reused -> {out}/")
    if result["replaced"]:  # said even with --quiet: the folder's earlier results changed
        print(
            f"recon bench grid: {result['replaced']} cell(s) in {out} held results of other "
            "settings and were recomputed; table.md covers this run's cells only",
            file=sys.stderr,
        )
    return 0
