"""The regularization strength: what it scales, and its choice by k-space cross-validation
(``recon.strength``, `recon mri --strength`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data.fastmri import make_synthetic_fastmri
from data.masks import fastmri_random_mask
from data.phantoms import shepp_logan
from operators.mri import SENSE, MaskedFFT
from recon.cli import main
from recon.pipeline import reconstruct
from recon.strength import (
    TooFewToHoldOut,
    calibration_block,
    choose_strength,
    holdout_masks,
    parse_strength,
    with_mask,
)


def test_calibration_block_of_columns_and_of_a_2d_mask():
    cols = np.zeros(32, bool)
    cols[13:20] = True  # the run through the centre (16)
    cols[[2, 8, 25]] = True
    assert np.flatnonzero(calibration_block(cols)).tolist() == list(range(13, 20))
    m = np.zeros((20, 24), bool)
    m[7:13, 9:15] = True  # a 6×6 box around the centre (10, 12)
    m[0, 0] = m[19, 23] = True
    block = calibration_block(m)
    assert block.sum() == 36 and block[7:13, 9:15].all()
    assert not calibration_block(np.zeros(16, bool)).any()


@pytest.mark.parametrize("shape", [(64,), (40, 48)])
def test_holdout_folds_are_disjoint_outside_the_calibration_and_cover_the_mask(shape):
    rng = np.random.default_rng(0)
    mask = rng.random(shape) < 0.3
    if len(shape) == 1:
        mask[28:36] = True
    else:
        mask[16:24, 20:28] = True
    centre = calibration_block(mask)
    folds = holdout_masks(mask, folds=2, fraction=0.25, seed=3)
    held = [h for _, h in folds]
    outside = mask & ~centre
    size = max(1, round(0.25 * outside.sum()))
    for kept, h in folds:
        assert h.sum() == size
        assert not (h & centre).any() and not (h & ~mask).any()
        assert np.array_equal(kept | h, mask) and not (kept & h).any()
    assert not (held[0] & held[1]).any()
    with pytest.raises(ValueError, match="folds × fraction"):
        holdout_masks(mask, folds=3, fraction=0.4)
    few = np.zeros(shape, bool)
    few.flat[0] = True
    with pytest.raises(TooFewToHoldOut, match="at least 2"):
        holdout_masks(few, folds=2)


def test_each_fold_holds_out_one_column_per_band_of_distance_from_the_centre():
    mask = np.zeros(120, bool)
    mask[55:65] = True  # calibration
    outer = np.r_[0:50:1, 70:120:1][::2]  # 50 outer columns
    mask[outer] = True
    ranked = sorted(outer, key=lambda j: (abs(j - 60), j))
    bands = [set(b) for b in np.array_split(ranked, 10)]  # fraction 0.2: 10 bands of 5
    for seed in (0, 1, 2):
        folds = holdout_masks(mask, folds=2, fraction=0.2, seed=seed)
        for _, held in folds:
            cols = set(np.flatnonzero(held))
            assert [len(cols & b) for b in bands] == [1] * 10


def test_with_mask_keeps_the_operator_and_changes_only_the_samples():
    rng = np.random.default_rng(1)
    maps = (rng.standard_normal((3, 16, 12)) + 1j * rng.standard_normal((3, 16, 12))).astype(
        np.complex64
    )
    cols = (rng.random(12) < 0.5).astype(np.float32)
    other = 1 - cols
    x = torch.randn(1, 1, 16, 12, dtype=torch.complex64)
    a = with_mask(SENSE(maps, cols), other)
    assert isinstance(a, SENSE)
    assert torch.allclose(a.forward(x), SENSE(maps, other).forward(x))
    b = with_mask(MaskedFFT(cols, height=16), other)
    assert isinstance(b, MaskedFFT) and b.domain_shape == (1, 16, 12)
    assert torch.allclose(b.forward(x), MaskedFFT(other, height=16).forward(x))
    with pytest.raises(ValueError, match="Cartesian"):
        with_mask(object(), other)


def _problem(seed: int = 0):
    """A single-coil Cartesian problem: truth (1, 1, 32, 32), its operator and data."""
    truth = torch.from_numpy(shepp_logan(32)).to(torch.complex64)[None, None]
    cols = fastmri_random_mask(32, 3.0, 0.25, seed=seed)
    op = MaskedFFT(cols, height=32)
    return truth, op, op.forward(truth), cols


@pytest.mark.parametrize("best", [1.0, 4.0, 16.0])
def test_the_search_walks_up_to_the_strength_that_predicts_held_out_samples(best):
    """A solve whose image is the truth scaled by 1 − 0.1·|log2(s/best)|: the held-out error is
    smallest at ``best``, so the walk must climb to it (and stop at the top of the range)."""
    truth, op, y, cols = _problem()
    seen = []

    def solve(op_k, y_k, x0_k, s):
        seen.append(s)
        assert torch.count_nonzero(op_k.mask).item() < torch.count_nonzero(op.mask).item()
        return truth * (1 - 0.1 * abs(np.log2(s / best)))

    choice = choose_strength(op, y, cols, solve, folds=2)
    assert choice.strength == best
    assert choice.solves == 2 * len(choice.errors) == len(seen)
    expected = [1.0, 2.0, 4.0, 8.0] if best == 4.0 else None
    if expected:
        assert sorted(choice.errors) == expected  # up to 4, one past it, never down
    assert min(choice.errors.values()) == pytest.approx(0.0, abs=1e-12)
    rec = choice.record()
    assert rec["value"] == best and rec["folds"] == 2 and rec["held_out_columns_per_fold"] >= 1


def test_the_search_goes_down_only_when_allowed():
    truth, op, y, cols = _problem()

    def solve(op_k, y_k, x0_k, s):
        return truth * (1 - 0.1 * abs(np.log2(s / 0.25)))

    assert choose_strength(op, y, cols, solve).strength == 1.0  # default: never below the rules
    assert choose_strength(op, y, cols, solve, lowest=1 / 16).strength == 0.25
    with pytest.raises(ValueError, match="lowest"):
        choose_strength(op, y, cols, solve, lowest=2.0)


def test_every_trial_starts_cold_from_its_folds_data():
    """Each trial solves from the kept samples' adjoint image, as the final solve starts from
    all samples' (no warm start from another strength: that would be a longer run)."""
    truth, op, y, cols = _problem()

    def solve(op_k, y_k, x0_k, s):
        kept = op_k.mask[0].bool()
        assert not y_k[..., ~kept].abs().any() and torch.equal(y_k[..., kept], y[..., kept])
        assert torch.equal(x0_k, op_k.adjoint(y_k))
        return truth

    assert choose_strength(op, y, cols, solve).solves == 4  # 1 and 2, two folds each


