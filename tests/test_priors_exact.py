"""Exactness of the learned proximal networks (float64, random weights): affine equivariance,
convexity of ψ, monotonicity and a symmetric Jacobian of f = ∇ψ, and the inversion behind R.
The same checks show what the ablations are *not* (measured, not assumed)."""

from __future__ import annotations

import pytest
import torch

from priors.lpn import ConvLPN, DenseLPN, NormalizationTrick, local_mean
from priors.regularizer import evaluate_regularizer


def _model(kind: str, channels: int = 1, seed: int = 0, **arch):
    torch.manual_seed(seed)
    m = ConvLPN(kind=kind, in_channels=channels, width=8, levels=2, depth=1, **arch)
    m = m.double().eval()
    # Random (not freshly initialized) nonnegative z-weights, so tests do not rest on the init.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m.clamp_()
    return m


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


ARCHS = {
    "base": {},
    "bilinear-k4": {"upsample": "bilinear", "out_channels": 4},
    "global-pool": {"global_pool": True},
    "blur-down": {"downsample": "blur", "z_downsample": "blur", "padding": "replicate"},
    "tiled": {"tile": 6, "tile_stride": 5},  # sizes not multiples of 5: padded windows too
    "local-mean": {"local_mean_sigma": 2.5},
}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("channels", [1, 2])
def test_aelpn_exactly_affine_equivariant(channels, arch):
    m = _model("aelpn", channels, **ARCHS[arch])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, channels, 20, 28, generator=gen, dtype=torch.float64)  # odd size: padded
    fx = m.prox(x)
    worst = 0.0
    for a in (1e-2, 0.37, 1.0, 55.0, 1e3):
        for b in (-2000.0, -1.5, 0.0, 3.0, 2000.0):
            worst = max(worst, _rel(m.prox(a * x + b), a * fx + b))
    assert worst <= 1e-10


def test_aelpn_global_square_also_equivariant():
    m = _model("aelpn-global")
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    assert _rel(m.prox(25.0 * x - 700.0), 25.0 * m.prox(x) - 700.0) <= 1e-10


def test_ablations_have_only_their_own_equivariance():
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    scale = _model("scale-only")
    shift = _model("shift-only")
    lpn = _model("lpn")
    assert _rel(scale.prox(40.0 * x), 40.0 * scale.prox(x)) <= 1e-10
    assert _rel(shift.prox(x + 500.0), shift.prox(x) + 500.0) <= 1e-10
    # ...and measurably not the other one
    assert _rel(scale.prox(x + 5.0), scale.prox(x) + 5.0) > 1e-4
    assert _rel(shift.prox(40.0 * x), 40.0 * shift.prox(x)) > 1e-4
    assert _rel(lpn.prox(40.0 * x + 5.0), 40.0 * lpn.prox(x) + 5.0) > 1e-4


