"""`recon bench peers --mri`, on data other tools made: `recon mri` at its defaults against BART.

Problems: BART's multi-coil phantom (``bart phantom -x 256 -s 8 -k``, no oversampling) and
ISMRMRD's Shepp–Logan (``ismrmrd_generate_cartesian_shepp_logan -m 128 -c 8``, readout
oversampling 2), each with complex k-space noise of 0.2 % and 0.5 % of max|k| (seed 0), under
fastMRI random masks 4× (centre 0.08) and 8× (centre 0.04; at least 10 columns), seed 0.
Each problem is written as a fastMRI file into ``OUT/data`` so that ``recon mri --input``
reruns it.

Ours: ``recon mri`` with nothing but ``--solver`` (its defaults: presets, prior, maps, noise
estimate), i.e. the zero-filled RSS, TV, and the default prior with its default solver (no
``--solver``: PnP-FISTA with ``ridge-mri``, ``recon.mri.DEFAULT_SOLVER``). BART: ``ecalib -m1
-c C -r W`` maps (W = the fully sampled centre; support crop C = 0.8, its default, or 0.5: its
default drops most of the object on the noisier files), then ``pics -S -i 100`` with TV
(``-R T:3:0:λ``) and L1-wavelet (``-R W:3:0:λ``) over ``BART_LAMBDAS`` (relative to its
scaling); its best (C, λ) by PSNR on the reference (an oracle choice, which favours BART).
fastMRI metrics on the recon-size crop.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SOURCES", "run_peer_sources", "peer_sources_table"]

SOURCES = ("bart", "ismrmrd")
NOISES = (0.002, 0.005)
MASKS = ((4.0, 0.08), (8.0, 0.04))
MIN_CENTRE = 10  # fully sampled centre columns at least (ESPIRiT and ecalib need a few)
BART_LAMBDAS = (0.001, 0.003, 0.01, 0.03, 0.1)
BART_ITERS = 100
BART_CROPS = (0.8, 0.5)
# None: no --solver, the default prior with its default solver (the "PnP" column)
OURS = ("zero-filled", "tv", None)
PNP = "pnp"


def _data(source: str, bart: str | None):
    from data.peer_mri import bart_phantom, ismrmrd_shepp_logan

    return bart_phantom(256, 8, bart) if source == "bart" else ismrmrd_shepp_logan(128, 8)


def _ours(path: Path, solver: str | None, accel: float, cf: float, seed: int) -> dict[str, Any]:
    """`recon mri --input path [--solver S] --accel A --center-fraction C` at its defaults;
    ``solver`` None: no --solver (the prior's default solver), the row's method "pnp"."""
    from data.fastmri import evaluate
    from recon import mri

    p = argparse.ArgumentParser()
    p.add_argument("--input")
    mri.add_options(p)
    argv = ["--input", str(path), "--accel", str(accel), "--center-fraction", str(cf),
            "--seed", str(seed), "--quiet"]  # fmt: skip
    ns = p.parse_args(argv + (["--solver", solver] if solver else []))
    k, ref, size, _, _ = mri.load_kspace(str(path), 0)  # fully sampled: written above
    t0 = time.perf_counter()
    r = mri.reconstruct_slice(ns, k, ref, size)
    seconds = time.perf_counter() - t0
    m = evaluate(r.reference, r.image)
    return {
        "method": solver or PNP,
        "solver": "pnp-fista" if r.record["params"].get("accelerated") else ns.solver,
        "prior": None if ns.solver in ("zero-filled", "tv") else str(ns.prior),
        "psnr": m["psnr"],
        "ssim": m["ssim"],
        "seconds": seconds,
        "iterations": r.record["iterations"],
        "params": {k2: v for k2, v in r.record["params"].items() if isinstance(v, int | float)},
        "coil_maps": r.info.get("coil_maps"),
        "mask": r.info["mask"],
    }


def _bart_rows(exe: str, work: Path, ku: np.ndarray, ref: np.ndarray, size, calib: int) -> dict:
    """BART's best (by PSNR) over its maps' support crop (``ecalib -c``: its default 0.8, and
    0.5, which noisy calibration data need) and λ, for pics TV and L1-wavelet."""
    from data.fastmri import center_crop, evaluate
    from recon.bench.peers import bart_calibration, run_bart
    from recon.peers_io import kspace_to_bart, read_cfl, write_cfl

    work.mkdir(parents=True, exist_ok=True)
    write_cfl(work / "ku", kspace_to_bart(ku))
    out: dict[str, Any] = {}
    r = str(bart_calibration(calib))
    for crop in BART_CROPS:
        maps = f"sens{crop}"
        t_ecalib = run_bart(exe, "ecalib", "-m1", "-c", str(crop), "-r", r, "ku", maps, cwd=work)
        for label, reg in (("BART pics TV", "T"), ("BART pics L1-wavelet", "W")):
            for lam in BART_LAMBDAS:
                sec = run_bart(
                    exe, "pics", "-S", "-i", str(BART_ITERS), "-R", f"{reg}:3:0:{lam}",
                    "ku", maps, "rec", cwd=work,
                )  # fmt: skip
                img = center_crop(np.abs(read_cfl(work / "rec")), size)
                run = {"lambda": lam, "crop": crop, "seconds": sec + t_ecalib, **evaluate(ref, img)}
                entry = out.setdefault(label, {"grid": []})
                entry["grid"].append({k: run[k] for k in ("lambda", "crop", "psnr")})
                if run["psnr"] > entry.get("psnr", -np.inf):
                    entry.update(run)
    return out


def run_peer_sources(args, out: Path, exe: str) -> list[dict[str, Any]]:
    """Every (source, noise, mask) problem: ours at defaults and BART's best λ; one row each."""
    from data.fastmri import read_fastmri
    from data.masks import fastmri_random_mask
    from data.peer_mri import write_peer_file
    from recon.mri import calibration_width

    rows = []
    data_dir = out / "data"
    sources = SOURCES if not args.quick else SOURCES[1:]
    for source in sources:
        try:
            data = _data(source, exe)
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"{source} skipped: {exc}", file=sys.stderr)
            rows.append({"source": source, "skipped": str(exc)})
            continue
        for noise in NOISES if not args.quick else NOISES[:1]:
            path = write_peer_file(data_dir / f"{source}_noise{noise}.h5", data, noise, args.seed)
            k = read_fastmri(path).kspace[0]  # BART gets the file ours reads
            for accel, cf in MASKS if not args.quick else MASKS[:1]:
                cf = max(cf, MIN_CENTRE / data.kspace.shape[-1])
                row: dict[str, Any] = {
                    "source": data.source, "file": str(path), "noise": noise,
                    "accel": accel, "center_fraction": cf, "ours": {},
                }  # fmt: skip
                for solver in OURS:
                    r = _ours(path, solver, accel, cf, args.seed)
                    row["ours"][r["method"]] = r
                    if not args.quiet:
                        print(f"{path.name} {accel:g}x {r['method']}: {r['psnr']:.2f} dB "
                              f"{r['seconds']:.1f} s", file=sys.stderr)  # fmt: skip
                w = data.kspace.shape[-1]
                mask = fastmri_random_mask(w, accel, cf, seed=args.seed)  # the mask ours used
                ku = k * mask[None, None, :]
                calib = calibration_width(np.broadcast_to(mask, k.shape[-2:]))
                tag = f"{source}_{noise}_{accel:g}"
                row["bart"] = _bart_rows(exe, out / "bart" / tag, ku, data.reference,
                                         data.recon_size, calib)  # fmt: skip
                rows.append(row)
    return rows


