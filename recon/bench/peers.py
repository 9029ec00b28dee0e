"""Peer comparisons side by side (`recon bench peers`): DeepInverse on CT, BART on MRI.

Both toolkits get the same problem, the same reference image, one thread each, and a small
tuning grid each (evaluated on the image reported on: an oracle choice for every method alike).

CT (``--ct``) against DeepInverse's TV-ADMM, on two images scaled to [0, 1]: Shepp–Logan
128×128 and the bundled real CT slice (``bundled:ct-small``, 128×128, never trained on); 60
parallel-beam views over 180°, Gaussian noise with std = 1 % of max |sinogram| (seed 0).
Ours: FBP, TV-ADMM, TV-FISTA, PnP-ADMM with the shipped ``crr-ct`` (the default), ``ridge-ct``,
``aelpn-ct`` and ``lpn-ct``, each over its grid, and ``recon ct`` at its defaults (presets and
noise rules, no grid: what a user gets); all from FBP (its seconds are added to ours).
DeepInverse runs in its own interpreter (``--peer-python``; pnp-recon never imports it) through
``scripts/peers/deepinv_ct.py``, twice:

* ``shared``: on *our* measurements y and our ASTRA system matrix (exported as a sparse matrix
  and checked against the operator), so both solve the same discrete problem;
* ``own``: on its own data from its ``Tomography`` operator (a different discretisation): same
  image, views, relative noise level and seed-based noise (the draw differs: other shape).

PSNR is measured on the same reference with data range 1. Reported: its best final PSNR P* over
its grid, the time it needs to first reach P* (per-iteration timestamps), our time to reach P*
(from our per-iteration history; solver seconds plus FBP), their ratio, and each of our methods'
PSNR minus P*.

MRI (``--mri``) against BART (``bart`` on PATH; Debian: ``apt-get install bart``): the bundled
brain slice (``recon mri --input bundled:brain-t1``), 8 simulated coils, fastMRI random mask 4×
with centre fraction 0.08 (seed 0). The undersampled k-space is handed to BART as .cfl/.hdr;
BART estimates its own maps (``ecalib -m1``, calibration width = the fully sampled centre) and
runs ``pics -S`` with TV (``-R T:3:0:λ``) and L1-wavelet (``-R W:3:0:λ``) over a λ × iterations
grid. BART's centred unitary FFT equals ours (tested); ``-S`` returns the image in the data's
scale, checked each run by a fully sampled BART reconstruction against the reference. Ours: TV
and PnP-ADMM with ``aelpn-mri``, with our ESPIRiT maps. fastMRI metrics (magnitude, data range =
reference max), and `recon mri` at its defaults (the default prior with its solver, and TV;
no grid). Then, with BART, the rows of ``recon.bench.peers_mri``: BART's and ISMRMRD's
phantoms at two noise levels and 4×/8× masks, `recon mri` at its defaults against BART's best λ.

    recon bench peers [--ct] [--mri] --out DIR [--peer-python PATH] [--quick]

Writes table.md, results.json and ct_<image>_psnr_vs_seconds.png into --out (timings: wall
clock on this machine, one thread per toolkit; say whether it was loaded). A best setting at an
end of its grid is marked "(grid edge)": widen that grid before reading the row as a best.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.outputs import atomic_write, save_figure, save_json, save_npy

DRIVER = Path(__file__).resolve().parents[2] / "scripts" / "peers" / "deepinv_ct.py"
PEER_ENV = "RECON_PEER_PYTHON"
INSTALL_DEEPINV = (
    "python3 -m venv .venv-peers && .venv-peers/bin/pip install "
    "torch==2.14.1 torchvision==0.29.1 deepinv, then pass --peer-python "
    ".venv-peers/bin/python (or set RECON_PEER_PYTHON)"
)
INSTALL_BART = "apt-get install bart (Debian), or put the bart binary on PATH / pass --bart"

# Our grids: (label, solver, prior, grid key, values, fixed parameters).
CT_METHODS: list[tuple[str, str, str | None, str, tuple[float, ...], dict]] = [
    (
        "TV-ADMM",
        "tv",
        None,
        "weight_rel",
        (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08),  # Shepp-Logan's best 0.005, the real slice's 0.04
        {"solver": "pnp-admm", "rho_rel": 0.02, "iters": 100, "tol": 1e-5, "cg_iters": 10},
    ),
    (
        "TV-FISTA",
        "tv",
        None,
        "weight_rel",
        (5e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3),
        {"solver": "pnp-pgd", "accelerated": True, "step_rel": 0.99, "iters": 100, "tol": 1e-5},
    ),
    (
        "PnP-ADMM crr-ct",
        "pnp-admm",
        "crr-ct",
        "rho_rel",
        (0.005, 0.01, 0.02, 0.04, 0.08),  # around its noise rule's value at 1 % (0.015-0.03)
        {"iters": 40, "tol": 1e-4, "cg_iters": 10},
    ),
    (
        "PnP-ADMM ridge-ct",
        "pnp-admm",
        "ridge-ct",
        "rho_rel",
        (0.005, 0.01, 0.02, 0.04, 0.08),
        {"iters": 40, "tol": 1e-4, "cg_iters": 10},
    ),
    (
        "PnP-ADMM aelpn-ct",
        "pnp-admm",
        "aelpn-ct",
        "rho_rel",
        (0.001, 0.003, 0.01, 0.03),  # around the preset (0.01) and the Shepp-Logan 256 best
        {"iters": 40, "tol": 1e-4, "cg_iters": 10},
    ),
    (
        "PnP-ADMM lpn-ct",
        "pnp-admm",
        "lpn-ct",
        "rho_rel",
        (3e-4, 0.001, 0.003, 0.01, 0.03),
        {"iters": 40, "tol": 1e-4, "cg_iters": 10},
    ),
]
MRI_METHODS: list[tuple[str, str, str | None, str, tuple[float, ...], dict]] = [
    (
        "TV-ADMM",
        "tv",
        None,
        "weight_rel",
        (0.005, 0.0137, 0.03),  # around the tuned preset (recon/presets/mri.json)
        {"solver": "pnp-admm", "rho_rel": 0.0032, "iters": 100, "tol": 1e-5, "cg_iters": 10},
    ),
    (
        "PnP-ADMM aelpn-mri",
        "pnp-admm",
        "aelpn-mri",
        "rho_rel",
        (1e-4, 3e-4, 1e-3),  # around the tuned preset
        {"iters": 100, "tol": 1e-4, "cg_iters": 10},
    ),
]
DINV_STEPS = (100.0,)
BART_LAMBDAS = (0.001, 0.002, 0.005, 0.01, 0.02)
BART_ITERS = (100, 300)


# --- helpers ---------------------------------------------------------------------------------


def first_reach(psnr: list, seconds: list, target: float) -> tuple[int | None, float | None]:
    """(1-based iteration, seconds) at which ``psnr`` first reaches ``target``, or (None, None)."""
    for k, (p, s) in enumerate(zip(psnr, seconds, strict=True)):
        if p is not None and np.isfinite(p) and p >= target:
            return k + 1, float(s)
    return None, None


def _best_of(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["psnr"] if np.isfinite(r["psnr"]) else -np.inf)


def _progress(total: int, desc: str, quiet: bool):
    from solvers.progress import progress_bar

    return progress_bar(total=total, desc=desc, disable=quiet, leave=False)


def _run_ours(
    op,
    y,
    x0,
    methods,
    reference,
    data_range: float,
    metric,
    offset: float,
    quiet: bool,
    modality: str = "ct",
) -> dict[str, dict]:
    """Each method over its grid; the best run (by final PSNR) with its per-iteration curve.
    A prior that takes the noise level gets its shipped preset's σ rule."""
    from recon.pipeline import preset_prior_sigma, reconstruct

    out: dict[str, dict] = {}
    bar = _progress(sum(len(m[4]) for m in methods), "ours", quiet)
    for label, solver, prior, key, grid, fixed in methods:
        runs = []
        fixed = {**preset_prior_sigma(modality, solver, prior), **fixed}
        for v in grid:
            params = {**fixed, key: v}
            rec = reconstruct(
                op, y, x0, solver, prior, params, reference=reference, data_range=data_range
            )
            m = metric(rec.x)
            runs.append(
                {
                    key: v,
                    "psnr": m["psnr"],
                    "ssim": m["ssim"],
                    "iterations": rec.iterations,
                    "seconds": rec.seconds + offset,
                    "stop_reason": rec.stop_reason,
                    "curve_psnr": list(rec.history.get("psnr", [])),
                    "curve_seconds": [s + offset for s in rec.history.get("seconds", [])],
                    "x": rec.x,
                }
            )
            bar.update(1)
        best = _best_of(runs)
        out[label] = {
            "setting": {key: best[key]},
            "grid_edge": len(grid) > 1 and best[key] in (grid[0], grid[-1]),
            "grid": {key: list(grid)},
            "grid_psnr": [r["psnr"] for r in runs],
            **{k: v for k, v in best.items() if k not in (key,)},
        }
    bar.close()
    return out


