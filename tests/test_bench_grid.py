"""`recon bench grid`: the quick grid's files, resuming, and that the numbers mean something
(TV-ADMM beats FBP, regularized MRI beats zero-filled)."""

from __future__ import annotations

import json

import pytest

from recon.bench.grid import add_bench_parser, priors_for, run_grid, spec_from_args
from recon.cli import main

CT_ARGS = ["--quick", "--modality", "ct", "--size", "64", "--iters", "5", "--quiet"]


def _spec(args):
    import argparse

    p = argparse.ArgumentParser()
    add_bench_parser(p.add_subparsers())
    return spec_from_args(p.parse_args(["grid", *args]))


@pytest.fixture(scope="module")
def ct_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    assert main(["bench", "grid", *CT_ARGS, "--out", str(out)]) == 0
    return out


def test_quick_ct_grid_writes_table_json_plots(ct_grid):
    res = json.loads((ct_grid / "results.json").read_text())
    cells = res["cells"]
    # 1 phantom × 1 problem × (FBP + 3 solvers × every shipped CT prior and TV)
    priors = priors_for("ct")
    assert {"aelpn-ct", "lpn-ct", "ridge-ct", "crr-ct", "tv"} <= set(priors)
    assert len(cells) == 1 + 3 * len(priors)
    assert {c["solver"] for c in cells} == {"baseline", "pnp-pgd", "pnp-fista", "pnp-admm"}
    assert {c["prior"] for c in cells} == {"fbp", *priors}
    for c in cells:
        assert 0 < c["ssim"] <= 1 and c["psnr"] > 5
        if c["solver"] != "baseline":
            assert c["iterations"] == 5
            assert c["seconds_per_iter"] == pytest.approx(c["seconds"] / 5)
            assert c["peak_mib"] is not None and c["peak_mib"] >= 0
            if c["prior"] in ("crr-ct", "ridge-ct", "tv"):  # certified: never flagged
                assert c["unusable"] is None, c
    table = (ct_grid / "table.md").read_text()
    assert "| ct-par60 | pnp-admm + tv |" in table and "PSNR (dB)" in table
    for name in ("psnr_vs_time.png", "convergence.png"):
        assert (ct_grid / name).stat().st_size > 1000
    assert not list(ct_grid.rglob(".*.tmp"))


def test_tv_admm_beats_fbp_on_a_phantom(ct_grid):
    cells = json.loads((ct_grid / "results.json").read_text())["cells"]
    psnr = {(c["solver"], c["prior"]): c["psnr"] for c in cells}
    assert psnr[("pnp-admm", "tv")] > psnr[("baseline", "fbp")] + 3.0


def test_rerun_skips_finished_cells_and_reruns_missing_or_changed(ct_grid):
    spec = _spec([*CT_ARGS, "--out", str(ct_grid)])
    cell = ct_grid / "cells" / "ct-par60" / "ellipses-s1001" / "pnp-admm+tv.json"
    before = json.loads(cell.read_text())
    n = 1 + 3 * len(priors_for("ct"))
    again = run_grid(spec, ct_grid, progress=False)
    assert again["ran"] == 0 and again["skipped"] == n
    assert json.loads(cell.read_text()) == before  # untouched

    cell.unlink()
    again = run_grid(spec, ct_grid, progress=False)
    assert again["ran"] == 1 and again["skipped"] == n - 1
    rerun = json.loads(cell.read_text())
    assert rerun["psnr"] == pytest.approx(before["psnr"], abs=1e-4)  # seeded: same answer

    changed = _spec([*CT_ARGS[:-2], "3", "--quiet", "--solvers", "pnp-admm", "--priors", "tv"])
    again = run_grid(changed, ct_grid, progress=False)
    assert again["ran"] == 1 and again["skipped"] == 1  # FBP reused; new iteration cap reruns
    assert again["replaced"] == 1  # the cell of the other settings is counted (and said)
    assert json.loads(cell.read_text())["iterations"] == 3


