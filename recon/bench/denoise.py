"""Denoising benchmark of learned proximal priors (`recon bench denoise`).

For each model: PSNR/SSIM on held-out natural images (skimage's camera, moon, cat; never trained
on) at noise levels σ ∈ {0.05, 0.1, 0.2, 0.3, 0.5}, and the affine sweep: clean images mapped to
x' = a·x + b (a ∈ {1, 0.75, 0.5, 0.25}; b = 0 "darken" and b = 1 − a "brighten"), noise σ = 0.1
added, PSNR against x' (data range = that of x'). Also the prox cost on one 512×512 slice
(forward + gradient, i.e. one f(x)) and the training seconds per step stored in the checkpoint.

A prior that takes the noise level (``noise_input``) is by default told σ̂ = the blind MAD
estimate of each noisy image (``priors.lpn.estimate_noise_level``), so it gets no more
information than the others (the normalization trick also adapts to each image); with
``--noise-level true`` it is told the true σ instead (an upper bound; recorded in the results).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from data.natural import VAL_IMAGES, center_crops, natural_images
from priors.checkpoint import load_prior
from priors.lpn import estimate_noise_level, takes_noise_level, told_noise_level
from solvers.metrics import psnr

SIGMAS = (0.05, 0.1, 0.2, 0.3, 0.5)
SCALES = (1.0, 0.75, 0.5, 0.25)


def _ssim(x: torch.Tensor, ref: torch.Tensor) -> float:
    r = ref.numpy()
    return float(structural_similarity(x.numpy(), r, data_range=float(r.max() - r.min())))


@torch.no_grad()
def _denoise_scores(
    model, clean: torch.Tensor, sigma: float, seed: int, told: bool = False
) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(seed)
    noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
    level = sigma if told else estimate_noise_level(noisy)
    with told_noise_level(model, level):  # (a no-op for priors without a σ input)
        out = model.prox(noisy)
    ps = [psnr(out[i, 0], clean[i, 0]) for i in range(len(clean))]
    ss = [_ssim(out[i, 0], clean[i, 0]) for i in range(len(clean))]
    return float(np.mean(ps)), float(np.mean(ss))


def prox_seconds(model, size: int = 512, repeats: int = 3) -> float:
    x = torch.rand(1, model.config()["in_channels"], size, size)
    t = []
    with told_noise_level(model, 0.1):
        model.prox(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.prox(x)
            t.append(time.perf_counter() - t0)
    return float(np.median(t))


def noise_and_affine_scores(model, clean: torch.Tensor, told: bool = False) -> dict[str, dict]:
    """{"noise": {σ: (PSNR, SSIM)} for σ in SIGMAS, "affine": {"darken|brighten:a": PSNR}} of
    ``model.prox`` on ``clean`` (N, 1, H, W); x' = a·x + b with b = 0 or 1 − a, σ = 0.1.
    ``told``: a noise-input prior is told the true σ (else the blind estimate σ̂)."""
    noise = {str(s): _denoise_scores(model, clean, s, 100 + i, told) for i, s in enumerate(SIGMAS)}
    affine = {}
    for a in SCALES:
        for mode, b in (("darken", 0.0), ("brighten", 1.0 - a)):
            affine[f"{mode}:{a}"] = _denoise_scores(model, a * clean + b, 0.1, 7, told)[0]
    return {"noise": noise, "affine": affine}


def run_denoise_bench(
    models: dict[str, str], out: Path, size: int = 128, told: bool = False, quiet: bool = True
) -> dict:
    """Evaluate named checkpoints; write table.md, results.json and plots into ``out``.
    ``told``: noise-input priors get the true σ (default: the blind estimate σ̂). Without
    ``quiet`` each model is named on stderr as it starts."""
    import sys

    out.mkdir(parents=True, exist_ok=True)
    clean = center_crops(natural_images(VAL_IMAGES), size)
    results: dict[str, dict] = {}
    for i, (name, path) in enumerate(models.items()):
        if not quiet:
            print(f"bench denoise: model {i + 1}/{len(models)}: {name}", file=sys.stderr)
        model = load_prior(path)
        r: dict = {"kind": model.config()["kind"], "source": str(path),
                   "images": [str(v) for v in VAL_IMAGES], "crop": size}  # fmt: skip
        if takes_noise_level(model):
            r["noise_level"] = "true sigma" if told else "blind MAD estimate"
        r.update(noise_and_affine_scores(model, clean, told))
        r["prox_seconds_512"] = prox_seconds(model)
        meta = getattr(model, "meta", {})
        steps = max(int(meta.get("steps", 0)), 1)
        r["train_seconds"] = meta.get("train_seconds")
        r["train_seconds_per_step"] = (meta.get("train_seconds") or 0) / steps
        r["steps"] = meta.get("steps")
        results[name] = r
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(_table(results))
    _plot(results, out)
    return results


def _table(results: dict) -> str:
    head = "| model | " + " | ".join(f"σ={s}" for s in SIGMAS) + " | prox 512² (s) | train s/step |"
    lines = [head, "|" + "---|" * (len(SIGMAS) + 3)]
    for name, r in results.items():
        cells = [f"{r['noise'][str(s)][0]:.2f} / {r['noise'][str(s)][1]:.3f}" for s in SIGMAS]
        told = {"true sigma": " (told σ)", "blind MAD estimate": " (told σ̂)"}
        label = name + told.get(r.get("noise_level"), "")
        cost = f" | {r['prox_seconds_512']:.2f} | {r['train_seconds_per_step']:.3f} |"
        lines.append(f"| {label} | " + " | ".join(cells) + cost)
    note = "PSNR (dB) / SSIM on held-out images."
    if any(r.get("noise_level") for r in results.values()):
        note += (
            " A model marked (told σ̂) takes the noise level and was told each noisy image's "
            "blind MAD estimate; (told σ): the true σ."
        )
    lines += ["", note, "", "Affine sweep (σ = 0.1, PSNR dB):", ""]
    keys = list(next(iter(results.values()))["affine"])
    lines.append("| model | " + " | ".join(keys) + " |")
    lines.append("|" + "---|" * (len(keys) + 1))
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['affine'][k]:.2f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, r) in enumerate(results.items()):
        color = f"C{i}"  # one colour per model; line style tells darken (-) from brighten (--)
        axes[0].plot(SIGMAS, [r["noise"][str(s)][0] for s in SIGMAS], "o-", color=color, label=name)
        for mode, ls in (("darken", "-"), ("brighten", "--")):
            axes[1].plot(
                SCALES,
                [r["affine"][f"{mode}:{a}"] for a in SCALES],
                ls,
                color=color,
                marker="o",
                label=f"{name} ({mode})",
            )
    axes[0].axvline(0.1, color="gray", lw=0.8, ls=":")
    axes[0].set(
        xlabel="test noise σ (trained at 0.1)", ylabel="PSNR (dB)", title="Noise-level robustness"
    )
    axes[1].set(
        xlabel="contrast a in x' = a·x + b", ylabel="PSNR (dB)", title="Affine sweep (σ = 0.1)"
    )
    axes[1].invert_xaxis()
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "denoise.png", dpi=120)
    plt.close(fig)


def add_bench_parser(bsub) -> None:
    import argparse

    from recon.argtypes import count

    d = bsub.add_parser(
        "denoise",
        help="denoising PSNR vs noise level and affine sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=CHECKPOINT",
        help="a prior to evaluate (shipped name or .safetensors path); repeatable",
    )
    d.add_argument("--out", default="out/bench-denoise")
    d.add_argument(
        "--size", type=count(16, 4096), default=128, help="held-out images cropped to this size"
    )
    d.add_argument(
        "--threads", type=count(1, 1024), default=1, help="torch threads (1: stable timings)"
    )
    d.add_argument("--quiet", action="store_true", help="no progress, no table printed")
    d.add_argument(
        "--noise-level",
        choices=["estimate", "true"],
        default="estimate",
        help="what a prior that takes σ is told: each noisy image's blind MAD estimate "
        "(default, like-for-like with the blind models) or the true σ (an upper bound)",
    )


def run_bench(args) -> int:
    torch.set_num_threads(args.threads)
    models = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = path or name
    run_denoise_bench(
        models, Path(args.out), args.size, told=args.noise_level == "true", quiet=args.quiet
    )
    if not args.quiet:
        print((Path(args.out) / "table.md").read_text())
        print(f"plot: {Path(args.out) / 'denoise.png'}")
    return 0
