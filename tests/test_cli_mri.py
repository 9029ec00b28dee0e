"""`recon mri` end to end on small inputs: a fastMRI file, a simulated image, every mask type;
the output contract, fastMRI metrics, the submission file, and clear errors."""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pytest
import torch

from data.fastmri import make_synthetic_fastmri
from data.phantoms import shepp_logan
from priors.checkpoint import save_checkpoint
from priors.lpn import ConvLPN
from recon.cli import main
from recon.pipeline import EXIT_UNUSABLE

CONTRACT = (
    "recon.npy",
    "recon.png",
    "metrics.json",
    "history.json",
    "convergence.png",
    "comparison.png",
    "reconstruction.h5",
)


@pytest.fixture(scope="module")
def tiny_mri_prior(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prior") / "tiny-aelpn-mri.safetensors"
    save_checkpoint(
        path,
        ConvLPN("aelpn", in_channels=2, width=4, levels=2, depth=1).eval(),
        {"training_data": "none (test)"},
    )
    return str(path)


@pytest.fixture(scope="module")
def fastmri_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "file_brain_test.h5"
    return make_synthetic_fastmri(path, shepp_logan(48), n_coils=4, seed=0, recon_size=(40, 40))


@pytest.mark.parametrize("solver", ["pnp-admm", "tv", "zero-filled"])
def test_mri_fastmri_file(tmp_path, fastmri_file, tiny_mri_prior, solver):
    out = tmp_path / solver
    args = [
        "mri",
        "--quiet",
        "--input",
        str(fastmri_file),
        "--accel",
        "3",
        "--center-fraction",
        "0.25",
        "--solver",
        solver,
        "--prior",
        tiny_mri_prior,
        "--iters",
        "3",
        "--out",
        str(out),
    ]
    rc = main(args)  # the untrained prior's image may be flagged unusable; files are written
    for name in CONTRACT:
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert rc == (EXIT_UNUSABLE if "unusable" in m else 0)  # the status says what metrics say
    assert solver == "pnp-admm" or rc == 0
    for key in ("psnr", "ssim", "nmse", "data_range", "iterations", "converged", "stop_reason"):
        assert key in m
    assert m["coils"] == 4 and m["recon_size"] == [40, 40]
    with h5py.File(out / "reconstruction.h5") as f:
        assert f["reconstruction"].shape == (1, 40, 40)
    assert np.load(out / "recon.npy").shape == (40, 40)
    if solver == "tv":
        assert m["psnr"] > m["baseline"]["psnr"]


@pytest.mark.parametrize("mask", ["equispaced", "poisson", "radial"])
def test_mri_simulated_image_masks(tmp_path, mask, tiny_mri_prior):
    img = tmp_path / "img.npy"
    np.save(img, shepp_logan(40)[:, 4:36])  # 40×32: non-square, as most MR images are
    out = tmp_path / mask
    args = [
        "mri",
        "--quiet",
        "--input",
        str(img),
        "--coils",
        "3",
        "--mask",
        mask,
        "--center-fraction",
        "0.3",
        "--accel",
        "3",
        "--solver",
        "pnp-pgd",
        "--prior",
        tiny_mri_prior,
        "--iters",
        "2",
        "--out",
        str(out),
    ]
    rc = main(args)  # an untrained prior: the run may be flagged unusable
    m = json.loads((out / "metrics.json").read_text())
    assert rc == (EXIT_UNUSABLE if "unusable" in m else 0)
    assert m["mask"]["type"] == mask and m["iterations"] == 2


def test_too_small_calibration_region_is_a_clear_error(tmp_path, capsys):
    img = tmp_path / "img.npy"
    np.save(img, shepp_logan(32))
    args = [
        "mri",
        "--quiet",
        "--input",
        str(img),
        "--coils",
        "3",
        "--accel",
        "3",
        "--solver",
        "zero-filled",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--center-fraction", "0.1"]) == 2  # 3 columns, asked for
    assert "ESPIRiT needs at least 6" in capsys.readouterr().err
    # by default a small image gets the 6 columns (0.32/accel would give 3 of 32)
    assert main(args) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert round(32 * m["mask"]["center_fraction"]) == 7
    # every width and acceleration that leaves room for them: the default's centre serves ESPIRiT
    from data.masks import fastmri_equispaced_mask, fastmri_random_mask
    from recon.mri import calibration_width, column_center_fraction

    for w in range(8, 300):
        for accel in (2, 4, 8):
            if 7.25 * accel > w:
                continue  # no room for the 6 columns at this acceleration: --accel's own error
            cf = column_center_fraction(None, accel, w, calibrate=True)
            for fn in (fastmri_random_mask, fastmri_equispaced_mask):
                assert calibration_width(np.broadcast_to(fn(w, accel, cf)[None], (4, w))) >= 6


def test_mri_errors(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("x", data=np.zeros(2))
    assert main(["mri", "--quiet", "--input", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.h5: no 'kspace'" in capsys.readouterr().err
    assert main(["mri", "--quiet", "--input", "nope.h5", "--out", str(tmp_path / "o")]) == 2


def test_normalize_max_changes_nothing_for_the_aelpn(tmp_path, fastmri_file, tiny_mri_prior):
    """--normalize max solves on k-space scaled by 1/max|zero-filled| (~1e3 here) and scales
    back: an AE-LPN reconstruction is the same image (float32 round-off) either way."""
    images, scales = {}, {}
    for mode in ("none", "max"):
        out = tmp_path / mode
        argv = ["mri", "--quiet", "--input", str(fastmri_file), "--accel", "3"]
        argv += ["--center-fraction", "0.25"]
        argv += ["--solver", "pnp-admm", "--prior", tiny_mri_prior, "--iters", "5", "--tol", "0"]
        argv += ["--normalize", mode, "--threads", "1", "--out", str(out)]
        rc = main(argv)  # an untrained prior: the run may be flagged unusable
        images[mode] = np.load(out / "recon.npy")
        m = json.loads((out / "metrics.json").read_text())
        assert rc == (EXIT_UNUSABLE if "unusable" in m else 0)
        scales[mode] = m["parameters"]["normalize"]["kspace_scale"]
    assert scales["none"] == 1.0 and scales["max"] > 100.0  # fastMRI-like magnitudes were scaled
    rel = np.linalg.norm(images["max"] - images["none"]) / np.linalg.norm(images["none"])
    assert rel < 1e-4


def test_calibration_block_lies_inside_an_off_centre_sampled_run():
    """fastMRI masks at 8× sample ~7 centre columns, often one more on one side of the centre:
    the ESPIRiT block (centred as data.coils.espirit_maps takes it) must be fully sampled."""
    from recon.mri import calibration_width

    for lo, hi in ((84, 90), (85, 92), (85, 91), (82, 95)):
        mask = np.zeros((4, 176))
        mask[:, lo : hi + 1] = 1
        w = calibration_width(mask)
        start = 176 // 2 - w // 2
        assert mask[0, start : start + w].all(), (lo, hi, w)
        assert w >= hi - lo  # at most one column is given up


def test_default_solver_follows_the_prior(tmp_path, fastmri_file, tiny_mri_prior):
    """Without --solver, `recon mri` runs the default ridge-mri with PnP-FISTA (its validated
    solver) and any other prior with PnP-ADMM (a deep AE-LPN is not firmly nonexpansive, so
    PGD carries no guarantee with it); metrics.json says which ran."""
    runs = {"ridge": [], "other": ["--prior", tiny_mri_prior]}
    solvers = {}
    for name, extra in runs.items():
        out = tmp_path / name
        argv = ["mri", "--input", str(fastmri_file), "--out", str(out), "--quiet", "--accel", "3"]
        argv += ["--center-fraction", "0.25"]
        rc = main([*argv, "--iters", "3", *extra])  # the untrained prior may be flagged
        metrics = json.loads((out / "metrics.json").read_text())
        assert rc == (EXIT_UNUSABLE if "unusable" in metrics else 0)
        assert name == "other" or rc == 0  # ridge-mri, certified: usable
        solvers[name] = (metrics["solver"], metrics["parameters"].get("accelerated"))
    assert solvers["ridge"] == ("pnp-pgd", True)
    assert solvers["other"][0] == "pnp-admm"


def test_every_mask_starts_in_image_units_and_measures_its_noise():
    """The start image, the presets' rules (relative to its range) and the zero-filled baseline
    need the image's units. Radial: Aᴴy alone is several times too large (the spokes sample the
    centre many times over); the gridding image Aᴴ(w ⊙ y) with scaled Pipe–Menon weights is
    within 25 % of the reference's range. Every mask also measures the noise, Poisson (no
    corner samples) and radial (no grid) included, within 30 % of the noise added (radial: of
    σ/||A||, the image's noise where the spokes sample most, ``recon.mri.measured_noise``)."""
    from data.fastmri import simulate_multicoil
    from data.peer_mri import add_kspace_noise
    from recon.mri import mri_problem

    k, ref, _ = simulate_multicoil(shepp_logan(128), 4, seed=0)
    sigma = 0.005 * float(np.abs(k).max())
    k = add_kspace_noise(k, 0.005, 1)
    for mask in ("random", "equispaced", "poisson", "radial"):
        p = mri_problem(k, reference=ref, mask=mask, accel=4.0, center_fraction=0.1)
        scale = float(p.x0.abs().max()) / float(ref.max())
        assert 0.75 < scale < 1.25, (mask, scale)
        expected = sigma / np.sqrt(p.op.norm_sq()) if mask == "radial" else sigma
        assert p.info["kspace_noise"] == pytest.approx(expected, rel=0.3), mask
        if mask == "radial":
            assert p.op.norm_sq() > 4
            assert float(p.op.adjoint(p.y).abs().max()) > 3 * float(ref.max())


def test_an_mri_run_pulled_away_from_the_data_exits_unusable(tmp_path, capsys):
    """The LPN (not firmly nonexpansive) with PnP-PGD on the bundled slice: measured, its data
    misfit is 23.8× the zero-filled start's after 30 iterations (7.75 dB at 300), with no
    blow-up; `recon mri` writes the image, says why it is unusable and exits EXIT_UNUSABLE."""
    out = tmp_path / "o"
    argv = ["mri", "--quiet", "--input", "bundled:brain-t1", "--coils", "8", "--accel", "4"]
    argv += ["--solver", "pnp-pgd", "--prior", "lpn-mri", "--normalize", "max", "--iters", "30"]
    assert main([*argv, "--out", str(out)]) == EXIT_UNUSABLE
    m = json.loads((out / "metrics.json").read_text())
    assert "fits the data" in m["unusable"]
    assert (out / "reconstruction.h5").exists()
    assert "not usable" in capsys.readouterr().err


def test_single_coil_runs_are_not_flagged(tmp_path):
    """One coil: zero-filling reproduces the sampled data (its misfit ~1e-13 ||y||²), so the
    misfit test is floored at 1e-3 × the zero image's; a TV run that improves on zero-filled
    exits 0 (it used to be called 1e10× worse than its start and exit 3)."""
    img = tmp_path / "img.npy"
    np.save(img, shepp_logan(32))
    out = tmp_path / "o"
    argv = ["mri", "--quiet", "--input", str(img), "--coils", "1", "--center-fraction", "0.2"]
    assert main([*argv, "--solver", "tv", "--iters", "10", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "unusable" not in m and m["psnr"] > m["baseline"]["psnr"]


def test_a_multi_slice_file_without_a_reference_is_reconstructed_whole(tmp_path):
    """fastMRI's test and challenge files hold k-space only: every slice is reconstructed, the
    outputs are complete (the figure used to fail on the missing volume PSNR, leaving no
    metrics.json) and metrics.json has no PSNR."""
    import h5py

    path = make_synthetic_fastmri(
        tmp_path / "test.h5", np.stack([shepp_logan(48)] * 3), n_coils=4, recon_size=(40, 40)
    )
    with h5py.File(path, "a") as f:
        del f["reconstruction_rss"]
    out = tmp_path / "out"
    args = ["mri", "--input", str(path), "--slice", "0:2", "--solver", "tv", "--iters", "3"]
    assert main([*args, "--center-fraction", "0.2", "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "psnr" not in m and [r["slice"] for r in m["slices"]] == [0, 1]
    assert (out / "comparison.png").is_file()
    with h5py.File(out / "reconstruction.h5") as f:
        assert f["reconstruction"].shape == (2, 40, 40)


def test_a_checkpoint_from_ridge_mri_gets_its_default_solver(tmp_path):
    """A copy of ridge-mri, or a checkpoint fine-tuned from it (``meta["preset_from"]``), runs
    with ridge-mri's presets, so also with its default solver (PnP-FISTA); a checkpoint that
    names no shipped prior keeps PnP-ADMM."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from priors.checkpoint import shipped_priors
    from recon.mri import default_solver

    src = shipped_priors()["ridge-mri"]
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(src.read_bytes())
    with safe_open(str(src), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
        header = dict(f.metadata() or {})
    meta = json.loads(header.get("meta", "{}"))
    tuned, plain = tmp_path / "tuned.safetensors", tmp_path / "plain.safetensors"
    tensors = {k: v + 1e-3 for k, v in tensors.items()}  # not a byte copy
    save_file(
        tensors, str(tuned), {**header, "meta": json.dumps({**meta, "preset_from": "ridge-mri"})}
    )
    meta.pop("preset_from", None)
    meta.pop("init", None)
    save_file(tensors, str(plain), {**header, "meta": json.dumps(meta)})
    assert default_solver("ridge-mri") == "pnp-pgd"
    assert default_solver(str(copy)) == "pnp-pgd"
    assert default_solver(str(tuned)) == "pnp-pgd"
    assert default_solver(str(plain)) == "pnp-admm"
    assert default_solver("aelpn-mri") == "pnp-admm"


def test_an_npy_with_negative_values_is_warned_about_as_a_magnitude(tmp_path):
    """`recon mri --input image.npy` simulates coils on |image|: an HU CT slice (air −1000)
    became an MRI image whose air is its brightest part, without a word. Negative values get a
    warning naming the file and the minimum; a magnitude image gets none."""
    from recon.mri import load_magnitude_npy

    hu = tmp_path / "hu.npy"
    np.save(hu, (1000.0 * shepp_logan(32) - 1000.0).astype(np.float32))
    with pytest.warns(UserWarning, match=r"hu.npy: negative values \(min -1000\)"):
        img = load_magnitude_npy(hu)
    assert float(img.min()) >= 0
    mag = tmp_path / "mag.npy"
    np.save(mag, shepp_logan(32).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_magnitude_npy(mag)


def test_interpolation_overshoot_is_not_called_negative(tmp_path):
    """A magnitude image resampled with a cubic kernel dips a little below 0 at sharp edges:
    that is not an HU slice, so no warning (only values below −1 % of the peak are)."""
    from recon.mri import load_magnitude_npy

    img = shepp_logan(32).astype(np.float32)
    img[0, 0] = -0.005 * img.max()
    np.save(tmp_path / "resampled.npy", img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_magnitude_npy(tmp_path / "resampled.npy")
