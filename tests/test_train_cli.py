"""`recon train` refuses bad input in one line (exit 2) and leaves nothing half-written: bad
images in --data FOLDER, changed options on resume, --out that is not a checkpoint file, bad
option values; it holds out validation files, reads suffix-less DICOM, stops on a non-finite
loss, says what Ctrl-C left, and records the shipped prior a fine-tune started from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from data.training_sets import ellipse_sampler
from priors.checkpoint import read_checkpoint, save_checkpoint
from priors.lpn import ConvLPN
from priors.training import TrainConfig, train_prior
from recon.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--width", "4", "--levels", "1", "--depth", "1", "--batch", "2", "--threads", "1"]


def _train(*args: str) -> int:
    small = SMALL[6:] if "--init" in args else SMALL  # --init: the prior's architecture
    return main(["train", *small, "--patch", "16", "--quiet", *args])


def _folder(path: Path, n: int = 3, size: int = 24) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(path / f"im{i}.npy", rng.random((size, size)).astype(np.float32))
    return path


def test_a_nan_pixel_in_the_data_is_refused_naming_the_file(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    bad = np.load(data / "im1.npy")
    bad[3, 4] = np.inf
    np.save(data / "im1.npy", bad)
    out = tmp_path / "p.safetensors"
    assert _train("--data", str(data), "--steps", "2", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "im1.npy: 1 pixel(s) are NaN or infinite" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_non_finite_loss_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    ellipses = ellipse_sampler(16)
    calls = [0]

    def sampler(batch, gen):
        calls[0] += 1
        x = ellipses(batch, gen)
        return x * float("nan") if calls[0] == 3 else x  # the third step's batch

    model = ConvLPN(kind="aelpn", width=4, levels=1, depth=1)
    ckpt = tmp_path / "p.safetensors"
    cfg = TrainConfig(steps=6, batch=2, ckpt_every=2, val_every=100)
    with pytest.raises(ValueError, match=r"loss became nan at step 3 \(.*keeps step 2\)"):
        train_prior(model, sampler, cfg, checkpoint=ckpt, progress=False)
    tensors, info = read_checkpoint(ckpt)
    assert info["train"]["step"] == 2
    weights = {k: v for k, v in tensors.items() if k.startswith("model.")}
    assert all(bool(torch.isfinite(v).all()) for v in weights.values())
    # the model stopped before the bad step changed it: it still holds the step-2 weights
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[f"model.{k}"]), k


def test_resume_with_changed_options_is_refused_naming_each(tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    base = ["--data", "ellipses", "--steps", "2", "--out", str(out)]
    assert _train(*base) == 0
    before = out.read_bytes()
    data = _folder(tmp_path / "data")
    changed = ["--sigma", "0.2", "--lr", "1e-3", "--batch", "3", "--patch", "12", "--seed", "5"]
    changed += ["--loss", "mse", "--data", str(data)]
    assert _train(*base, *changed) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass a new --out, or --no-resume" in err
    for part in (
        "sigma: 0.1 -> 0.2",
        "lr: 0.0001 -> 0.001",
        "batch: 2 -> 3",
        "patch: 16 -> 12",
        "seed: 0 -> 5",
        "loss: 'prox-matching' -> 'mse'",
        f"data: 'ellipses' -> '{data.resolve()}'",
    ):
        assert part in err, part
    # the architecture: named the same way, not two whole configs
    assert _train(*base, "--width", "8") == 2
    err = capsys.readouterr().err
    assert "(width: 4 -> 8)" in err and "{" not in err
    assert out.read_bytes() == before  # nothing written by the refused runs
    # options that leave the weights as they are may change
    export = tmp_path / "small.safetensors"
    more = ["--threads", "2", "--ckpt-every", "1", "--val-every", "1", "--export", str(export)]
    assert main(["train", *SMALL, "--patch", "16", *base, *more]) == 0  # (and not --quiet)
    assert export.exists()


def test_checkpoint_without_recorded_options_compares_its_training_config(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path / "p.safetensors"
    base = ["--data", "ellipses", "--steps", "2", "--out", str(out)]
    assert _train(*base) == 0
    with safe_open(str(out), "pt") as f:
        raw = f.metadata()
    meta = json.loads(raw["meta"])
    del meta["options"]  # as written before the options were recorded
    save_file(load_file(str(out)), str(out), metadata={**raw, "meta": json.dumps(meta)})
    assert _train(*base, "--sigma", "0.3") == 2
    assert "sigma: 0.1 -> 0.3" in capsys.readouterr().err


def test_more_steps_resume_only_when_the_steps_done_keep_their_schedule(tmp_path, capsys):
    mse = ["--data", "ellipses", "--loss", "mse", "--l1-fraction", "0"]
    short, full = tmp_path / "short.safetensors", tmp_path / "full.safetensors"
    assert _train(*mse, "--steps", "2", "--out", str(short)) == 0
    assert _train(*mse, "--steps", "4", "--out", str(short)) == 0  # extended
    assert _train(*mse, "--steps", "4", "--out", str(full)) == 0
    a, b = load_file(str(short)), load_file(str(full))
    for k in (k for k in a if k.startswith("model.")):
        assert torch.equal(a[k], b[k]), k  # exactly the run with --steps 4 from the start
    # fewer steps than done, or a schedule that moves (the L1 warm-up is half the steps)
    assert _train(*mse, "--steps", "3", "--out", str(short)) == 2
    assert "steps: 4 -> 3" in capsys.readouterr().err
    pm = tmp_path / "pm.safetensors"
    assert _train("--data", "ellipses", "--steps", "2", "--out", str(pm)) == 0
    assert _train("--data", "ellipses", "--steps", "4", "--out", str(pm)) == 2
    err = capsys.readouterr().err
    assert "steps: 2 -> 4" in err and "it holds 2 steps" in err


def _files(folder: Path, names: list[str], held: str | None = None) -> Path:
    """Checkerboards (every pixel differs from its neighbours) named ``names``, and a smooth
    ramp named ``held``."""
    folder.mkdir()
    board = (np.indices((24, 24)).sum(0) % 2).astype(np.float32)
    for name in names:
        np.save(folder / name, board)
    if held:
        np.save(folder / held, np.add.outer(np.arange(24.0), np.arange(24.0)) / 46)
    return folder


def _roughness(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean())


def test_validation_uses_held_out_files_of_a_folder(tmp_path):
    from recon.train import make_sampler

    # 5 files: the 5th in sorted order is held out (a ramp; the others are checkerboards)
    data = _files(tmp_path / "five", [f"a{i}.npy" for i in range(4)], held="e.npy")
    sampler, val, desc = make_sampler(str(data), 16, 1)
    assert _roughness(val) < 0.1  # every validation patch is from the ramp ...
    gen = torch.Generator().manual_seed(0)
    assert _roughness(sampler(32, gen)) == 1.0  # ... and no training patch is
    assert "4 images (4 files)" in desc and "held-out file e.npy, never trained on" in desc
    # 2 files: the last is held out
    two = _files(tmp_path / "two", ["a.npy"], held="b.npy")
    _, val, desc = make_sampler(str(two), 16, 1)
    assert _roughness(val) < 0.1 and "held-out file b.npy" in desc
    # one file: nothing to hold out, and the description says where validation comes from
    one = _files(tmp_path / "one", ["a.npy"])
    _, val, desc = make_sampler(str(one), 16, 1)
    assert _roughness(val) == 1.0 and "patches of the training images" in desc


def test_folder_counts_used_images_and_names_folder_and_patch_when_all_are_small(tmp_path, capsys):
    from recon.train import make_sampler

    data = _folder(tmp_path / "data", n=3)
    np.save(data / "small.npy", np.random.default_rng(1).random((10, 10)))
    _, _, desc = make_sampler(str(data), 16, 1)  # 4 files, 1 too small: 3 used, 1 held out
    assert desc.startswith("2 images (2 files)") and "1 image smaller than 16×16 left out" in desc
    small = tmp_path / "small"
    small.mkdir()
    shutil.copy(data / "small.npy", small)
    out = tmp_path / "p.safetensors"
    assert _train("--data", str(small), "--steps", "1", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"--data {small}: no image is at least 16×16 (--patch 16; 1 smaller image)" in err


def test_a_bundled_test_image_among_the_training_files_is_named(tmp_path, capsys):
    """CT_small.dcm (bundled:ct-small) and the bundled brain slice, even rescaled, are the
    images the demo and the benchmarks reconstruct: training on them is warned about, by file;
    other images are not."""
    from pydicom.data import get_testdata_file

    from data.bundled import load_bundled
    from recon.train import make_sampler

    data = _folder(tmp_path / "data", n=2, size=32)  # im0, im1 (random)
    shutil.copy(get_testdata_file("CT_small.dcm"), data / "a_ct.dcm")
    np.save(data / "b_brain.npy", 3.0 * load_bundled("brain-t1") + 7.0)
    np.save(data / "c.npy", np.random.default_rng(2).random((32, 32)))  # 5 files: im1 held out
    capsys.readouterr()
    make_sampler(str(data), 16, 1)
    err = capsys.readouterr().err
    assert f"{data / 'a_ct.dcm'} holds the bundled test image bundled:ct-small" in err
    assert f"{data / 'b_brain.npy'} holds the bundled test image bundled:brain-t1" in err
    assert err.count("warning") == 2
    make_sampler(str(_folder(tmp_path / "clean", n=3)), 16, 1)
    assert "warning" not in capsys.readouterr().err


def test_dicom_files_without_a_suffix_are_read(tmp_path):
    from pydicom.data import get_testdata_file

    from recon.train import make_sampler

    data = tmp_path / "series"
    data.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), data / "IM0000")
    (data / "README").write_text("not an image\n")
    sampler, _, desc = make_sampler(str(data), 32, 1)
    assert desc.startswith("1 image (1 file)")
    assert sampler(2, torch.Generator().manual_seed(0)).shape == (2, 1, 32, 32)


def test_an_unreadable_image_is_refused_by_name(tmp_path, capsys):
    from skimage import io

    data = tmp_path / "data"
    data.mkdir()
    io.imsave(data / "a.png", (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8))
    (data / "b.png").write_bytes((data / "a.png").read_bytes()[:80])  # truncated
    out = tmp_path / "p.safetensors"
    assert _train("--data", str(data), "--steps", "1", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{data / 'b.png'}: unreadable" in err and len(err.splitlines()) == 1
    assert "pip" not in err and not out.exists()


def test_complex_images_need_two_channels_and_give_their_magnitude(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    z = (rng.random((24, 24)) + 1j * rng.random((24, 24))).astype(np.complex64)
    np.save(data / "z.npy", z)
    out = tmp_path / "p.safetensors"
    assert _train("--data", str(data), "--steps", "1", "--out", str(out)) == 2
    assert "z.npy: complex values" in capsys.readouterr().err and not out.exists()
    from data.training_sets import read_image_file

    (mag,) = read_image_file(data / "z.npy", complex_images="magnitude")
    np.testing.assert_allclose(mag, np.abs(z), rtol=1e-6)
    assert _train("--data", str(data), "--channels", "2", "--steps", "1", "--out", str(out)) == 0
    assert read_checkpoint(out)[1]["config"]["in_channels"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch", "0"], "argument --batch: must be ≥ 1, got 0"),
        (["--threads", "0"], "argument --threads: must be ≥ 1, got 0"),
        (["--channels", "3"], "argument --channels: invalid choice: 3"),
        (["--channels", "2"], "--channels 2: --data ellipses gives 1-channel images"),
        (["--ckpt-every", "0"], "argument --ckpt-every: must be ≥ 1, got 0"),
    ],
)
def test_bad_option_values_are_refused_in_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "p.safetensors"
    assert _train("--data", "ellipses", "--steps", "1", *args, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="tests the error for --device cuda on a machine without CUDA; this one has a GPU, "
    "where --device cuda is valid",
)
def test_cuda_without_a_device_is_refused_as_recon_ct_does(tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    assert _train("--data", "ellipses", "--device", "cuda", "--out", str(out)) == 2
    assert "--device cuda: no CUDA device is available" in capsys.readouterr().err


def test_init_without_kind_trains_the_priors_own_kind(tmp_path):
    src = tmp_path / "lpn.safetensors"
    save_checkpoint(src, ConvLPN(kind="lpn", width=4, levels=1, depth=1), {"sigma": 0.1})
    out = tmp_path / "ft.safetensors"
    assert _train("--data", "ellipses", "--init", str(src), "--steps", "1", "--out", str(out)) == 0
    assert read_checkpoint(out)[1]["config"]["kind"] == "lpn"


def test_out_must_be_a_checkpoint_file(tmp_path, capsys):
    base = ["--data", "ellipses", "--steps", "1"]
    assert _train(*base, "--out", str(tmp_path)) == 2
    assert f"--out {tmp_path}: a folder; give a checkpoint file path" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert _train(*base, "--out", str(notes)) == 2
    assert capsys.readouterr().err.startswith(f"recon train: error: --out {notes}: not a")
    assert _train(*base, "--out", str(notes), "--no-resume") == 2
    assert "--no-resume overwrites only checkpoints" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n"
    # a checkpoint is overwritten by --no-resume
    out = tmp_path / "p.safetensors"
    assert _train(*base, "--out", str(out)) == 0
    assert _train(*base, "--out", str(out), "--no-resume", "--sigma", "0.2") == 0
    assert read_checkpoint(out)[1]["meta"]["sigma"] == 0.2


def test_ctrl_c_says_what_was_saved(tmp_path, monkeypatch, capsys):
    import recon.train

    real = recon.train.make_sampler

    def interrupted_at_step_3(*args, **kwargs):
        sampler, val, desc = real(*args, **kwargs)
        calls = [0]

        def sample(batch, gen):
            calls[0] += 1
            if calls[0] == 3:
                raise KeyboardInterrupt
            return sampler(batch, gen)

        return sample, val, desc

    monkeypatch.setattr(recon.train, "make_sampler", interrupted_at_step_3)
    out = tmp_path / "p.safetensors"
    assert _train("--data", "ellipses", "--steps", "10", "--out", str(out)) == 130
    err = capsys.readouterr().err
    assert "interrupted at step 2: nothing was saved (the first checkpoint comes at step 10" in err
    assert err.count("interrupted") == 1  # said once, not again by recon.cli
    assert not out.exists()
    every = ["--ckpt-every", "1"]
    assert _train("--data", "ellipses", "--steps", "10", *every, "--out", str(out)) == 130
    assert f"{out} holds step 2: rerun the same command to resume" in capsys.readouterr().err
    assert read_checkpoint(out)[1]["train"]["step"] == 2


def test_natural_models_script_exports_to_runs_unless_asked(tmp_path):
    """The script as docs/training.md runs it, with a stand-in `recon` that logs its
    arguments: the exports go to runs/natural/, to priors/weights only when named."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/train_natural_models.sh", tmp_path / "scripts")
    fake = tmp_path / ".venv/bin/recon"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/usr/bin/env bash\necho "$@" >> calls.log\n')
    fake.chmod(0o755)
    script = str(tmp_path / "scripts/train_natural_models.sh")
    env = {**os.environ, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    subprocess.run(["bash", script, "5"], check=True, env=env, capture_output=True)
    calls = (tmp_path / "calls.log").read_text()
    assert "--export runs/natural/aelpn-natural.safetensors" in calls
    assert "--export runs/natural/lpn-natural.safetensors" in calls
    assert "priors/weights" not in calls
    (tmp_path / "calls.log").unlink()
    subprocess.run(["bash", script, "5", "priors/weights"], check=True, env=env)
    assert "--export priors/weights/lpn-natural.safetensors" in (tmp_path / "calls.log").read_text()


def test_help_states_the_defaults(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in (
        "default aelpn, or with --init the prior's own kind",
        "(default ct-mix; see above)",
        "default 0.1)",
        "images per step (default 8)",
        "side of the training patches (default 48)",
        "the batches (default 0)",
    ):
        assert default in text, default
    assert "every 5th file in sorted order" in text  # what validation of a FOLDER uses


def test_preset_from_records_the_shipped_prior_a_fine_tune_started_from(tmp_path):
    one = ["--data", "ellipses", "--steps", "1", "--batch", "1"]
    first = tmp_path / "ft1.safetensors"
    assert _train(*one, "--init", "ridge-ct", "--out", str(first)) == 0
    assert read_checkpoint(first)[1]["meta"]["preset_from"] == "ridge-ct"
    second = tmp_path / "ft2.safetensors"  # a fine-tune of the fine-tune carries it over
    assert _train(*one, "--init", str(first), "--out", str(second)) == 0
    assert read_checkpoint(second)[1]["meta"]["preset_from"] == "ridge-ct"
    conv = tmp_path / "conv.safetensors"  # so does a --steps 0 conversion
    assert (
        _train("--data", "ellipses", "--steps", "0", "--init", "ridge-ct", "--out", str(conv)) == 0
    )
    assert read_checkpoint(conv)[1]["meta"]["preset_from"] == "ridge-ct"
    scratch = tmp_path / "scratch.safetensors"
    assert _train(*one, "--out", str(scratch)) == 0
    assert "preset_from" not in read_checkpoint(scratch)[1]["meta"]
    # a byte copy of a shipped file (downloaded or copied elsewhere) is that prior, as its
    # presets are found (recon.pipeline.shipped_copy); it recorded nothing before
    import shutil

    from priors.checkpoint import shipped_priors

    copy = tmp_path / "copy" / "weights.safetensors"
    copy.parent.mkdir()
    shutil.copy(shipped_priors()["ridge-ct"], copy)
    third = tmp_path / "ft3.safetensors"
    assert _train(*one, "--init", str(copy), "--out", str(third)) == 0
    assert read_checkpoint(third)[1]["meta"]["preset_from"] == "ridge-ct"


def test_a_conversion_never_overwrites_a_checkpoint_unasked(tmp_path, capsys):
    """--steps 0 into an --out that holds a checkpoint (here a trained one) is refused, the file
    left as it was; --no-resume overwrites it."""
    out = tmp_path / "trained.safetensors"
    assert _train("--data", "ellipses", "--steps", "1", "--batch", "1", "--out", str(out)) == 0
    before = out.read_bytes()
    conv = ["--data", "ellipses", "--steps", "0", "--init", "ridge-ct", "--out", str(out)]
    capsys.readouterr()
    assert _train(*conv) == 2
    err = capsys.readouterr().err
    assert "holds a checkpoint of 1 training step;" in err and "--no-resume" in err
    assert out.read_bytes() == before
    assert _train(*conv, "--no-resume") == 0
    assert read_checkpoint(out)[1]["meta"]["converted_from"] == "ridge-ct"


def test_the_summary_gives_the_noisy_input_psnr_beside_the_validation_psnr(tmp_path, capsys):
    """The validation PSNR is read against the PSNR of the noisy input it denoises (the same
    noise draw): σ = 0.1 on images spanning [0, 1] is about 20 dB."""
    import math

    from priors.training import noisy_psnr

    clean = torch.zeros(4, 1, 16, 16)
    clean[:, :, 4:12, 4:12] = 1.0
    assert noisy_psnr(clean, 0.1) == pytest.approx(20.0, abs=0.5)
    args = ["train", "--kind", "fne-ridge", "--data", "ellipses", "--steps", "2", "--batch", "2"]
    args += ["--patch", "32", "--threads", "1", "--quiet", "--no-resume"]
    out = tmp_path / "p.safetensors"
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert math.isfinite(summary["val_input_psnr"]) and math.isfinite(summary["final_val_psnr"])


def test_a_resume_refuses_a_data_folder_whose_files_changed(tmp_path, capsys):
    """A file added to --data after a run moved the held-out validation file into training and
    the resume went on silently. The checkpoint records the folder's files (count and digest),
    and a resume with other files is refused, the checkpoint left as it was."""
    data = _folder(tmp_path / "data", n=6)
    out = tmp_path / "run.safetensors"
    assert _train("--data", str(data), "--steps", "1", "--out", str(out)) == 0
    recorded = read_checkpoint(out)[1]["meta"]["options"]["data_files"]
    assert recorded.startswith("6 files ")
    assert _train("--data", str(data), "--steps", "1", "--out", str(out)) == 0  # same files
    before = out.read_bytes()
    np.save(data / "aaa.npy", np.load(data / "im0.npy"))
    capsys.readouterr()
    assert _train("--data", str(data), "--steps", "1", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"data-files: {recorded!r} -> '7 files " in err and "files under --data changed" in err
    assert out.read_bytes() == before


def test_export_onto_the_training_checkpoint_is_refused(tmp_path, capsys):
    """`--export` equal to `--out` replaced the checkpoint by the export, and the rerun could
    not resume ("it holds weights without a training state")."""
    out = tmp_path / "run.safetensors"
    data = ["--data", "ellipses", "--steps", "1"]
    assert (
        _train(*data, "--out", str(out), "--export", str(tmp_path / "." / "run.safetensors")) == 2
    )
    assert "is --out: the export (weights only) would replace" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, words",
    [(["--kind", "fne-ridge", "--width", "8"], "--width: not read by --kind fne-ridge"),
     (["--kind", "aelpn", "--filters", "8"], "--filters: not read by --kind aelpn"),
     (["--kind", "fne-ridge", "--group-start", "0.2"], "--group-start: only read with --groups"),
     (["--sigma-sampling", "log"], "--sigma-sampling: only read with --sigma-max"),
     (["--loss", "mse", "--gamma-unit", "0.1"], "--gamma-unit: only read with --loss prox"),
     (["--l1-fraction", "1.5"], "--l1-fraction must be in [0, 1], got 1.5")],
)  # fmt: skip
def test_options_a_run_would_not_read_are_refused(tmp_path, capsys, argv, words):
    """These were accepted and dropped without a word, so a user's sweep over them trained the
    same network every time."""
    out = tmp_path / "x.safetensors"
    assert main(["train", "--data", "ellipses", "--steps", "1", "--quiet", *argv,
                 "--out", str(out)]) == 2  # fmt: skip
    assert words in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, words",
    [(["--kind", "aelpn", "--dilations", "1,2"], "--dilations: not read by --kind aelpn"),
     (["--kind", "aelpn", "--slope-bound"], "--slope-bound: not read by --kind aelpn"),
     (["--kind", "fne-ridge", "--out-channels", "3"], "--out-channels: not read by --kind fne"),
     (["--kind", "fne-ridge", "--upsample", "bilinear", "--global-pool"],
      "--upsample, --global-pool: not read by --kind fne-ridge"),
     (["--kind", "lpn", "--act", "relu"], "--act: not read by --kind lpn"),
     (["--tile-stride", "8"], "--tile-stride: only read with --tile"),
     (["--init", "ridge-ct", "--steps", "0", "--padding", "replicate"],
      "--padding: not read by --kind fne-ridge"),
     (["--init", "ridge-ct", "--steps", "0", "--local-mean", "3"], "--local-mean, --sigma")],
)  # fmt: skip
def test_every_architecture_option_a_kind_does_not_read_is_refused(tmp_path, capsys, argv, words):
    """Only --width/--levels/--depth/--act and --filters/--kernel were refused for the other
    family; `--kind aelpn --dilations 1,2`, `--kind aelpn --slope-bound`, `--kind fne-ridge
    --out-channels 3` (and --upsample, --global-pool, ... for a ridge, --act for the kinds with a
    fixed activation, --tile-stride without --tile, a ridge --init's --padding or --local-mean)
    trained or converted with the option dropped. One table (``READ_BY``) says which kinds read
    each option; the others are refused by name, nothing written."""
    out = tmp_path / "x.safetensors"
    assert main(["train", "--data", "ellipses", "--steps", "1", "--quiet", *argv,
                 "--out", str(out)]) == 2  # fmt: skip
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_architecture_options_a_kind_reads_are_accepted(tmp_path, capsys):
    """The refusal above leaves the options a kind reads alone."""
    from recon.train import READ_BY

    assert set(READ_BY["dilations"]) == {"fne-ridge"} and "fne-ridge" not in READ_BY["width"]
    out = tmp_path / "r.safetensors"
    ridge = ["--kind", "fne-ridge", "--filters", "4", "--kernel", "3", "--dilations", "1,2"]
    assert main(["train", "--data", "ellipses", "--steps", "1", "--batch", "2", "--patch", "16",
                 "--threads", "1", "--quiet", *ridge, "--slope-bound",
                 "--out", str(out)]) == 0  # fmt: skip
    out = tmp_path / "a.safetensors"
    lpn = ["--kind", "aelpn", "--out-channels", "2", "--upsample", "bilinear", "--act", "relu"]
    assert _train("--data", "ellipses", "--steps", "1", *lpn, "--out", str(out)) == 0
    assert read_checkpoint(out)[1]["config"]["out_channels"] == 2


def test_export_never_replaces_another_runs_checkpoint_or_export(tmp_path, capsys):
    """`--export` onto another run's --out replaced its training checkpoint by a weights-only
    export (that run could no longer resume), and a second run's export replaced the first's
    without a word. Both are refused, the files left as they were; a rerun of the run that
    wrote an export replaces it."""
    base = ["--data", "ellipses", "--steps", "1"]
    a = tmp_path / "a.safetensors"
    assert _train(*base, "--out", str(a)) == 0
    before = a.read_bytes()
    capsys.readouterr()
    b = ["--out", str(tmp_path / "b.safetensors")]
    assert _train(*base, "--seed", "5", *b, "--export", str(a)) == 2
    err = capsys.readouterr().err
    assert f"--export {a}: holds a training checkpoint of 1 step" in err
    assert len(err.splitlines()) == 1 and a.read_bytes() == before
    exp = tmp_path / "mine-export.safetensors"
    c = ["--out", str(tmp_path / "c.safetensors"), "--export", str(exp)]
    assert _train(*base, *c) == 0
    assert read_checkpoint(exp)[1]["meta"]["exported_from"] == str(tmp_path / "c.safetensors")
    mine = exp.read_bytes()
    capsys.readouterr()
    d = ["--out", str(tmp_path / "d.safetensors"), "--export", str(exp)]
    assert _train(*base, "--seed", "9", *d) == 2
    err = capsys.readouterr().err
    assert f"holds the export of {tmp_path / 'c.safetensors'}" in err and exp.read_bytes() == mine
    assert _train(*base, "--no-resume", "--seed", "3", *c) == 0  # the same --out: replaced
    assert read_checkpoint(exp)[1]["meta"]["seed"] == 3


def test_init_refuses_architecture_options_other_than_the_priors(tmp_path, capsys):
    """With --init, --width/--levels were accepted and silently ignored (the checkpoint had the
    prior's architecture); the same mistake without --init was refused. They are refused unless
    they equal the prior's values."""
    src = tmp_path / "base.safetensors"
    save_checkpoint(src, ConvLPN(kind="aelpn", width=4, levels=1, depth=1), {"sigma": 0.1})
    base = ["train", "--data", "ellipses", "--init", str(src), "--steps", "1", "--batch", "1"]
    base += ["--patch", "16", "--quiet", "--threads", "1"]
    out = tmp_path / "ft.safetensors"
    assert main([*base, "--width", "16", "--levels", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--width 16 (the prior's: 4), --levels 3 (the prior's: 1): --init takes the " in err
    assert len(err.splitlines()) == 1 and not out.exists()
    assert main([*base, "--filters", "8", "--out", str(out)]) == 2  # another family's option
    assert "--filters 8 (the prior's: none)" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--width", "4", "--levels", "1", "--out", str(out)]) == 0  # the same
    assert read_checkpoint(out)[1]["config"]["width"] == 4


def test_small_validation_patches_warn_that_their_psnr_is_per_patch(tmp_path, capsys):
    """The validation PSNR takes each patch's own range while σ is relative to the images'
    range: 8×8 patches of smooth images read about 20 dB lower (negative at σ = 0.1) without a
    word. The summary says what the range is, and such patches are warned about."""
    data = tmp_path / "ramps"
    data.mkdir()
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    for i in range(3):
        np.save(data / f"r{i}.npy", ramp + i)
    args = ["train", "--data", str(data), "--steps", "1", "--quiet", *SMALL]
    assert main([*args, "--patch", "8", "--out", str(tmp_path / "a.safetensors")]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["val_input_psnr"] < 5.0  # an 8-pixel stretch of the ramp spans 1/8 of it
    assert summary["val_psnr_data_range"] == "each validation patch's own max - min"
    assert "warning: the validation PSNR is relative to each validation patch's own range" in err
    assert "8x8 patches read" in err and len(err.splitlines()) == 1
    assert main([*args, "--patch", "64", "--out", str(tmp_path / "b.safetensors")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["val_input_psnr"] > 19.0
    assert "warning" not in err


def test_a_conversion_summary_names_its_export(tmp_path, capsys):
    """`--steps 0 --init P --export E` wrote E, but its summary lacked the "exported" key that
    a training run's summary has."""
    src = tmp_path / "src.safetensors"
    save_checkpoint(src, ConvLPN(kind="aelpn", width=4, levels=1, depth=1), {"sigma": 0.1})
    out, exp = tmp_path / "c.safetensors", tmp_path / "c-exp.safetensors"
    args = ["--data", "ellipses", "--steps", "0", "--init", str(src), "--local-mean", "3"]
    assert _train(*args, "--out", str(out), "--export", str(exp)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["exported"] == str(exp) and exp.is_file()
    assert read_checkpoint(exp)[1]["config"]["local_mean_sigma"] == 3.0


def test_a_conversion_of_an_export_is_not_that_runs_export(tmp_path, capsys):
    """`--steps 0 --init E` copied E's `exported_from` (A's path), so the conversion C passed
    for A's own export and `--out A --export C` replaced it. C no longer names A, and A's
    --export onto C is refused with the file left as it was."""
    base = ["--data", "ellipses", "--steps", "1"]
    a, e, c = (tmp_path / f"{n}.safetensors" for n in "aec")
    assert _train(*base, "--out", str(a), "--export", str(e)) == 0
    conv = ["--data", "ellipses", "--steps", "0", "--init", str(e), "--local-mean", "3"]
    assert _train(*conv, "--out", str(c)) == 0
    assert "exported_from" not in read_checkpoint(c)[1]["meta"]
    assert read_checkpoint(c)[1]["meta"]["converted_from"] == str(e)
    before = c.read_bytes()
    capsys.readouterr()
    assert _train(*base, "--no-resume", "--out", str(a), "--export", str(c)) == 2
    assert f"--export {c}: holds a prior that this --out did not export" in capsys.readouterr().err
    assert c.read_bytes() == before


def test_out_and_export_must_end_in_safetensors(tmp_path, capsys):
    """`--out b.pt` wrote a safetensors file under a pickle's name; both paths are refused
    unless they end in .safetensors, before anything is written."""
    base = ["--data", "ellipses", "--steps", "1"]
    assert _train(*base, "--out", str(tmp_path / "b.pt")) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'b.pt'}: checkpoints are safetensors files" in err
    out = tmp_path / "b.safetensors"
    assert _train(*base, "--out", str(out), "--export", str(tmp_path / "e.bin")) == 2
    assert "--export" in capsys.readouterr().err and not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, words",
    [(["--kind", "aelpn", "--filters", "8"], "--filters: not read by --kind aelpn"),
     (["--kind", "fne-ridge", "--width", "8"], "--width: not read by --kind fne-ridge"),
     (["--kind", "fne-ridge", "--dilations", "1,x"], "--dilations: integers like 1,2"),
     (["--kind", "aelpn", "--groups", "2"], "--groups is for --kind fne-ridge")],
)  # fmt: skip
def test_option_conflicts_are_refused_before_the_data_are_read(tmp_path, capsys, argv, words):
    """They were reported only after reading (and checking) every image of --data; a folder
    whose file would be refused shows which comes first."""
    data = _folder(tmp_path / "data")
    (data / "broken.npy").write_bytes(b"not an array")
    out = tmp_path / "x.safetensors"
    args = ["train", "--data", str(data), "--steps", "1", "--patch", "16", "--quiet"]
    assert main([*args, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and "broken.npy" not in err and not out.exists()


def test_an_unknown_kind_lists_every_kind_there_is(tmp_path):
    """A checkpoint of an unknown kind was refused with a list of 5 kinds; fne-ridge and the
    normalization trick, which load, were missing."""
    from safetensors.torch import save_file

    from priors.checkpoint import CheckpointError, load_prior
    from priors.lpn import KINDS

    good = tmp_path / "good.safetensors"
    save_checkpoint(good, ConvLPN(kind="aelpn", width=4, levels=1, depth=1), {})
    tensors, info = read_checkpoint(good)
    meta = {"format": "pnp-recon-prior/1", "meta": "{}", "train": "{}"}
    meta["config"] = json.dumps({**info["config"], "kind": "unknown-kind"})
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(CheckpointError) as exc:
        load_prior(bad)
    for kind in (*KINDS, "fne-ridge"):
        assert kind in str(exc.value), kind


def test_a_directory_named_like_a_checkpoint_is_called_a_directory(tmp_path, capsys):
    """`--init x.safetensors` (or load_prior) on a directory said "no such checkpoint file"."""
    from priors.checkpoint import CheckpointError, load_prior

    folder = tmp_path / "x.safetensors"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="x.safetensors: a directory, not a checkpoint file"):
        load_prior(folder)
    out = tmp_path / "o.safetensors"
    assert _train("--data", "ellipses", "--init", str(folder), "--out", str(out)) == 2
    assert "a directory, not a checkpoint file" in capsys.readouterr().err and not out.exists()
