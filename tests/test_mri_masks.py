"""Sampling patterns: fastMRI's random and equispaced masks (acceleration, exact centre,
seeding), Poisson-disc acceleration, radial/spiral trajectories, and clear parameter errors."""

from __future__ import annotations

import numpy as np
import pytest

from data.masks import (
    GOLDEN_ANGLE,
    acceleration,
    default_center_fraction,
    fastmri_equispaced_mask,
    fastmri_random_mask,
    poisson_disc_mask,
    radial_trajectory,
    spiral_trajectory,
)

W = 368  # fastMRI knee width
SETTINGS = [(4, 0.08), (8, 0.04)]


def _centre(width, cf):
    n_low = round(width * cf)
    pad = (width - n_low + 1) // 2
    return pad, n_low


def test_default_center_fraction():
    assert default_center_fraction(4) == pytest.approx(0.08)
    assert default_center_fraction(8) == pytest.approx(0.04)


@pytest.mark.parametrize("accel,cf", SETTINGS)
def test_random_mask_acceleration_centre_and_seeds(accel, cf):
    masks = [fastmri_random_mask(W, accel, cf, seed=s) for s in range(40)]
    pad, n_low = _centre(W, cf)
    for m in masks:
        assert m.dtype == np.float32 and m.shape == (W,)
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert m[pad : pad + n_low].all()  # the centre block, exactly where fastMRI puts it
    achieved = W / np.mean([m.sum() for m in masks])  # expected columns = W/R
    assert abs(achieved - accel) / accel < 0.05
    np.testing.assert_array_equal(fastmri_random_mask(W, accel, cf, seed=3), masks[3])
    assert not np.array_equal(masks[0], masks[1])


@pytest.mark.parametrize("accel,cf", SETTINGS)
def test_equispaced_mask_is_centre_plus_every_rth_column(accel, cf):
    pad, n_low = _centre(W, cf)
    offsets = set()
    for s in range(20):
        m = fastmri_equispaced_mask(W, accel, cf, seed=s)
        assert m[pad : pad + n_low].all()
        outside = np.ones(W, bool)
        outside[pad : pad + n_low] = False
        cols = np.flatnonzero(m * outside)
        offset = cols.min() % accel
        offsets.add(int(offset))
        expected = np.arange(offset, W, accel)
        np.testing.assert_array_equal(cols, expected[outside[expected]])
        # fastMRI's definition: the centre adds columns, so the achieved rate is below R
        n_expected = len(set(expected) | set(range(pad, pad + n_low)))
        assert m.sum() == n_expected and acceleration(m) < accel
    assert len(offsets) > 1  # the offset is random
    np.testing.assert_array_equal(
        fastmri_equispaced_mask(W, accel, cf, seed=5), fastmri_equispaced_mask(W, accel, cf, 5)
    )


@pytest.mark.parametrize("accel,cf", SETTINGS)
def test_equispaced_exact_fraction_hits_the_acceleration(accel, cf):
    masks = [fastmri_equispaced_mask(W, accel, cf, seed=s, exact_fraction=True) for s in range(20)]
    pad, n_low = _centre(W, cf)
    for m in masks:
        assert m[pad : pad + n_low].all()
    achieved = W / np.mean([m.sum() for m in masks])
    assert abs(achieved - accel) / accel < 0.05


@pytest.mark.parametrize("accel", [4, 8])
def test_poisson_disc_acceleration_and_seed(accel):
    rates = [acceleration(poisson_disc_mask((48, 48), accel, seed=s, calib=8)) for s in range(3)]
    assert abs(np.mean(rates) - accel) / accel < 0.15  # SigPy's tolerance is 10 %
    m = poisson_disc_mask((48, 48), accel, seed=0, calib=8)
    assert m.dtype == np.float32 and m.shape == (48, 48)
    assert m[20:28, 20:28].all()  # the calibration block
    np.testing.assert_array_equal(m, poisson_disc_mask((48, 48), accel, seed=0, calib=8))
    assert not np.array_equal(m, poisson_disc_mask((48, 48), accel, seed=1, calib=8))


def test_radial_trajectory():
    k = radial_trajectory(5, 16)
    assert k.shape == (80, 2) and k.dtype == np.float32
    assert k.min() >= -8 and k.max() < 8
    spokes = k.reshape(5, 16, 2)
    ang = np.arctan2(spokes[:, 0, 0], spokes[:, 0, 1]) % np.pi  # first sample at r = −N/2
    np.testing.assert_allclose(np.diff(ang) % np.pi, GOLDEN_ANGLE % np.pi, atol=1e-5)
    assert np.allclose(spokes[:, 8], 0)  # every spoke passes the centre
    uni = radial_trajectory(4, 16, golden=False).reshape(4, 16, 2)
    ang = np.arctan2(uni[:, 0, 0], uni[:, 0, 1]) % np.pi
    np.testing.assert_allclose(np.diff(ang), np.pi / 4, atol=1e-5)


def test_spiral_trajectory():
    k = spiral_trajectory(32, 4, 256)
    assert k.shape == (1024, 2) and k.dtype == np.float32
    r = np.linalg.norm(k, axis=1)
    assert r.max() < 16 and r.min() == 0
    arms = k.reshape(4, 256, 2)
    ang = np.arctan2(arms[:, 100, 0], arms[:, 100, 1])
    np.testing.assert_allclose(np.diff(ang) % (2 * np.pi), np.pi / 2, atol=1e-4)  # rotated arms


def test_impossible_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="acceleration"):
        fastmri_random_mask(64, 0.5, 0.08)
    with pytest.raises(ValueError, match="centre fraction"):
        fastmri_random_mask(64, 4, 1.5)
    with pytest.raises(ValueError, match="centre fraction"):
        fastmri_equispaced_mask(64, 4, 0.0)
    with pytest.raises(ValueError, match="more than"):
        fastmri_random_mask(64, 8, 0.3)
    with pytest.raises(ValueError, match="more than"):
        fastmri_equispaced_mask(64, 8, 0.3, exact_fraction=True)
    with pytest.raises(ValueError, match="width"):
        fastmri_random_mask(1, 4, 0.08)
    with pytest.raises(ValueError, match="acceleration"):
        poisson_disc_mask((32, 32), 0.9)
    with pytest.raises(ValueError, match="spokes"):
        radial_trajectory(0, 16)
    with pytest.raises(ValueError, match="interleave"):
        spiral_trajectory(32, 0)
    with pytest.raises(ValueError, match="samples nothing"):
        acceleration(np.zeros(8))
