"""DeepInverse side of `recon bench peers --ct`: TV-ADMM over a small (λ, stepsize) grid.

Runs in DeepInverse's own interpreter (a separate virtualenv), never imported by pnp-recon.
It reads ``config.json`` and ``.npy`` files from a work folder and writes ``results.json`` and
``best.npy`` there (each written to a temporary name and renamed, so a half-written file never
appears under its final name).

Modes (``config["mode"]``):

* ``shared``: the measurements y come from pnp-recon's ASTRA operator, whose sparse system
  matrix is given (``A.npz``: CSR data/indices/indptr/shape); DeepInverse's TV-ADMM runs on a
  ``LinearPhysics`` built from that matrix, so both toolkits solve the same discrete problem.
* ``own``: DeepInverse simulates its own data with its ``Tomography`` operator (same image, same
  60 views over 180°, Gaussian noise with std = rel · max|y| from a seeded torch generator) and
  reconstructs with it.

In both modes the operator is normalized to unit norm (DeepInverse's ``normalize=True``; for the
shared matrix A/||A|| and y/||A||), so one (λ, stepsize) grid serves both. The objective is
½||Ax − y||² + λ·TV(x) (DeepInverse's L2 and TVPrior with their defaults), ADMM from DeepInverse's
default start Aᵀy. Per iteration it records PSNR (DeepInverse's metric, max pixel 1) and a
timestamp (a custom metric), so the time to reach a given PSNR is measured, not estimated.

    python scripts/peers/deepinv_ct.py WORKDIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _shared_physics(work: Path, cfg: dict):
    import deepinv as dinv

    z = np.load(work / cfg["matrix"])
    shape = tuple(int(s) for s in z["shape"])
    scale = 1.0 / np.sqrt(float(cfg["norm_sq"]))
    mat = torch.sparse_csr_tensor(
        torch.from_numpy(z["indptr"].astype(np.int64)),
        torch.from_numpy(z["indices"].astype(np.int64)),
        torch.from_numpy(z["data"].astype(np.float32) * np.float32(scale)),
        size=shape,
    )
    mat_t = mat.to_sparse_coo().t().to_sparse_csr()
    h, w = cfg["image_shape"]
    sino_shape = tuple(cfg["sino_shape"])

    def fwd(x, **kwargs):
        flat = x.reshape(x.shape[0], -1).T  # (N, B)
        return (mat @ flat).T.reshape(x.shape[0], 1, *sino_shape)

    def adj(y, **kwargs):
        flat = y.reshape(y.shape[0], -1).T
        return (mat_t @ flat).T.reshape(y.shape[0], 1, h, w)

    physics = dinv.physics.LinearPhysics(A=fwd, A_adjoint=adj)
    y = torch.from_numpy(np.load(work / cfg["y"]).astype(np.float32) * np.float32(scale))
    return physics, y.reshape(1, 1, *sino_shape)


def _own_physics(x: torch.Tensor, cfg: dict):
    import deepinv as dinv

    physics = dinv.physics.Tomography(
        angles=int(cfg["views"]), img_width=x.shape[-1], circle=False, normalize=True
    )
    clean = physics.A(x)
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    n = torch.randn(clean.shape, generator=gen, dtype=torch.float64).to(clean.dtype)
    y = clean + float(cfg["noise_rel"]) * clean.abs().max() * n
    return physics, y


def _run(physics, y, x_gt, lam: float, step: float, iters: int) -> tuple[torch.Tensor, dict]:
    import deepinv as dinv

    t0 = [0.0]
    model = dinv.optim.optim_builder(
        iteration="ADMM",
        prior=dinv.optim.TVPrior(),
        data_fidelity=dinv.optim.L2(),
        max_iter=iters,
        early_stop=False,
        params_algo={"stepsize": step, "lambda": lam},
        custom_metrics={"clock": lambda hist, x_prev, x: time.perf_counter() - t0[0]},
    )
    t0[0] = time.perf_counter()
    x, metrics = model(y, physics, x_gt=x_gt, compute_metrics=True)
    total = time.perf_counter() - t0[0]
    psnr = [float(v) for v in metrics["psnr"][0][1:]]  # [0] is the start
    return x, {"psnr": psnr, "seconds": [float(v) for v in metrics["clock"][0]], "total": total}


def main(work: Path) -> int:
    import deepinv as dinv

    cfg = json.loads((work / "config.json").read_text())
    torch.set_num_threads(int(cfg.get("threads", 1)))
    x_gt = torch.from_numpy(np.load(work / cfg["image"]).astype(np.float32))[None, None]
    if cfg["mode"] == "shared":
        physics, y = _shared_physics(work, cfg)
    elif cfg["mode"] == "own":
        physics, y = _own_physics(x_gt, cfg)
    else:
        raise SystemExit(f"unknown mode {cfg['mode']!r} (shared, own)")
    runs, best, best_x = [], None, None
    total = len(cfg["lambdas"]) * len(cfg["stepsizes"])
    for lam in cfg["lambdas"]:
        for step in cfg["stepsizes"]:
            x, rec = _run(physics, y, x_gt, float(lam), float(step), int(cfg["iters"]))
            rec.update(lam=float(lam), stepsize=float(step))
            runs.append(rec)
            final = rec["psnr"][-1]
            print(
                f"[{len(runs)}/{total}] lambda={lam} stepsize={step}: {final:.2f} dB, "
                f"{rec['total']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            if np.isfinite(final) and (best is None or final > runs[best]["psnr"][-1]):
                best, best_x = len(runs) - 1, x
    out = {
        "mode": cfg["mode"],
        "deepinv": dinv.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "runs": runs,
        "best": best,
    }
    if best_x is not None:
        arr = best_x[0, 0].detach().cpu().numpy().astype(np.float32)

        def save(path: Path) -> None:
            with open(path, "wb") as f:
                np.save(f, arr)

        _atomic(work / "best.npy", save)
    _atomic(work / "results.json", lambda p: p.write_text(json.dumps(out)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: deepinv_ct.py WORKDIR")
    raise SystemExit(main(Path(sys.argv[1])))
