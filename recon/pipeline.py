"""What `recon ct` and `recon mri` share: presets, prior loading, solving, metrics, outputs.

Step sizes in presets are relative to the operator (see ``presets/*.json``):
ρ = rho_rel·λ·||A||² for PnP-ADMM and γ = step_rel/(λ·||A||²) for PnP-PGD, and a TV weight is
weight_rel × (intensity range of the starting image), weight_rel following the data's noise
with ``weight_noise`` (``_tv_weight_rel``), so a preset carries over between geometries, image
sizes, noise levels and intensity units (the whole pipeline is affine-equivariant when the prior
is).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import math
import numbers
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon import __version__
from recon.argtypes import count, number
from solvers.metrics import image_metrics  # re-exported: recon.ct and the benches use it

__all__ = [
    "add_solver_arguments",
    "device_for",
    "load_presets",
    "solver_params",
    "preset_prior_sigma",
    "reconstruct",
    "solve_with_presets",
    "SolveOptions",
    "image_metrics",
    "unusable_reason",
    "EXIT_UNUSABLE",
    "exit_status",
    "unusable_slices",
    "slow_runaway_warning",
    "warn_about_run",
    "Reconstruction",
    "versions",
]

LEARNED_SOLVERS = ("pnp-admm", "pnp-pgd")
SIGMA_KEYS = ("prior_sigma_rel", "prior_sigma_noise")  # the σ rule of a σ-input prior
# per CT geometry: prior_sigma_noise_fan replaces prior_sigma_noise on a fan beam
GEOMETRY_SIGMA_KEYS = ("prior_sigma_noise_fan",)


def merge_section(section: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``section`` updated by ``over`` (a preset layer, a command-line value, a tuning trial).

    A layer that sets ``prior_sigma_noise`` without a per-geometry variant of it
    (``prior_sigma_noise_fan``) drops the variants below it: a factor someone chose applies to
    every geometry, rather than being replaced on some of them by a preset they did not see."""
    out = {**section, **over}
    if "prior_sigma_noise" in over:
        for k in GEOMETRY_SIGMA_KEYS:
            if k not in over:
                out.pop(k, None)
    return out


class GivenStore(argparse.Action):
    """argparse's ``store`` that also notes the option in ``namespace.given`` (a set of dests):
    which options the user typed, as against their defaults (``warn_unused_options``)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


# what each solver leaves unread: the closed forms read no iteration setting, and TV no σ rule
_SIGMA_OPTIONS = ("prior_sigma_noise", "prior_sigma_rel")
_ITERATION_OPTIONS = ("iters", "tol", "strength", "objective_every")


def unused_options(solver: str | None, prior: str | Path | None, given: set[str]) -> list[str]:
    """The options in ``given`` (their dests: what the user gave, ``GivenStore``) that
    ``solver`` does not read: a ``--prior`` other than tv with ``tv``, ``fbp`` or
    ``zero-filled``; the σ options with those; the iteration options with the closed forms
    ``fbp`` and ``zero-filled``."""
    if solver not in ("tv", "fbp", "zero-filled"):
        return []
    unused = []
    if "prior" in given and (solver != "tv" or prior_key(prior) != "tv"):
        unused.append(f"--prior {prior}")
    dests = _SIGMA_OPTIONS + (_ITERATION_OPTIONS if solver != "tv" else ())
    unused += [f"--{d.replace('_', '-')}" for d in dests if d in given]
    return unused


def warn_unused_options(args: argparse.Namespace) -> None:
    """Warn (one line) about options ``args.solver`` does not read (``unused_options``): they
    used to be dropped without a word (``metrics.json`` then says ``prior: null``)."""
    import warnings

    unused = unused_options(args.solver, args.prior, getattr(args, "given", set()))
    if unused:
        what = {"tv": "TV is its regularizer", "fbp": "a closed form",
                "zero-filled": "a closed form"}[args.solver]  # fmt: skip
        warnings.warn(
            f"{', '.join(unused)}: not used by --solver {args.solver} ({what})",
            UserWarning,
            stacklevel=2,
        )


def add_solver_arguments(p, modality: str) -> None:
    """The flags `recon ct` and `recon mri` share (solver iterations, presets, device, output)."""
    p.add_argument(
        "--iters",
        action=GivenStore,
        type=count(1),
        default=None,
        help="maximum iterations (default: the preset's)",
    )
    p.add_argument(
        "--tol",
        action=GivenStore,
        type=number(0),
        default=None,
        help="stop at this relative change ||x_k+1 − x_k||/||x_k|| (default: the preset's)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="JSON presets overriding the shipped ones (e.g. written by recon tune)",
    )
    p.add_argument("--seed", type=int, default=0, help="noise and mask seed (default 0)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="(default cpu)")
    p.add_argument(
        "--threads",
        type=count(1),
        default=None,
        help="torch CPU threads (default: torch's; 1 avoids stalls on a loaded machine)",
    )
    p.add_argument(
        "--out", default=f"out/{modality}", help=f"output folder (default out/{modality})"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.add_argument(
        "--prior-sigma-noise",
        action=GivenStore,
        type=number(0),
        default=None,
        metavar="C",
        help="for a prior that takes the noise level (recon train --noise-input): σ = C × the "
        + (
            "blind noise estimate of the starting image, on every geometry (default: the "
            "preset's prior_sigma_noise, or its prior_sigma_noise_fan on a fan beam)"
            if modality == "ct"
            else "noise measured in k-space (default: the preset's prior_sigma_noise)"
        ),
    )
    p.add_argument(
        "--prior-sigma-rel",
        action=GivenStore,
        type=number(0),
        default=None,
        metavar="S",
        help="... and σ at least S × the starting image's intensity range (such priors run away "
        "at small σ; default: the preset's prior_sigma_rel)",
    )
    p.add_argument(
        "--strength",
        action=GivenStore,
        type=number(0, lo_open=True),
        default=1.0,
        metavar="S",
        help="× the regularizer's weight the presets' rules give: TV's weight, or ρ of a "
        "prior's problem (PGD without a ρ rule: its step ÷ S), every solver alike (default 1; "
        "for MRI measured per data source in docs/results/mri-other-data.md)",
    )
    p.add_argument(
        "--objective-every",
        action=GivenStore,
        type=count(0),
        default=0,
        help="monitor R(x) and the objective every K iterations (costs a prox inversion; "
        "default 0: off)",
    )


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` (None: leave torch's default)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def device_for(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def load_presets(modality: str, config: str | Path | None = None) -> dict[str, Any]:
    """The shipped presets for ``modality``, updated by a user's ``--config`` JSON file."""
    text = resources.files("recon").joinpath(f"presets/{modality}.json").read_text()
    presets = json.loads(text)
    if config is not None:
        path = Path(config)
        try:
            user = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"--config {path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config {path}: not valid JSON ({exc})") from None
        except UnicodeDecodeError:
            raise ValueError(f"--config {path}: not a UTF-8 text file") from None
        if not isinstance(user, dict):
            raise ValueError(f"--config {path}: expected a JSON object of solver sections")
        _check_modality(user, modality, path)
        _check_config(user, presets, path)
        for key, section in user.items():
            if key == "priors" and isinstance(section, dict):  # per prior, per solver
                table = presets.setdefault("priors", {})
                for name, solvers in section.items():
                    if not isinstance(solvers, dict):
                        continue
                    entry = table.setdefault(name, {})
                    mine = presets.setdefault(USER_KEY, {}).setdefault(name, {})
                    for solver, over in solvers.items():
                        entry[solver] = merge_section(entry.get(solver, {}), over)
                        mine[solver] = {**mine.get(solver, {}), **over}
            elif isinstance(section, dict):
                presets.setdefault(key, {}).update(section)
                user_sections = presets.setdefault(USER_KEY, {}).setdefault("", {})
                user_sections[key] = {**user_sections.get(key, {}), **section}
    return presets


