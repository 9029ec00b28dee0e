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
