"""CT operator: FBP quality and units, detector coverage, geometry checks, noise models, units."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from skimage.metrics import peak_signal_noise_ratio

from data.ct_noise import ZERO_COUNT, add_gaussian_noise, add_poisson_noise
from data.ct_units import MU_WATER_PER_MM, hu_to_mu, mu_to_hu
from data.phantoms import shepp_logan
from operators.base import inner
from operators.ct import FBP_FILTERS, CTOperator


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(ref, x, data_range=float(ref.max() - ref.min())))


def _img(size: int) -> tuple[np.ndarray, torch.Tensor]:
    ref = shepp_logan(size)
    return ref, torch.from_numpy(ref)[None, None]


@pytest.fixture(scope="module")
def sl64():
    return _img(64)


def test_fbp_shepp_logan_256_180_views():
    """Measured 30.77 dB (ram-lak, noiseless, 'linear' projector); floor 30 dB."""
    ref, x = _img(256)
    op = CTOperator(image_size=256, views=180)
    assert _psnr(op.fbp(op.forward(x))[0, 0].numpy(), ref) >= 30.0


def test_fan_fbp_by_rebinning(sl64):
    """Measured at 64², 120 views: 360° fan 27.8 dB, 240° short scan 28.0 dB, parallel 29.2."""
    ref, x = sl64
    full = CTOperator(image_size=64, views=120, geometry="fan")
    short = CTOperator(image_size=64, views=120, geometry="fan", arc=240)
    assert _psnr(full.fbp(full.forward(x))[0, 0].numpy(), ref) >= 26.5
    assert _psnr(short.fbp(short.forward(x))[0, 0].numpy(), ref) >= 26.5


@pytest.mark.parametrize("filt", FBP_FILTERS)
def test_every_filter_reconstructs_and_windowed_filters_smooth_noise(sl64, filt):
    ref, x = sl64
    op = CTOperator(image_size=64, views=90)
    y = op.forward(x)
    assert _psnr(op.fbp(y, filter=filt)[0, 0].numpy(), ref) > 22
    noise = add_gaussian_noise(torch.zeros_like(y) + 1.0, 0.05, seed=0) - 1.0
    std = float(op.fbp(noise, filter=filt).std())
    std_ramlak = float(op.fbp(noise, filter="ram-lak").std())
    assert std <= std_ramlak * (1 + 1e-6)
    with pytest.raises(ValueError, match="unknown FBP filter"):
        op.fbp(y, filter="butterworth")


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
@pytest.mark.parametrize("pixel_size", [0.5, 0.7, 2.0])
def test_sinograms_scale_with_pixel_size_and_fbp_returns_image_units(sl64, geometry, pixel_size):
    _, x = sl64
    unit = CTOperator(image_size=64, views=60, geometry=geometry)
    scaled = CTOperator(image_size=64, views=60, geometry=geometry, pixel_size=pixel_size)
    y1, y2 = unit.forward(x), scaled.forward(x)
    # ASTRA's geometry arithmetic in float32: measured ≤ 4e-5 of the maximum for 0.7
    assert torch.allclose(y2, pixel_size * y1, rtol=1e-4, atol=1e-4 * float(y2.abs().max()))
    r1, r2 = unit.fbp(y1), scaled.fbp(y2)
    assert float((r1 - r2).abs().max()) < 1e-4


@pytest.mark.parametrize("projector,rtol", [("strip", 1e-5), ("linear", 1e-2)])
def test_parallel_projection_conserves_mass_in_physical_units(projector, rtol):
    """Σ_detectors y·(detector width) = ∫∫ x dA in every view (attenuation·length²): exact for
    the area-weighted 'strip' projector, to sampling error for the ray-driven 'linear' one."""
    x = torch.rand(2, 1, 40, 32, dtype=torch.float64)
    ps = 0.8
    op = CTOperator(image_size=(40, 32), views=7, pixel_size=ps, projector=projector)
    y = op.forward(x)
    mass = x.sum(dim=(1, 2, 3)) * ps**2
    per_view = y.sum(dim=-1)[:, 0] * (op.detector_spacing * ps)
    assert torch.allclose(per_view, mass[:, None].expand_as(per_view), rtol=rtol)


@pytest.mark.parametrize("geometry,projector", [("parallel", "strip"), ("fan", "strip_fanflat")])
def test_default_detector_sees_every_pixel_in_every_view(geometry, projector):
    """The default detector covers the whole image, corners included, at every angle.

    Area-weighted strip projectors see a pixel whole whenever it is inside the fan; (ray-driven
    'line' projectors can let one pixel fall between two rays). Measured (fan): 51 detectors
    catch 1 % of a corner pixel in the worst view, 53 or more all of it; default 57."""
    x = torch.zeros(4, 1, 32, 40)
    for b, (i, j) in enumerate([(0, 0), (0, 39), (31, 0), (31, 39)]):
        x[b, 0, i, j] = 1.0
    op = CTOperator(image_size=(32, 40), views=90, geometry=geometry, projector=projector)
    seen = op.forward(x).sum(dim=-1)[:, 0]  # (B, views)
    assert float(seen.min()) > 0.5 * float(seen.median())


def test_limited_angle_runs_and_costs_quality(sl64):
    ref, x = sl64
    lim = CTOperator(image_size=64, views=60, arc=120)
    full = CTOperator(image_size=64, views=60)
    p_lim = _psnr(lim.fbp(lim.forward(x))[0, 0].numpy(), ref)
    p_full = _psnr(full.fbp(full.forward(x))[0, 0].numpy(), ref)
    assert np.isfinite(p_lim) and p_lim < p_full - 3  # the missing wedge costs quality
    fan_lim = CTOperator(image_size=64, views=40, arc=120, geometry="fan")
    assert torch.isfinite(fan_lim.fbp(fan_lim.forward(x))).all()


def test_batches_independent_dtype_and_device_preserved():
    op = CTOperator(image_size=32, views=10)
    x = torch.rand(3, 1, 32, 32, dtype=torch.float64)
    y = op.forward(x)
    assert y.dtype == torch.float64 and y.device == x.device
    for b in range(3):
        assert torch.equal(y[b : b + 1], op.forward(x[b : b + 1]))
    assert op.adjoint(y).dtype == torch.float64 and op.fbp(y).shape == x.shape


def test_describe_is_json_and_close_is_idempotent():
    op = CTOperator(image_size=(32, 48), views=30, geometry="fan", pixel_size=0.7)
    d = json.loads(json.dumps(op.describe()))
    assert d["geometry"] == "fan" and d["image_size"] == [32, 48] and d["arc_degrees"] == 360.0
    assert d["pixel_size"] == 0.7 and d["detectors"] == op.range_shape[-1]
    op.close()
    op.close()


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(image_size=32, views=0), "views"),
        (dict(image_size=32, views=2.5), "views"),
        (dict(image_size=32, views=10, arc=0), "arc"),
        (dict(image_size=32, views=10, arc=-90), "arc"),
        (dict(image_size=32, views=10, arc=400), "arc"),
        (dict(image_size=4, views=10), "too small"),
        (dict(image_size=(32, 7), views=10), "too small"),
        (dict(image_size=(32, 32, 32), views=10), "image_size"),
        (dict(image_size=32, views=10, detectors=0), "detectors"),
        (dict(image_size=32, views=10, detector_spacing=0), "detector_spacing"),
        (dict(image_size=32, views=10, pixel_size=-1.0), "pixel_size"),
        (dict(image_size=32, views=10, geometry="cone"), "geometry"),
        (dict(image_size=32, views=10, geometry="fan", source_origin=10), "source"),
        (dict(image_size=32, views=10, geometry="fan", origin_detector=-5), "origin_detector"),
        (dict(image_size=32, views=10, source_origin=100), "fan beam only"),
        (dict(image_size=32, views=10, projector="line_fanflat"), "does not fit"),
        (dict(image_size=32, views=10, geometry="fan", projector="linear"), "does not fit"),
    ],
)
def test_impossible_geometry_is_refused(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        CTOperator(**kwargs)


def test_wrong_input_shape_names_expected_shape():
    op = CTOperator(image_size=32, views=10)
    with pytest.raises(ValueError, match=r"expected \(B, 1, 32, 32\)"):
        op.forward(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"expected \(B, 1, 32, 32\)"):
        op.forward(torch.zeros(2, 3, 32, 32))  # channels must be 1
    with pytest.raises(ValueError, match=r"expected \(B, 1, 10, "):
        op.fbp(torch.zeros(1, 1, 9, op.detectors))


# --- noise --------------------------------------------------------------------------------------
def test_gaussian_noise_level_and_seed():
    sino = torch.rand(2, 1, 200, 300) * torch.tensor([5.0, 0.5]).view(2, 1, 1, 1)
    a = add_gaussian_noise(sino, 0.01, seed=3)
    b = add_gaussian_noise(sino, 0.01, seed=3)
    c = add_gaussian_noise(sino, 0.01, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    for i in range(2):  # std = rel · max|sinogram| of that batch item
        expected = 0.01 * float(sino[i].abs().max())
        assert float((a - sino)[i].std()) == pytest.approx(expected, rel=0.02)
    assert torch.equal(add_gaussian_noise(sino, 0.0, seed=1), sino)
    with pytest.raises(ValueError):
        add_gaussian_noise(sino, -0.1)
    # from a shared generator: the same stream as a seeded call, and advanced by each draw
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(add_gaussian_noise(sino, 0.01, generator=gen), a)
    assert not torch.equal(add_gaussian_noise(sino, 0.01, generator=gen), a)


def test_poisson_noise_unbiased_at_high_counts_and_noisier_at_low():
    sino = torch.full((1, 1, 100, 100), 2.0)
    hi = add_poisson_noise(sino, 1e7, seed=0, mu_scale=0.5)
    lo = add_poisson_noise(sino, 1e3, seed=0, mu_scale=0.5)
    assert float(hi.mean()) == pytest.approx(2.0, rel=1e-3)
    # delta method: var(y) ≈ 1 / (μ² · I₀ · exp(−μ·p))
    expected_std = (1 / (0.5**2 * 1e3 * np.exp(-1.0))) ** 0.5
    assert float((lo - sino).std()) == pytest.approx(expected_std, rel=0.05)
    assert float((lo - sino).std()) > 10 * float((hi - sino).std())
    assert torch.equal(lo, add_poisson_noise(sino, 1e3, seed=0, mu_scale=0.5))
    assert not torch.equal(lo, add_poisson_noise(sino, 1e3, seed=1, mu_scale=0.5))


def test_poisson_zero_counts_are_replaced():
    sino = torch.full((1, 1, 4, 4), 50.0, dtype=torch.float64)  # exp(−50)·10 photons: N = 0
    y = add_poisson_noise(sino, 10.0, seed=0)
    assert torch.allclose(y, torch.full_like(y, -np.log(ZERO_COUNT / 10.0)))


def test_hu_mu_round_trip():
    hu = np.array([-1000.0, 0.0, 1000.0, 3000.0])
    mu = hu_to_mu(hu)
    np.testing.assert_allclose(mu, [0.0, MU_WATER_PER_MM, 2 * MU_WATER_PER_MM, 0.08])
    np.testing.assert_allclose(mu_to_hu(mu), hu, atol=1e-9)
    t = torch.tensor([-500.0, 40.0], dtype=torch.float64)
    assert torch.allclose(mu_to_hu(hu_to_mu(t, 0.019), 0.019), t)
    with pytest.raises(ValueError):
        hu_to_mu(hu, mu_water=0.0)


@pytest.mark.parametrize(
    "geometry,projector",
    [("parallel", "linear"), ("parallel", "strip"), ("parallel", "line"),
     ("fan", "line_fanflat"), ("fan", "strip_fanflat")],
)  # fmt: skip
def test_projection_matrix_is_astras_operator(geometry, projector):
    """The CSR path computes ASTRA's FP and BP: each output differs from the algorithm's by at
    most the float32 summation bound 2·k·eps·(|M| |v|) (k entries in the row), for every CPU
    projector; a shifted projector geometry would miss it by whole pixels."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 36, 30, generator=gen)
    kw = dict(image_size=(36, 30), views=17, geometry=geometry, projector=projector)
    fast, slow = CTOperator(**kw, matrix=True), CTOperator(**kw, matrix=False)
    y = torch.rand(2, *fast.range_shape, generator=gen)
    m = fast._cpu._matrix()
    full = sp.vstack([b for _, _, b in m.forward_blocks]).tocsr()
    absm = abs(full).astype(np.float64)
    k_fwd = np.diff(full.indptr).max()
    k_adj = np.diff(full.T.tocsr().indptr).max()
    eps = np.finfo(np.float32).eps
    for b in range(2):
        xv, yv = x[b, 0].numpy().ravel(), y[b, 0].numpy().ravel()
        bound_f = 2 * k_fwd * eps * (absm @ np.abs(xv)) + 1e-30
        bound_a = 2 * k_adj * eps * (absm.T @ np.abs(yv)) + 1e-30
        df = (fast.forward(x)[b, 0] - slow.forward(x)[b, 0]).numpy().ravel()
        da = (fast.adjoint(y)[b, 0] - slow.adjoint(y)[b, 0]).numpy().ravel()
        assert np.all(np.abs(df) <= bound_f), projector
        assert np.all(np.abs(da) <= bound_a), projector
    assert fast.describe()["projection_matrix"] and not slow.describe()["projection_matrix"]


