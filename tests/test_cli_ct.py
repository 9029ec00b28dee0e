"""`recon ct` end to end on small inputs: the files of the output contract, the metrics, the
exit codes and one-line errors for bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from recon.cli import main
from recon.pipeline import EXIT_UNUSABLE

CONTRACT = (
    "recon.npy",
    "recon.png",
    "metrics.json",
    "history.json",
    "convergence.png",
    "comparison.png",
)


def _run(args):
    return main(["ct", "--quiet", *args])


@pytest.mark.parametrize("solver", ["pnp-admm", "tv", "fbp"])
def test_ct_on_bundled_real_slice(tmp_path, solver):
    out = tmp_path / solver
    args = [
        "--input",
        "bundled:ct-small",
        "--views",
        "30",
        "--noise",
        "0.01",
        "--solver",
        solver,
        "--iters",
        "3",
        "--out",
        str(out),
    ]
    assert _run(args) == 0
    for name in CONTRACT:
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))  # nothing half-written left behind
    m = json.loads((out / "metrics.json").read_text())
    rec = np.load(out / "recon.npy")
    assert rec.dtype == np.float32 and rec.shape == (128, 128)
    assert m["units"] == "HU" and -1500 < float(rec.mean()) < 1500  # back in HU
    for key in (
        "psnr",
        "ssim",
        "data_range",
        "iterations",
        "seconds",
        "converged",
        "stop_reason",
        "solver",
        "parameters",
        "versions",
    ):
        assert key in m, key
    assert m["psnr"] > 15
    if solver != "fbp":
        assert m["iterations"] == 3
        assert len(json.loads((out / "history.json").read_text())["psnr"]) == 3
        assert m["psnr"] > m["baseline"]["psnr"]  # better than FBP after 3 iterations


def test_certified_prior_pgd_converges_and_agrees_with_admm(tmp_path):
    """PnP-PGD with the firmly nonexpansive ridge-ct (where the AE-LPN ran away): its objective
    never increases, it beats FBP, and it lands near PnP-ADMM's image (the preset tells PGD
    the σ of ADMM's problem, at the ρ the noise rule gives ADMM)."""
    runs = {}
    plain = tmp_path / "plain-pgd.json"  # plain PGD (the preset accelerates it)
    plain.write_text(json.dumps({"pnp-pgd": {"accelerated": False}}))
    for solver in ("pnp-pgd", "pnp-admm"):
        out = tmp_path / solver
        args = ["--input", "phantom:shepp-logan", "--size", "48", "--views", "30"]
        args += ["--noise", "0.01", "--solver", solver, "--prior", "ridge-ct", "--out", str(out)]
        assert _run([*args, "--iters", "300", "--config", str(plain)]) == 0
        runs[solver] = json.loads((out / "metrics.json").read_text())
        hist = json.loads((out / "history.json").read_text())
        if solver == "pnp-pgd":
            obj = [v for v in hist["objective"] if v is not None]
            assert len(obj) > 10 and obj[-1] < obj[0]
            # never increasing, up to round-off: R comes from ⟨v, x⟩ − ½||x||² − ψ(v), sums of
            # 48² products of intensities ≤ 1 in float32, so about 2^-23 · 48² each
            tol = 2 * 2.0**-23 * 48**2
            assert all(b <= a + tol for a, b in zip(obj, obj[1:], strict=False))
    pgd, admm = runs["pnp-pgd"], runs["pnp-admm"]
    rho_rel = pgd["parameters"]["rho_rel_used"]  # ADMM's ρ, from the noise rule
    assert rho_rel == pytest.approx(admm["parameters"]["rho_rel_used"], rel=1e-6)
    step_rel = pgd["parameters"]["step_rel"]  # plain PGD: the preset's plain_step_rel
    assert 1.0 < step_rel < 2.0
    assert pgd["parameters"]["pgd_sigma_factor"] == pytest.approx(step_rel * rho_rel)
    assert pgd["psnr"] > pgd["baseline"]["psnr"] + 3
    assert abs(pgd["psnr"] - admm["psnr"]) <= 1.0