USER_KEY = "_user"  # what --config set: it wins over the shipped per-prior overrides
# every key a solver section may hold (recon.pipeline reads them); "_..." keys are comments
SECTION_KEYS = frozenset(
    {"lam", "rho_rel", "rho_noise", "iters", "tol", "cg_iters", "cg_tol", "step_rel",
     "accelerated", "solver", "weight_rel", "weight_noise", "weight_noise_power", "tv_iters",
     "tv_warm_start",
     "rho_noise_power", "filter", "precondition", "plain_step_rel", "weight_noise_norm_power",
     "rho_noise_norm_power", "prox_relative_tol", "support_weight", *SIGMA_KEYS,
     *GEOMETRY_SIGMA_KEYS}
)  # fmt: skip


MODALITIES = ("ct", "mri")


def _setting_keys(section_map: dict) -> set[str]:
    """Every setting a presets file holds, in its solver sections and its per-prior table."""
    keys: set[str] = set()
    for name, section in section_map.items():
        if name == "priors" and isinstance(section, dict):
            for solvers in section.values():
                for over in solvers.values() if isinstance(solvers, dict) else ():
                    keys |= set(over) if isinstance(over, dict) else set()
        elif isinstance(section, dict):
            keys |= set(section)
    return {k for k in keys if not k.startswith("_")}


# settings that mean something for one modality only
MODALITY_SETTINGS = {"support_weight": "mri", "prior_sigma_noise_fan": "ct", "filter": "ct"}


def _check_modality(user: dict, modality: str, path: Path) -> None:
    """ValueError when a --config file is for the other modality: it says so (``_modality``, or
    a ``_command`` of ``recon tune OTHER``), or it sets a setting of the other modality only
    (``MODALITY_SETTINGS``: ``support_weight`` is MRI's, ``prior_sigma_noise_fan`` CT's)."""
    declared = user.get("_modality")
    command = str(user.get("_command", "")).split()
    if declared is None and command[:2] == ["recon", "tune"] and len(command) > 2:
        declared = command[2]
    if declared in MODALITIES and declared != modality:
        raise ValueError(f"--config {path}: a preset for recon {declared}, not recon {modality}")
    foreign = sorted(
        k for k in _setting_keys(user) if MODALITY_SETTINGS.get(k, modality) != modality
    )
    if foreign:
        other = MODALITY_SETTINGS[foreign[0]]
        raise ValueError(
            f"--config {path}: {', '.join(foreign)}: a recon {other} setting, not read by "
            f"recon {modality} (a preset for recon {other}?)"
        )


def _check_config(user: dict, shipped: dict, path: Path) -> None:
    """ValueError naming ``path`` and the key for a section the modality does not have, a
    section that is not an object, or a key no solver reads (a misspelling would otherwise be
    ignored silently)."""
    sections = sorted(k for k, v in shipped.items() if isinstance(v, dict) and k != "priors")

    def check_section(where: str, section: object) -> None:
        if not isinstance(section, dict):
            raise ValueError(f"--config {path}: {where} must be an object of settings, "
                             f"got {json.dumps(section)}")  # fmt: skip
        for key, value in section.items():
            if not key.startswith("_") and key not in SECTION_KEYS:
                near = difflib.get_close_matches(key, SECTION_KEYS, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(f"--config {path}: {where}: unknown setting {key!r}{hint}; "
                                 f"known: {', '.join(sorted(SECTION_KEYS))}")  # fmt: skip
            if key in NUMBER_KEYS and not _is_number(value, key):
                raise ValueError(f"--config {path}: {where}: {key} must be a number, got "
                                 f"{json.dumps(value)}")  # fmt: skip

    for key, section in user.items():
        if key.startswith("_"):
            continue
        if key == "priors":
            if not isinstance(section, dict):
                raise ValueError(f"--config {path}: priors must map prior names to sections")
            for name, solvers in section.items():
                if name.startswith("_"):
                    continue
                if not isinstance(solvers, dict):
                    raise ValueError(f"--config {path}: priors.{name} must be an object of "
                                     "solver sections")  # fmt: skip
                _warn_prior_name(name, path)
                for solver, over in solvers.items():
                    if solver not in sections:
                        raise ValueError(
                            f"--config {path}: priors.{name}: unknown solver "
                            f"section {solver!r}; known: {', '.join(sections)}"
                        )
                    check_section(f"priors.{name}.{solver}", over)
        elif key not in sections:
            near = difflib.get_close_matches(key, sections, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"--config {path}: unknown section {key!r}{hint}; known: "
                             f"{', '.join(sections)}, priors")  # fmt: skip
        else:
            check_section(key, section)


def _warn_prior_name(name: str, path: Path) -> None:
    """Warn about a ``priors`` entry of a --config file that is no shipped prior but close to
    one (``crr-cT``, ``crr-cf``: the same length, at most one letter other than its case): it
    is read only for a ``--prior`` checkpoint of that file stem, so a typo was ignored without a
    word. Other names (a user's checkpoint stems: ``crr-ct2``, ``crr-ct-hi``) pass silently."""
    import warnings

    from priors.checkpoint import shipped_priors

    shipped = list(shipped_priors())
    if name in shipped:
        return

    def typo(n: str) -> bool:  # the same letters but for case, or one letter swapped
        a, b = n.lower(), name.lower()
        return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) <= 1

    near = [n for n in shipped if typo(n)]  # not crr-ct2 or crr-ct-hi: own stems
    if near:
        warnings.warn(
            f"--config {path}: priors.{name} is not a shipped prior (did you mean "
            f"{near[0]!r}?); it is read only with --prior {name}.safetensors",
            UserWarning,
            stacklevel=2,
        )


def prior_key(prior: str | Path) -> str:
    """The name a prior's preset overrides are filed under: a shipped name as is, a checkpoint
    path by its file stem (``runs/mine.safetensors`` -> ``mine``)."""
    name = str(prior)
    return Path(name).stem if name.endswith(".safetensors") else name


def preset_from(path: str | Path) -> str | None:
    """The shipped prior a checkpoint was fine-tuned from (``recon train --init NAME``, carried
    over through further ``--init`` stages as ``meta["preset_from"]``; an older checkpoint's
    ``meta["init"]`` when it names a shipped prior), or None. Reads the header only."""
    from safetensors import safe_open

    from priors.checkpoint import shipped_priors

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    except Exception:  # noqa: BLE001 - SafetensorError and kin: loading the prior reports it
        return None
    if not isinstance(meta, dict):
        return None
    name = meta.get("preset_from") or meta.get("init")
    return name if isinstance(name, str) and name in shipped_priors() else None


def shipped_copy(path: str | Path, shipped: dict[str, Path] | None = None) -> str | None:
    """The shipped prior whose weights file ``path`` is, or holds the same bytes as; else None
    (``shipped``: ``priors.checkpoint.shipped_priors()`` when not given)."""
    if shipped is None:
        from priors.checkpoint import shipped_priors

        shipped = shipped_priors()
    here = Path(path)
    if not here.is_file():
        return None
    size = here.stat().st_size
    for name, f in shipped.items():
        f = Path(f)
        if f.resolve() == here.resolve() or (
            f.stat().st_size == size and f.read_bytes() == here.read_bytes()
        ):
            return name
    return None