def test_parse_strength():
    assert parse_strength("auto") == "auto" and parse_strength(" AUTO ") == "auto"
    assert parse_strength("2.5") == 2.5
    for bad in ("0", "-1", "nan", "inf", "strong"):
        with pytest.raises(ValueError, match="--strength"):
            parse_strength(bad)


def test_strength_scales_the_regularizer_weight_for_tv_and_for_a_prior():
    truth, op, y, _ = _problem()
    x0 = op.adjoint(y)
    tv = {"weight_rel": 0.02, "rho_rel": 0.5, "iters": 2, "tv_iters": 5}
    a = reconstruct(op, y, x0, "tv", None, tv)
    b = reconstruct(op, y, x0, "tv", None, {**tv, "strength": 3.0})
    assert b.params["tv_weight"] == pytest.approx(3 * a.params["tv_weight"], rel=1e-12)
    assert b.params["rho"] == a.params["rho"]  # ADMM's penalty for TV is not the weight
    pnp = {"rho_rel": 0.01, "iters": 2, "prior_sigma_rel": 0.05}
    c = reconstruct(op, y, x0, "pnp-admm", "ridge-mri", pnp)
    d = reconstruct(op, y, x0, "pnp-admm", "ridge-mri", {**pnp, "strength": 3.0})
    assert d.params["rho"] == pytest.approx(3 * c.params["rho"], rel=1e-12)
    assert d.params["prior_sigma"] == c.params["prior_sigma"]
    e = reconstruct(op, y, x0, "pnp-admm", "ridge-mri", {**pnp, "strength": 1.0})
    assert torch.equal(e.x, c.x)
    with pytest.raises(ValueError, match="strength"):
        reconstruct(op, y, x0, "tv", None, {**tv, "strength": 0.0})


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "file_brain_strength.h5"
    return make_synthetic_fastmri(path, shepp_logan(64), n_coils=4, seed=0)


