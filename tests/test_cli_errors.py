"""The CLI's top level: a bad --out is refused before any work (exit 2, one line naming it), an
unexpected failure is one line and exit 1 (the traceback with --debug)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import recon.ct
from recon.cli import main

CT = ["ct", "--input", "phantom:shepp-logan", "--size", "32", "--views", "10", "--quiet"]


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_bad_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch, where):
    f = tmp_path / "taken"
    f.write_text("x")
    out = f if where == "file" else f / "sub" / "dir"
    called = []
    monkeypatch.setattr(recon.ct, "reconstruct_input", lambda *a: called.append(a))
    assert main([*CT, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and str(out) in err
    assert not called  # refused before the reconstruction
    assert f.read_text() == "x"


def test_unexpected_failure_is_one_line_and_debug_shows_the_traceback(
    tmp_path, capsys, monkeypatch
):
    def boom(*_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(recon.ct, "reconstruct_input", boom)
    assert main([*CT, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "RuntimeError: disk on fire" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["--debug", *CT, "--out", str(tmp_path / "o")])


@pytest.mark.parametrize(
    "args, option",
    [
        (["ct", "--input", "phantom:shepp-logan", "--noise", "inf"], "--noise"),
        (["ct", "--input", "phantom:shepp-logan", "--noise", "-0.1"], "--noise"),
        (["ct", "--input", "phantom:shepp-logan", "--photons", "nan"], "--photons"),
        (["ct", "--input", "phantom:shepp-logan", "--photons", "0"], "--photons"),
        (["ct", "--input", "phantom:shepp-logan", "--size", "100000"], "--size"),
        (["ct", "--input", "phantom:shepp-logan", "--views", "0"], "--views"),
        (["ct", "--input", "phantom:shepp-logan", "--arc", "nan"], "--arc"),
        (["mri", "--input", "bundled:brain-t1", "--accel", "0.5"], "--accel"),
        (["mri", "--input", "bundled:brain-t1", "--accel", "inf"], "--accel"),
        (["mri", "--input", "bundled:brain-t1", "--center-fraction", "1.5"], "--center-fraction"),
        (["mri", "--input", "bundled:brain-t1", "--coils", "0"], "--coils"),
        (["mri", "--input", "bundled:brain-t1", "--coils", "1", "--accel", "1000"], "--accel"),
        (["ct", "--input", "bundled:ct-small", "--iters", "0"], "--iters"),
        (["ct", "--input", "bundled:ct-small", "--tol", "-1"], "--tol"),
        (["ct", "--input", "bundled:ct-small", "--threads", "0"], "--threads"),
        (["ct", "--input", "bundled:ct-small", "--size", "64"], "--size"),
        (["mri", "--input", "bundled:brain-t1", "--prior-sigma-rel", "nan"], "--prior-sigma-rel"),
    ],
)
def test_bad_numbers_are_refused_naming_the_option(tmp_path, capsys, args, option):
    """NaN, infinities and out-of-range numbers on the command line: exit 2, the option named,
    nothing written (they used to run to an all-NaN or all-zero image and exit 0)."""
    out = tmp_path / "o"
    solver = "zero-filled" if args[0] == "mri" else "fbp"
    assert main([*args, "--solver", solver, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0]
    assert not out.exists()


def test_npy_images_complex_for_ct_refused_for_mri_its_magnitude(tmp_path, capsys):
    """A complex .npy is refused by recon ct (its imaginary part used to be dropped with only a
    NumPy warning) and read as its magnitude by recon mri; a non-numeric one by both."""
    from data.npy import load_npy_image
    from recon.mri import load_magnitude_npy

    z = (np.arange(64.0).reshape(8, 8) * (1 + 1j)).astype(np.complex64)
    np.save(tmp_path / "z.npy", z)
    out = tmp_path / "o"
    assert main(["ct", "--input", str(tmp_path / "z.npy"), "--out", str(out), "--quiet"]) == 2
    assert "z.npy: complex values" in capsys.readouterr().err and not out.exists()
    with pytest.warns(UserWarning, match="z.npy: a complex image; its magnitude is simulated"):
        np.testing.assert_array_equal(load_magnitude_npy(tmp_path / "z.npy"), np.abs(z))
    np.save(tmp_path / "b.npy", np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="b.npy: expected a 2-D numeric image"):
        load_npy_image(tmp_path / "b.npy", complex_ok=True)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"pnp-admm": {"rho_rell": 0.01}},
         "pnp-admm: unknown setting 'rho_rell' (did you mean 'rho_rel'?)"),
        ({"pnp-admm": 3}, "pnp-admm must be an object of settings, got 3"),
        ({"pnp_admm": {"iters": 3}}, "unknown section 'pnp_admm' (did you mean 'pnp-admm'?)"),
        ({"priors": {"ridge-ct": {"admm": {"rho_rel": 0.1}}}},
         "priors.ridge-ct: unknown solver section 'admm'"),
        ({"priors": {"ridge-ct": {"pnp-admm": {"sigma": 0.1}}}},
         "priors.ridge-ct.pnp-admm: unknown setting 'sigma'"),
        ({"priors": {"crr-ct": {"pnp-admm": {"rho_noise": True}}}},
         "priors.crr-ct.pnp-admm: rho_noise must be a number, got true"),
        ({"pnp-admm": {"rho_noise": "0.01"}}, 'pnp-admm: rho_noise must be a number, got "0.01"'),
        ({"tv": {"iters": False}}, "tv: iters must be a number, got false"),
    ],
)  # fmt: skip
def test_config_with_unknown_or_misshapen_settings_is_refused(tmp_path, capsys, config, message):
    """A misspelled key used to be ignored (and copied into metrics.json) without a word."""
    import json

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "out"
    assert main([*CT, "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["ct", "--input", "bundled:ct-small", "--prior", "aelpn-mri"], "made for complex MRI"),
        (["mri", "--input", "bundled:brain-t1", "--prior", "ridge-ct"], "complex MRI images"),
        (
            ["mri", "--input", "bundled:brain-t1", "--prior", "ridge-ct"]
            + ["--prior-sigma-noise", "1"],
            "ridge-mri",
        ),
    ],
)
def test_a_prior_for_the_other_modality_is_refused_in_one_line(tmp_path, capsys, argv, words):
    """A 2-channel MRI prior on a CT image (or a CT prior on complex MRI data) is refused before
    any solve, naming the prior and what it was made for; no output folder is left."""
    out = tmp_path / "o"
    assert main([*argv, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert argv[argv.index("--prior") + 1] in err and words in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_inputs_that_cannot_be_read_or_scored_are_named_in_one_line(tmp_path, capsys):
    """A text file named .npy (numpy would suggest allow_pickle), a non-DICOM .dcm (pydicom would
    suggest force=True), a folder given to recon mri, a constant image (nothing to score against)
    and --coils for measured k-space (it would be ignored): exit 2, one line naming the input."""
    from data.fastmri import make_synthetic_fastmri
    from data.phantoms import shepp_logan

    text = tmp_path / "c.npy"
    text.write_text("hello\n")
    junk = tmp_path / "j.dcm"
    junk.write_bytes(b"junk")
    flat = tmp_path / "z.npy"
    np.save(flat, np.zeros((32, 32), np.float32))
    folder = tmp_path / "emptydir"
    folder.mkdir()
    h5 = make_synthetic_fastmri(tmp_path / "k.h5", shepp_logan(32), n_coils=2, seed=0)
    cases = [
        (["ct", "--input", str(text)], ["c.npy", "no .npy header"], ["allow_pickle"]),
        (["ct", "--input", str(junk)], ["j.dcm", "not a readable DICOM"], ["force=True"]),
        (["mri", "--input", str(folder)], ["emptydir", "a folder"], []),
        (["ct", "--input", str(flat)], ["z.npy", "constant"], ["data_range"]),
        (["mri", "--input", str(flat)], ["z.npy", "constant"], []),
        (["mri", "--input", str(h5), "--coils", "4"], ["--coils 4", "k.h5"], []),
    ]
    for argv, present, absent in cases:
        out = tmp_path / "o"
        assert main([*argv, "--quiet", "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert all(w in err for w in present) and not any(w in err for w in absent), err
        assert not out.exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["bench", "grid", "--quick", "--out", "FILE"], "is a file"),
        (["bench", "denoise", "--model", "ridge-ct", "--out", "FILE/sub"], "lies under a file"),
        (["tune", "ct", "--out", "FILE"], "is a file"),
        (["tune", "ct", "--out", "OK", "--preset", "FOLDER"], "a folder; give a .json"),
        (["tune", "ct", "--out", "OK", "--preset", "FILE/p.json"], "--preset"),
        (["batch", "ct", "--inputs", "FOLDER", "--out", "FOLDER"], "the input folder itself"),
        (["ct", "--input", "FOLDER", "--out", "FOLDER"], "the input folder itself"),
    ],
)
def test_results_folders_and_preset_paths_are_checked_first(tmp_path, capsys, argv, words):
    """An unwritable results folder (a file, under a file) for bench and tune, a --preset that is
    a folder or lies under a file, and an --out that is the input folder are one line, exit 2,
    before any work (tune's --preset used to fail after the whole search; batch with --out its
    input folder said no scans were found; recon ct wrote into the DICOM series it read)."""
    f = tmp_path / "file.txt"
    f.write_text("x")
    folder = tmp_path / "scans"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((16, 16), np.float32))
    names = {"FILE": str(f), "FOLDER": str(folder), "OK": str(tmp_path / "ok")}
    argv = [names.get(a, a.replace("FILE", str(f))) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["a.npy"] and f.read_text() == "x"
    assert not (tmp_path / "ok").exists()


def test_a_rerun_of_another_kind_leaves_no_stale_outputs(tmp_path):
    """A single-image run into a folder that holds a volume run's recon.nii.gz, dicom/ and an
    MRI run's reconstruction.h5 removes them (they no longer matched recon.npy); a dicom/
    folder holding anything but a run's IM_NNNN.dcm files is left alone."""
    out = tmp_path / "o"
    (out / "dicom").mkdir(parents=True)
    (out / "dicom" / "IM_0001.dcm").write_bytes(b"old")
    (out / "recon.nii.gz").write_bytes(b"old")
    (out / "reconstruction.h5").write_bytes(b"old")
    (out / "metrics.json").write_text("{}")  # an earlier run's folder
    assert main([*CT, "--solver", "fbp", "--out", str(out)]) == 0
    left = sorted(p.name for p in out.iterdir())
    assert "recon.npy" in left and "metrics.json" in left
    assert not {"dicom", "recon.nii.gz", "reconstruction.h5"} & set(left)
    # a folder no run finished in (no metrics.json) keeps everything, run-like names too
    mine = tmp_path / "mine"
    (mine / "dicom").mkdir(parents=True)
    (mine / "dicom" / "IM_0001.dcm").write_bytes(b"keep")
    (mine / "recon.nii.gz").write_bytes(b"keep")
    assert main([*CT, "--solver", "fbp", "--out", str(mine)]) == 0
    assert (mine / "dicom" / "IM_0001.dcm").read_bytes() == b"keep"
    assert (mine / "recon.nii.gz").read_bytes() == b"keep"


