"""CT operator: FBP quality and units, geometry checks, noise models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.ct_noise import add_gaussian_noise, add_poisson_noise
from data.phantoms import shepp_logan
from operators.ct import CTOperator


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10((ref.max() - ref.min()) ** 2 / np.mean((x - ref) ** 2)))


def test_fbp_shepp_logan_256_180_views():
    """Measured 30.77 dB (ram-lak, noiseless, 'linear' projector); floor 30 dB."""
    ref = shepp_logan(256)
    op = CTOperator(image_size=256, views=180)
    x = torch.from_numpy(ref)[None, None]
    rec = op.fbp(op.forward(x))[0, 0].numpy()
    assert _psnr(rec, ref) >= 30.0


@pytest.mark.parametrize("pixel_size", [0.5, 2.0])
def test_projections_in_physical_units_and_fbp_returns_image_units(pixel_size):
    ref = shepp_logan(64)
    x = torch.from_numpy(ref)[None, None]
    unit = CTOperator(image_size=64, views=90)
    scaled = CTOperator(image_size=64, views=90, pixel_size=pixel_size)
    y1, y2 = unit.forward(x), scaled.forward(x)
    assert torch.allclose(y2, pixel_size * y1, rtol=1e-4, atol=1e-4)
    r1, r2 = unit.fbp(y1), scaled.fbp(y2)
    assert torch.allclose(r1, r2, atol=1e-3)


def test_fan_beam_start_and_limited_angle_are_reasonable():
    ref = shepp_logan(64)
    x = torch.from_numpy(ref)[None, None]
    fan = CTOperator(image_size=64, views=120, geometry="fan")
    assert _psnr(fan.fbp(fan.forward(x))[0, 0].numpy(), ref) > 20
    lim = CTOperator(image_size=64, views=60, arc=120)
    full = CTOperator(image_size=64, views=60)
    p_lim = _psnr(lim.fbp(lim.forward(x))[0, 0].numpy(), ref)
    p_full = _psnr(full.fbp(full.forward(x))[0, 0].numpy(), ref)
    assert p_lim < p_full  # the missing wedge costs quality, as it must


def test_batches_are_independent():
    op = CTOperator(image_size=32, views=10)
    x = torch.rand(3, 1, 32, 32)
    y = op.forward(x)
    for b in range(3):
        assert torch.allclose(y[b : b + 1], op.forward(x[b : b + 1]))


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(image_size=32, views=0), "views"),
        (dict(image_size=32, views=10, arc=0), "arc"),
        (dict(image_size=32, views=10, arc=400), "arc"),
        (dict(image_size=4, views=10), "too small"),
        (dict(image_size=32, views=10, geometry="cone"), "geometry"),
        (dict(image_size=32, views=10, geometry="fan", source_origin=10), "source"),
        (dict(image_size=32, views=10, projector="line_fanflat"), "does not fit"),
    ],
)
def test_impossible_geometry_is_refused(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        CTOperator(**kwargs)


def test_wrong_input_shape_names_expected_shape():
    op = CTOperator(image_size=32, views=10)
    with pytest.raises(ValueError, match=r"expected \(B, 1, 32, 32\)"):
        op.forward(torch.zeros(1, 1, 16, 16))


def test_gaussian_noise_level_and_seed():
    sino = torch.rand(2, 1, 200, 300) * 5
    a = add_gaussian_noise(sino, 0.01, seed=3)
    b = add_gaussian_noise(sino, 0.01, seed=3)
    c = add_gaussian_noise(sino, 0.01, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    for i in range(2):
        expected = 0.01 * float(sino[i].abs().max())
        assert float((a - sino)[i].std()) == pytest.approx(expected, rel=0.02)


def test_poisson_noise_unbiased_at_high_counts_and_noisier_at_low():
    sino = torch.full((1, 1, 100, 100), 2.0)
    hi = add_poisson_noise(sino, 1e7, seed=0, mu_scale=0.5)
    lo = add_poisson_noise(sino, 1e3, seed=0, mu_scale=0.5)
    assert float(hi.mean()) == pytest.approx(2.0, rel=1e-3)
    assert float((lo - sino).std()) > 10 * float((hi - sino).std())
    assert torch.equal(lo, add_poisson_noise(sino, 1e3, seed=0, mu_scale=0.5))