def _run(tmp_path, name, src, *extra):
    out = tmp_path / name
    args = ["mri", "--quiet", "--input", str(src), "--accel", "3", "--center-fraction", "0.16",
            "--solver", "tv", "--iters", "6", "--out", str(out), *extra]  # fmt: skip
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text()), np.load(out / "recon.npy")


def test_auto_strength_is_recorded_and_gives_the_image_of_that_strength(tmp_path, phantom_file):
    m, img = _run(tmp_path, "auto", phantom_file, "--strength", "auto")
    s = m["strength"]
    assert s["method"] == "k-space cross-validation" and s["folds"] == 2
    assert s["value"] >= 1.0 and s["solves"] == 2 * len(s["held_out_error"])
    errors = {float(k): v for k, v in s["held_out_error"].items()}
    assert errors[s["value"]] == min(errors.values())
    m2, img2 = _run(tmp_path, "given", phantom_file, "--strength", f"{s['value']:g}")
    assert m2["strength"] == {"value": s["value"], "method": "given"}
    assert np.array_equal(img, img2)  # the final solve is exactly the given strength's


def test_radial_data_keep_the_rules(tmp_path):
    out = tmp_path / "radial"
    args = ["mri", "--quiet", "--input", "bundled:brain-t1", "--coils", "2", "--mask", "radial",
            "--accel", "8", "--solver", "tv", "--iters", "2", "--strength", "auto",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    s = json.loads((out / "metrics.json").read_text())["strength"]
    assert s["value"] == 1.0 and "Cartesian" in s["method"]


def test_strength_option_errors_and_default(tmp_path, capsys):
    out = tmp_path / "default"
    args = ["mri", "--quiet", "--input", "bundled:brain-t1", "--coils", "2", "--solver", "tv",
            "--iters", "1"]  # fmt: skip
    assert main([*args, "--out", str(out)]) == 0
    s = json.loads((out / "metrics.json").read_text())["strength"]
    assert s == {"value": 1.0, "method": "given"}
    out = tmp_path / "o"
    assert main(["mri", "--input", "bundled:brain-t1", "--strength", "-2", "--out", str(out)]) == 2
    assert "--strength '-2': expected 'auto' or a finite number > 0" in capsys.readouterr().err
    assert not out.exists()


def test_a_whole_file_is_cross_validated_once_on_its_middle_slice(tmp_path):
    import h5py

    vol = np.stack([shepp_logan(48) * f for f in (0.8, 1.0, 0.9)])
    src = make_synthetic_fastmri(tmp_path / "file_brain_vol.h5", vol, n_coils=4, seed=0)
    args = ["mri", "--quiet", "--input", str(src), "--accel", "3", "--center-fraction", "0.2",
            "--solver", "tv", "--iters", "4"]  # fmt: skip
    assert main([*args, "--strength", "auto", "--out", str(tmp_path / "auto")]) == 0
    m = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    s = m["strength"]
    assert s["method"] == "k-space cross-validation" and m["shown_slice"] == 1
    assert main([*args, "--strength", f"{s['value']:g}", "--out", str(tmp_path / "given")]) == 0
    with (
        h5py.File(tmp_path / "auto" / "reconstruction.h5") as a,
        h5py.File(tmp_path / "given" / "reconstruction.h5") as b,
    ):
        assert a["reconstruction"].shape == (3, 48, 48)
        assert np.array_equal(a["reconstruction"][()], b["reconstruction"][()])
    assert [r["slice"] for r in m["slices"]] == [0, 1, 2]


def test_api_solve_takes_a_strength():
    from recon import api

    problem = api.mri_problem(shepp_logan(48), coils=4, accel=3, center_fraction=0.2)
    one = api.solve(problem, "tv", iters=3)
    two = api.solve(problem, "tv", iters=3, strength=2.0)
    assert two.params["tv_weight"] == pytest.approx(2 * one.params["tv_weight"], rel=1e-12)
    auto = api.solve(problem, "tv", iters=3, strength="auto")
    chosen = auto.params["strength_choice"]
    assert chosen["method"] == "k-space cross-validation"
    assert auto.params["strength"] == chosen["value"]
    ct = api.ct_problem(shepp_logan(32), views=8)
    with pytest.raises(ValueError, match="MRI problems only"):
        api.solve(ct, "tv", iters=1, strength="auto")