def test_an_out_whose_dicom_folder_holds_the_input_is_refused(tmp_path, capsys):
    """`recon ct --input X/dicom/IM_0001.dcm --out X` would have OUT/dicom (the input series)
    replaced or removed: refused before any work, every file kept."""
    from pydicom.data import get_testdata_file

    series = tmp_path / "X" / "dicom"
    series.mkdir(parents=True)
    for k in (1, 2):
        (series / f"IM_000{k}.dcm").write_bytes(
            Path(get_testdata_file("CT_small.dcm")).read_bytes()
        )
    (tmp_path / "X" / "metrics.json").write_text("{}")
    for given in (series / "IM_0001.dcm", series):
        argv = ["ct", "--input", str(given), "--solver", "fbp", "--out", str(tmp_path / "X")]
        assert main(argv) == 2
        assert "its dicom/ folder holds the input" in capsys.readouterr().err
    assert sorted(p.name for p in series.iterdir()) == ["IM_0001.dcm", "IM_0002.dcm"]


def test_the_projects_warnings_print_as_one_line_others_as_python_does():
    """`recon` prints its own warnings (uneven slice spacing, a complex image's phase) as
    `recon NAME: warning: MESSAGE`, not Python's two lines with a source line."""
    import data.dicom
    from recon.cli import _one_line_warnings

    fmt = _one_line_warnings("ct")
    ours = fmt("slices left out", UserWarning, data.dicom.__file__, 211)
    assert ours == "recon ct: warning: slices left out\n"
    theirs = fmt("deprecated", DeprecationWarning, np.__file__, 1)
    assert "DeprecationWarning: deprecated" in theirs


