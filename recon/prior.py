"""`recon prior check NAME|PATH`: is a learned prox firmly nonexpansive? A certificate table.

For each input image (a real CT slice, a Shepp–Logan phantom, an MRI slice, a natural image),
each told noise level σ (relative to the image's range) and each kind of input (clean + σ·n as
PnP sees early on, the clean image as it sees near convergence), the largest eigenvalue of the
prox's Jacobian ∇²ψ is estimated by Lanczos run to convergence (``priors.jacobian``). The worst
input is then evaluated again in other intensity conventions (x -> a·x + b, σ -> a·σ): for the
AE-LPN the Jacobian is the same there, so one table covers every convention.

How sure it is: each row's θ is a Rayleigh quotient, so θ ≤ λ_max of that input's Jacobian, and
an eigenvalue lies within ±r of it (r the Ritz residual, ≤ tol·θ when converged). A prior
*passes* when every row converged and max θ ≤ 1 + margin (default 1 %): the estimate is then
within the stated tolerance of a firmly nonexpansive prox on these inputs, an empirical
certificate over the stated inputs, not a proof over all inputs. A prior firmly nonexpansive by
construction (the convex-ridge priors state λ_max ≤ 1 for every input) passes on that proof,
converged or not; its measured values are lower bounds that must stay below the bound (one above
it is reported as an error).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["certify", "certificate_inputs", "add_parser", "run", "SIGMAS"]

SIGMAS = (0.005, 0.01, 0.03, 0.1, 0.3)
EXIT_FAILS = 1  # `recon prior check`'s exit status when the prior fails (0: passes; 2: bad input)
IMAGES = ("ct-slice", "phantom", "mri-slice", "natural")
# (a, b) of x -> a·x + b; b is added to every channel
CONVENTIONS = {"as given": (1.0, 0.0), "HU-like": (2500.0, -1000.0), "tiny": (1e-6, 3e-7)}


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    """A centre crop to a square, resized to size×size (anti-aliased), in float64."""
    from skimage.transform import resize

    h, w = img.shape
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    if s != size:
        img = resize(img, (size, size), anti_aliasing=s > size, preserve_range=True)
    return np.asarray(img, np.float64)


def certificate_inputs(size: int = 128) -> dict[str, np.ndarray]:
    """The four clean test images (size×size, about unit range), none of them trained on."""
    from data.bundled import load_bundled
    from data.natural import natural_images
    from data.phantoms import shepp_logan
    from recon.ct import to_internal

    ct = load_bundled("ct-small")
    return {
        "ct-slice": _fit(to_internal(np.asarray(ct.hu, np.float64), "HU"), size),
        "phantom": _fit(shepp_logan(size), size),
        "mri-slice": _fit(load_bundled("brain-t1"), size),
        "natural": _fit(natural_images(("camera",))[0], size),
    }


def _as_channels(img: np.ndarray, channels: int) -> torch.Tensor:
    """(1, C, H, W): the image itself (C = 1) or with a smooth phase as (real, imaginary)."""
    x = torch.from_numpy(img)[None, None]
    if channels == 1:
        return x
    h, w = img.shape
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, h, dtype=torch.float64),
        torch.linspace(-1, 1, w, dtype=torch.float64),
        indexing="ij",
    )
    phase = 0.5 * math.pi * (0.6 * xx + 0.4 * yy + 0.3 * xx * yy)
    return torch.cat([x * torch.cos(phase), x * torch.sin(phase)], 1)


def _eigen(model, x: torch.Tensor, sigma: float, tol: float, max_iters: int, seed: int):
    from priors.jacobian import hessian_operator, top_eigenvalue
    from priors.lpn import told_noise_level

    with told_noise_level(model, sigma):
        hvp = hessian_operator(model, x)
        return top_eigenvalue(hvp, x.shape, max_iters=max_iters, tol=tol, seed=seed)


def _row(est) -> dict[str, Any]:
    return {
        "lambda_max": float(est.value[0]),
        "residual": float(est.residual[0]),
        "iterations": est.iterations,
        "converged": est.converged,
    }


def certify(
    model,
    size: int = 128,
    sigmas: tuple[float, ...] = SIGMAS,
    images: tuple[str, ...] = IMAGES,
    tol: float = 1e-3,
    max_iters: int = 100,
    margin: float = 0.01,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """The certificate of ``model`` (a ``LearnedProx``, run here in float64): rows and summary."""
    from priors.lpn import unwrap

    model = unwrap(model).to(torch.float64).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    channels = int(model.config().get("in_channels", 1))
    clean = certificate_inputs(size)
    gen = torch.Generator().manual_seed(seed)
    tasks = [(name, s, kind) for name in images for s in sigmas for kind in ("noisy", "clean")]
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from solvers.progress import progress_bar

        total = len(tasks) + len(CONVENTIONS) - 1
        bar = progress_bar(total=total, desc="prior check", file=sys.stderr)
    t0 = time.perf_counter()
    inputs: dict[tuple[str, float, str], tuple[torch.Tensor, float]] = {}
    for name, s, kind in tasks:
        x = _as_channels(clean[name], channels)
        sigma = s * float(x.max() - x.min())
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        v = x + sigma * noise if kind == "noisy" else x
        inputs[(name, s, kind)] = (v, sigma)
        est = _eigen(model, v, sigma, tol, max_iters, seed)
        rows.append(
            {
                "image": name,
                "sigma_rel": s,
                "input": kind,
                "convention": "as given",
                **_row(est),
            }
        )
        if bar is not None:
            bar.update(1)
    worst = max(rows, key=lambda r: r["lambda_max"])
    v, sigma = inputs[(worst["image"], worst["sigma_rel"], worst["input"])]
    for conv, (a, b) in CONVENTIONS.items():
        if conv == "as given":
            continue
        est = _eigen(model, a * v + b, a * sigma, tol, max_iters, seed)
        rows.append({**worst, "convention": conv, "a": a, "b": b, **_row(est)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    top = max(r["lambda_max"] for r in rows)
    converged = all(r["converged"] for r in rows)
    # a model firmly nonexpansive by construction (priors.ridge) states its bound; the Ritz
    # values, lower bounds on λ_max, must then stay below it (a value above exposes a bug)
    bound = model.lipschitz_bound() if hasattr(model, "lipschitz_bound") else None
    if bound is not None and top > bound * (1 + 1e-9):
        raise RuntimeError(
            f"a Ritz value {top:.12g} exceeds the bound {bound} this prior guarantees by "
            "construction: the implementation does not match its proof"
        )
    certified = bound is not None and bound <= 1.0
    summary = {
        "lambda_max": top,
        "largest_residual": max(r["residual"] for r in rows),
        "worst": {k: worst[k] for k in ("image", "sigma_rel", "input")},
        "all_converged": converged,
        "margin": margin,
        "bound_by_construction": bound,
        "firmly_nonexpansive": bool(certified or (converged and top <= 1.0 + margin)),
        "inputs": len(rows),
        "size": size,
        "tol": tol,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return {"summary": summary, "rows": rows}


def format_table(cert: dict[str, Any]) -> str:
    """Markdown: λ_max per image and σ (the larger of the noisy and clean inputs)."""
    rows = [r for r in cert["rows"] if r["convention"] == "as given"]
    sigmas = sorted({r["sigma_rel"] for r in rows})
    images = list(dict.fromkeys(r["image"] for r in rows))
    head = "| image | " + " | ".join(f"σ = {s:g}" for s in sigmas) + " |"
    lines = [head, "|---" * (len(sigmas) + 1) + "|"]
    for name in images:
        cells = []
        for s in sigmas:
            vals = [r["lambda_max"] for r in rows if r["image"] == name and r["sigma_rel"] == s]
            cells.append(f"{max(vals):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    conv = [r for r in cert["rows"] if r["convention"] != "as given"]
    if conv:
        lines.append("")
        lines.append(
            "Worst input in other conventions: "
            + ", ".join(f"{r['convention']} {r['lambda_max']:.6g}" for r in conv)
        )
    s = cert["summary"]
    verdict = "passes" if s["firmly_nonexpansive"] else "fails"
    certified = s.get("bound_by_construction") is not None and s["bound_by_construction"] <= 1.0
    if certified:
        verdict += " by construction"
    if s.get("bound_by_construction") is not None:
        lines.append(
            f"By construction λ_max ≤ {s['bound_by_construction']:g} for every input (the "
            "measured values are lower bounds and must not exceed it)"
        )
    lines.append(
        f"λ_max = {s['lambda_max']:.4g} (largest residual {s['largest_residual']:.2g}, "
        f"{s['inputs']} inputs, "
        f"{'every estimate converged' if s['all_converged'] else 'not every estimate converged'}"
        f"): {verdict}"
        + (
            " (the bound needs no converged row)"
            if certified
            else f" (limit 1 + {s['margin']:g}; passing needs every row converged)"
        )
    )
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prior",
        help="inspect a learned prior (check: is its prox firmly nonexpansive?)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    psub = p.add_subparsers(dest="prior_command", required=True)
    c = psub.add_parser(
        "check",
        help="largest eigenvalue of the prox's Jacobian, certified",
        description="Estimate the largest eigenvalue of the prox's Jacobian over the stated "
        "inputs (see `recon prior --help`). Exit status 0 when the prior passes, 1 when it "
        "fails, 2 for bad input.",
    )
    c.add_argument("prior", help="a shipped prior name or a .safetensors checkpoint")
    c.add_argument(
        "--size",
        type=int,
        default=64,
        help="input images are size×size (default 64: about 3 min on 2 cores)",
    )
    c.add_argument(
        "--sigmas",
        default=",".join(f"{s:g}" for s in SIGMAS),
        help="told noise levels relative to each image's range, comma-separated (default "
        + ",".join(f"{s:g}" for s in SIGMAS)
        + ")",
    )
    c.add_argument(
        "--tol", type=float, default=1e-3, help="Lanczos: residual ≤ tol·λ (default 1e-3)"
    )
    c.add_argument(
        "--max-iters", type=int, default=100, help="Lanczos iterations at most (default 100)"
    )
    c.add_argument(
        "--margin", type=float, default=0.01, help="pass when λ_max ≤ 1 + margin (default 0.01)"
    )
    c.add_argument("--json", default=None, help="also write the certificate as JSON here")
    c.add_argument(
        "--record",
        default=None,
        metavar="OUT",
        help="write a copy of the checkpoint with the certificate in its metadata",
    )
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--quiet", action="store_true")


def _sigmas(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--sigmas: comma-separated numbers, got {text!r}") from None
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"--sigmas: positive finite numbers, got {text!r}")
    return vals


def run(args: argparse.Namespace) -> int:
    from priors.checkpoint import load_prior, save_checkpoint
    from priors.lpn import LearnedProx
    from recon.outputs import save_json

    if args.threads:
        torch.set_num_threads(args.threads)
    sigmas = _sigmas(args.sigmas)
    if args.size < 16:
        raise ValueError(f"--size must be >= 16, got {args.size}")
    if not (args.tol > 0 and args.max_iters >= 1 and args.margin >= 0):
        raise ValueError("--tol must be > 0, --max-iters >= 1, --margin >= 0")
    model = load_prior(args.prior, dtype=torch.float64)
    if not isinstance(model, LearnedProx):
        raise ValueError(
            f"{args.prior}: a {type(model).__name__} is not the gradient of a potential "
            "(no Jacobian to certify)"
        )
    cert = certify(
        model,
        size=args.size,
        sigmas=sigmas,
        tol=args.tol,
        max_iters=args.max_iters,
        margin=args.margin,
        progress=not args.quiet,
    )
    cert["prior"] = str(args.prior)
    print(format_table(cert))
    if args.json:
        save_json(Path(args.json), cert)
    if args.record:
        meta = {**getattr(model, "meta", {}), "certificate": cert["summary"]}
        save_checkpoint(args.record, model.float(), meta)
        print(f"recorded in {args.record}", file=sys.stderr)
    verdict = {k: cert["summary"][k] for k in ("lambda_max", "firmly_nonexpansive")}
    print(json.dumps(verdict))
    return 0 if cert["summary"]["firmly_nonexpansive"] else EXIT_FAILS