def test_mri_tv_beats_zero_filled(tmp_path):
    args = ["--quick", "--modality", "mri", "--solvers", "pnp-admm", "--priors", "tv"]
    assert main(["bench", "grid", *args, "--iters", "8", "--quiet", "--out", str(tmp_path)]) == 0
    cells = json.loads((tmp_path / "results.json").read_text())["cells"]
    psnr = {c["prior"]: c["psnr"] for c in cells}
    assert set(psnr) == {"zero-filled", "tv"}
    assert psnr["tv"] > psnr["zero-filled"] + 1.0


@pytest.mark.parametrize(
    "bad", [["--ct-phantoms", "5"], ["--iters", "0"], ["--priors", "nope"], ["--mri-scans", "9"]]
)
def test_bad_arguments_exit_2(tmp_path, capsys, bad):
    assert main(["bench", "grid", "--modality", "ct", "--out", str(tmp_path), *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recon bench grid: error: ") and len(err.strip().splitlines()) == 1
    assert bad[0] in err


def test_a_changed_prior_file_reruns_its_cells(tmp_path):
    """A learned prior's weights enter the cell's settings hash: retrained or converted weights
    under the same name are not served from an old cell; TV's hash has no weights in it."""
    import torch

    from priors.checkpoint import save_checkpoint
    from priors.lpn import ConvLPN
    from recon.tune.problems import ct_test_scans

    spec = _spec(CT_ARGS)
    scan = ct_test_scans(size=32, n_phantoms=1, real=False)[0]
    path = tmp_path / "p.safetensors"
    torch.manual_seed(0)
    save_checkpoint(path, ConvLPN(width=4, levels=2, depth=1), {})
    first = spec.settings_hash("ct-par60", scan, "pnp-admm", str(path))
    assert spec.settings_hash("ct-par60", scan, "pnp-admm", str(path)) == first
    save_checkpoint(path, ConvLPN(width=4, levels=2, depth=1), {})  # other weights, same name
    assert spec.settings_hash("ct-par60", scan, "pnp-admm", str(path)) != first
    tv = spec.settings_hash("ct-par60", scan, "pnp-admm", "tv")
    assert spec.settings_hash("ct-par60", scan, "pnp-admm", "tv") == tv


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_every_shipped_prior_of_the_modality_is_in_the_grid(modality):
    """Each shipped `*-<modality>` prior (the convex-ridge ones included) can be named in
    `--priors`; the AE-LPN leads, TV closes, no other modality's prior leaks in."""
    from priors.checkpoint import shipped_priors

    names = priors_for(modality)
    shipped = {p for p in shipped_priors() if p.endswith(f"-{modality}")}
    assert set(names[:-1]) == shipped and names[-1] == "tv"
    assert names[0] == f"aelpn-{modality}" and f"crr-{modality}" in names
    spec = _spec(["--modality", modality, "--priors", f"crr-{modality}", "tv"])
    assert spec.priors[modality] == [f"crr-{modality}", "tv"]


def test_the_table_names_unusable_cells():
    """A scan whose run ended far from the data is counted in the table beside its method."""
    from recon.bench.grid import summarize, table_markdown

    base = {"problem": "mri-random4", "solver": "pnp-pgd", "prior": "lpn-mri", "ssim": 0.1,
            "iterations": 5, "converged": False, "seconds": 1.0, "seconds_per_iter": 0.2,
            "peak_mib": 0, "iters_to_plateau": 1}  # fmt: skip
    cells = [
        {**base, "scan": "a", "psnr": -21.6, "unusable": "the image fits the data 40x worse"},
        {**base, "scan": "b", "psnr": 20.0, "unusable": None},
    ]
    table = table_markdown(summarize(cells), 5, {"ct": [], "mri": ["a", "b"]})
    assert "| mri-random4 | pnp-pgd + lpn-mri (unusable 1/2) |" in table
    assert "(unusable" not in table_markdown(summarize(cells[1:]), 5, {"ct": [], "mri": ["b"]})


def test_your_own_checkpoint_joins_the_grid(tmp_path):
    """`--priors PATH.safetensors` benchmarks a checkpoint of your own beside the shipped priors,
    in the modality of its channels, named by its file stem, with the presets of the shipped
    prior it was fine-tuned from."""
    ckpt = tmp_path / "mine.safetensors"
    train = ["train", "--kind", "fne-ridge", "--init", "ridge-ct", "--data", "ellipses"]
    train += ["--steps", "2", "--batch", "2", "--patch", "32", "--threads", "1", "--quiet"]
    assert main([*train, "--out", str(ckpt)]) == 0
    out = tmp_path / "grid"
    args = ["bench", "grid", "--quick", "--modality", "ct", "--problems", "ct-par60"]
    args += ["--solvers", "pnp-admm", "--priors", "tv", str(ckpt), "--iters", "3", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "pnp-admm + mine" in table and "pnp-admm + tv" in table
    cell = json.loads(next(out.glob("cells/ct-par60/*/pnp-admm+mine.json")).read_text())
    assert cell["prior"] == str(ckpt) and cell["psnr"] > 15
    bad = tmp_path / "notes.safetensors"
    bad.write_text("not a checkpoint")
    assert main([*args, str(bad), "--out", str(tmp_path / "g2")]) == 2


@pytest.mark.parametrize(
    "option, value, words",
    [("--ct-phantoms", "-1", "must be ≥ 0"), ("--mri-scans", "4", "must be ≤ 3"),
     ("--iters", "0", "must be ≥ 1"), ("--size", "3", "must be ≥ 8")],
)  # fmt: skip
def test_grid_counts_are_checked_also_with_quick(tmp_path, capsys, option, value, words):
    """`--ct-phantoms -1 --quick` ran (quick replaced the count before it was checked)."""
    from recon.cli import main

    argv = ["bench", "grid", "--quick", option, value, "--out", str(tmp_path / "g")]
    assert main(argv) == 2
    assert f"argument {option}: {words}" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_priors_the_grid_would_drop_or_merge_are_refused(tmp_path, capsys):
    """An MRI prior asked for in a CT-only grid gave no row without a word, and two checkpoints
    with one file name were filed as one prior (one row, the other's cells)."""
    import shutil

    from priors.checkpoint import shipped_priors
    from recon.cli import main

    base = ["bench", "grid", "--quick", "--modality", "ct", "--out", str(tmp_path / "g")]
    assert main([*base, "--priors", "tv", "ridge-mri"]) == 2
    assert "--priors ridge-mri: for mri, but the problems left to run are ct" in (
        capsys.readouterr().err
    )
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(shipped_priors()["ridge-ct"], tmp_path / sub / "mine.safetensors")
    two = [str(tmp_path / sub / "mine.safetensors") for sub in ("a", "b")]
    assert main([*base, "--priors", *two]) == 2
    assert "both are named 'mine'" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_a_checkpoint_without_a_sigma_rule_is_refused_before_any_cell(tmp_path, capsys):
    """A from-scratch σ-input checkpoint has no σ rule: the grid stopped at its first cell,
    after the cells before it had run. It is refused up front with the preset entry to add."""
    from recon.cli import main

    ckpt = tmp_path / "scratch.safetensors"
    train = ["train", "--kind", "fne-ridge", "--data", "ellipses", "--steps", "1", "--batch", "1"]
    assert main([*train, "--patch", "32", "--threads", "1", "--quiet", "--out", str(ckpt)]) == 0
    out = tmp_path / "g"
    args = ["bench", "grid", "--quick", "--modality", "ct", "--solvers", "pnp-admm", "pnp-pgd"]
    args += ["--priors", "tv", str(ckpt), "--quiet", "--out", str(out)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--priors {ckpt}: prior" in err
    assert '{"priors": {"scratch": {"pnp-admm": {"prior_sigma_noise": 0.5}}}}' in err
    assert not out.exists()
