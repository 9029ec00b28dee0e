"""The k-space noise estimate: unbiased on white noise, insensitive to the image's own signal,
sampled-only, and what `recon mri` records and uses."""

from __future__ import annotations

import numpy as np
import pytest

from data.fastmri import simulate_multicoil
from data.mri_noise import corner_mask, estimate_kspace_noise
from data.peer_mri import add_kspace_noise
from data.phantoms import shepp_logan


def _noise(shape, sigma, seed):
    rng = np.random.default_rng(seed)
    return sigma * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


@pytest.mark.parametrize("sigma", [1e-6, 0.3, 40.0])
def test_pure_noise_gives_its_sigma(sigma):
    k = _noise((8, 128, 96), sigma, 0)
    n = int(corner_mask((128, 96)).sum()) * 8
    # the sample median of a Rayleigh variable: relative std ≈ 0.61/√n (asymptotic); 6 std
    tol = 6 * 0.61 / np.sqrt(n)
    assert estimate_kspace_noise(k) == pytest.approx(sigma, rel=tol)


@pytest.mark.parametrize("noise", [0.0005, 0.002, 0.01])
def test_image_signal_does_not_bias_the_estimate(noise):
    """A phantom's k-space plus noise: the corners hold little signal, so the estimate is the
    noise within 15 %, once the noise is not far below that signal. Shepp-Logan's sharp edges
    leave the most signal there of any image: at 0.05 % of max|k| the estimate reads it as noise
    (up to 2×), never less than the noise."""
    k, _, _ = simulate_multicoil(shepp_logan(128), 8, seed=0)
    sigma = noise * float(np.abs(k).max())
    est = estimate_kspace_noise(k + _noise(k.shape, sigma, 1))
    if noise >= 0.002:
        assert est == pytest.approx(sigma, rel=0.15)
    else:
        assert 0.9 * sigma <= est <= 2.0 * sigma


def test_only_sampled_values_count_and_too_few_is_an_error():
    k = _noise((4, 64, 64), 1.0, 2)
    mask = np.zeros(64)
    mask[::2] = 1
    ku = k * mask
    assert estimate_kspace_noise(ku, mask) == pytest.approx(estimate_kspace_noise(ku), rel=1e-12)
    full = estimate_kspace_noise(k)
    assert estimate_kspace_noise(ku, mask) == pytest.approx(full, rel=0.2)
    with pytest.raises(ValueError, match="too few"):
        estimate_kspace_noise(k[:, :4, :4])
    with pytest.raises(ValueError, match="complex"):
        estimate_kspace_noise(np.ones((4, 8, 8)))


def test_recon_mri_records_the_kspace_noise(tmp_path):
    import json

    from data.fastmri import write_fastmri
    from recon.cli import main

    k, ref, _ = simulate_multicoil(shepp_logan(128), 4, seed=0)
    sigma = 0.003 * float(np.abs(k).max())
    path = write_fastmri(tmp_path / "f.h5", add_kspace_noise(k, 0.003, 3)[None], ref[None])
    out = tmp_path / "o"
    args = ["mri", "--input", str(path), "--solver", "tv", "--center-fraction", "0.08"]
    assert main([*args, "--iters", "2", "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["kspace_noise"] == pytest.approx(sigma, rel=0.25)


def test_masks_without_corner_samples_use_the_outer_ring():
    """A Poisson-disc mask samples inside the inscribed ellipse only: the corners hold nothing,
    so the estimate comes from the outer ring of the sampled values, still the noise's σ."""
    from data.masks import poisson_disc_mask
    from data.mri_noise import ring_mask

    sigma = 0.7
    k = _noise((8, 128, 96), sigma, 4)
    mask = poisson_disc_mask((128, 96), 4.0, seed=0, calib=16)
    assert not (mask.astype(bool) & corner_mask((128, 96))).any()
    n = int((mask.astype(bool) & ring_mask((128, 96))).sum()) * 8
    tol = 6 * 0.61 / np.sqrt(n)  # as for the corners: 6 std of the sample median
    assert estimate_kspace_noise(k * mask, mask) == pytest.approx(sigma, rel=tol)
    with pytest.raises(ValueError, match="outer ring"):
        estimate_kspace_noise(k[:, :16, :16], np.eye(16))


def test_noncartesian_noise_from_the_outer_ends_of_the_spokes():
    """Radial spokes: the samples at radius ≥ RING of the extent give σ; an image's signal there
    (Shepp-Logan's sharp edges through the NUFFT, 64², noise 1 % of max|y|) reads at most 20 %
    high, never low: the ring lies a little inside the corners, where more signal is left (at
    0.3 % it reads 1.65× the noise on this small phantom, 1.10× at 128²)."""
    import torch

    from data.masks import radial_trajectory
    from data.mri_noise import RING, estimate_noncartesian_noise
    from operators.mri import NonCartesianSENSE

    n = 64
    coord = radial_trajectory(48, n)
    op = NonCartesianSENSE(np.ones((2, n, n), np.complex64), coord)
    clean = op.forward(torch.from_numpy(shepp_logan(n).astype(np.complex64))[None, None])[0]
    sigma = 0.01 * float(clean.abs().max())
    y = clean.numpy() + _noise(clean.shape, sigma, 5)
    r = np.hypot(*(coord / np.abs(coord).max(axis=0)).T)
    count = int((r >= RING).sum()) * 2
    assert estimate_noncartesian_noise(_noise(clean.shape, sigma, 6), coord) == pytest.approx(
        sigma, rel=6 * 0.61 / np.sqrt(count)
    )
    assert sigma <= estimate_noncartesian_noise(y, coord) <= 1.2 * sigma
    with pytest.raises(ValueError, match="too few"):
        estimate_noncartesian_noise(y[:, :40], coord[:40])
    with pytest.raises(ValueError, match="coordinates"):
        estimate_noncartesian_noise(y, coord[:10])
