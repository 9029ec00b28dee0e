"""Intensity-convention and noise-level robustness (`recon bench robustness`).

Five experiments, each a table (``tables.md``, ``results.json``) and a plot in ``--out``:

a. **split normal** (``split_normal.png``): SN(0; 1, 2) samples, noise σ = 1. True prox
   f(x) = x/2 (x < 0), 0.8·x (x ≥ 0); true R(x) = x²/2 (x < 0), x²/8 (x ≥ 0). Dense LPNs
   ('lpn', 'scale-only') trained by proximal matching; learned R by inverting the prox, aligned
   at R(0) = 0; max errors on [−4, 4]. In 1-D P⊥ = 0, so every shift-equivariant kind (AE-LPN,
   shift-only) is exactly the identity and the normalization trick divides 0 by 0: those rows
   are *measured* on 1×1 images with untrained weights (any weights give the same map).
b. **noise level** (``denoise.png``): PSNR of shipped priors trained at σ = 0.1 on held-out
   images (natural: skimage camera/moon/cat; CT: random-ellipse phantoms from a seed never used
   in training) at σ ∈ {0.05, …, 0.5}; uses ``recon.bench.denoise``.
c. **affine sweep** (same plot): x' = a·x + b, a ∈ {1, 0.75, 0.5, 0.25}, b = 0 or 1 − a, σ = 0.1.
d. **CT end to end** (``ct.png``): the bundled real slice, 60 parallel views, 1 % Gaussian noise,
   PnP-ADMM with the shipped preset. The data are made once in normalized attenuation
   u = (HU + 1000)/2500 (the priors' training convention) and handed to the solver in another
   convention x' = a·u + b: y' = a·y + b·A1, start a·FBP(y) + b (a fixed iteration count, no
   tolerance stop, so every run does the same number of steps); the result is mapped back and
   scored in u (``crr-ct``, recon ct's default, the AE-LPN and the LPN). Then the sinogram
   noise is 2× and 4× the tuned 1 % (the same priors at their presets, TV, FBP).
e. **MRI k-space scaling** (``mri.png``): bundled brain slice, 8 simulated coils, 4× fastMRI
   random mask; k-space scaled by s ∈ [1e-6, 1e3], PnP-ADMM, magnitude PSNR after dividing by s.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.bench.denoise import SCALES, SIGMAS, noise_and_affine_scores
from recon.outputs import atomic_write, pyplot, save_figure, save_json
from solvers.metrics import psnr

__all__ = [
    "Settings",
    "ct_conventions",
    "ChannelwisePrior",
    "split_normal_experiment",
    "denoise_experiment",
    "ct_experiment",
    "mri_experiment",
    "run_robustness_bench",
    "add_bench_parser",
    "run_bench",
]

PARTS = ("split", "denoise", "ct", "mri")
HU_OFFSET, HU_SCALE = 1000.0, 2500.0  # u = (HU + 1000)/2500, as recon.ct
MU_WATER_PER_MM = 0.02  # μ = μ_water·(1 + HU/1000) = 0.05·u per mm
MRI_SCALES = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e3)


@dataclass
class Settings:
    """Sizes of the experiments (``quick()`` is the CI-sized version)."""

    split_steps: int = 2000
    split_batch: int = 4096
    denoise_size: int = 128
    phantoms: int = 8
    ct_iters: int = 40
    ct_downsample: int = 1
    views: int = 60
    noise: float = 0.01
    noise_factors: tuple[float, ...] = (1.0, 2.0, 4.0)
    mri_iters: int = 20
    mri_downsample: int = 1
    mri_center_fraction: float | None = None  # None: fastMRI default 0.08 at 4×
    mri_scales: tuple[float, ...] = MRI_SCALES
    seed: int = 0
    # CT in float64 end to end: ASTRA's projector as an explicit matrix (``operators.dense``),
    # so a run in another intensity convention differs from the u run by float64 round-off
    # alone and the AE-LPN's equality is exact on any CPU (small images only)
    ct_float64: bool = False

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            split_steps=200,
            split_batch=1024,
            denoise_size=64,
            phantoms=3,
            ct_iters=4,
            ct_downsample=2,
            views=30,
            mri_iters=3,
            mri_downsample=2,
            mri_center_fraction=0.12,  # ESPIRiT needs 8 centre columns of 88
            mri_scales=(1e-6, 1.0, 1e3),
        )


def ct_conventions() -> dict[str, tuple[float, float]]:
    """Intensity conventions as x' = a·u + b of normalized attenuation u = (HU + 1000)/2500.

    'u' (the priors' training units), 'HU' (2500·u − 1000), 'mu' (μ in mm⁻¹ = 0.05·u) and each
    CT window's unclipped normalization v = (HU − (L − W/2))/W (data.windows).
    """
    from data.windows import WINDOWS

    conv = {"u": (1.0, 0.0), "HU": (HU_SCALE, -HU_OFFSET)}
    conv["mu"] = (MU_WATER_PER_MM * HU_SCALE / 1000.0, 0.0)
    for name, (level, width) in WINDOWS.items():
        lo = level - width / 2
        conv[name] = (HU_SCALE / width, (-HU_OFFSET - lo) / width)
    return conv


class ChannelwisePrior:
    """A 1-channel prior applied to each channel of (B, C, H, W) separately.

    prox(v)_c = p(v_c): the prox of Σ_c R(x_c), so still exactly a prox. Used to run a
    1-channel LPN on the (real, imaginary) channels of MRI images when no 2-channel LPN ships.
    """

    def __init__(self, prior: Any) -> None:
        self.prior = prior

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        b, c, h, w = v.shape
        return self.prior.prox(v.reshape(b * c, 1, h, w)).reshape(b, c, h, w)


# --------------------------------------------------------------------------- a. split normal


def _split_truth(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(true prox, true R) of the split normal SN(0; 1, 2) at noise σ = 1."""
    prox = torch.where(t < 0, t / 2, 0.8 * t)
    reg = torch.where(t < 0, t.pow(2) / 2, t.pow(2) / 8)
    return prox, reg


def split_normal_experiment(
    steps: int, batch: int, seed: int = 0, progress: bool = False
) -> dict[str, Any]:
    """Train 1-D dense LPNs on SN(0; 1, 2) + N(0, 1) and compare with the true prox and R.

    Returns {"grid": [...], "truth": {...}, "models": {kind: {"prox", "reg", "max_prox_err",
    "max_reg_err", "seconds"}}} with curves on 401 points of [−4, 4] (R aligned at 0).
    """
    from priors.lpn import ConvLPN, DenseLPN, NormalizationTrick
    from priors.training import TrainConfig, train_prior

    t = torch.linspace(-4, 4, 401, dtype=torch.float32)[:, None]
    i0 = int(torch.argmin(t.abs()))
    true_prox, true_reg = _split_truth(t)
    inner = t[:, 0].abs() <= 2.0  # where the true prox's range covers [−4, 4]'s images

    def sampler(b: int, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(b, 1, generator=gen)
        return torch.where(z < 0, z, 2.0 * z)

    models: dict[str, Any] = {}
    for kind in ("lpn", "scale-only"):
        torch.manual_seed(seed)
        model = DenseLPN(kind, dim=1, width=32, depth=3)
        cfg = TrainConfig(
            sigma=1.0,
            steps=steps,
            batch=batch,
            lr_l1=1e-2,
            lr_pm=1e-3,
            l1_fraction=0.3,
            gamma_unit=0.1,
            grad_clip=0.0,
            seed=seed,
            ckpt_every=10**9,
            val_every=10**9,
        )
        t0 = time.perf_counter()
        train_prior(model, sampler, cfg, progress=progress)
        seconds = time.perf_counter() - t0
        f = model.prox(t)
        r = model.regularizer(t)
        r = r - r[i0]
        models[kind] = {
            "prox": f[:, 0].tolist(),
            "reg": r.tolist(),
            "max_prox_err": float((f - true_prox).abs().max()),
            "max_reg_err": float((r - true_reg[:, 0]).abs().max()),
            "max_reg_err_inner": float((r - true_reg[:, 0])[inner].abs().max()),
            "seconds": seconds,
            "trained": True,
        }
    # 1-D degenerate kinds, measured on 1×1 images (P⊥x = 0): any weights give the same map.
    torch.manual_seed(seed)
    img = t[:, :, None, None]
    degenerate = {
        "aelpn": ConvLPN("aelpn", width=4, levels=1, depth=1),
        "shift-only": ConvLPN("shift-only", width=4, levels=1, depth=1),
        "normalization-trick": NormalizationTrick(width=4, levels=1, depth=1),
    }
    for kind, model in degenerate.items():
        f = model.prox(img).reshape(-1, 1).detach()
        models[kind] = {
            "prox": f[:, 0].tolist(),
            "reg": None,
            "max_prox_err": float((f - true_prox).abs().max()),
            "max_reg_err": float((true_reg - true_reg[i0]).abs().max()),  # R of the identity: 0
            "max_reg_err_inner": float((true_reg - true_reg[i0])[inner].abs().max()),
            "identity_err": float((f - t).abs().max()),
            "seconds": 0.0,
            "trained": False,
        }
    return {
        "grid": t[:, 0].tolist(),
        "truth": {"prox": true_prox[:, 0].tolist(), "reg": true_reg[:, 0].tolist()},
        "models": models,
        "steps": steps,
        "batch": batch,
    }


# --------------------------------------------------------------------- b, c. denoising sweeps


def held_out_images(kind: str, size: int, n_phantoms: int) -> torch.Tensor:
    """Held-out clean images (N, 1, size, size) in [0, 1].

    'natural': skimage camera, moon, cat (never trained on); 'ct': random-ellipse phantoms drawn
    from a generator seed (20261125) that no training run uses."""
    if kind == "natural":
        from data.natural import VAL_IMAGES, center_crops, natural_images

        return center_crops(natural_images(VAL_IMAGES), size)
    from data.training_sets import ellipse_sampler

    return ellipse_sampler(size)(n_phantoms, torch.Generator().manual_seed(20261125))


def denoise_experiment(
    models: dict[str, tuple[str, str]], size: int, n_phantoms: int, progress: bool = False
) -> dict[str, Any]:
    """PSNR/SSIM vs noise σ and the affine sweep for named priors.

    Args:
        models: label -> (shipped name or checkpoint, 'natural' | 'ct' test set).
    """
    from priors.checkpoint import load_prior

    out: dict[str, Any] = {}
    for label, (name, data) in _bar(models.items(), progress, "denoise"):
        model = load_prior(name)
        clean = held_out_images(data, size, n_phantoms)
        r: dict[str, Any] = {"prior": name, "test_set": data, "images": len(clean)}
        r.update(noise_and_affine_scores(model, clean))
        out[label] = r
    return out


# ------------------------------------------------------------------------------ d. CT


# recon ct's default prior (convex, certified), the deep AE-LPN and the LPN that is not equivariant
CT_PRIORS = ("crr-ct", "aelpn-ct", "lpn-ct")


def ct_experiment(s: Settings, progress: bool = False) -> dict[str, Any]:
    """CT PnP-ADMM across intensity conventions and noise levels (see the module docstring)."""
    from data.bundled import load_bundled
    from data.ct_noise import add_gaussian_noise
    from operators.ct import CTOperator
    from recon.pipeline import load_presets, reconstruct, solver_params

    sl = load_bundled("ct-small")
    hu = torch.from_numpy(np.asarray(sl.hu, np.float32))
    k = s.ct_downsample
    hu = hu[::k, ::k] if k > 1 else hu  # quick mode: a 64×64 version of the slice
    x_u = ((hu + HU_OFFSET) / HU_SCALE)[None, None].contiguous()
    h, w = x_u.shape[-2:]
    op = CTOperator(image_size=(h, w), views=s.views, pixel_size=float(sl.pixel_spacing[0]) * k)
    fbp = op.fbp
    if s.ct_float64:
        from operators.dense import MatrixOperator, matrix_of

        astra_op, x_u = op, x_u.double()
        op = MatrixOperator(matrix_of(astra_op), h, w)

        def fbp(y: torch.Tensor) -> torch.Tensor:  # ASTRA's FBP (float32): only the start image
            return astra_op.fbp(y.reshape(-1, *astra_op.range_shape).float()).double()

    clean = op.forward(x_u)
    a1 = op.forward(torch.ones_like(x_u))
    drange = float(x_u.max() - x_u.min())
    presets = load_presets("ct")
    fixed = {
        p: solver_params(presets, "pnp-admm", {"iters": s.ct_iters, "tol": 0.0}, p)
        for p in CT_PRIORS
    }

    def run(y, x0, solver, prior, params, a=1.0, b=0.0):
        rec = reconstruct(op, y, x0, solver, prior, params)
        back = (rec.x - b) / a
        return back, rec

    res: dict[str, Any] = {
        "dtype": str(x_u.dtype).removeprefix("torch."),
        "views": s.views,
        "image": [h, w],
        "noise": s.noise,
        "iters": s.ct_iters,
        "rho_rel": {p: f["rho_rel"] for p, f in fixed.items()},
    }
    y = add_gaussian_noise(clean, s.noise, seed=s.seed)
    x0 = fbp(y)
    res["fbp_psnr"] = psnr(x0, x_u, drange)
    conv = ct_conventions()
    tasks = [(p, c) for p in CT_PRIORS for c in conv]
    tasks_noise = [(m, f) for f in s.noise_factors for m in (*CT_PRIORS, "tv")]
    bar = _bar(None, progress, "CT", total=len(tasks) + len(tasks_noise) + 2)
    rows: dict[str, dict[str, Any]] = {}
    refs: dict[str, torch.Tensor] = {}
    for prior, c in tasks:
        a, b = conv[c]
        t0 = time.perf_counter()
        back, rec = run(a * y + b * a1, a * x0 + b, "pnp-admm", prior, fixed[prior], a, b)
        if c == "u":
            refs[prior] = back
        diff = float((back - refs[prior]).abs().max()) / drange
        rows.setdefault(prior, {})[c] = {
            "a": a,
            "b": b,
            "psnr": psnr(back, x_u, drange),
            "max_diff_vs_u": diff,  # max |x_c mapped back − x_u| / data range
            "start_psnr": res["fbp_psnr"],
            "stop_reason": rec.stop_reason,
            "iterations": rec.iterations,
            "seconds": time.perf_counter() - t0,
        }
        _tick(bar)
    for r in rows.values():
        for c in r:
            r[c]["drop_db"] = r["u"]["psnr"] - r[c]["psnr"]
    res["conventions"] = rows
    # Round-off control: the same u data with every sinogram entry perturbed by one float32
    # rounding step (relative 2⁻²⁴). ASTRA works in float32, so a run in another convention
    # differs from the u run by round-off of this size, amplified over the iterations.
    gen = torch.Generator().manual_seed(s.seed + 1)
    jitter = 2.0**-24 * torch.randn(y.shape, generator=gen)
    control: dict[str, Any] = {}
    for prior in rows:
        back, _ = run(y * (1 + jitter), x0, "pnp-admm", prior, fixed[prior])
        control[prior] = {
            "psnr": psnr(back, x_u, drange),
            "max_diff_vs_u": float((back - refs[prior]).abs().max()) / drange,
        }
        _tick(bar)
    res["roundoff_control"] = control
    noise_rows: dict[str, dict[str, Any]] = {}
    for method, f in tasks_noise:
        yf = add_gaussian_noise(clean, s.noise * f, seed=s.seed)
        x0f = fbp(yf)
        solver = "tv" if method == "tv" else "pnp-admm"
        params = solver_params(presets, solver, {}, None if method == "tv" else method)
        t0 = time.perf_counter()
        back, rec = run(yf, x0f, solver, None if method == "tv" else method, params)
        noise_rows.setdefault(method, {})[str(f)] = {
            "psnr": psnr(back, x_u, drange),
            "fbp_psnr": psnr(x0f, x_u, drange),
            "start_psnr": psnr(x0f, x_u, drange),
            "iterations": rec.iterations,
            "stop_reason": rec.stop_reason,
            "seconds": time.perf_counter() - t0,
        }
        _tick(bar)
    for r in noise_rows.values():
        for f in r:
            r[f]["drop_db"] = r[str(s.noise_factors[0])]["psnr"] - r[f]["psnr"]
    res["noise_levels"] = noise_rows
    res["noise_preset"] = {
        m: solver_params(presets, "tv" if m == "tv" else "pnp-admm", {}, None if m == "tv" else m)
        for m in noise_rows
    }
    _close(bar)
    return res


# ------------------------------------------------------------------------------ e. MRI


def mri_experiment(s: Settings, progress: bool = False) -> dict[str, Any]:
    """PnP-ADMM on k-space scaled by each s in ``s.mri_scales`` (see the module docstring)."""
    from data.bundled import load_bundled
    from data.fastmri import evaluate
    from priors.base import ComplexAsChannels
    from priors.checkpoint import load_prior, shipped_priors
    from recon.mri import sample_kspace
    from recon.pipeline import load_presets, solver_params
    from solvers import pnp_admm

    img = np.abs(np.asarray(load_bundled("brain-t1"), np.float64))
    k = s.mri_downsample
    img = img[::k, ::k] if k > 1 else img
    from data.fastmri import simulate_multicoil

    kspace, ref, _ = simulate_multicoil(img, 8, s.seed)
    op, y, mask_desc, _ = sample_kspace(kspace, "random", 4.0, s.mri_center_fraction, s.seed)
    params = solver_params(load_presets("mri"), "pnp-admm", {"iters": s.mri_iters, "tol": 0.0})
    rho = float(params["rho_rel"]) * float(params["lam"]) * op.norm_sq()
    shipped = shipped_priors()
    priors: dict[str, Any] = {"aelpn-mri": ComplexAsChannels(load_prior("aelpn-mri"))}
    if "lpn-mri" in shipped:
        lpn_label, lpn_note = "lpn-mri", "shipped lpn-mri"
        priors[lpn_label] = ComplexAsChannels(load_prior("lpn-mri"))
    else:
        lpn_label = "lpn-ct (per channel)"
        lpn_note = (
            "no lpn-mri ships: the 1-channel lpn-ct applied to the real and imaginary channels "
            "separately (still exactly a prox)"
        )
        priors[lpn_label] = ComplexAsChannels(ChannelwisePrior(load_prior("lpn-ct")))
    res: dict[str, Any] = {
        "image": list(img.shape),
        "coils": 8,
        "mask": mask_desc,
        "iters": s.mri_iters,
        "rho_rel": params["rho_rel"],
        "lpn_note": lpn_note,
    }
    res["zero_filled_psnr"] = evaluate(ref, np.abs(op.adjoint(y)[0, 0].numpy()))["psnr"]
    rows: dict[str, dict[str, Any]] = {}
    base_scale = 1.0 if 1.0 in s.mri_scales else s.mri_scales[0]
    bar = _bar(None, progress, "MRI", total=len(priors) * len(s.mri_scales))
    for label, prior in priors.items():
        backs: dict[float, torch.Tensor] = {}
        for sc in s.mri_scales:
            ys = y * sc
            t0 = time.perf_counter()
            out = pnp_admm(
                op,
                ys,
                prior,
                lam=float(params["lam"]),
                rho=rho,
                iters=s.mri_iters,
                tol=0.0,
                x0=op.adjoint(ys),
                cg_iters=int(params["cg_iters"]),
                cg_tol=float(params["cg_tol"]),
            )
            backs[sc] = out.x / sc  # mapped back to the native scale
            rows.setdefault(label, {})[f"{sc:g}"] = {
                "psnr": evaluate(ref, np.abs(backs[sc][0, 0].numpy()))["psnr"],
                "start_psnr": res["zero_filled_psnr"],
                "stop_reason": out.stop_reason,
                "seconds": time.perf_counter() - t0,
            }
            _tick(bar)
        base = rows[label][f"{base_scale:g}"]
        for sc in s.mri_scales:
            r = rows[label][f"{sc:g}"]
            r["drop_db"] = base["psnr"] - r["psnr"]
            # max |x_s / s − x_1| relative to the reference maximum
            r["max_diff_vs_1"] = float((backs[sc] - backs[base_scale]).abs().max() / ref.max())
    _close(bar)
    res["scalings"] = rows
    return res


# ------------------------------------------------------------------------ progress helpers


def _bar(it, progress: bool, desc: str, total: int | None = None):
    if not progress:
        return it if it is not None else None
    from solvers.progress import progress_bar

    return progress_bar(it, desc=desc, total=total)


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)


def _close(bar) -> None:
    if bar is not None:
        bar.close()


# ------------------------------------------------------------------------------- tables


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, fmt)


