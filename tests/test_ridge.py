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
from priors.ridge import RidgeProx, conv_adjoint, conv_norm_bound


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knot_index_is_bucketize_except_within_rounding_of_a_knot(dtype):
    m = _model()
    r = m.knot_grid.to(dtype)
    gen = torch.Generator().manual_seed(0)
    u = torch.cat(
        [
            (torch.rand(20000, generator=gen, dtype=torch.float64) * 3 - 1.5) * float(r[-1]),
            r.double(),  # the knots themselves and their neighbours
            r.double() + 1e-3,
            r.double() - 1e-3,
            torch.tensor([math.inf, -math.inf, 0.0], dtype=torch.float64),
        ]
    ).to(dtype)
    fast, exact = m._knot_index(u).long(), torch.bucketize(u, r)
    assert fast.min() >= 0 and fast.max() <= r.numel()
    off = fast != exact
    # a different segment only for u within rounding of the knot between the two segments
    # (Φ' is continuous there); the arithmetic's error is a few ulps of the grid's range
    gap = (u[off, None].double() - r[None].double()).abs().min(1).values
    assert bool(((fast[off] - exact[off]).abs() <= 1).all())
    assert bool((gap <= 8 * torch.finfo(dtype).eps * float(r.abs().max())).all())
    # a checkpoint with an uneven grid gets torch.bucketize itself
    with torch.no_grad():
        m.knot_grid.copy_(m.knot_grid.sign() * m.knot_grid.abs().pow(1.5))
    r = m.knot_grid.to(dtype)
    assert torch.equal(m._knot_index(u).long(), torch.bucketize(u, r))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_shrinkage_and_potential_sum_match_the_graph_path(dtype):
    """The inner solve's in-place g (``_shrinkage_``) and the value's Σp (``_potential_sum_``)
    are ``_shrinkage``'s, up to the order of float sums; at σ = 0 and on an uneven knot grid
    they fall back to it."""
    m = _model().to(dtype)
    gen = torch.Generator().manual_seed(3)
    r = float(m.knot_grid.abs().max())
    t = ((torch.rand(2, 12, 17, 19, generator=gen, dtype=torch.float64) * 3 - 1.5) * r).to(dtype)
    scale = (0.2 + torch.rand(2, 12, 1, 1, generator=gen, dtype=torch.float64)).to(dtype)
    eps = torch.finfo(dtype).eps

    def check(scale: torch.Tensor) -> None:
        with torch.no_grad():
            g, p = m._shrinkage(t, scale)
        work: list[torch.Tensor] = []
        total = m._potential_sum_(t, scale, work)
        g_fast, none = m._shrinkage_(t.clone(), scale, work)
        assert none is None
        # both at once (the closed form's gradient-free prox): the same g, the sum in the
        # order of its own per-channel dot products
        g_both, total_both = m._shrinkage_(t.clone(), scale, with_value=True)
        assert torch.equal(g_both, g_fast)
        # a segment may differ only within rounding of a knot, where Φ' is continuous
        assert (g_fast - g).abs().max() <= 16 * eps * float(t.abs().max() + g.abs().max())
        # the sums' orders differ: the recursive-summation bound n·eps·Σ(|½s t²| + |a c t| +
        # |a² k|) per image, the three terms the sums add (≥ n·eps·Σ|p|)
        with torch.no_grad():
            _, sj, cj, kj = m._segments(t, scale)
        terms = (0.5 * sj * t * t).abs() + (scale * cj * t).abs() + (scale**2 * kj).abs()
        bound = 3 * p[0].numel() * eps * terms.flatten(1).sum(1)
        for value in (total, total_both):
            assert bool(((value - p.flatten(1).sum(1)).abs() <= bound).all())

    check(scale)
    check(torch.where(torch.arange(12).view(1, -1, 1, 1) == 3, 0.0, scale))  # σ·w = 0 somewhere
    with torch.no_grad():
        m.knot_grid.copy_(m.knot_grid.sign() * m.knot_grid.abs().pow(1.5))
    check(scale)


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("c_in", [1, 2])
def test_conv_adjoint_is_the_transposed_convolution(dilation, c_in):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(9, c_in, 5, 5, generator=gen, dtype=torch.float64)
    t = torch.randn(3, 9, 19, 23, generator=gen, dtype=torch.float64)
    u = torch.randn(3, c_in, 19, 23, generator=gen, dtype=torch.float64)
    pad = 2 * dilation
    out = conv_adjoint(t, w, padding=pad, dilation=dilation)
    ref = F.conv_transpose2d(t, w, padding=pad, dilation=dilation)
    assert out.shape == u.shape
    assert (out - ref).abs().max() <= 1e-12 * ref.abs().max()
    lhs = (F.conv2d(u, w, padding=pad, dilation=dilation) * t).sum()
    assert float((lhs - (u * out).sum()).abs()) <= 1e-12 * float(lhs.abs())


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
    w = m._scaled_weight().detach()
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


