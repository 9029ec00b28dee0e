"""The convex-ridge AE-LPN (``priors.ridge``): firmly nonexpansive for *any* weights, exactly a
prox, exactly affine-equivariant, and its norm bound really bounds. Random weights (not the
init), float64 unless a test says otherwise."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from priors.checkpoint import load_prior, save_checkpoint
from priors.jacobian import hessian_operator, top_eigenvalue
from priors.lpn import told_noise_level
from priors.regularizer import evaluate_regularizer
from priors.ridge import RidgeProx, conv_norm_bound


def _model(
    channels: int = 1,
    seed: int = 0,
    filters: int = 12,
    kernel: int = 5,
    dilations=(1,),
    slope_bound: bool = False,
) -> RidgeProx:
    torch.manual_seed(seed)
    m = RidgeProx(
        in_channels=channels,
        filters=filters,
        kernel=kernel,
        knots=9,
        dilations=dilations,
        slope_bound=slope_bound,
    )
    m = m.double().eval()
    with torch.no_grad():  # random shrinkage curves, filters and widths
        m.slopes.uniform_(-0.5, 1.5)  # out of range on purpose: the model clamps them
        if slope_bound:  # curves that never bend fully, each its own way
            m.slopes.mul_(torch.rand(filters, 1, dtype=m.slopes.dtype))
        m.offset.normal_()
        m.log_width.add_(0.5 * torch.randn_like(m.log_width))
        m.weight.add_(0.3 * torch.randn_like(m.weight))
    return m


def _images(channels: int = 1, seed: int = 0, b: int = 3, h: int = 18, w: int = 23):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, channels, h, w, generator=gen, dtype=torch.float64)


DILATIONS = [(1,), (1, 2), "slope-bound"]


def _arch(dilations) -> dict:
    """(1,), (1, 2), or 'slope-bound' (dilations 1,2 with the slope-aware bound)."""
    if dilations == "slope-bound":
        return {"dilations": (1, 2), "slope_bound": True}
    return {"dilations": dilations}


@pytest.mark.parametrize("dilations", DILATIONS)
def test_closed_form_prox_is_the_gradient_of_psi(dilations):
    m = _model(**_arch(dilations))
    x = _images()
    m.noise_level = 0.07
    f, psi = m._gradient(x, create_graph=False)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m.potential(xg).sum(), xg)
    assert (f - g).abs().max() <= 1e-12 * g.abs().max()
    assert torch.allclose(psi, m.potential(x), rtol=1e-12, atol=0)


def test_shrinkage_curve_is_continuous_with_slopes_in_0_1():
    m = _model()
    t = torch.linspace(-8, 8, 40001, dtype=torch.float64).view(1, 1, 1, -1).expand(1, 12, 1, -1)
    scale = torch.full((1, 12, 1, 1), 0.9, dtype=torch.float64)
    g, p = m._shrinkage(t, scale)
    h = float(t[0, 0, 0, 1] - t[0, 0, 0, 0])
    slope = g.diff(dim=-1) / h
    assert slope.min() >= -1e-9 and slope.max() <= 1 + 1e-9  # p'' in [0, 1]
    # p' = g: the trapezoidal rule on g reproduces p's increments (error O(h²) at the knots)
    inc = 0.5 * (g[..., 1:] + g[..., :-1]) * h
    assert (p.diff(dim=-1) - inc).abs().max() <= 1e-6
    assert p[..., 20000].abs().max() <= 1e-12  # Φ(0) = 0


@pytest.mark.parametrize("grid", [64, 256])
def test_conv_norm_bound_bounds_the_operator_norm(grid):
    gen = torch.Generator().manual_seed(3)
    for c_in in (1, 2):
        weight = torch.randn(6, c_in, 5, 5, generator=gen, dtype=torch.float64)
        bound = float(conv_norm_bound(weight, grid))
        # ||V||² on a large image by power iteration on VᵀV (zero padding): a lower estimate
        x = torch.randn(1, c_in, 96, 96, generator=gen, dtype=torch.float64)
        for _ in range(300):
            x = F.conv_transpose2d(F.conv2d(x, weight, padding=2), weight, padding=2)
            x = x / x.norm()
        est = float(F.conv2d(x, weight, padding=2).pow(2).sum())
        assert est <= bound
        # and the bound is tight up to its stated factor 1 / (1 − τ²/2), τ = 2πd/N
        tau = math.pi * 8 / grid
        assert bound * (1 - 0.5 * tau**2) <= est * 1.02


def test_conv_norm_bound_of_a_delta_filter_is_one_up_to_its_factor():
    w = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    w[0, 0, 1, 1] = 1.0
    tau = math.pi * 4 / 256
    want = 1 / (1 - 0.5 * tau**2) * (1 + 1e-4)
    assert float(conv_norm_bound(w, 256)) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="too coarse"):
        conv_norm_bound(torch.ones(1, 1, 9, 9), 32)


def test_dilated_convolution_adjoint_and_bound():
    m = _model(channels=2, dilations=(1, 3))
    w = m._scaled_weight()
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(2, 2, 21, 17, generator=gen, dtype=torch.float64)
    t = torch.randn(2, 12, 21, 17, generator=gen, dtype=torch.float64)
    lhs = (m._conv(u, w) * t).sum()
    rhs = (u * m._conv_t(t, w)).sum()
    assert float((lhs - rhs).abs()) <= 1e-12 * float(lhs.abs())
    # the scaled W has norm ≤ 1 (power iteration, a lower estimate of ||W||²)
    x = torch.randn(1, 2, 64, 64, generator=gen, dtype=torch.float64)
    for _ in range(200):
        x = m._conv_t(m._conv(x, w), w)
        x = x / x.norm()
    assert float(m._conv(x, w).pow(2).sum()) <= 1.0


@pytest.mark.parametrize("sigma", [0.0, 0.003, 0.05, 1.0])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("dilations", DILATIONS)
def test_jacobian_eigenvalues_in_0_1_for_random_weights(sigma, channels, dilations):
    """Lanczos to convergence: λ_max is 1 (constants) and never above, at every σ."""
    m = _model(channels, seed=int(sigma * 1000) + channels, **_arch(dilations))
    x = _images(channels, h=16, w=16) + 0.2 * torch.randn(3, channels, 16, 16, dtype=torch.float64)
    m.noise_level = sigma
    est = top_eigenvalue(hessian_operator(m, x), x.shape, max_iters=120, tol=1e-6)
    assert est.converged
    assert float(est.value.max()) <= 1 + 1e-9
    assert float(est.value.min()) >= 1 - 1e-6  # the constant image is an eigenvector, value 1


@pytest.mark.parametrize("sigma", [0.0, 0.02, 0.3])
@pytest.mark.parametrize("dilations", DILATIONS)
def test_firmly_nonexpansive_on_random_pairs(sigma, dilations):
    """||f(x) − f(y)||² ≤ ⟨f(x) − f(y), x − y⟩ (the definition), far apart and close by."""
    m = _model(seed=5, **_arch(dilations))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 20, 20, generator=gen, dtype=torch.float64)
    for scale in (3.0, 0.1, 1e-3):
        y = x + scale * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        with told_noise_level(m, sigma):
            d = m.prox(x) - m.prox(y)
        lhs = d.pow(2).flatten(1).sum(1)
        rhs = (d * (x - y)).flatten(1).sum(1)
        assert bool((lhs <= rhs * (1 + 1e-12) + 1e-300).all())


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("dilations", DILATIONS)
def test_exactly_affine_equivariant_with_the_noise_level(channels, dilations):
    m = _model(channels, seed=2, **_arch(dilations))
    x = _images(channels)
    sigma = 0.04
    with told_noise_level(m, sigma):
        fx = m.prox(x)
    worst = 0.0
    for a in (1e-2, 0.37, 55.0, 1e3):
        for b in (-2000.0, 0.0, 3.0):
            with told_noise_level(m, a * sigma):
                got = m.prox(a * x + b)
            worst = max(worst, float((got - (a * fx + b)).norm() / (a * fx + b).norm()))
    assert worst <= 1e-10


def test_sigma_zero_is_the_limit_of_small_sigma():
    m = _model(seed=4)
    x = _images()
    with told_noise_level(m, 0.0):
        f0 = m.prox(x)
    with told_noise_level(m, 1e-13):
        f1 = m.prox(x)
    assert (f0 - f1).abs().max() <= 1e-9


def test_regularizer_free_value_matches_inversion():
    m = _model(seed=6)
    x = _images(b=2, h=12, w=12)
    with told_noise_level(m, 0.05):
        fx, r_free = m.prox_and_regularizer(x)
        r_inv = evaluate_regularizer(m, fx, iters=500, tol=1e-10)
    assert float(r_inv.residual.max()) <= 1e-6
    assert torch.allclose(r_free, r_inv.value, rtol=1e-6, atol=1e-8)


def test_needs_a_noise_level_and_checks_shapes():
    m = _model()
    with pytest.raises(ValueError, match="noise level"):
        m.prox(_images())
    m.noise_level = 0.1
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        m.prox(_images(channels=2))
    m.noise_level = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        m.prox(_images())
    with pytest.raises(ValueError, match="odd kernel"):
        RidgeProx(kernel=4)
    with pytest.raises(ValueError, match="equal groups"):
        RidgeProx(filters=10, dilations=(1, 2, 3))


def test_checkpoint_round_trip_and_training_keeps_slopes_in_range(tmp_path):
    m = _model(dilations=(1, 2)).float().train()
    m.noise_level = 0.1
    opt = torch.optim.Adam(m.parameters(), lr=0.5)  # large steps push slopes out of [0, 1]
    x = torch.rand(4, 1, 16, 16)
    for _ in range(3):
        loss = (m.prox(x + 0.1 * torch.randn_like(x), create_graph=True) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.clamp_()
    assert float(m.slopes.detach().min()) >= 0 and float(m.slopes.detach().max()) <= 1
    path = tmp_path / "ridge.safetensors"
    save_checkpoint(path, m.eval(), {"note": "test"})
    back = load_prior(path)
    assert isinstance(back, RidgeProx) and back.config() == m.config()
    with told_noise_level(back, 0.1), told_noise_level(m, 0.1):
        assert torch.equal(back.prox(x), m.prox(x))
