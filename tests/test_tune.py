"""`recon tune`: the search finds known optima (analytic, and a brute-forced TV weight on a tiny CT
problem), writes a preset that `load_presets(config=...)` and `recon ct --config` read back, and
refuses to tune on scans that overlap the test set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from recon.cli import main
from recon.pipeline import load_presets
from recon.tune import tune_solver
from recon.tune.problems import Scan, build_case, ct_test_scans, run_method
from recon.tune.search import Param, coordinate_search, log_grid


def test_search_finds_the_optimum_of_a_known_function():
    target = {"a": 0.037, "b": 0.2}

    def score(v):
        return -sum(math.log(v[k] / target[k]) ** 2 for k in target)

    params = [Param("a", 1e-3, 1.0, 0.5, 7), Param("b", 1e-2, 10.0, 5.0, 7)]
    res = coordinate_search(score, params, refine=2, rounds=2)
    for p in params:
        coarse_step = math.log(p.hi / p.lo) / (p.points - 1)
        # two rounds of 2 points per side locate the optimum to within a ninth of a coarse step
        assert abs(math.log(res.best[p.name] / target[p.name])) <= coarse_step / 9 + 1e-12
    assert res.at_edge == []
    assert len({tuple(sorted(t.params.items())) for t in res.trials}) == len(res.trials)


def test_search_reports_an_optimum_at_the_edge_of_its_range():
    res = coordinate_search(lambda v: -v["a"], [Param("a", 0.1, 10.0, 1.0, 5)])
    assert res.best["a"] == pytest.approx(0.1) and res.at_edge == ["a"]


def test_tv_weight_matches_brute_force_on_a_tiny_ct_problem():
    from data.phantoms import random_ellipses

    scan = Scan("tiny", random_ellipses(32, seed=5))
    case = build_case("ct-par30", scan, seed=0)
    presets = load_presets("ct")
    presets["tv"] = {**presets["tv"], "weight_noise": None}  # weight_rel alone sets the weight
    iters = 15

    def psnr(w):
        p = {**presets, "tv": {**presets["tv"], "weight_rel": w}}
        return run_method(case, "pnp-admm", "tv", p, iters=iters)["psnr"]

    fine = log_grid(1e-3, 0.3, 13)  # the 5-point coarse grid and its refinements lie on it
    brute = [psnr(w) for w in fine]
    w_ref = fine[int(np.argmax(brute))]
    space = [Param("weight_rel", 1e-3, 0.3, 0.02, 5)]
    res = tune_solver([case], "tv", "", presets, iters, params=space, progress=False)
    fine_step = math.log(0.3 / 1e-3) / 12
    assert abs(math.log(res.best["weight_rel"] / w_ref)) <= fine_step + 1e-9
    assert res.score >= max(brute) - 0.05
    assert len(res.trials) < len(fine)  # cheaper than the brute force


def test_cli_writes_a_preset_that_recon_ct_reads(tmp_path):
    out, preset = tmp_path / "tune", tmp_path / "tuned.json"
    args = ["tune", "ct", "--solver", "tv", "--size", "32", "--n-val", "1", "--iters", "4"]
    args += ["--points", "3", "--refine", "1", "--problem", "ct-par30", "--quiet"]
    assert main([*args, "--out", str(out), "--preset", str(preset)]) == 0
    search = json.loads((out / "search.json").read_text())
    best = search["results"]["tv"]["best"]
    written = json.loads(preset.read_text())
    assert written["_command"].startswith("recon tune ct --solver tv")
    assert written["tv"]["iters"] == 4
    loaded = load_presets("ct", config=preset)
    strength = "weight_noise"  # the CT preset's TV weight follows the noise: its constant is tuned
    assert set(best) == {strength, "rho_rel"}
    assert loaded["tv"][strength] == pytest.approx(best[strength])
    assert loaded["tv"]["rho_rel"] == pytest.approx(best["rho_rel"])
    assert loaded["pnp-admm"] == load_presets("ct")["pnp-admm"]  # untuned sections: shipped
    assert (out / "search-tv.png").stat().st_size > 1000

    rec = tmp_path / "rec"
    ct = ["ct", "--input", "phantom:ellipses", "--size", "32", "--views", "20", "--solver", "tv"]
    assert main([*ct, "--config", str(preset), "--out", str(rec), "--quiet"]) == 0
    params = json.loads((rec / "metrics.json").read_text())["parameters"]
    assert params[strength] == pytest.approx(best[strength]) and params["iters"] == 4


def test_refuses_to_tune_on_test_scans(tmp_path, capsys):
    (tmp_path / "val").mkdir()
    leaked = ct_test_scans(32, n_phantoms=1, real=False)[0].image
    np.save(tmp_path / "val" / "a.npy", np.random.default_rng(0).random((32, 32)))
    np.save(tmp_path / "val" / "b.npy", leaked)
    args = ["tune", "ct", "--solver", "tv", "--size", "32", "--iters", "2", "--points", "2"]
    args += ["--inputs", str(tmp_path / "val" / "*.npy"), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "overlap the test set" in err and "b.npy = test ellipses-s1001" in err

    (tmp_path / "mine").mkdir()
    np.save(tmp_path / "mine" / "t.npy", np.load(tmp_path / "val" / "a.npy"))
    args[args.index("--inputs") + 1] = str(tmp_path / "val" / "a.npy")
    assert main([*args, "--test", str(tmp_path / "mine" / "*.npy")]) == 2
    assert "a.npy = test t.npy" in capsys.readouterr().err
    assert not (tmp_path / "o" / "preset.json").exists()


def test_a_preset_can_be_tuned_one_solver_at_a_time():
    from recon.tune import tuned_preset

    base = load_presets("ct")
    first = tuned_preset("ct", base, {"tv": {"best": {"weight_rel": 0.05}}}, "recon tune A", 20)
    second = tuned_preset(
        "ct", base, {"pnp-admm": {"best": {"rho_rel": 0.1}}}, "recon tune B", 30, previous=first
    )
    assert second["tv"]["weight_rel"] == 0.05 and second["tv"]["iters"] == 20
    assert second["pnp-admm"]["rho_rel"] == 0.1 and second["pnp-admm"]["iters"] == 30
    assert second["_command"] == "recon tune B" and second["_earlier_commands"] == ["recon tune A"]
    assert set(second["_tuned"]) == {"tv", "pnp-admm"}


def test_real_ct_validation_scans_are_real_slices_disjoint_from_the_test_set():
    pytest.importorskip("data_store", reason="the pydicom-data package is not installed")
    from recon.tune.problems import REAL_CT_VAL_WINDOWS, check_disjoint, ct_real_validation_scans

    scans = ct_real_validation_scans(64)
    assert len(scans) == len(REAL_CT_VAL_WINDOWS) == 4
    for s in scans:
        assert s.image.shape == (64, 64) and s.units == "HU" and s.pixel_size > 0.5
        assert float(s.image.min()) >= -1024.0
        body = s.image[s.image > -200]
        assert body.size > 500 and abs(float(np.median(body))) < 150  # soft tissue ≈ water
    # four different windows, none of them the bundled test slice (tuning refuses overlaps)
    assert len({s.digest() for s in scans}) == 4
    check_disjoint(scans, ct_test_scans(64))


def test_real_ct_validation_is_refused_for_mri(tmp_path, capsys):
    code = main(["tune", "mri", "--val", "real-ct", "--out", str(tmp_path / "t"), "--quiet"])
    assert code == 2 and "--val real-ct is for recon tune ct" in capsys.readouterr().err


def test_per_prior_presets_are_used_for_their_prior_only(tmp_path):
    from recon.pipeline import prior_key, solver_params
    from recon.tune import tuned_preset

    presets = {
        "pnp-admm": {"rho_rel": 0.01, "iters": 40},
        "priors": {"lpn-ct": {"pnp-admm": {"rho_rel": 0.03}}, "mine": {"pnp-admm": {"iters": 9}}},
    }
    assert solver_params(presets, "pnp-admm", {}, "aelpn-ct")["rho_rel"] == 0.01
    assert solver_params(presets, "pnp-admm", {}, "lpn-ct") == {"rho_rel": 0.03, "iters": 40}
    assert solver_params(presets, "pnp-admm", {"rho_rel": 0.5}, "lpn-ct")["rho_rel"] == 0.5
    assert prior_key("runs/mine.safetensors") == "mine"
    assert solver_params(presets, "pnp-admm", {}, "runs/mine.safetensors")["iters"] == 9
    # a preset tuned for lpn-ct files its values under lpn-ct too, so the shipped entry for
    # lpn-ct cannot shadow them when the tuned file is loaded over the shipped one
    res = {"pnp-admm": {"best": {"rho_rel": 0.2}, "prior": "lpn-ct"}}
    tuned = tuned_preset("ct", {"pnp-admm": {"rho_rel": 0.03, "iters": 40}}, res, "cmd", 30)
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(tuned))
    loaded = load_presets("ct", config=path)
    assert solver_params(loaded, "pnp-admm", {}, "lpn-ct")["rho_rel"] == 0.2
    # the shipped file's own per-prior entries stay for the other priors, and the values tuned
    # for lpn-ct reach no other prior (they were once written as top-level sections too, and a
    # preset tuned for aelpn-ct moved crr-ct's σ rule: 34.23 -> 33.46 dB on the bundled slice)
    shipped = load_presets("ct")
    for name in shipped.get("priors", {}):
        if name != "lpn-ct":
            assert loaded["priors"][name] == shipped["priors"][name]
    for other in ("crr-ct", "aelpn-ct", "runs/mine.safetensors"):
        assert solver_params(loaded, "pnp-admm", {}, other) == solver_params(
            shipped, "pnp-admm", {}, other
        )
    assert tuned["_modality"] == "ct" and "pnp-admm" not in tuned


def test_the_search_holds_the_shipped_value_and_tunes_the_noise_rules():
    """Every searched range holds its start (the shipped value) inside it; where the section
    follows the noise (rho_noise, weight_noise) the rule's constant is searched, since rho_rel
    is then only a floor that moves nothing (crr-ct: identical PSNR for rho_rel 0.001-0.03)."""
    from recon.pipeline import presets_for_prior
    from recon.tune import search_space

    for modality, prior in (("ct", "crr-ct"), ("ct", "aelpn-ct"), ("mri", "ridge-mri"),
                            ("mri", "aelpn-mri")):  # fmt: skip
        base = presets_for_prior(load_presets(modality), prior)
        for solver in ("pnp-admm", "pnp-pgd", "tv"):
            space = search_space(solver, base[solver])
            for p in space:
                assert p.lo < p.init < p.hi, (modality, prior, solver, p)
            names = {p.name for p in space}
            if base[solver].get("rho_noise") is not None:
                assert "rho_noise" in names and "rho_rel" not in names
            if base[solver].get("weight_noise") is not None:
                assert "weight_noise" in names


def test_a_preset_for_the_other_modality_is_refused(tmp_path):
    from recon.tune import tuned_preset

    tuned = tuned_preset("ct", load_presets("ct"), {"tv": {"best": {"weight_noise": 0.1}}}, "c", 5)
    path = tmp_path / "ct-tuned.json"
    path.write_text(json.dumps(tuned))
    with pytest.raises(ValueError, match="a preset for recon ct, not recon mri"):
        load_presets("mri", config=path)
    path.write_text(json.dumps({"pnp-admm": {"support_weight": 0.5}}))
    with pytest.raises(ValueError, match="support_weight: a recon mri setting"):
        load_presets("ct", config=path)
    for m, other in (("ct", "mri"), ("mri", "ct")):
        shipped = Path(__file__).resolve().parents[1] / "recon" / "presets" / f"{other}.json"
        with pytest.raises(ValueError, match=f"a preset for recon {other}"):
            load_presets(m, config=shipped)


def test_inputs_may_be_a_folder(tmp_path):
    from recon.tune.problems import scans_from_glob

    for k in range(2):
        np.save(tmp_path / f"s{k}.npy", np.random.default_rng(k).random((16, 16)))
    (tmp_path / "notes.txt").write_text("not a scan")
    assert [s.name for s in scans_from_glob("ct", str(tmp_path))] == ["s0.npy", "s1.npy"]
    # DICOM files without a suffix (IM0001), as scanners export them and `recon batch` finds
    import shutil

    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "IM0001")
    names = [s.name for s in scans_from_glob("ct", str(tmp_path))]
    assert names == ["IM0001", "s0.npy", "s1.npy"]
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "DICOMDIR")  # as exports hold one
    with pytest.warns(UserWarning, match=r"1 DICOM object\(s\) without an image skipped"):
        assert [s.name for s in scans_from_glob("ct", str(tmp_path))] == names
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="a folder with no"):
        scans_from_glob("ct", str(tmp_path / "empty"))


def test_a_user_preset_for_a_prior_keeps_the_shipped_entries_it_does_not_name(tmp_path):
    """`--config` merges the per-prior table per prior and per solver: a file that sets only
    rho_rel for aelpn-ct keeps the shipped prior_sigma_rel (without it a σ-input prior fails)."""
    from recon.pipeline import solver_params

    shipped = solver_params(load_presets("ct"), "pnp-admm", {}, "aelpn-ct")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"priors": {"aelpn-ct": {"pnp-admm": {"rho_rel": 0.2}}}}))
    mine = solver_params(load_presets("ct", config=path), "pnp-admm", {}, "aelpn-ct")
    assert mine == {**shipped, "rho_rel": 0.2}


def test_an_mri_case_is_the_problem_recon_mri_solves(tmp_path):
    """`recon tune mri --inputs` and `recon bench grid` score the image `recon mri` gives on the
    same file: the readout oversampling dropped and the rules fed the noise measured in k-space
    (they once solved the oversampled grid with a blind noise estimate, so a tuned preset did
    not carry over)."""
    from recon.tune.problems import scans_from_glob
    from tests.files_mri import noisy_oversampled_phantom

    path = noisy_oversampled_phantom(tmp_path / "file.h5", noise=0.01)
    (scan,) = scans_from_glob("mri", str(path))
    case = build_case("mri-random4", scan, seed=0)
    out = tmp_path / "out"
    args = ["mri", "--input", str(path), "--mask", "random", "--accel", "4", "--seed", "0"]
    for solver, prior in (("pnp-admm", "tv"), ("pnp-admm", "ridge-mri")):
        got = run_method(case, solver, prior, load_presets("mri"), iters=6)
        rc = main([*args, "--solver", solver, "--prior", prior, "--iters", "6", "--quiet",
                   "--out", str(out / prior)])  # fmt: skip
        m = json.loads((out / prior / "metrics.json").read_text())
        assert rc == 0 and m["readout_oversampling_removed"] == 2
        assert case.noise_level == pytest.approx(m["kspace_noise"], rel=1e-6)
        assert got["psnr"] == pytest.approx(m["psnr"], abs=1e-4), (solver, got["psnr"], m["psnr"])


def test_noise_rule_constants_below_the_floor_are_not_rerun(monkeypatch):
    """TV's weight is max(weight_rel, weight_noise × noise term): every weight_noise whose
    term falls under the floor is the same run. The search ran each of them; it now runs the
    largest such value once and scores the smaller ones with it, and that score is what a
    run at the smaller value gives."""
    import recon.tune as tune
    from data.phantoms import random_ellipses

    case = build_case("ct-par30", Scan("tiny", random_ellipses(32, seed=5)), seed=0)
    presets = load_presets("ct")
    presets["tv"] = {**presets["tv"], "weight_rel": 0.05}  # a high floor
    calls = []

    def counted(*a, **kw):
        calls.append(a[3]["tv"]["weight_noise"])
        return run_method(*a, **kw)

    monkeypatch.setattr(tune, "run_method", counted)
    space = [Param("weight_noise", 1e-4, 10.0, 1e-3, 6)]
    res = tune_solver([case], "tv", "", presets, 5, params=space, progress=False)
    floor = [t for t in res.trials if t.params["weight_noise"] <= 2e-3]
    assert len(floor) >= 3 and len({t.score for t in floor}) == 1
    assert len(calls) < len(res.trials)
    low = min(t.params["weight_noise"] for t in floor)
    assert low not in calls  # scored without a run, with the score a run gives
    p = {**presets, "tv": {**presets["tv"], "weight_noise": low}}
    assert run_method(case, "pnp-admm", "tv", p, iters=5)["psnr"] == floor[0].score


def test_prior_tv_with_a_pnp_solver_is_refused_for_solver_tv(tmp_path, capsys):
    """`--prior tv` is the one TV (the tv section) with any solver: a pnp section tuned for it
    was filed under priors.tv, which recon ct --prior tv never reads."""
    for solver in ("pnp-pgd", "pnp-admm"):
        args = ["tune", "ct", "--solver", solver, "--prior", "tv", "--size", "16", "--n-val", "1"]
        args += ["--iters", "1", "--points", "2", "--quiet", "--out", str(tmp_path / solver)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "--prior tv with --solver " + solver in err and "tune it with --solver tv" in err
        assert not (tmp_path / solver / "preset.json").exists()
    # without --solver, --prior tv tunes the one TV (it was refused naming a --solver not given)
    args = ["tune", "ct", "--prior", "tv", "--size", "16", "--n-val", "1", "--iters", "1"]
    assert main([*args, "--points", "2", "--quiet", "--out", str(tmp_path / "tv")]) == 0
    tuned = json.loads((tmp_path / "tv" / "preset.json").read_text())
    assert "tv" in tuned and "pnp-admm" not in tuned


def test_tuning_below_the_shipped_iterations_is_said(tmp_path, capsys):
    """A preset keeps --iters, which caps recon --config runs: a count below the shipped
    preset's is warned about (naming both), and the test report says both presets were
    scored at the tuned count."""
    shipped = load_presets("ct")["tv"]["iters"]
    args = ["tune", "ct", "--solver", "tv", "--size", "16", "--n-val", "1", "--iters", "2"]
    args += ["--points", "2", "--refine", "0", "--problem", "ct-par30", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a"), "--report-test"]) == 0
    err = capsys.readouterr().err
    assert f"--iters 2, below the shipped preset's {shipped} iterations" in err
    note = json.loads((tmp_path / "a" / "test_report.json").read_text())["_note"]
    assert "both at 2 iterations" in note and f"tv {shipped}" in note
    args[args.index("--iters") + 1] = str(shipped)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "below the shipped" not in capsys.readouterr().err


def test_a_range_for_a_parameter_not_searched_is_refused(tmp_path, capsys):
    """crr-ct's ADMM section follows the noise (rho_noise is searched, rho_rel is only its
    floor): --range rho_rel was accepted and moved nothing. A step_rel range reaching PGD's
    bound 2 is refused too."""
    args = ["tune", "ct", "--size", "16", "--n-val", "1", "--iters", "1", "--points", "2"]
    args += ["--quiet", "--out", str(tmp_path / "o")]
    assert main([*args, "--solver", "pnp-admm", "--range", "rho_rel=0.01:0.1"]) == 2
    err = capsys.readouterr().err
    assert "--range rho_rel: not searched with --prior crr-ct" in err
    assert "pnp-admm: rho_noise" in err
    assert main([*args, "--solver", "pnp-pgd", "--prior", "lpn-ct", "--range", "step_rel=0.1:3"])
    assert "PGD converges only for step_rel < 2" in capsys.readouterr().err
    assert not (tmp_path / "o" / "preset.json").exists()


def test_inputs_say_what_they_skip_and_warn_on_negative_magnitudes(tmp_path):
    """A mixed folder's .h5 was dropped by recon tune ct without a word; HU slices (negative)
    were taken by recon tune mri as magnitudes |HU|."""
    from recon.tune.problems import scans_from_glob

    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((16, 16)))
    (tmp_path / "k.h5").write_bytes(b"")  # (never opened: a CT folder search skips it)
    with pytest.warns(UserWarning, match=r"1 file\(s\) \(\.h5\) skipped: recon mri inputs"):
        assert [s.name for s in scans_from_glob("ct", str(tmp_path))] == ["a.npy"]
    hu = np.full((16, 16), -1000.0, np.float32)
    hu[4:12, 4:12] = 40.0
    np.save(tmp_path / "hu.npy", hu)
    with pytest.warns(UserWarning, match=r"hu.npy: negative values \(min -1000\)"):
        scans_from_glob("mri", str(tmp_path / "hu.npy"))


def test_report_test_gives_the_users_test_scans_their_own_mean(tmp_path, capsys):
    """--test scans were averaged with the built-in test set into one headline."""
    (tmp_path / "mine").mkdir()
    rng = np.random.default_rng(5)
    for k in range(2):
        np.save(tmp_path / "mine" / f"t{k}.npy", rng.random((16, 16)).astype(np.float32))
    args = ["tune", "ct", "--solver", "tv", "--size", "16", "--n-val", "1", "--iters", "2"]
    args += ["--points", "2", "--refine", "0", "--problem", "ct-par30", "--report-test"]
    args += ["--test", str(tmp_path / "mine" / "*.npy"), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "o" / "test_report.json").read_text())["tv"]
    for label in ("shipped", "tuned"):
        per_scan, per_set = report[label]["per_scan"], report[label]["per_set"]
        mine = [v for k, v in per_scan.items() if k.split("/")[1] in ("t0.npy", "t1.npy")]
        builtin = [v for k, v in per_scan.items() if k.split("/")[1] not in ("t0.npy", "t1.npy")]
        assert len(mine) == 2 and len(builtin) == 3
        assert per_set["yours"] == pytest.approx(np.mean(mine), abs=1e-3)
        assert per_set["built-in"] == pytest.approx(np.mean(builtin), abs=1e-3)
    gains = report["gain_db_per_set"]
    for n in ("yours", "built-in"):
        assert gains[n] == pytest.approx(
            report["tuned"]["per_set"][n] - report["shipped"]["per_set"][n]
        )
        assert f"{n} test scans: shipped {report['shipped']['per_set'][n]:.2f} dB" in out
