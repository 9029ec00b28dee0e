"""Side-by-side timings of the MRI pieces that dominate a slice's time, each against the
computation it replaces, in one run on one machine (timings are ratios measured together):

* radial AᴴA: Toeplitz embedding (``NonCartesianSENSE(..., toeplitz=True)``) against a NUFFT and
  its adjoint (SigPy's defaults), with their errors against the dense discrete Fourier model on
  a small grid;
* ESPIRiT maps: ``data.coils.espirit_maps`` against ``sigpy.mri.app.EspiritCalib`` (same
  settings), with the largest difference between the maps;
* a fastMRI-layout slice with a 2× readout (16 coils, 640 × 320 k-space, a 320 × 320 recon,
  random 4×, 0.5 % noise; written to ``--out``/oversampled16.h5): `recon mri`'s problem on the
  full grid against the problem with the oversampling removed
  (``recon.mri.remove_readout_oversampling``), TV and the default solver.

    python scripts/bench_mri_speed.py --out runs/mri-speed [--skip-volume]

Writes ``table.md`` and ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch


def radial_normal() -> list[dict]:
    from data.masks import radial_trajectory
    from operators.mri import NonCartesianSENSE
    from recon.bench.speed import best_seconds

    rows = []
    for n, coils in ((192, 8), (320, 16)):
        n_read = 2 * n
        coord = radial_trajectory(int(round(np.pi / 2 * n_read / 4)), n_read) * 0.5
        rng = np.random.default_rng(0)
        maps = (
            rng.standard_normal((coils, n, n)) + 1j * rng.standard_normal((coils, n, n))
        ).astype(np.complex64)
        pair = NonCartesianSENSE(maps, coord)
        toep = NonCartesianSENSE(maps, coord, toeplitz=True)
        t = time.perf_counter()
        toep.toeplitz_kernel()
        kernel_s = time.perf_counter() - t
        x = torch.randn(1, 1, n, n, dtype=torch.complex64)
        # best of 3 after a warm-up (SigPy's numba kernels compile on first use)
        a = best_seconds(lambda p=pair, x=x: p.normal(x))
        b = best_seconds(lambda p=toep, x=x: p.normal(x))
        rows.append(
            {"image": f"{n}x{n}", "coils": coils, "nufft_pair_s": a, "toeplitz_s": b,
             "speedup": a / b, "kernel_once_s": kernel_s}
        )  # fmt: skip
    return rows


def radial_accuracy() -> dict:
    """Relative error of AᴴA x against the dense discrete Fourier model (32², 3 coils)."""
    from data.masks import radial_trajectory
    from operators.mri import NonCartesianSENSE

    n, c = 32, 3
    coord = radial_trajectory(20, 2 * n).astype(np.float64) * 0.5
    rng = np.random.default_rng(1)
    maps = rng.standard_normal((c, n, n)) + 1j * rng.standard_normal((c, n, n))
    x = rng.standard_normal((1, 1, n, n)) + 1j * rng.standard_normal((1, 1, n, n))
    r = np.arange(n) - n // 2
    r0, r1 = np.meshgrid(r, r, indexing="ij")
    e = (
        np.exp(
            -2j
            * np.pi
            * (np.outer(coord[:, 0], r0.ravel()) + np.outer(coord[:, 1], r1.ravel()))
            / n
        )
        / n
    )
    ehe = e.conj().T @ e
    exact = sum(np.conj(s) * (ehe @ (s * x[0, 0]).ravel()).reshape(n, n) for s in maps)
    out = {}
    for name, op in (
        ("nufft_pair", NonCartesianSENSE(maps, coord)),
        ("nufft_pair_accurate", NonCartesianSENSE(maps, coord, oversamp=2.0, width=6)),
        ("toeplitz", NonCartesianSENSE(maps, coord, toeplitz=True)),
    ):
        got = op.normal(torch.from_numpy(x))[0, 0].numpy()
        out[name] = float(np.linalg.norm(got - exact) / np.linalg.norm(exact))
    return out


def espirit() -> list[dict]:
    from sigpy.mri.app import EspiritCalib

    from data.coils import birdcage_maps, espirit_maps
    from operators.mri import fft2c

    rows = []
    for coils, (h, w) in ((8, (256, 256)), (16, (640, 320))):
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
        img = ((xx**2 / 0.5 + yy**2 / 0.7) < 1) * (1 + 0.3 * np.cos(8 * xx))
        k = fft2c(torch.from_numpy(birdcage_maps(coils, (h, w)) * img[None])).numpy()
        rng = np.random.default_rng(2)
        k = (
            k
            + 1e-3
            * np.abs(k).max()
            * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
        ).astype(np.complex64)
        t = time.perf_counter()
        ours = espirit_maps(k, 24)
        ours_s = time.perf_counter() - t
        t = time.perf_counter()
        ref = np.asarray(
            EspiritCalib(
                k, calib_width=24, thresh=0.02, kernel_width=6, crop=0.95, show_pbar=False
            ).run()
        )
        sigpy_s = time.perf_counter() - t
        keep = np.abs(ref).sum(0) > 0
        rows.append(
            {"kspace": f"{h}x{w}", "coils": coils, "sigpy_s": sigpy_s, "ours_s": ours_s,
             "speedup": sigpy_s / ours_s,
             "support_differs": int(((np.abs(ours).sum(0) > 0) ^ keep).sum()),
             "max_rel_diff": float(
                 np.linalg.norm((ours - ref)[:, keep]) / np.linalg.norm(ref[:, keep]))}
        )  # fmt: skip
    return rows


def oversampled_slice(work: Path) -> list[dict]:
    from data.fastmri import center_crop, evaluate, make_synthetic_fastmri, read_fastmri
    from data.phantoms import shepp_logan
    from recon.mri import load_presets, mri_problem, solve_mri

    img = shepp_logan(320).astype(np.float64)
    vol = np.zeros((1, 640, 320))
    vol[0, 160:480] = img
    path = make_synthetic_fastmri(work / "oversampled16.h5", vol, n_coils=16, recon_size=(320, 320))
    with h5py.File(path, "r+") as h5:  # 0.5 % of the image max; `recon mri --input` reads it too
        k = h5["kspace"][0]
        rng = np.random.default_rng(0)
        noise = rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)
        h5["kspace"][0] = (k + 5e-6 / np.sqrt(2) * noise).astype(np.complex64)
    f = read_fastmri(path, slices=0)
    k = f.kspace[0]
    size = tuple(f.recon_size)
    ref = center_crop(f.reference[0], size)
    presets = load_presets("mri", None)
    rows = []
    for label, recon_size in (("full 640-row grid", None), ("oversampling removed", size)):
        t = time.perf_counter()
        p = mri_problem(k, recon_size=recon_size, mask="random", accel=4.0, seed=0)
        problem_s = time.perf_counter() - t
        for solver, prior in (("tv", None), ("pnp-pgd", "ridge-mri")):
            x, record, _, seconds = solve_mri(p, solver, prior, presets)
            rows.append(
                {"grid": label, "image": "x".join(map(str, p.op.domain_shape[1:])),
                 "method": solver if prior is None else f"{prior} (PnP-FISTA, the default)",
                 "psnr": evaluate(ref, center_crop(np.abs(x), size))["psnr"],
                 "iterations": record["iterations"], "solver_s": seconds,
                 "maps_s": p.info["coil_maps"]["seconds"], "problem_s": problem_s}
            )  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-volume", action="store_true", help="leave out the 640-row slice")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    res = {
        "threads": args.threads,
        "radial_normal": radial_normal(),
        "radial_accuracy": radial_accuracy(),
        "espirit": espirit(),
    }
    print(json.dumps(res, indent=1), flush=True)
    if not args.skip_volume:
        res["oversampled_slice"] = oversampled_slice(args.out)
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    (args.out / "table.md").write_text(tables(res, args))
    print((args.out / "table.md").read_text())


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def tables(res: dict, args: argparse.Namespace) -> str:
    """The results as markdown tables."""
    cmd = f"python scripts/bench_mri_speed.py --out {args.out}"
    lines = [f"Command: `{cmd}` ({args.threads} torch thread(s))", ""]
    lines += _md(
        ["radial AᴴA", "NUFFT pair (s)", "Toeplitz (s)", "speed-up", "kernel, once (s)"],
        [
            [f"{r['image']}, {r['coils']} coils", f"{r['nufft_pair_s']:.4f}",
             f"{r['toeplitz_s']:.4f}", f"{r['speedup']:.1f}×", f"{r['kernel_once_s']:.2f}"]
            for r in res["radial_normal"]
        ],
    )  # fmt: skip
    acc = res["radial_accuracy"]
    lines += [
        "",
        "AᴴA x against the dense discrete Fourier model (32², 3 coils, relative error): NUFFT "
        f"pair (SigPy's defaults) {acc['nufft_pair']:.1e}, accurate NUFFT pair (oversampling 2, "
        f"width 6) {acc['nufft_pair_accurate']:.1e}, Toeplitz {acc['toeplitz']:.1e}.",
        "",
    ]
    lines += _md(
        ["ESPIRiT", "SigPy EspiritCalib (s)", "ours (s)", "speed-up", "support pixels that differ",
         "maps' difference"],
        [
            [f"{r['kspace']}, {r['coils']} coils", f"{r['sigpy_s']:.2f}", f"{r['ours_s']:.2f}",
             f"{r['speedup']:.1f}×", str(r["support_differs"]), f"{r['max_rel_diff']:.1e}"]
            for r in res["espirit"]
        ],
    )  # fmt: skip
    if "oversampled_slice" in res:
        lines += [""] + _md(
            ["16 coils, 640 × 320 k-space, recon 320 × 320", "solved on", "method", "PSNR (dB)",
             "iterations", "solver (s)", "maps (s)"],
            [
                [r["grid"], r["image"], r["method"], f"{r['psnr']:.2f}", str(r["iterations"]),
                 f"{r['solver_s']:.1f}", f"{r['maps_s']:.2f}"]
                for r in res["oversampled_slice"]
            ],
        )  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