def shipped_source(path: str | Path, shipped: dict[str, Path] | None = None) -> str | None:
    """The shipped prior a checkpoint file stands for: the one it is a copy of
    (``shipped_copy``), else the one it was fine-tuned from (``preset_from``), else None. A
    checkpoint runs with that prior's presets and default solver, whatever its file name."""
    return shipped_copy(path, shipped) or preset_from(path)


def presets_for_prior(presets: dict, prior: str | Path | None) -> dict[str, Any]:
    """``presets`` with the overrides filed for ``prior`` merged into their solver sections.

    A learned prior is the prox of one fixed R whose scale follows its training (R ≈ σ²·(−log p)
    for a prior trained at noise σ), so the ADMM ρ that balances it against the data is a
    property of the prior: a preset may hold ``"priors": {"lpn-ct": {"pnp-admm": {"rho_rel":
    0.03}}}``. The result has no ``priors`` table (its sections are what a run with ``prior``
    uses). A checkpoint path takes the overrides of the shipped prior whose file it is (or a
    byte copy of), or that it was fine-tuned from (``preset_from``: the same σ rule and ρ),
    never those of a shipped prior its file happens to be named after; other entries are found
    by the file stem (``prior_key``), as a user's ``--config`` files them."""
    skip = ("priors", USER_KEY)
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in presets.items() if k not in skip}
    if prior is None:
        return out
    table = presets.get("priors", {})
    if not isinstance(table, dict):
        raise ValueError(
            f"presets: 'priors' must map prior names to solver sections, got {table!r}"
        )
    user = presets.get(USER_KEY, {})
    # shipped per-prior overrides, then the user's sections, then the user's per-prior ones.
    # A checkpoint takes a shipped prior's entry only through what it recorded (preset_from),
    # never through its file name: `mine/ridge-ct.safetensors` is not the shipped ridge-ct.
    key: str | None = str(prior)
    if key.endswith(".safetensors"):
        from priors.checkpoint import shipped_priors

        shipped = shipped_priors()
        stem = prior_key(prior)
        key = shipped_source(prior, shipped)
        key = key or (stem if stem not in shipped else None)
    layers = (table.get(key, {}) if key else {}, user.get("", {}), user.get(prior_key(prior), {}))
    for layer in layers:
        for solver, over in layer.items():
            out[solver] = merge_section(out.get(solver, {}), over)
    return out


def preset_prior_sigma(modality: str, solver: str, prior: str | Path | None) -> dict[str, float]:
    """The σ rule (prior_sigma_noise / prior_sigma_rel) the shipped presets file for ``prior``
    (only priors that take the noise level have one), for scripts and benchmarks that pass their
    own parameters to ``reconstruct``; {} for every other prior."""
    section = presets_for_prior(load_presets(modality), prior).get(solver, {})
    return {k: section[k] for k in (*SIGMA_KEYS, *GEOMETRY_SIGMA_KEYS) if k in section}


def solver_params(
    presets: dict, solver: str, overrides: dict[str, Any], prior: str | Path | None = None
) -> dict[str, Any]:
    """The parameters of ``solver``: its preset section, the overrides filed for ``prior`` (see
    ``presets_for_prior``), then ``overrides`` (None values ignored)."""
    presets = presets_for_prior(presets, prior)
    if solver not in presets:
        known = sorted(k for k in presets if not k.startswith("_"))
        raise ValueError(f"no preset for solver {solver!r}; known: {known}")
    return merge_section(presets[solver], {k: v for k, v in overrides.items() if v is not None})


# --- methods: (solver, prior) pairs as `recon ct/mri`, the benches and tuning run them ---------
SOLVERS = ("pnp-pgd", "pnp-fista", "pnp-admm")


def method_params(presets: dict, solver: str, prior: str) -> tuple[str, str | None, dict]:
    """(pipeline solver, prior name or None, params) of ``solver`` with ``prior``.

    ``solver`` is pnp-pgd, pnp-fista (accelerated PGD) or pnp-admm; ``prior`` a learned prior
    name or ``tv``. There is one TV: ``--prior tv`` with any solver is the preset's ``tv``
    section (its weight relative to the data, its ADMM ρ), the model ``--solver tv`` solves.
    ADMM's fixed points minimize D/ρ + w·TV and PGD's γ·D + w'·TV, so PGD/FISTA keep ADMM's
    ρ rule and ``reconstruct`` gives them w' = w·γ·ρ = w·step_rel·rho_rel (``pgd_sigma_factor``
    with power 1), with the ``pnp-pgd`` section's iterations. Learned priors use their solver's
    section (``pnp-pgd`` for both PGD variants) with the overrides filed for the prior.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {', '.join(SOLVERS)}")
    base = "pnp-admm" if solver == "pnp-admm" else "pnp-pgd"
    if prior_key(prior) == "tv":
        tv = dict(presets["tv"])
        if base == "pnp-pgd":
            pgd = presets["pnp-pgd"]
            step_rel = float(pgd.get("step_rel", 0.99))
            for k in ("cg_iters", "cg_tol", "precondition"):
                tv.pop(k, None)
            tv.update({k: pgd[k] for k in ("iters", "tol") if k in pgd})
            tv.update(solver="pnp-pgd", step_rel=step_rel, accelerated=solver == "pnp-fista")
        else:
            tv["solver"] = "pnp-admm"
        return "tv", None, tv
    params = solver_params(presets, base, {}, prior)
    if base == "pnp-pgd":
        params["accelerated"] = solver == "pnp-fista"
    return base, prior, params


@dataclass
class Reconstruction:
    x: torch.Tensor
    history: dict = field(default_factory=dict)
    converged: bool = True
    stop_reason: str = "closed form"
    iterations: int = 0
    seconds: float = 0.0
    params: dict = field(default_factory=dict)
    objective: str = ""
    # what ``unusable_reason`` judges the run by: D(x0) of the start image x0 (FBP, zero-filled;
    # not a warm start's), D(0) = (λ/2)||y||², ||x|| / ||x0||, the solver run, and whether the
    # prior is firmly nonexpansive by construction (TV, the convex-ridge priors)
    start_data_fidelity: float | None = None
    zero_data_fidelity: float | None = None
    norm_ratio: float | None = None
    solver_run: str = ""
    certified_prior: bool = False
    modality: str = ""  # "mri" for complex images, else "ct" (the certified priors it names)

    def record(self) -> dict[str, Any]:
        """What metrics.json reports about the run."""
        return {
            "converged": self.converged,
            "stop_reason": self.stop_reason,
            "iterations": self.iterations,
            "params": self.params,
            "objective": self.objective,
            "start_data_fidelity": self.start_data_fidelity,
            "zero_data_fidelity": self.zero_data_fidelity,
            "norm_ratio": self.norm_ratio,
            "solver_run": self.solver_run,
            "certified_prior": self.certified_prior,
            "modality": self.modality,
        }


def _norm_ratio(x: torch.Tensor, start: torch.Tensor) -> float | None:
    """||x|| / ||start||, None when the start is zero or either is not finite."""
    a, b = float(torch.linalg.vector_norm(x)), float(torch.linalg.vector_norm(start))
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else None


def fbp_reconstruction(x0: torch.Tensor, seconds: float, presets: dict) -> Reconstruction:
    """The FBP image as a run's result: closed form, no iterations, the preset's filter."""
    return Reconstruction(x=x0, seconds=seconds, params=presets.get("fbp", {}))


def intensity_range(x: torch.Tensor) -> float:
    a = x.abs() if x.is_complex() else x
    return float(a.max() - a.min())


def _data_noise(x0: torch.Tensor, noise_level: float | None) -> float:
    """σ̂ for the rules relative to the noise: ``noise_level`` when the caller measured the
    data's noise (MRI: the k-space corners), else the blind estimate of the start image."""
    return blind_noise_estimate(x0) if noise_level is None else float(noise_level)


