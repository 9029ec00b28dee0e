"""Classical priors: TV prox (FGP + duality-gap certificate), wavelet soft-thresholding, and the
quadratic test priors. Float64 unless stated."""

from __future__ import annotations

import pytest
import torch

from priors.base import ComplexAsChannels, has_regularizer
from priors.classical import (
    CenteredQuadraticPrior,
    QuadraticPrior,
    TVPrior,
    WaveletPrior,
    div2d,
    grad2d,
    tv,
)

D = torch.float64


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _image(b=2, c=1, h=16, w=16, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(b, c, h, w, dtype=D)
    x[..., h // 4 : 3 * h // 4, w // 5 : w // 2] = 1.0
    x[..., h // 2 :, 3 * w // 4 :] = -0.5
    return x + noise * torch.randn(x.shape, generator=g, dtype=D)


def _tv_objective(x, v, w):
    return 0.5 * (x - v).pow(2).flatten(1).sum(1) + w * tv(x)


# --- differences -------------------------------------------------------------------------------
def test_div_is_minus_adjoint_of_grad_and_tv_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=D)
    p = torch.randn(2, 3, 2, 7, 9, generator=g, dtype=D)
    lhs = (grad2d(x) * p).sum()
    rhs = -(x * div2d(p)).sum()
    assert float(abs(lhs - rhs)) <= 1e-12 * float(abs(lhs))
    step = torch.zeros(1, 1, 6, 5, dtype=D)
    step[..., :, 2:] = 3.0  # a vertical edge of height 3 and length 6
    assert torch.allclose(tv(step), torch.tensor([18.0], dtype=D))
    assert float(tv(torch.full((1, 2, 5, 5), 7.0, dtype=D))) == 0.0
    # channels are coupled: |∇| over channels, not a sum of per-channel TVs
    two = torch.cat([step, step], dim=1)
    assert torch.allclose(tv(two), 18.0 * torch.tensor([2.0], dtype=D).sqrt())


# --- TV prox -----------------------------------------------------------------------------------
def test_tv_prox_matches_a_long_run_within_its_certificate():
    v = _image(h=12, w=12)
    w = 0.3
    long = TVPrior(w, iters=8000, tol=0.0).prox(v)  # ≈2e-8·||x − v|| from 40k its
    for tol in (1e-1, 1e-2, 1e-3):
        prior = TVPrior(w, iters=20000, tol=tol)
        x = prior.prox(v)
        d = (x - v).flatten(1).norm(dim=1)
        err = (x - long).flatten(1).norm(dim=1)
        bound = (2 * prior.last_gap).sqrt()
        print(
            f"tol {tol:g}: {prior.last_iterations} its, rel. error {(err / d).max():.1e}, "
            f"certified {(bound / d).max():.1e}"
        )
        assert bool((bound <= tol * d).all())  # the stopping rule
        assert bool((err <= bound + 1e-12).all())  # the certificate is a true bound
    assert _rel(TVPrior(w, iters=20000, tol=1e-6).prox(v), long) <= 1e-6


def test_tv_prox_is_optimal_against_perturbations():
    v = _image(b=1)
    w = 0.2
    x = TVPrior(w, iters=3000, tol=0.0).prox(v)
    f0 = float(_tv_objective(x, v, w))
    g = torch.Generator().manual_seed(3)
    for scale in (1e-4, 1e-2, 1.0):
        for _ in range(20):
            dx = scale * torch.randn(x.shape, generator=g, dtype=D)
            assert f0 <= float(_tv_objective(x + dx, v, w)) + 1e-12
    for other in (v, torch.full_like(v, float(v.mean())), torch.zeros_like(v)):
        assert f0 < float(_tv_objective(other, v, w))


@pytest.mark.parametrize("b", [-1000.0, 3.0])
@pytest.mark.parametrize("tol", [0.0, 1e-3])
def test_tv_prox_is_shift_equivariant_but_not_scale_equivariant(b, tol):
    v = _image()
    prior = TVPrior(0.2, iters=300, tol=tol)
    x = prior.prox(v)
    x_shift = TVPrior(0.2, iters=300, tol=tol).prox(v + b)
    disp = float((x - v).norm())
    err = float((x_shift - (x + b)).norm())
    print(f"b={b:g} tol={tol:g}: shift error / ||x − v|| = {err / disp:.1e}")
    assert err <= 1e-11 * (1.0 + abs(b)) * disp  # round-off of v + b only
    a = 7.5
    scaled = TVPrior(0.2, iters=300, tol=tol).prox(a * v)
    assert _rel(scaled, a * x) > 1e-2  # fixed weight: not scale-equivariant
    rescaled = TVPrior(0.2 * a, iters=300, tol=tol).prox(a * v)  # weight scaled with the image
    assert _rel(rescaled, a * x) <= 1e-12


def test_tv_prox_batched_complex_and_warm_start():
    v = _image(b=3, c=2)
    prior = TVPrior(0.2, iters=200, tol=0.0)
    batch = prior.prox(v)
    for i in range(3):
        assert _rel(prior.prox(v[i : i + 1]), batch[i : i + 1]) <= 1e-14
    # complex (B, 1, H, W) = real/imag as two coupled channels
    z = torch.complex(v[:, :1], v[:, 1:])
    out = prior.prox(z)
    assert out.is_complex() and out.shape == z.shape
    assert _rel(ComplexAsChannels.to_channels(out), batch) <= 1e-14
    assert torch.allclose(prior.regularizer(z), prior.regularizer(v))
    # warm start: same answer within the certificate, fewer iterations the second time
    warm = TVPrior(0.2, iters=5000, tol=1e-4, warm_start=True)
    x1 = warm.prox(v)
    n1 = warm.last_iterations
    x2 = warm.prox(v + 1e-3 * torch.ones_like(v))
    assert warm.last_iterations < n1
    assert _rel(x2 - 1e-3, x1) <= 1e-3
    assert TVPrior(0.0).prox(v).equal(v)


def test_tv_regularizer_and_float32():
    v = _image(b=2)
    prior = TVPrior(0.4)
    r = prior.regularizer(v)
    assert r.shape == (2,) and torch.allclose(r, 0.4 * tv(v))
    assert has_regularizer(prior)
    out = TVPrior(0.2, iters=100, tol=1e-3).prox(v.float())
    assert out.dtype == torch.float32
    assert _rel(out.double(), TVPrior(0.2, iters=100, tol=1e-3).prox(v)) <= 1e-5
    with pytest.raises(ValueError):
        TVPrior(-1.0)


# --- wavelets ----------------------------------------------------------------------------------
def test_wavelet_prox_is_soft_thresholding_in_an_orthonormal_basis():
    v = _image(b=2, h=16, w=16)
    prior = WaveletPrior(0.1, "db4", levels=2)
    assert _rel(WaveletPrior(0.0, levels=2).prox(v), v) <= 1e-12  # orthonormal, exact inverse
    x = prior.prox(v)
    r = prior.regularizer(x)
    assert r.shape == (2,)
    f0 = 0.5 * (x - v).pow(2).flatten(1).sum(1) + r
    g = torch.Generator().manual_seed(0)
    for scale in (1e-4, 1e-2, 1.0):
        for _ in range(10):
            dx = scale * torch.randn(x.shape, generator=g, dtype=D)
            f = 0.5 * (x + dx - v).pow(2).flatten(1).sum(1) + prior.regularizer(x + dx)
            assert bool((f0 <= f + 1e-12).all())
    assert _rel(prior.prox(v - 1000.0), x - 1000.0) <= 1e-12  # shift-equivariant
    assert float(prior.regularizer(torch.full_like(v, 5.0)).abs().max()) <= 1e-10
    z = torch.complex(v[:, :1], 2 * v[:, :1])
    assert prior.prox(z).is_complex()
    with pytest.raises(ValueError):
        prior.prox(torch.zeros(1, 1, 10, 16, dtype=D))


# --- quadratics --------------------------------------------------------------------------------
@pytest.mark.parametrize("complex_", [False, True])
def test_quadratic_priors_satisfy_their_optimality_conditions(complex_):
    g = torch.Generator().manual_seed(0)
    dt = torch.complex128 if complex_ else D
    v = torch.randn(2, 2, 5, 6, generator=g, dtype=dt) + 3.0
    mu = 0.7
    x = QuadraticPrior(mu).prox(v)
    assert torch.allclose(x - v + mu * x, torch.zeros_like(x))  # ∇: x − v + μx = 0
    assert torch.allclose(
        QuadraticPrior(mu).regularizer(x), 0.5 * mu * x.abs().pow(2).sum((1, 2, 3))
    )
    c = CenteredQuadraticPrior(mu)
    x = c.prox(v)
    perp = x - x.mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(x - v + mu * perp, torch.zeros_like(x))  # ∇: x − v + μP⊥x = 0
    assert torch.allclose(c.regularizer(x), 0.5 * mu * perp.abs().pow(2).sum((1, 2, 3)))


@pytest.mark.parametrize("a", [1e-3, 7.5, 1e3])
@pytest.mark.parametrize("b", [-1000.0, 3.0])
def test_centered_quadratic_prox_is_exactly_affine_equivariant(a, b):
    v = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=D)
    p = CenteredQuadraticPrior(0.7)
    assert _rel(p.prox(a * v + b), a * p.prox(v) + b) <= 1e-15 * (1 + abs(b) / a) * 10
