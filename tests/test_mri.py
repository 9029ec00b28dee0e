"""MRI: Fourier conventions, closed-form normal solve, masks, ESPIRiT, fastMRI files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import sigpy as sp
import torch

from data.coils import birdcage_maps, espirit_maps
from data.fastmri import (
    FastMRIError,
    check_maps,
    evaluate,
    make_synthetic_fastmri,
    read_fastmri,
    write_fastmri,
    write_reconstruction,
)
from data.masks import (
    fastmri_equispaced_mask,
    fastmri_random_mask,
    poisson_disc_mask,
)
from data.phantoms import shepp_logan
from operators.mri import SENSE, MaskedFFT, fft2c, ifft2c, rss
from solvers import conjugate_gradient


def test_centred_fft_equals_sigpy_and_is_unitary():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 20, 18)) + 1j * rng.standard_normal((3, 20, 18))).astype(
        np.complex128
    )
    ours = fft2c(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        ours, sp.fft(x, axes=(-2, -1), center=True, norm="ortho"), atol=1e-12
    )
    np.testing.assert_allclose(ifft2c(fft2c(torch.from_numpy(x))).numpy(), x, atol=1e-12)


def test_masked_fft_closed_form_normal_solve_matches_cg():
    op = MaskedFFT(fastmri_random_mask(32, 4, 0.08, seed=0), height=32)
    g = torch.Generator().manual_seed(0)
    rhs = torch.randn(2, 1, 32, 32, generator=g, dtype=torch.complex128)
    lam, rho = 2.0, 0.3
    closed = op.solve_normal(rhs, lam, rho)
    cg, _ = conjugate_gradient(lambda v: lam * op.normal(v) + rho * v, rhs, iters=200, tol=1e-13)
    assert float((closed - cg).abs().max()) < 1e-9


def test_sense_adjoint_of_full_sampling_with_normalized_maps_is_identity():
    maps = birdcage_maps(6, (24, 24))
    op = SENSE(maps, np.ones(24, np.float32))
    x = torch.randn(1, 1, 24, 24, dtype=torch.complex128)
    assert torch.allclose(op.adjoint(op.forward(x)), x, atol=1e-5)
    coil_imgs = torch.from_numpy(maps)[None].to(torch.complex128) * x
    assert torch.allclose(rss(coil_imgs), x.abs()[:, 0], atol=1e-5)


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("accel,cf", [(4, 0.08), (8, 0.04)])
def test_fastmri_masks_acceleration_centre_and_seed(kind, accel, cf):
    fn = fastmri_random_mask if kind == "random" else fastmri_equispaced_mask
    w = 368
    masks = [fn(w, accel, cf, seed=s) for s in range(30)]
    n_low = round(w * cf)
    for m in masks:
        c = (w - n_low + 1) // 2
        assert m[c : c + n_low].all()  # the fully sampled centre
    achieved = w / np.mean([m.sum() for m in masks])
    assert abs(achieved - accel) / accel < 0.12
    assert np.array_equal(fn(w, accel, cf, seed=3), fn(w, accel, cf, seed=3))
    if kind == "random":
        assert not np.array_equal(masks[0], masks[1])


def test_mask_errors():
    with pytest.raises(ValueError, match="acceleration"):
        fastmri_random_mask(64, 0.5, 0.08)
    with pytest.raises(ValueError, match="centre fraction"):
        fastmri_random_mask(64, 4, 1.5)
    with pytest.raises(ValueError, match="more than"):
        fastmri_equispaced_mask(64, 8, 0.3)


def test_poisson_mask_acceleration():
    m = poisson_disc_mask((64, 64), 4, seed=0)
    assert 3.0 < m.size / m.sum() < 5.0


def test_espirit_recovers_birdcage_maps():
    """Mean |<S_est, S_true>| / (|S_est||S_true|) per pixel inside the object; measured 0.99999."""
    img = shepp_logan(64).astype(np.complex64)
    true = birdcage_maps(8, (64, 64))
    k = sp.fft(true * img[None], axes=(-2, -1), center=True, norm="ortho")
    est = espirit_maps(k, calib_width=20)
    num = np.abs((np.conj(est) * true).sum(0))
    den = np.linalg.norm(est, axis=0) * np.linalg.norm(true, axis=0) + 1e-12
    inside = img.real > 0.05
    corr = float((num / den)[inside].mean())
    print("ESPIRiT mean correlation inside the object:", corr)
    assert corr > 0.99


def test_multicoil_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((3, 4, 20, 16)) + 1j * rng.standard_normal((3, 4, 20, 16))).astype(
        np.complex64
    )
    ref = rng.random((3, 12, 10)).astype(np.float32)
    path = write_fastmri(
        tmp_path / "mc.h5", k, ref, attrs={"patient_id": "p1"}, recon_size=(12, 10)
    )
    f = read_fastmri(path)
    np.testing.assert_array_equal(f.kspace, k)
    np.testing.assert_array_equal(f.reference, ref)
    assert f.is_multicoil and f.acquisition == "multicoil" and f.attrs["patient_id"] == "p1"
    assert f.encoding_size == (20, 16) and f.recon_size == (12, 10)
    assert f.attrs["max"] == pytest.approx(float(ref.max()))
    one = read_fastmri(path, slices=1)
    np.testing.assert_array_equal(one.kspace[0], k[1])
    with pytest.raises(FastMRIError, match="out of range"):
        read_fastmri(path, slices=7)


def test_singlecoil_round_trip(tmp_path):
    k = np.ones((2, 8, 8), np.complex64)
    f = read_fastmri(write_fastmri(tmp_path / "sc.h5", k, np.ones((2, 8, 8), np.float32)))
    assert not f.is_multicoil and f.reference_key == "reconstruction_esc"


def test_bad_files_give_clear_errors(tmp_path):
    no_k = tmp_path / "nokspace.h5"
    with h5py.File(no_k, "w") as f:
        f.create_dataset("other", data=np.zeros(3))
    with pytest.raises(FastMRIError, match="nokspace.h5: no 'kspace'"):
        read_fastmri(no_k)
    nan = tmp_path / "nan.h5"
    k = np.ones((1, 2, 8, 8), np.complex64)
    k[0, 0, 0, 0] = np.nan
    write_fastmri(nan, k)
    with pytest.raises(FastMRIError, match="nan.h5: kspace contains NaN"):
        read_fastmri(nan)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(FastMRIError, match="junk.h5"):
        read_fastmri(junk)
    with pytest.raises(FastMRIError, match="do not match"):
        check_maps(np.ones((4, 8, 8)), np.ones((1, 3, 8, 8)), "maps.npy")


def test_submission_file_and_evaluation(tmp_path):
    rec = np.random.default_rng(0).random((2, 10, 10)).astype(np.float32)
    p = write_reconstruction(tmp_path / "sub.h5", rec)
    with h5py.File(p) as f:
        np.testing.assert_array_equal(f["reconstruction"][()], rec)
    same = evaluate(rec, rec)
    assert same["nmse"] == 0 and same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1)
    noisy = rec + 0.01 * rec.max()
    assert evaluate(rec, noisy)["psnr"] == pytest.approx(40.0, abs=1e-4)  # offset of 1 % (float32)


def test_synthetic_file_reference_is_rss_of_full_kspace(tmp_path):
    img = shepp_logan(48)
    path = make_synthetic_fastmri(tmp_path / "syn.h5", img, n_coils=4, seed=1, recon_size=(40, 40))
    f = read_fastmri(path)
    assert f.kspace.shape == (1, 4, 48, 48) and f.recon_size == (40, 40)
    coil = ifft2c(torch.from_numpy(f.kspace[0])).numpy()
    full_rss = np.sqrt((np.abs(coil) ** 2).sum(0))
    from data.fastmri import center_crop

    np.testing.assert_allclose(
        center_crop(full_rss, (40, 40)), f.reference[0], rtol=1e-4, atol=1e-9
    )
    assert 1e-4 < float(f.reference.max()) <= 1.01e-3  # fastMRI-like magnitudes