def test_projection_matrix_result_does_not_depend_on_threads():
    """Row blocks sum each row in the same order: 1 and 3 blocks give identical bits."""
    from operators.ct import _ProjectionMatrix

    op = CTOperator(40, 23, matrix=True)
    one = _ProjectionMatrix(op._cpu.pid, 1)
    three = _ProjectionMatrix(op._cpu.pid, 3)
    assert len(three.forward_blocks) == 3 and len(three.adjoint_blocks) == 3
    v = np.random.default_rng(1).random((40, 40), dtype=np.float32)
    w = np.random.default_rng(2).random(op.range_shape[1:], dtype=np.float32)
    f1, f3 = one.forward(v), three.forward(v)
    a1, a3 = one.adjoint(w), three.adjoint(w)
    assert np.array_equal(f1, f3) and np.array_equal(a1, a3)


def test_projection_matrix_only_where_it_fits():
    """Default: the matrix for a clinical slice (512², 90 views), ASTRA's algorithms where the
    matrix would exceed the budget (2048², 720 views: tens of GB), and no matrix is built
    before the first projection."""
    from operators.ct import MATRIX_BUDGET_BYTES, matrix_bytes_estimate

    assert matrix_bytes_estimate(90, 512, 512, "linear") <= MATRIX_BUDGET_BYTES
    assert matrix_bytes_estimate(720, 2048, 2048, "linear") > MATRIX_BUDGET_BYTES
    big = CTOperator(2048, 720)
    assert not big.matrix and big._cpu.matrix is None
    small = CTOperator(64, 30)
    assert small.matrix and small._cpu.matrix is None
    small.forward(torch.zeros(1, 1, 64, 64))
    assert small._cpu.matrix is not None


