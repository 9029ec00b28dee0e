"""`recon ct --input SERIES_FOLDER|VOLUME.nrrd`: every slice of a DICOM series or an NRRD volume
(or ``--slice K|A:B``).

Slices are simulated and reconstructed one after the other in the series' order, each starting
from its neighbour's result (the previous slice in that order; the first from its FBP), with one
progress bar over the slices. The noise of slice k is seeded by ``--seed`` + k, so a slice's
result does not depend on which slices run with it.

Resumable: each finished slice is saved at once (atomically) under ``OUT/.slices/`` with a
digest of the options that made it, its image and those of the slices before it in the run (its
warm starts); a killed run, rerun with the same command, reloads those slices (and the last
one's result as the next warm start, so it ends bit-identical to an uninterrupted run) and
redoes none of them. Slices saved with other options, from other images (a folder changed
since) or after other slices (another ``--slice`` start) are redone.

Writes into ``--out`` (metrics.json last; the per-slice cache goes once everything is written):
recon.npy (S, H, W) in HU, recon.nii.gz (NIfTI, the affine from the DICOM geometry: see
``data.nifti.dicom_affine``), dicom/IM_0001.dcm ... (a new derived series: ``data.dicom_write``),
recon.png, comparison.png, convergence.png and history.json of the middle slice, and
metrics.json: PSNR over the volume (data range of the reference volume), SSIM and NMSE averaged
over slices, the same for FBP, and one row per slice.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recon.ct import (
    CTSliceRecon,
    check_image_size,
    ct_operator,
    display_record,
    method_label,
    parse_window,
    read_ct_volume,
    reconstruct_slice,
    run_metrics,
)
from recon.outputs import atomic_write, jsonable, start_outputs, write_outputs
from recon.pipeline import image_metrics, load_presets, unusable_slices, warn_about_run

__all__ = ["reconstruct_series", "CACHE", "volume_metrics"]

CACHE = ".slices"
# options that do not change a slice's result
_NEUTRAL = {"out", "quiet", "threads", "window", "slice", "debug", "func", "command", "given"}


def _digest(args: argparse.Namespace) -> str:
    """A fingerprint of the options a slice's result depends on (``--config`` by its contents),
    as `recon batch` fingerprints a scan's options."""
    from recon.batch.plan import options_digest

    opts = {k: v for k, v in vars(args).items() if k not in _NEUTRAL and not callable(v)}
    if opts.get("config"):  # the file's contents, not its name
        path = Path(opts["config"])
        opts["config"] = path.read_text() if path.is_file() else str(path)
    return options_digest("ct", opts)


