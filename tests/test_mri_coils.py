"""Coil maps: birdcage normalization, and ESPIRiT recovering known birdcage maps from k-space
simulated from a phantom (fully sampled, noisy, and fastMRI-undersampled with a full centre)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sigpy as sp
import torch

from data.coils import birdcage_maps, espirit_maps
from data.masks import fastmri_random_mask
from data.phantoms import shepp_logan
from recon.mri import COLUMN_MASK_CROP

N = 64


def _correlation(est: np.ndarray, true: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """|<S_est, S_true>| / (||S_est||·||S_true||) per pixel (over coils), inside the object."""
    num = np.abs((np.conj(est) * true).sum(0))
    den = np.linalg.norm(est, axis=0) * np.linalg.norm(true, axis=0) + 1e-30
    return (num / den)[inside]


@pytest.fixture(scope="module")
def phantom_kspace():
    img = shepp_logan(N).astype(np.complex64)
    true = birdcage_maps(8, (N, N))
    k = sp.fft(true * img[None], axes=(-2, -1), center=True, norm="ortho").astype(np.complex64)
    return img, true, k, np.abs(img) > 0.05


def test_birdcage_maps_are_rss_normalized():
    s = birdcage_maps(8, (24, 20))
    assert s.shape == (8, 24, 20) and s.dtype == np.complex64
    np.testing.assert_allclose((np.abs(s) ** 2).sum(0), 1.0, rtol=1e-5)
    assert not np.allclose(np.abs(s[0]), np.abs(s[1]))  # coils see different regions
    s3 = birdcage_maps(4, (3, 12, 12), nzz=2)
    np.testing.assert_allclose((np.abs(s3) ** 2).sum(0), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="coils"):
        birdcage_maps(0, (8, 8))


def test_espirit_recovers_birdcage_maps(phantom_kspace):
    """Measured: mean correlation 0.999987, minimum 0.99943 inside the object (64², 8 coils,
    calib 20)."""
    img, true, k, inside = phantom_kspace
    est = espirit_maps(k, calib_width=20)
    assert est.shape == true.shape and est.dtype == np.complex64
    corr = _correlation(est, true, inside)
    print(f"ESPIRiT correlation inside the object: mean {corr.mean():.6f}, min {corr.min():.5f}")
    assert corr.mean() > 0.9999
    assert corr.min() > 0.995
    # ESPIRiT maps are RSS-normalized inside their support
    np.testing.assert_allclose(np.linalg.norm(est, axis=0)[inside], 1.0, atol=1e-3)


def test_espirit_with_noise_and_undersampled_kspace(phantom_kspace):
    """1 % complex noise (of max |k|): measured 0.9978. A fastMRI 3× random mask with a 16-column
    centre (the calibration block inside it): measured 0.99998."""
    img, true, k, inside = phantom_kspace
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)
    noisy = (k + 0.01 * np.abs(k).max() * noise).astype(np.complex64)
    assert _correlation(espirit_maps(noisy, calib_width=20), true, inside).mean() > 0.995

    mask = fastmri_random_mask(N, 3, 0.25, seed=0)  # 16 centre columns + 9 others
    est = espirit_maps(k * mask, calib_width=16)
    assert _correlation(est, true, inside).mean() > 0.9995


def test_a_narrow_centre_calibrated_over_more_rows_gives_better_maps():
    """fastMRI column masks sample every row of their few centre columns. An 8-column centre as
    an 8×8 block leaves ESPIRiT's calibration matrix with 9 rows for 128 unknowns; 24 rows
    (BART ecalib's default) give maps closer to the true ones and a smaller unexplained part
    of the calibration data (96², 8 birdcage coils, noise 0.2 % of max|k|; measured mean
    correlation 0.9987 -> 0.9998, unexplained 0.207 -> 0.153). At 1 % noise 24 rows still
    hold (0.9985), while every row breaks the maps (0.32): the outer rows are mostly noise."""
    from data.coils import unexplained_calibration

    n, w = 96, 8
    img = shepp_logan(n).astype(np.complex64)
    true = birdcage_maps(8, (n, n))
    k = sp.fft(true * img[None], axes=(-2, -1), center=True, norm="ortho")
    inside = np.abs(img) > 0.05
    centre = np.zeros(n, bool)
    centre[n // 2 - w // 2 : n // 2 + w // 2] = True
    rng = np.random.default_rng(0)
    white = rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)
    for noise in (0.002, 0.01):
        ku = ((k + noise * np.abs(k).max() * white) * centre).astype(np.complex64)
        fits = {h: espirit_maps(ku, calib_width=w, calib_height=h) for h in (None, 24, n)}
        corr = {h: _correlation(m, true, inside).mean() for h, m in fits.items()}
        left = {h: unexplained_calibration(ku, m, w) for h, m in fits.items()}
        assert corr[24] > corr[None] and left[24] < left[None], (noise, corr, left)
        assert corr[24] > 0.998
        if noise == 0.01:
            assert corr[n] < 0.9 < corr[24]
    with pytest.raises(ValueError, match="calib_height"):
        espirit_maps(ku, calib_width=w, calib_height=w - 1)


def test_espirit_errors(phantom_kspace):
    _, _, k, _ = phantom_kspace
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        espirit_maps(k[0])
    with pytest.raises(ValueError, match="not fully sampled"):
        espirit_maps(k * fastmri_random_mask(N, 4, 0.08, seed=0), calib_width=24)
    with pytest.raises(ValueError, match="calib_width"):
        espirit_maps(k, calib_width=100)


def _coil_file(path, coils: np.ndarray) -> str:
    """A one-slice fastMRI file of coil images (C, H, W); reference = their RSS."""
    from data.fastmri import write_fastmri

    k = sp.fft(coils, axes=(-2, -1), center=True, norm="ortho").astype(np.complex64)
    ref = np.sqrt((np.abs(coils) ** 2).sum(0)).astype(np.float32)
    return str(write_fastmri(path, k[None], ref[None]))


def test_unexplained_calibration_separates_sense_data_from_data_it_cannot_fit(phantom_kspace):
    from data.coils import unexplained_calibration

    img, true, k, _ = phantom_kspace
    assert unexplained_calibration(k, true, 16) < 0.1  # the true maps explain their own data
    rng = np.random.default_rng(0)
    rough = true * np.exp(1j * rng.uniform(-np.pi, np.pi, true.shape))  # per-coil rough phase
    k_bad = sp.fft(rough * img[None], axes=(-2, -1), center=True, norm="ortho")
    assert unexplained_calibration(k_bad, true, 16) > 0.5
    assert unexplained_calibration(k, true, 12, calib_height=12) < 0.1
    with pytest.raises(ValueError, match="must both be"):
        unexplained_calibration(k, true[:2], 16)


def test_coils_no_sense_model_fits_warn_and_fall_back_to_zero_filled(tmp_path, capsys):
    """Each coil sees the object with its own rough phase: no maps explain that, so recon mri
    warns, writes the zero-filled RSS image (no worse than zero-filled) and says so."""
    import json

    from recon.cli import main

    rng = np.random.default_rng(1)
    img = shepp_logan(N)
    maps = birdcage_maps(6, (N, N))
    coils = maps * img[None] * np.exp(1j * rng.uniform(-np.pi, np.pi, (6, N, N)))
    path = _coil_file(tmp_path / "bad.h5", coils)
    out = tmp_path / "out"
    args = ["mri", "--input", path, "--solver", "tv", "--center-fraction", "0.25", "--quiet"]
    assert main([*args, "--iters", "3", "--out", str(out)]) == 0
    assert "coil maps leave" in capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["fallback"] == "zero-filled" and not m["coil_maps"]["usable"]
    assert m["psnr"] == pytest.approx(m["baseline"]["psnr"], abs=1e-9)


def test_surface_coils_refit_maps_without_dropping_signal(tmp_path, capsys):
    """Surface coils with a fast fall-off: ESPIRiT's 0.95 support crop drops signal the coils
    measured; the maps are refit (crop 0.8), the record says so, and TV beats zero-filled."""
    import json

    from recon.cli import main

    rng = np.random.default_rng(2)
    yy, xx = np.meshgrid(np.linspace(-1, 1, N), np.linspace(-1, 1, N), indexing="ij")
    maps = []
    for c in range(6):
        a = 2 * np.pi * c / 6
        fall = np.exp(-((yy - 1.1 * np.sin(a)) ** 2 + (xx - 1.1 * np.cos(a)) ** 2) / (2 * 0.15**2))
        maps.append(fall * np.exp(1j * rng.uniform(-1, 1) * (xx + yy)))
    path = _coil_file(tmp_path / "surface.h5", np.array(maps) * shepp_logan(N)[None])
    out = tmp_path / "out"
    args = ["mri", "--input", path, "--solver", "tv", "--center-fraction", "0.25", "--quiet"]
    assert main([*args, "--accel", "3", "--iters", "20", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    rec = m["coil_maps"]
    assert "fallback" not in m and rec["usable"]
    first = rec[f"unexplained_with_crop_{COLUMN_MASK_CROP:g}"]  # a column mask's first crop
    assert rec["crop"] == 0.8  # refit: it explains more than the first fit did
    assert rec["unexplained"] < first
    assert first > 0.2 >= rec["unexplained"]
    assert m["psnr"] > m["baseline"]["psnr"]


@pytest.mark.parametrize(
    "shape, coils, calib, kernel", [((64, 64), 8, 20, None), ((45, 38), 4, 16, 5)]
)
def test_espirit_equals_sigpys_espiritcalib(shape, coils, calib, kernel):
    """Our ESPIRiT (kernel cross-correlations and batched eigh) is SigPy's EspiritCalib
    (one FFT per kernel, 100 power iterations): the same support and the same maps (measured
    2.5e-7 relative in complex64; bound 1e-4, far below the 1e-3 that separates the first
    and second eigenvectors' directions here), noisy data, odd and non-square sizes."""
    from sigpy.mri.app import EspiritCalib

    h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    img = ((xx**2 / 0.5 + yy**2 / 0.7) < 1) * (1 + 0.3 * np.cos(8 * xx))
    true = birdcage_maps(coils, shape)
    k = sp.fft(true * img[None], axes=(-2, -1), center=True, norm="ortho")
    rng = np.random.default_rng(5)
    k = k + 1e-3 * np.abs(k).max() * (
        rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)
    )
    k = k.astype(np.complex64)
    ours = espirit_maps(k, calib_width=calib, kernel_width=kernel)
    kw = min(6, calib // 2) if kernel is None else kernel
    ref = np.asarray(
        EspiritCalib(
            k, calib_width=calib, thresh=0.02, kernel_width=kw, crop=0.95, show_pbar=False
        ).run()
    )
    support, ref_support = np.abs(ours).sum(0) > 0, np.abs(ref).sum(0) > 0
    assert 0.2 < support.mean() < 1.0  # the crop removes the background, keeps the object
    assert np.array_equal(support, ref_support)
    err = np.linalg.norm((ours - ref)[:, support]) / np.linalg.norm(ref[:, support])
    assert err < 1e-4


def _surface_coil_kspace(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8 birdcage coils with a fast fall-off (r = 1) on ``image`` (128²) inside a 2× oversampled
    readout, k-space noise 0.1 % of max|k|: (k-space (8, 256, 128), RSS reference 128²)."""
    from data.coils import birdcage_maps
    from data.peer_mri import add_kspace_noise, rss_center
    from operators.mri import fft2c

    big = np.zeros((256, 128))
    big[64:192] = image
    coil_images = birdcage_maps(8, (256, 128), r=1.0) * big[None]
    k = fft2c(torch.from_numpy(coil_images.astype(np.complex64))).numpy()
    k = add_kspace_noise(k, 0.001, 1)
    return k, rss_center(k, (128, 128))


def test_doubtful_maps_are_chosen_by_the_columns_they_predict(monkeypatch):
    """Maps that leave 12-20 % of the calibration data unexplained were kept at ESPIRiT's 0.95
    crop; on BART's phantoms that cost 1-17 dB. There the crop whose SENSE fit predicts
    held-out measured columns better is kept: the looser 0.8 on ellipses (2.3 dB better), the
    0.95 on Shepp-Logan (where it is the better one)."""
    import recon.mri as mri
    from data.phantoms import random_ellipses, shepp_logan
    from recon.api import mri_problem, solve

    k, ref = _surface_coil_kspace(random_ellipses(128, seed=3))
    p = mri_problem(k, reference=ref, recon_size=(128, 128))
    maps = p.info["coil_maps"]
    crop = f"{mri.COLUMN_MASK_CROP:g}"
    assert mri.MAPS_CHECK_ABOVE < maps[f"unexplained_with_crop_{crop}"] <= mri.MAPS_REFIT_ABOVE
    assert maps["crop"] == 0.8 and maps["heldout_error"]["0.8"] < maps["heldout_error"][crop]
    chosen = solve(p, solver="tv", iters=60).psnr
    monkeypatch.setattr(mri, "MAPS_CHECK_ABOVE", 1.0)  # as before: the first crop below 0.2
    kept = mri_problem(k, reference=ref, recon_size=(128, 128))
    assert kept.info["coil_maps"]["crop"] == mri.COLUMN_MASK_CROP
    assert chosen > solve(kept, solver="tv", iters=60).psnr + 1.0
    monkeypatch.undo()
    k, ref = _surface_coil_kspace(shepp_logan(128))
    p = mri_problem(k, reference=ref, recon_size=(128, 128))
    assert "heldout_error" in p.info["coil_maps"]
    assert p.info["coil_maps"]["crop"] == mri.COLUMN_MASK_CROP


def test_maps_that_predict_unseen_columns_worse_than_zeros_are_warned_about(tmp_path):
    """Every column-mask problem records how well SENSE with the kept maps predicts the central
    rows of held-out measured columns (``heldout_error_kept``; zeros predict with error 1).
    Ellipses seed 0 under surface-like coils: measured 3.6, and TV ends below zero-filled;
    `recon mri` warns (above ``HELDOUT_WARN_ABOVE``). Seed 3 under the same coils: 0.65, TV
    9 dB above zero-filled, no warning; nor for a small noisy phantom (48², 1 % noise of
    max|k|: measured 1.99, the noise the fit amplifies; TV 3.9 dB above zero-filled)."""
    import json

    import recon.mri as mri
    from data.fastmri import write_fastmri
    from data.phantoms import random_ellipses
    from recon.cli import main
    from tests.files_mri import noisy_oversampled_phantom

    files = {}
    for seed in (0, 3):
        k, ref = _surface_coil_kspace(random_ellipses(128, seed=seed))
        files[seed] = write_fastmri(tmp_path / f"e{seed}.h5", k[None], ref[None].astype(np.float32))
    files["noisy"] = noisy_oversampled_phantom(tmp_path / "n.h5", noise=0.01)
    errors = {}
    for name, path in files.items():
        out = tmp_path / f"out{name}"
        argv = ["mri", "--input", str(path), "--solver", "tv", "--iters", "2", "--quiet"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main([*argv, "--threads", "1", "--out", str(out)]) in (0, 3)
        said = [str(w.message) for w in caught if "held-out" in str(w.message)]
        assert len(said) == (1 if name == 0 else 0), said
        errors[name] = json.loads((out / "metrics.json").read_text())["coil_maps"]
        errors[name] = errors[name]["heldout_error_kept"]
    assert errors[0] > mri.HELDOUT_WARN_ABOVE > errors["noisy"] > 1.0 > errors[3]
