"""The regularization strength s (`recon mri --strength`, ``params["strength"]``): it multiplies
the regularizer's weight the rules give, for TV and for a prior, with every solver alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data.masks import fastmri_random_mask
from data.phantoms import shepp_logan
from operators.mri import MaskedFFT
from recon.cli import main
from recon.pipeline import reconstruct


def _problem():
    """A single-coil Cartesian problem: truth (1, 1, 32, 32), its operator and data."""
    truth = torch.from_numpy(shepp_logan(32)).to(torch.complex64)[None, None]
    op = MaskedFFT(fastmri_random_mask(32, 3.0, 0.25, seed=0), height=32)
    return truth, op, op.forward(truth)


def test_strength_scales_the_regularizer_weight_for_tv_and_for_a_prior():
    truth, op, y = _problem()
    x0 = op.adjoint(y)
    tv = {"weight_rel": 0.02, "rho_rel": 0.5, "iters": 2, "tv_iters": 5}
    a = reconstruct(op, y, x0, "tv", None, tv)
    b = reconstruct(op, y, x0, "tv", None, {**tv, "strength": 3.0})
    assert b.params["tv_weight"] == pytest.approx(3 * a.params["tv_weight"], rel=1e-12)
    assert b.params["rho"] == a.params["rho"]  # ADMM's penalty for TV is not its weight
    pnp = {"rho_rel": 0.01, "iters": 2, "prior_sigma_rel": 0.05}
    c = reconstruct(op, y, x0, "pnp-admm", "ridge-mri", pnp)
    d = reconstruct(op, y, x0, "pnp-admm", "ridge-mri", {**pnp, "strength": 3.0})
    assert d.params["rho"] == pytest.approx(3 * c.params["rho"], rel=1e-12)  # λD + ρR
    assert d.params["prior_sigma"] == c.params["prior_sigma"]
    e = reconstruct(op, y, x0, "pnp-admm", "ridge-mri", {**pnp, "strength": 1.0})
    assert torch.equal(e.x, c.x)
    with pytest.raises(ValueError, match="strength"):
        reconstruct(op, y, x0, "tv", None, {**tv, "strength": 0.0})


def test_pgd_and_fista_are_told_the_problem_of_the_scaled_rho():
    """PGD's prox solves ADMM's problem λD + sρR at its step: TV's weight and a σ-input prior's
    told σ follow s exactly as they follow ρ (``pgd_sigma_factor``)."""
    truth, op, y = _problem()
    x0 = op.adjoint(y)
    tv = {"weight_rel": 0.02, "rho_rel": 0.01, "iters": 2, "tv_iters": 5, "solver": "pnp-pgd"}
    a = reconstruct(op, y, x0, "tv", None, tv)
    b = reconstruct(op, y, x0, "tv", None, {**tv, "strength": 2.0})
    assert b.params["problem_tv_weight"] == pytest.approx(2 * a.params["problem_tv_weight"])
    assert b.params["pgd_weight_factor"] == a.params["pgd_weight_factor"]
    pnp = {"rho_rel": 0.01, "iters": 2, "prior_sigma_rel": 0.05, "step_rel": 0.99}
    c = reconstruct(op, y, x0, "pnp-pgd", "ridge-mri", pnp)
    d = reconstruct(op, y, x0, "pnp-pgd", "ridge-mri", {**pnp, "rho_rel": 0.02})
    e = reconstruct(op, y, x0, "pnp-pgd", "ridge-mri", {**pnp, "strength": 2.0})
    assert e.params["pgd_sigma_factor"] == d.params["pgd_sigma_factor"]
    assert e.params["pgd_sigma_factor"] != c.params["pgd_sigma_factor"]
    assert torch.equal(e.x, d.x)  # s·ρ_rel is the same problem as ρ_rel' = s·ρ_rel


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    args = ["mri", "--quiet", "--input", "bundled:brain-t1", "--coils", "2", "--solver", "tv",
            "--iters", "3", "--out", str(out), *extra]  # fmt: skip
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text()), np.load(out / "recon.npy")


def test_recon_mri_strength_option(tmp_path, capsys):
    m1, img1 = _run(tmp_path, "default")
    m2, img2 = _run(tmp_path, "double", "--strength", "2")
    p1, p2 = m1["parameters"], m2["parameters"]
    assert p1["strength"] == 1.0 and p2["strength"] == 2.0
    assert p2["tv_weight"] == pytest.approx(2 * p1["tv_weight"], rel=1e-12)
    assert not np.array_equal(img1, img2)
    capsys.readouterr()
    args = ["mri", "--input", "bundled:brain-t1", "--coils", "2", "--solver", "tv", "--iters", "1",
            "--strength", "2", "--out", str(tmp_path / "said")]  # fmt: skip
    assert main(args) == 0
    assert "tv, strength 2: PSNR" in capsys.readouterr().out  # the summary line says it
    out = tmp_path / "bad"
    assert main(["mri", "--input", "bundled:brain-t1", "--strength", "-2", "--out", str(out)]) == 2
    assert "--strength" in capsys.readouterr().err
    assert not out.exists()


def test_api_solve_takes_a_strength():
    from recon import api

    problem = api.mri_problem(shepp_logan(48), coils=4, accel=3, center_fraction=0.2)
    one = api.solve(problem, "tv", iters=3)
    two = api.solve(problem, "tv", iters=3, strength=2.0)
    assert two.params["tv_weight"] == pytest.approx(2 * one.params["tv_weight"], rel=1e-12)
    ct = api.ct_problem(shepp_logan(32), units="a.u.", views=8)
    a, b = api.solve(ct, "tv", iters=2), api.solve(ct, "tv", iters=2, strength=2.0)
    assert b.params["tv_weight"] == pytest.approx(2 * a.params["tv_weight"], rel=1e-12)


def test_warm_started_tv_prox_reaches_admm_fixed_point_with_few_inner_iterations():
    """``tv_warm_start``: ADMM's successive TV proxes start from the last dual, so 5 inner
    iterations land nearer ADMM's fixed point than 5 cold ones, and as near as many cold ones."""
    truth, op, y = _problem()
    x0 = op.adjoint(y)
    base = {"weight_rel": 0.02, "rho_rel": 0.05, "iters": 150, "tol": 0.0}
    ref = reconstruct(op, y, x0, "tv", None, {**base, "tv_iters": 2000}).x
    cold = reconstruct(op, y, x0, "tv", None, {**base, "tv_iters": 5}).x
    warm = reconstruct(op, y, x0, "tv", None, {**base, "tv_iters": 5, "tv_warm_start": True})
    many = reconstruct(op, y, x0, "tv", None, {**base, "tv_iters": 50}).x
    assert warm.params["tv_warm_start"] is True

    def err(x):
        return float((x - ref).abs().norm() / ref.abs().norm())

    assert err(warm.x) < 0.2 * err(cold)
    assert err(warm.x) < 2 * err(many) + 1e-4