def peer_sources_table(rows: list[dict]) -> str:
    lines = [
        "## MRI on data other tools made: `recon mri` defaults against BART's best λ",
        "",
        "| data | noise | mask | zero-filled | ours TV | ours PnP (default) | BART TV "
        "| BART L1-wav | best BART − 0.5 ≤ ours? | seconds: TV / PnP / BART best |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    pnp_methods = set()
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['source']} | skipped: {r['skipped']} |||||||||")
            continue
        o = r["ours"]
        tv = o["tv"]
        pnp = o[PNP]
        pnp_methods.add(f"{pnp['solver']} + {pnp['prior']}")
        b = r["bart"]
        best = max(b.values(), key=lambda v: v["psnr"])
        bt, bw = b["BART pics TV"], b["BART pics L1-wavelet"]
        ok = "TV " + ("yes" if tv["psnr"] >= best["psnr"] - 0.5 else "no")
        ok += ", PnP " + ("yes" if pnp["psnr"] >= best["psnr"] - 0.5 else "no")
        lines.append(
            f"| {r['source'].split(' -')[0]} | {r['noise']:.1%} | {r['accel']:g}× "
            f"| {o['zero-filled']['psnr']:.2f} | {tv['psnr']:.2f} | {pnp['psnr']:.2f} "
            f"| {bt['psnr']:.2f} (λ {bt['lambda']:g}) | {bw['psnr']:.2f} (λ {bw['lambda']:g}) "
            f"| {ok} | {tv['seconds']:.1f} / {pnp['seconds']:.1f} / {best['seconds']:.1f} |"
        )
    if pnp_methods:
        used = ", ".join(f"`{m}`" for m in sorted(pnp_methods))
        lines += ["", f"PnP (default): `recon mri` without `--solver`, i.e. {used}."]
    return "\n".join(lines) + "\n"