def test_exact_prox_prior_pgd_decreases_its_objective_at_every_step(tmp_path):
    """Plain PnP-PGD with crr-ct (the exact prox of a convex R, scaled by γρ at ADMM's σ; the
    preset's step 1.9/L, inside PGD's range γ < 2/L): the objective γD + R it reports falls at
    every iteration, to the round-off of its float32 sums (about log2(n)·2⁻²⁴ of its size),
    and the image beats FBP."""
    plain = tmp_path / "plain-pgd.json"
    plain.write_text(json.dumps({"pnp-pgd": {"accelerated": False}}))
    out = tmp_path / "pgd"
    args = ["--input", "phantom:shepp-logan", "--size", "40", "--views", "24", "--noise", "0.01"]
    args += ["--solver", "pnp-pgd", "--prior", "crr-ct", "--iters", "120", "--out", str(out)]
    assert _run([*args, "--config", str(plain)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    rho_rel = m["parameters"]["rho_rel_used"]  # the preset's ρ rule (the sinogram's noise)
    assert rho_rel > 0.005 and m["parameters"]["unit_noise_gain"] > 0
    assert m["parameters"]["prior_strength_factor"] == pytest.approx(1.9 * rho_rel)
    assert m["psnr"] > m["baseline"]["psnr"] + 3
    obj = [v for v in json.loads((out / "history.json").read_text())["objective"] if v is not None]
    assert len(obj) == 120
    tol = 2 * math.log2(40 * 40) * 2.0**-24 * abs(obj[0])
    assert all(b < a + tol for a, b in zip(obj, obj[1:], strict=False))


def test_ct_phantom_fan_pgd_with_checkpoint_path(tmp_path):
    from priors.checkpoint import shipped_priors

    path = shipped_priors()["aelpn-ct"]
    out = tmp_path / "fan"
    args = [
        "--input",
        "phantom:shepp-logan",
        "--size",
        "64",
        "--geometry",
        "fan",
        "--views",
        "40",
        "--photons",
        "1e5",
        "--solver",
        "pnp-pgd",
        "--prior",
        str(path),
        "--iters",
        "3",
        "--window=-0.2,1.4",  # a value starting with '-' needs the = form
        "--out",
        str(out),
    ]
    assert _run(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["geometry"]["geometry"] == "fan" and m["noise"]["type"] == "poisson"
    # the PNGs' window is recorded: level −0.2, width 1.4 -> [−0.9, 0.5] in the image's units
    assert m["display"]["window"] == "-0.2,1.4" and m["display"]["units"] == "a.u."
    assert m["display"]["range"] == pytest.approx([-0.9, 0.5])


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--input", "missing.npy"], "no such file"),
        (["--input", "phantom:cube"], "unknown phantom"),
        (
            ["--input", "phantom:shepp-logan", "--size", "32", "--prior", "no-such-prior"],
            "unknown prior",
        ),
        (["--input", "phantom:shepp-logan", "--size", "32", "--views", "0"], "views"),
        (["--input", "PICTURE"], "picture file holds no CT units"),
    ],
)
def test_bad_input_exit_2_with_message(tmp_path, capsys, args, msg):
    if "PICTURE" in args:
        picture = tmp_path / "slice.png"
        picture.write_bytes(b"\x89PNG\r\n\x1a\n")
        args = [str(picture) if a == "PICTURE" else a for a in args]
    assert _run([*args, "--iters", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]


def test_npy_input_wrong_shape(tmp_path, capsys):
    bad = tmp_path / "vol.npy"
    np.save(bad, np.zeros((2, 3, 4), np.float32))
    assert _run(["--input", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "vol.npy" in capsys.readouterr().err


def test_npy_in_hu_is_read_as_hu_and_units_option(tmp_path, capsys):
    """A slice saved in HU as .npy is simulated as HU (auto: values below −100), so a photon
    scan of it is the scan of the DICOM slice: same PSNR to round-off. `--units a.u.` on it is
    refused for photons (negative attenuation), and `--units` for a DICOM input is refused."""
    from data.bundled import load_bundled

    hu = tmp_path / "slice.npy"
    np.save(hu, load_bundled("ct-small").hu.astype(np.float32))
    common = ["--views", "30", "--photons", "1e5", "--solver", "fbp", "--quiet"]
    assert _run(["--input", str(hu), *common, "--out", str(tmp_path / "n")]) == 0
    assert "read as HU" in capsys.readouterr().err
    assert _run(["--input", "bundled:ct-small", *common, "--out", str(tmp_path / "d")]) == 0
    m_npy = json.loads((tmp_path / "n" / "metrics.json").read_text())
    m_dcm = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert m_npy["units"] == "HU"
    # pixel size: 1 mm for .npy, the file's for DICOM; photon statistics differ slightly
    assert abs(m_npy["psnr"] - m_dcm["psnr"]) < 1.0  # 0.11 dB; read as a.u. it was 11 dB lower
    bad = ["--input", str(hu), "--units", "a.u.", *common, "--out", str(tmp_path / "a")]
    assert _run(bad) == 2
    assert "attenuation" in capsys.readouterr().err
    bad = ["--input", "bundled:ct-small", "--units", "HU", "--out", str(tmp_path / "b")]
    assert _run(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--units HU" in err[0]


def test_api_refuses_an_image_that_cannot_be_in_its_units():
    from recon.api import ct_problem

    image = np.zeros((32, 32), np.float32)
    image[8:24, 8:24] = 0.5  # attenuation-like values given as HU
    with pytest.raises(ValueError, match="units='a.u.'"):
        ct_problem(image, units="HU", views=8)
    assert ct_problem(image, units="a.u.", views=8, photons=1e4).units == "a.u."
    with pytest.raises(ValueError, match="units='HU'"):
        ct_problem(image * 2000 - 1000, units="a.u.", views=8, photons=1e4)


@pytest.mark.parametrize(("scale", "units"), [(255.0, "a.u."), (2000.0, "HU")])
def test_api_and_cli_read_an_image_in_the_same_units(tmp_path, capsys, scale, units):
    """``ct_problem``'s default units are `recon ct --units`'s auto rule (HU when a value lies
    below −100, else a.u.): the same .npy image gives the same units and PSNR both ways."""
    from recon.api import ct_problem, solve

    image = np.zeros((32, 32), np.float32)
    image[8:24, 6:26] = scale
    image = image - 1000.0 if units == "HU" else image  # air −1000 HU, tissue near 1000 HU
    np.save(tmp_path / "x.npy", image)
    opts = ["--views", "8", "--solver", "tv", "--iters", "3"]
    assert _run(["--input", str(tmp_path / "x.npy"), *opts, "--out", str(tmp_path / "o")]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    capsys.readouterr()
    problem = ct_problem(image, views=8)
    result = solve(problem, solver="tv", iters=3)
    assert m["units"] == problem.units == units
    assert result.psnr == pytest.approx(m["psnr"], abs=1e-3)
    assert capsys.readouterr().err == ""  # the API says nothing on stderr


def test_a_runaway_run_with_a_sigma_input_prior_says_what_to_change(tmp_path, capsys):
    """σ far below the shipped aelpn-ct's stable range: the run ends 'diverged' and stderr names
    the options. (Measured on this slice, σ = 0.01 × the range: ||x|| passes the 10³ growth
    test at iteration 37; with the earlier 10⁴ it reached −67 dB after 40 iterations unflagged.)"""
    out = tmp_path / "o"
    args = ["--input", "bundled:ct-small", "--views", "60", "--noise", "0.01", "--solver"]
    args += ["pnp-admm", "--prior", "aelpn-ct", "--prior-sigma-rel", "0.01"]
    args += ["--prior-sigma-noise", "0.1", "--out", str(out)]
    assert _run(args) == EXIT_UNUSABLE
    m = json.loads((out / "metrics.json").read_text())
    assert m["stop_reason"].startswith("diverged") and not m["converged"]
    assert m["unusable"].startswith("the solver diverged")
    p = m["parameters"]
    assert p["prior_sigma_rel"] == 0.01 and p["prior_sigma_noise"] == 0.1
    assert p["prior_sigma"] >= 0.1 * p["noise_estimate"] > 0  # (the rule: test_robustness)
    assert "--prior-sigma-rel" in capsys.readouterr().err


def test_a_slow_runaway_is_written_into_metrics_and_stderr(tmp_path, capsys):
    """The LPN with PnP-PGD on the bundled slice runs away slowly (measured: PSNR 29.2 dB at its
    best, 2.4 dB after 30 iterations, no blow-up for the divergence test, but a data misfit 524×
    the FBP image's): the image is kept, metrics.json and stderr say so, and the exit status is
    EXIT_UNUSABLE; a converged run says nothing and exits 0."""
    out = tmp_path / "o"
    args = ["--input", "bundled:ct-small", "--views", "60", "--noise", "0.01", "--solver"]
    args += ["pnp-pgd", "--prior", "lpn-ct", "--iters", "30", "--out", str(out), "--quiet"]
    assert _run(args) == EXIT_UNUSABLE
    m = json.loads((out / "metrics.json").read_text())
    assert m["stop_reason"] == "max iterations" and not m["converged"]
    assert "slow runaway" in m["warning"]
    assert "fits the data" in m["unusable"]
    err = capsys.readouterr().err
    assert "slow runaway" in err and "not usable" in err
    assert (out / "recon.npy").exists()
    ok = tmp_path / "ok"
    args = ["--input", "bundled:ct-small", "--views", "60", "--noise", "0.01", "--solver"]
    args += ["tv", "--iters", "30", "--out", str(ok), "--quiet"]
    assert _run(args) == 0
    m = json.loads((ok / "metrics.json").read_text())
    assert "warning" not in m and "unusable" not in m
    assert m["start_data_fidelity"] > 0 and 0.5 < m["norm_ratio"] < 2
    assert "warning" not in capsys.readouterr().err


def test_a_bounded_oscillation_far_from_the_data_is_flagged(tmp_path, capsys):
    """The LPN (not firmly nonexpansive) with PnP-PGD on a limited-angle phantom ends in a
    checkerboard of ±5 on a 0–1 image without ever passing the divergence test's growth bound
    (measured: PSNR −8.5 dB at 100 iterations); by iteration 10 its data misfit is far above the
    FBP start's, so the run is flagged unusable and exits with EXIT_UNUSABLE."""
    out = tmp_path / "o"
    args = ["--input", "phantom:shepp-logan", "--size", "128", "--arc", "120", "--views", "60"]
    args += ["--solver", "pnp-pgd", "--prior", "lpn-ct", "--iters", "10", "--quiet"]
    assert _run([*args, "--out", str(out)]) == EXIT_UNUSABLE
    m = json.loads((out / "metrics.json").read_text())
    assert not m["stop_reason"].startswith("diverged")
    assert "fits the data" in m["unusable"]
    err = capsys.readouterr().err
    assert "--solver pnp-admm" in err and "a certified prior" in err


@pytest.mark.parametrize(
    "section, msg",
    [
        ({"pnp-admm": {"rho_rel": float("nan")}}, "'rho_rel' must be finite"),
        ({"pnp-admm": {"rho_rel": -1}}, "'rho_rel' must be > 0"),
        ({"pnp-admm": {"iters": 2.7}}, "'iters' must be a whole number"),
        ({"pnp-admm": {"tol": "abc"}}, 'pnp-admm: tol must be a number, got "abc"'),
    ],
)
def test_bad_numbers_in_a_config_are_refused_before_work(tmp_path, capsys, section, msg):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(section))  # (json writes NaN as the literal NaN, which it reads)
    out = tmp_path / "out"
    args = ["--input", "phantom:shepp-logan", "--size", "32", "--views", "10"]
    assert _run([*args, "--prior", "lpn-ct", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not (out / "metrics.json").exists()


def test_projection_matrix_switch_gives_the_same_tv_image(tmp_path):
    """`--projection-matrix on|off` picks the projection path (recorded in metrics.json) and
    both reconstruct the same image: Gaussian noise is drawn independently of the sinogram, so
    only float32 round-off separates the runs (measured 5e-7 dB on FBP, 5e-5 dB on TV after 10
    iterations; the bounds leave 200× for other CPUs' summation order)."""
    runs = {}
    for mode in ("on", "off"):
        out = tmp_path / mode
        args = ["--input", "phantom:shepp-logan", "--size", "48", "--views", "30", "--noise",
                "0.01", "--solver", "tv", "--iters", "10", "--projection-matrix", mode,
                "--out", str(out)]  # fmt: skip
        assert _run(args) == 0
        runs[mode] = json.loads((out / "metrics.json").read_text())
        assert runs[mode]["geometry"]["projection_matrix"] is (mode == "on")
    assert abs(runs["on"]["baseline"]["psnr"] - runs["off"]["baseline"]["psnr"]) < 1e-4
    assert abs(runs["on"]["psnr"] - runs["off"]["psnr"]) < 0.01


def test_a_fine_tune_runs_with_the_preset_of_its_shipped_parent(tmp_path):
    """`recon train --init ridge-ct` writes a checkpoint that `recon ct --prior PATH` runs with
    ridge-ct's σ rule and ρ, without σ options (it used to ask for --prior-sigma-noise)."""
    from recon.pipeline import load_presets, preset_from, presets_for_prior

    ckpt = tmp_path / "mine.safetensors"
    train = ["train", "--kind", "fne-ridge", "--init", "ridge-ct", "--data", "ellipses"]
    train += ["--steps", "2", "--batch", "2", "--patch", "32", "--threads", "1"]
    assert main([*train, "--out", str(ckpt)]) == 0
    assert preset_from(ckpt) == "ridge-ct"
    shipped = presets_for_prior(load_presets("ct"), "ridge-ct")["pnp-admm"]
    assert presets_for_prior(load_presets("ct"), ckpt)["pnp-admm"] == shipped
    out = tmp_path / "o"
    args = ["--input", "phantom:shepp-logan", "--size", "48", "--views", "20", "--quiet"]
    assert _run([*args, "--prior", str(ckpt), "--iters", "3", "--out", str(out)]) == 0
    p = json.loads((out / "metrics.json").read_text())["parameters"]
    assert p["prior_sigma_noise"] == shipped["prior_sigma_noise"]


def test_a_checkpoint_named_like_a_shipped_prior_does_not_take_its_preset(tmp_path):
    """Presets come from what a checkpoint recorded (preset_from), never from its file name: a
    from-scratch checkpoint saved as `ridge-ct.safetensors` runs with the base sections, and a
    user's --config still files overrides under the file stem."""
    import shutil

    from priors.checkpoint import shipped_priors
    from recon.pipeline import load_presets, presets_for_prior

    scratch = tmp_path / "scratch.safetensors"
    train = ["train", "--kind", "fne-ridge", "--data", "ellipses", "--steps", "1", "--batch", "1"]
    assert main([*train, "--patch", "32", "--threads", "1", "--out", str(scratch)]) == 0
    named = tmp_path / "ridge-ct.safetensors"
    shutil.copy(scratch, named)
    base = presets_for_prior(load_presets("ct"), None)["pnp-admm"]
    assert presets_for_prior(load_presets("ct"), named)["pnp-admm"] == base
    assert presets_for_prior(load_presets("ct"), "ridge-ct")["pnp-admm"] != base
    copy = tmp_path / "copy.safetensors"  # the shipped file itself, under any name
    shutil.copy(shipped_priors()["ridge-ct"], copy)
    shipped = presets_for_prior(load_presets("ct"), "ridge-ct")["pnp-admm"]
    assert presets_for_prior(load_presets("ct"), copy)["pnp-admm"] == shipped
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"priors": {"ridge-ct": {"pnp-admm": {"rho_rel": 0.02}}}}))
    mine = presets_for_prior(load_presets("ct", cfg), named)["pnp-admm"]
    assert mine == {**base, "rho_rel": 0.02}


@pytest.mark.parametrize(
    "argv, words",
    [(["--solver", "tv", "--prior", "aelpn-ct"], "--prior aelpn-ct: not used by --solver tv"),
     (["--solver", "tv", "--prior-sigma-rel", "0.1"], "--prior-sigma-rel: not used by --solver tv"),
     (["--solver", "fbp", "--iters", "3", "--strength", "2"],
      "--iters, --strength: not used by --solver fbp"),
     (["--solver", "fbp", "--prior", "tv"], "--prior tv: not used by --solver fbp"),
     (["--solver", "tv", "--prior", "tv", "--iters", "2"], None),
     (["--solver", "pnp-admm", "--prior", "ridge-ct", "--iters", "2"], None)],
)  # fmt: skip
def test_options_the_solver_does_not_read_are_named(tmp_path, recwarn, argv, words):
    """`--solver tv --prior aelpn-ct` ran TV and recorded prior null without a word; options a
    solver does not read now get a one-line warning (and options it reads none)."""
    args = ["--input", "phantom:shepp-logan", "--size", "32", "--views", "10", "--quiet"]
    assert _run([*args, *argv, "--out", str(tmp_path / "o")]) == 0
    said = " ".join(str(w.message) for w in recwarn)
    if words is None:
        assert "not used by" not in said
    else:
        assert words in said


def test_mri_names_a_prior_the_zero_filled_image_does_not_use(tmp_path):
    argv = ["mri", "--input", "bundled:brain-t1", "--solver", "zero-filled", "--prior", "crr-mri"]
    with pytest.warns(UserWarning, match="--prior crr-mri: not used by --solver zero-filled"):
        assert main([*argv, "--quiet", "--out", str(tmp_path / "o")]) == 0


def test_the_sigma_rule_advice_names_the_section_the_solver_reads(tmp_path, capsys):
    """A from-scratch σ-input checkpoint has no σ rule; the advice gave a "pnp-admm" entry,
    which PGD/FISTA never read. It names the section of the solver that ran, and works."""
    ckpt = tmp_path / "scratch.safetensors"
    train = ["train", "--kind", "fne-ridge", "--data", "ellipses", "--steps", "1", "--batch", "1"]
    assert main([*train, "--patch", "32", "--threads", "1", "--out", str(ckpt)]) == 0
    args = ["--input", "phantom:shepp-logan", "--size", "32", "--views", "10", "--iters", "2"]
    args += ["--solver", "pnp-pgd", "--prior", str(ckpt), "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert _run(args) == 2
    err = capsys.readouterr().err
    assert '{"priors": {"scratch": {"pnp-pgd": {"prior_sigma_noise": 0.5}}}}' in err
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"priors": {"scratch": {"pnp-pgd": {"prior_sigma_noise": 0.5}}}}))
    assert _run([*args, "--config", str(cfg)]) == 0


def test_recon_png_shows_negative_hu_dark(tmp_path):
    """recon.png was drawn from |HU|, so air and lung (−1000 HU) came out white in every CT run
    (comparison.png was right). Its grey levels follow the window on the signed image."""
    from PIL import Image

    out = tmp_path / "o"
    args = ["--input", "bundled:ct-small", "--solver", "fbp", "--views", "30", "--window", "lung"]
    assert _run([*args, "--out", str(out)]) == 0
    rec = np.load(out / "recon.npy")
    png = np.asarray(Image.open(out / "recon.png"))
    lo, hi = json.loads((out / "metrics.json").read_text())["display"]["range"]
    want = np.clip((rec.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255
    assert np.abs(png - want).max() <= 1.0
    assert (rec < -900).any() and png[rec < -900].max() < 100  # |HU| made them 255