def _chain_digest(previous: str, index: int, image: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of the previous slice's chain digest, this slice's index and its
    pixels: what a cached slice's result depends on (options, its image, its warm starts)."""
    import hashlib

    h = hashlib.sha256(f"{previous}:{index}:{image.shape}".encode())
    h.update(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def _cache_path(out: Path, index: int) -> Path:
    return out / CACHE / f"slice_{index:05d}.npz"


def _save_slice(path: Path, r: CTSliceRecon, row: dict, digest: str) -> None:
    """One finished slice: the images, the warm start for the next, its metrics row and its
    per-iteration history (the middle slice's is the run's history.json)."""
    meta = {"row": row, "record": r.record, "noise": r.noise, "digest": digest}
    meta["history"] = jsonable(r.history)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                image=r.image,
                fbp=r.fbp,
                internal=r.internal.cpu().numpy(),
                meta=np.frombuffer(json.dumps(meta, default=float).encode(), dtype=np.uint8),
            )

    atomic_write(path, write)


def _load_slice(path: Path, digest: str) -> tuple[CTSliceRecon, dict] | None:
    """A saved slice made with the same options, or None (absent, other options, unreadable)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("digest") != digest:
                return None
            r = CTSliceRecon(
                image=z["image"],
                fbp=z["fbp"],
                internal=torch.from_numpy(z["internal"]),
                record=meta["record"],
                history=meta.get("history") or {},
                seconds=float(meta["row"]["seconds"]),
                fbp_seconds=float(meta["row"]["fbp_seconds"]),
                noise=meta["noise"],
            )
    except (OSError, ValueError, KeyError):
        return None
    return r, meta["row"]


def volume_metrics(rec: np.ndarray, ref: np.ndarray) -> dict:
    """PSNR over the volume (S, H, W) with the reference volume's data range; SSIM and NMSE
    averaged over slices with that same range."""
    drange = float(ref.max() - ref.min())
    err = float(np.mean((rec.astype(np.float64) - ref.astype(np.float64)) ** 2))
    per = [image_metrics(a, b, drange) for a, b in zip(rec, ref, strict=True)]
    return {
        "psnr": float(10 * np.log10(drange**2 / err)) if err > 0 else float("inf"),
        "ssim": float(np.mean([m["ssim"] for m in per])),
        "nmse": float(np.mean([m["nmse"] for m in per])),
        "data_range": drange,
    }


def reconstruct_series(args: argparse.Namespace, out: Path) -> dict:
    """Reconstruct the slices ``args.slice`` selects (default all) of the DICOM series folder
    or NRRD volume ``args.input`` (see the module docstring); returns metrics.json's contents."""
    import warnings

    from data.dicom import uneven_spacing_warning
    from data.dicom_write import write_dicom_series
    from data.nifti import dicom_affine, write_nifti_volume
    from recon.mri import parse_slices

    path = Path(args.input)
    said: list = []
    try:
        with warnings.catch_warnings(record=True) as said:  # kept in metrics.json, and shown
            warnings.simplefilter("always")
            vol = read_ct_volume(path)
    finally:  # shown before a refusal too (a skipped localizer, then the odd slice named)
        for w in said:
            warnings.warn(str(w.message), w.category, stacklevel=2)
    check_image_size(path, vol.hu.shape, "slices")
    slices = parse_slices(args.slice, len(vol.hu), path)
    # the spacing of the slices written (recon.nii.gz's affine takes their mean step)
    where = str(path) if args.slice in (None, "all") else f"{path} --slice {args.slice}"
    uneven = uneven_spacing_warning(where, vol, slices)
    if uneven is not None:
        warnings.warn(uneven, stacklevel=2)
    pixel = float(vol.pixel_spacing[0])
    if not np.isclose(vol.pixel_spacing[0], vol.pixel_spacing[1], rtol=1e-3):
        warnings.warn(
            f"--input {path}: pixels of {vol.pixel_spacing[0]:.4g} × {vol.pixel_spacing[1]:.4g} "
            f"mm; the projector takes square pixels of {pixel:.4g} mm, so line integrals and "
            "--photons noise are off along the columns (the output geometry keeps both)",
            stacklevel=2,
        )
    op = ct_operator(args, vol.hu.shape[1:], pixel)
    presets = load_presets("ct", args.config)
    digest = _digest(args)
    out = Path(out)
    results: list[CTSliceRecon] = []
    rows: list[dict] = []
    start = None
    reused = 0
    bar = None
    if not args.quiet:
        from solvers.progress import progress_bar

        bar = progress_bar(total=len(slices), desc=f"CT {method_label(args)}", unit="slice",
                   file=sys.stderr)  # fmt: skip
    t0 = time.perf_counter()
    chain = digest
    for index in slices:
        ref = vol.hu[index]
        # a slice is reused only if it, and every slice before it in this run (its warm starts),
        # is the same image at the same index: a folder changed since, or another --slice
        # start, recomputes it
        chain = _chain_digest(chain, index, ref)
        saved = _load_slice(_cache_path(out, index), chain)
        if saved is not None:
            r, row = saved
            reused += 1
        else:
            quiet, args.quiet = args.quiet, True  # one bar over the slices, not one per slice
            try:
                r = reconstruct_slice(args, ref, "HU", op, presets, args.seed + index, start=start)
            finally:
                args.quiet = quiet
            drange = float(ref.max() - ref.min())
            row = {"slice": index, **image_metrics(r.image, ref, drange)}
            row["fbp_psnr"] = image_metrics(r.fbp, ref, drange)["psnr"]
            row.update(
                iterations=r.record["iterations"],
                seconds=r.seconds,
                fbp_seconds=r.fbp_seconds,
                stop_reason=r.record["stop_reason"],
            )
            warn_about_run(r.record, r.history, row, where=f"slice {index}: ")
            _save_slice(_cache_path(out, index), r, row, chain)
        results.append(r)
        rows.append(row)
        start = None if "unusable" in row else r.internal  # a bad slice starts no neighbour
        if bar is not None:
            bar.set_postfix_str(f"slice {index}: {row['psnr']:.2f} dB")
            bar.update(1)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0

    volume = np.stack([r.image for r in results])
    fbp = np.stack([r.fbp for r in results])
    refs = vol.hu[slices]
    metrics = volume_metrics(volume, refs)
    mid_n = len(slices) // 2
    mid = results[mid_n]
    metrics.update(run_metrics(args, mid.record, op, "HU", f"{path}[{slices[0]}:{slices[-1] + 1}]"))
    metrics.update(
        iterations=int(sum(r["iterations"] for r in rows)),
        seconds=float(sum(r["seconds"] for r in rows)),
        converged=all(r.record["converged"] for r in results),
        stop_reason=mid.record["stop_reason"] if len(slices) == 1 else "see slices",
        baseline={"name": "fbp", **volume_metrics(fbp, refs),
                  "seconds": float(sum(r["fbp_seconds"] for r in rows))},
        noise={**mid.noise, "seed": f"--seed + slice index ({args.seed} + k)"},
        slices=rows,
        shown_slice=slices[mid_n],
        resumed_slices=reused,
        wall_seconds=wall,
        slices_per_minute=60.0 * len(slices) / wall if wall > 0 else None,
    )  # fmt: skip
    bad = unusable_slices(rows)
    if bad is not None:
        metrics["unusable"] = bad
    said_here = [str(w.message) for w in said] + ([uneven] if uneven is not None else [])
    if said_here:  # what reading the series said (a gap, duplicates, skipped objects): kept
        metrics["input_warnings"] = said_here
    positions = [vol.patient_positions[k] for k in slices] if vol.patient_positions else None
    start_outputs(out, writes=("recon.nii.gz", "dicom"))  # metrics.json first, then stale
    write_nifti_volume(
        out / "recon.nii.gz",
        volume,
        dicom_affine(positions, vol.orientation, vol.pixel_spacing, vol.thickness),
    )
    label = method_label(args)
    display = parse_window(args.window, refs[mid_n], "HU")  # the PNGs', and the DICOM's window
    write_dicom_series(
        out / "dicom",
        volume,
        [vol.paths[k] for k in slices] if vol.paths else None,
        pixel_spacing=vol.pixel_spacing,
        positions=positions,
        orientation=vol.orientation,
        thickness=vol.thickness,
        description=f"recon ct {label}: {args.views} views {args.geometry}, simulated from the "
        f"source series (noise: {json.dumps(mid.noise)})",
        series_description=f"recon {label}",
        window=((display[0] + display[1]) / 2, display[1] - display[0]),
    )
    metrics["display"] = display_record(args.window, display, "HU")
    write_outputs(
        out, mid.image, refs[mid_n], ("FBP", mid.fbp), metrics, mid.history,
        f"CT {label}, slice {slices[mid_n]}", display, volume=volume,
    )  # fmt: skip
    shutil.rmtree(out / CACHE, ignore_errors=True)
    if not args.quiet:
        done = f" ({reused} resumed)" if reused else ""
        n = f"{len(slices)} slice{'s' * (len(slices) != 1)}"
        print(
            f"{label}: {n}{done}, PSNR {metrics['psnr']:.2f} dB over the volume, "
            f"SSIM {metrics['ssim']:.4f} (FBP {metrics['baseline']['psnr']:.2f} dB), "
            f"{metrics['slices_per_minute']:.1f} slices/min -> {out}/"
        )
    return metrics
