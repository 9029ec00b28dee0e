"""`recon mri` on whole fastMRI files: every slice (or a range), readout oversampling cropped to
the header's recon size, fastMRI volume metrics and the submission layout; and one TV."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from data.fastmri import evaluate, make_synthetic_fastmri
from data.phantoms import shepp_logan
from recon.cli import main
from recon.mri import parse_slices

COMMON = ["--quiet", "--accel", "3", "--center-fraction", "0.25", "--iters", "4"]


@pytest.fixture(scope="module")
def oversampled_volume(tmp_path_factory):
    """3 slices, 16 coils, k-space twice as tall as the image along the readout (rows)."""
    vol = np.stack([np.pad(shepp_logan(32) * (1 + 0.2 * i), ((16, 16), (0, 0))) for i in range(3)])
    path = tmp_path_factory.mktemp("data") / "file_knee_volume.h5"
    return make_synthetic_fastmri(path, vol, n_coils=16, seed=2, recon_size=(32, 32))


def test_whole_file_is_reconstructed_and_evaluated_the_fastmri_way(tmp_path, oversampled_volume):
    out = tmp_path / "all"
    assert main(["mri", "--input", str(oversampled_volume), "--solver", "tv", *COMMON,
                 "--out", str(out)]) == 0  # fmt: skip
    with h5py.File(out / "reconstruction.h5") as f:
        rec = f["reconstruction"][()]
    assert rec.shape == (3, 32, 32) and rec.dtype == np.float32
    assert np.array_equal(np.load(out / "recon.npy"), rec)
    m = json.loads((out / "metrics.json").read_text())
    with h5py.File(oversampled_volume) as f:
        gt = f["reconstruction_rss"][()]
    expect = evaluate(gt, rec)  # NMSE/PSNR over the volume, SSIM averaged over slices
    assert m["psnr"] == pytest.approx(expect["psnr"], rel=1e-9)
    assert m["ssim"] == pytest.approx(expect["ssim"], rel=1e-9)
    assert [r["slice"] for r in m["slices"]] == [0, 1, 2]
    assert m["iterations"] == sum(r["iterations"] for r in m["slices"])
    for r, img, ref in zip(m["slices"], rec, gt, strict=True):
        assert r["psnr"] == pytest.approx(evaluate(ref, img)["psnr"], rel=1e-9)
    assert m["coils"] == 16 and m["recon_size"] == [32, 32]
    assert m["readout_oversampling_removed"] == 2  # solved on 32 of the 64 readout rows
    assert m["psnr"] > m["baseline"]["psnr"] + 3  # TV beats zero-filled on every slice
    assert all(r["psnr"] > 20 for r in m["slices"])


def test_slice_range_and_single_slice_match_the_whole_file(tmp_path, oversampled_volume):
    args = ["mri", "--input", str(oversampled_volume), "--solver", "tv", *COMMON]
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    assert main([*args, "--slice", "1:3", "--out", str(tmp_path / "r")]) == 0
    assert main([*args, "--slice", "2", "--out", str(tmp_path / "one")]) == 0
    with h5py.File(tmp_path / "all" / "reconstruction.h5") as f:
        whole = f["reconstruction"][()]
    with h5py.File(tmp_path / "r" / "reconstruction.h5") as f:
        part = f["reconstruction"][()]
    with h5py.File(tmp_path / "one" / "reconstruction.h5") as f:
        one = f["reconstruction"][()]
    # each slice is reconstructed on its own: the same image whatever the selection
    np.testing.assert_array_equal(part, whole[1:3])
    np.testing.assert_array_equal(one, whole[2:3])
    assert np.load(tmp_path / "one" / "recon.npy").shape == (32, 32)


@pytest.mark.parametrize("spec", ["3", "-1", "2:2", "0:9", "x", "1:b"])
def test_bad_slice_selection_names_the_file(tmp_path, oversampled_volume, spec, capsys):
    out = tmp_path / "bad"
    args = ["mri", "--input", str(oversampled_volume), "--slice", spec, "--out", str(out)]
    assert main([*args, *COMMON]) == 2
    err = capsys.readouterr().err
    assert str(oversampled_volume) in err and "0..2" in err
    assert not (out / "metrics.json").exists()


def test_slice_of_a_single_image_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["mri", "--input", "bundled:brain-t1", "--slice", "3", "--out", str(out)]) == 2
    assert "--slice 3: bundled:brain-t1 is one image" in capsys.readouterr().err
    assert not out.exists()


def test_parse_slices():
    assert parse_slices(None, 4, "f") == [0, 1, 2, 3]
    assert parse_slices("all", 4, "f") == [0, 1, 2, 3]
    assert parse_slices(":2", 4, "f") == [0, 1]
    assert parse_slices("2:", 4, "f") == [2, 3]
    assert parse_slices("3", 4, "f") == [3]


@pytest.mark.parametrize("modality", ["mri", "ct"])
def test_prior_tv_is_the_solver_tv(tmp_path, modality):
    """One TV: --solver pnp-admm --prior tv is the scale-aware TV of --solver tv (the same
    weight relative to the data, the same ρ), so the two give the same image bit for bit."""
    if modality == "mri":
        base = ["mri", "--input", "bundled:brain-t1", "--quiet", "--iters", "3"]
    else:
        base = ["ct", "--input", "phantom:shepp-logan", "--size", "48", "--views", "30",
                "--quiet", "--iters", "3"]  # fmt: skip
    assert main([*base, "--solver", "tv", "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--solver", "pnp-admm", "--prior", "tv", "--out", str(tmp_path / "b")]) == 0
    a, b = np.load(tmp_path / "a" / "recon.npy"), np.load(tmp_path / "b" / "recon.npy")
    np.testing.assert_array_equal(a, b)
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())["parameters"]
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())["parameters"]
    assert ma["tv_weight"] == mb["tv_weight"] and ma["rho"] == mb["rho"]


def test_prior_tv_with_pgd_solves_admm_problem_weight(tmp_path):
    """PGD's TV weight is ADMM's times step_rel·rho_rel (the same objective), with the ρ ADMM
    used (it follows the measured noise)."""
    base = ["mri", "--input", "bundled:brain-t1", "--quiet", "--iters", "2"]
    assert main([*base, "--solver", "tv", "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--solver", "pnp-pgd", "--prior", "tv", "--out", str(tmp_path / "p")]) == 0
    pa = json.loads((tmp_path / "a" / "metrics.json").read_text())["parameters"]
    pp = json.loads((tmp_path / "p" / "metrics.json").read_text())["parameters"]
    rho_rel = pa.get("rho_rel_used", pa["rho_rel"])  # ρ may follow the measured noise
    assert pp.get("rho_rel_used") == pa.get("rho_rel_used")
    assert pp["tv_weight"] == pytest.approx(pa["tv_weight"] * pp["step_rel"] * rho_rel)


def test_user_config_beats_the_shipped_per_prior_overrides(tmp_path):
    """A --config solver section wins over the presets filed for the prior (ridge-ct files its
    own rho_rel), and a --config per-prior entry wins over the user's plain section."""
    from recon.pipeline import load_presets, solver_params

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"pnp-admm": {"rho_rel": 0.5, "iters": 7}}))
    p = solver_params(load_presets("ct", cfg), "pnp-admm", {}, "ridge-ct")
    assert p["rho_rel"] == 0.5 and p["iters"] == 7
    assert "prior_sigma_noise" in p  # the prior's other shipped overrides still apply
    mine = {"pnp-admm": {"rho_rel": 0.5}, "priors": {"ridge-ct": {"pnp-admm": {"rho_rel": 0.2}}}}
    cfg.write_text(json.dumps(mine))
    assert solver_params(load_presets("ct", cfg), "pnp-admm", {}, "ridge-ct")["rho_rel"] == 0.2
    assert solver_params(load_presets("ct", cfg), "pnp-admm", {}, "aelpn-ct")["rho_rel"] == 0.5
    shipped = solver_params(load_presets("ct"), "pnp-admm", {}, "ridge-ct")["rho_rel"]
    assert shipped != 0.5


