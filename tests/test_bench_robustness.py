"""`recon bench robustness` on tiny settings: its files, and the properties its tables must show.

The CT rows: the AE-LPN gives the same reconstruction (after mapping back) in every intensity
convention while the LPN's PSNR changes by decibels; MRI: the AE-LPN is unchanged under k-space
scaling while the LPN is not; split normal: the 1-D shift-equivariant kinds are the identity and
the true prox/R curves are the closed forms.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from recon.bench.robustness import (
    Settings,
    _split_truth,
    ct_conventions,
    replot,
    run_robustness_bench,
)
from recon.cli import main


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness")
    s = Settings(
        split_steps=30,
        split_batch=256,
        denoise_size=32,
        phantoms=2,
        ct_iters=3,
        ct_downsample=4,  # 32×32 version of the bundled CT slice
        views=20,
        noise_factors=(1.0, 2.0),
        mri_iters=2,
        mri_downsample=4,  # 52×44 version of the brain slice
        mri_center_fraction=0.2,
        mri_scales=(1e-6, 1.0, 1e3),
        ct_float64=True,  # exactness on any CPU: no float32 round-off for the prior to amplify
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_robustness_bench(out, s, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out, res


def test_files_written(bench):
    out, res = bench
    for name in (
        "results.json",
        "tables.md",
        "split_normal.png",
        "denoise.png",
        "ct.png",
        "mri.png",
    ):
        path = out / name
        assert path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    loaded = json.loads((out / "results.json").read_text())
    assert set(loaded) >= {"split", "denoise", "ct", "mri", "settings"}
    text = (out / "tables.md").read_text()
    for heading in ("Split normal", "Denoising PSNR", "Affine sweep", "CT:", "MRI:"):
        assert heading in text
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_ct_aelpn_identical_across_conventions_lpn_not(bench):
    _, res = bench
    rows = res["ct"]["conventions"]
    assert set(rows["aelpn-ct"]) == set(ct_conventions())
    ae = rows["aelpn-ct"]
    assert res["ct"]["dtype"] == "float64"
    ps = [r["psnr"] for r in ae.values()]
    assert max(ps) - min(ps) < 1e-8
    # In float64 the AE-LPN's runs agree to round-off in every convention: exact equivariance
    # of prox, σ rule and solver. Bound: float64 round-off (2⁻⁵³ ≈ 1.1e-16) of offsets up to
    # 1e3× the data range, through 3 iterations of a prox whose Jacobian is < 1e2: < 1e-10.
    ae_diff = max(r["max_diff_vs_u"] for r in ae.values())
    assert ae_diff < 1e-9
    # recon ct's default, the exact prox of a convex R by an inner solve whose stopping rules
    # are all relative (tol·σ·√n, η·||v − v_prev||): as exact, with the same bound
    crr = rows["crr-ct"]
    assert set(crr) == set(ct_conventions())
    assert max(r["max_diff_vs_u"] for r in crr.values()) < 1e-9
    lpn = rows["lpn-ct"]
    assert lpn["u"]["max_diff_vs_u"] == 0.0
    assert max(r["drop_db"] for r in lpn.values()) > 1.0  # measured: decibels lost in other units
    lpn_diff = max(r["max_diff_vs_u"] for r in lpn.values())
    assert lpn_diff > 1e-2  # not round-off: the LPN gives another image in other units
    noise = res["ct"]["noise_levels"]
    assert set(noise) == {"crr-ct", "aelpn-ct", "lpn-ct", "tv"}
    for row in noise.values():
        assert row["1.0"]["drop_db"] == 0.0
        assert row["2.0"]["fbp_psnr"] < row["1.0"]["fbp_psnr"]  # more noise, worse FBP


def test_mri_aelpn_unchanged_under_kspace_scaling_lpn_not(bench):
    _, res = bench
    rows = res["mri"]["scalings"]
    ae = rows["aelpn-mri"]
    assert set(ae) == {"1e-06", "1", "1000"}
    ps = [r["psnr"] for r in ae.values()]
    assert max(ps) - min(ps) < 1e-3
    assert max(r["max_diff_vs_1"] for r in ae.values()) < 1e-4
    (lpn_label,) = [k for k in rows if k != "aelpn-mri"]
    lpn = [r["psnr"] for r in rows[lpn_label].values()]
    finite = [p for p in lpn if math.isfinite(p)]
    assert len(finite) < len(lpn) or max(finite) - min(finite) > 1.0


def test_split_normal_truth_and_degenerate_kinds(bench):
    _, res = bench
    t = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    prox, reg = _split_truth(t)
    # prox of R is argmin_x R(x) + (x − v)²/2: check the first-order condition R'(x) + x − v = 0
    grad_r = torch.where(prox < 0, prox, prox / 4)
    assert torch.allclose(grad_r + prox - t, torch.zeros(5))
    assert torch.allclose(reg, torch.tensor([2.0, 0.5, 0.0, 0.125, 0.5]))
    models = res["split"]["models"]
    for kind in ("aelpn", "shift-only", "normalization-trick"):
        assert not models[kind]["trained"]
        assert models[kind]["identity_err"] < 1e-5, kind
        assert models[kind]["max_prox_err"] == pytest.approx(2.0, abs=1e-5)  # identity at x = −4
    for kind in ("lpn", "scale-only"):
        assert models[kind]["trained"]
        assert len(models[kind]["prox"]) == len(res["split"]["grid"]) == 401
        assert math.isfinite(models[kind]["max_prox_err"])


def test_cli_rejects_bad_parts(capsys):
    assert main(["bench", "robustness", "--parts", "ct,bogus", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "--parts" in err and "bogus" in err


def test_replot_round_trip(bench, tmp_path, capsys):
    out, _ = bench
    before = (out / "tables.md").read_text()
    (out / "ct.png").unlink()
    replot(out)
    assert (out / "tables.md").read_text() == before
    assert (out / "ct.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["bench", "robustness", "--replot", "--out", str(tmp_path)]) == 2
    assert "results.json does not exist" in capsys.readouterr().err