def test_recon_ct_strength_option(tmp_path):
    ms = []
    for s in ("1", "2"):
        out = tmp_path / s
        args = ["ct", "--quiet", "--input", "phantom:shepp-logan", "--size", "32", "--views", "12",
                "--solver", "tv", "--iters", "2", "--strength", s, "--out", str(out)]  # fmt: skip
        assert main(args) == 0
        ms.append(json.loads((out / "metrics.json").read_text())["parameters"])
    assert ms[1]["strength"] == 2.0
    assert ms[1]["tv_weight"] == pytest.approx(2 * ms[0]["tv_weight"], rel=1e-12)


def test_pgd_without_a_rho_rule_takes_the_strength_through_its_step():
    """A prior whose PGD preset has no ρ (its fixed points minimize γD + R): strength s gives
    exactly the run at step γ/s, argmin (γ/s)·D + R = argmin γD + s·R; never silently ignored."""
    truth, op, y = _problem()
    x0 = op.adjoint(y)
    pgd = {"iters": 3, "step_rel": 0.8}
    a = reconstruct(op, y, x0, "pnp-pgd", "aelpn-mri", {**pgd, "step_rel": 0.4})
    b = reconstruct(op, y, x0, "pnp-pgd", "aelpn-mri", {**pgd, "strength": 2.0})
    assert b.params["step_rel"] == pytest.approx(0.4) and torch.equal(a.x, b.x)
    with pytest.raises(ValueError, match="FISTA's range"):
        reconstruct(
            op, y, x0, "pnp-pgd", "aelpn-mri", {**pgd, "accelerated": True, "strength": 0.5}
        )
    with pytest.raises(ValueError, match="PGD's range"):
        reconstruct(op, y, x0, "pnp-pgd", "aelpn-mri", {**pgd, "strength": 0.4})