def blind_noise_estimate(x0: torch.Tensor) -> float:
    """Blind σ̂ of the start image (``priors.lpn.estimate_noise_level``; complex: re/im), the
    largest over a batch (one σ for the run)."""
    from priors.lpn import estimate_noise_level

    x = torch.cat([x0.real, x0.imag], 1) if x0.is_complex() else x0
    return float(estimate_noise_level(x.detach()).max())


def pgd_sigma_factor(step_rel: float, rho_rel: float, power: float = 2.0) -> float:
    """σ_PGD / σ_ADMM for PnP-PGD to solve the problem PnP-ADMM solves at penalty ρ.

    ADMM's fixed points minimize D + ρ·R_σ, PGD's (step γ) D + R_σ'/γ. If the prior's R grows
    like σ^p (``power``), the two agree when σ'^p = γ·ρ·σ^p, i.e. σ' = σ·(γρ)^(1/p) =
    σ·(step_rel·rho_rel)^(1/p) (γ = step_rel/(λ||A||²), ρ = rho_rel·λ||A||²).
    p = 2 is the MAP scaling of a prior trained to denoise at noise σ (R = −σ² log p); p = 1 is
    the ℓ1 (TV-like) scaling of the convex-ridge AE-LPN, whose R grows like σ·Σ|Wx| on edges
    (``priors.ridge``; TV's weight follows the same rule). Exact for such R, approximate for a
    learned one: ``docs/results/convergent-prior.md`` measures how close PGD comes to ADMM.
    A prior that is the exact prox of an explicit R (``mode="prox"``) needs no such rule: PGD
    keeps σ and scales R by γρ (``strength_factor``), ADMM's problem exactly."""
    if not (step_rel > 0 and rho_rel > 0 and power > 0):
        raise ValueError(
            f"step_rel, rho_rel and power must be > 0, got {step_rel}, {rho_rel}, {power}"
        )
    return (step_rel * rho_rel) ** (1.0 / power)


def missing_sigma_rule(prior_name: str | Path, solver: str) -> ValueError:
    """The error for a prior that takes the noise level run by ``solver`` with no σ rule: it
    names the options and the preset entry that give one."""
    key = prior_key(prior_name)
    section = "pnp-admm" if solver == "pnp-admm" else "pnp-pgd"  # PGD and FISTA: pnp-pgd
    return ValueError(
        f"prior {str(prior_name)!r} takes the noise level and no preset gives its σ rule: give "
        "recon ct/mri --prior-sigma-noise C (σ = C × the start image's noise estimate) "
        "and/or --prior-sigma-rel S (× its range), or file them for it in a preset "
        "(--config FILE; recon bench grid --ct-config/--mri-config; recon tune --config; "
        f'recon.api.solve(config=FILE)): {{"priors": {{"{key}": {{"{section}": '
        '{"prior_sigma_noise": 0.5}}}}, one entry per solver section (docs/training.md)'
    )


def has_sigma_rule(params: dict[str, Any]) -> bool:
    """Whether a solver's parameters give a σ-input prior its σ rule (``_tell_noise_level``)."""
    return any(params.get(k) is not None for k in SIGMA_KEYS)


def _tell_noise_level(
    prior,
    prior_name: str,
    p: dict[str, Any],
    x0,
    solver: str = "pnp-admm",
    noise_level: float | None = None,
    geometry: str | None = None,
) -> dict[str, float]:
    """Set σ on a prior that takes the noise level (popping its keys from ``p``); what was used.

    σ = max(prior_sigma_noise × σ̂, prior_sigma_rel × range(x0)), either term optional:
    σ̂ is ``noise_level`` when the caller measured the data's noise (MRI: the k-space corners),
    else the blind noise estimate of the start image (so σ follows the data's noise level),
    range(x0) its intensity range (a floor: such priors run away when σ is small). Both scale
    with a and ignore b under x -> a·x + b, so the run stays exactly equivariant; σ is fixed for
    the whole run, so every prox is the prox of one R. On a CT fan beam (``geometry`` 'fan'),
    ``prior_sigma_noise_fan`` replaces prior_sigma_noise when the section has it (the same
    noise estimate leaves different streaks behind per geometry, so the best factor differs)."""
    from priors.lpn import set_noise_level, takes_noise_level

    per_geometry = {k: v for k in GEOMETRY_SIGMA_KEYS if (v := p.pop(k, None)) is not None}
    given = {k: v for k in SIGMA_KEYS if (v := p.pop(k, None)) is not None}
    if not takes_noise_level(prior):
        if given or per_geometry:
            raise ValueError(
                f"{' / '.join({**given, **per_geometry})}: prior {prior_name!r} does not take a "
                "noise level (only priors trained with recon train --noise-input do)"
            )
        return {}
    if not given:
        raise missing_sigma_rule(prior_name, solver)
    for k, v in {**given, **per_geometry}.items():
        if not float(v) > 0:
            raise ValueError(f"{k} must be > 0, got {v}")
    if geometry == "fan" and "prior_sigma_noise_fan" in per_geometry:
        given["prior_sigma_noise"] = per_geometry["prior_sigma_noise_fan"]
    used: dict[str, float] = {}
    terms = []
    if "prior_sigma_noise" in given:
        used["noise_estimate"] = _data_noise(x0, noise_level)
        used["prior_sigma_noise"] = float(given["prior_sigma_noise"])  # the factor applied
        terms.append(float(given["prior_sigma_noise"]) * used["noise_estimate"])
    if "prior_sigma_rel" in given:
        terms.append(float(given["prior_sigma_rel"]) * intensity_range(x0))
    used["prior_sigma"] = max(terms)
    from priors.lpn import unwrap

    model = unwrap(prior)
    exact = getattr(model, "mode", None) == "prox"  # the prox of an explicit R = t·λ·m
    if exact:
        model.strength_factor = 1.0  # the trained R, unless PGD's rule below scales it
    if solver == "pnp-pgd" and "rho_rel" in p:  # the problem ADMM solves at this ρ
        step_rel, rho_rel = float(p.get("step_rel", 0.99)), float(p.pop("rho_rel"))
        if exact:  # the prox of γρR exactly
            model.strength_factor = used["prior_strength_factor"] = step_rel * rho_rel
        else:
            power = float(getattr(model, "sigma_power", 2.0))
            factor = pgd_sigma_factor(step_rel, rho_rel, power)
            used["problem_sigma"], used["pgd_sigma_factor"] = used["prior_sigma"], factor
            used["prior_sigma"] *= factor
    set_noise_level(prior, used["prior_sigma"])
    return used


def _follow_noise(
    p: dict[str, Any],
    rule: str,
    key: str,
    x0,
    noise_level: float | None,
    power: float = 1.0,
    gain: float = 1.0,
) -> dict[str, float]:
    """A preset value that follows the data's noise: with ``p[rule]`` = c (popped; absent or
    null: off, {} returned) set ``p[key]`` = max(p[key], c × (σ̂ / (gain·range(x0)))^power), σ̂
    as in ``_data_noise``; ``p[key]`` is then a floor. σ̂ and the range scale alike with the
    intensities, so the run stays affine-equivariant. Returns what was used (``{key}_floor``:
    True when the floor held, so any smaller c gives the same run)."""
    if p.get(rule) is None:
        p.pop(rule, None)
        return {}
    c = float(p.pop(rule))
    if not c > 0:
        raise ValueError(f"{rule} must be > 0, got {c}")
    sigma = _data_noise(x0, noise_level)
    r = intensity_range(x0)
    rel = c * (sigma / (gain * r)) ** power if r > 0 and gain > 0 else 0.0
    floor = float(p.get(key, 0.0))
    p[key] = max(floor, rel)
    used = {f"{key}_used": p[key], "noise_estimate": sigma}
    return {**used, f"{key}_floor": True} if rel < floor else used