def test_readout_oversampling_removal_keeps_the_central_rows_exactly():
    """The reduced k-space shows exactly the central H/2 rows of the coil images (float64), a
    column mask samples the same columns of it, and nothing changes when the recon is taller
    than H/2 or H is not a multiple of 4."""
    from operators.mri import ifft2c
    from recon.mri import remove_readout_oversampling

    rng = np.random.default_rng(4)
    k = rng.standard_normal((3, 40, 14)) + 1j * rng.standard_normal((3, 40, 14))
    reduced, factor = remove_readout_oversampling(k, 20)
    assert factor == 2 and reduced.shape == (3, 20, 14) and reduced.dtype == k.dtype
    import torch

    full_img = ifft2c(torch.from_numpy(k)).numpy()
    img = ifft2c(torch.from_numpy(reduced)).numpy()
    np.testing.assert_allclose(img, full_img[:, 10:30], rtol=0, atol=1e-12 * np.abs(k).max())
    cols = np.zeros(14, bool)
    cols[[0, 3, 6, 7, 8, 12]] = True
    sampled, _ = remove_readout_oversampling(k * cols, 20)
    np.testing.assert_allclose(sampled, reduced * cols, atol=1e-12 * np.abs(k).max())
    for height, h in ((21, 40), (18, 38)):
        same, f = remove_readout_oversampling(k[:, :h], height)
        assert f == 1 and same is not None and same.shape == (3, h, 14)