@pytest.mark.parametrize(
    "kind",
    [
        "aelpn",
        "aelpn-global",
        "scale-only",
        "shift-only",
        "lpn",
        "aelpn/bilinear-k4",
        "aelpn/global-pool",
        "lpn/global-pool",
        "aelpn/blur-down",
        "aelpn/tiled",
    ],
)
def test_potential_convex_midpoints(kind):
    """ψ((x+y)/2) ≤ (ψ(x)+ψ(y))/2 on 2,000 random pairs, including far-apart and scaled ones."""
    kind, _, arch = kind.partition("/")
    m = _model(kind, **ARCHS[arch or "base"])
    gen = torch.Generator().manual_seed(4)
    violations = 0
    for scale in (0.01, 1.0, 100.0, 1000.0):
        x = scale * torch.randn(500, 1, 8, 8, generator=gen, dtype=torch.float64)
        y = scale * torch.randn(500, 1, 8, 8, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            lhs = m.potential(0.5 * (x + y))
            rhs = 0.5 * (m.potential(x) + m.potential(y))
        violations += int((lhs > rhs + 1e-12 * rhs.abs().clamp_min(1.0)).sum())
    assert violations == 0


@pytest.mark.parametrize("kind", ["aelpn", "lpn"])
def test_prox_is_monotone(kind):
    m = _model(kind)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(200, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = x + torch.randn(200, 1, 8, 8, generator=gen, dtype=torch.float64) * 0.3
    d = ((m.prox(x) - m.prox(y)) * (x - y)).flatten(1).sum(1)
    assert float(d.min()) >= -1e-12


def _jacobian_asymmetry(prox, x: torch.Tensor, seed: int = 6) -> float:
    """|<w, Jᵀv> − <v, Jᵀw>| / (|<w, Jᵀv>| + |<v, Jᵀw>|): 0 iff J is symmetric on (v, w)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    w = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    x = x.clone().requires_grad_(True)
    fx = prox(x)
    (jt_v,) = torch.autograd.grad(fx, x, v, retain_graph=True)
    (jt_w,) = torch.autograd.grad(fx, x, w)
    a, b = float((w * jt_v).sum()), float((v * jt_w).sum())
    return abs(a - b) / (abs(a) + abs(b))


def test_jacobian_symmetric_for_lpn_not_for_normalization_trick():
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for arch in ARCHS.values():
        m = _model("aelpn", **arch)
        assert _jacobian_asymmetry(lambda t, m=m: m.prox(t, create_graph=True), x) <= 1e-10
    torch.manual_seed(1)
    trick = NormalizationTrick(width=8, levels=2, depth=1).double().eval()
    # affine-equivariant...
    assert _rel(trick.prox(3.0 * x + 2.0), 3.0 * trick.prox(x) + 2.0) <= 1e-10
    # ...but not a gradient field, so not a prox
    assert _jacobian_asymmetry(lambda t: trick.prox(t, create_graph=True), x) > 1e-3
    assert not hasattr(trick, "regularizer")


def test_tiled_prox_is_local_and_periodic():
    """With ``tile``, ψ is applied on every t×t window with the window's own mean split off:
    f then depends on x only through the windows around each pixel (the global mean cancels
    exactly), and on a periodic grid it commutes with shifts by the stride."""
    tiled = _model("aelpn", tile=8, tile_stride=4)
    plain = _model("aelpn")
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(2, 1, 32, 32, generator=gen, dtype=torch.float64)
    far = x.clone()
    far[:, :, :4] += 50.0 + torch.rand(2, 1, 4, 32, generator=gen, dtype=torch.float64)
    # rows 0-3 lie only in the windows starting at rows 0 and 28 (which wraps): rows 8-27 not
    ft, ft_far = tiled.prox(x), tiled.prox(far)
    assert _rel(ft_far[:, :, 8:28], ft[:, :, 8:28]) <= 1e-12
    assert _rel(ft_far[:, :, :8], ft[:, :, :8]) > 1e-3  # but it does see the change nearby
    fp, fp_far = plain.prox(x), plain.prox(far)  # one global mean: every pixel moves
    assert _rel(fp_far[:, :, 8:28], fp[:, :, 8:28]) > 1e-3
    rolled = tiled.prox(torch.roll(x, (4, -8), (2, 3)))
    assert _rel(rolled, torch.roll(ft, (4, -8), (2, 3))) <= 1e-12
    # an image no larger than a window is one window: the untiled prox of the same weights
    plain.load_state_dict(tiled.state_dict())
    small = x[:, :, :8, :8]
    assert _rel(tiled.prox(small), plain.prox(small)) <= 1e-14
    with pytest.raises(ValueError, match="mean split"):
        ConvLPN(kind="lpn", tile=8)
    # sizes that are not multiples of the stride are zero-padded, so every pixel lies in equally
    # many windows: with h ≡ 0 (and α = 0), f is an average of projections, never above I
    quad = _model("aelpn", tile=6, tile_stride=5)
    quad.alpha = 0.0
    with torch.no_grad():
        quad.net.out_z.weight.zero_()
        quad.net.out_x.weight.zero_()
    v = torch.randn(1, 1, 17, 23, generator=gen, dtype=torch.float64)
    assert _rel(quad.prox(v), v) > 1e-3  # (not the identity: it keeps local means)
    for _ in range(60):  # power iteration: the largest eigenvalue of the linear, symmetric f
        v = quad.prox(v)
        v = v / v.norm()
    assert float(quad.prox(v).norm()) <= 1 + 1e-9
    # R is still evaluated by inverting f
    r = evaluate_regularizer(tiled, tiled.prox(x[:1, :, :16, :24]), iters=500)
    assert float(r.residual.max()) <= 1e-5


def test_local_mean_operator_is_a_symmetric_contraction_keeping_constants():
    """G (``local_mean``) as a matrix: symmetric, G1 = 1, eigenvalues in [0, 1], at sizes
    smaller than the blur's radius too. That is what makes ψ = ½xᵀ(I − Q²)x + φ(Qx) convex
    (I − Q² ⪰ 0 with Q = I − G) and its identity part exact."""
    for h, w, sigma in ((13, 9, 3.0), (5, 7, 12.0), (16, 16, 1.0)):
        n = h * w
        g = local_mean(torch.eye(n, dtype=torch.float64).view(n, 1, h, w), sigma).view(n, n)
        assert float((g - g.T).abs().max()) <= 1e-14
        assert float((g.sum(1) - 1).abs().max()) <= 1e-12
        ev = torch.linalg.eigvalsh(g)
        assert float(ev.min()) >= -1e-12 and float(ev.max()) <= 1 + 1e-12
    # it is a local mean: a far-away pixel does not enter, a near one does
    e = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    e[0, 0, 0, 0] = 1.0
    ge = local_mean(e, 2.0)
    assert float(ge[0, 0, 20:, :].abs().max()) == 0.0 and float(ge[0, 0, 1, 1]) > 0.01


def test_local_mean_prox_is_local_and_shift_consistent():
    """With ``local_mean_sigma``, the mean split is local: f depends on x only near each pixel
    (no global mean), an image shifted by any amount gives the shifted prox away from the
    borders, and with h ≡ 0 f is the low-pass I − Q², never above I."""
    lm = _model("aelpn", local_mean_sigma=2.0)
    plain = _model("aelpn")
    plain.load_state_dict(lm.state_dict())
    gen = torch.Generator().manual_seed(9)
    x = torch.rand(2, 1, 64, 32, generator=gen, dtype=torch.float64)
    far = x.clone()
    far[:, :, :4] += 50.0 + torch.rand(2, 1, 4, 32, generator=gen, dtype=torch.float64)
    f, f_far = lm.prox(x), lm.prox(far)
    assert _rel(f_far[:, :, 40:], f[:, :, 40:]) <= 1e-12
    assert _rel(f_far[:, :, :8], f[:, :, :8]) > 1e-3
    fp, fp_far = plain.prox(x), plain.prox(far)  # the global mean split: every pixel moves
    assert _rel(fp_far[:, :, 40:], fp[:, :, 40:]) > 1e-3
    # no windows: a shift by the network's own period (4) commutes away from the borders
    y = torch.rand(1, 1, 136, 32, generator=gen, dtype=torch.float64)
    a, b = lm.prox(y[:, :, :128]), lm.prox(y[:, :, 4:132])
    assert _rel(b[:, :, 50:70], a[:, :, 54:74]) <= 1e-12
    quad = _model("aelpn", local_mean_sigma=2.0)
    quad.alpha = 0.0
    with torch.no_grad():
        quad.net.out_z.weight.zero_()
        quad.net.out_x.weight.zero_()
    v = torch.randn(1, 1, 17, 23, generator=gen, dtype=torch.float64)
    assert _rel(quad.prox(v), local_mean(v, 2.0) * 2 - local_mean(local_mean(v, 2.0), 2.0)) < 1e-12
    for _ in range(60):  # power iteration on the linear, symmetric f
        v = quad.prox(v)
        v = v / v.norm()
    assert float(quad.prox(v).norm()) <= 1 + 1e-9
    r = evaluate_regularizer(lm, lm.prox(x[:1, :, :16, :24]), iters=500)
    assert float(r.residual.max()) <= 1e-5
    with pytest.raises(ValueError, match="mean split"):
        ConvLPN(kind="lpn", local_mean_sigma=4.0)
    with pytest.raises(ValueError, match="not both"):
        ConvLPN(kind="aelpn", tile=8, local_mean_sigma=4.0)


def _noise_model(channels: int = 1, **arch):
    m = _model("aelpn", channels, noise_input=True, **arch)
    m.noise_level = 0.1
    return m


NOISE_ARCHS = {
    "base": {},
    "local-mean": {"local_mean_sigma": 2.5},
    "sigma-smoothing": {"local_mean_sigma": 2.5, "sigma_smoothing": True},
}


@pytest.mark.parametrize("arch", NOISE_ARCHS)
@pytest.mark.parametrize("channels", [1, 2])
def test_noise_input_prox_is_jointly_equivariant(channels, arch):
    """f(a·x + b; a·σ) = a·f(x; σ) + b to 1e-10 (ψ 2-homogeneous in (x, σ), constants split off),
    per image σ too; and σ matters (f(x; σ) ≠ f(x; 2σ)). With sigma_smoothing the κ·σ² under
    each activation's root is part of that homogeneity."""
    m = _noise_model(channels, **NOISE_ARCHS[arch])
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(3, channels, 20, 28, generator=gen, dtype=torch.float64)
    sig = torch.tensor([0.05, 0.1, 0.3], dtype=torch.float64)
    m.noise_level = sig
    fx = m.prox(x)
    worst = 0.0
    for a in (1e-2, 0.37, 55.0, 1e3):
        for b in (-2000.0, 0.0, 3.0):
            m.noise_level = a * sig
            worst = max(worst, _rel(m.prox(a * x + b), a * fx + b))
    assert worst <= 1e-10
    m.noise_level = 2 * sig
    assert _rel(m.prox(x), fx) > 1e-4


@pytest.mark.parametrize("smoothing", [False, True])
def test_noise_input_prox_is_a_prox_at_each_sigma(smoothing):
    """At a fixed σ: ψ convex on random midpoints, f monotone, Jacobian symmetric, R invertible."""
    m = _noise_model(local_mean_sigma=2.0, **({"sigma_smoothing": True} if smoothing else {}))
    if smoothing:
        assert min(float(k.detach().min()) for k in m.net.kappa) >= 0.0  # clamp_ keeps κ ≥ 0
    gen = torch.Generator().manual_seed(12)
    for sigma in (0.0, 0.1, 3.0):
        m.noise_level = sigma
        x = torch.randn(400, 1, 8, 8, generator=gen, dtype=torch.float64)
        y = torch.randn(400, 1, 8, 8, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            lhs = m.potential(0.5 * (x + y))
            rhs = 0.5 * (m.potential(x) + m.potential(y))
        assert int((lhs > rhs + 1e-12 * rhs.abs().clamp_min(1.0)).sum()) == 0
        d = ((m.prox(x) - m.prox(y)) * (x - y)).flatten(1).sum(1)
        assert float(d.min()) >= -1e-12
        z = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=gen)
        assert _jacobian_asymmetry(lambda t: m.prox(t, create_graph=True), z) <= 1e-10
    m.noise_level = 0.1
    r = evaluate_regularizer(m, m.prox(torch.rand(2, 1, 16, 16, dtype=torch.float64)), iters=500)
    assert float(r.residual.max()) <= 1e-5


def test_noise_input_needs_a_valid_sigma_and_wrappers_pass_it_on():
    from priors.base import ComplexAsChannels
    from priors.lpn import set_noise_level, takes_noise_level, told_noise_level

    m = _model("aelpn", noise_input=True)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="told the noise level"):
        m.prox(x)
    for bad in (-0.1, float("nan"), torch.ones(3, dtype=torch.float64)):
        m.noise_level = bad
        with pytest.raises(ValueError, match="noise_level"):
            m.prox(x)
    m.noise_level = None
    wrapped = ComplexAsChannels(_model("aelpn", 2, noise_input=True))
    assert takes_noise_level(wrapped) and not takes_noise_level(_model("aelpn"))
    set_noise_level(wrapped, 0.2)
    assert wrapped.prior.noise_level == 0.2
    with told_noise_level(m, 0.3):
        inside = m.prox(x)
    assert m.noise_level is None
    m.noise_level = 0.3
    assert torch.equal(m.prox(x), inside)
    with pytest.raises(ValueError, match="does not take"):
        set_noise_level(_model("aelpn"), 0.1)
    with pytest.raises(ValueError, match="tile"):
        ConvLPN(kind="aelpn", tile=8, noise_input=True)


def test_blind_noise_estimate_is_accurate_and_equivariant():
    from priors.lpn import estimate_noise_level

    gen = torch.Generator().manual_seed(13)
    ramp = torch.linspace(0, 1, 128, dtype=torch.float64).expand(128, 128)  # smooth content
    clean = (ramp + 0.5 * ramp.T).expand(4, 1, 128, 128)
    sig = torch.tensor([0.01, 0.05, 0.1, 0.5], dtype=torch.float64)
    noisy = clean + sig.view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=gen).double()
    est = estimate_noise_level(noisy)
    assert float(((est - sig) / sig).abs().max()) < 0.05
    assert _rel(estimate_noise_level(40.0 * noisy - 1000.0), 40.0 * est) <= 1e-10
    assert float(estimate_noise_level(clean).max()) <= 1e-12  # no noise in a smooth ramp


