"""fastMRI files: round trips (multi- and single-coil), the ISMRMRD header convention, clear
errors naming the file, atomic writes, the submission layout, fastMRI-style evaluation, and
synthetic files whose reference is the RSS of their fully sampled k-space."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from data.fastmri import (
    NS,
    FastMRIError,
    center_crop,
    check_maps,
    count_slices,
    evaluate,
    make_synthetic_fastmri,
    read_fastmri,
    write_fastmri,
    write_reconstruction,
)
from data.phantoms import shepp_logan
from operators.mri import ifft2c, rss


def _ck(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_multicoil_round_trip(tmp_path):
    k = _ck((3, 4, 20, 16))
    ref = np.random.default_rng(1).random((3, 12, 10)).astype(np.float32)
    attrs = {"patient_id": "p1", "acquisition": "CORPD_FBK"}
    path = write_fastmri(tmp_path / "mc.h5", k, ref, attrs=attrs, recon_size=(12, 10))
    f = read_fastmri(path)
    np.testing.assert_array_equal(f.kspace, k)
    np.testing.assert_array_equal(f.reference, ref)
    assert f.kspace.dtype == np.complex64 and f.reference_key == "reconstruction_rss"
    assert f.is_multicoil and f.n_slices == 3
    assert f.acquisition == "CORPD_FBK" and f.attrs["patient_id"] == "p1"
    assert f.attrs["max"] == pytest.approx(float(ref.max()))
    assert f.attrs["norm"] == pytest.approx(float(np.linalg.norm(ref)))
    assert f.encoding_size == (20, 16) and f.recon_size == (12, 10)
    assert f.encoding_limits == (0, 15, 8)
    assert count_slices(path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mc.h5"]  # no temporary left over

    one = read_fastmri(path, slices=1)
    np.testing.assert_array_equal(one.kspace, k[1:2])
    np.testing.assert_array_equal(one.reference, ref[1:2])
    np.testing.assert_array_equal(read_fastmri(path, slices=[2, 0]).kspace, k[[2, 0]])
    np.testing.assert_array_equal(read_fastmri(path, slices=slice(1, None)).kspace, k[1:])
    np.testing.assert_array_equal(read_fastmri(path, slices=-1).kspace, k[2:])
    with pytest.raises(FastMRIError, match="mc.h5: slice 7 out of range"):
        read_fastmri(path, slices=7)


def test_singlecoil_round_trip(tmp_path):
    k = _ck((2, 8, 6), seed=2)
    ref = np.abs(_ck((2, 8, 6), seed=3)).astype(np.float32)
    f = read_fastmri(write_fastmri(tmp_path / "sc.h5", k, ref))
    np.testing.assert_array_equal(f.kspace, k)
    np.testing.assert_array_equal(f.reference, ref)
    assert not f.is_multicoil and f.reference_key == "reconstruction_esc"
    assert f.acquisition == "singlecoil" and f.encoding_size == f.recon_size == (8, 6)
    bare = read_fastmri(write_fastmri(tmp_path / "bare.h5", k))
    assert bare.reference is None and bare.reference_key is None


def test_header_is_namespaced_ismrmrd_with_fastmri_axes(tmp_path):
    """matrixSize x is along H (the readout axis), y along W: as in fastMRI's knee files
    (kspace (…, 640, 368), encodedSpace x = 640, y = 368, reconSpace 320 × 320)."""
    path = write_fastmri(tmp_path / "h.h5", _ck((1, 2, 12, 10)), recon_size=(8, 6))
    with h5py.File(path) as f:
        root = ET.fromstring(f["ismrmrd_header"][()])
    assert root.tag == f"{{{NS}}}ismrmrdHeader"
    ms = root.find(f"{{{NS}}}encoding/{{{NS}}}encodedSpace/{{{NS}}}matrixSize")
    assert (ms.find(f"{{{NS}}}x").text, ms.find(f"{{{NS}}}y").text) == ("12", "10")

    # a header laid out like a real knee file, written by hand
    xml = (
        f'<?xml version="1.0"?><ismrmrdHeader xmlns="{NS}"><encoding><encodedSpace>'
        "<matrixSize><x>640</x><y>368</y><z>1</z></matrixSize></encodedSpace><reconSpace>"
        "<matrixSize><x>320</x><y>320</y><z>1</z></matrixSize></reconSpace><encodingLimits>"
        "<kspace_encoding_step_1><minimum>0</minimum><maximum>366</maximum><center>184</center>"
        "</kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>"
    )
    real = tmp_path / "knee.h5"
    with h5py.File(real, "w") as f:
        f.create_dataset("kspace", data=np.zeros((1, 2, 4, 4), np.complex64))
        f.create_dataset("ismrmrd_header", data=np.bytes_(xml))
        f.attrs["acquisition"] = "CORPD_FBK"
    kf = read_fastmri(real)
    assert kf.encoding_size == (640, 368) and kf.recon_size == (320, 320)
    assert kf.encoding_limits == (0, 366, 184)


def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for key, val in datasets.items():
            f.create_dataset(key, data=val)
    return path


def test_bad_files_give_clear_errors_naming_the_file(tmp_path):
    with pytest.raises(FastMRIError, match="nokspace.h5: no 'kspace'"):
        read_fastmri(_h5(tmp_path / "nokspace.h5", other=np.zeros(3)))
    k = np.ones((1, 2, 8, 8), np.complex64)
    k[0, 0, 0, 0] = np.nan
    with pytest.raises(FastMRIError, match="nan.h5: kspace contains NaN"):
        read_fastmri(_h5(tmp_path / "nan.h5", kspace=k))
    k[0, 0, 0, 0] = np.inf
    with pytest.raises(FastMRIError, match="inf.h5: kspace contains NaN or infinite"):
        read_fastmri(_h5(tmp_path / "inf.h5", kspace=k))
    with pytest.raises(FastMRIError, match=r"ndim.h5: kspace must be \(slices"):
        read_fastmri(_h5(tmp_path / "ndim.h5", kspace=np.ones((8, 8), np.complex64)))
    with pytest.raises(FastMRIError, match="real.h5: kspace must be complex"):
        read_fastmri(_h5(tmp_path / "real.h5", kspace=np.ones((1, 8, 8), np.float32)))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(FastMRIError, match="junk.h5: not a readable HDF5"):
        read_fastmri(junk)
    with pytest.raises(FastMRIError, match="missing.h5: no such"):
        read_fastmri(tmp_path / "missing.h5")
    bad_xml = _h5(tmp_path / "xml.h5", kspace=np.ones((1, 4, 4), np.complex64))
    with h5py.File(bad_xml, "a") as f:
        f.create_dataset("ismrmrd_header", data=np.bytes_("<not xml"))
    with pytest.raises(FastMRIError, match="xml.h5: unreadable ismrmrd_header"):
        read_fastmri(bad_xml)


def test_misplaced_axes_and_mismatched_references_are_named(tmp_path):
    """Layouts a user writes by mistake: the coil axis last (it read as 128 coils of 8 columns
    and failed on the calibration width), real/imaginary on a last axis, and multi-coil k-space
    without its slice axis beside a one-slice reference (it read as 8 single-coil slices, then
    crashed with an IndexError)."""
    z = np.zeros
    coil_last = _h5(tmp_path / "coillast.h5", kspace=z((1, 128, 128, 8), np.complex64))
    with pytest.raises(FastMRIError, match=r"coillast.h5: .* 128 coils of 128×8: is the coil"):
        read_fastmri(coil_last)
    pairs = _h5(tmp_path / "pairs.h5", kspace=z((1, 4, 16, 16, 2), np.float32))
    with pytest.raises(FastMRIError, match=r"pairs.h5: .* real and imaginary parts"):
        read_fastmri(pairs)
    k = np.ones((8, 16, 16), np.complex64)
    no_slice = _h5(tmp_path / "noslice.h5", kspace=k, reconstruction_rss=z((1, 16, 16), np.float32))
    with pytest.raises(FastMRIError, match=r"noslice.h5: kspace \(8, 16, 16\) has 8 slices but "
                       r"reconstruction_rss \(1, 16, 16\) .* \(slices, coils, H, W\)"):  # fmt: skip
        read_fastmri(no_slice, slices=0)


def test_coil_map_mismatch_is_a_clear_error():
    k = np.ones((2, 3, 8, 8), np.complex64)
    check_maps(np.ones((3, 8, 8)), k)  # matches
    check_maps(np.ones((3, 8, 8)), k[0])
    with pytest.raises(FastMRIError, match=r"maps.npy: coil maps of shape \(4, 8, 8\) do not"):
        check_maps(np.ones((4, 8, 8)), k, "maps.npy")
    with pytest.raises(FastMRIError, match="do not match"):
        check_maps(np.ones((3, 8, 9)), k, "maps.npy")


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_fastmri(tmp_path / "a.h5", _ck((1, 4, 4)))
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_fastmri(path, _ck((1, 6, 6)), attrs={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]
    with pytest.raises(FastMRIError, match="reference"):
        write_fastmri(tmp_path / "b.h5", _ck((2, 4, 4)), np.ones((3, 4, 4)))


def test_submission_file_layout(tmp_path):
    rec = np.random.default_rng(0).random((2, 10, 10)).astype(np.float32)
    p = write_reconstruction(tmp_path / "sub.h5", rec)
    with h5py.File(p) as f:
        assert list(f.keys()) == ["reconstruction"]
        assert f["reconstruction"].dtype == np.float32
        np.testing.assert_array_equal(f["reconstruction"][()], rec)
    p2 = write_reconstruction(tmp_path / "one.h5", rec[0] * np.exp(1j))  # complex slice
    with h5py.File(p2) as f:
        np.testing.assert_allclose(f["reconstruction"][()], rec[:1], rtol=1e-6)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["one.h5", "sub.h5"]


def test_evaluate_identical_and_known_perturbation():
    gt = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32) + 0.5
    same = evaluate(gt, gt)
    assert same["nmse"] == 0 and same["psnr"] == float("inf")
    assert same["ssim"] == pytest.approx(1.0)
    assert same["data_range"] == pytest.approx(float(gt.max()))
    # a constant offset of 1 % of the volume max: PSNR = 20·log10(100) = 40 dB,
    # NMSE = N·δ²/||gt||²
    delta = 0.01 * float(gt.max())
    m = evaluate(gt, gt.astype(np.float64) + delta)
    assert m["psnr"] == pytest.approx(40.0, abs=1e-9)
    assert m["nmse"] == pytest.approx(gt.size * delta**2 / float(np.sum(gt.astype(float) ** 2)))
    # agrees with skimage's PSNR at data_range = max(gt) for a random perturbation; complex
    # predictions are compared by magnitude
    noisy = gt + 0.05 * np.random.default_rng(1).standard_normal(gt.shape)
    expected = peak_signal_noise_ratio(gt.astype(float), noisy, data_range=float(gt.max()))
    assert evaluate(gt, noisy * np.exp(0.3j))["psnr"] == pytest.approx(expected)
    one = evaluate(gt[0], gt[0])  # a single slice
    assert one["psnr"] == float("inf")
    with pytest.raises(ValueError, match="differs"):
        evaluate(gt, gt[:, :8])


def test_center_crop_follows_fastmri_offsets():
    x = np.arange(7 * 9).reshape(7, 9)
    np.testing.assert_array_equal(center_crop(x, (4, 4)), x[1:5, 2:6])
    np.testing.assert_array_equal(center_crop(x[None], (7, 9))[0], x)


def test_synthetic_file_reference_is_rss_of_fully_sampled_kspace(tmp_path):
    img = shepp_logan(48)
    path = make_synthetic_fastmri(tmp_path / "syn.h5", img, n_coils=4, seed=1, recon_size=(40, 40))
    f = read_fastmri(path)
    assert f.kspace.shape == (1, 4, 48, 48) and f.reference.shape == (1, 40, 40)
    assert f.encoding_size == (48, 48) and f.recon_size == (40, 40)
    assert f.attrs["patient_id"] == "synthetic-1" and f.acquisition == "multicoil"
    full_rss = rss(ifft2c(torch.from_numpy(f.kspace)), dim=1).numpy()
    np.testing.assert_allclose(center_crop(full_rss, (40, 40)), f.reference, rtol=1e-4, atol=1e-9)
    # fastMRI-like magnitudes: image max 1e-3 (SYNTHETIC_SCALE), |x| = RSS with normalized maps
    assert f.reference.max() == pytest.approx(1e-3 * center_crop(img, (40, 40)).max() / img.max())
    assert f.attrs["max"] == pytest.approx(float(f.reference.max()))
    # the magnitude is the image; the phase is not trivial (smooth random phase)
    coil0 = ifft2c(torch.from_numpy(f.kspace[0]))[0].numpy()
    assert np.std(np.angle(coil0[np.abs(coil0) > 1e-5])) > 0.1

    vol = make_synthetic_fastmri(tmp_path / "vol.h5", np.stack([img, img[::-1]]), n_coils=2)
    v = read_fastmri(vol)
    assert v.kspace.shape == (2, 2, 48, 48) and v.reference.shape == (2, 48, 48)
    np.testing.assert_allclose(v.reference[1], 1e-3 * img[::-1] / img.max(), atol=1e-8)
    with pytest.raises(ValueError, match="recon_size"):
        make_synthetic_fastmri(tmp_path / "big.h5", img, recon_size=(64, 64))
