"""`recon bench denoise` on small crops: the PSNR it reports against a known answer (a prior whose
prox is the identity returns the noisy image), and what a prior that takes σ is told."""

from __future__ import annotations

import json
import math

import pytest
import torch

from data.natural import VAL_IMAGES, center_crops, natural_images
from priors.checkpoint import save_checkpoint
from priors.lpn import ConvLPN
from recon.bench.denoise import SIGMAS, run_denoise_bench


def _identity_prox(path, **arch):
    """ψ = ½||P₁x||² + ½||P⊥x||² = ½||x||² (h ≡ 0, α = 1), so f(v) = v exactly."""
    m = ConvLPN(width=4, levels=1, depth=1, alpha=1.0, **arch)
    with torch.no_grad():
        m.net.out_z.weight.zero_()
        m.net.out_x.weight.zero_()
    save_checkpoint(path, m)
    return str(path)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    models = {
        "identity": _identity_prox(tmp / "id.safetensors"),
        "identity-sigma": _identity_prox(tmp / "ids.safetensors", noise_input=True),
        "random-sigma": str(tmp / "rs.safetensors"),
    }
    torch.manual_seed(0)
    save_checkpoint(models["random-sigma"], ConvLPN(width=4, levels=1, depth=1, noise_input=True))
    blind = run_denoise_bench(models, tmp / "blind", size=64)
    told = run_denoise_bench({"random-sigma": models["random-sigma"]}, tmp / "told", 64, told=True)
    return tmp, blind, told


def test_identity_prox_scores_the_noisy_image(bench):
    _, blind, _ = bench
    clean = center_crops(natural_images(VAL_IMAGES), 64)
    ranges = (clean.flatten(1).amax(1) - clean.flatten(1).amin(1)).tolist()
    for sigma in SIGMAS:
        expect = sum(20 * math.log10(r / sigma) for r in ranges) / len(ranges)
        for name in ("identity", "identity-sigma"):
            assert blind[name]["noise"][str(sigma)][0] == pytest.approx(expect, abs=0.3)
    # noise-free images scaled by a < 1 with the same σ: PSNR drops by 20·log10(a)
    aff = blind["identity"]["affine"]
    assert aff["darken:0.5"] == pytest.approx(aff["darken:1.0"] + 20 * math.log10(0.5), abs=0.3)


def test_a_prior_that_takes_sigma_is_told_the_estimate_or_the_truth(bench):
    tmp, blind, told = bench
    assert "noise_level" not in blind["identity"]
    assert blind["random-sigma"]["noise_level"] == "blind MAD estimate"
    assert told["random-sigma"]["noise_level"] == "true sigma"
    b, t = blind["random-sigma"]["noise"], told["random-sigma"]["noise"]
    assert all(math.isfinite(b[k][0]) and math.isfinite(t[k][0]) for k in b)
    assert b != t  # σ̂ is not σ, and the prior uses what it is told
    table = (tmp / "blind" / "table.md").read_text()
    assert "random-sigma (told σ̂)" in table and "| identity |" in table
    assert json.loads((tmp / "told" / "results.json").read_text())["random-sigma"]["steps"] is None
    assert (tmp / "blind" / "denoise.png").stat().st_size > 0