@pytest.mark.parametrize("mode", ["closed form", "prox"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_input_gives_nan_not_an_index_error(mode, bad):
    """A NaN (or ∞, whose filter responses meet ∞ − ∞) entry reads a valid row of the spline
    tables: the output is NaN where it reaches, which a solver's divergence test reports, instead
    of an out-of-range table index."""
    m = _prox_model() if mode == "prox" else _model()
    v = _images(b=1)
    v[0, 0, 3, 3] = bad
    with told_noise_level(m, 0.1):
        out = m.prox(v)
        assert out.shape == v.shape and bool(out.isnan().any())
        assert bool(torch.isfinite(m.prox(_images(b=1))).all())


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


# -- mode "prox": the exact prox of λ·m by an inner solve ------------------------------------


def _prox_model(seed: int = 0, strength: float = 3.0, groups: int = 0, **arch) -> RidgeProx:
    """Random weights as ``_model``, in mode "prox", solved far below float64's own noise; with
    ``groups``, random group filters, curves (slopes partly out of range) and widths too."""
    base = _model(seed=seed, **arch)
    m = RidgeProx(
        filters=12, kernel=5, knots=9, mode="prox", tol=1e-12, max_iters=3000, groups=groups,
        group_knots=6, **arch,
    )  # fmt: skip
    state = {**base.state_dict(), "log_strength": torch.tensor(math.log(strength))}
    m.load_state_dict(state, strict=not groups)
    m = m.double().eval()
    if groups:
        gen = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            m.group_weight.add_(0.3 * torch.randn(m.group_weight.shape, generator=gen).double())
            m.group_slopes.uniform_(-0.5, 1.5, generator=gen)
            m.log_group_width.add_(0.5 * torch.randn(groups, generator=gen).double())
    return m


GROUPS = [0, 2]


def _optimality(m: RidgeProx, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||∇F(z)|| / ||y||, F = ½||z − y||² + λm(z), per image."""
    with torch.no_grad():
        ops, _ = m._scales(y)
        grad = (z - y) + m.strength() * m._grad_m(z, ops)[0]
    return grad.flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("sigma", [0.0, 0.02, 0.3])
def test_prox_mode_minimizes_its_objective_and_beats_perturbations(sigma, groups):
    """z = f(y) is stationary for F (∇F ≈ 0) and F(z) ≤ F(z + δ) for random δ (F is convex)."""
    m = _prox_model(seed=3, groups=groups)
    y = _images() + 0.1 * torch.randn(3, 1, 18, 23, dtype=torch.float64)
    with told_noise_level(m, sigma):
        z = m.prox(y)
        assert float(_optimality(m, y, z).max()) <= 1e-10

        def objective(u):
            return 0.5 * (u - y).pow(2).flatten(1).sum(1) + m.regularizer(u)

        fz = objective(z)
        gen = torch.Generator().manual_seed(0)
        for size in (1e-3, 1e-1):
            delta = size * torch.randn(z.shape, generator=gen, dtype=torch.float64)
            assert bool((objective(z + delta) >= fz).all())


@pytest.mark.parametrize("groups", GROUPS)
def test_prox_mode_strength_factor_scales_r_and_regularizer_is_read_directly(groups):
    """With strength_factor t the output minimizes ½||z − y||² + t·λ·m (∇F ≈ 0), R = t·λ·m;
    ``prox_and_regularizer`` returns that R at the output, in float32 as accurately as R's own
    sum, even for intensities far from 0 (Fenchel–Young's ½||v||²-sized terms would cancel to
    an error of about 2⁻²⁴·||v||² there)."""
    m = _prox_model(seed=4, groups=groups)
    y = _images() + 0.1 * torch.randn(3, 1, 18, 23, dtype=torch.float64)
    with told_noise_level(m, 0.05):
        r1 = m.regularizer(y)
        m.strength_factor = 0.03
        z = m.prox(y)
        assert float(_optimality(m, y, z).max()) <= 1e-10  # strength() includes t
        assert torch.allclose(m.regularizer(y), 0.03 * r1, rtol=1e-12)
        with pytest.raises(ValueError, match="strength_factor"):
            m.strength_factor = 0.0
        m32 = m.float()  # (in place)
        m32.max_iters = 50  # float32 cannot reach the float64 tolerance; any output will do
        v = (y + 1000.0).float()  # R ignores a constant; ½||v||² does not
        z32, r32 = m32.prox_and_regularizer(v)
        exact = m32.double().regularizer(z32.double())
        assert float(exact.min()) > 0
        # R's float32 evaluation: n terms (and convolutions of k² terms), each within a few
        # 2⁻²⁴ of its value; Fenchel–Young's error would be about 2⁻²⁴·||v||², 10⁴× larger here
        n = v[0].numel()
        err = (r32.double() - exact).abs()
        assert bool((err <= 8 * n * 2.0**-24 * exact).all()), err / exact
        fy = 2.0**-24 * v.double().pow(2).flatten(1).sum(1)
        assert bool((8 * n * 2.0**-24 * exact < 1e-2 * fy).all())  # so the bound tells them apart


@pytest.mark.parametrize("dilations", [*DILATIONS, "groups"])
def test_prox_mode_exactly_affine_equivariant(dilations):
    """Every inner iterate and the stopping test scale with a: the output is equivariant to
    float64 round-off, whether the solve stops on its tolerance or not."""
    if dilations == "groups":
        m = _prox_model(seed=2, groups=2)
    else:
        m = _prox_model(seed=2, **_arch(dilations))
    m.tol = 1e-4  # stop on the tolerance, well before convergence
    x = _images()
    sigma = 0.04
    with told_noise_level(m, sigma):
        fx = m.prox(x)
    worst = 0.0
    for a in (1e-2, 55.0, 1e3):
        for b in (-2000.0, 3.0):
            with told_noise_level(m, a * sigma):
                got = m.prox(a * x + b)
            worst = max(worst, float((got - (a * fx + b)).norm() / (a * fx + b).norm()))
    assert worst <= 1e-10


@pytest.mark.parametrize("groups", GROUPS)
def test_prox_mode_jacobian_matches_differences_and_is_firmly_nonexpansive(groups):
    """J = (I + λ∇²m)⁻¹ agrees with central differences of f; Lanczos finds λ_max = 1 (the
    constant image) and nothing above; random pairs meet the definition of firm nonexpansiveness."""
    m = _prox_model(seed=5, strength=6.0, groups=groups)
    x = _images(h=16, w=16) + 0.2 * torch.randn(3, 1, 16, 16, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    with told_noise_level(m, 0.05):
        jac = hessian_operator(m, x)
        v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        eps = 1e-6
        fd = (m.prox(x + eps * v) - m.prox(x - eps * v)) / (2 * eps)
        # central differences of a piecewise-smooth map: O(eps) where a response crosses a knot
        assert float((jac(v) - fd).norm() / fd.norm()) <= 1e-4
        est = top_eigenvalue(jac, x.shape, max_iters=80, tol=1e-8)
        assert est.converged
        assert float(est.value.max()) <= 1 + 1e-9 and float(est.value.min()) >= 1 - 1e-6
        for scale in (3.0, 1e-2):
            y = x + scale * torch.randn(x.shape, generator=gen, dtype=torch.float64)
            d = m.prox(x) - m.prox(y)
            lhs = d.pow(2).flatten(1).sum(1)
            rhs = (d * (x - y)).flatten(1).sum(1)
            assert bool((lhs <= rhs * (1 + 1e-9)).all())


@pytest.mark.parametrize("groups", GROUPS)
def test_prox_mode_regularizer_is_explicit_and_fenchel_young_agrees(groups):
    m = _prox_model(seed=6, groups=groups)
    x = _images(b=2, h=12, w=12)
    with told_noise_level(m, 0.05):
        fx, r_free = m.prox_and_regularizer(x)
        r = m.regularizer(fx)
    assert torch.allclose(r_free, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("groups", GROUPS)
def test_prox_mode_implicit_gradient_matches_finite_differences(groups):
    """Training differentiates the fixed point: the gradient of a loss of f with respect to a
    filter tap, the strength and the input (and the group filters, curves and widths) equals
    central differences of the solved prox."""
    m = _prox_model(seed=7, groups=groups)
    x = _images(b=2, h=14, w=14)
    target = _images(b=2, h=14, w=14, seed=1)
    m.noise_level = 0.05

    def loss_value() -> float:
        with torch.no_grad():
            return float((m.prox(x) - target).pow(2).sum())

    m.train()
    xg = x.clone().requires_grad_(True)
    loss = (m.prox(xg, create_graph=True) - target).pow(2).sum()
    loss.backward()
    m.eval()
    eps = 1e-6
    params = [(m.weight, (0, 0, 1, 2)), (m.log_strength, ()), (m.slopes, (3, 4))]
    if groups:
        params += [(m.group_weight, (1, 0, 2, 3)), (m.group_slopes, (1, 1))]
        params += [(m.log_group_width, (0,))]
    for param, index in params:
        with torch.no_grad():
            param[index] += eps
            up = loss_value()
            param[index] -= 2 * eps
            down = loss_value()
            param[index] += eps
        fd = (up - down) / (2 * eps)
        assert abs(float(param.grad[index]) - fd) <= 1e-5 * max(1.0, abs(fd))
    v = torch.zeros_like(x)
    v[1, 0, 5, 6] = 1.0
    with torch.no_grad():
        fd = (
            (m.prox(x + eps * v) - target).pow(2).sum()
            - (m.prox(x - eps * v) - target).pow(2).sum()
        ) / (2 * eps)
    assert abs(float(xg.grad[1, 0, 5, 6]) - float(fd)) <= 1e-5 * max(1.0, abs(float(fd)))


def test_prox_mode_checkpoint_round_trip_and_train_from_a_gradient_step_prior(tmp_path):
    """`recon train --ridge-mode prox --init <gradient-step ridge>` starts from its filters and
    curves, trains, and the checkpoint loads back in mode "prox" with the same prox."""
    from recon.cli import main

    base = _model().float()
    src = tmp_path / "ridge.safetensors"
    save_checkpoint(src, base, {"note": "test"})
    out = tmp_path / "prox.safetensors"
    rc = main(
        [
            "train", "--kind", "fne-ridge", "--ridge-mode", "prox", "--init", str(src),
            "--data", "ellipses", "--steps", "2", "--batch", "2", "--patch", "16",
            "--sigma", "0.05", "--quiet", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    back = load_prior(out)
    assert isinstance(back, RidgeProx) and back.mode == "prox"
    assert back.config()["mode"] == "prox" and back.config()["kernel"] == 5
    x = torch.rand(2, 1, 16, 16)
    with told_noise_level(back, 0.05):
        z = back.prox(x)
        again = load_prior(out)
        with told_noise_level(again, 0.05):
            assert torch.equal(again.prox(x), z)
    with pytest.raises(ValueError, match="mode"):
        RidgeProx(mode="newton")


def test_prox_mode_warm_start_lands_within_the_tolerance_of_the_cold_solve():
    """Started from the previous output shifted by the change of input, z_prev + (v − v_prev)
    (as a solver run does), the inner solve stops sooner than cold or from z_prev alone, and
    its result stays within tol·σ·√n of the cold one (both are that close to the exact prox)."""
    m = _prox_model(seed=8)
    m.tol, m.relative_tol = 1e-3, 0.0  # the exact rule only (the inexact one: the next test)
    x = _images(b=2, h=16, w=16)
    x2 = x + 0.01 * _images(b=2, h=16, w=16, seed=3)  # the next, nearby input
    sigma = 0.05
    with told_noise_level(m, sigma):
        ops, s = m._scales(x2)
        cold, k_cold = m._solve(x2, ops, s)
        near = m.prox(x)
        _, k_prev = m._solve(x2, ops, s, z0=near)
        warm, k_warm = m._solve(x2, ops, s, z0=near + (x2 - x))
        m.warm_start = True
        m.prox(x)
        via_prox = m.prox(x2)
    bound = 2 * m.tol * sigma * math.sqrt(x2[0].numel())  # each within tol·σ·√n of z*
    assert k_warm < k_prev < k_cold
    assert float((warm - cold).flatten(1).norm(dim=1).max()) <= bound
    # the same start up to rounding (the prox shifts its own copy of the input), carried
    # through k_warm contractive iterations
    eps = torch.finfo(torch.float64).eps
    assert float((via_prox - warm).abs().max()) <= 10 * k_warm * eps * float(x2.abs().max())


def test_prox_mode_shifts_its_warm_start_for_admm_only():
    """A solve that passes its first check returns its start: ADMM's prox (strength factor 1)
    starts from z_prev + (v − v_prev) and so carries a tiny input change through; PnP-PGD's
    scaled-down prox starts from z_prev and returns it unchanged (PGD's iterate stays at its
    fixed point to the tolerance instead of drifting by its whole step)."""
    m = _prox_model(seed=10)
    m.tol, m.relative_tol = 1e-3, 0.0
    x = _images(b=2, h=16, w=16)
    d = 1e-12 * _images(b=2, h=16, w=16, seed=5)
    eps = torch.finfo(torch.float64).eps
    with told_noise_level(m, 0.05):
        m.warm_start = True
        a = m.prox(x)
        b = m.prox(x + d)
        assert float((b - a - d).abs().max()) <= 8 * eps * float(x.abs().max())
        assert not torch.equal(a, b)
        m.strength_factor = 0.1  # as PnP-PGD sets it (and forgets the previous call)
        a = m.prox(x)
        assert torch.equal(m.prox(x + d), a)


@pytest.mark.parametrize("eta", [0.1, 0.5, 2.0])
def test_prox_mode_inexact_warm_solve_is_within_eta_of_the_input_change(eta):
    """With ``relative_tol`` η a warm-started solve may stop once ||∇F|| ≤ η·||v − v_prev||:
    since F is 1-strongly convex its result is then within that distance of the exact prox
    (checked against a solve to float64's noise), per image, and it takes no more iterations
    than the exact rule."""
    m = _prox_model(seed=9)
    m.tol = 1e-3
    x = _images(b=3, h=16, w=16)
    step = torch.tensor([0.003, 0.03, 0.3], dtype=torch.float64).view(-1, 1, 1, 1)
    x2 = x + step * _images(b=3, h=16, w=16, seed=4)
    sigma = 0.05
    with told_noise_level(m, sigma):
        ops, s = m._scales(x2)
        m.tol = 1e-12
        exact, _ = m._solve(x2, ops, s)
        m.tol = 1e-3
        m.warm_start, m.relative_tol = True, 0.0
        m.prox(x)
        _ = m.prox(x2)
        m.warm_start, m.relative_tol = True, eta
        m.prox(x)
        loose = m.prox(x2)
    change = (x2 - x).flatten(1).norm(dim=1)
    floor = m.tol * sigma * math.sqrt(x2[0].numel())
    allowed = torch.clamp(eta * change, min=floor)
    err = (loose - exact).flatten(1).norm(dim=1)
    assert bool((err <= allowed * (1 + 1e-9)).all()), (err, allowed)
    # the looser limit is used: the largest change leaves the largest error, above the floor
    assert float(err[2]) > floor
    # a run's first solve (no previous input): within η·||∇F(v)|| of the prox, ||∇F(v)|| being
    # at least the prox's move ||v − z*||; it stops sooner than the exact rule
    lam = float(m.strength().detach())
    with told_noise_level(m, sigma):
        ops, s = m._scales(x2)
        first, k_first = m._solve(x2, ops, s, first_slack=eta)
        _, k_exact = m._solve(x2, ops, s)
        move0 = (lam * m._grad_m(x2, ops, with_value=False)[0]).flatten(1).norm(dim=1)
    err0 = (first - exact).flatten(1).norm(dim=1)
    assert bool((err0 <= torch.clamp(eta * move0, min=floor) * (1 + 1e-9)).all()), (err0, move0)
    assert bool(((x2 - exact).flatten(1).norm(dim=1) <= move0 * (1 + 1e-9)).all())
    assert k_first < k_exact


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mode": "newton"}, "unknown architecture"),
        ({"tol": -1.0}, "unknown architecture"),
        ({"filters": 13}, "weights do not fit"),
        ("not json", "corrupt checkpoint metadata"),
    ],
)
def test_tampered_prox_mode_checkpoint_is_refused_naming_the_file(tmp_path, change, message):
    """A checkpoint whose header was edited (an unknown mode, a negative tolerance, a filter
    count its tensors do not have, a header that is not JSON) is refused with the file named;
    nothing in it runs as code."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from priors.checkpoint import CheckpointError, read_checkpoint

    path = tmp_path / "crr.safetensors"
    save_checkpoint(path, _prox_model().float(), {"note": "test"})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    if isinstance(change, dict):
        meta["config"] = json.dumps({**json.loads(meta["config"]), **change})
    else:
        meta["config"] = change
    tensors = dict(read_checkpoint(path)[0]) if isinstance(change, dict) else None
    if tensors is None:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=rf"crr\.safetensors: .*{message}"):
        load_prior(path)


# -- groups: an isotropic (TV-like) part, Σ q(|(W_g Q z)_g|; σ) -----------------------------


def test_group_curve_is_convex_nondecreasing_and_its_derivatives_are_exact():
    """Φ(0) = 0, 0 ≤ Φ'(ρ) ≤ ρ, q continuous across the knots, and the a = q'(r)/r and
    b = q''(r) the solver and the Hessian use equal differences of q in r."""
    m = _prox_model(seed=9, groups=2)
    gscale = torch.tensor([0.7, 1.3], dtype=torch.float64).view(1, 2, 1, 1)
    r = torch.linspace(0.0, 12.0, 2401, dtype=torch.float64)  # crosses every knot (×0.7, ×1.3)
    t = torch.zeros(1, 4, r.numel(), 1, dtype=torch.float64)  # 2 groups of 2 responses
    t[0, 0, :, 0], t[0, 2, :, 0] = r, r  # group g's first response is r, the other zero
    with torch.no_grad():
        a, b, q = m._group_curve(t, gscale)
    q0, q1 = q[0, 0, :, 0], q[0, 1, :, 0]
    assert float(q0[0]) == 0.0 and float(q1[0]) == 0.0
    for g, qg in ((0, q0), (1, q1)):
        dq = torch.diff(qg) / torch.diff(r)  # q' between grid points
        mid = 0.5 * (r[1:] + r[:-1])
        assert bool((dq >= -1e-12).all()) and bool((dq <= mid + 1e-9).all())
        assert bool((torch.diff(dq) >= -1e-9).all())  # convex
        deriv = a[0, 2 * g, :, 0] * r  # q'(r) = a·r
        assert torch.allclose(0.5 * (deriv[1:] + deriv[:-1]), dq, atol=1e-3 * float(dq.abs().max()))
    assert bool(((a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)).all())


@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_groups_gradient_and_hessian_of_m_match_autograd(sigma):
    """∇m and ∇²m·v in closed form equal autograd's gradient and Hessian-vector product of m."""
    m = _prox_model(seed=10, groups=2)
    z = _images(b=2, h=12, w=13) + 0.1 * torch.randn(2, 1, 12, 13, dtype=torch.float64)
    v = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with told_noise_level(m, sigma):
        ops, _ = m._scales(z)
        grad, _ = m._grad_m(z, ops)
        hv = m._hessian_m(z, ops)(v)
        zg = z.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(m._grad_m(zg, ops)[1].sum(), zg, create_graph=True)
        (auto_hv,) = torch.autograd.grad((auto * v).sum(), zg)
    assert torch.allclose(grad, auto, rtol=1e-10, atol=1e-12)
    assert torch.allclose(hv, auto_hv, rtol=1e-9, atol=1e-11)


def test_train_adds_groups_switched_off_to_a_prox_prior(tmp_path):
    """`recon train --init P --groups G` starts from exactly P's prox (zero group curves), and
    --groups is refused for other kinds and for a prior that has groups already."""
    from recon.cli import main

    src = tmp_path / "crr.safetensors"
    save_checkpoint(src, _prox_model(seed=11).float(), {"note": "test"})
    out = tmp_path / "crr-g.safetensors"
    args = ["train", "--kind", "fne-ridge", "--steps", "0", "--quiet", "--data", "ellipses"]
    assert main([*args, "--init", str(src), "--groups", "2", "--out", str(out)]) == 0
    base, grouped = load_prior(src).double(), load_prior(out).double()
    for model in (base, grouped):
        model.tol, model.max_iters = 1e-8, 20000
    assert grouped.config()["groups"] == 2 and base.config().get("groups") is None
    x = _images(b=2, h=16, w=16)
    sigma = 0.05
    with told_noise_level(base, sigma), told_noise_level(grouped, sigma):
        gap = (base.prox(x) - grouped.prox(x)).flatten(1).norm(dim=1).max()
    assert float(gap) <= 2 * base.tol * sigma * math.sqrt(x[0].numel())  # both within tol of z*
    on = tmp_path / "crr-on.safetensors"
    assert (
        main([*args, "--init", str(src), "--groups", "1", "--group-start", "0.1", "--out", str(on)])
        == 0
    )
    started = load_prior(on).requires_grad_(False)
    assert (
        float(started.group_slopes[0, 0]) == 1.0
        and float(started.group_slopes[0, 1:].abs().max()) == 0.0
    )
    assert math.isclose(float(started.log_group_width.exp()), 0.1, rel_tol=1e-6)
    again = tmp_path / "again.safetensors"
    assert main([*args, "--init", str(out), "--groups", "1", "--out", str(again)]) == 2
    assert (
        main(["train", "--kind", "aelpn", "--groups", "1", "--steps", "0", "--out", str(again)])
        == 2
    )
    assert not again.exists()
    with pytest.raises(ValueError, match="groups"):
        RidgeProx(groups=1)  # gradient-step mode
