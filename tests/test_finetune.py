"""Fine-tuning a prior with `recon train --init`: starts from the given weights, keeps their
architecture, stays exact (convex, equivariant) after training, and refuses a mismatched kind."""

from __future__ import annotations

import pytest
import torch

from priors.checkpoint import load_prior, read_checkpoint, save_checkpoint
from priors.lpn import ConvLPN
from recon.cli import main


def _source(tmp_path, kind="aelpn", **arch):
    torch.manual_seed(1)
    m = ConvLPN(kind=kind, width=4, levels=2, depth=1, **arch).eval()
    path = tmp_path / f"{kind}-src.safetensors"
    save_checkpoint(path, m, {"sigma": 0.1})
    return path, m


def _train(tmp_path, src, steps, *extra, name="ft"):
    out = tmp_path / f"{name}.safetensors"
    args = ["train", "--kind", "aelpn", "--data", "ellipses", "--init", str(src), "--steps"]
    args += [str(steps), "--batch", "2", "--patch", "16", "--val-every", "1", "--quiet"]
    assert main([*args, "--out", str(out), "--threads", "1", *extra]) == 0
    return out


def test_init_starts_from_the_weights_and_keeps_the_architecture(tmp_path):
    src, m = _source(tmp_path, upsample="bilinear", out_channels=2)
    out = _train(tmp_path, src, 3, "--sigma", "0.05", "--l1-fraction", "0")
    _, info = read_checkpoint(out)
    assert info["config"] == m.config()  # architecture from --init, not the --width defaults
    assert info["meta"]["init"] == str(src)
    # the source had no command: the stages are this fine-tune alone; a second fine-tune
    # lists both, oldest first
    assert info["meta"]["stages"] == [info["meta"]["command"]]
    again = _train(tmp_path, out, 1, "--sigma", "0.05", "--l1-fraction", "0", name="ft2")
    meta2 = read_checkpoint(again)[1]["meta"]
    assert meta2["stages"] == [info["meta"]["command"], meta2["command"]]
    cfg = info["meta"]["train_config"]
    assert cfg["gamma_unit"] == pytest.approx(0.8 * 0.05) and cfg["l1_fraction"] == 0.0
    tuned = load_prior(out).double()
    # trained (weights moved) ...
    moved = sum(
        float((a - b).abs().sum())
        for a, b in zip(tuned.state_dict().values(), m.double().state_dict().values(), strict=True)
    )
    assert moved > 0
    # ... and still exact: affine-equivariant and monotone
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fx = tuned.prox(x)
    assert float((tuned.prox(30 * x - 7) - (30 * fx - 7)).norm() / fx.norm()) < 1e-10
    y = torch.rand_like(x)
    assert float(((tuned.prox(y) - fx) * (y - x)).sum()) >= 0


def test_mse_fine_tune_records_its_loss_and_schedule_and_stays_exact(tmp_path):
    src, _ = _source(tmp_path, noise_input=True)
    extra = ["--loss", "mse", "--lr", "3e-4", "--lr-schedule", "cosine", "--l1-fraction", "0"]
    out = _train(tmp_path, src, 3, "--sigma", "0.05", "--sigma-max", "0.2", *extra)
    cfg = read_checkpoint(out)[1]["meta"]["train_config"]
    assert (cfg["loss"], cfg["lr_pm"], cfg["lr_schedule"]) == ("mse", 3e-4, "cosine")
    tuned = load_prior(out).double()
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tuned.noise_level = 0.1
    fx = tuned.prox(x)
    tuned.noise_level = 0.1 * 30  # told σ in the new units: f(a·x + b; a·σ) = a·f(x; σ) + b
    assert float((tuned.prox(30 * x - 7) - (30 * fx - 7)).norm() / fx.norm()) < 1e-10


def test_bad_learning_rate_is_refused_before_anything_is_written(tmp_path, capsys):
    src, _ = _source(tmp_path)
    out = tmp_path / "bad.safetensors"
    args = ["train", "--data", "ellipses", "--init", str(src), "--steps", "1", "--quiet"]
    assert main([*args, "--lr", "0", "--out", str(out)]) == 2
    assert "--lr must be > 0, got 0.0" in capsys.readouterr().err
    assert not out.exists()


def test_a_flat_loss_step_keeps_the_source_prox(tmp_path):
    src, m = _source(tmp_path)
    out = _train(tmp_path, src, 1, "--l1-fraction", "0", "--gamma-unit", "1e6")
    # γ huge: the proximal-matching loss is flat (~0 gradient), so one step barely moves weights
    x = torch.rand(1, 1, 16, 16)
    assert torch.allclose(load_prior(out).prox(x), m.prox(x), atol=1e-4)