def _mark(row: dict[str, Any]) -> str:
    """'†' when a run stopped on divergence, '‡' when it ended below its starting image."""
    if str(row.get("stop_reason", "")).startswith("diverged"):
        return "†"
    start = row.get("start_psnr")
    if start is not None and math.isfinite(row.get("psnr", math.nan)) and row["psnr"] < start:
        return "‡"
    return ""


def tables(results: dict[str, Any]) -> str:
    """All result tables as Markdown."""
    out: list[str] = []
    if "split" in results:
        r = results["split"]
        out += [
            "## a. Split normal SN(0; 1, 2), noise σ = 1 (max |error| on [−4, 4])",
            "",
            f"Dense 1-D models, {r['steps']} steps, batch {r['batch']}.",
            "",
            "| model | trained | max prox error | max R error (aligned at 0) | "
            "max R error on [−2, 2] | train s |",
            "|---|---|---|---|---|---|",
        ]
        for kind, m in r["models"].items():
            note = "" if m["trained"] else f" (1-D: identity, |f(x) − x| ≤ {m['identity_err']:.1e})"
            out.append(
                f"| {kind}{note} | {'yes' if m['trained'] else 'no'} | "
                f"{m['max_prox_err']:.3f} | {m['max_reg_err']:.3g} | "
                f"{m['max_reg_err_inner']:.3f} | {m['seconds']:.0f} |"
            )
        out.append("")
    if "denoise" in results:
        r = results["denoise"]
        out += [
            "## b. Denoising PSNR (dB) vs test noise σ, priors trained at σ = 0.1",
            "",
            "| prior | test set | " + " | ".join(f"σ={s}" for s in SIGMAS) + " |",
            "|---|---|" + "---|" * len(SIGMAS),
        ]
        for label, m in r.items():
            cells = [f"{m['noise'][str(s)][0]:.2f}" for s in SIGMAS]
            out.append(f"| {label} | {m['test_set']} ({m['images']}) | " + " | ".join(cells) + " |")
        keys = list(next(iter(r.values()))["affine"])
        out += [
            "",
            "## c. Affine sweep x' = a·x + b at σ = 0.1 "
            "(PSNR dB; darken b = 0, brighten b = 1 − a)",
            "",
            "| prior | " + " | ".join(keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        for label, m in r.items():
            out.append(f"| {label} | " + " | ".join(f"{m['affine'][k]:.2f}" for k in keys) + " |")
        out.append("")
    if "ct" in results:
        r = results["ct"]
        convs = list(next(iter(r["conventions"].values())))
        rho = r["rho_rel"]  # one number (older results) or each prior's preset value
        if isinstance(rho, dict):
            vals = set(rho.values())
            rho = (
                f"{vals.pop():g}"
                if len(vals) == 1
                else ", ".join(f"{v:g} ({p})" for p, v in rho.items())
            )
        out += [
            "## d1. CT: data in another intensity convention (PnP-ADMM, PSNR dB in u)",
            "",
            f"Bundled slice {r['image'][0]}×{r['image'][1]}, {r['views']} views, "
            f"{100 * r['noise']:g} % noise, rho_rel {rho} (each prior's preset), {r['iters']} "
            f"iterations (no tolerance stop). FBP {r['fbp_psnr']:.2f} dB.",
            "",
            "| prior | " + " | ".join(convs) + " | max drop (dB) | max |Δx|/range | "
            "control: u, y·(1 + 2⁻²⁴n) |",
            "|---|" + "---|" * (len(convs) + 3),
        ]
        ctrl = r.get("roundoff_control", {})
        for prior, row in r["conventions"].items():
            cells = [_f(row[c]["psnr"]) + _mark(row[c]) for c in convs]
            drop = max(row[c]["drop_db"] for c in convs)
            diff = max(row[c]["max_diff_vs_u"] for c in convs)
            cdiff = ctrl.get(prior, {}).get("max_diff_vs_u", float("nan"))
            out.append(
                f"| {prior} | " + " | ".join(cells) + f" | {_f(drop)} | {diff:.1e} | "
                f"{_f(cdiff, '.1e')} |"
            )
        out += [
            "",
            "max |Δx|/range: largest pixel difference from the u run after mapping back, over the "
            "data range; the control column is the same number for a u run whose sinogram was "
            "perturbed by one float32 rounding step (what a change of units does to ASTRA's "
            "float32 arithmetic).",
        ]
        facts = list(next(iter(r["noise_levels"].values())))
        out += [
            "",
            "## d2. CT: sinogram noise 1×, 2×, 4× the tuned 1 % (PSNR dB; drop vs 1× in brackets)",
            "",
            "Each method at its preset's iterations and tolerance stop (d1 runs a fixed count), so "
            "the 1× column need not equal d1's u column.",
            "",
            "| method | " + " | ".join(f"{float(f):g}×" for f in facts) + " |",
            "|---|" + "---|" * len(facts),
        ]
        for m, row in r["noise_levels"].items():
            cells = [
                f"{_f(row[f]['psnr'])}{_mark(row[f])} ({_f(0.0 - row[f]['drop_db'] + 0.0, '+.2f')})"
                for f in facts
            ]
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        first = next(iter(r["noise_levels"].values()))
        out.append("| FBP | " + " | ".join(_f(first[f]["fbp_psnr"]) for f in facts) + " |")
        out.append("")
    if "mri" in results:
        r = results["mri"]
        scales = list(next(iter(r["scalings"].values())))
        out += [
            "## e. MRI: k-space scaled by s (PnP-ADMM, magnitude PSNR dB after dividing by s)",
            "",
            f"Bundled brain slice {r['image'][0]}×{r['image'][1]}, {r['coils']} coils, "
            f"4× random mask, rho_rel {r['rho_rel']}, {r['iters']} iterations (no tolerance "
            f"stop); zero-filled {r['zero_filled_psnr']:.2f} dB. LPN: {r['lpn_note']}.",
            "",
            "| prior | " + " | ".join(f"s={s}" for s in scales) + " | PSNR spread (dB) | "
            "max |Δx|/max |",
            "|---|" + "---|" * (len(scales) + 2),
        ]
        for label, row in r["scalings"].items():
            ps = [row[s]["psnr"] for s in scales]
            finite = [p for p in ps if math.isfinite(p)]
            spread = max(finite) - min(finite) if finite else float("nan")
            diff = max(row[s]["max_diff_vs_1"] for s in scales)
            marks = [_mark(row[s]) for s in scales]
            out.append(
                f"| {label} | "
                + " | ".join(_f(p) + m for p, m in zip(ps, marks, strict=True))
                + " | "
                f"{_f(spread)} | {diff:.1e} |"
            )
        out.append("")
    out += [
        "† the solver stopped on divergence (non-finite or runaway iterates) and kept its last "
        "good iterate; ‡ it ran all its iterations but its PSNR fell below the starting image's "
        "(FBP / zero-filled).",
        "",
    ]
    return "\n".join(out)


# -------------------------------------------------------------------------------- plots


def _plot_split(r: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    t = np.asarray(r["grid"])
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(t, r["truth"]["prox"], "k-", lw=2.5, label="true prox")
    ax[1].plot(t, r["truth"]["reg"], "k-", lw=2.5, label="true R")
    for i, (kind, m) in enumerate(r["models"].items()):
        if not m["trained"]:
            continue
        ax[0].plot(t, m["prox"], color=f"C{i}", label=f"{kind} ({m['max_prox_err']:.2f})")
        ax[1].plot(t, m["reg"], color=f"C{i}", label=f"{kind} ({m['max_reg_err']:.2f})")
    ax[0].plot(t, t, ":", color="gray", label="AE-LPN / shift-only in 1-D (identity)")
    ax[0].set(xlabel="noisy x", ylabel="prox(x)", title="Split normal: prox (max error)")
    ax[1].set(xlabel="x", ylabel="R(x) − R(0)", title="Split normal: regularizer (max error)")
    top = 1.5 * max(r["truth"]["reg"])
    ax[1].set_ylim(-0.1 * top, top)  # a learned R far outside its training range leaves the axes
    for a in ax:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(path, fig)


def _plot_denoise(r: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, m) in enumerate(r.items()):
        c = f"C{i}"
        ax[0].plot(SIGMAS, [m["noise"][str(s)][0] for s in SIGMAS], "o-", color=c, label=label)
        for mode, ls in (("darken", "-"), ("brighten", "--")):
            ys = [m["affine"][f"{mode}:{a}"] for a in SCALES]
            ax[1].plot(SCALES, ys, ls, marker="o", color=c, label=f"{label} ({mode})")
    ax[0].axvline(0.1, color="gray", lw=0.8, ls=":")
    ax[0].set(xlabel="test noise σ (trained at 0.1)", ylabel="PSNR (dB)", title="Noise level")
    ax[1].set(xlabel="contrast a in x' = a·x + b", ylabel="PSNR (dB)", title="Affine sweep, σ=0.1")
    ax[1].invert_xaxis()
    ax[0].legend(fontsize=8)
    ax[1].legend(fontsize=6, ncol=2, handlelength=4)  # long enough to show the dashes
    fig.tight_layout()
    save_figure(path, fig)


def _plot_ct(r: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    convs = list(next(iter(r["conventions"].values())))
    xs = np.arange(len(convs))
    width = 0.8 / len(r["conventions"])
    for i, (prior, row) in enumerate(r["conventions"].items()):
        ps = [row[c]["psnr"] if math.isfinite(row[c]["psnr"]) else 0.0 for c in convs]
        ax[0].bar(xs + (i - (len(r["conventions"]) - 1) / 2) * width, ps, width, label=prior)
    ax[0].set_xticks(xs, convs, rotation=30)
    ax[0].set(ylabel="PSNR (dB, in u)", title="CT: data in another intensity convention")
    top = max(row[c]["psnr"] for row in r["conventions"].values() for c in convs)
    ax[0].set_ylim(top=1.25 * top if math.isfinite(top) and top > 0 else None)  # legend room
    ax[0].legend(fontsize=8, loc="upper center", ncol=len(r["conventions"]))
    for i, (m, row) in enumerate(r["noise_levels"].items()):
        fs = [float(f) for f in row]
        ax[1].plot(fs, [row[f]["psnr"] for f in row], "o-", color=f"C{i}", label=m)
    first = next(iter(r["noise_levels"].values()))
    ax[1].plot(
        [float(f) for f in first], [v["fbp_psnr"] for v in first.values()], "k:", label="FBP"
    )
    ax[1].set(
        xlabel="sinogram noise (× tuned 1 %)", ylabel="PSNR (dB)", title="CT: noise robustness"
    )
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)


def _plot_mri(r: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, row) in enumerate(r["scalings"].items()):
        ss = [float(s) for s in row]
        ax.semilogx(ss, [row[s]["psnr"] for s in row], "o-", color=f"C{i}", label=label)
        div = [(float(k), v["psnr"]) for k, v in row.items() if _mark(v) == "†"]
        if div:
            ax.plot(*zip(*div, strict=True), "kx", ms=10, label=f"{label}: diverged, start kept")
    ax.axhline(r["zero_filled_psnr"], color="gray", ls=":", label="zero-filled")
    ax.set(xlabel="k-space scale s", ylabel="PSNR (dB)", title="MRI: k-space scaling")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)


# --------------------------------------------------------------------------------- runner


DENOISE_MODELS = {
    "aelpn-natural": ("aelpn-natural", "natural"),
    "lpn-natural": ("lpn-natural", "natural"),
    "aelpn-ct": ("aelpn-ct", "ct"),
    "lpn-ct": ("lpn-ct", "ct"),
}


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    """results.json, tables.md and the plot of each experiment present in ``results``."""
    plots = {
        "split": (_plot_split, "split_normal.png"),
        "denoise": (_plot_denoise, "denoise.png"),
        "ct": (_plot_ct, "ct.png"),
        "mri": (_plot_mri, "mri.png"),
    }
    for part, (plot, name) in plots.items():
        if part in results:
            plot(results[part], out / name)
    save_json(out / "results.json", results)
    text = "# Robustness benchmark\n\n" + tables(results)
    atomic_write(out / "tables.md", lambda tmp: tmp.write_text(text))


def replot(out: Path) -> dict[str, Any]:
    """Redraw tables and plots from ``out/results.json`` without rerunning the experiments."""
    path = out / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"--replot: {path} does not exist (run the benchmark first)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--replot: {path} is not valid JSON ({exc})") from None
    results = _nan_for_none(results)
    write_outputs(out, results)
    return results


def _nan_for_none(obj: Any) -> Any:
    """JSON stores non-finite numbers as null (recon.outputs.save_json); read them back as NaN."""
    if isinstance(obj, dict):
        return {k: _nan_for_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_for_none(v) for v in obj]
    return float("nan") if obj is None else obj


def run_robustness_bench(
    out: Path, settings: Settings, parts: tuple[str, ...] = PARTS, progress: bool = True
) -> dict[str, Any]:
    """Run the chosen experiments; write results.json, tables.md and the plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    previous = out / "results.json"
    if previous.exists():  # experiments not rerun now keep their earlier results
        kept = json.loads(previous.read_text())
        results.update({k: v for k, v in kept.items() if k in PARTS and k not in parts})
    results["settings"] = {k: v for k, v in vars(settings).items()}
    t0 = time.perf_counter()
    if "split" in parts:
        results["split"] = split_normal_experiment(
            settings.split_steps, settings.split_batch, settings.seed, progress
        )
    if "denoise" in parts:
        results["denoise"] = denoise_experiment(
            DENOISE_MODELS, settings.denoise_size, settings.phantoms, progress
        )
    if "ct" in parts:
        results["ct"] = ct_experiment(settings, progress)
    if "mri" in parts:
        results["mri"] = mri_experiment(settings, progress)
    results["seconds"] = time.perf_counter() - t0
    results["threads"] = torch.get_num_threads()
    write_outputs(out, results)
    return results


def add_bench_parser(bsub) -> None:
    p = bsub.add_parser(
        "robustness",
        help="intensity-convention and noise-level robustness (split normal, denoise, CT, MRI)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="out/bench-robustness")
    p.add_argument("--quick", action="store_true", help="small CI-sized version (~2 min)")
    p.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all); the other "
        "experiments keep their results from an earlier run into the same --out",
    )
    p.add_argument("--ct-iters", type=int, default=None, help="ADMM iterations (CT conventions)")
    p.add_argument("--mri-iters", type=int, default=None, help="ADMM iterations (MRI)")
    p.add_argument("--split-steps", type=int, default=None, help="split-normal training steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--replot",
        action="store_true",
        help="only redraw tables and plots from an existing OUT/results.json",
    )


def _settings_from_args(args) -> tuple[Settings, tuple[str, ...]]:
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"--parts {args.parts!r}: choose from {','.join(PARTS)}")
    s = Settings.quick() if args.quick else Settings()
    for name, attr in (
        ("ct_iters", "ct_iters"),
        ("mri_iters", "mri_iters"),
        ("split_steps", "split_steps"),
    ):
        v = getattr(args, name)
        if v is not None:
            if v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {v}")
            setattr(s, attr, v)
    if args.threads < 1:
        raise ValueError(f"--threads must be ≥ 1, got {args.threads}")
    s.seed = args.seed
    return s, parts


def run_bench(args) -> int:
    if args.replot:
        replot(Path(args.out))
        if not args.quiet:
            print((Path(args.out) / "tables.md").read_text())
        return 0
    settings, parts = _settings_from_args(args)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    res = run_robustness_bench(out, settings, parts, progress=not args.quiet)
    if not args.quiet:
        print((out / "tables.md").read_text())
        print(f"{res['seconds']:.0f} s; tables and plots in {out}/")
    return 0
