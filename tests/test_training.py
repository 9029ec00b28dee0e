"""Training: loss schedule, exact resume after an interruption, checkpoints that load safely and
fail clearly, and the split-normal check (a learned 1-D prox recovers the true one)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from data.training_sets import ellipse_sampler
from priors.checkpoint import CheckpointError, load_prior, read_checkpoint, save_checkpoint
from priors.lpn import ConvLPN, DenseLPN
from priors.training import TrainConfig, proximal_matching_loss, train_prior


def _tiny(kind="aelpn", seed=0, **arch):
    torch.manual_seed(seed)
    return ConvLPN(kind=kind, width=4, levels=2, depth=1, **arch)


def test_schedule_l1_then_decreasing_gamma():
    cfg = TrainConfig(steps=100, l1_fraction=0.5, gammas=(8, 4, 2, 1), gamma_unit=0.08)
    assert cfg.phase(0) == (cfg.lr_l1, None)
    gammas = [cfg.phase(s)[1] for s in range(50, 100)]
    assert gammas[0] == pytest.approx(0.64) and gammas[-1] == pytest.approx(0.08)
    assert all(a >= b for a, b in zip(gammas, gammas[1:], strict=False))


def test_schedule_mse_and_cosine_decay():
    cfg = TrainConfig(steps=101, l1_fraction=0.0, loss="mse", lr_schedule="cosine", lr_pm=1e-4)
    lrs = [cfg.phase(s)[0] for s in range(101)]
    assert all(cfg.phase(s)[1] == 0.0 for s in range(101))  # MSE: no γ, not the L1 phase
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(cfg.lr_floor * 1e-4)
    assert lrs[50] == pytest.approx(1e-4 * (cfg.lr_floor + (1 - cfg.lr_floor) / 2))
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="l2")
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_mse_training_lowers_the_squared_error():
    """A few MSE steps on a fixed batch lower the denoising error of that batch."""
    sampler = ellipse_sampler(16)
    clean = sampler(4, torch.Generator().manual_seed(3))
    cfg = TrainConfig(steps=30, batch=4, l1_fraction=0.0, loss="mse", lr_pm=3e-3, sigma=0.1)
    model = _tiny()
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    before = float((model.prox(noisy, create_graph=False) - clean).pow(2).mean())
    train_prior(model, lambda b, g: clean, cfg, progress=False)
    after = float((model.prox(noisy, create_graph=False) - clean).pow(2).mean())
    assert after < 0.7 * before


def test_proximal_matching_loss_values():
    x = torch.zeros(2, 1, 4, 4)
    assert float(proximal_matching_loss(x, x, 0.1)) == 0.0
    far = torch.full_like(x, 100.0)
    assert float(proximal_matching_loss(far, x, 0.1)) == pytest.approx(1.0)
    # per-pixel error e = γ gives 1 − e^{-1}
    assert float(proximal_matching_loss(x + 0.1, x, 0.1)) == pytest.approx(1 - torch.e**-1)


@pytest.mark.parametrize("sigma_max,noise_input", [(None, False), (0.3, False), (0.3, True)])
def test_resume_is_exact(tmp_path, sigma_max, noise_input):
    cfg = TrainConfig(
        steps=6, batch=2, ckpt_every=100, val_every=3, l1_fraction=0.5, sigma_max=sigma_max
    )
    sampler = ellipse_sampler(16)
    val = sampler(2, torch.Generator().manual_seed(9))
    arch = {"noise_input": True} if noise_input else {}
    straight = train_prior(_tiny(**arch), sampler, cfg, val=val, progress=False).model
    ck = tmp_path / "run.safetensors"
    first = train_prior(
        _tiny(**arch), sampler, cfg, checkpoint=ck, val=val, progress=False, stop_after=3
    )
    assert first.steps == 3
    # a new process would build a fresh model: resume must restore weights, Adam and RNG
    resumed = train_prior(
        _tiny(seed=1, **arch), sampler, cfg, checkpoint=ck, val=val, progress=False
    )
    assert resumed.steps == 6
    for (k, a), b in zip(
        straight.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    assert len(resumed.history["loss"]) == 6
    if noise_input:  # trained told each image's σ; afterwards the user sets their own
        assert resumed.model.noise_level is None and load_prior(ck).config()["noise_input"]
    # nonnegativity held throughout
    assert all(float(w.detach().min()) >= 0 for w in _nonneg(resumed.model))


def test_blind_noise_levels_are_seeded_and_in_range():
    from priors.training import _noise_levels

    cfg = TrainConfig(sigma=0.05, sigma_max=0.3)
    a = _noise_levels(cfg, 4000, torch.Generator().manual_seed(0))
    b = _noise_levels(cfg, 4000, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (4000,)
    assert 0.05 <= float(a.min()) and float(a.max()) <= 0.3
    assert float(a.mean()) == pytest.approx(0.175, abs=0.01)  # uniform on [0.05, 0.3]
    assert _noise_levels(TrainConfig(sigma=0.1), 4, torch.Generator()) == 0.1
    # γ per item: an item with error e = its own γ scores 1 − e^{-1}
    x = torch.zeros(2, 1, 4, 4)
    pred = x + torch.tensor([0.1, 0.3]).view(2, 1, 1, 1)
    assert float(proximal_matching_loss(pred, x, torch.tensor([0.1, 0.3]))) == pytest.approx(
        1 - torch.e**-1
    )


def _nonneg(model):
    from priors.icnn import nonneg_parameters

    return nonneg_parameters(model)


def test_checkpoint_round_trip_and_errors(tmp_path):
    m = _tiny().eval()
    path = tmp_path / "p.safetensors"
    save_checkpoint(path, m, {"sigma": 0.1, "training_data": "test"})
    loaded = load_prior(path, dtype=torch.float32)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(loaded.prox(x), m.prox(x))
    assert loaded.meta["sigma"] == 0.1 and "package_version" in loaded.meta
    _, info = read_checkpoint(path)
    assert info["config"]["kind"] == "aelpn"

    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        load_prior(bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a pnp-recon prior"):
        load_prior(foreign)
    with pytest.raises(CheckpointError, match="unknown prior 'no-such-prior'"):
        load_prior("no-such-prior")
    # weights that do not fit the stored architecture: name the file and the architecture
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(wrong, m)
    from safetensors import safe_open

    with safe_open(str(wrong), framework="pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    cfg["width"] = 6
    meta["config"] = json.dumps(cfg)
    tensors = {k: v for k, v in read_checkpoint(wrong)[0].items()}
    save_file(tensors, str(wrong), metadata=meta)
    with pytest.raises(CheckpointError, match=r"wrong.safetensors: weights do not fit"):
        load_prior(wrong)


def test_split_normal_prox_recovered():
    """SN(0; 1, 2) with noise σ = 1: prox(x) = x/2 (x < 0), 0.8·x (x ≥ 0). A scale-equivariant
    dense LPN trained with proximal matching recovers it on [−4, 4]."""
    torch.manual_seed(0)
    model = DenseLPN("scale-only", dim=1, width=32, depth=3).double()  # see SPLIT_NORMAL_MAX

    def sampler(batch, gen):
        z = torch.randn(batch, 1, generator=gen, dtype=torch.float64)
        return torch.where(z < 0, z * 1.0, z * 2.0)  # split normal: σ_left 1, σ_right 2

    cfg = TrainConfig(
        sigma=1.0,
        steps=2000,
        batch=4096,
        lr_l1=1e-2,
        lr_pm=1e-3,
        l1_fraction=0.3,
        gamma_unit=0.1,
        grad_clip=0.0,
        ckpt_every=10**9,
        val_every=10**9,
    )
    train_prior(model, sampler, cfg, progress=False)
    t = torch.linspace(-4, 4, 401, dtype=torch.float64)[:, None]
    truth = torch.where(t < 0, t / 2, 0.8 * t)
    err = (model.prox(t) - truth).abs()
    assert float(err.mean()) < SPLIT_NORMAL_MEAN, float(err.mean())
    assert float(err.max()) < SPLIT_NORMAL_MAX, float(err.max())


# Proximal matching at a finite γ is noisy, and 2,000 steps of it amplify round-off: the same
# seed gave a max error of 0.12 or 0.40 on [−4, 4] with two float32 orderings of the same
# activation. Measured over seeds 0–3 and both orderings: mean abs error 0.055–0.127, max
# 0.12–0.40; the identity map's are 0.7 and 2.0. The bounds sit above that spread. In float32
# another x86-64 CPU (AMD EPYC) reached a max of 0.64 with seed 0, so the test trains in
# float64, where round-off is 10⁹ times smaller: seed 0 / 1 gave mean 0.083 / 0.035 and max
# 0.33 / 0.083 there.
SPLIT_NORMAL_MEAN = 0.2
SPLIT_NORMAL_MAX = 0.6


def test_contrast_variation_keeps_means_and_scales_within_range():
    from priors.training import _vary_contrast

    x = ellipse_sampler(16)(64, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    assert _vary_contrast(x, 1.0, g) is x and torch.equal(
        g.get_state(), torch.Generator().manual_seed(1).get_state()
    )  # off: no randomness drawn, so older runs resume unchanged
    y = _vary_contrast(x, 0.25, g)
    dims = (1, 2, 3)
    torch.testing.assert_close(y.mean(dims), x.mean(dims))
    ratio = (y - y.mean(dims, True)).std(dims) / (x - x.mean(dims, True)).std(dims)
    assert 0.25 - 1e-5 <= float(ratio.min()) and float(ratio.max()) <= 1 + 1e-5
    assert float(ratio.max() - ratio.min()) > 0.5  # spread over the range, not one value


def test_validation_psnr_leaves_flat_patches_out():
    """A constant validation patch has no range: its PSNR was −inf and made the mean −inf (and
    the summary invalid JSON). It is left out; with nothing left the mean is NaN."""
    import math

    from priors.training import _mean_psnr

    clean = torch.stack([torch.zeros(1, 8, 8), torch.linspace(0, 1, 64).reshape(1, 8, 8)])
    out = clean + 0.01
    assert _mean_psnr(out, clean) == pytest.approx(40.0, abs=1e-4)  # the ramp's alone
    assert math.isnan(_mean_psnr(out[:1], clean[:1]))