def _problem_rho_rel(p: dict[str, Any], x0, noise_level: float | None, op=None) -> dict[str, float]:
    """ADMM's relative penalty, set in ``p["rho_rel"]``: rho_rel, or with ``rho_noise`` c (and
    ``rho_noise_power`` q, default 1, both popped) max(rho_rel, c × (σ̂/(g·range(x0)))^q)
    (``_follow_noise``). ρ weighs the data against the prior's proximal point in each
    x-update: noisier data call for a larger ρ (with a small one, 60 iterations of TV-ADMM keep
    the noise of the sampled k-space). σ̂ is the measured noise (MRI: k-space corners, g = 1)
    or the start image's blind estimate, then divided by g = ``unit_noise_gain(op)`` (CT: the
    sinogram's noise whatever the geometry, as TV's weight rule)."""
    q = float(p.pop("rho_noise_power", 1.0))
    return _follow_sinogram_noise(p, "rho_noise", "rho_rel", op, x0, noise_level, q)


def unit_noise_gain(op) -> float:
    """The blind noise estimate of the FBP of white sinogram noise of std one pixel length
    (``op.pixel_size``) on ``op`` (1 for an operator without FBP): how much of the data's noise
    the start image shows. Dividing the FBP image's σ̂ by it gives the sinogram's noise in
    pixel units whatever the geometry, filter, fan-beam rebinning or pixel size (a scan and
    the same scan in other length units get the same weight). One seeded FBP with the
    operator's default (ram-lak) filter, the presets' start image, cached on the operator; a
    smoother filter's start image shows less noise, so TV then gets a lower weight."""
    cached = getattr(op, "_unit_noise_gain", None)
    if cached is not None:
        return cached
    if not hasattr(op, "fbp"):
        return 1.0
    gen = torch.Generator().manual_seed(0)
    n = torch.randn((1, *tuple(op.range_shape)[-3:]), generator=gen)
    op._unit_noise_gain = blind_noise_estimate(op.fbp(float(getattr(op, "pixel_size", 1.0)) * n))
    return op._unit_noise_gain


def _tv_weight_rel(p: dict[str, Any], op, x0, noise_level: float | None) -> dict[str, float]:
    """TV's relative weight, set in ``p["weight_rel"]``: weight_rel, or with ``weight_noise``
    (and ``weight_noise_power`` q, default 2, both popped) max(weight_rel, weight_noise × (σ̂ /
    (g·range(x0)))^q) (``_follow_noise``), g = ``unit_noise_gain(op)``.

    σ̂/g is the data's noise; a weight growing with a power of it follows the MAP weight of
    ½||Ax − y||² + w·TV(x) (q = 2 for Gaussian noise and a Laplace prior on the gradients);
    q and the constant were fitted on CT validation problems (``scripts/tune_ct_tv_noise.py``)."""
    q = float(p.pop("weight_noise_power", 2.0))
    return _follow_sinogram_noise(p, "weight_noise", "weight_rel", op, x0, noise_level, q)


def relative_norm(op) -> float:
    """||A||² in pixel units (``op.norm_sq()`` / pixel_size²) over that of the geometry the CT
    noise rules were fitted on (128², 60 parallel views); about views × width, so 6.0 for 512²
    and 90 views. 1 for an operator without FBP (MRI).

    ρ = ρ_rel·||A||² grows with it, while AᵀA at the pixel scale (where noise and edges live)
    grows with the number of views only: at one ρ_rel a wider image is regularized more
    strongly at the pixel scale."""
    if not hasattr(op, "fbp"):
        return 1.0
    pixel = float(getattr(op, "pixel_size", 1.0))
    return float(op.norm_sq()) / pixel**2 / _reference_norm()


@functools.cache
def _reference_norm() -> float:
    """||A||² of the 128², 60-view parallel geometry (unit pixels), computed once."""
    from operators.ct import CTOperator

    return float(CTOperator(128, views=60).norm_sq())


def _follow_sinogram_noise(
    p: dict[str, Any], rule: str, key: str, op, x0, noise_level: float | None, power: float
) -> dict[str, float]:
    """``_follow_noise`` with σ̂ divided by g = ``unit_noise_gain(op)`` when σ̂ is the start
    image's blind estimate (CT: the sinogram's noise in pixel units, whatever the geometry);
    a measured ``noise_level`` (MRI) is used as it is. Records g when it applies.

    With ``{rule}_norm_power`` β (popped; default 0) the rule's constant is divided by
    max(1, ``relative_norm(op)``)^β: a larger scan at the same noise wants a smaller ρ_rel or TV
    weight (β = 1 would keep ρ × weight, the MAP weight of the prior against ½||Ax − y||²,
    fixed; validation says 0.5). Scans smaller than the fitted geometry keep the rule as it is:
    no validation problem is smaller, and on 64²–96² ellipse phantoms the larger weight lost
    0.13 dB on average."""
    beta = float(p.pop(f"{rule}_norm_power", 0.0) or 0.0)
    on = p.get(rule) is not None and noise_level is None and op is not None
    gain = unit_noise_gain(op) if on else 1.0
    ratio = max(1.0, relative_norm(op)) if on and beta else 1.0
    if ratio != 1.0:
        p[rule] = float(p[rule]) / ratio**beta
    used = _follow_noise(p, rule, key, x0, noise_level, power=power, gain=gain)
    if not (used and on):
        return used
    return {**used, "unit_noise_gain": gain, **({"relative_norm": ratio} if beta else {})}


POSITIVE_KEYS = (
    "lam", "rho_rel", "rho_noise", "step_rel", "weight_rel", "weight_noise", "weight_noise_power",
    "rho_noise_power", "plain_step_rel", "strength",
)  # fmt: skip
NONNEGATIVE_KEYS = (
    "tol", "cg_tol", "weight_noise_norm_power", "rho_noise_norm_power", "prox_relative_tol",
    "support_weight",
)  # fmt: skip
COUNT_KEYS = ("iters", "cg_iters", "tv_iters")
NULLABLE_KEYS = ("rho_noise", "weight_noise", *SIGMA_KEYS, *GEOMETRY_SIGMA_KEYS)  # null: off
NUMBER_KEYS = frozenset((*POSITIVE_KEYS, *NONNEGATIVE_KEYS, *COUNT_KEYS, *NULLABLE_KEYS))
FLAG_KEYS = ("accelerated", "tv_warm_start")  # true or false, nothing else


def _plain_step(p: dict[str, Any]) -> None:
    """``plain_step_rel`` (popped): plain PnP-PGD's step_rel, where the section also serves
    FISTA (``accelerated``), which needs step_rel ≤ 1. For the prox of a convex R plain PGD
    converges for any γ < 2/(λ||A||²) and its objective γD + R still falls at every step
    (descent lemma: by (1/γ − λ||A||²/2)·||x_{k+1} − x_k||²), so a certified prior may take
    nearly twice FISTA's step; a step_rel ≥ 2 is refused."""
    plain = p.pop("plain_step_rel", None)
    if plain is None or p.get("accelerated", False):
        return
    if not float(plain) < 2.0:
        raise ValueError(f"plain_step_rel must be < 2 (PGD's convergence range), got {plain}")
    p["step_rel"] = float(plain)