def test_init_with_another_kind_is_refused(tmp_path, capsys):
    src, _ = _source(tmp_path, kind="lpn")
    args = ["train", "--kind", "aelpn", "--data", "ellipses", "--init", str(src), "--steps", "1"]
    assert main([*args, "--out", str(tmp_path / "ft.safetensors"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "a lpn prior" in err
    assert not (tmp_path / "ft.safetensors").exists()  # nothing half-written


def test_adding_the_global_feature_starts_from_the_same_prox(tmp_path):
    from recon.train import _init_model

    src, m = _source(tmp_path)
    grown = _init_model(str(src), "aelpn", 1, global_pool=True).eval()
    assert grown.config() == {**m.config(), "global_pool": True}
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    assert torch.equal(grown.prox(x), m.prox(x))  # U⁺ = 0: the same function
    # a gradient reaches the new weights from zero (so training can grow them) ...
    grown.train()
    loss = (grown.prox(x + 0.1, create_graph=True) - x).pow(2).sum()
    loss.backward()
    assert all(float(u.weight.grad.abs().max()) > 0 for u in grown.net.glob)
    # ... and `recon train --init --global-pool` trains it and stays exact
    out = _train(tmp_path, src, 2, "--global-pool", "--l1-fraction", "0", "--sigma", "0.1")
    tuned = load_prior(out).double()
    assert tuned.config()["global_pool"]
    x = x.double()
    fx = tuned.prox(x)
    assert float((tuned.prox(9 * x + 4) - (9 * fx + 4)).norm() / fx.norm()) < 1e-10


def test_init_can_swap_the_upsampling_and_keeps_every_weight(tmp_path):
    from recon.train import _init_model

    src, m = _source(tmp_path)  # nearest
    swapped = _init_model(str(src), "aelpn", 1, upsample="bilinear")
    assert swapped.config() == {**m.config(), "upsample": "bilinear"}
    for (k, a), b in zip(m.state_dict().items(), swapped.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(swapped.eval().prox(x), m.prox(x))  # a different decoder


def test_init_can_swap_the_downsampling_and_keeps_every_weight(tmp_path):
    from recon.train import _init_model

    src, m = _source(tmp_path)  # 2×2 average pooling
    blurred = _init_model(str(src), "aelpn", 1, downsample="blur")
    assert blurred.config() == {**m.config(), "downsample": "blur"}
    for (k, a), b in zip(m.state_dict().items(), blurred.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(blurred.eval().prox(x), m.prox(x))  # a different x-path


def test_blur_downsampling_has_a_smooth_adjoint():
    """f = ∇ψ passes back through the adjoint of the x-path's downsampling. Two levels of 2×2
    averaging send one coarse value back as a constant 4×4 block; the blur does not."""
    from priors.icnn import _downsample

    for mode, blocky in (("avg", True), ("blur", False)):
        x = torch.zeros(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(_downsample(_downsample(x, mode), mode)[0, 0, 1, 1], x)
        block = g[0, 0, 4:8, 4:8]
        assert float(block.sum()) > 0
        assert bool(torch.all(block == block[0, 0])) == blocky, mode
        assert float(g.sum()) == pytest.approx(1.0)  # weights sum to 1: constants are kept


def test_zero_steps_with_init_writes_the_prior_in_the_new_architecture(tmp_path, capsys):
    """`--steps 0 --init P --tile 8` makes a tiled copy of P: same weights, no training."""
    src, m = _source(tmp_path)
    out = _train(tmp_path, src, 0, "--tile", "8", "--tile-stride", "4")
    tiled = load_prior(out)
    assert tiled.config() == {**m.config(), "tile": 8, "tile_stride": 4}
    for (k, a), b in zip(m.state_dict().items(), tiled.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(1, 1, 8, 8)  # one window: the same prox
    assert torch.allclose(tiled.prox(x), m.prox(x), atol=1e-6)
    none = tmp_path / "none.safetensors"
    args = ["train", "--kind", "aelpn", "--data", "ellipses", "--steps", "0", "--quiet"]
    assert main([*args, "--out", str(none)]) != 0  # nothing to convert without --init
    assert "--steps must be" in capsys.readouterr().err and not none.exists()


def test_local_mean_is_added_to_a_prior_and_trained_through(tmp_path, capsys):
    """`--init P --local-mean 3` keeps every weight and records the option; the fine-tuned
    prior is still exactly equivariant and its prox is local."""
    src, m = _source(tmp_path)
    shipped = tmp_path / "small.safetensors"
    conv = _train(tmp_path, src, 0, "--local-mean", "3", "--export", str(shipped), name="lm")
    assert load_prior(shipped).meta["sigma"] == 0.1
    lm = load_prior(conv)
    assert lm.config() == {**m.config(), "local_mean_sigma": 3.0}
    assert lm.meta["sigma"] == 0.1 and lm.meta["converted_from"] == str(src)  # the record kept
    for (k, a), b in zip(m.state_dict().items(), lm.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    out = _train(tmp_path, conv, 2, "--sigma", "0.1", "--l1-fraction", "0")
    tuned = load_prior(out).double()
    assert tuned.config()["local_mean_sigma"] == 3.0
    # the converted file holds no training state: writing a run into it is refused, not resumed
    args = ["train", "--kind", "aelpn", "--data", "ellipses", "--init", str(src), "--steps", "2"]
    assert main([*args, "--patch", "16", "--quiet", "--out", str(conv)]) != 0
    assert "without a training state" in capsys.readouterr().err
    x = torch.rand(1, 1, 48, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fx = tuned.prox(x)
    assert float((tuned.prox(40 * x + 9) - (40 * fx + 9)).norm() / fx.norm()) < 1e-10
    far = x.clone()
    far[:, :, :2] += 30.0
    # no global mean (it is split off only for precision, so rounding-level changes remain)
    assert torch.allclose(tuned.prox(far)[:, :, 40:], fx[:, :, 40:], rtol=0, atol=1e-12)


def test_rebuild_keeps_weights_and_refuses_what_does_not_fit():
    from priors.checkpoint import CheckpointError, rebuild

    torch.manual_seed(3)
    m = ConvLPN(kind="aelpn", width=4, levels=2, depth=1).double().eval()
    with torch.no_grad():  # weights that float32 cannot hold: they must not pass through it
        for p in m.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    m.clamp_()
    m.meta = {"sigma": 0.1}
    g = rebuild(m, global_pool=True)  # adds U⁺, started at zero: the same prox
    assert g.meta == m.meta and not g.training and next(g.parameters()).dtype == torch.float64
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    assert torch.allclose(g.prox(x), m.prox(x), rtol=1e-13, atol=0)
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        rebuild(m, width=8)  # the weights have other shapes
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        rebuild(m, local_mean_sigma=-1.0)


def test_noise_input_prior_trains_blind_and_fine_tunes_with_its_option(tmp_path, capsys):
    """`recon train --noise-input --sigma-max`: the checkpoint records the option, the prior
    is jointly equivariant in (x, σ); --init keeps it; asking for it with --init is refused."""
    out = tmp_path / "ni.safetensors"
    args = ["train", "--kind", "aelpn", "--data", "ellipses", "--noise-input", "--sigma", "0.05"]
    args += ["--sigma-max", "0.3", "--steps", "2", "--batch", "2", "--patch", "16", "--width", "4"]
    args += ["--levels", "1", "--depth", "1", "--val-every", "1", "--quiet", "--threads", "1"]
    assert main([*args, "--out", str(out)]) == 0
    m = load_prior(out).double()
    assert m.config()["noise_input"] and m.noise_level is None
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    m.noise_level = 0.1
    fx = m.prox(x)
    m.noise_level = 3.0
    assert float((m.prox(30 * x - 7) - (30 * fx - 7)).norm() / fx.norm()) < 1e-10
    tuned = _train(tmp_path, out, 1, "--sigma", "0.05", "--sigma-max", "0.2")
    assert read_checkpoint(tuned)[1]["config"] == m.config()
    bad = ["train", "--kind", "aelpn", "--data", "ellipses", "--init", str(out), "--noise-input"]
    assert main([*bad, "--steps", "1", "--out", str(tmp_path / "x.safetensors"), "--quiet"]) == 2
    assert "--noise-input" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_save_rebuilt_writes_the_same_weights_in_the_new_architecture(tmp_path):
    from priors.checkpoint import save_rebuilt

    src, m = _source(tmp_path)
    out = save_rebuilt(src, tmp_path / "lm.safetensors", local_mean_sigma=4.0)
    got = load_prior(out)
    assert got.config() == {**m.config(), "local_mean_sigma": 4.0}
    assert got.meta["changed_from"] == str(src) and got.meta["sigma"] == 0.1
    for (k, a), b in zip(m.state_dict().items(), got.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
