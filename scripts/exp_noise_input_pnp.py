"""Experiment: PnP-ADMM (60 parallel views, 1 % noise, 40 iterations) with the noise-level-input
AE-LPN of ``scripts/exp_noise_input_aelpn.py`` (weights from its ``--save``), told
σ = s · data_range, over s and rho_rel, on the real CT validation windows (``val``) or the
bundled test slice (``test``). One JSON line per (s, rho_rel).

    .venv/bin/python scripts/exp_noise_input_pnp.py runs/noise-input-ct.safetensors \\
        val 0.05,0.1 0.01,0.03
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from recon.tune_problems import build_case, ct_real_validation_scans, ct_test_scans
from solvers import pnp_admm


def main() -> None:
    weights, on, s_list, rho_list = sys.argv[1:5]
    torch.set_num_threads(1)
    path = Path(__file__).with_name("exp_noise_input_aelpn.py")
    spec = importlib.util.spec_from_file_location("exp_noise_input_aelpn", path)
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    model = exp.NoiseInputAELPN(width=32, levels=3, depth=2)
    model.load_state_dict(load_file(weights))
    model.eval()
    scans = ct_real_validation_scans() if on == "val" else ct_test_scans(n_phantoms=0)
    cases = [build_case("ct-par60", s, seed=0) for s in scans]
    for s_rel in (float(v) for v in s_list.split(",")):
        for rho_rel in (float(v) for v in rho_list.split(",")):
            t0, psnrs = time.perf_counter(), []
            for c in cases:
                model.noise_level = s_rel * float(c.data_range)
                res = pnp_admm(
                    c.op, c.y, model, lam=1.0, rho=rho_rel * c.op.norm_sq(), cg_iters=10,
                    cg_tol=1e-6, iters=40, tol=1e-5, x0=c.x0, reference=c.reference,
                    data_range=c.data_range, progress=False, objective_every=0,
                )  # fmt: skip
                psnrs.append(c.metrics(res.x)["psnr"])
            row = {
                "on": on,
                "s": s_rel,
                "rho_rel": rho_rel,
                "psnr": round(float(np.mean(psnrs)), 3),
            }
            row.update(per_scan=[round(v, 2) for v in psnrs])
            row.update(seconds=round(time.perf_counter() - t0, 1))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