def _scale_step(p: dict[str, Any], strength: float) -> None:
    """PnP-PGD's step for a prior without a ρ rule at ``strength`` s. Its fixed points minimize
    γD(x) + R(x), and argmin (γ/s)·D + R = argmin γD + s·R, so step_rel becomes step_rel/s;
    refused when that leaves the convergence range (plain PGD < 2, FISTA ≤ 1)."""
    step_rel = float(p.get("step_rel", 0.99)) / strength
    accelerated = bool(p.get("accelerated"))
    name = "FISTA's" if accelerated else "PGD's"
    if (step_rel > 1.0) if accelerated else (step_rel >= 2.0):
        raise ValueError(
            f"strength {strength:g}: with this prior PnP-PGD's strength is its step, and "
            f"step_rel {step_rel:.3g} leaves {name} range (step_rel ≤ 1 for FISTA, < 2 plain); "
            "use a larger strength or --solver pnp-admm"
        )
    p["step_rel"] = step_rel


def _is_number(v: object, key: str) -> bool:
    """A JSON/Python number (not a bool: ``true`` was used as 1; not a string: ``"0.01"`` was
    accepted; a 0-d array or tensor holding one is), or null for a rule that may be off."""
    if v is None:
        return key in NULLABLE_KEYS
    if isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim == 0:  # np.array(50), torch.tensor(50)
        v = v.item()
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
    if isinstance(v, numbers.Real):
        return True
    if isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim == 0:  # np.array(50), torch.tensor(50)
        return (
            v.dtype != torch.bool
            and np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v).dtype.kind
            in "iuf"
        )
    return False


def _check_numbers(p: dict[str, Any]) -> None:
    """Refuse NaN, infinities, non-numbers and out-of-range values in a run's parameters before
    any work, naming the key (a NaN ρ would pass a "> 0" test written the other way round and
    run to garbage). A noise rule set to null (``rho_noise``, ``weight_noise``) is off."""
    for k, v in p.items():
        if v is None and k in NULLABLE_KEYS:
            continue
        if k in FLAG_KEYS and not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"parameter {k!r} must be true or false, got {v!r}")
        if k in NUMBER_KEYS:
            if not _is_number(v, k):
                raise ValueError(f"parameter {k!r} must be a number, got {v!r}")
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"parameter {k!r} must be a number, got {v!r}") from None
            if not math.isfinite(x):
                raise ValueError(f"parameter {k!r} must be finite, got {v!r}")
            if k in POSITIVE_KEYS and not x > 0:
                raise ValueError(f"parameter {k!r} must be > 0, got {v!r}")
            if k in NONNEGATIVE_KEYS and x < 0:
                raise ValueError(f"parameter {k!r} must be >= 0, got {v!r}")
            if k in COUNT_KEYS and (x != int(x) or x < 1):
                raise ValueError(f"parameter {k!r} must be a whole number >= 1, got {v!r}")


def support_penalty(op, y: torch.Tensor, weight: float) -> tuple[Any, torch.Tensor, dict]:
    """(op', y', record): the data term with a penalty on the image off the coil support.

    With coil maps cropped to the object (ESPIRiT), AᴴA is exactly 0 off the support
    S = {Σ_c |S_c|² > 0} (``op.support``): the data leave those pixels free, and a learned
    prior that barely sees smooth fields lets a haze grow there over the iterations (its fixed
    point on the bundled slice's equispaced 4× problem: 36 dB, against 47 dB with this
    penalty). With ``weight`` w > 0 the data term becomes

        ½||Ax − y||² + (μ/2)||(1 − 1_S) ⊙ x||²,   μ = w·||A||²,

    the stacked operator A' = [A; √μ(1 − 1_S)] with y' = (y, 0) (``operators.Stacked``), so
    every solver (ADMM's CG, PGD's gradient, the monitor's objective) minimizes the same
    convex model. The two parts act on disjoint pixels, so ||A'||² = max(||A||², μ) exactly,
    and ADMM's x-update off S is ρ/(λμ + ρ) times its proximal point. Operators without a
    support, or one that covers every pixel, are returned as they are (record: {})."""
    support = getattr(op, "support", None) if weight > 0 else None
    if support is None or bool(support.all()):
        return op, y, {}
    from operators import Diagonal, Stacked

    base = op.norm_sq()
    mu = weight * base
    off = (~support).to(torch.float64) * math.sqrt(mu)
    stacked = Stacked(op, Diagonal(off, op.domain_shape, complex_=op.domain_complex))
    stacked._norm_sq = max(base, mu)
    zeros = torch.zeros((y.shape[0], *op.domain_shape), dtype=y.dtype, device=y.device)
    record = {
        "support_weight": weight,
        "support_fraction": float(support.double().mean()),
    }
    return stacked, stacked.stack([y, zeros]), record


def check_prior_channels(prior, name: str | Path, x0: torch.Tensor) -> None:
    """Refuse a prior made for other images than x0 (B, C, H, W): a complex MRI image takes a
    2-channel (real, imaginary) prior, a real image one with C channels. ValueError naming the
    prior and what each side is (priors without an ``in_channels`` setting are not checked)."""
    config = getattr(prior, "config", None)
    got = config().get("in_channels") if callable(config) else None
    want = 2 if x0.is_complex() else int(x0.shape[1])
    if got is None or int(got) == want:
        return
    kinds = {1: "real single-channel images (CT, natural images)", 2: "complex MRI images"}
    made = kinds.get(int(got), f"{got}-channel images")
    needs = (
        "complex MRI images (a 2-channel prior such as ridge-mri)"
        if x0.is_complex()
        else (
            f"{want}-channel real images (a CT prior such as crr-ct)"
            if want == 1
            else f"{want} channels"
        )
    )
    raise ValueError(f"--prior {name}: made for {made}; this problem has {needs}")


