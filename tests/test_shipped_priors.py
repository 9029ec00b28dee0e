"""The shipped weights: load by name, are exact proxes (convex potential with the trained
weights), keep their equivariance, and say how they were trained."""

from __future__ import annotations

import pytest
import torch

from priors.checkpoint import load_prior, shipped_priors
from priors.icnn import nonneg_parameters
from priors.lpn import takes_noise_level

SHIPPED = sorted(shipped_priors())


def test_ct_priors_are_shipped():
    assert {"aelpn-ct", "lpn-ct"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_prior_is_convex_and_documented(name):
    model = load_prior(name, dtype=torch.float64)
    if getattr(model, "mode", None) == "prox":
        # ψ(v) = ½||v||² − min F is convex for the exact minimum; the inner solve's stopping
        # gap (≤ ½(tol·σ·√n)²) would show at the 1e-10 level of the check below
        model.tol, model.max_iters = 1e-10, 2000
    noise_input = takes_noise_level(model)
    model.noise_level = 0.1 if noise_input else None  # (convexity holds at each fixed σ)
    assert all(float(w.detach().min()) >= 0 for w in nonneg_parameters(model))
    for key in ("training_data", "sigma", "steps", "seed", "package_version", "command"):
        assert key in model.meta, key
    c = model.config()["in_channels"]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(300, c, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.rand(300, c, 16, 16, generator=gen, dtype=torch.float64) * 2 - 0.5
    with torch.no_grad():
        lhs = model.potential(0.5 * (x + y))
        rhs = 0.5 * (model.potential(x) + model.potential(y))
    assert int((lhs > rhs + 1e-10 * rhs.abs().clamp_min(1)).sum()) == 0
    if model.equivariance == "affine":
        v = torch.rand(2, c, 24, 24, generator=gen, dtype=torch.float64)
        fv = model.prox(v)
        for a, b in ((1e-2, -2000.0), (1e3, 2000.0)):
            if noise_input:  # σ is in the image's units: it scales with a
                model.noise_level = 0.1 * a
            err = (model.prox(a * v + b) - (a * fv + b)).norm() / (a * fv + b).norm()
            assert float(err) <= 1e-10


def test_noise_level_set_on_a_wrapper_reaches_the_model_inside():
    """`wrapper.noise_level = σ` (the README's "set prior.noise_level") tells the wrapped model,
    through nested wrappers too, and the prox is then the one told σ directly."""
    from priors.base import ComplexAsChannels
    from priors.lpn import told_noise_level
    from solvers.equivariant import GroupAveragedPrior

    raw = load_prior("ridge-mri", dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(1, 1, 16, 16, dtype=torch.complex128, generator=gen)
    wrapped = ComplexAsChannels(raw)
    wrapped.noise_level = 0.3
    assert raw.noise_level == 0.3 and wrapped.noise_level == 0.3
    got = wrapped.prox(v)
    raw.noise_level = None
    with told_noise_level(raw, 0.3):
        want = ComplexAsChannels(raw).prox(v)
    assert torch.equal(got, want)
    group = GroupAveragedPrior(ComplexAsChannels(raw), "d4")
    group.noise_level = 0.1
    assert raw.noise_level == 0.1


def test_a_noise_level_given_to_a_prior_without_that_input_is_refused():
    """lpn-ct has one fixed strength: a σ set on it was silently ignored; now the prox says so."""
    prior = load_prior("lpn-ct")
    assert not takes_noise_level(prior)
    prior.noise_level = 5.0
    with pytest.raises(ValueError, match="no noise-level input"):
        prior.prox(torch.rand(1, 1, 16, 16))
    prior.noise_level = None
    assert prior.prox(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)


def test_a_real_prior_names_complex_and_wrong_channel_inputs():
    """A complex MRI image given to a real prior, or 2 channels to a 1-channel one, is refused
    with what to do (it was a torch kernel error about 'ComplexFloat' or a hidden σ channel)."""
    gen = torch.Generator().manual_seed(0)
    for name in ("ridge-ct", "aelpn-mri"):
        prior = load_prior(name)
        z = torch.randn(1, 1, 16, 16, dtype=torch.complex64, generator=gen)
        with pytest.raises(ValueError, match="complex image.*ComplexAsChannels"):
            prior.prox(z)
    aelpn = load_prior("aelpn-ct")
    with pytest.raises(ValueError, match=r"takes \(B, 1, H, W\) images, got shape \(1, 2, 16"):
        aelpn.prox(torch.rand(1, 2, 16, 16))
