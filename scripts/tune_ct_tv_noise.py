"""The TV weight (or a learned prior's ADMM ρ) that each CT validation problem wants, beside
its blind noise estimate.

For a CT TV default that follows the data's noise (``weight_noise`` in the presets): the
validation problems (none is a test case of ``scripts/compare_ct.py``) are

* the four real-CT validation windows (``recon tune ct --val real-ct``, 128²), parallel 60
  views with Gaussian noise 0.5 / 1 / 2 / 4 % of max|sinogram| and Poisson noise at 2e4 and 1e5
  incident photons, and fan beam at 1 % and 4 %;
* two of them at 256², parallel 60 views, 1 % and 4 %;
* two validation ellipse phantoms at 128², parallel 60 views, 1 % and 4 %.

For each group of scans it runs TV-ADMM (the shipped preset, its weight_rel replaced) over a
grid of weights, factor 2 apart and refined by √2 around the best, and writes one JSON line: the
mean PSNR per weight, the best weight, and the mean blind noise estimate σ̂ and range of the FBP
start images. ``--fit`` reads such a file and reports the rule weight_rel = c·(σ̂/(g·range))^p
(g: ``recon.pipeline.unit_noise_gain`` of the group's geometry) that loses least against each
group's best, what the shipped rule and the old fixed weight (``--fixed``) lose.

    python scripts/tune_ct_tv_noise.py --out runs/tv-noise.jsonl
    python scripts/tune_ct_tv_noise.py --fit runs/tv-noise.jsonl

``--prior NAME`` does the same for PnP-ADMM with a learned prior (its preset σ rule), over
``rho_rel`` instead of TV's weight (``--groups`` and ``--scans`` run a subset), for the rule
``rho_noise`` (``rho_rel = max(rho_rel, c·(σ̂/(g·range))^p)``):

    python scripts/tune_ct_tv_noise.py --out runs/crr-rho.jsonl --prior crr-ct --scans 2
    python scripts/tune_ct_tv_noise.py --fit runs/crr-rho.jsonl --prior crr-ct --fixed 0.03

``--defaults METHOD ...`` instead scores each method (``tv`` or a prior's name) at what
``recon ct`` uses (presets and noise rules) on the same groups, a mean PSNR per group and
overall (JSON lines in ``--out``, resumes; ``--config F`` changes the presets as ``recon ct
--config`` does):

    python scripts/tune_ct_tv_noise.py --out runs/ct-defaults.jsonl --defaults tv ridge-ct aelpn-ct
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COARSE = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
PRIOR_COARSE = (0.0125, 0.025, 0.05, 0.1)  # rho_rel of PnP-ADMM with a learned prior


def groups():
    """(name, problem, scans, noise dict) of the validation groups."""
    from recon.tune.problems import ct_real_validation_scans, ct_validation_scans

    real = ct_real_validation_scans(128)
    out = [
        (f"real128-par60-g{n}", "ct-par60", real, {"noise": n}) for n in (0.005, 0.01, 0.02, 0.04)
    ]
    out += [(f"real128-par60-p{p:g}", "ct-par60", real, {"photons": p}) for p in (2e4, 1e5)]
    out += [(f"real128-fan-g{n}", "ct-fan", real, {"noise": n}) for n in (0.01, 0.04)]
    real256 = ct_real_validation_scans(256)[:2]
    out += [(f"real256-par60-g{n}", "ct-par60", real256, {"noise": n}) for n in (0.01, 0.04)]
    ph = ct_validation_scans(128, n=2)
    out += [(f"phantom128-par60-g{n}", "ct-par60", ph, {"noise": n}) for n in (0.01, 0.04)]
    return out


def build(problem: str, scan, noise: dict, seed: int = 0):
    from recon.api import ct_problem
    from recon.tune.problems import PROBLEMS

    spec = PROBLEMS[problem]
    return ct_problem(
        scan.image, units=scan.units, views=spec["views"], arc=spec["arc"],
        geometry=spec["geometry"], pixel_size=scan.pixel_size, seed=seed,
        noise=noise.get("noise", 0.01), photons=noise.get("photons"),
    )  # fmt: skip


def mean_psnr(pbs, solve) -> float:
    """Mean PSNR over the problems ``pbs`` of ``solve(pb)`` (a reconstruction result)."""
    from recon.pipeline import image_metrics

    vals = []
    for pb in pbs:
        rec = solve(pb)
        ref = pb.x_true[0, 0].numpy()
        vals.append(image_metrics(rec.x[0, 0].numpy(), ref, pb.data_range)["psnr"])
    return float(np.mean(vals))


def psnr_at(pbs, presets, w: float, prior_name: str = "tv") -> float:
    from recon.pipeline import method_params, reconstruct

    solver, prior, params = method_params(presets, "pnp-admm", prior_name)
    if prior_name == "tv":
        params.update(weight_rel=w, weight_noise=None)  # this weight, not the noise rule
    else:
        params.update(rho_rel=w, rho_noise=None)  # this ρ, not a noise rule
    return mean_psnr(pbs, lambda pb: reconstruct(pb.op, pb.y, pb.x0, solver, prior, params))


def measure(out: Path, prior: str = "tv", only=None, n_scans: int | None = None) -> None:
    from recon.pipeline import blind_noise_estimate, intensity_range, load_presets, unit_noise_gain

    presets = load_presets("ct")
    done = set()
    if out.exists():
        done = {json.loads(line)["group"] for line in out.read_text().splitlines() if line}
    coarse = COARSE if prior == "tv" else PRIOR_COARSE

    def at(w):
        return psnr_at(pbs, presets, w, prior)

    for name, problem, scans, noise in groups():
        if name in done or (only and name not in only):
            continue
        t0 = time.time()
        pbs = [build(problem, s, noise) for s in scans[:n_scans]]
        rel = [blind_noise_estimate(pb.x0) / intensity_range(pb.x0) for pb in pbs]
        res = {w: at(w) for w in coarse}
        while True:  # extend past an edge, then refine by √2 around the best
            best = max(res, key=res.get)
            if best == min(res) and best > 1e-4:
                res[best / 2] = at(best / 2)
            elif best == max(res) and best < 2.0:
                res[best * 2] = at(best * 2)
            else:
                break
        for w in (best / math.sqrt(2), best * math.sqrt(2)):
            res[w] = at(w)
        best = max(res, key=res.get)
        row = {
            "group": name, "problem": problem, "noise": noise, "size": int(pbs[0].x0.shape[-1]),
            "scans": [pb_scan.name for pb_scan in scans[:n_scans]], "prior": prior,
            "sigma_rel": float(np.mean(rel)),
            "norm_sq": float(pbs[0].op.norm_sq()), "unit_gain": unit_noise_gain(pbs[0].op),
            "best_weight_rel": best,
            "best_psnr": res[best], "psnr": {f"{w:.6g}": p for w, p in sorted(res.items())},
            "seconds": time.time() - t0,
        }  # fmt: skip
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name}: σ̂/range {row['sigma_rel']:.4f}, best weight_rel {best:.4g} "
              f"({res[best]:.2f} dB), {row['seconds']:.0f} s", flush=True)  # fmt: skip


def score_defaults(
    out: Path, methods: list[str], only=None, n_scans: int | None = None, config: str | None = None
) -> None:
    """Mean PSNR per validation group of each method at ``recon ct``'s defaults (updated by
    ``config`` as ``recon ct --config`` does); a table."""
    from recon.pipeline import load_presets, solve_with_presets

    presets = load_presets("ct", config)
    text = out.read_text() if out.exists() else ""
    rows = [json.loads(line) for line in text.splitlines() if line]
    done = {(r["group"], r["method"]) for r in rows}
    for name, problem, scans, noise in groups():
        if only and name not in only:
            continue
        pbs = None
        for method in methods:
            if (name, method) in done:
                continue
            pbs = pbs or [build(problem, s, noise) for s in scans[:n_scans]]
            t0 = time.time()
            psnr = mean_psnr(  # method "tv" with pnp-admm is `recon ct --solver tv`'s one TV
                pbs,
                lambda pb, m=method: solve_with_presets(presets, pb.op, pb.y, pb.x0, "pnp-admm", m),
            )
            row = {"group": name, "method": method, "psnr": psnr, "seconds": time.time() - t0}
            rows.append(row)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} {method}: {row['psnr']:.2f} dB, {row['seconds']:.0f} s", flush=True)
    table = {(r["group"], r["method"]): r["psnr"] for r in rows}
    names = [g[0] for g in groups() if all((g[0], m) in table for m in methods)]
    print("| group | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for g in names:
        print(f"| {g} | " + " | ".join(f"{table[g, m]:.2f}" for m in methods) + " |")
    for label, sel in (("mean", names), ("mean, real CT", [g for g in names if "real" in g])):
        if sel:
            means = [np.mean([table[g, m] for g in sel]) for m in methods]
            print(f"| {label} ({len(sel)}) | " + " | ".join(f"{v:.2f}" for v in means) + " |")


def loss_at(row: dict, w: float) -> float:
    """dB lost against the group's best at weight w (PSNR interpolated linearly in log w;
    outside the measured weights, the edge value: a lower bound on the loss)."""
    ws = np.log([float(k) for k in row["psnr"]])
    ps = np.array(list(row["psnr"].values()))
    order = np.argsort(ws)
    return float(row["best_psnr"] - np.interp(math.log(w), ws[order], ps[order]))


def _with_gain(rows: list[dict]) -> list[dict]:
    """Rows with ``unit_gain`` (the FBP's unit-noise σ̂ of the group's geometry), ``x`` =
    σ̂/(gain·range), the quantity the rule is a power of, and ``relative_norm`` (the size the
    rule's ``*_norm_power`` divides by)."""
    from recon.pipeline import relative_norm, unit_noise_gain

    spec = {name: (problem, scans, noise) for name, problem, scans, noise in groups()}
    for r in rows:
        problem, scans, noise = spec[r["group"]]
        op = build(problem, scans[0], noise).op
        if "unit_gain" not in r:
            r["unit_gain"] = unit_noise_gain(op)
        r["relative_norm"] = relative_norm(op)
        r["x"] = r["sigma_rel"] / r["unit_gain"]
    return rows


def fit(path: Path, fixed: float, prior: str = "tv") -> None:
    rows = _with_gain([json.loads(line) for line in path.read_text().splitlines() if line])
    from recon.pipeline import load_presets

    presets = load_presets("ct")
    if prior == "tv":
        tv = presets["tv"]
        shipped = (float(tv["weight_noise"]), float(tv.get("weight_noise_power", 2.0)))
        beta = float(tv.get("weight_noise_norm_power") or 0.0)
    else:  # the prior's ρ rule, or its fixed rho_rel (c = 0)
        sec = {**presets["pnp-admm"], **presets["priors"][prior]["pnp-admm"]}
        tv = {"weight_rel": sec["rho_rel"]}
        shipped = (float(sec.get("rho_noise") or 0.0), float(sec.get("rho_noise_power", 1.0)))
        beta = float(sec.get("rho_noise_norm_power") or 0.0)
    for r in rows:  # the preset's size factor, in the shipped rule and in the fit alike
        r["shrink"] = max(1.0, r["relative_norm"]) ** beta
    print(f"| group | σ̂/range | g | best weight_rel | best dB | fixed {fixed:g}: lost | "
          f"shipped rule: weight_rel, lost |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        w, lost = r["best_weight_rel"], loss_at(r, fixed)
        w_rule = max(float(tv["weight_rel"]), shipped[0] * r["x"] ** shipped[1] / r["shrink"])
        lost_rule = loss_at(r, w_rule)
        print(f"| {r['group']} | {r['sigma_rel']:.4f} | {r['unit_gain']:.4f} | {w:.4g} | "
              f"{r['best_psnr']:.2f} | {lost:.2f} | {w_rule:.4g}, {lost_rule:.2f} |")  # fmt: skip
    per_power = {}  # power -> (mean loss, worst loss, c) of its best c
    for p in np.arange(0.5, 3.01, 0.25):
        for c in np.exp(np.linspace(math.log(1e-3), math.log(1e3), 241)):
            losses = [loss_at(r, c * r["x"] ** p / r["shrink"]) for r in rows]
            if p not in per_power or np.mean(losses) < per_power[p][0]:
                per_power[p] = (float(np.mean(losses)), float(max(losses)), float(c))
    best_p = min(per_power, key=lambda p: per_power[p][0])
    mean, worst, c = per_power[best_p]
    print(f"\nfixed weight_rel {fixed:g}: mean loss "
          f"{np.mean([loss_at(r, fixed) for r in rows]):.2f} dB, "
          f"worst {max(loss_at(r, fixed) for r in rows):.2f}")  # fmt: skip
    size = f" / max(1, r)^{beta:g}" if beta else ""
    print(f"rule weight_rel = {c:.3g}·(σ̂/(g·range))^{best_p:g}{size}: mean loss {mean:.2f} dB, "
          f"worst {worst:.2f}")  # fmt: skip
    for p in (1.0, 2.0):
        mean, worst, c = per_power[p]
        print(f"  p = {p:g}: c = {c:.3g}, mean loss {mean:.2f} dB, worst {worst:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="JSON lines, one per group (resumes)")
    ap.add_argument("--fit", type=Path, help="fit the rule to a file written by --out")
    ap.add_argument(
        "--fixed", type=float, default=0.02, help="the fixed weight_rel to compare (the old preset)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prior", default="tv", help="tv (its weight) or a learned prior (its ρ)")
    ap.add_argument("--groups", nargs="+", default=None, help="only these validation groups")
    ap.add_argument("--scans", type=int, default=None, help="the first N scans of each group")
    ap.add_argument(
        "--defaults", nargs="+", default=None, help="score these methods at recon ct's defaults"
    )
    ap.add_argument("--config", default=None, help="with --defaults: presets as recon ct --config")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.fit:
        fit(args.fit, args.fixed, args.prior)
    elif args.out and args.defaults:
        score_defaults(args.out, args.defaults, args.groups, args.scans, args.config)
    elif args.out:
        measure(args.out, args.prior, args.groups, args.scans)
    else:
        ap.error("give --out or --fit")


if __name__ == "__main__":
    main()