def test_the_reduced_problem_has_the_full_problems_solution_rows():
    """With the readout fully sampled the data term decouples row by row, so TV-regularized
    SENSE (PnP-ADMM, the same weights, the true maps) on the reduced k-space reaches the central
    rows of the full-grid solution; only the prior near the two cut rows sees a difference
    (measured: 9.6e-3 relative overall, 0.7 % and 0.6 % of it on the two cut rows themselves,
    3e-4 from the sixth row in; the object fills the kept rows, the worst case)."""
    import torch

    from data.coils import birdcage_maps
    from data.masks import fastmri_random_mask
    from operators.mri import SENSE, fft2c
    from priors.classical import TVPrior
    from recon.mri import remove_readout_oversampling
    from solvers.admm import pnp_admm

    img = np.pad(shepp_logan(32), ((16, 16), (0, 0))).astype(np.complex128)
    maps = birdcage_maps(6, (64, 32)).astype(np.complex128)
    k = fft2c(torch.from_numpy(maps * img[None])).numpy()
    rng = np.random.default_rng(3)
    k = k + 1e-3 * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    mask = fastmri_random_mask(32, 3, 0.25, seed=1)
    reduced, _ = remove_readout_oversampling(k, 32)
    solutions = []
    for kk, mm in ((k, maps), (reduced, maps[:, 16:48])):
        op = SENSE(mm, mask)
        y = torch.from_numpy(kk * mask)[None]
        res = pnp_admm(op, y, TVPrior(0.02, iters=200, tol=1e-6), rho=0.5, iters=200, tol=1e-9)
        solutions.append(res.x[0, 0].numpy())
    full, half = solutions
    scale = np.linalg.norm(full[16:48])
    err = np.linalg.norm(half - full[16:48]) / scale
    inner_err = np.linalg.norm(half[6:-6] - full[22:42]) / scale
    print(f"reduced vs full solution rows: {err:.2e}, 6 rows in from the cuts: {inner_err:.2e}")
    assert err < 2e-2
    assert inner_err < 1e-3


def test_reduced_problem_measures_the_full_grids_noise(oversampled_volume):
    """With the readout reduced, `recon mri` still measures the k-space noise on the full grid
    (where the presets' rules were tuned): the same value as the full-grid problem's."""
    from data.fastmri import read_fastmri
    from recon.mri import mri_problem

    f = read_fastmri(oversampled_volume, slices=0)
    rng = np.random.default_rng(1)
    k = f.kspace[0] + 1e-5 * (
        rng.standard_normal(f.kspace[0].shape) + 1j * rng.standard_normal(f.kspace[0].shape)
    )
    full = mri_problem(k.astype(np.complex64), mask="random", accel=3.0, center_fraction=0.25)
    reduced = mri_problem(k.astype(np.complex64), recon_size=(32, 32), mask="random", accel=3.0,
                          center_fraction=0.25)  # fmt: skip
    assert reduced.info["readout_oversampling_removed"] == 2
    assert reduced.info["kspace_noise"] == pytest.approx(full.info["kspace_noise"], rel=1e-6)
    assert reduced.info["kspace_noise"] == pytest.approx(1e-5, rel=0.3)


def test_a_file_without_header_is_cropped_to_its_reference(tmp_path, oversampled_volume):
    """Without an ismrmrd_header the recon size was the k-space's: a reference smaller than
    that (readout oversampling) was refused. fastMRI's evaluation crops to the target's shape;
    so does `recon mri`, and the result is the one the header gives."""
    import shutil

    bare = tmp_path / "no_header.h5"
    shutil.copy(oversampled_volume, bare)
    with h5py.File(bare, "r+") as f:
        del f["ismrmrd_header"]
    outs = {}
    for name, path in (("header", oversampled_volume), ("bare", bare)):
        outs[name] = tmp_path / name
        args = ["mri", "--input", str(path), "--slice", "1", "--solver", "tv", *COMMON]
        assert main([*args, "--out", str(outs[name])]) == 0
    with h5py.File(outs["bare"] / "reconstruction.h5") as f:
        rec = f["reconstruction"][()]
    assert rec.shape == (1, 32, 32)
    assert np.array_equal(rec[0], np.load(outs["header"] / "recon.npy"))