def reconstruct(
    op,
    y: torch.Tensor,
    x0: torch.Tensor,
    solver: str,
    prior_name: str | None,
    params: dict[str, Any],
    reference: torch.Tensor | None = None,
    data_range: float | None = None,
    progress: bool = False,
    objective_every: int = 0,
    noise_level: float | None = None,
    start: torch.Tensor | None = None,
) -> Reconstruction:
    """Run ``solver`` ('pnp-admm', 'pnp-pgd' or 'tv') from x0; returns the image and its record.

    ``prior_name`` 'tv' with pnp-admm/pnp-pgd is the same TV as ``solver`` 'tv' (its weight
    ``weight_rel`` × range(x0) from ``params``). ``noise_level``: the data's noise σ in image
    units when the caller measured it; rules relative to the noise use it instead of the blind
    estimate of x0. ``start``: the iterate to start from instead of x0 (a warm start, e.g. the
    neighbouring slice's result); the rules (range, noise) still read x0. ``params["strength"]``
    s (default 1) multiplies the regularizer's weight against the data term after the rules:
    TV's weight, or ρ of ADMM's problem λD(x) + ρR(x) for a prior (PGD and FISTA are told that
    problem's σ or strength, ``_tell_noise_level``; without a ρ rule their step is γ/s,
    ``_scale_step``), so s = 2 regularizes twice as strongly with every solver (`--strength`)."""
    from priors.base import ComplexAsChannels
    from priors.checkpoint import load_prior
    from solvers import pnp_admm, pnp_pgd

    p = dict(params)
    _check_numbers(p)
    _plain_step(p)
    lam = float(p.pop("lam", 1.0))
    op, y, support_used = support_penalty(op, y, float(p.pop("support_weight", 0.0)))
    norm_sq = op.norm_sq()
    if solver != "tv" and prior_name is not None and prior_key(prior_name) == "tv":
        p.setdefault("solver", solver)  # the one TV, run by the solver asked for
        solver = "tv"
    rho_used = _problem_rho_rel(p, x0, noise_level, op)
    strength = float(p.pop("strength", 1.0))  # × the rules' regularizer weight
    relative_tol = p.pop("prox_relative_tol", None)  # an exact-prox prior's inexact rule
    if solver == "tv":
        from priors.classical import TVPrior

        if "weight_rel" not in p and p.get("weight_noise") is None:
            raise ValueError("TV needs weight_rel (the presets' tv section)")
        rho_used.update(_tv_weight_rel(p, op, x0, noise_level))
        weight = float(p.pop("weight_rel")) * intensity_range(x0) * strength
        p_used = {**rho_used, "tv_weight": weight}
        inner_solver = p.pop("solver", "pnp-admm")
        if inner_solver == "pnp-pgd" and "rho_rel" in p:  # the problem ADMM solves at this ρ
            factor = pgd_sigma_factor(float(p.get("step_rel", 0.99)), float(p.pop("rho_rel")), 1)
            p_used["problem_tv_weight"], p_used["pgd_weight_factor"] = p_used["tv_weight"], factor
            p_used["tv_weight"] *= factor
        prior = TVPrior(
            weight=p_used["tv_weight"],
            iters=int(p.pop("tv_iters", 50)),
            warm_start=bool(p.pop("tv_warm_start", False)),
        )
    else:
        if prior_name is None:
            raise ValueError(f"--solver {solver} needs a --prior")
        prior = load_prior(prior_name, device=x0.device, dtype=x0.real.dtype)
        check_prior_channels(prior, prior_name, x0)
        if x0.is_complex() and not prior_name.startswith("tv"):
            prior = ComplexAsChannels(prior)
        inner_solver = solver
        if "rho_rel" in p:  # ADMM's problem λD + ρR: the strength scales ρ (PGD: its σ rule)
            p["rho_rel"] = float(p["rho_rel"]) * strength
        elif strength != 1.0 and solver == "pnp-pgd":  # no ρ: PGD minimizes γD + R (R·s: γ/s)
            _scale_step(p, strength)
        p_used = {
            **rho_used,
            **_tell_noise_level(
                prior, prior_name, p, x0, solver, noise_level, getattr(op, "geometry", None)
            ),
        }
        p.pop("solver", None)
    if getattr(prior, "mode", None) == "prox":  # an inner solve: start where it stopped
        from priors.lpn import unwrap  # (on the model: a wrapper's attribute is its own)

        model = unwrap(prior)
        model.warm_start = True  # (and forget any earlier run's output)
        model.relative_tol = 0.0 if relative_tol is None else float(relative_tol)
    elif relative_tol is not None:
        raise ValueError(
            f"prox_relative_tol: prior {prior_name or 'tv'!r} has no inner solve (only the "
            "exact proxes, such as crr-ct and crr-mri, do)"
        )
    common = dict(
        iters=int(p.pop("iters", 50)),
        tol=float(p.pop("tol", 1e-5)),
        x0=x0 if start is None else start,
        reference=reference,
        data_range=data_range,
        progress=progress,
        objective_every=objective_every,
    )
    if inner_solver == "pnp-admm":
        rho = float(p.pop("rho_rel")) * lam * norm_sq
        res = pnp_admm(
            op,
            y,
            prior,
            lam=lam,
            rho=rho,
            cg_iters=int(p.pop("cg_iters", 10)),
            cg_tol=float(p.pop("cg_tol", 1e-6)),
            precondition=bool(p.pop("precondition", True)),
            **common,
        )
        p_used.update(rho=rho, cg_preconditioner=res.params.get("cg_preconditioner"))
    elif inner_solver == "pnp-pgd":
        step_rel = float(p.pop("step_rel", 0.99))  # plain_step_rel's, when it applied
        step = step_rel / (lam * norm_sq)
        res = pnp_pgd(
            op,
            y,
            prior,
            lam=lam,
            step=step,
            accelerated=bool(p.pop("accelerated", False)),
            **common,
        )
        p_used.update(step=step, step_rel=step_rel)
    else:
        raise ValueError(f"unknown solver {inner_solver!r}")
    p_used = {**params, **p_used, **support_used, "lam": lam, "norm_sq": norm_sq}
    return Reconstruction(
        x=res.x,
        history=res.history,
        converged=res.converged,
        stop_reason=res.stop_reason,
        iterations=res.iterations,
        seconds=res.seconds,
        params=p_used,
        objective=getattr(res, "objective", ""),
        start_data_fidelity=0.5 * lam * op.residual_sq(x0, y),  # x0, also under a warm start
        zero_data_fidelity=0.5 * lam * float(torch.linalg.vector_norm(y)) ** 2,
        norm_ratio=_norm_ratio(res.x, x0),
        solver_run=inner_solver,
        certified_prior=_certified(prior),
        modality="mri" if x0.is_complex() else "ct",
    )


def _certified(prior) -> bool:
    """Whether ``prior`` is firmly nonexpansive by construction: TV, or a model that states a
    Lipschitz bound ≤ 1 on its prox's Jacobian (the convex-ridge priors)."""
    from priors.classical import TVPrior
    from priors.lpn import unwrap

    if isinstance(prior, TVPrior):
        return True
    bound = getattr(unwrap(prior), "lipschitz_bound", None)
    return callable(bound) and float(bound()) <= 1.0


@dataclass(frozen=True)
class SolveOptions:
    """What a run may override in its solver's preset, and how it reports.

    ``iters``/``tol``: the iteration cap and stopping tolerance; ``prior_sigma_rel`` /
    ``prior_sigma_noise``: the σ rule of a σ-input prior (``_tell_noise_level``); ``strength``:
    × the regularizer's weight the rules give (``reconstruct``); None keeps the preset's value.
    ``progress``: a progress bar; ``objective_every``: monitor R every this many iterations."""

    iters: int | None = None
    tol: float | None = None
    prior_sigma_rel: float | None = None
    prior_sigma_noise: float | None = None
    strength: float | None = None
    progress: bool = False
    objective_every: int = 0

    @classmethod
    def from_args(cls, args) -> SolveOptions:
        """The options `recon ct` / `recon mri` parsed (``add_solver_arguments``)."""
        return cls(
            iters=args.iters,
            tol=args.tol,
            prior_sigma_rel=getattr(args, "prior_sigma_rel", None),
            prior_sigma_noise=getattr(args, "prior_sigma_noise", None),
            strength=getattr(args, "strength", None),
            progress=not args.quiet,
            objective_every=args.objective_every,
        )


def solve_with_presets(
    presets: dict,
    op,
    y: torch.Tensor,
    x0: torch.Tensor,
    solver: str,
    prior: str | None,
    *,
    reference=None,
    data_range: float | None = None,
    noise_level: float | None = None,
    start: torch.Tensor | None = None,
    options: SolveOptions | None = None,
) -> Reconstruction:
    """Run ``solver`` ('pnp-admm', 'pnp-pgd', 'tv') with ``prior`` and their preset; the
    ``options`` that are set override it. ``solver`` 'tv' and ``prior`` 'tv' are the one TV
    (``method_params``); 'pnp-pgd' runs FISTA when the ``pnp-pgd`` preset says ``accelerated``.
    ``options.strength`` multiplies the regularizer's weight the rules give (``reconstruct``)."""
    o = SolveOptions() if options is None else options
    over = {"iters": o.iters, "tol": o.tol, "strength": o.strength}
    if solver == "tv" or (prior is not None and prior_key(prior) == "tv"):
        inner = "pnp-admm" if solver in ("tv", "pnp-admm") else "pnp-pgd"
        if inner == "pnp-pgd" and presets.get("pnp-pgd", {}).get("accelerated"):
            inner = "pnp-fista"
        pipe_solver, prior, params = method_params(presets, inner, "tv")
        params.update({k: v for k, v in over.items() if v is not None})
    else:
        over.update(prior_sigma_rel=o.prior_sigma_rel, prior_sigma_noise=o.prior_sigma_noise)
        pipe_solver = solver
        params = solver_params(presets, solver, over, prior)
    return reconstruct(
        op,
        y,
        x0,
        pipe_solver,
        prior,
        params,
        reference=reference,
        data_range=data_range,
        progress=o.progress,
        objective_every=o.objective_every,
        noise_level=noise_level,
        start=start,
    )