def test_config_warns_about_a_prior_name_close_to_a_shipped_one(tmp_path, recwarn):
    """A typo'd name under "priors" (read only for a checkpoint of that file stem) was ignored
    without a word; a user's own checkpoint stems stay silent."""
    import json

    from recon.pipeline import load_presets

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"priors": {"crr-cT": {"pnp-admm": {"rho_noise": 0.01}}}}))
    with pytest.warns(UserWarning, match=r"priors.crr-cT is not a shipped prior \(did you mean "
                                         r"'crr-ct'\?\)"):  # fmt: skip
        load_presets("ct", config=path)
    recwarn.clear()
    for name in ("crr-ct", "my-finetune", "crr-ct2", "crr-ct-hi", "ridge-mri-v2"):
        path.write_text(json.dumps({"priors": {name: {"pnp-admm": {"rho_noise": 0.01}}}}))
        load_presets("ct", config=path)
    assert not [w for w in recwarn if "shipped prior" in str(w.message)]


@pytest.mark.parametrize("value", [True, "0.01"])
def test_run_parameters_refuse_booleans_and_strings(value):
    """Parameters reaching a run by other paths than --config (recon.api, the benches): a
    boolean was taken as 1, a numeric string accepted."""
    from recon.pipeline import _check_numbers

    with pytest.raises(ValueError, match="'rho_noise' must be a number"):
        _check_numbers({"rho_noise": value})
    _check_numbers({"rho_noise": None, "iters": np.int64(3), "rho_rel": np.float32(0.1)})


def test_run_parameters_check_sigma_rules_and_flags_and_take_0d_numbers():
    """The σ rule's keys are numbers (``true`` and ``"0.02"`` passed), ``accelerated`` a flag
    (``"false"`` turned FISTA on), and a script's 0-d array or tensor is a number."""
    import torch

    from recon.pipeline import _check_numbers

    for key in ("prior_sigma_noise", "prior_sigma_rel", "prior_sigma_noise_fan"):
        for bad in (True, "0.02"):
            with pytest.raises(ValueError, match=f"'{key}' must be a number"):
                _check_numbers({key: bad})
        _check_numbers({key: None})
    with pytest.raises(ValueError, match="'accelerated' must be true or false"):
        _check_numbers({"accelerated": "false"})
    _check_numbers({"accelerated": False, "iters": np.array(50), "rho_rel": torch.tensor(0.1)})
    with pytest.raises(ValueError, match="'iters' must be a number"):
        _check_numbers({"iters": torch.tensor(True)})
