"""k-space that is already undersampled (fastMRI's test and challenge sets: a ``mask`` dataset,
k-space zero outside it) is reconstructed from its own samples, never undersampled again; zero
padding (fastMRI's knee files) hides neither the noise nor passes for undersampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data.fastmri import read_fastmri, simulate_multicoil, write_fastmri
from data.peer_mri import add_kspace_noise, rss_center
from data.phantoms import shepp_logan
from recon.api import mri_problem, solve
from recon.cli import main
from recon.mri import measured_samples

N = 96


def _kspace(noise: float = 0.003):
    k, ref, _ = simulate_multicoil(shepp_logan(N), 4, seed=0)
    return add_kspace_noise(k, noise, 3).astype(np.complex64), ref


def _mask(w: int = N) -> np.ndarray:
    m = np.zeros(w, bool)
    m[::4] = True
    m[w // 2 - 8 : w // 2 + 8] = True  # a fully sampled centre for the coil maps
    return m


def _run(path, out, *extra) -> dict:
    argv = ["mri", "--input", str(path), "--solver", "tv", "--iters", "15", "--quiet"]
    assert main([*argv, *extra, "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_a_test_set_file_is_reconstructed_from_its_own_mask(tmp_path, recwarn):
    """The file's mask was ignored: a random 4× mask went on top of it (about 11× in effect),
    scored 18.9 against 29.1 dB for its own samples, and metrics.json said 4×. Now the file's
    samples are used as they are: the same image as undersampling the fully sampled k-space
    with that mask through the API, and its acceleration recorded."""
    k, ref = _kspace()
    m = _mask()
    path = write_fastmri(tmp_path / "test.h5", k[None], ref[None], mask=m)
    assert read_fastmri(path).mask.tolist() == m.tolist()
    got = _run(path, tmp_path / "o")
    assert got["mask"]["type"] == "file"
    assert got["mask"]["achieved_accel"] == pytest.approx(N / m.sum())
    rec = np.load(tmp_path / "o" / "recon.npy")
    want = solve(mri_problem(k, mask=m, reference=ref), solver="tv", iters=15)
    assert np.allclose(rec.squeeze(), want.image, rtol=1e-4, atol=1e-5 * float(ref.max()))
    assert got["psnr"] == pytest.approx(want.psnr, abs=0.01)
    # the file's own samples beat a second undersampling of them (what was done before)
    again = solve(mri_problem(k * m, mask=m & _mask_random(), reference=ref), solver="tv", iters=15)
    assert got["psnr"] > again.psnr + 2


def _mask_random() -> np.ndarray:
    from data.masks import fastmri_random_mask

    return fastmri_random_mask(N, 4.0, 0.08, seed=0).astype(bool)


def test_mask_options_given_for_a_file_with_its_own_mask_are_named_unused(tmp_path):
    k, ref = _kspace()
    path = write_fastmri(tmp_path / "test.h5", k[None], ref[None], mask=_mask())
    with pytest.warns(UserWarning, match=r"already undersampled .*--accel not used"):
        got = _run(path, tmp_path / "o", "--accel", "8")
    assert got["mask"]["type"] == "file"


def test_zero_filled_kspace_without_a_mask_dataset_is_read_as_undersampled(tmp_path, recwarn):
    """Columns that are all zero between measured ones are undersampling; all-zero columns at
    the edges only (zero padding) are not."""
    k, ref = _kspace()
    m = _mask()
    assert measured_samples(k * m).tolist() == m.tolist()
    padded = np.zeros((4, N, N + 32), np.complex64)
    padded[..., 16:-16] = k
    assert measured_samples(padded) is None
    path = write_fastmri(tmp_path / "zf.h5", (k * m)[None], ref[None])
    assert _run(path, tmp_path / "o")["mask"]["type"] == "file"


def test_zero_padded_columns_do_not_hide_the_noise(tmp_path):
    """Knee files pad the phase-encode columns beyond those acquired with zeros. The noise was
    measured over the corners, padding included: 0, and the rules that follow the noise got
    none. Exact zeros are never counted as noise samples."""
    clean, _, _ = simulate_multicoil(shepp_logan(N), 4, seed=0)
    k, _ = _kspace(noise=0.003)
    sigma = 0.003 * float(np.abs(clean).max())  # add_kspace_noise: σ per real/imaginary part
    padded = np.zeros((4, N, N + 16), np.complex64)
    padded[..., 8:-8] = k  # the corner blocks (1/8 of each axis) hold 6 acquired columns
    ref = rss_center(padded, (N, N + 16))
    path = write_fastmri(tmp_path / "knee.h5", padded[None], ref[None])
    got = _run(path, tmp_path / "o", "--center-fraction", "0.16")
    assert got["mask"]["type"] == "random"
    assert got["kspace_noise"] == pytest.approx(sigma, rel=0.25)


def test_api_takes_your_own_mask_and_refuses_undersampling_twice():
    k, ref = _kspace()
    m = _mask()
    p = mri_problem(k, mask=m)
    assert p.info["mask"]["type"] == "given"
    assert p.info["mask"]["achieved_accel"] == pytest.approx(N / m.sum())
    two_d = np.broadcast_to(m, (N, N))
    assert np.array_equal(mri_problem(k, mask=two_d).y.numpy(), p.y.numpy())
    with pytest.raises(ValueError, match="already undersampled"):
        mri_problem(k * m)  # mask='random' would undersample it again
    with pytest.raises(ValueError, match=r"expected the sampled columns \(W,\) = \(96,\)"):
        mri_problem(k, mask=m[:-1])
    few = np.zeros(N, bool)
    few[::3] = True
    with pytest.raises(ValueError, match="the mask's fully sampled centre"):
        mri_problem(k, mask=few)


def test_a_mask_dataset_of_another_shape_is_ignored_with_a_warning(tmp_path):
    import h5py

    k, ref = _kspace()
    path = write_fastmri(tmp_path / "other.h5", k[None], ref[None])
    with h5py.File(path, "r+") as f:
        f["mask"] = np.ones(N + 1)
    with pytest.warns(UserWarning, match=r"other.h5: 'mask' .* not one 0/1 value per k-space"):
        assert read_fastmri(path).mask is None


def test_two_dimensional_undersampling_stored_zero_filled_is_found(tmp_path, recwarn):
    """k-space undersampled in 2-D (random samples, a full centre) and stored zero-filled
    passed as fully sampled: a random 4× column mask went on top, and the coil maps came from
    a centre that was not fully sampled. Its samples are used as they are (CLI and API)."""
    k, ref = _kspace()
    m2 = np.random.default_rng(0).random((N, N)) < 0.3  # variable density is not needed here
    m2[N // 2 - 8 : N // 2 + 8, N // 2 - 8 : N // 2 + 8] = True
    assert measured_samples(k * m2).tolist() == m2.tolist()
    path = write_fastmri(tmp_path / "p.h5", (k * m2)[None], ref[None])
    got = _run(path, tmp_path / "o")
    assert got["mask"]["type"] == "file" and not got["mask"]["columns"]
    assert got["mask"]["achieved_accel"] == pytest.approx(m2.size / m2.sum())
    with pytest.raises(ValueError, match="already undersampled .* samples hold data"):
        mri_problem(k * m2)
