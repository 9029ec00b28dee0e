"""`--device cuda` end to end: every CT and MRI solver with every shipped prior of the modality,
on a small problem. Runs where PyTorch sees a CUDA device (``scripts/gpu_check.sh`` runs these
on a GPU machine); elsewhere each test skips saying so."""

from __future__ import annotations

import json

import pytest
import torch

from recon.cli import main

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (these run on a GPU machine)"
)

CT = ["--input", "phantom:shepp-logan", "--size", "48", "--views", "30", "--iters", "8",
      "--device", "cuda", "--quiet"]  # fmt: skip
MRI = ["--input", "bundled:brain-t1", "--coils", "4", "--accel", "3", "--iters", "6",
       "--device", "cuda", "--quiet"]  # fmt: skip


def _metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize(
    "solver, prior",
    [("fbp", None), ("tv", None)]
    + [
        (s, p)
        for s in ("pnp-admm", "pnp-pgd")
        for p in ("aelpn-ct", "ridge-ct", "crr-ct", "lpn-ct", "tv")
    ],
)
def test_ct_on_cuda(tmp_path, solver, prior):
    args = ["ct", *CT, "--solver", solver, "--out", str(tmp_path)]
    assert main(args + (["--prior", prior] if prior else [])) == 0
    m = _metrics(tmp_path)
    assert m["device"] == "cuda" and m["psnr"] == m["psnr"]  # finite, not NaN
    if solver != "fbp":
        assert m["psnr"] > m["baseline"]["psnr"]


@pytest.mark.parametrize(
    "solver, prior",
    [("zero-filled", None), ("tv", None)]
    + [(s, p) for s in ("pnp-admm", "pnp-pgd") for p in ("crr-mri", "ridge-mri", "aelpn-mri")]
    + [(s, "tv") for s in ("pnp-admm", "pnp-pgd")],
)
def test_mri_on_cuda(tmp_path, solver, prior):
    pytest.importorskip("cupy", reason="SigPy's GPU operators need CuPy (pip install cupy-cuda12x)")
    args = ["mri", *MRI, "--solver", solver, "--out", str(tmp_path)]
    assert main(args + (["--prior", prior] if prior else [])) == 0
    m = _metrics(tmp_path)
    assert m["device"] == "cuda" and m["psnr"] == m["psnr"]
    if solver != "zero-filled":
        assert m["psnr"] > m["baseline"]["psnr"]


def test_ridge_prox_mode_on_cuda_matches_cpu():
    """The inner solve of a prox-mode ridge gives the CPU's answer on the GPU (float64)."""
    from priors.lpn import told_noise_level
    from priors.ridge import RidgeProx

    torch.manual_seed(0)
    m = RidgeProx(filters=8, kernel=5, knots=9, mode="prox", tol=1e-10).double().eval()
    x = torch.rand(2, 1, 24, 24, dtype=torch.float64)
    with told_noise_level(m, 0.05):
        cpu = m.prox(x)
        gpu = m.to("cuda").prox(x.to("cuda")).cpu()
    assert float((cpu - gpu).abs().max()) <= 1e-8


def test_ct_preconditioner_and_fused_activation_on_cuda_match_cpu():
    """The Fourier preconditioner and the aelpn-ct prox (fused activation) on the GPU give the
    CPU's answer to float32 round-off."""
    from operators.ct import CTOperator
    from priors.checkpoint import load_prior
    from priors.lpn import told_noise_level

    op = CTOperator(64, 30)
    b = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    lam, rho = 1.0, 0.01 * op.norm_sq()
    cpu = op.normal_preconditioner(lam, rho, b)(b)
    gpu = op.normal_preconditioner(lam, rho, b.cuda())(b.cuda()).cpu()
    assert float((cpu - gpu).abs().max()) <= 1e-4 * float(cpu.abs().max())
    model = load_prior("aelpn-ct").eval()
    x = torch.rand(1, 1, 64, 64)
    with told_noise_level(model, 0.05):
        a = model.prox(x)
        g = model.to("cuda").prox(x.cuda()).cpu()
    assert float((a - g).abs().max()) <= 1e-4 * float(a.abs().max())


def test_radial_toeplitz_normal_on_cuda_matches_cpu():
    """The Toeplitz-embedded radial AᴴA runs in torch on the GPU and gives the CPU's answer
    (float64 to 1e-12, float32 to its round-off)."""
    import numpy as np

    from data.masks import radial_trajectory
    from operators.mri import NonCartesianSENSE

    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, 24, 20)) + 1j * rng.standard_normal((3, 24, 20))
    op = NonCartesianSENSE(
        maps, radial_trajectory(16, 48) * np.array([0.5, 20 / 48]), toeplitz=True
    )
    x = torch.randn(2, 1, 24, 20, dtype=torch.complex128)
    cpu = op.normal(x)
    assert torch.allclose(
        op.normal(x.cuda()).cpu(), cpu, rtol=0, atol=1e-12 * float(cpu.abs().max())
    )
    x32 = x.to(torch.complex64)
    got = op.normal(x32.cuda()).cpu()
    assert float((got - op.normal(x32)).abs().max()) <= 1e-5 * float(cpu.abs().max())


def test_radial_mri_on_cuda(tmp_path):
    pytest.importorskip("cupy", reason="SigPy's GPU operators need CuPy (pip install cupy-cuda12x)")
    args = ["mri", *MRI, "--mask", "radial", "--solver", "pnp-admm", "--out", str(tmp_path)]
    assert main(args) == 0
    m = _metrics(tmp_path)
    assert m["device"] == "cuda" and m["psnr"] > m["baseline"]["psnr"]
