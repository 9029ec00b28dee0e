"""`recon tune ct|mri`: tune solver parameters per modality on validation scans, write a preset.

    recon tune ct --solver pnp-admm --solver tv --prior crr-ct --preset tuned-ct.json
    recon ct --input scan.dcm --config tuned-ct.json

What is searched (maximizing the mean PSNR over the validation scans × ``--problem`` problems;
each range holds the start, the shipped or ``--config`` value, and a best at a range's end is
reported with the ``--range`` that widens it):
    pnp-admm: ρ: rho_noise, the constant of the noise rule, when the section has one (rho_rel
              is then a floor under the rule), else rho_rel (ρ = rho_rel·λ·||A||²); with a prior
              told the noise level, its σ multiple too
    pnp-pgd:  with a prior whose section holds ADMM's ρ (PGD then solves ADMM's problem and its
              step changes only the speed) that ρ, else step_rel (γ = step_rel/(λ·||A||²))
    tv:       weight_noise, the constant of the noise rule, when the section has one, else
              weight_rel (TV weight = weight_rel × the start image's range), and ρ as above
The data weight λ enters the iterations only through ρ/λ (ADMM's x-update solves
(λAᴴA + ρI)x = λAᴴy + ρ(z − u)) and γλ (PGD), which are exactly rho_rel·||A||² and
step_rel/||A||²: searching rho_rel / step_rel *is* searching the data weight against the prior
(λ stays 1; a separate λ axis would repeat the same points).
The default prior is the CLI's (``crr-ct``, ``ridge-mri``, with its default solver). A learned
prior's tuned section is written under ``priors.<prior>`` only, so the preset leaves the other
priors as shipped; TV's is the ``tv`` section (``--prior tv`` is that one TV with any solver:
tune it with ``--solver tv``). The preset says its modality (``_modality``), and
the other modality's CLI refuses it.

Search: a coarse log grid per parameter, then refinement between the best point and its
neighbours (``recon.tune.search``). A noise rule's constant small enough that its floor held on
every scan is the same run as the floor: it is scored without rerunning. Validation scans:
``--inputs GLOB|FOLDER`` (your own; CT DICOM/.npy, MRI .npy magnitudes or fastMRI .h5),
``--val real-ct`` (four native-resolution windows of a real abdominal CT slice from pydicom-data, a
patient never trained on) or synthetic ones disjoint from the ``recon bench grid`` test set (CT:
ellipse phantoms with other seeds; MRI: other held-out Colin27 slices). A validation set has to
look like the scans it is for: CT phantoms, or whole slices averaged down to 128², asked for far
less regularization than real native-resolution CT. The test scans (and ``--test GLOB``) are
compared by content and tuning refuses to start if any overlaps. ``--report-test`` then (and
only then) scores the shipped and tuned presets on the test scans.

Writes into ``--out``: preset.json (the format of recon/presets/*.json; also to ``--preset``),
search.json (every trial), search-SOLVER.png (PSNR vs each parameter) and test_report.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.outputs import atomic_write, save_figure, save_json
from recon.tune.problems import (
    PROBLEMS,
    Scan,
    build_case,
    check_disjoint,
    ct_real_validation_scans,
    ct_test_scans,
    ct_validation_scans,
    modality_of,
    mri_test_scans,
    mri_validation_scans,
    run_method,
    scans_from_glob,
)
from recon.tune.search import Param, SearchResult, Trial, coordinate_search

__all__ = ["search_space", "tune_solver", "tuned_preset", "add_parser", "run"]

TUNABLE = ("pnp-admm", "pnp-pgd", "tv")
DEFAULT_PROBLEM = {"ct": "ct-par60", "mri": "mri-random4"}


def _rho_param(section: dict[str, Any], points: int) -> Param:
    """ADMM's ρ: its noise-rule constant ``rho_noise`` when the section has one (then rho_rel
    is only a floor under the rule, and searching it would move nothing), else rho_rel."""
    if section.get("rho_noise") is not None:
        return _relative("rho_noise", float(section["rho_noise"]), points)
    return _around(Param("rho_rel", 1e-3, 1.0, float(section["rho_rel"]), points))


def _relative(name: str, init: float, points: int) -> Param:
    """A noise rule's constant: searched over 1/30 to 30 times its start (the rules' powers
    differ, so no absolute range fits them all)."""
    return Param(name, init / 30, init * 30, init, points)


def _around(p: Param) -> Param:
    """``p`` with its range widened to hold its start (the shipped value) well inside it."""
    return Param(p.name, min(p.lo, p.init / 3), max(p.hi, p.init * 3), p.init, p.points)


def search_space(solver: str, section: dict[str, Any], points: int = 7) -> list[Param]:
    """The parameters searched for a preset section, started at the section's values (each
    range holds its start); with a prior that takes the noise level, its σ multiple too
    (``prior_sigma_noise`` if the section has one, else ``prior_sigma_rel``). Where the section
    follows the noise by a rule (``rho_noise``, ``weight_noise``), the rule's constant is
    searched. PnP-PGD with a prior whose section holds ADMM's ρ solves ADMM's problem (its step
    changes only the speed), so its ρ is searched, not its step."""
    sigma = []
    if "prior_sigma_noise" in section:
        sigma = [
            _around(
                Param("prior_sigma_noise", 0.2, 5.0, float(section["prior_sigma_noise"]), points)
            )
        ]
    elif "prior_sigma_rel" in section:  # (with a noise multiple, prior_sigma_rel is a floor)
        sigma = [
            _around(Param("prior_sigma_rel", 0.01, 0.5, float(section["prior_sigma_rel"]), points))
        ]
    if solver == "pnp-admm":
        return [_rho_param(section, points), *sigma]
    if solver == "pnp-pgd":
        if section.get("rho_noise") is not None or "rho_rel" in section:
            return [_rho_param(section, points), *sigma]
        step = min(float(section.get("step_rel", 0.99)), 1.98)
        return [Param("step_rel", min(0.03, step), 1.98, step, points), *sigma]
    if solver == "tv":
        if section.get("weight_noise") is not None:  # the weight follows the noise
            strength = _relative("weight_noise", float(section["weight_noise"]), points)
        else:
            strength = _around(Param("weight_rel", 1e-3, 0.3, float(section["weight_rel"]), points))
        rho = _rho_param(section, max(points - 2, 3))
        if rho.name == "rho_rel":
            rho = _around(Param("rho_rel", 3e-3, 1.0, rho.init, rho.points))
        return [strength, rho]
    raise ValueError(f"--solver {solver}: cannot tune (tunable: {', '.join(TUNABLE)})")


def _method(solver: str, section: dict) -> str:
    """The grid solver name running a preset section (pnp-pgd runs FISTA when accelerated)."""
    if solver == "pnp-pgd":
        return "pnp-fista" if section.get("accelerated") else "pnp-pgd"
    return "pnp-admm" if solver in ("pnp-admm", "tv") else solver


# a noise rule's constant and the preset value it sets: max(floor, constant × noise term)
NOISE_RULES = {"rho_noise": "rho_rel", "weight_noise": "weight_rel"}


def _floor_key(values: dict[str, float], rule: str) -> tuple:
    return (rule, *sorted((k, v) for k, v in values.items() if k != rule))


def _note_floor(floors: dict, values: dict[str, float], runs: list[dict], score: float) -> None:
    """Remember a trial whose noise rule gave every case the floor: then a smaller constant,
    the other values unchanged, is the same run (``_below_floor``)."""
    for rule, key in NOISE_RULES.items():
        if rule in values and all(r["params"].get(f"{key}_floor") for r in runs):
            k = _floor_key(values, rule)
            if values[rule] > floors.get(k, (-math.inf, 0.0))[0]:
                floors[k] = (values[rule], score)


def _below_floor(floors: dict, values: dict[str, float]) -> float | None:
    """The score of a trial already run at the floor, or None (it has to run)."""
    for rule in NOISE_RULES:
        if rule in values:
            hit = floors.get(_floor_key(values, rule))
            if hit is not None and values[rule] <= hit[0]:
                return hit[1]
    return None


def tune_solver(
    cases: list,
    solver: str,
    prior: str,
    presets: dict,
    iters: int,
    points: int = 7,
    refine: int = 2,
    rounds: int = 1,
    params: list[Param] | None = None,
    progress: bool = True,
    passes: int = 1,
) -> SearchResult:
    """Search the parameters of preset section ``solver`` maximizing the mean PSNR over
    ``cases`` (built validation problems) with ``prior`` (ignored for tv), ``iters`` iterations."""
    from solvers.progress import progress_bar

    section = presets[solver]
    space = params or search_space(solver, section, points)
    method = _method(solver, section)
    prior_name = "tv" if solver == "tv" else prior
    bar = progress_bar(desc=f"tune {solver}", unit="trial", disable=not progress)

    floors: dict[tuple, tuple[float, float]] = {}  # see _floor_key

    def score(values: dict[str, float]) -> float:
        known = _below_floor(floors, values)
        if known is not None:
            return known
        trial_presets = {**presets, solver: {**section, **values}}
        runs = [run_method(c, method, prior_name, trial_presets, iters=iters) for c in cases]
        mean = float(np.mean([r["psnr"] for r in runs]))
        _note_floor(floors, values, runs, mean)
        return mean

    def log(t: Trial) -> None:
        bar.update(1)
        vals = " ".join(f"{k}={v:.4g}" for k, v in t.params.items())
        bar.set_postfix_str(f"{vals} -> {t.score:.2f} dB")

    try:
        return coordinate_search(
            score, space, refine=refine, rounds=rounds, passes=passes, on_trial=log
        )
    finally:
        bar.close()


def tuned_preset(
    modality: str,
    base: dict,
    results: dict[str, dict],
    command: str,
    iters: int,
    previous: dict | None = None,
) -> dict[str, Any]:
    """A presets file: each tuned section = the base section with the best values and ``iters``,
    filed under ``priors.<prior>`` for a learned prior (a preset tuned for one prior leaves the
    others as shipped) and as the ``tv`` section for TV; ``_modality`` says which CLI reads it.

    ``previous`` (the ``--config`` file's content, when tuning continues from an earlier tuned
    preset) contributes its other solver sections, its ``_tuned`` records and its commands
    (kept in ``_earlier_commands``), so a preset can be tuned one solver at a time.
    """
    previous = previous or {}
    preset: dict[str, Any] = {
        "_modality": modality,
        "_comment": (
            f"Tuned for `recon {modality} --config FILE` by recon tune (maximal mean validation "
            f"PSNR at the 'iters' of each section); '_tuned' says on what. Sections not listed "
            f"come from the shipped {modality}.json."
        ),
        "_command": command,
    }
    earlier = list(previous.get("_earlier_commands", []))
    if previous.get("_command"):
        earlier.append(previous["_command"])
    if earlier:
        preset["_earlier_commands"] = earlier
    for key, section in previous.items():
        if isinstance(section, dict) and not key.startswith("_"):
            preset[key] = section
    from recon.pipeline import prior_key

    info = dict(previous.get("_tuned", {}))
    for solver, r in results.items():
        section = {**base[solver], **r["best"], "iters": iters}
        info[solver] = {k: v for k, v in r.items() if k not in ("best", "trials")}
        if r.get("prior"):  # filed under the prior only: other priors keep their own presets
            table = preset.setdefault("priors", {})
            table.setdefault(prior_key(r["prior"]), {})[solver] = section
        else:  # TV: one regularizer, its own section
            preset[solver] = section
    preset["_tuned"] = info
    return preset


def plot_search(path: Path, solver: str, result: SearchResult, shipped: dict[str, float]) -> Path:
    """PSNR vs each searched parameter (log x): coarse and refinement trials, shipped value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.best)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        others = [n for n in names if n != name]
        for stage, marker, label in (("coarse", "o", "coarse grid"), ("refine", "s", "refine")):
            pts = [
                (t.params[name], t.score)
                for t in result.trials
                if t.stage.startswith(stage) and t.stage.split(":")[1] == name
            ]
            if pts:
                xs, ys = zip(*sorted(pts), strict=True)
                ax.plot(xs, ys, marker=marker, ls="-" if stage == "coarse" else "", label=label)
        ax.axvline(result.best[name], color="k", lw=0.8, label=f"best {result.best[name]:.3g}")
        if name in shipped:
            ax.axvline(
                shipped[name], color="gray", ls="--", lw=0.8, label=f"shipped {shipped[name]:.3g}"
            )
        start = next((t for t in result.trials if t.stage == "init"), None)
        if start is not None and math.isfinite(start.score):
            ax.plot([start.params[name]], [start.score], "*", color="gray", ms=9, label="start")
        ax.set_xscale("log")
        # the other parameters as they stood when this one was searched (search.json)
        held = {
            tuple((n, t.params[n]) for n in others)
            for t in result.trials
            if t.stage.split(":")[1:2] == [name]
        }
        if len(held) == 1:
            sub = ", ".join(f"{n}={v:.3g}" for n, v in next(iter(held)))
        else:
            sub = "others as each sweep held them: search.json" if others else ""
        ax.set(
            xlabel=name,
            ylabel="mean validation PSNR (dB)",
            title=f"{solver}: {name}" + (f" ({sub})" if sub else ""),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(path, fig)


def evaluate_presets(
    test_cases: list,
    solver: str,
    prior: str,
    shipped: dict,
    tuned: dict,
    iters: int,
    sets: list[str] | None = None,
) -> dict[str, Any]:
    """Mean test PSNR/SSIM of the shipped and the tuned preset, same iteration budget.

    ``sets``: each case's test set (``built-in``, ``yours`` for ``--test``); with more than one,
    each preset's mean PSNR per set too (``per_set``) and the gain per set (``gain_db_per_set``),
    so the user's scans are not hidden in one headline with the built-in ones."""
    out: dict[str, Any] = {}
    names = list(dict.fromkeys(sets or []))
    for label, presets in (("shipped", shipped), ("tuned", tuned)):
        method = _method(solver, presets[solver])
        rows = [
            run_method(c, method, "tv" if solver == "tv" else prior, presets, iters=iters)
            for c in test_cases
        ]
        out[label] = {
            "psnr": float(np.mean([r["psnr"] for r in rows])),
            "ssim": float(np.mean([r["ssim"] for r in rows])),
            "per_scan": {
                f"{c.problem}/{c.scan}": round(r["psnr"], 3)
                for c, r in zip(test_cases, rows, strict=True)
            },
        }
        if len(names) > 1:
            out[label]["per_set"] = {
                n: float(np.mean([r["psnr"] for r, k in zip(rows, sets, strict=True) if k == n]))
                for n in names
            }
    out["gain_db"] = out["tuned"]["psnr"] - out["shipped"]["psnr"]
    if len(names) > 1:
        out["gain_db_per_set"] = {
            n: out["tuned"]["per_set"][n] - out["shipped"]["per_set"][n] for n in names
        }
    return out


def out_dir(args: argparse.Namespace) -> Path:
    """Where `recon tune` writes: ``--out``, default out/tune-MODALITY."""
    return Path(args.out or f"out/tune-{args.modality}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="tune step sizes / weights per modality, write a preset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("modality", choices=["ct", "mri"])
    p.add_argument(
        "--solver", action="append", choices=list(TUNABLE), help="preset section(s) to tune"
    )
    p.add_argument(
        "--prior",
        default=None,
        help="learned prior (default: the CLI's, crr-ct for CT and ridge-mri for MRI)",
    )
    p.add_argument("--inputs", default=None, help="your own validation scans: a folder or a GLOB")
    p.add_argument("--n-val", type=int, default=3, help="synthetic validation scans")
    p.add_argument(
        "--val",
        default="synthetic",
        choices=["synthetic", "real-ct"],
        help="validation set without --inputs: synthetic (phantoms / Colin27 slices) or "
        "real-ct (four native-resolution windows of a real abdominal CT slice from pydicom-data, "
        "a patient never trained on; CT only)",
    )
    p.add_argument("--size", type=int, default=128, help="CT phantom size")
    p.add_argument("--problem", action="append", choices=list(PROBLEMS), help="tuning problem(s)")
    p.add_argument("--iters", type=int, default=30, help="iterations per run (kept in the preset)")
    p.add_argument("--points", type=int, default=7, help="coarse grid points per parameter")
    p.add_argument("--refine", type=int, default=2, help="refinement points per side and round")
    p.add_argument("--rounds", type=int, default=1, help="refinement rounds")
    p.add_argument("--passes", type=int, default=1, help="sweeps over the parameters")
    p.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="NAME=LO:HI",
        help="override a parameter's search range, e.g. rho_rel=1e-4:0.1",
    )
    p.add_argument("--config", default=None, help="start from these presets (default: shipped)")
    p.add_argument("--test", default=None, help="GLOB of test scans tuning must not use")
    p.add_argument("--report-test", action="store_true", help="score shipped vs tuned on test")
    p.add_argument("--out", default=None, help="default out/tune-MODALITY")
    p.add_argument("--preset", default=None, help="also write the preset to this file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")


def _parse_ranges(specs: list[str]) -> dict[str, tuple[float, float]]:
    """``["rho_rel=1e-4:0.1", ...]`` -> {"rho_rel": (1e-4, 0.1)}; ValueError names a bad one."""
    out = {}
    for spec in specs:
        name, _, rng = spec.partition("=")
        lo, _, hi = rng.partition(":")
        try:
            a, b = float(lo), float(hi)
        except ValueError:
            raise ValueError(f"--range {spec}: expected NAME=LO:HI with numbers") from None
        if not 0 < a < b:
            raise ValueError(f"--range {spec}: need 0 < LO < HI")
        out[name] = (a, b)
    return out


def _with_ranges(space: list[Param], ranges: dict[str, tuple[float, float]]) -> list[Param]:
    """The search space with ``--range`` overrides (the start is clipped into the new range)."""
    out = []
    for p in space:
        lo, hi = ranges.get(p.name, (p.lo, p.hi))
        out.append(Param(p.name, lo, hi, min(max(p.init, lo), hi), p.points))
    return out


PGD_STEP_BOUND = 2.0  # plain PnP-PGD converges for step_rel < 2 (γ < 2/(λ||A||²))


def _check_ranges(
    ranges: dict[str, tuple[float, float]], searched: dict[str, list[str]], prior: str
) -> None:
    """ValueError for a ``--range`` of a parameter no solver searches with this prior (rho_rel
    is only a floor where the section has a noise rule, rho_noise is searched: its range moved
    nothing), naming what is searched; and for a step_rel range reaching PGD's bound 2."""
    every = {n for names in searched.values() for n in names}
    bad = sorted(set(ranges) - every)
    if bad:
        what = "; ".join(f"{s}: {', '.join(names)}" for s, names in searched.items())
        raise ValueError(
            f"--range {', '.join(bad)}: not searched with --prior {prior} (searched: {what})"
        )
    if "step_rel" in ranges and ranges["step_rel"][1] >= PGD_STEP_BOUND:
        raise ValueError(
            f"--range step_rel=...:{ranges['step_rel'][1]:g}: PGD converges only for "
            f"step_rel < {PGD_STEP_BOUND:g}"
        )


def _digest(prior: str) -> str | None:
    """First 16 hex digits of the SHA-256 of a prior's weights file (shipped name or path)."""
    import hashlib

    from priors.checkpoint import shipped_priors

    path = shipped_priors().get(prior) or Path(prior)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def _command(args) -> str:
    parts = ["recon", "tune", args.modality]
    for s in args.solver or []:
        parts += ["--solver", s]
    for key in ("prior", "inputs", "val", "n_val", "size", "iters", "points", "refine", "rounds",
                "passes", "config", "test", "seed"):  # fmt: skip
        if args.inputs and key in ("val", "n_val"):
            continue  # (not used with --inputs)
        val = getattr(args, key)
        if val is not None:
            parts += ["--" + key.replace("_", "-"), str(val)]
    for r in args.range:
        parts += ["--range", r]
    for pr in args.problem or []:
        parts += ["--problem", pr]
    if args.report_test:
        parts.append("--report-test")
    if args.preset:
        parts += ["--preset", args.preset]
    return " ".join(shlex.quote(x) for x in parts)


def run(args: argparse.Namespace) -> int:
    from recon.pipeline import load_presets, presets_for_prior

    torch.set_num_threads(max(1, args.threads))
    m = args.modality
    from recon.api import DEFAULT_PRIOR
    from recon.mri import default_solver

    prior = args.prior or DEFAULT_PRIOR[m]
    first = default_solver(prior) if m == "mri" else "pnp-admm"  # the CLI's solver with it
    from recon.pipeline import prior_key

    default = ["tv"] if prior_key(prior) == "tv" else [first, "tv"]  # --prior tv: the one TV
    solvers = list(dict.fromkeys(args.solver or default))
    if args.inputs and args.val != "synthetic":
        raise ValueError(
            f"--val {args.val}: not used with --inputs (your scans are the validation)"
        )
    problems = list(dict.fromkeys(args.problem or [DEFAULT_PROBLEM[m]]))
    wrong = [p for p in problems if modality_of(p) != m]
    if wrong:
        raise ValueError(f"--problem {' '.join(wrong)}: not a {m} problem")
    for key in ("n_val", "iters", "points"):
        if getattr(args, key) < (2 if key == "points" else 1):
            raise ValueError(f"--{key.replace('_', '-')} is too small: {getattr(args, key)}")
    if args.refine < 0 or args.rounds < 0:
        raise ValueError("--refine and --rounds must be ≥ 0")
    learned = [s for s in solvers if s != "tv"]
    if prior_key(prior) == "tv" and learned:
        # one TV whatever the solver: recon ct/mri --prior tv read the tv section, so a section
        # tuned under priors.tv would be ignored (and ADMM's rho_rel there moves nothing)
        raise ValueError(
            f"--prior tv with --solver {' '.join(learned)}: TV is one model whatever the solver "
            "(recon ct/mri --prior tv read the preset's tv section); tune it with --solver tv"
        )
    if learned:
        from priors.checkpoint import load_prior

        try:
            load_prior(prior)
        except (FileNotFoundError, KeyError) as exc:
            raise ValueError(f"--prior {prior}: cannot be loaded ({exc})") from None
    if args.passes < 1:
        raise ValueError(f"--passes must be ≥ 1, got {args.passes}")
    ranges = _parse_ranges(args.range)
    out = out_dir(args)
    # the sections a run with this prior uses (its per-prior overrides merged in); the tuned
    # preset is written for this prior, so it carries no per-prior table
    base = presets_for_prior(load_presets(m, args.config), prior)
    shipped = presets_for_prior(load_presets(m), prior)
    _check_ranges(ranges, {s: [p.name for p in search_space(s, base[s])] for s in solvers}, prior)

    if args.inputs:
        val = scans_from_glob(m, args.inputs)
    elif args.val == "real-ct":
        if m != "ct":
            raise ValueError("--val real-ct is for recon tune ct")
        val = ct_real_validation_scans(args.size)
    else:
        val = (
            ct_validation_scans(args.size, args.n_val)
            if m == "ct"
            else mri_validation_scans(args.n_val)
        )
    test: list[Scan] = ct_test_scans(args.size) if m == "ct" else mri_test_scans(3)
    test_sets = ["built-in"] * len(test)
    if args.test:
        test += scans_from_glob(m, args.test)
        test_sets += ["yours"] * (len(test) - len(test_sets))
    check_disjoint(val, test)

    progress = not args.quiet
    t0 = time.perf_counter()
    cases = [build_case(p, s, args.seed) for p in problems for s in val]
    results: dict[str, dict] = {}
    trials_json: dict[str, list] = {}
    for solver in solvers:
        space = _with_ranges(search_space(solver, base[solver], args.points), ranges)
        ts = time.perf_counter()
        res = tune_solver(
            cases, solver, prior, base, args.iters, args.points, args.refine, args.rounds,
            space, progress, args.passes,
        )  # fmt: skip
        start = {p.name: p.init for p in space}
        start_score = next(t.score for t in res.trials if t.stage == "init")
        results[solver] = {
            "best": res.best,
            "prior": None if solver == "tv" else prior,
            "prior_weights_sha256": None if solver == "tv" else _digest(prior),
            "method": _method(solver, base[solver]),
            "validation": [s.name for s in val],
            "problems": problems,
            "val_psnr_tuned": res.score,
            "val_psnr_start": start_score,
            "start": start,
            "trials": len(res.trials),
            "seconds": time.perf_counter() - ts,
            "at_edge_of_range": res.at_edge,
            "ranges": {p.name: [p.lo, p.hi] for p in space},
        }
        trials_json[solver] = [t.__dict__ for t in res.trials]
        plot_search(out / f"search-{solver}.png", solver, res, start)
        if progress:
            vals = ", ".join(f"{k} = {v:.4g}" for k, v in res.best.items())
            print(f"{solver}: {vals}; validation PSNR {start_score:.2f} (start) -> "
                  f"{res.score:.2f} dB")  # fmt: skip
        for name in res.at_edge:  # said even with --quiet: the best may lie outside
            lo, hi = results[solver]["ranges"][name]
            if name == "step_rel" and res.best[name] >= hi and hi >= 0.95 * PGD_STEP_BOUND:
                print(
                    f"recon tune: {solver}: best step_rel = {res.best[name]:.4g} is at PGD's "
                    f"convergence bound (step_rel < {PGD_STEP_BOUND:g}); it cannot be widened",
                    file=sys.stderr,
                )
                continue
            print(
                f"recon tune: {solver}: best {name} = {res.best[name]:.4g} is at the edge of its "
                f"range [{lo:.3g}, {hi:.3g}]; widen it: --range {name}=LO:HI",
                file=sys.stderr,
            )
    command = _command(args)
    previous = json.loads(Path(args.config).read_text()) if args.config else None
    preset = tuned_preset(m, base, results, command, args.iters, previous)
    for solver in solvers:  # said even with --quiet: --config then caps recon at args.iters
        own = shipped[solver].get("iters")
        if own is not None and args.iters < int(own):
            print(
                f"recon tune: warning: {solver}: the preset keeps --iters {args.iters}, below the "
                f"shipped preset's {own} iterations: recon {m} --config runs {solver} at "
                f"{args.iters} iterations (tune with --iters {own} to keep them)",
                file=sys.stderr,
            )
    text = json.dumps(preset, indent=1)
    atomic_write(out / "preset.json", lambda tmp: tmp.write_text(text + "\n"))
    if args.preset:
        atomic_write(Path(args.preset), lambda tmp: tmp.write_text(text + "\n"))
    save_json(out / "search.json", {"command": command, "results": results, "trials": trials_json})

    if args.report_test:
        tuned = load_presets(m, out / "preset.json")
        test_cases = [build_case(p, s, args.seed) for p in problems for s in test]
        case_sets = [k for _ in problems for k in test_sets]
        report = {
            s: evaluate_presets(test_cases, s, prior, shipped, tuned, args.iters, case_sets)
            for s in solvers
        }
        own = ", ".join(f"{s} {shipped[s].get('iters')}" for s in solvers)
        report["_note"] = (
            f"shipped {m}.json vs tuned preset, both at {args.iters} iterations (the tuned "
            f"count, not the shipped preset's own: {own}), on test scans "
            f"{[s.name for s in test]} that tuning never saw; problems {problems}"
        )
        save_json(out / "test_report.json", report)
        if progress:
            for s in solvers:
                r = report[s]
                print(
                    f"test {s} (both at {args.iters} iterations; the shipped preset runs "
                    f"{shipped[s].get('iters')}): shipped {r['shipped']['psnr']:.2f} dB -> tuned "
                    f"{r['tuned']['psnr']:.2f} dB ({r['gain_db']:+.2f} dB)"
                )
                for n, gain in r.get("gain_db_per_set", {}).items():
                    print(
                        f"  {n} test scans: shipped {r['shipped']['per_set'][n]:.2f} dB -> "
                        f"tuned {r['tuned']['per_set'][n]:.2f} dB ({gain:+.2f} dB)"
                    )
    if progress:
        print(f"{time.perf_counter() - t0:.0f} s -> {out}/preset.json")
    return 0
