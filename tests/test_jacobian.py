"""The prox's Jacobian (priors.jacobian): exact Hessian-vector products, Lanczos estimates with
honest error bounds, invariance to intensity conventions, the training penalty that lowers
λ_max, and `recon prior check`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from priors.checkpoint import read_checkpoint, save_checkpoint
from priors.jacobian import hessian_operator, top_eigenvalue
from priors.lpn import ConvLPN, told_noise_level
from recon.cli import main

D = torch.float64


def _model(seed: int = 0, **arch) -> ConvLPN:
    torch.manual_seed(seed)
    m = ConvLPN(kind="aelpn", width=6, levels=2, depth=1, noise_input=True, **arch).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m.clamp_()
    return m.eval()


def test_lanczos_finds_the_top_eigenvalue_with_a_true_error_bound():
    """Per image, a symmetric operator with known spectrum: θ ≤ λ_max, |θ − λ_max| ≤ r."""
    gen = torch.Generator().manual_seed(0)
    n = 64
    tops = torch.tensor([0.7, 3.0, 12.5], dtype=D)
    mats = []
    for t in tops:
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=D))
        ev = torch.rand(n, generator=gen, dtype=D) * 0.9 * t
        ev[0] = t
        mats.append(q @ torch.diag(ev) @ q.T)
    m = torch.stack(mats)

    def hvp(v):
        return torch.einsum("bij,bj->bi", m, v.reshape(3, n)).reshape(v.shape)

    est = top_eigenvalue(hvp, (3, 1, 8, 8), max_iters=64, tol=1e-8)
    assert est.converged
    assert bool((est.value <= tops + 1e-10).all())
    assert bool(((est.value - tops).abs() <= est.residual + 1e-10).all())
    assert float((est.value - tops).abs().max()) <= 1e-6
    short = top_eigenvalue(hvp, (3, 1, 8, 8), max_iters=3, tol=1e-8)
    assert not short.converged and bool((short.value <= tops + 1e-10).all())


def test_hessian_products_match_finite_differences_of_the_prox():
    m = _model(local_mean_sigma=2.0, sigma_smoothing=True)
    m.noise_level = 0.05
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 12, 16, generator=gen, dtype=D)
    v = torch.randn(x.shape, generator=gen, dtype=D)
    hv = hessian_operator(m, x)(v)
    eps = 1e-5
    fd = (m.prox(x + eps * v) - m.prox(x - eps * v)) / (2 * eps)
    # central differences: error O(eps²·f''') plus round-off O(1e-16/eps)
    assert float((hv - fd).norm() / fd.norm()) <= 1e-6


def test_quadratic_potential_has_its_known_eigenvalue():
    class Quadratic(nn.Module):
        def potential(self, x):
            return 0.5 * 2.5 * x.pow(2).flatten(1).sum(1)

    x = torch.randn(2, 1, 10, 10, dtype=D)
    est = top_eigenvalue(hessian_operator(Quadratic(), x), x.shape, max_iters=5, tol=1e-10)
    assert torch.allclose(est.value, torch.full((2,), 2.5, dtype=D))


def test_eigenvalue_is_the_same_in_every_intensity_convention():
    """ψ 2-homogeneous in (x, σ) with constants split off: ∇²ψ(a·x + b; a·σ) = ∇²ψ(x; σ)."""
    m = _model(local_mean_sigma=2.0, sigma_smoothing=True)
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2), dtype=D)
    vals = []
    for a, b in ((1.0, 0.0), (2500.0, -1000.0), (1e-6, 3e-7)):
        with told_noise_level(m, a * 0.03):
            est = top_eigenvalue(hessian_operator(m, a * x + b), x.shape, tol=1e-9)
        vals.append(float(est.value[0]))
    assert max(vals) - min(vals) <= 1e-8 * max(vals)


def test_penalty_training_lowers_the_largest_eigenvalue():
    """A few steps with a strong penalty bring λ_max (certified by Lanczos, not the penalty's
    own estimate) down on a fixed input, and the history records the estimates."""
    from priors.training import TrainConfig, train_prior

    m = _model(seed=3, sigma_smoothing=True).float()
    with torch.no_grad():  # make it expansive first: a steep network
        for p in m.net.parameters():
            p.mul_(3.0)
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(4))

    def lam(model):
        mm = ConvLPN(**model.config()).double()
        mm.load_state_dict(model.state_dict())
        with told_noise_level(mm, 0.01):
            return float(top_eigenvalue(hessian_operator(mm, x.double()), x.shape).value[0])

    before = lam(m)
    assert before > 1.5

    def sampler(b, gen):
        return torch.rand(b, 1, 16, 16, generator=gen)

    cfg = TrainConfig(
        sigma=0.01,
        sigma_max=0.1,
        steps=40,
        batch=4,
        l1_fraction=0.0,
        loss="mse",
        lr_pm=3e-3,
        fne_weight=10.0,
        fne_target=0.5,
        fne_batch=2,
        fne_iters=3,
        fne_ramp=0.0,
        fne_sigma_min=0.01,
        val_every=1000,
        ckpt_every=1000,
    )
    res = train_prior(m, sampler, cfg, progress=False)
    assert len(res.history["lam_max"]) == 40
    after = lam(m)
    assert after < 0.8 * before


def test_fne_options_are_checked():
    from priors.training import TrainConfig

    with pytest.raises(ValueError, match="fne_weight"):
        TrainConfig(fne_weight=float("nan"))
    with pytest.raises(ValueError, match="fne_sigma_min"):
        TrainConfig(sigma=0.05, fne_weight=1.0, fne_sigma_min=0.1)
    cfg = TrainConfig(steps=100, fne_weight=2.0, fne_ramp=0.5)
    assert cfg.fne_weight_at(0) == pytest.approx(2.0 / 50)
    assert cfg.fne_weight_at(99) == 2.0


def test_recon_prior_check_writes_a_certificate(tmp_path, capsys):
    m = _model(local_mean_sigma=2.0, sigma_smoothing=True).float()
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, m, {"note": "test"})
    out_json, rec = tmp_path / "cert.json", tmp_path / "certified.safetensors"
    argv = ["prior", "check", str(ckpt), "--size", "16", "--sigmas", "0.01,0.1", "--quiet"]
    rc = main([*argv, "--json", str(out_json), "--record", str(rec)])
    text = capsys.readouterr().out
    assert "| ct-slice |" in text and "λ_max" in text
    cert = json.loads(out_json.read_text())
    assert rc == (0 if cert["summary"]["firmly_nonexpansive"] else 1)  # scripts can use it
    rows = cert["rows"]
    assert len(rows) == 4 * 2 * 2 + 2  # images × σ × (noisy, clean) + 2 more conventions
    assert all(r["lambda_max"] > 0 and r["converged"] for r in rows)
    conv = [
        r["lambda_max"]
        for r in rows
        if r["image"] == cert["summary"]["worst"]["image"]
        and r["sigma_rel"] == cert["summary"]["worst"]["sigma_rel"]
        and r["input"] == cert["summary"]["worst"]["input"]
    ]
    assert max(conv) - min(conv) <= 1e-6 * max(conv)  # the same in every convention
    _, info = read_checkpoint(rec)
    assert info["meta"]["certificate"]["lambda_max"] == pytest.approx(cert["summary"]["lambda_max"])
    assert main(["prior", "check", "tv"]) == 2
    assert main(["prior", "check", str(ckpt), "--sigmas", "0,nan"]) == 2


SHIPPED = ["aelpn-ct", "aelpn-mri", "ridge-ct", "ridge-mri", "crr-ct", "crr-mri"]


@pytest.mark.slow  # Lanczos on every shipped prior
@pytest.mark.parametrize("name", SHIPPED)
def test_certificate_of_shipped_weights_is_convention_free_and_honest(name):
    """On the shipped weights: every Lanczos run converges, the worst input gives the same
    eigenvalue in the HU-like and tiny conventions, and the verdict matches the numbers (the
    AE-LPNs are not firmly nonexpansive, the convex-ridge priors are, by construction:
    docs/results/convergent-prior.md)."""
    from priors.checkpoint import load_prior
    from recon.prior import certify

    cert = certify(load_prior(name, dtype=D), size=16, sigmas=(0.01, 0.1), max_iters=60)
    rows = cert["rows"]
    # the ridge priors' top eigenvalue 1 sits in a cluster near 1, where Lanczos' residual
    # shrinks slowly; their verdict rests on the bound by construction
    convex = name.startswith(("ridge-", "crr-"))
    slack = 3e-3 if convex else 1e-3
    assert all(r["residual"] <= slack * r["lambda_max"] + 1e-12 for r in rows)
    assert convex or all(r["converged"] for r in rows)
    others = [r["lambda_max"] for r in rows if r["convention"] != "as given"]
    base = max(r["lambda_max"] for r in rows if r["convention"] == "as given")
    assert others == pytest.approx([base, base], rel=1e-6)  # the worst input, 2 conventions
    assert min(r["lambda_max"] for r in rows) >= 1 - 1e-3  # constants keep eigenvalue 1
    s = cert["summary"]
    measured = s["all_converged"] and s["lambda_max"] <= 1 + s["margin"]
    assert s["firmly_nonexpansive"] == (measured or s["bound_by_construction"] == 1.0)
    if convex:  # certified: 1 (constants) and nothing above, to round-off
        assert s["bound_by_construction"] == 1.0
        assert s["lambda_max"] <= 1 + 1e-9 and s["firmly_nonexpansive"]
    else:
        assert s["bound_by_construction"] is None


def test_recon_prior_check_exit_status_says_pass_or_fail(capsys):
    """The deep AE-LPN is not firmly nonexpansive (λ_max ≈ 31 at 16², σ = 0.01): exit 1; the
    convex-ridge prior passes by construction: exit 0 (scripts can branch on it)."""
    argv = ["--size", "16", "--sigmas", "0.01", "--quiet", "--threads", "1"]
    assert main(["prior", "check", "aelpn-ct", *argv]) == 1
    assert "fails" in capsys.readouterr().out
    assert main(["prior", "check", "ridge-ct", *argv]) == 0
    assert "passes by construction" in capsys.readouterr().out