# A run whose image ends this much further from the data (its misfit (λ/2)||Ax − y||²) or this much
# larger in norm than its start image has been pulled away from the measurements by the prior,
# without the blow-up the divergence test catches (a bounded oscillation: `lpn-ct` with PGD on a
# limited-angle phantom ends with values ±5 on a 0–1 image, misfit ×1110, norm ×11). Runs that
# work end between ×0.0005 and ×2.1 in misfit and at most ×1.11 in norm (CT and MRI, every solver,
# noise 0.05–5 %, --strength up to 16; docs/results/convergent-prior.md).
# The misfit test needs a start that does not fit the data almost exactly: single-coil Cartesian
# zero-filling reproduces y (D(x0) ~ 1e-13 ||y||²), so D(x0) is floored at MISFIT_FLOOR × D(0), and
# a run is flagged only when its residual is above ~10 % of ||y|| too.
MISFIT_FACTOR, NORM_FACTOR, MISFIT_FLOOR = 10.0, 5.0, 1e-3
EXIT_UNUSABLE = 3  # `recon ct` / `recon mri` exit status when the image written is not usable


def unusable_reason(record: dict[str, Any], history: dict[str, list]) -> str | None:
    """Why the image a run wrote is not usable, or None: the solver diverged (its stop reason),
    or its last iterate fits the data more than ``MISFIT_FACTOR`` × worse than the start image
    (``record["start_data_fidelity"]``, floored at ``MISFIT_FLOOR`` × the zero image's
    ``zero_data_fidelity``, against the history's last data fidelity), or is more than
    ``NORM_FACTOR`` × larger in norm (``record["norm_ratio"]``)."""
    stop = str(record.get("stop_reason", ""))
    if stop.startswith("diverged"):
        return f"the solver {stop}"
    d0 = record.get("start_data_fidelity") or 0.0
    floor = MISFIT_FLOOR * (record.get("zero_data_fidelity") or 0.0)
    ref = max(d0, floor)
    fits = [v for v in history.get("data_fidelity", []) if v is not None]
    if ref > 0 and fits and fits[-1] > MISFIT_FACTOR * ref:
        return (
            f"the image fits the data {fits[-1] / ref:.3g}x worse than the start image (data "
            f"misfit {fits[-1]:.3g} against {d0:.3g})"
        )
    ratio = record.get("norm_ratio")
    if ratio is not None and ratio > NORM_FACTOR:
        return f"the image is {ratio:.3g}x larger in norm than the start image"
    return None


def _unusable_line(reason: str, record: dict[str, Any], where: str = "") -> str:
    """The stderr warning for an unusable run, with what to change: a prior that is not
    firmly nonexpansive by construction (``certified_prior``) gets the σ floor (when it is told
    σ) and the certified priors named; a solver other than ADMM gets ADMM named."""
    params = record.get("params", {})
    line = f"warning: {where}{reason}; the image written is not usable"
    tips = []
    if not record.get("certified_prior"):
        if any(k in params for k in SIGMA_KEYS):
            tips.append(
                f"a larger σ floor, --prior-sigma-rel / --prior-sigma-noise (σ used: "
                f"{params.get('prior_sigma', float('nan')):.4g}; such priors are unstable when σ "
                "is small)"
            )
        m = record.get("modality") or "ct"
        tips.append(f"a certified prior (crr-{m}, ridge-{m})")
    if record.get("solver_run", "pnp-admm") != "pnp-admm":
        tips.append("--solver pnp-admm")
    if tips:
        return line + ". Try " + ", or ".join(tips)
    return line + " (a firmly nonexpansive prior with ADMM: check the data and --config)"


def slow_runaway_warning(record: dict[str, Any], history: dict[str, list]) -> str | None:
    """A warning when a run that did not converge ended with its relative change growing (see
    ``solvers.monitor.rising_change``): it ran away slowly, and earlier iterates were better.
    None for converged or diverged runs (those say so in their stop reason)."""
    from solvers.monitor import RUNAWAY_FACTOR, RUNAWAY_RUN, rising_change

    if record.get("converged") or str(record.get("stop_reason", "")).startswith("diverged"):
        return None
    at = rising_change(history.get("rel_change", []))
    if at is None:
        return None
    line = (
        f"the solver did not converge: its relative change has grown {RUNAWAY_FACTOR:g}x from "
        f"its smallest value, for {RUNAWAY_RUN} iterations in a row by iteration {at} (a slow "
        f"runaway); the image written may be worse than earlier iterates: lower --iters, or try "
        f"--solver pnp-admm or another rho_rel / step_rel"
    )
    if any(k in record.get("params", {}) for k in SIGMA_KEYS):
        line += ", or raise --prior-sigma-rel / --prior-sigma-noise"
    return line


def warn_about_run(
    record: dict[str, Any], history: dict[str, list], metrics: dict, where: str = ""
) -> None:
    """Print the run's warnings to stderr (an unusable image: divergence or a run pulled away
    from the data, ``unusable_reason``; a slow runaway) and record them in ``metrics``
    (``unusable``, ``warning``) before the outputs are written (`recon ct`, `recon mri`).
    The command's exit status follows ``metrics`` (``exit_status``). ``where`` prefixes the
    printed lines (a volume's "slice K: ")."""
    reason = unusable_reason(record, history)
    if reason is not None:
        metrics["unusable"] = reason
        print(_unusable_line(reason, record, where), file=sys.stderr)
    warning = slow_runaway_warning(record, history)
    if warning is not None:
        metrics["warning"] = warning
        print(f"warning: {where}{warning}", file=sys.stderr)


def exit_status(metrics: dict) -> int:
    """`recon ct` / `recon mri`'s exit status for the run ``metrics`` describe: 0, or
    ``EXIT_UNUSABLE`` when its image (or a slice's) is not usable (``unusable_reason``)."""
    slices = metrics.get("slices") or []
    return EXIT_UNUSABLE if "unusable" in metrics or any("unusable" in r for r in slices) else 0


def unusable_slices(rows: list[dict]) -> str | None:
    """A volume's ``unusable`` entry from its slices' rows: which slices, and the first reason."""
    bad = [r for r in rows if "unusable" in r]
    if not bad:
        return None
    which = ", ".join(str(r["slice"]) for r in bad)
    return f"slice{'s' * (len(bad) > 1)} {which}: {bad[0]['unusable']}"


def versions() -> dict[str, str]:
    """The versions metrics.json records, from the installed distributions' metadata (an MRI run
    need not import ASTRA to read its version)."""
    from importlib.metadata import version

    return {
        "pnp-recon": __version__,
        "torch": torch.__version__,
        "astra": version("astra-toolbox"),
        "sigpy": version("sigpy"),
        "numpy": np.__version__,
    }


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