def _strip(d: dict) -> dict:
    """A copy without tensors/arrays (for JSON)."""
    return {k: v for k, v in d.items() if not isinstance(v, torch.Tensor | np.ndarray)}


# --- CT vs DeepInverse -----------------------------------------------------------------------


def check_peer_python(path: str | None) -> tuple[str | None, str]:
    """(interpreter, DeepInverse version) or (None, reason it cannot be used)."""
    if not path:
        return None, f"DeepInverse skipped: no --peer-python given. Install: {INSTALL_DEEPINV}"
    if not Path(path).exists() and shutil.which(path) is None:
        return (
            None,
            f"DeepInverse skipped: --peer-python {path} does not exist. Install: {INSTALL_DEEPINV}",
        )
    try:
        r = subprocess.run(
            [path, "-c", "import deepinv, torch; print(deepinv.__version__, torch.__version__)"],
            capture_output=True,
            text=True,
        )
    except OSError as exc:  # a folder, a file without execute permission
        return None, f"DeepInverse skipped: {path} cannot run ({exc.strerror or exc})"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return (
            None,
            f"DeepInverse skipped: {path} cannot import deepinv ({last}). "
            f"Install: {INSTALL_DEEPINV}",
        )
    return path, r.stdout.strip()


def astra_matrix(op) -> Any:
    """The ASTRA CPU projector's sparse system matrix (CSR) for a parallel-beam CTOperator."""
    import astra

    pid = astra.create_projector(op.projector, op._proj, op._vol)
    try:
        mid = astra.projector.matrix(pid)
        try:
            mat = astra.matrix.get(mid).tocsr()
        finally:
            astra.matrix.delete(mid)
    finally:
        astra.projector.delete(pid)
    return mat


