"""Experiment (negative, see docs/results/denoise-variants.md): an AE-LPN whose every z-path
pre-activation also gets c·s(u), with s the RMS of the mean-free input u and c ≥ 0 per channel.
With the smooth activation, the features become max(|l|, a + c·s): thresholds relative to the
image's global scale, which is what the normalization trick's division by the std gives its
inner LPN. s is convex and 1-homogeneous and c is nonnegative, so ψ stays convex and f stays
exactly affine-equivariant (printed as a check).

    .venv/bin/python scripts/exp_global_scale_aelpn.py --init 0.0 --steps 800

Trains on natural images at σ = 0.1 like ``scripts/train_natural_models.sh`` and prints the
denoising PSNRs of ``recon bench denoise`` (σ = 0.05 … 0.5).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from data.natural import VAL_IMAGES, center_crops, natural_images
from priors.icnn import ConvICNN, _activate
from priors.lpn import ConvLPN
from priors.training import TrainConfig, train_prior
from recon.bench_denoise import noise_and_affine_scores
from recon.train import make_sampler


class NonnegScale(nn.Module):
    """c·s per channel, c ≥ 0 (clamped with the other z-path weights)."""

    nonneg = True

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), init))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.weight.view(1, -1, 1, 1) * s


class GlobalScaleICNN(ConvICNN):
    """``ConvICNN`` (nearest upsampling, smooth activation) plus c·s(u) in every z-path layer."""

    def __init__(self, *args, init: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gs = nn.ModuleDict({"first": NonnegScale(self.first.out_channels // 2, init)})
        for s, zs in enumerate(self.enc_z):
            for i, zc in enumerate(zs):
                self.gs[f"e{s}_{i}"] = NonnegScale(zc.out_channels, init)
        for k, up in enumerate(self.dec_up):
            self.gs[f"d{k}"] = NonnegScale(up.out_channels, init)
        self.gs["out"] = NonnegScale(self.out_z.out_channels, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sc = x.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()  # convex, 1-homogeneous
        xs = [x]
        for _ in range(1, self.levels):
            xs.append(F.avg_pool2d(xs[-1], 2))
        z = _activate(self.act, self.gs["first"](sc), self.first(x))
        skips = []
        for s in range(self.levels):
            for i, (zc, xc) in enumerate(zip(self.enc_z[s], self.enc_x[s], strict=True)):
                z = _activate(self.act, zc(z) + self.gs[f"e{s}_{i}"](sc), xc(xs[s]))
            skips.append(z)
        for k, s in enumerate(range(self.levels - 2, -1, -1)):
            up = F.interpolate(z, scale_factor=2, mode="nearest")
            zsum = self.dec_up[k](up) + self.dec_skip[k](skips[s]) + self.gs[f"d{k}"](sc)
            z = _activate(self.act, zsum, self.dec_x[k](xs[s]))
        zout = self.out_z(z) + self.gs["out"](sc)
        return _activate(self.out_act, zout, self.out_x(x))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", type=float, default=0.0, help="initial c")
    ap.add_argument("--steps", type=int, default=800)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ConvLPN(kind="aelpn", width=32, levels=3, depth=2)
    model.net = GlobalScaleICNN(1, 32, 3, 2, 3, "smooth", False, "smooth_pos", init=args.init)
    check = model.double().eval()
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    err = (check.prox(7 * x - 3) - (7 * check.prox(x) - 3)).norm() / check.prox(x).norm()
    print(f"affine equivariance error (float64): {float(err):.1e}")
    model = model.float().train()
    sampler, val, _ = make_sampler("natural", 48, 1)
    cfg = TrainConfig(sigma=0.1, steps=args.steps, batch=8, gamma_unit=0.08, seed=0)
    t0 = time.perf_counter()
    res = train_prior(model, sampler, cfg, val=val, progress=False)
    clean = center_crops(natural_images(VAL_IMAGES), 128)
    scores = noise_and_affine_scores(res.model.eval(), clean)["noise"]
    print(
        json.dumps(
            {
                "train_seconds": round(time.perf_counter() - t0),
                "val_psnr": [round(v, 2) for v in res.history["val_psnr"]],
                "denoise_psnr": {s: round(v[0], 2) for s, v in scores.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
