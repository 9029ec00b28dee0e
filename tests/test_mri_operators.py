"""MRI operators: Fourier convention (torch = SigPy), equality with SigPy's SENSE linops, the
closed-form normal solve, RSS, zero-filled images, dtypes and errors. Adjointness and gradients
of every MRI operator are in test_operators_generic.py (registered in cases_mri.py)."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy as sp
import sigpy.mri
import torch

from data.coils import birdcage_maps
from data.masks import fastmri_random_mask, radial_trajectory, spiral_trajectory
from operators.mri import SENSE, MaskedFFT, NonCartesianSENSE, fft2c, ifft2c, rss, zero_filled


def _crandn(shape, seed=0, dtype=np.complex128):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("shape", [(3, 20, 18), (2, 15, 17)])
def test_centred_fft_equals_sigpy_and_is_unitary(shape):
    """fftshift(fft2(ifftshift(x), norm='ortho')) == sigpy.fft(x, center=True, norm='ortho'),
    even and odd sizes; ifft2c inverts it and norms are preserved."""
    x = _crandn(shape)
    xt = torch.from_numpy(x)
    k = fft2c(xt)
    ref = sp.fft(x, axes=(-2, -1), center=True, norm="ortho")
    np.testing.assert_allclose(k.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(
        ifft2c(k).numpy(), sp.ifft(ref, axes=(-2, -1), center=True, norm="ortho"), atol=1e-12
    )
    np.testing.assert_allclose(ifft2c(k).numpy(), x, atol=1e-12)
    assert float(torch.linalg.vector_norm(k)) == pytest.approx(float(np.linalg.norm(x)))


def test_masked_fft_is_mask_times_sigpy_fft_and_keeps_precision():
    mask = fastmri_random_mask(16, 4, 0.125, seed=0)
    op = MaskedFFT(mask, height=12)
    assert op.domain_shape == op.range_shape == (1, 12, 16)
    x = _crandn((2, 1, 12, 16))
    y = op.forward(torch.from_numpy(x))
    assert y.dtype == torch.complex128
    np.testing.assert_allclose(
        y.numpy(), mask * sp.fft(x, axes=(-2, -1), center=True, norm="ortho"), atol=1e-12
    )
    assert op.forward(torch.from_numpy(x.astype(np.complex64))).dtype == torch.complex64
    real = torch.randn(1, 1, 12, 16, dtype=torch.float64)  # real input is promoted
    assert op.forward(real).dtype == torch.complex128
    assert MaskedFFT(mask).domain_shape == (1, 16, 16)  # 1-D mask without height: square


@pytest.mark.parametrize("kind", ["columns", "2d", "weights"])
def test_masked_fft_closed_form_normal_solve_equals_dense_solve(kind):
    """(λAᴴA + ρI)⁻¹ rhs: the closed form Fᴴ diag(1/(λm² + ρ)) F against a dense solve."""
    rng = np.random.default_rng(1)
    h, w = 8, 10
    if kind == "columns":
        op = MaskedFFT(fastmri_random_mask(w, 2, 0.2, seed=3), height=h)
    elif kind == "2d":
        op = MaskedFFT((rng.random((h, w)) < 0.4).astype(np.float32))
    else:  # nonnegative sampling weights: AᴴA = Fᴴ diag(m²) F
        op = MaskedFFT(rng.random((h, w)))
    lam, rho = 2.5, 0.3
    n = h * w
    basis = torch.eye(n, dtype=torch.complex128).reshape(n, 1, h, w)
    normal = op.normal(basis).reshape(n, n).T  # column j = AᴴA e_j
    dense = lam * normal + rho * torch.eye(n, dtype=torch.complex128)
    rhs = torch.from_numpy(_crandn((2, 1, h, w), seed=2))
    expected = torch.linalg.solve(dense, rhs.reshape(2, n).T).T.reshape(2, 1, h, w)
    closed = op.solve_normal(rhs, lam, rho)
    assert float((closed - expected).abs().max()) < 1e-10
    # and it really solves the system
    back = lam * op.normal(closed) + rho * closed
    assert float((back - rhs).abs().max()) < 1e-10


def test_sense_equals_sigpy_sense_linop():
    maps = birdcage_maps(4, (20, 22))
    mask = fastmri_random_mask(22, 4, 0.1, seed=4)
    ours = SENSE(maps, mask)
    theirs = sigpy.mri.linop.Sense(maps, weights=np.broadcast_to(mask, (20, 22)))
    x = _crandn((20, 22), seed=5, dtype=np.complex64)
    y = ours.forward(torch.from_numpy(x)[None, None])[0].numpy()
    np.testing.assert_allclose(y, theirs * x, atol=1e-5)
    yy = _crandn((4, 20, 22), seed=6, dtype=np.complex64) * mask
    back = ours.adjoint(torch.from_numpy(yy)[None])[0, 0].numpy()
    np.testing.assert_allclose(back, theirs.H * yy, atol=1e-5)


def test_sense_full_sampling_with_normalized_maps_is_an_isometry():
    """Σ|S_c|² = 1 and M = 1: AᴴA = I, and the RSS of the coil images is |x|."""
    maps = birdcage_maps(6, (16, 16))
    op = SENSE(maps, np.ones(16, np.float32))
    x = torch.from_numpy(_crandn((1, 1, 16, 16), seed=7))
    assert torch.allclose(op.normal(x), x, atol=1e-6)
    assert torch.allclose(zero_filled(op, op.forward(x)), x, atol=1e-6)
    coil_imgs = torch.from_numpy(maps).to(torch.complex128)[None] * x
    assert torch.allclose(rss(coil_imgs), x.abs()[:, 0], atol=1e-6)
    # the same through k-space: RSS of ifft2c of the fully sampled data
    assert torch.allclose(rss(ifft2c(op.forward(x))), x.abs()[:, 0], atol=1e-6)


def test_rss_definition():
    c = torch.from_numpy(_crandn((2, 3, 5, 4), seed=8))
    expected = torch.sqrt((c.real**2 + c.imag**2).sum(dim=1))
    assert torch.allclose(rss(c), expected)
    assert torch.allclose(rss(c.permute(1, 0, 2, 3), dim=0), expected)


def test_noncartesian_sense_equals_sigpy_and_cartesian_grid_equals_fft2c():
    """Same numbers as sigpy.mri.linop.Sense with coord; on the integer grid in [−N/2, N/2) the
    NUFFT approximates the centred orthonormal DFT (axis order: coord[:, 0] along H)."""
    maps = birdcage_maps(3, (20, 20))
    coord = radial_trajectory(16, 20)
    op = NonCartesianSENSE(maps, coord)
    assert op.range_shape == (3, 16 * 20)
    x = _crandn((20, 20), seed=9, dtype=np.complex64)
    ours = op.forward(torch.from_numpy(x)[None, None])[0].numpy()
    theirs = sigpy.mri.linop.Sense(maps, coord=coord) * x
    np.testing.assert_allclose(ours, theirs, atol=1e-5 * np.abs(theirs).max())

    h, w = 16, 12
    grid = np.stack(
        np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij"), -1
    ).reshape(-1, 2)
    cart = NonCartesianSENSE(np.ones((1, h, w)), grid)
    img = torch.from_numpy(_crandn((1, 1, h, w), seed=10))
    k = cart.forward(img)[0, 0].reshape(h, w)
    ref = fft2c(img)[0, 0]
    err = float(torch.linalg.vector_norm(k - ref) / torch.linalg.vector_norm(ref))
    assert err < 0.02  # measured 0.007 (Kaiser–Bessel kernel, width 4, oversampling 1.25)


def test_noncartesian_precision_and_density_compensation():
    n = 24
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    img = np.exp(-3 * ((xx - 0.2) ** 2 + yy**2)) * np.exp(1j * xx)
    op = NonCartesianSENSE(np.ones((1, n, n)), radial_trajectory(48, n))
    x = torch.from_numpy(img)[None, None]
    assert op.forward(x).dtype == torch.complex128
    assert op.forward(x.to(torch.complex64)).dtype == torch.complex64
    w = op.dcf()
    assert w.shape == (48 * n,) and np.all(w >= 0)
    y = op.forward(x)
    with_dcf = zero_filled(op, y, w)[0, 0].numpy()
    without = zero_filled(op, y)[0, 0].numpy()
    err = np.linalg.norm(with_dcf - img) / np.linalg.norm(img)
    assert err < 0.2  # measured ≈ 0.12: gridding with Pipe–Menon weights
    assert np.linalg.norm(without - img) / np.linalg.norm(img) > 5 * err


def test_spiral_trajectory_fits_noncartesian_operator():
    coord = spiral_trajectory(24, 4, 128)
    assert coord.shape == (512, 2) and coord.dtype == np.float32
    op = NonCartesianSENSE(birdcage_maps(2, (24, 24)), coord)
    assert op.range_shape == (2, 512)


def test_operators_reject_bad_shapes():
    with pytest.raises(ValueError, match="mask"):
        MaskedFFT(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="nonnegative"):
        MaskedFFT(-np.ones((4, 4)))
    with pytest.raises(ValueError, match="does not match"):
        SENSE(birdcage_maps(2, (8, 8)), np.ones(10))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        SENSE(np.ones((8, 8), np.complex64), np.ones(8))
    hwc = np.moveaxis(birdcage_maps(4, (16, 16)), 0, -1)  # (H, W, C): named, with the fix
    with pytest.raises(ValueError, match=r"last axis \(4\) looks like coils.*moveaxis"):
        SENSE(hwc, np.ones((16, 16)))
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        NonCartesianSENSE(birdcage_maps(2, (8, 8)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="N/2"):
        NonCartesianSENSE(birdcage_maps(2, (8, 8)), np.full((5, 2), 7.0))
    op = MaskedFFT(np.ones((8, 8)))
    with pytest.raises(ValueError, match="expected"):
        op.forward(torch.zeros(1, 1, 8, 9, dtype=torch.complex64))


def _dense_noncartesian_normal(maps: np.ndarray, coord: np.ndarray, x: np.ndarray) -> np.ndarray:
    """AᴴA x for the discrete Fourier model itself, E[k, r] = exp(−2πi (k₀r₀/H + k₁r₁/W))/√(HW)
    with centred pixel indices r, built densely in float64 (small images only)."""
    h, w = maps.shape[1:]
    r0, r1 = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij")
    phase = np.outer(coord[:, 0], r0.ravel()) / h + np.outer(coord[:, 1], r1.ravel()) / w
    e = np.exp(-2j * np.pi * phase) / np.sqrt(h * w)
    ehe = e.conj().T @ e
    out = np.zeros(x.shape, np.complex128)
    for b in range(x.shape[0]):
        for s in maps:
            out[b, 0] += np.conj(s) * (ehe @ (s * x[b, 0]).ravel()).reshape(h, w)
    return out


_TRAJECTORIES = {
    "radial-square": (32, 32, lambda: radial_trajectory(20, 64) * 0.5),
    "radial-odd-elliptical": (21, 17, lambda: radial_trajectory(16, 42) * np.array([0.5, 17 / 42])),
    "spiral": (24, 24, lambda: spiral_trajectory(24, 4, 128)),
}


@pytest.mark.parametrize("name", sorted(_TRAJECTORIES))
def test_toeplitz_normal_is_the_fourier_models_normal(name):
    """With ``toeplitz=True`` AᴴA comes from the embedding of one kernel: it must be the discrete
    Fourier model's AᴴA (dense, float64) to the accuracy of the width-8 NUFFT that builds the
    kernel (measured 1e-7; bound 1e-5), far closer than SigPy's default NUFFT pair (measured
    3e-3 to 5e-3), in float32 to its round-off too, exactly self-adjoint, on a batch, with
    odd sizes and H ≠ W, and differentiable."""
    h, w, make = _TRAJECTORIES[name]
    coord = make().astype(np.float64)
    maps = _crandn((3, h, w), seed=21)
    x = _crandn((2, 1, h, w), seed=22)
    exact = _dense_noncartesian_normal(maps, coord, x)

    def rel(a: torch.Tensor) -> float:
        return float(np.linalg.norm(a.detach().numpy() - exact) / np.linalg.norm(exact))

    pair = NonCartesianSENSE(maps, coord)
    toep = NonCartesianSENSE(maps, coord, toeplitz=True)
    xt = torch.from_numpy(x)
    assert rel(toep.normal(xt)) < 1e-5
    assert rel(toep.normal(xt)) < 1e-2 * rel(pair.normal(xt))
    t32 = toep.normal(xt.to(torch.complex64))
    assert t32.dtype == torch.complex64 and rel(t32) < 1e-5

    z = torch.from_numpy(_crandn((2, 1, h, w), seed=23))
    lhs = (toep.normal(xt) * z.conj()).sum()
    rhs = (xt * toep.normal(z).conj()).sum()
    assert abs(complex(lhs - rhs)) <= 1e-12 * abs(complex(lhs))
    assert float((toep.normal(xt) * xt.conj()).sum().real) > 0

    # linear in x, so d/dx Re<T x, z> = Tᴴz = T z
    xg = xt.clone().requires_grad_()
    (g,) = torch.autograd.grad((toep.normal(xg) * z.conj()).sum().real, xg)
    assert torch.allclose(g, toep.normal(z), rtol=1e-10, atol=1e-12 * float(z.abs().max()))


def test_toeplitz_residual_is_the_data_term_its_normal_defines():
    """``residual_sq`` of a Toeplitz operator is xᴴTx − 2Re xᴴAᴴy + ||y||², the data term the
    solvers minimize: equal to ||Ax − y||² to the NUFFT's accuracy (an accurate NUFFT,
    oversampling 2 and width 6, as recon mri uses), on a stack with a penalty too, and
    recomputed when y changes."""
    from operators import Diagonal, Stacked

    n = 24
    coord = radial_trajectory(24, 2 * n).astype(np.float64) * 0.5
    maps = _crandn((2, n, n), seed=30)
    op = NonCartesianSENSE(maps, coord, oversamp=2.0, width=6, toeplitz=True)
    x_true = torch.from_numpy(_crandn((1, 1, n, n), seed=31))
    noise = torch.from_numpy(_crandn((1, *op.range_shape), seed=32))
    for scale in (1e-1, 1e-3):
        y = op.forward(x_true) + scale * noise
        x = x_true + 0.05 * torch.from_numpy(_crandn((1, 1, n, n), seed=33))
        direct = float(torch.linalg.vector_norm(op.forward(x) - y)) ** 2
        assert abs(op.residual_sq(x, y) - direct) <= 1e-5 * float(y.abs().pow(2).sum())
        assert abs(op.residual_sq(x, y) - direct) <= 1e-3 * direct

    off = torch.zeros(n, n, dtype=torch.float64)
    off[:4] = 0.7
    stacked = Stacked(op, Diagonal(off, op.domain_shape, complex_=True))
    y2 = stacked.stack([y, torch.zeros_like(x)])
    penalty = float((off * x.abs()).pow(2).sum())
    assert stacked.residual_sq(x, y2) == pytest.approx(op.residual_sq(x, y) + penalty, rel=1e-12)
    # the data term follows y: an in-place change and a new tensor are both seen
    before = op.residual_sq(x, y)
    y.mul_(2.0)
    assert op.residual_sq(x, y) != pytest.approx(before, rel=1e-3)
    assert op.residual_sq(x, y.clone() / 2.0) == pytest.approx(before, rel=1e-12)


@pytest.mark.parametrize("shape", [(24, 20), (21, 17)])
def test_sense_residual_is_the_forward_residual(shape):
    """SENSE.residual_sq (1-D FFTs along the columns for a column mask, the readout's transform
    moved onto y) is ||Ax − y||² through ``forward``: to round-off in float64 (1e-12) and
    float32 (1e-5), for any y (entries in unsampled columns included), odd sizes, a 2-D mask
    (the plain path), and a y changed in place or replaced."""
    from operators.base import LinearOperator

    h, w = shape
    rng = np.random.default_rng(11)
    maps = _crandn((3, h, w), seed=12)
    for mask, tol64 in ((fastmri_random_mask(w, 3, 0.2, seed=1), 1e-12),
                        ((rng.random((h, w)) < 0.5).astype(np.float32), 1e-12)):  # fmt: skip
        op = SENSE(maps, mask)
        for dtype, tol in ((torch.complex128, tol64), (torch.complex64, 1e-5)):
            x = torch.from_numpy(_crandn((2, 1, h, w), seed=13)).to(dtype)
            y = torch.from_numpy(_crandn((2, 3, h, w), seed=14)).to(dtype)
            for _ in range(2):  # the second time through the cached F_Hᴴ y
                direct = LinearOperator.residual_sq(op, x, y)
                assert op.residual_sq(x, y) == pytest.approx(direct, rel=tol)
            y.mul_(0.5)
            assert op.residual_sq(x, y) == pytest.approx(
                LinearOperator.residual_sq(op, x, y), rel=tol
            )
            y2 = y.clone() * 3
            assert op.residual_sq(x, y2) == pytest.approx(
                LinearOperator.residual_sq(op, x, y2), rel=tol
            )
