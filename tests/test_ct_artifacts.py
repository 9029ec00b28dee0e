"""Training on sparse-view CT streaks: the pairs are real FBP errors (they shrink as views are
added and vanish at strength 0), they are seeded, the mixed batches keep the Gaussian path
unchanged, and a resumed run with artifacts is exact."""

from __future__ import annotations

import pytest
import torch

from data.ct_artifacts import sparse_view_pairs
from data.training_sets import ellipse_sampler
from priors.lpn import ConvLPN
from priors.training import TrainConfig, _training_batch, train_prior

SIZE, PATCH = 64, 32


def _rms(pairs, n=6, seed=0) -> float:
    clean, degraded = pairs(n, torch.Generator().manual_seed(seed))
    return float((degraded - clean).pow(2).mean().sqrt())


def test_pairs_are_fbp_errors_that_shrink_with_more_views():
    images = ellipse_sampler(SIZE)

    def pairs(views, noise=(0, 0), strength=(1, 1)):
        return sparse_view_pairs(images, SIZE, PATCH, (views,), noise, strength)

    clean, degraded = pairs(15)(4, torch.Generator().manual_seed(0))
    assert clean.shape == degraded.shape == (4, 1, PATCH, PATCH)
    # streaks from 15 views are far larger than what 180 views leave (FBP's own discretization
    # error, measured 0.068 vs 0.032 RMS here); sinogram noise adds to them
    assert _rms(pairs(15)) > 1.5 * _rms(pairs(180)) > 0
    assert _rms(pairs(180, noise=(0.02, 0.02))) > 1.2 * _rms(pairs(180))
    # the strength t scales the error exactly (same seed: same images, views, noise)
    c1, d1 = pairs(30, (0.01, 0.01), (1, 1))(3, torch.Generator().manual_seed(1))
    c2, d2 = pairs(30, (0.01, 0.01), (0.5, 0.5))(3, torch.Generator().manual_seed(1))
    assert torch.equal(c1, c2)
    torch.testing.assert_close(d2 - c2, 0.5 * (d1 - c1), rtol=1e-5, atol=1e-6)
    c, d = pairs(30, strength=(0, 0))(3, torch.Generator().manual_seed(1))
    assert torch.equal(c, d)


def test_pairs_are_seeded_and_patches_come_from_the_images():
    images = ellipse_sampler(SIZE)
    pairs = sparse_view_pairs(images, SIZE, PATCH)
    a = pairs(3, torch.Generator().manual_seed(5))
    b = pairs(3, torch.Generator().manual_seed(5))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert 0.0 <= float(a[0].min()) and float(a[0].max()) <= 1.0  # phantom values
    with pytest.raises(ValueError, match="patch"):
        sparse_view_pairs(images, SIZE, SIZE + 1)


def test_mixed_batch_keeps_the_gaussian_path_and_levels():
    sampler = ellipse_sampler(PATCH)
    pairs = sparse_view_pairs(ellipse_sampler(SIZE), SIZE, PATCH)
    cfg = TrainConfig(sigma=0.1, batch=4)
    # without artifacts: exactly the old batch x + σ·n from the same generator
    clean, noisy, level = _training_batch(
        cfg, sampler, None, torch.Generator().manual_seed(2), "cpu"
    )
    g = torch.Generator().manual_seed(2)
    ref = sampler(4, g)
    assert level is None and torch.equal(clean, ref)
    assert torch.equal(noisy, ref + 0.1 * torch.randn(ref.shape, generator=g))
    # all artifacts: each level is the RMS of its own error
    cfg_art = TrainConfig(sigma=0.1, batch=4, artifact_fraction=1.0)
    clean, noisy, level = _training_batch(
        cfg_art, sampler, pairs, torch.Generator().manual_seed(3), "cpu"
    )
    rms = (noisy - clean).flatten(1).pow(2).mean(1).sqrt()
    assert level.shape == (4,) and torch.allclose(level, rms.clamp_min(1e-6))


def test_resume_with_artifacts_is_exact(tmp_path):
    cfg = TrainConfig(steps=4, batch=2, ckpt_every=100, val_every=100, artifact_fraction=0.5)
    sampler = ellipse_sampler(16)
    pairs = sparse_view_pairs(ellipse_sampler(32), 32, 16, views=(20, 40))

    def tiny(seed):
        torch.manual_seed(seed)
        return ConvLPN(kind="aelpn", width=4, levels=2, depth=1)

    straight = train_prior(tiny(0), sampler, cfg, progress=False, pairs=pairs).model
    ck = tmp_path / "run.safetensors"
    train_prior(tiny(0), sampler, cfg, checkpoint=ck, progress=False, stop_after=2, pairs=pairs)
    resumed = train_prior(tiny(1), sampler, cfg, checkpoint=ck, progress=False, pairs=pairs)
    for (k, a), b in zip(
        straight.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
