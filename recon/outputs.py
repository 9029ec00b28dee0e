"""Writing a reconstruction's outputs atomically: arrays, PNGs, JSON and figures.

Every file is written to a temporary name in the destination folder and moved into place with
``os.replace``, so a crash never leaves a half-written file under its final name.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_write",
    "start_outputs",
    "save_npy",
    "save_json",
    "save_png",
    "save_figure",
    "comparison_figure",
    "convergence_figure",
]


def prepare_out_dir(
    path: str | Path, option: str = "--out", inputs: tuple[str | Path, ...] = ()
) -> Path:
    """Check, before any work, that the output folder ``path`` can be created and written:
    ValueError naming the option and the folder when it is a file, lies under a file, is one of
    the input folders ``inputs`` (its outputs would mix with the scans and be read as input next
    time), or its nearest existing folder is not writable. Creates nothing (a run that fails
    later leaves no empty folder behind)."""
    out = Path(path)
    for spec in inputs:
        given = Path(spec)
        if not given.exists():
            continue
        if given.is_dir() and given.resolve() == out.resolve():
            raise ValueError(
                f"{option} {out}: the input folder itself; the outputs would mix with the scans "
                "and be read as input next time: give another folder"
            )
        if given.resolve().is_relative_to((out / "dicom").resolve()):
            raise ValueError(
                f"{option} {out}: its dicom/ folder holds the input {given}, and a run replaces "
                "OUT/dicom with the derived series: give another folder"
            )
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == out else f"lies under a file ({parent})"
                raise ValueError(f"{option} {out}: {what}; give a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"{option} {out}: cannot write in {parent} (permission or a "
                                 "read-only file system)")  # fmt: skip
            break
    return out


# outputs only some runs write: a volume's NIfTI and DICOM series, MRI's submission file
EXTRA_OUTPUTS = ("recon.nii.gz", "dicom", "reconstruction.h5")


def start_outputs(out: str | Path, writes: tuple[str, ...] | None = None) -> Path:
    """Call before a run writes its first file into ``out``: an older run's metrics.json goes
    first, so until the new one is written (last) the folder reads as incomplete instead of
    pairing old metrics with new files. With ``writes`` (the ``EXTRA_OUTPUTS`` this run will
    write), in a folder an earlier run finished (it holds metrics.json), that run's other extra
    outputs go too, so a slice run into a volume's folder leaves no stale recon.nii.gz beside
    its recon.npy; a ``dicom`` folder only when it holds nothing but the IM_NNNN.dcm files a
    run writes. Creates ``out``."""
    import re
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    had_run = (out / "metrics.json").is_file()  # a run's folder, not a folder of the user's
    (out / "metrics.json").unlink(missing_ok=True)
    for name in EXTRA_OUTPUTS if writes is not None and had_run else ():
        path = out / name
        if name in writes or not path.exists():
            continue
        if path.is_dir():
            if all(re.fullmatch(r"IM_\d{4}\.dcm", p.name) for p in path.iterdir()):
                shutil.rmtree(path)
        else:
            path.unlink()
    return out


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move tmp_path to ``path`` (same folder, so atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))

    return atomic_write(path, write)


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(jsonable(data), indent=1)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def save_png(path: str | Path, image: np.ndarray, lo: float, hi: float) -> Path:
    """Grayscale 8-bit PNG of ``image`` mapped linearly from [lo, hi] to [0, 255] (clipped)."""
    from PIL import Image

    scaled = np.clip((np.asarray(image, dtype=np.float64) - lo) / max(hi - lo, 1e-30), 0, 1)
    img = Image.fromarray((scaled * 255 + 0.5).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()))


def save_figure(path: str | Path, fig) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def comparison_figure(
    path: str | Path,
    panels: list[tuple[str, np.ndarray]],
    lo: float,
    hi: float,
    reference: np.ndarray | None = None,
) -> Path:
    """Side by side: each (title, image) in the display range [lo, hi]; plus |error| of the last
    panel against ``reference`` when given."""
    plt = pyplot()
    n = len(panels) + (reference is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4))
    axes = np.atleast_1d(axes)
    for ax, (title, img) in zip(axes, panels, strict=False):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    if reference is not None:
        err = np.abs(panels[-1][1] - reference)
        im = axes[-1].imshow(err, cmap="magma", vmin=0, vmax=max(0.1 * (hi - lo), 1e-30))
        axes[-1].set_title("|error| (0 to 10% of range)", fontsize=9)
        axes[-1].axis("off")
        fig.colorbar(im, ax=axes[-1], fraction=0.046)
    fig.tight_layout()
    return save_figure(path, fig)


def convergence_figure(path: str | Path, history: dict[str, list], title: str = "") -> Path:
    """Relative change (log), objective when recorded, and PSNR per iteration."""
    plt = pyplot()
    it = history.get("iteration") or list(range(1, len(history.get("rel_change", [])) + 1))
    panels = [("rel_change", "relative change ||x⁺−x||/||x||", True)]
    if any(v is not None for v in history.get("objective", []) or []):
        panels.append(("objective", "objective (monitored)", False))
    if history.get("psnr"):
        panels.append(("psnr", "PSNR (dB)", False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3))
    axes = np.atleast_1d(axes)
    for ax, (key, label, log) in zip(axes, panels, strict=True):
        vals = history.get(key) or []
        pts = [(i, v) for i, v in zip(it, vals, strict=False) if v is not None and np.isfinite(v)]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, ".-" if len(pts) < 60 else "-")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(path, fig)


def write_outputs(
    out: Path,
    rec: np.ndarray,
    ref: np.ndarray | None,
    baseline: tuple[str, np.ndarray],
    metrics: dict,
    history: dict,
    label: str,
    display: tuple[float, float],
    volume: np.ndarray | None = None,
) -> None:
    """The output contract of a reconstruction run (see the README), each file atomic;
    metrics.json last, so its presence means the run's files are complete. ``rec`` is the
    image shown; recon.npy holds ``volume`` (S, h, w) instead when given (a whole file)."""
    out = Path(out)
    lo, hi = display
    start_outputs(out)  # no-op when the caller already started writing other files
    save_npy(out / "recon.npy", (rec if volume is None else volume).astype(np.float32))
    # HU images keep their sign (air is −1000 HU, shown dark); a complex image its magnitude
    save_png(out / "recon.png", np.abs(rec) if np.iscomplexobj(rec) else rec, lo, hi)
    save_json(out / "history.json", history)
    convergence_figure(out / "convergence.png", history, label)
    name, base = baseline
    panels = [] if ref is None else [("reference", ref)]
    b = metrics.get("baseline", {}).get("psnr")
    p = metrics.get("psnr")
    shown = next(
        (r for r in metrics.get("slices", []) if r.get("slice") == metrics.get("shown_slice")),
        None,
    )
    if volume is not None and shown is not None:  # the slice shown, and the volume's figure
        sb = shown.get("fbp_psnr")
        b_text = (f"{sb:.2f} dB, " if sb is not None else "") + (
            f"volume {b:.2f} dB" if b is not None else ""
        )
        p_text = (f"{shown['psnr']:.2f} dB, " if "psnr" in shown else "") + (
            f"volume {p:.2f} dB" if p is not None else ""
        )
        panels.append((f"{name} ({b_text})" if b is not None else name, base))
        panels.append((f"{label} ({p_text})" if p is not None else label, rec))
    else:
        panels.append((f"{name} {b:.2f} dB" if b is not None else name, base))
        panels.append((f"{label} {p:.2f} dB" if p is not None else label, rec))
    comparison_figure(out / "comparison.png", panels, lo, hi, reference=ref)
    save_json(out / "metrics.json", metrics)
