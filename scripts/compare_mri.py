"""Compare zero-filled, TV-ADMM and PnP-ADMM with the shipped MRI priors on one fastMRI-format file,
each learned/TV method over a small grid of its strength parameter; prints a markdown table.

    .venv/bin/python scripts/compare_mri.py   # synthetic file from the bundled slice
    .venv/bin/python scripts/compare_mri.py --input file.h5 --slice 10 --accel 8

With no --input it first writes the synthetic multi-coil file (8 coils, birdcage maps, smooth
random phase) that `data.fastmri.make_synthetic_fastmri` makes from the bundled held-out brain
slice, then reconstructs it through `recon mri` (4x fastMRI random mask, centre fraction 0.08 by
default). As in scripts/compare_ct.py, the grid is evaluated on the image it reports on (an
oracle choice for every method alike); `recon tune mri` chooses parameters on separate images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

GRIDS = {  # around the tuned presets (recon/presets/mri.json)
    "tv": ("weight_rel", (0.005, 0.0137, 0.03)),
    "aelpn-mri": ("rho_rel", (1e-4, 3e-4, 1e-3)),
    "lpn-mri": ("rho_rel", (1e-4, 3e-4, 1e-3)),
}
# a non-equivariant prior gets the normalization it needs (image max ~1, as in training)
NORMALIZE = {"lpn-mri": "max"}


def _run(common: list[str], extra: list[str], cfg: dict | None, work: Path, tag: str) -> dict:
    out = work / tag
    cmd = [sys.executable, "-m", "recon.cli", "mri", *common, *extra, "--quiet", "--out", str(out)]
    if cfg is not None:
        path = work / f"{tag}.json"
        path.write_text(json.dumps(cfg))
        cmd += ["--config", str(path)]
    subprocess.run(cmd, check=True)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=None, help="fastMRI .h5 (default: the synthetic file)")
    ap.add_argument("--slice", type=int, default=None)
    ap.add_argument("--mask", default="random")
    ap.add_argument("--accel", type=float, default=4.0)
    ap.add_argument("--center-fraction", type=float, default=0.08)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--priors", default="aelpn-mri,lpn-mri")
    args = ap.parse_args()
    from priors.checkpoint import shipped_priors
    from recon.pipeline import load_presets

    work = Path(tempfile.mkdtemp(prefix="compare-mri-"))
    src = args.input
    if src is None:
        import numpy as np

        from data.bundled import load_bundled
        from data.fastmri import make_synthetic_fastmri

        img = np.asarray(load_bundled("brain-t1"), dtype=np.float32)
        src = str(make_synthetic_fastmri(work / "synthetic_brain.h5", img[None], n_coils=8))
    common = ["--input", src, "--mask", args.mask, "--accel", str(args.accel)]
    common += ["--center-fraction", str(args.center_fraction)]
    if args.slice is not None:
        common += ["--slice", str(args.slice)]
    presets = load_presets("mri")
    zf = _run(common, ["--solver", "zero-filled"], None, work, "zf")
    rows = [("zero-filled", "-", zf)]
    shipped = shipped_priors()
    for method in ["tv", *args.priors.split(",")]:
        if method != "tv" and method not in shipped:
            print(f"(skipping {method}: not shipped)", file=sys.stderr)
            continue
        key, grid = GRIDS.get(method, GRIDS["aelpn-mri"])
        best = None
        for v in grid:
            cfg = json.loads(json.dumps(presets))
            solver = "tv" if method == "tv" else "pnp-admm"
            cfg[solver][key] = v
            cfg[solver]["iters"] = 2 * args.iters if method == "tv" else args.iters
            extra = ["--solver", solver] + ([] if method == "tv" else ["--prior", method])
            extra += ["--normalize", NORMALIZE.get(method, "none")]
            m = _run(common, extra, cfg, work, f"{method}-{v}")
            if best is None or m["psnr"] > best[2]["psnr"]:
                norm = " (--normalize max)" if method in NORMALIZE else ""
                best = (method, f"{key}={v}{norm}", m)
        rows.append(best)
    print(f"{src}: {args.mask} mask, {args.accel}x, centre fraction {args.center_fraction}")
    print("| method | best setting | PSNR (dB) | SSIM | NMSE | iterations | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, setting, m in rows:
        print(
            f"| {name} | {setting} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['nmse']:.4f} "
            f"| {m['iterations']} | {m['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