def _run_deepinv(python: str, work: Path, mode: str, cfg: dict, quiet: bool) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    save_json(work / "config.json", {**cfg, "mode": mode})
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    r = subprocess.run(
        [python, str(DRIVER), str(work)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=None if not quiet else subprocess.PIPE,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"DeepInverse driver failed ({mode}) with status {r.returncode}")
    res = json.loads((work / "results.json").read_text())
    res["wall_seconds_all_runs"] = time.perf_counter() - t0
    return res


# The CT images: (name, description, loader of a 128×128 image in [0, 1]).
def _shepp_logan() -> np.ndarray:
    from data.phantoms import shepp_logan

    return shepp_logan(128)


def _bundled_slice() -> np.ndarray:
    from data.bundled import load_bundled

    hu = np.asarray(load_bundled("ct-small").hu, np.float64)
    return ((hu - hu.min()) / (hu.max() - hu.min())).astype(np.float32)


# (name, description, image loader, DeepInverse's λ grid: its best inside, measured)
CT_IMAGES = (
    (
        "shepp-logan",
        "Shepp-Logan 128x128 (data.phantoms.shepp_logan, [0, 1])",
        _shepp_logan,
        (2.5e-5, 5e-5, 1e-4, 2e-4, 4e-4),
    ),
    (
        "ct-small",
        "bundled real CT slice 128x128 (CT_small.dcm), HU scaled to [0, 1]",
        _bundled_slice,
        (1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3),
    ),
)
CT_IMAGE_NAMES = tuple(c[0] for c in CT_IMAGES)


def _run_defaults(pb, metric, quick: bool) -> dict[str, dict]:
    """`recon ct` at its defaults on ``pb`` (presets and noise rules, no grid): the default prior
    with PnP-ADMM, and TV. The setting shown is the value the rules chose."""
    from recon.api import DEFAULT_PRIOR, solve

    out: dict[str, dict] = {}
    prior = DEFAULT_PRIOR["ct"]
    for label, solver, key in (
        (f"PnP-ADMM {prior}", "pnp-admm", "rho_rel"),
        ("TV", "tv", "weight_rel"),
    ):
        r = solve(pb, solver, None if solver == "tv" else prior, iters=10 if quick else None)
        m = metric(r.x)
        used = r.params.get(f"{key}_used", r.params.get(key))
        tag = "recon ct defaults, --quick: 10 iterations" if quick else "recon ct defaults"
        out[f"{label} ({tag})"] = {
            "setting": {f"{key} (rule)": float(f"{used:.3g}")},
            "grid_edge": False,
            "psnr": m["psnr"],
            "ssim": m["ssim"],
            "iterations": r.iterations,
            "seconds": r.seconds + pb.fbp_seconds,
            "stop_reason": r.stop_reason,
            "curve_psnr": list(r.history.get("psnr", [])),
            "curve_seconds": [t + pb.fbp_seconds for t in r.history.get("seconds", [])],
        }
    return out


def run_ct(args, out: Path, peer: tuple[str | None, str]) -> dict[str, Any]:
    """The images of ``CT_IMAGES`` that ``--ct-images`` names (``--quick``: the first of them),
    each into OUT/<name>/, with its DeepInverse λ grid unless ``--dinv-lambdas`` gives one;
    ``peer``: ``check_peer_python``'s (interpreter, version or reason it is skipped)."""
    names = args.ct_images or CT_IMAGE_NAMES
    images = [c for c in CT_IMAGES if c[0] in names][: 1 if args.quick else None]
    return {
        name: run_ct_image(args, out / name, text, load(), args.dinv_lambdas or lambdas, peer)
        for name, text, load, lambdas in images
    }


def run_ct_image(
    args,
    out: Path,
    text: str,
    image: np.ndarray,
    lambdas: tuple[float, ...],
    peer: tuple[str | None, str],
) -> dict[str, Any]:
    from recon.api import ct_problem
    from recon.pipeline import image_metrics

    size, views, noise, seed = image.shape[0], 60, 0.01, args.seed
    pb = ct_problem(image, units="a.u.", views=views, noise=noise, seed=seed)
    op, y, x0, x_true, dr = pb.op, pb.y, pb.x0, pb.x_true, pb.data_range
    ref = x_true[0, 0].numpy()

    def metric(x: torch.Tensor) -> dict:
        return image_metrics(x[0, 0].detach().numpy(), ref, dr)

    methods = _quick(CT_METHODS) if args.quick else CT_METHODS
    ours = _run_ours(op, y, x0, methods, x_true, dr, metric, pb.fbp_seconds, args.quiet)
    ours.update(_run_defaults(pb, metric, args.quick))
    result: dict[str, Any] = {
        "problem": {
            "image": text,
            "size": size,
            "views": views,
            "arc_degrees": 180,
            "noise": f"Gaussian, std = {noise} x max|sinogram|, seed {seed}",
            "data_range": dr,
            "threads": torch.get_num_threads(),
        },
        "fbp": {**metric(x0), "seconds": pb.fbp_seconds},
        "ours": {k: _strip(v) for k, v in ours.items()},
    }
    python, info = peer
    if python is None:
        result["peer"] = {"skipped": info}
        print(info, file=sys.stderr)
        return result
    mat = astra_matrix(op)
    check = float(
        np.abs(mat @ ref.ravel() - op.forward(x_true).numpy().ravel()).max()
        / np.abs(y.numpy()).max()
    )
    if check > 1e-4:
        raise RuntimeError(f"exported ASTRA matrix differs from the operator (rel. {check:.1e})")
    work = out / "deepinv"
    work.mkdir(parents=True, exist_ok=True)
    save_npy(work / "ref.npy", ref.astype(np.float32))
    save_npy(work / "y.npy", y[0, 0].numpy().astype(np.float32))
    np.savez(
        work / "A.npz",
        data=mat.data,
        indices=mat.indices,
        indptr=mat.indptr,
        shape=np.array(mat.shape),
    )
    cfg = {
        "image": "../ref.npy",
        "y": "../y.npy",
        "matrix": "../A.npz",
        "norm_sq": op.norm_sq(),
        "image_shape": [size, size],
        "sino_shape": list(y.shape[-2:]),
        "views": views,
        "noise_rel": noise,
        "seed": seed,
        "iters": args.dinv_iters,
        "lambdas": list(lambdas[:1] if args.quick else lambdas),
        "stepsizes": list(args.dinv_steps),
        "threads": 1,
    }
    peer: dict[str, Any] = {"version": info, "matrix_check_rel": check, "modes": {}}
    for mode in ("shared", "own"):
        res = _run_deepinv(python, work / mode, mode, cfg, args.quiet)
        best = res["runs"][res["best"]]
        x_best = np.load(work / mode / "best.npy")
        m = image_metrics(x_best, ref, dr)
        target = best["psnr"][-1]
        it, t_reach = first_reach(best["psnr"], best["seconds"], target)
        lams = sorted({r["lam"] for r in res["runs"]})
        mode_res = {
            "setting": {"lambda": best["lam"], "stepsize": best["stepsize"]},
            "grid_edge": len(lams) > 1 and best["lam"] in (lams[0], lams[-1]),
            "psnr": m["psnr"],
            "psnr_deepinv_metric": target,
            "ssim": m["ssim"],
            "iterations": len(best["psnr"]),
            "seconds": best["total"],
            "reach_iteration": it,
            "reach_seconds": t_reach,
            "curve_psnr": best["psnr"],
            "curve_seconds": best["seconds"],
            "grid": [
                {
                    "lambda": r["lam"],
                    "stepsize": r["stepsize"],
                    "psnr": r["psnr"][-1],
                    "seconds": r["total"],
                }
                for r in res["runs"]
            ],
            "versions": {"deepinv": res["deepinv"], "torch": res["torch"]},
            "threads": res["threads"],
            "comparison": {},
        }
        for label, o in ours.items():
            k, t_ours = first_reach(o["curve_psnr"], o["curve_seconds"], m["psnr"])
            mode_res["comparison"][label] = {
                "psnr_gain_db": o["psnr"] - m["psnr"],
                "reach_iteration": k,
                "reach_seconds": t_ours,
                "speedup_vs_reach": None if t_ours is None else t_reach / t_ours,
                "speedup_vs_full_run": None if t_ours is None else best["total"] / t_ours,
            }
        peer["modes"][mode] = mode_res
    result["peer"] = peer
    return result


def _quick(methods):
    """--quick: the middle grid value only and a quarter of the iterations (a smoke run)."""
    out = []
    for label, solver, prior, key, grid, fixed in methods:
        f = {**fixed, "iters": max(5, int(fixed["iters"]) // 4)}
        out.append((label, solver, prior, key, (grid[len(grid) // 2],), f))
    return out


# --- MRI vs BART -----------------------------------------------------------------------------


def find_bart(path: str | None) -> tuple[str | None, str]:
    exe = shutil.which(path or "bart")
    if exe is None:
        return None, f"BART skipped: '{path or 'bart'}' not found. Install: {INSTALL_BART}"
    r = subprocess.run([exe, "version"], capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"BART skipped: '{exe} version' failed ({r.stderr.strip()})"
    return exe, r.stdout.strip()


def bart_calibration(width: int) -> int:
    """The calibration size to give ``bart ecalib -r``: our fully sampled centre width, made
    even. BART centres an odd region one column off ours, so it would take in an unsampled
    column (measured on ISMRMRD's phantom, 4×: -r 11 gave pics 22.7 dB where -r 10 gave 25.8)."""
    return int(width) - int(width) % 2


def run_bart(exe: str, *cmd: str, cwd: Path) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    r = subprocess.run([exe, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bart {' '.join(cmd)} failed: {r.stderr.strip()}")
    return time.perf_counter() - t0


def _run_mri_defaults(k: np.ndarray, ref: np.ndarray, seed: int, quick: bool) -> dict[str, dict]:
    """`recon mri` at its defaults on the same k-space and mask (its ESPIRiT maps, start image,
    presets and noise rules; no grid): the default prior with its solver, and TV."""
    from recon.api import DEFAULT_PRIOR, mri_problem, solve
    from recon.mri import default_solver

    pb = mri_problem(k, reference=ref, mask="random", accel=4.0, center_fraction=0.08, seed=seed)
    prior = DEFAULT_PRIOR["mri"]
    out: dict[str, dict] = {}
    for solver in (default_solver(prior), "tv"):
        r = solve(pb, solver, None if solver == "tv" else prior, iters=10 if quick else None)
        name = {"pnp-admm": "PnP-ADMM", "pnp-pgd": "PnP-PGD", "tv": "TV"}[solver]
        if solver == "pnp-pgd" and r.params.get("accelerated"):
            name = "PnP-FISTA"
        label = "TV" if solver == "tv" else f"{name} {prior}"
        tag = "recon mri defaults, --quick: 10 iterations" if quick else "recon mri defaults"
        out[f"{label} ({tag})"] = {
            "setting": {"preset": "noise rules"},
            "psnr": r.psnr,
            "ssim": r.ssim,
            "iterations": r.iterations,
            "seconds": r.seconds,
            "stop_reason": r.stop_reason,
        }
    return out


def run_mri(args, out: Path) -> dict[str, Any]:
    from data.fastmri import evaluate
    from recon.mri import calibration_width, load_kspace, sample_kspace
    from recon.peers_io import kspace_to_bart, read_cfl, write_cfl

    k, ref, _, source, _ = load_kspace("bundled:brain-t1", coils=8, seed=args.seed)
    t0 = time.perf_counter()
    op, y, mask_desc, _ = sample_kspace(k, "random", 4.0, 0.08, args.seed)
    t_maps = time.perf_counter() - t0
    x0 = op.adjoint(y)
    ref_t = torch.from_numpy(ref)[None, None]
    dr = float(ref.max())

    def metric(x: torch.Tensor) -> dict:
        return evaluate(ref, np.abs(x[0, 0].detach().numpy()))

    methods = _quick(MRI_METHODS) if args.quick else MRI_METHODS
    ours = _run_ours(op, y, x0, methods, ref_t, dr, metric, 0.0, args.quiet, "mri")
    ours.update(_run_mri_defaults(k, ref, args.seed, args.quick))
    result: dict[str, Any] = {
        "problem": {
            "input": source,
            "shape": list(ref.shape),
            "mask": mask_desc,
            "metrics": "fastMRI (magnitude, data_range = reference max)",
            "threads": torch.get_num_threads(),
        },
        "ours": {k2: _strip(v) for k2, v in ours.items()},
        "ours_espirit_seconds": t_maps,
    }
    exe, info = find_bart(args.bart)
    if exe is None:
        result["peer"] = {"skipped": info}
        print(info, file=sys.stderr)
        return result
    work = out / "bart"
    work.mkdir(parents=True, exist_ok=True)
    ku = y[0].numpy()
    mask = op.mask.numpy() if isinstance(op.mask, torch.Tensor) else np.asarray(op.mask)
    calib = calibration_width(np.broadcast_to(mask, ku.shape[-2:]))
    write_cfl(work / "full", kspace_to_bart(k))
    write_cfl(work / "ku", kspace_to_bart(ku))
    # convention check: a fully sampled BART reconstruction must reproduce the reference
    run_bart(exe, "ecalib", "-m1", "full", "sens_full", cwd=work)
    run_bart(exe, "pics", "-S", "full", "sens_full", "rec_full", cwd=work)
    full_psnr = evaluate(ref, np.abs(read_cfl(work / "rec_full")))["psnr"]
    t_ecalib = run_bart(
        exe, "ecalib", "-m1", "-r", str(bart_calibration(calib)), "ku", "sens", cwd=work
    )
    lambdas = BART_LAMBDAS[2:3] if args.quick else BART_LAMBDAS
    iters = (30,) if args.quick else BART_ITERS
    peer: dict[str, Any] = {
        "version": info,
        "fully_sampled_check_psnr": full_psnr,
        "ecalib_seconds": t_ecalib,
        "calibration_width": calib,
        "methods": {},
    }
    bar = _progress(2 * len(lambdas) * len(iters), "bart", args.quiet)
    for label, reg in (("BART pics TV", "T"), ("BART pics L1-wavelet", "W")):
        runs = []
        for it in iters:
            for lam in lambdas:
                sec = run_bart(
                    exe,
                    "pics",
                    "-S",
                    "-i",
                    str(it),
                    "-R",
                    f"{reg}:3:0:{lam}",
                    "ku",
                    "sens",
                    "rec",
                    cwd=work,
                )
                m = evaluate(ref, np.abs(read_cfl(work / "rec")))
                runs.append({"lambda": lam, "iters": it, "seconds": sec, **m})
                bar.update(1)
        best = _best_of(runs)
        peer["methods"][label] = {
            "setting": {"lambda": best["lambda"], "iters": best["iters"]},
            "psnr": best["psnr"],
            "ssim": best["ssim"],
            "seconds": best["seconds"],
            "grid": runs,
        }
    bar.close()
    best_bart = max(peer["methods"].values(), key=lambda r: r["psnr"])
    peer["comparison"] = {
        label: {
            "psnr_gain_db": o["psnr"] - best_bart["psnr"],
            "seconds_ratio": best_bart["seconds"] / o["seconds"],
        }
        for label, o in ours.items()
    }
    result["peer"] = peer
    return result


# --- output ----------------------------------------------------------------------------------


def _f(v, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def table(results: dict) -> str:
    lines: list[str] = []
    for ct in (results.get("ct") or {}).values():
        lines += [
            f"## CT: {ct['problem']['image']}, {ct['problem']['views']} views, "
            f"{ct['problem']['noise']}",
            "",
        ]
        lines += [
            "| method | setting | PSNR (dB) | SSIM | iterations | seconds |",
            "|---|---|---|---|---|---|",
        ]
        f = ct["fbp"]
        lines.append(
            f"| ours FBP | ram-lak | {f['psnr']:.2f} | {f['ssim']:.3f} | – | {f['seconds']:.2f} |"
        )
        for label, o in ct["ours"].items():
            edge = " (grid edge)" if o.get("grid_edge") else ""
            lines.append(
                f"| ours {label} | {_kv(o['setting'])}{edge} | {o['psnr']:.2f} | "
                f"{o['ssim']:.3f} | {o['iterations']} | {o['seconds']:.1f} |"
            )
        peer = ct["peer"]
        if "skipped" in peer:
            lines += ["", peer["skipped"]]
        else:
            for mode, p in peer["modes"].items():
                edge = " (grid edge)" if p.get("grid_edge") else ""
                lines.append(
                    f"| DeepInverse TV-ADMM ({mode} data) | {_kv(p['setting'])}{edge} | "
                    f"{p['psnr']:.2f} | {p['ssim']:.3f} | {p['iterations']} | "
                    f"{p['seconds']:.1f} |"
                )
            for mode, p in peer["modes"].items():
                lines += [
                    "",
                    f"Against DeepInverse ({mode} data): its best P* = {p['psnr']:.2f} dB, "
                    f"first reached at iteration {p['reach_iteration']} after "
                    f"{_f(p['reach_seconds'], '.1f')} s (full run {p['seconds']:.1f} s).",
                    "",
                    "| ours | PSNR − P* (dB) | our time to P* (s) | speed-up vs its time to P* "
                    "| speed-up vs its full run |",
                    "|---|---|---|---|---|",
                ]
                for label, c in p["comparison"].items():
                    lines.append(
                        f"| {label} | {c['psnr_gain_db']:+.2f} | {_f(c['reach_seconds'], '.1f')} | "
                        f"{_f(c['speedup_vs_reach'])}× | {_f(c['speedup_vs_full_run'])}× |"
                    )
        lines.append("")
    mri = results.get("mri")
    if mri:
        pr = mri["problem"]
        lines += [
            f"## MRI: {pr['input']}, mask {pr['mask']['type']} {pr['mask']['accel']}× "
            f"(centre {pr['mask']['center_fraction']})",
            "",
        ]
        lines += ["| method | setting | PSNR (dB) | SSIM | seconds |", "|---|---|---|---|---|"]
        for label, o in mri["ours"].items():
            lines.append(
                f"| ours {label} | {_kv(o['setting'])} | {o['psnr']:.2f} | "
                f"{o['ssim']:.3f} | {o['seconds']:.1f} |"
            )
        peer = mri["peer"]
        if "skipped" in peer:
            lines += ["", peer["skipped"]]
        else:
            for label, b in peer["methods"].items():
                lines.append(
                    f"| {label} | {_kv(b['setting'])} | {b['psnr']:.2f} | "
                    f"{b['ssim']:.3f} | {b['seconds']:.1f} |"
                )
            lines += [
                "",
                f"Coil maps: ours (ESPIRiT) {mri['ours_espirit_seconds']:.1f} s, BART "
                f"ecalib {peer['ecalib_seconds']:.1f} s (not in the seconds above). Convention "
                f"check, fully sampled BART pics vs reference: "
                f"{peer['fully_sampled_check_psnr']:.1f} dB.",
                "",
                "| ours | PSNR − best BART (dB) | BART seconds / our seconds |",
                "|---|---|---|",
            ]
            for label, c in peer["comparison"].items():
                lines.append(f"| {label} | {c['psnr_gain_db']:+.2f} | {c['seconds_ratio']:.2f}× |")
    if results.get("mri_sources"):
        from recon.bench.peers_mri import peer_sources_table

        lines += ["", peer_sources_table(results["mri_sources"])]
    return "\n".join(lines) + "\n"


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def plot_ct(ct: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, o in ct["ours"].items():
        pts = [
            (s, p)
            for s, p in zip(o["curve_seconds"], o["curve_psnr"], strict=False)
            if p is not None
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), "-", label=f"ours {label}")
    peer = ct.get("peer", {})
    for mode, p in peer.get("modes", {}).items():
        ls = "--" if mode == "shared" else ":"
        ax.plot(
            p["curve_seconds"],
            p["curve_psnr"],
            ls,
            color="k",
            label=f"DeepInverse TV-ADMM ({mode} data)",
        )
        ax.axhline(p["psnr"], color="gray", lw=0.7, ls=ls)
    ax.set_xscale("log")
    pr = ct["problem"]
    ax.set(
        xlabel="seconds (one thread)",
        ylabel="PSNR (dB)",
        title=f"CT: {pr['image'].split(' (')[0]}, {pr['views']} views, 1 % noise",
    )
    lo = ct["fbp"]["psnr"] - 2
    ax.set_ylim(bottom=lo)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(path, fig)


# --- CLI -------------------------------------------------------------------------------------


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not vals or not all(v > 0 for v in vals):
        raise argparse.ArgumentTypeError(f"values must be > 0, got {text!r}")
    return vals


def add_bench_parser(bsub) -> None:
    p = bsub.add_parser(
        "peers",
        help="side-by-side comparison with DeepInverse (CT) and BART (MRI)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ct", action="store_true", help="CT vs DeepInverse (default: both)")
    p.add_argument("--mri", action="store_true", help="MRI vs BART (default: both)")
    p.add_argument("--out", default="out/bench-peers")
    p.add_argument(
        "--peer-python",
        default=os.environ.get(PEER_ENV),
        help=f"Python interpreter with deepinv installed (default: ${PEER_ENV})",
    )
    p.add_argument("--bart", default=None, help="bart executable (default: bart on PATH)")
    p.add_argument(
        "--ct-images",
        nargs="+",
        choices=CT_IMAGE_NAMES,
        default=None,
        help=f"CT images to compare on (default: all, {' '.join(CT_IMAGE_NAMES)})",
    )
    p.add_argument(
        "--dinv-lambdas",
        type=_floats,
        default=None,
        help="DeepInverse's TV weights (default: each image's grid, its best inside)",
    )
    p.add_argument("--dinv-steps", type=_floats, default=DINV_STEPS)
    p.add_argument("--dinv-iters", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="one grid point, few iterations (smoke)")
    p.add_argument("--quiet", action="store_true")


def run_bench(args) -> int:
    """Run the requested comparisons; write table.md, results.json and the CT plot."""
    torch.set_num_threads(1)
    if args.dinv_iters < 1:
        raise ValueError(f"--dinv-iters must be ≥ 1, got {args.dinv_iters}")
    if args.quick:
        args.dinv_steps = args.dinv_steps[:1]
        args.dinv_iters = min(args.dinv_iters, 10)
    do_ct, do_mri = (args.ct or not args.mri), (args.mri or not args.ct)
    peer = check_peer_python(args.peer_python) if do_ct else (None, "")
    if args.peer_python and do_ct and peer[0] is None:  # asked for by name: an error
        raise ValueError(peer[1].replace("DeepInverse skipped: ", "") + " (leave out "
                         "--peer-python to run ours alone)")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": "recon bench peers " + " ".join(sys.argv[3:]),
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
    }
    if do_ct:
        results["ct"] = run_ct(args, out, peer)
        for name, ct in results["ct"].items():
            plot_ct(ct, out / f"ct_{name}_psnr_vs_seconds.png")
    if do_mri:
        results["mri"] = run_mri(args, out)
        exe, info = find_bart(args.bart)
        if exe is not None:
            from recon.bench.peers_mri import run_peer_sources

            results["mri_sources"] = run_peer_sources(args, out, exe)
    results["load_average_end"] = list(os.getloadavg())
    save_json(out / "results.json", results)
    text = table(results)
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(text))
    print(text)
    return 0