def test_regularizer_inversion_and_known_values():
    m = _model("aelpn")
    x = m.prox(torch.rand(2, 1, 16, 16, dtype=torch.float64))  # in the range of f
    r = evaluate_regularizer(m, x, iters=500)
    assert float(r.residual.max()) <= 1e-5
    # Fenchel–Young: R(x) + ½||x||² + ψ(u) = <x, u>, and R is a prox's regularizer:
    # x = f(u) minimizes R(·) + ½||· − u||², so R(x) + ½||x − u||² ≤ R(x') + ½||x' − u||².
    xp = x + 0.05 * torch.randn_like(x)
    rp = evaluate_regularizer(m, xp, iters=500).value
    lhs = r.value + 0.5 * (x - r.u).flatten(1).pow(2).sum(1)
    rhs = rp + 0.5 * (xp - r.u).flatten(1).pow(2).sum(1)
    assert bool((lhs <= rhs + 1e-6).all())


def test_dense_models_and_equivariance():
    torch.manual_seed(0)
    m = DenseLPN("aelpn", dim=5).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    assert _rel(m.prox(9.0 * x - 3.0), 9.0 * m.prox(x) - 3.0) <= 1e-10
    s = DenseLPN("scale-only", dim=1).double()
    t = torch.linspace(-4, 4, 9, dtype=torch.float64)[:, None]
    assert _rel(s.prox(0.3 * t), 0.3 * s.prox(t)) <= 1e-10
    with pytest.raises(ValueError, match="identity"):
        DenseLPN("aelpn", dim=1)
