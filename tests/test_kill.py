"""Real SIGKILLs in the middle of `recon mri` and `recon train` (the process kills itself at a
chosen write, so the moment is exact): the output folder never pairs an older run's
metrics.json with newer files, and a rerun of the same command ends exactly where an
uninterrupted run does. (`recon batch` and `recon ct` series: tests/test_batch.py and
tests/test_ct_series.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

from recon.cli import main

pytestmark = pytest.mark.slow  # child processes killed mid-run (`pytest -m "not slow"`)

ROOT = Path(__file__).resolve().parents[1]


def _run_killed(patch: str, argv: list[str]) -> int:
    """Run `recon ARGV` in a child process after executing ``patch`` (which sets up the kill);
    returns the child's exit status."""
    code = (
        f"import os, signal, sys\n{patch}\nfrom recon.cli import main\nsys.exit(main({argv!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    return proc.returncode


def _kill_at(module: str, name: str, after: int = 0) -> str:
    """Patch code: ``module.name`` runs normally ``after`` times, then the process SIGKILLs
    itself when it is called again (before that call does anything)."""
    return (
        f"import {module} as _m\n"
        f"_real, _n = _m.{name}, [0]\n"
        "def _dies(*a, **k):\n"
        "    _n[0] += 1\n"
        f"    if _n[0] > {after}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return _real(*a, **k)\n"
        f"_m.{name} = _dies\n"
    )


def test_mri_killed_between_writes_never_pairs_old_metrics_with_new_files(tmp_path):
    from data.fastmri import make_synthetic_fastmri
    from data.phantoms import shepp_logan

    h5 = tmp_path / "vol.h5"
    make_synthetic_fastmri(h5, np.stack([shepp_logan(48), np.fliplr(shepp_logan(48))]), n_coils=2)
    out = tmp_path / "out"
    base = ["mri", "--input", str(h5), "--solver", "tv", "--center-fraction", "0.15", "--quiet"]
    base += ["--out", str(out)]
    assert main([*base, "--iters", "3"]) == 0  # an older, complete run in the folder
    old = json.loads((out / "metrics.json").read_text())
    # the new run (other options) dies after its reconstruction.h5, before its images
    status = _run_killed(_kill_at("recon.mri", "write_outputs"), [*base, "--iters", "6"])
    assert status == -signal.SIGKILL
    with h5py.File(out / "reconstruction.h5") as f:
        new_volume = f["reconstruction"][()]
    assert not (out / "metrics.json").exists(), "old metrics.json left beside the new volume"
    assert not list(out.glob(".*.tmp"))
    # the rerun completes the folder: every file from the same run
    assert main([*base, "--iters", "6"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["iterations"] != old["iterations"]
    with h5py.File(out / "reconstruction.h5") as f:
        np.testing.assert_array_equal(f["reconstruction"][()], new_volume)
    np.testing.assert_array_equal(np.load(out / "recon.npy"), new_volume)


TRAIN = ["train", "--kind", "aelpn", "--data", "ellipses", "--steps", "12", "--batch", "2"]
TRAIN += ["--patch", "16", "--width", "4", "--levels", "1", "--depth", "1", "--ckpt-every", "4"]
TRAIN += ["--val-every", "1000", "--threads", "1", "--quiet", "--l1-fraction", "0.25"]


def test_train_killed_mid_run_resumes_to_the_uninterrupted_weights(tmp_path):
    full = tmp_path / "full.safetensors"
    assert _run_killed("", [*TRAIN, "--out", str(full)]) == 0
    ck = tmp_path / "killed.safetensors"
    # dies when about to write its second checkpoint (step 8): the file holds step 4
    status = _run_killed(
        _kill_at("priors.training", "save_checkpoint", after=1), [*TRAIN, "--out", str(ck)]
    )
    assert status == -signal.SIGKILL
    from safetensors import safe_open

    with safe_open(str(ck), "np") as f:
        assert json.loads(f.metadata()["train"])["step"] == 4
    assert not list(tmp_path.glob(".*.tmp"))
    assert _run_killed("", [*TRAIN, "--out", str(ck)]) == 0  # the same command: resumes
    a, b = load_file(str(full)), load_file(str(ck))
    weights = [k for k in a if k.startswith("model.")]
    assert weights and set(a) == set(b)
    for k in weights:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