def test_projection_matrix_works_in_a_forked_child():
    """A child forked after the parent used the matrix's thread pool gets its own pool (the
    parent's threads do not exist there; reusing its pool would hang)."""
    import multiprocessing as mp

    op = CTOperator(40, 23, matrix=True)
    op._cpu.matrix = None
    from operators import ct

    ct._pool()  # the parent's pool exists before the fork
    x = torch.rand(1, 1, 40, 40)
    expected = op.forward(x)
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_forward_with_blocks, (x, 2)).get(timeout=60)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6 * float(expected.abs().max()))


def _forward_with_blocks(x: torch.Tensor, threads: int) -> torch.Tensor:
    torch.set_num_threads(threads)
    return CTOperator(40, 23, matrix=True).forward(x)


@pytest.mark.parametrize(("geometry", "arc"), [("parallel", None), ("fan", None),
                                               ("parallel", 120.0)])  # fmt: skip
def test_fourier_preconditioner_is_spd_and_speeds_up_cg(geometry, arc):
    """P ≈ (λAᵀA + ρI)⁻¹ from the PSF of AᵀA: symmetric and positive definite (float64, to
    round-off of the FFTs), and preconditioned CG reaches a lower residual than plain CG at the
    same iteration on the system PnP-ADMM solves (full arcs and a limited angle), and on a full
    parallel arc, where AᵀA is nearly shift-invariant, in half the iterations."""
    from solvers.cg import conjugate_gradient

    n = 96
    op = CTOperator(n, 60, geometry=geometry, arc=arc)
    lam, rho = 1.0, 0.01 * op.norm_sq()
    g = torch.Generator().manual_seed(0)
    u, v = (torch.randn(2, 1, n, n, generator=g, dtype=torch.float64) for _ in range(2))
    pc = op.normal_preconditioner(lam, rho, u)
    pu, pv = pc(u), pc(v)
    sym = float((inner(pu, v) - inner(u, pv)).abs().max() / (pu.norm() * v.norm()))
    assert sym <= 1e3 * torch.finfo(torch.float64).eps
    assert bool((inner(u, pu) > 0).all())

    x = torch.as_tensor(shepp_logan(n), dtype=torch.float32)[None, None]
    b = lam * op.adjoint(op(x)) + rho * x

    def normal(t):
        return lam * op.normal(t) + rho * t

    def residual(k, precond):
        xk, _ = conjugate_gradient(normal, b, iters=k, tol=0.0,
                                   precond=op.normal_preconditioner(lam, rho, b) if precond
                                   else None)  # fmt: skip
        return float((b - normal(xk)).norm() / b.norm())

    for k in (5, 10):
        assert residual(k, True) < residual(k, False) / 1.5, k
    if geometry == "parallel" and arc is None:  # nearly shift-invariant: half the iterations
        assert residual(5, True) < residual(10, False)
