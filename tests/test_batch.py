"""`recon batch` on a 2-worker local Dask cluster (processes, one thread each).

* A failing scan is recorded with its error and does not stop the others; the rerun after the
  fix reconstructs only that scan and leaves the finished ones untouched (same bytes, same
  mtimes); each scan equals what `recon ct` writes for it; each worker loaded the prior once.
* A run killed mid-way (SIGKILL of the `recon batch` process) leaves finished scans complete;
  the rerun reconstructs exactly the unfinished ones.
* MRI: one unit per slice of a fastMRI file, outputs laid out as OUT/<file>/slice_KKK/; with
  --per volume one unit per file, written as `recon mri --input FILE` writes it.

The cluster is started once for the module and passed by ``--scheduler`` (which also tests that
path); `recon batch` without it starts an identical LocalCluster itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.batch.plan import find_inputs, group_tasks, plan_units
from recon.pipeline import EXIT_UNUSABLE

pytestmark = pytest.mark.slow  # Dask clusters: `pytest -m "not slow"` skips them

ROOT = Path(__file__).resolve().parents[1]
CT_OPTS = ["--views", "30", "--noise", "0.01", "--solver", "pnp-pgd", "--iters", "3"]


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from priors.checkpoint import save_checkpoint
    from priors.lpn import ConvLPN

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prior") / "tiny.safetensors"
    save_checkpoint(path, ConvLPN(kind="aelpn", width=4, levels=1, depth=1).eval())
    return path


def _scans(folder: Path, n: int) -> list[Path]:
    from data.phantoms import random_ellipses

    paths = []
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(sub / f"scan{i}.npy")
        np.save(paths[-1], random_ellipses(64, seed=i).astype(np.float32))
    return paths


def _batch(args: list[str]) -> int:
    # the `recon batch` subcommand's parser and run, as recon.cli wires them
    import argparse

    import recon.batch

    parser = argparse.ArgumentParser(prog="recon")
    recon.batch.add_parser(parser.add_subparsers(dest="command", required=True))
    return recon.batch.run(parser.parse_args(["batch", *args]))


def _files(units) -> dict[str, tuple[int, bytes]]:
    """(mtime, bytes) of every output file of the given units."""
    return {
        str(p): (p.stat().st_mtime_ns, p.read_bytes())
        for u in units
        for p in sorted(Path(u.out).iterdir())
        if p.is_file()
    }


def _wait_idle(address: str, timeout: float = 120) -> None:
    """Until no task is left: a killed client's tasks are released by the scheduler, but one
    already running on a worker thread runs to its end (and writes its files)."""
    from distributed import Client

    def busy(c) -> bool:
        running = c.run(lambda dask_worker: len(dask_worker.state.executing))
        return bool(c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))) or any(
            running.values()
        )

    with Client(address) as c:
        deadline = time.monotonic() + timeout
        while busy(c):
            assert time.monotonic() < deadline, "the cluster never became idle"
            time.sleep(0.1)


def test_failure_recorded_rerun_completes_only_missing(tmp_path, cluster, tiny_prior):
    torch.set_num_threads(1)
    inp, out = tmp_path / "in", tmp_path / "out"
    scans = _scans(inp, 4)
    bad = scans[2]
    np.save(bad, np.full((64, 64), np.nan, np.float32))  # a corrupt scan
    args = ["ct", "--inputs", str(inp), "--out", str(out), "--scheduler", cluster, "--quiet"]
    args += [*CT_OPTS, "--prior", str(tiny_prior)]

    assert _batch(args) == 1  # one scan failed, the others finished
    failures = json.loads((out / "failures.json").read_text())
    assert [f["name"] for f in failures] == ["b/scan2.npy"]
    assert "NaN" in failures[0]["error"] and str(bad) in failures[0]["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1, "total": 4}
    done = [r for r in summary["scans"] if r["status"] == "done"]
    assert all(np.isfinite(r["metrics"]["psnr"]) for r in done)
    assert summary["mean"]["psnr"] == pytest.approx(np.mean([r["metrics"]["psnr"] for r in done]))
    # the prior was loaded once per worker process, not once per scan
    per_worker: dict[str, int] = {}
    for r in done:
        per_worker[r["worker"]] = per_worker.get(r["worker"], 0) + 1
    loads = {f"{w['host']}:{w['pid']}": w["prior_loads"] for w in summary["workers"]}
    assert max(per_worker.values()) >= 2
    assert all(loads[w] == 1 for w in per_worker)
    assert not (out / "b" / "scan2" / "metrics.json").exists()
    assert "b/scan2.npy" in (out / "summary.md").read_text()

    units, _ = plan_units(find_inputs([str(inp)], "ct"), "ct", out)
    finished = [u for u in units if u.name != "b/scan2.npy"]
    before = _files(finished)
    np.save(bad, np.load(scans[0]))  # fix the scan, rerun the same command
    rc = _batch(args)
    summary = json.loads((out / "summary.json").read_text())
    assert rc == (EXIT_UNUSABLE if summary["unusable"] else 0)  # the untrained prior may be flagged
    assert summary["counts"] == {"done": 1, "skipped": 3, "failed": 0, "total": 4}
    assert [r["name"] for r in summary["scans"] if r["status"] == "done"] == ["b/scan2.npy"]
    assert _files(finished) == before  # finished scans untouched: same bytes, same mtimes
    assert json.loads((out / "failures.json").read_text()) == []

    # each scan is what `recon ct` writes for it (same pipeline, same options)
    from recon.cli import main

    single = tmp_path / "single"
    opts = [*CT_OPTS, "--prior", str(tiny_prior), "--quiet"]
    rc = main(["ct", "--input", str(scans[1]), "--out", str(single), *opts])
    flagged = "unusable" in json.loads((single / "metrics.json").read_text())
    assert rc == (EXIT_UNUSABLE if flagged else 0)  # the untrained prior may be flagged
    np.testing.assert_array_equal(
        np.load(single / "recon.npy"), np.load(out / "a" / "scan1" / "recon.npy")
    )

    # other options into the same --out are refused with a one-line reason
    changed = [a if a != "3" else "4" for a in args]  # --iters 3 -> 4
    with pytest.raises(ValueError, match="other options .*iters: 3 -> 4"):
        _batch(changed)


def test_killed_run_resumes_only_unfinished(tmp_path, cluster):
    inp, out = tmp_path / "in", tmp_path / "out"
    _scans(inp, 6)
    args = ["ct", "--inputs", str(inp), "--out", str(out), "--scheduler", cluster, "--quiet"]
    args += ["--views", "30", "--solver", "tv", "--iters", "4", "--tol", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recon.cli", "batch", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.rglob("metrics.json")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no scan finished in 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _wait_idle(cluster)
    units, _ = plan_units(find_inputs([str(inp)], "ct"), "ct", out.resolve())
    finished = {u.name for u in units if u.finished()}
    missing = {u.name for u in units} - finished
    assert missing, "the run finished before it was killed: nothing to resume"
    before = _files([u for u in units if u.name in finished])

    assert _batch(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {r["name"] for r in summary["scans"] if r["status"] == "done"} == missing
    assert {r["name"] for r in summary["scans"] if r["status"] == "skipped"} == finished
    assert _files([u for u in units if u.name in finished]) == before
    assert all(u.finished() for u in units)
    assert not list(out.rglob(".*.tmp"))  # no temporary file left behind


def test_mri_units_per_slice_and_per_volume(tmp_path, cluster):
    from data.fastmri import make_synthetic_fastmri
    from data.phantoms import shepp_logan

    vol = np.stack([shepp_logan(32), np.flipud(shepp_logan(32))])
    make_synthetic_fastmri(tmp_path / "in" / "p1" / "vol.h5", vol, n_coils=1)
    np.save(tmp_path / "in" / "img.npy", shepp_logan(32).astype(np.float32))
    files = find_inputs([str(tmp_path / "in")], "mri")
    units, failures = plan_units(files, "mri", tmp_path / "out")
    assert failures == []
    assert [u.name for u in units] == ["img.npy", "p1/vol.h5[0]", "p1/vol.h5[1]"]
    assert units[2].out == str(tmp_path / "out" / "p1" / "vol" / "slice_001")
    assert [len(t) for t in group_tasks(units, "volume")] == [1, 2]
    assert [len(t) for t in group_tasks(units, "slice")] == [1, 1, 1]

    whole, _ = plan_units(files, "mri", tmp_path / "out", per="volume")
    assert [(u.name, u.slice, u.whole) for u in whole] == [
        ("img.npy", None, False),
        ("p1/vol.h5", None, True),
    ]
    assert whole[1].out == str(tmp_path / "out" / "p1" / "vol")

    import h5py

    from recon.cli import main

    def read_reconstruction(path):
        with h5py.File(path, "r") as f:
            return f["reconstruction"][()]

    out = tmp_path / "out"
    args = ["mri", "--inputs", str(tmp_path / "in" / "p1"), "--out", str(out), "--quiet"]
    args += ["--scheduler", cluster, "--per", "volume", "--solver", "zero-filled"]
    assert _batch(args) == 0
    # the whole file, as `recon mri --input FILE` writes it: both slices in one
    # reconstruction.h5, fastMRI's volume metrics, one row per slice
    alone = tmp_path / "alone"
    argv = ["mri", "--input", str(tmp_path / "in" / "p1" / "vol.h5"), "--solver", "zero-filled"]
    assert main([*argv, "--quiet", "--out", str(alone)]) == 0
    got = read_reconstruction(out / "vol" / "reconstruction.h5")
    assert got.shape[0] == 2
    np.testing.assert_array_equal(got, read_reconstruction(alone / "reconstruction.h5"))
    m = json.loads((out / "vol" / "metrics.json").read_text())
    assert [row["slice"] for row in m["slices"]] == [0, 1]
    assert m["psnr"] == json.loads((alone / "metrics.json").read_text())["psnr"]
    assert not (out / "vol" / "slice_000").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["scans"]] == ["vol.h5"]
    # --slice K with --per volume: that slice of each file, still written whole-file style
    out1 = tmp_path / "out1"
    args1 = ["mri", "--inputs", str(tmp_path / "in" / "p1"), "--out", str(out1), "--quiet"]
    args1 += ["--scheduler", cluster, "--per", "volume", "--solver", "zero-filled", "--slice", "1"]
    assert _batch(args1) == 0
    assert read_reconstruction(out1 / "vol" / "reconstruction.h5").shape[0] == 1
    m1 = json.loads((out1 / "vol" / "metrics.json").read_text())
    assert [row["slice"] for row in m1["slices"]] == [1]


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="--inputs .*nothing-here: no such file or folder"):
        _batch(["ct", "--inputs", str(tmp_path / "nothing-here"), "--out", str(tmp_path)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no DICOM, NRRD, NIfTI or .npy files found"):
        _batch(["ct", "--inputs", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="--out DIR is required"):
        _batch(["ct", "--inputs", str(tmp_path)])
    with pytest.raises(ValueError, match="--workers 0"):
        _batch(["ct", "--inputs", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "0"])


def test_batch_mri_slice_must_be_one_index(tmp_path, capsys):
    """`recon batch mri --slice` shares `recon mri`'s option but takes one index (or all): a
    range or a word is refused before any work, naming the option."""
    from data.fastmri import make_synthetic_fastmri
    from data.phantoms import shepp_logan
    from recon.cli import main

    f = make_synthetic_fastmri(tmp_path / "v.h5", np.stack([shepp_logan(32)] * 2), n_coils=2)
    out = tmp_path / "out"
    assert main(["batch", "mri", "--inputs", str(f), "--slice", "0:2", "--out", str(out)]) == 2
    assert "--slice '0:2'" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("metrics.json"))


def test_batch_mri_slice_help_says_what_batch_takes(capsys):
    """The batch subcommand reuses `recon mri`'s --slice, whose help offers A:B ranges that a
    batch refuses: its own help says K or all, and `recon mri`'s keeps the ranges."""
    from recon.cli import main

    def slice_help(argv):
        assert main([*argv, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        return text[text.rindex("--slice SLICE") :].split(" --", 1)[0]  # its help, not usage

    batch = slice_help(["batch", "mri"])
    assert "K, or all" in batch and "A:B (A" not in batch, batch
    assert "A:B (A..B−1)" in slice_help(["mri"])


def test_batch_ct_help_does_not_offer_slice(capsys):
    """`recon batch ct --help` listed `--slice SLICE, --slices SLICE  the slice of each fastMRI
    file` (the MRI help written over the hidden ct option), an option a CT batch refuses."""
    from recon.cli import main

    assert main(["batch", "ct", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--slice SLICE" not in text and "--slices" not in text, text
    assert "fastMRI" not in text, text


def test_interrupted_redo_with_new_options_redoes_the_old_scans(tmp_path, cluster):
    """An interrupted `--redo` with new options leaves batch.json with the new options and some
    scans still holding results of the old ones; a rerun without --redo must redo exactly those
    (each scan records the digest of its options), not accept them as finished (issue #25, 1)."""
    import shutil

    inp, out = tmp_path / "in", tmp_path / "out"
    _scans(inp, 2)
    base = ["ct", "--inputs", str(inp), "--out", str(out), "--scheduler", cluster, "--quiet"]
    base += ["--solver", "fbp"]
    assert _batch([*base, "--views", "20"]) == 0
    units, _ = plan_units(find_inputs([str(inp)], "ct"), "ct", out.resolve())
    old = Path(units[0].out)
    shutil.copytree(old, tmp_path / "old-scan")
    assert _batch([*base, "--views", "30", "--redo"]) == 0
    # the state an interruption after the first scan leaves: scan 0 still from --views 20
    shutil.rmtree(old)
    shutil.copytree(tmp_path / "old-scan", old)
    assert json.loads((old / "metrics.json").read_text())["geometry"]["views"] == 20
    assert _batch([*base, "--views", "30"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    status = {r["name"]: r["status"] for r in summary["scans"]}
    assert status == {units[0].name: "done", units[1].name: "skipped"}
    # --threads changes the speed, not the images: a rerun with it finds every scan finished
    assert _batch([*base, "--views", "30", "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {r["status"] for r in summary["scans"]} == {"skipped"}
    for u in units:
        assert json.loads((Path(u.out) / "metrics.json").read_text())["geometry"]["views"] == 30


def test_ct_per_volume_reconstructs_each_dicom_series_whole(tmp_path, cluster):
    """--per volume: each folder of DICOM files is one series unit, reconstructed by the same
    code as `recon ct --input FOLDER` (bit-identical volume, NIfTI and DICOM series outputs),
    a folder of one DICOM file too; a .npy image stays a per-file unit; a rerun skips the
    finished series."""
    from recon.cli import main
    from tests.test_ct_series import COMMON, _series

    _series(tmp_path / "in" / "p1" / "s1", n=4)
    _series(tmp_path / "in" / "p2", n=2)
    _series(tmp_path / "in" / "p3", n=1)
    np.save(tmp_path / "in" / "img.npy", np.zeros((40, 40), np.float32))
    files = find_inputs([str(tmp_path / "in")], "ct")
    out = tmp_path / "out"
    units, failures = plan_units(files, "ct", out, per="volume")
    assert failures == []
    assert [u.name for u in units] == ["img.npy", "p1/s1/", "p2/", "p3/"]
    assert units[1].input == str(tmp_path / "in" / "p1" / "s1")
    assert units[1].out == str(out / "p1" / "s1")
    slices, _ = plan_units(files, "ct", out)  # --per slice: one unit per file
    assert len(slices) == 8
    # a DICOM file named as an input stays that file (not its folder); so does a volume file
    one = sorted((tmp_path / "in" / "p1" / "s1").glob("*.dcm"))[0]
    (tmp_path / "in" / "v.nrrd").write_bytes(b"NRRD0004")
    named = [one, tmp_path / "in" / "v.nrrd"]
    units1, _ = plan_units(named, "ct", out, per="volume", named=set(named))
    assert [u.input for u in units1] == [str(p) for p in named]

    opts = [a for a in COMMON if a != "--quiet"]
    args = ["ct", "--inputs", str(tmp_path / "in" / "p1"), str(tmp_path / "in" / "p2")]
    args += ["--out", str(out), "--quiet", "--scheduler", cluster, "--per", "volume", *opts]
    assert _batch(args) == 0
    alone = tmp_path / "alone"
    assert main(["ct", "--input", str(tmp_path / "in" / "p2"), *COMMON, "--out", str(alone)]) == 0
    np.testing.assert_array_equal(np.load(out / "p2" / "recon.npy"), np.load(alone / "recon.npy"))
    vol = np.load(out / "p1" / "s1" / "recon.npy")
    assert vol.shape == (4, 40, 40)
    assert (out / "p1" / "s1" / "recon.nii.gz").is_file()
    assert len(list((out / "p1" / "s1" / "dicom").glob("*.dcm"))) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["name"] for r in summary["scans"]) == ["p1/s1/", "p2/"]
    before = _files(units[1:3])
    assert _batch(args) == 0  # finished with these options: nothing redone
    assert _files(units[1:3]) == before


def test_summary_lists_unusable_scans():
    """A finished scan whose metrics say `unusable` is named in summary.json and summary.md."""
    from recon.batch.summary import markdown_table, summarize

    rows = [
        {"name": "a.npy", "status": "done", "metrics": {"psnr": 30.0, "unusable": None}},
        {"name": "b.npy", "status": "done", "metrics": {"psnr": -8.5, "unusable": "far off"}},
    ]
    s = summarize(rows, {}, {"modality": "ct", "wall_seconds": 1.0})
    assert s["unusable"] == ["b.npy"]
    text = markdown_table(s)
    assert "1 unusable" in text and "- b.npy: far off" in text
    assert "unusable" not in markdown_table(
        summarize(rows[:1], {}, {"modality": "ct", "wall_seconds": 1.0})
    )


def test_exit_status_failed_then_unusable_then_zero():
    """`recon batch` exits 1 when a scan failed, 3 (recon ct's unusable status) when only images
    are unusable, 0 when every image is fine."""
    from recon.batch.summary import exit_status, summarize
    from recon.pipeline import EXIT_UNUSABLE

    run = {"modality": "ct", "wall_seconds": 1.0}
    good = {"name": "a.npy", "status": "done", "metrics": {"psnr": 30.0}}
    bad = {"name": "b.npy", "status": "skipped", "metrics": {"psnr": -8.5, "unusable": "far"}}
    failed = {"name": "c.npy", "status": "failed", "metrics": {}, "error": "NaN pixels"}
    assert exit_status(summarize([good], {}, run)) == 0
    assert exit_status(summarize([good, bad], {}, run)) == EXIT_UNUSABLE
    assert exit_status(summarize([good, bad, failed], {}, run)) == 1


def test_options_no_input_would_use_are_refused_before_any_scan(tmp_path, capsys):
    """--size (batch inputs are files with their own size) and --coils for k-space files: one
    line from `recon batch`, exit 2, nothing written (not one failure per scan)."""
    from data.fastmri import make_synthetic_fastmri
    from data.phantoms import shepp_logan
    from recon.cli import main

    _scans(tmp_path / "ct", 2)
    (tmp_path / "mri").mkdir()
    make_synthetic_fastmri(tmp_path / "mri" / "k.h5", shepp_logan(32), n_coils=2, seed=0)
    cases = [
        (["ct", "--inputs", str(tmp_path / "ct"), "--size", "64"], "--size 64"),
        (["mri", "--inputs", str(tmp_path / "mri"), "--coils", "4"], "--coils 4"),
    ]
    for argv, words in cases:
        out = tmp_path / "out"
        assert main(["batch", *argv, "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
        assert not out.exists()


def test_a_folder_of_volumes_is_found(tmp_path):
    """`recon batch ct --inputs FOLDER` said "no DICOM or .npy files found" for a folder of
    NIfTI/NRRD volumes, though naming the files worked; each is a unit named without its
    suffix (it was `vol.nii.gz/`)."""
    import nibabel as nib
    import nrrd

    root = tmp_path / "in"
    root.mkdir()
    vol = np.zeros((16, 16, 3), np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / "a.nii.gz"))
    nrrd.write(str(root / "b.nrrd"), vol)
    (root / "notes.txt").write_text("not a scan")
    files = find_inputs([str(root)], "ct")
    assert [f.name for f in files] == ["a.nii.gz", "b.nrrd"]
    units, _ = plan_units(files, "ct", tmp_path / "out")
    assert sorted({Path(u.out).name for u in units}) == ["a", "b"]


def test_dicom_files_with_uid_names_are_found_by_every_finder(tmp_path):
    """Extension-less DICOM files named by a UID with dots (1.3.6.1.4.1....: their "suffix" is
    the last number) were skipped by `recon batch` and `recon tune --inputs FOLDER` (only ''
    and .ima were probed), while `recon ct --input FOLDER` read the folder. One rule now
    (``data.dicom.is_dicom_file``): a DICOM suffix, or the DICM preamble whatever the name; a
    known other suffix is not probed."""
    from data.training_sets import image_files
    from recon.tune.problems import scans_from_glob
    from tests.test_ct_data import write_ct_slice

    series = tmp_path / "in" / "p1" / "series"
    series.mkdir(parents=True)
    names = [f"1.3.6.1.4.1.14519.5.2.1.35345470{k}" for k in range(3)]
    for k, name in enumerate(names):
        write_ct_slice(series / name, np.full((16, 16), 1000 + 10 * k, np.uint16), 2.5 * k)
    write_ct_slice(series / "IM0001.v2", np.full((16, 16), 1000, np.uint16), 7.5)
    (series / "notes.txt").write_text("x" * 128 + "DICM")  # a text file is never probed
    (series / "meta.json").write_text("{}")
    found = find_inputs([str(tmp_path / "in")], "ct")
    assert sorted(f.name for f in found) == sorted([*names, "IM0001.v2"])
    units, failures = plan_units(found, "ct", tmp_path / "out", per="volume")
    assert failures == [] and [u.name for u in units] == ["series/"]
    assert units[0].input == str(series.resolve())
    scans = scans_from_glob("ct", str(series))  # recon tune --inputs FOLDER
    assert sorted(s.name for s in scans) == sorted([*names, "IM0001.v2"])
    assert sorted(p.name for p in image_files(series)) == sorted([*names, "IM0001.v2"])
    from data.dicom import is_dicom_file

    assert all(is_dicom_file(series / n) for n in names)
    assert not is_dicom_file(series / "notes.txt") and not is_dicom_file(series / "meta.json")


def test_scan_warnings_print_as_one_line_and_stay_in_the_summary(tmp_path, cluster, capsys):
    """A scan's warnings were printed by the worker in Python's format (file:line: UserWarning
    and the source line), where `recon ct` prints one line. They now come back with the scan's
    row: one line each, `recon batch: warning: SCAN: ...` (with --quiet too, as recon ct), in
    summary.json's row and under "Warnings" in summary.md."""
    from data.phantoms import random_ellipses

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    img = random_ellipses(32, seed=1).astype(np.float32)
    np.save(inp / "clean.npy", img)
    np.save(inp / "negative.npy", img - 0.5)  # a.u. that go negative: auto units warn
    args = ["ct", "--inputs", str(inp), "--out", str(out), "--scheduler", cluster, "--quiet"]
    assert _batch([*args, "--solver", "fbp", "--views", "20"]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "warning" in line]
    assert len(said) == 1, err
    assert said[0].startswith("recon batch: warning: negative.npy: ")
    assert "read as attenuation-like a.u." in said[0] and "UserWarning" not in err
    rows = {r["name"]: r for r in json.loads((out / "summary.json").read_text())["scans"]}
    assert "warnings" not in rows["clean.npy"]
    assert rows["negative.npy"]["warnings"] == [said[0].split(": ", 3)[3]]
    assert "## Warnings\n\n- negative.npy: " in (out / "summary.md").read_text()
    # a rerun skips both finished scans, and its summary still lists the warning (it was
    # rewritten without it: a skipped scan's row came from metrics.json alone)
    assert _batch([*args, "--solver", "fbp", "--views", "20"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["counts"]["skipped"] == 2
    rows = {r["name"]: r for r in again["scans"]}
    assert "warnings" not in rows["clean.npy"]
    assert rows["negative.npy"]["warnings"] == [said[0].split(": ", 3)[3]]
    assert "## Warnings\n\n- negative.npy: " in (out / "summary.md").read_text()


def _scans_that_warn(out: str) -> list[dict]:
    """On a worker: two scans through ``run_unit``, whose reconstruction raises a
    DeprecationWarning and a UserWarning (``recon.ct.reconstruct_input`` replaced meanwhile)."""
    import warnings

    import recon.ct
    from recon.batch.worker import run_unit

    def reconstruct(ns, folder):
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)
        warnings.warn("the scan's own warning", stacklevel=1)
        return {"psnr": 1.0}

    saved, recon.ct.reconstruct_input = recon.ct.reconstruct_input, reconstruct
    try:
        return [
            run_unit(
                "ct",
                {},
                {
                    "input": "x.npy",
                    "slice": None,
                    "out": f"{out}/{k}",
                    "name": f"x{k}.npy",
                    "volume": "x",
                },
            )  # fmt: skip
            for k in range(2)
        ]
    finally:
        recon.ct.reconstruct_input = saved


def test_a_scans_warnings_follow_the_interpreters_filters(tmp_path, cluster):
    """The worker recorded warnings under `simplefilter("always")`, so a DeprecationWarning
    (hidden by Python's default filters, as for `recon ct`) was printed and listed in the
    summary, and -W / PYTHONWARNINGS were overridden. The filters now decide; a UserWarning is
    still reported, once for each scan."""
    from distributed import Client

    with Client(cluster) as client:
        rows = client.submit(_scans_that_warn, str(tmp_path), pure=False).result()
    assert [r["status"] for r in rows] == ["done", "done"], rows
    said = [r.get("warnings") or [] for r in rows]
    assert [len(s) for s in said] == [1, 1], said  # no DeprecationWarning, in either scan
    assert all(s[0].startswith("UserWarning: the scan's own warning (test_batch") for s in said)


def test_batch_ct_slice_is_refused_saying_why(tmp_path, capsys):
    """`recon batch ct --slice 1` got argparse's bare "unrecognized arguments"; it is one line
    saying a batch reconstructs each scan whole and pointing at `recon ct --slice`, exit 2,
    before anything is written."""
    from recon.cli import main

    _scans(tmp_path / "in", 1)
    out = tmp_path / "out"
    for spec in ("1", "0:3"):
        assert main(["batch", "ct", "--inputs", str(tmp_path / "in"), "--slice", spec,
                     "--out", str(out), "--per", "volume"]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "unrecognized" not in err, err
        assert err.startswith(f"recon batch: error: --slice {spec}: recon batch ct reconstructs")
        assert "recon ct --input FOLDER --slice A:B" in err
        assert not out.exists()
