"""The checks that call a run's image unusable (`recon ct` / `recon mri` exit EXIT_UNUSABLE)."""

from __future__ import annotations

from recon.pipeline import (
    EXIT_UNUSABLE,
    MISFIT_FACTOR,
    MISFIT_FLOOR,
    NORM_FACTOR,
    _unusable_line,
    exit_status,
    unusable_reason,
    unusable_slices,
)


def _record(stop="max iterations", d0=1.0, norm=1.0):
    return {"stop_reason": stop, "start_data_fidelity": d0, "norm_ratio": norm}


def test_misfit_and_norm_bounds_are_where_they_say():
    fits = {"data_fidelity": [None, 3.0, MISFIT_FACTOR * 2.0]}
    assert unusable_reason(_record(d0=2.0), fits) is None  # at the bound: still usable
    fits["data_fidelity"][-1] = MISFIT_FACTOR * 2.0 * (1 + 1e-9)
    assert "fits the data" in unusable_reason(_record(d0=2.0), fits)
    ok = {"data_fidelity": [1.0]}
    assert unusable_reason(_record(norm=NORM_FACTOR), ok) is None
    assert "larger in norm" in unusable_reason(_record(norm=NORM_FACTOR * 1.01), ok)
    # only the last iterate counts: a run that strayed and came back is usable
    assert unusable_reason(_record(), {"data_fidelity": [1e6, 0.5]}) is None


def test_divergence_comes_first_and_missing_numbers_do_not_flag():
    r = unusable_reason(_record(stop="diverged: non-finite values at iteration 3"), {})
    assert r == "the solver diverged: non-finite values at iteration 3"
    for d0 in (None, 0.0):  # no start measured (or a perfect start): no misfit test
        assert unusable_reason(_record(d0=d0, norm=None), {"data_fidelity": [1e9]}) is None


def test_exit_status_of_a_run_and_of_a_volume():
    assert exit_status({"psnr": 30.0}) == 0
    assert exit_status({"unusable": "x"}) == EXIT_UNUSABLE != 0
    rows = [{"slice": 0}, {"slice": 3, "unusable": "why"}, {"slice": 4, "unusable": "b"}]
    assert unusable_slices(rows) == "slices 3, 4: why"
    assert unusable_slices(rows[:1]) is None
    assert exit_status({"slices": rows}) == EXIT_UNUSABLE
    assert exit_status({"slices": rows[:1]}) == 0


def test_a_start_that_fits_the_data_exactly_does_not_make_every_run_unusable():
    """Single-coil zero-filling reproduces y: D(x0) ~ 0. The misfit is then judged against
    MISFIT_FLOOR × D(0), D(0) = (λ/2)||y||² the zero image's misfit."""
    rec = {**_record(d0=1e-13), "zero_data_fidelity": 100.0}
    fine = MISFIT_FACTOR * MISFIT_FLOOR * 100.0
    assert unusable_reason(rec, {"data_fidelity": [fine]}) is None
    assert "fits the data" in unusable_reason(rec, {"data_fidelity": [fine * 1.01]})


def test_the_advice_names_only_what_would_change_something():
    base = {"params": {}, "solver_run": "pnp-pgd", "certified_prior": False}
    line = _unusable_line("why", base)
    assert "--solver pnp-admm" in line and "a certified prior (crr-ct, ridge-ct)" in line
    assert "crr-mri" in _unusable_line("why", {**base, "modality": "mri"})
    line = _unusable_line("why", {**base, "solver_run": "pnp-admm"})
    assert "--solver pnp-admm" not in line and "a certified prior" in line
    line = _unusable_line("why", {**base, "certified_prior": True})
    assert "--solver pnp-admm" in line and "certified prior" not in line
    sigma = {**base, "params": {"prior_sigma_rel": 0.01, "prior_sigma": 0.02}}
    assert "--prior-sigma-rel" in _unusable_line("why", sigma)
    done = _unusable_line("why", {**base, "solver_run": "pnp-admm", "certified_prior": True})
    assert "Try" not in done and "check the data" in done
    assert _unusable_line("why", base, where="slice 3: ").startswith("warning: slice 3: why")


def test_api_result_says_unusable_and_warns(tmp_path):
    """recon.api.solve sets Result.unusable (and warns) where `recon ct` would exit 3: an
    untrained AE-LPN (random weights) pulls the image far from the data; TV on the same problem
    is usable and says nothing."""
    import warnings

    import pytest
    import torch

    from data.phantoms import shepp_logan
    from priors.checkpoint import save_checkpoint
    from priors.lpn import ConvLPN
    from recon.api import ct_problem, solve

    torch.manual_seed(0)
    path = tmp_path / "untrained.safetensors"
    save_checkpoint(path, ConvLPN(kind="aelpn", width=4, levels=1, depth=1).eval())
    pb = ct_problem(shepp_logan(48), units="a.u.", views=20)
    with pytest.warns(RuntimeWarning, match="not usable"):
        bad = solve(pb, "pnp-admm", path, iters=10)  # misfit ×3.9e4, −29 dB
    assert bad.unusable and any(w in bad.unusable for w in ("worse", "larger", "diverged"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        good = solve(pb, "tv", iters=20)
    assert good.unusable is None and good.psnr > bad.psnr
