"""Experiment: an AE-LPN told the noise level. ψ(x; σ) = ½xᵀ(I − Q²)x + Σ_p h_p(Qx, σ·1)² +
α/2·||Qx||², with h the usual bias-free ICNN given the constant image σ·1 as a second input
channel (and the local mean split of ``ConvLPN(local_mean_sigma=8)``).

* For a fixed σ, ψ(·; σ) is convex in x (the σ channel enters the x-path, a linear map), so
  f(·; σ) = ∇ₓψ is exactly a prox.
* ψ is 2-homogeneous in (x, σ) jointly and Q kills constants, so f(a·x + b; a·σ) =
  a·f(x; σ) + b exactly (printed as a check, float64).
* At the training σ the σ channel acts like a bias, as in the LPN; joint homogeneity then carries
  the prox to every other σ (f(x; σ) = (σ/σ₀)·f(σ₀·x/σ; σ₀)). The normalization trick instead
  divides by the noisy image's std, blind.

Trains on natural images at σ = 0.1 with the benchmark's budget (as
``scripts/train_natural_models.sh``) and prints ``recon bench denoise``'s PSNRs, with the true σ
given to the model (the normalization trick is not told σ: this model gets more information).

    .venv/bin/python scripts/exp_noise_input_aelpn.py --steps 800
    .venv/bin/python scripts/exp_noise_input_aelpn.py --steps 800 --data ct-real  # CT windows
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from data.natural import VAL_IMAGES, center_crops, natural_images
from priors.lpn import ConvLPN
from priors.training import TrainConfig, train_prior
from recon.bench_denoise import SCALES, SIGMAS, _denoise_scores
from recon.train import make_sampler


class NoiseInputAELPN(ConvLPN):
    """AE-LPN with the noise level as a second input channel; set ``noise_level`` before prox."""

    def __init__(self, noise_level: float = 0.1, **kwargs) -> None:
        super().__init__(kind="aelpn", in_channels=2, local_mean_sigma=8.0, **kwargs)
        self.noise_level = noise_level

    def _net_input(self, u: torch.Tensor) -> torch.Tensor:  # u (B, 1, H, W) -> [u, σ·1]
        s = torch.as_tensor(self.noise_level, dtype=u.dtype, device=u.device)
        return torch.cat([u, s.reshape(-1, 1, 1, 1).expand_as(u)], 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--data", default="natural", help="recon train's --data (natural, ct-real)")
    ap.add_argument("--save", default=None, help="write the trained weights (safetensors) here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = NoiseInputAELPN(width=32, levels=3, depth=2)
    check = model.double().eval()
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    check.noise_level = 0.1
    fx = check.prox(x)
    check.noise_level = 0.7
    err = (check.prox(7 * x - 3) - (7 * fx - 3)).norm() / fx.norm()
    print(f"equivariance error f(7x - 3; 7σ) vs 7 f(x; σ) - 3 (float64): {float(err):.1e}")
    model = model.float().train()
    model.noise_level = 0.1
    sampler, val, _ = make_sampler(args.data, 48, 1)
    cfg = TrainConfig(sigma=0.1, steps=args.steps, batch=8, gamma_unit=0.08, seed=0)
    t0 = time.perf_counter()
    res = train_prior(model, sampler, cfg, val=val, progress=False)
    m = res.model.eval()
    if args.save:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, args.save)
    if args.data != "natural":  # CT: one prox of the real validation windows (probe's --denoise)
        from recon.tune_problems import ct_real_validation_scans

        ct = {}
        for sigma in (0.05, 0.1, 0.2):
            m.noise_level = sigma
            psnrs = []
            for i, scan in enumerate(ct_real_validation_scans()):
                x = torch.as_tensor(scan.image, dtype=torch.float32)[None, None]
                x = (x - x.min()) / (x.max() - x.min())
                gen = torch.Generator().manual_seed(i)
                y = m.prox(x + sigma * torch.randn(x.shape, generator=gen))
                psnrs.append(-10 * float(torch.log10((y - x).pow(2).mean())))
            ct[str(sigma)] = round(sum(psnrs) / len(psnrs), 2)
        print(json.dumps({"train_seconds": round(time.perf_counter() - t0), "ct_val_denoise": ct}))
        return
    clean = center_crops(natural_images(VAL_IMAGES), 128)
    noise = {}
    for i, sigma in enumerate(SIGMAS):  # the benchmark's seeds; the model is told σ
        m.noise_level = sigma
        noise[str(sigma)] = round(_denoise_scores(m, clean, sigma, 100 + i)[0], 2)
    m.noise_level = 0.1  # the affine sweep adds σ = 0.1 to x' = a·x + b
    affine = {}
    for a in SCALES:
        for mode, b in (("darken", 0.0), ("brighten", 1.0 - a)):
            affine[f"{mode}:{a}"] = round(_denoise_scores(m, a * clean + b, 0.1, 7)[0], 2)
    out = {
        "train_seconds": round(time.perf_counter() - t0),
        "val_psnr": [round(v, 2) for v in res.history["val_psnr"]],
        "denoise_psnr": noise,
        "affine_psnr": affine,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
