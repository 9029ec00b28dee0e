"""Intensity-convention robustness as a contract (float64).

CT conventions: HU, normalized attenuation u = (HU + 1000)/2500, attenuation μ in mm⁻¹
(data.ct_units) and each window's unclipped normalization (lung, mediastinum, bone, brain); MRI:
k-space scaled by 1e-6 … 1e3. With the shipped AE-LPN, the prox and the whole solvers (PGD and
ADMM) give the same image after mapping back; with the LPN the same change is measured at both
levels (prox and solver) and asserted to be large. Solver-level checks use a dense float64
operator (ASTRA computes in float32, which would hide a 1e-9 check behind round-off).
"""

from __future__ import annotations

import pytest
import torch

from data.bundled import load_bundled
from data.ct_units import hu_to_mu, mu_to_hu
from data.windows import WINDOWS, window_denormalize, window_normalize
from operators.dense import MatrixOperator
from priors.base import ComplexAsChannels
from priors.checkpoint import load_prior, shipped_priors
from priors.lpn import ConvLPN, told_noise_level
from recon.bench.robustness import ChannelwisePrior
from solvers import pnp_admm, pnp_pgd

D = torch.float64
MRI_SCALES = (1e-6, 1e-5, 1e-3, 1.0, 1e3)


def _conventions():
    out = {
        "u": (lambda hu: (hu + 1000) / 2500, lambda u: u * 2500 - 1000),
        "mu": (hu_to_mu, mu_to_hu),  # attenuation per mm, μ_water = 0.02/mm
    }
    for w in WINDOWS:
        out[w] = (lambda hu, w=w: window_normalize(hu, w), lambda v, w=w: window_denormalize(v, w))
    return out


@pytest.fixture(scope="module")
def hu_slice():
    hu = torch.from_numpy(load_bundled("ct-small").hu).to(D)[None, None]
    return hu[..., 32:96, 32:96]  # 64×64 keeps the test fast


@pytest.fixture(scope="module")
def ct_priors():
    return load_prior("aelpn-ct", dtype=D), load_prior("lpn-ct", dtype=D)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _scale(fwd) -> float:
    """a of the affine map fwd(x) = a·x + b."""
    return float(fwd(torch.tensor(1.0, dtype=D)) - fwd(torch.tensor(0.0, dtype=D)))


def test_conventions_are_the_documented_affine_maps():
    """The maps the tests use: u(0 HU) = 0.4, μ(water) = 0.02/mm, each window's lo -> 0."""
    conv = _conventions()
    zero, air = torch.tensor(0.0, dtype=D), torch.tensor(-1000.0, dtype=D)
    assert float(conv["u"][0](zero)) == pytest.approx(0.4)
    assert float(conv["mu"][0](zero)) == pytest.approx(0.02)
    assert float(conv["mu"][0](air)) == pytest.approx(0.0)
    for w, (level, width) in WINDOWS.items():
        lo = torch.tensor(level - width / 2, dtype=D)
        assert float(conv[w][0](lo)) == pytest.approx(0.0, abs=1e-12)
        assert float(conv[w][0](lo + width)) == pytest.approx(1.0)
    assert len(conv) == 2 + 4


def test_prox_same_image_in_every_ct_convention(hu_slice, ct_priors):
    ae, lpn = ct_priors
    noisy = hu_slice + 30.0 * torch.randn(
        hu_slice.shape, generator=torch.Generator().manual_seed(0), dtype=D
    )
    with told_noise_level(ae, 30.0):  # a prior that takes σ is told it in each convention's units
        ref_ae = ae.prox(noisy)
    ref_lpn = lpn.prox((noisy + 1000) / 2500) * 2500 - 1000  # the LPN in its training units
    lpn_gap = {}
    for name, (fwd, inv) in _conventions().items():
        with told_noise_level(ae, 30.0 * _scale(fwd)):
            assert _rel(inv(ae.prox(fwd(noisy))), ref_ae) <= 1e-10, name
        lpn_gap[name] = _rel(inv(lpn.prox(fwd(noisy))), ref_lpn)
    lpn_gap["HU"] = _rel(lpn.prox(noisy), ref_lpn)
    print("LPN relative change across conventions:", {k: f"{v:.3g}" for k, v in lpn_gap.items()})
    assert lpn_gap["u"] <= 1e-12  # the reference itself
    assert max(lpn_gap.values()) > 1e-2  # measured: the LPN's output depends on the units


@pytest.mark.parametrize("solver", ["pgd", "admm"])
def test_whole_ct_solver_same_image_in_every_convention(hu_slice, ct_priors, solver):
    small = hu_slice[..., ::4, ::4]  # 16×16
    g = torch.Generator().manual_seed(1)
    op = MatrixOperator(torch.randn(200, 256, generator=g, dtype=D) / 16, 16, 16)
    y_hu = op.forward(small) + 5.0 * torch.randn(1, 1, 200, 1, generator=g, dtype=D)
    x0_hu = op.adjoint(y_hu) / op.norm_sq()
    ae, lpn = ct_priors
    ones = torch.ones_like(small)

    def run(prior, y, x0):
        with told_noise_level(prior, 0.1 * float(x0.max() - x0.min())):  # (a σ input: recon's rule)
            if solver == "pgd":
                return pnp_pgd(op, y, prior, iters=5, tol=0, x0=x0).x
            return pnp_admm(
                op, y, prior, rho=0.3 * op.norm_sq(), iters=5, tol=0, x0=x0, cg_iters=5, cg_tol=0
            ).x

    def in_units(fwd):
        a = _scale(fwd)
        b = float(fwd(torch.tensor(0.0, dtype=D)))
        return a * y_hu + b * op.forward(ones), fwd(x0_hu)  # the same data in the other units

    conv = _conventions()
    ref = run(ae, y_hu, x0_hu)
    fwd_u, inv_u = conv["u"]
    ref_lpn = inv_u(run(lpn, *in_units(fwd_u)))  # the LPN in its training units
    lpn_gap = {"HU": _rel(run(lpn, y_hu, x0_hu), ref_lpn)}
    for name, (fwd, inv) in conv.items():
        y, x0 = in_units(fwd)
        assert _rel(inv(run(ae, y, x0)), ref) <= 1e-9, name
        lpn_gap[name] = _rel(inv(run(lpn, y, x0)), ref_lpn)
    print(f"{solver}: LPN relative change:", {k: f"{v:.3g}" for k, v in lpn_gap.items()})
    assert lpn_gap["u"] <= 1e-12
    assert max(lpn_gap.values()) > 1e-2  # measured: the LPN reconstruction depends on the units


def _mri_priors():
    """(AE-LPN, LPN) for complex images; the LPN is the shipped lpn-mri if there is one, else
    the trained 1-channel lpn-ct on the real and imaginary channels (also exactly a prox)."""
    if "aelpn-mri" in shipped_priors():
        ae = load_prior("aelpn-mri", dtype=D)
    else:  # the shipped MRI prior is trained separately; the property is architectural
        torch.manual_seed(0)
        ae = ConvLPN("aelpn", in_channels=2, width=4, levels=2, depth=1).double().eval()
    if "lpn-mri" in shipped_priors():
        lpn = load_prior("lpn-mri", dtype=D)
    else:
        lpn = ChannelwisePrior(load_prior("lpn-ct", dtype=D))
    return ComplexAsChannels(ae), ComplexAsChannels(lpn)


def test_mri_prox_kspace_scaling():
    """prox(s·v)/s = prox(v) for complex images (the image of s·k-space is s·image)."""
    ae, lpn = _mri_priors()
    g = torch.Generator().manual_seed(3)
    mag = torch.rand(1, 1, 24, 24, generator=g, dtype=D)
    phase = torch.rand(1, 1, 24, 24, generator=g, dtype=D)
    v = 1e-3 * mag * torch.exp(1j * phase)  # fastMRI-like magnitudes
    ref_ae, ref_lpn = ae.prox(v), lpn.prox(v)
    lpn_gap = {}
    for s in MRI_SCALES:
        assert _rel(ae.prox(s * v) / s, ref_ae) <= 1e-10, s
        lpn_gap[s] = _rel(lpn.prox(s * v) / s, ref_lpn)
    print("LPN prox relative change under k-space scaling:", lpn_gap)
    assert lpn_gap[1.0] == 0.0
    assert max(lpn_gap.values()) > 1e-2


@pytest.mark.parametrize("solver", ["pgd", "admm"])
def test_mri_kspace_scaling(solver):
    ae, lpn = _mri_priors()
    g = torch.Generator().manual_seed(2)
    a_mat = torch.randn(150, 144, generator=g, dtype=torch.complex128) / 12
    op = MatrixOperator(a_mat, 12, 12)
    x = 1e-3 * torch.randn(1, 1, 12, 12, generator=g, dtype=torch.complex128)
    y = op.forward(x)

    def run(prior, yy):
        x0 = op.adjoint(yy)
        if solver == "pgd":
            return pnp_pgd(op, yy, prior, iters=4, tol=0, x0=x0).x
        return pnp_admm(
            op, yy, prior, rho=0.5 * op.norm_sq(), iters=4, tol=0, x0=x0, cg_iters=5, cg_tol=0
        ).x

    ref, ref_lpn = run(ae, y), run(lpn, y)
    lpn_gap = {}
    for s in MRI_SCALES:
        assert _rel(run(ae, s * y) / s, ref) <= 1e-9, s
    for s in (1e-6, 1e3):  # the ends of the range are enough to measure the LPN's change
        lpn_gap[s] = _rel(run(lpn, s * y) / s, ref_lpn)
    print(f"{solver}: LPN relative change under k-space scaling:", lpn_gap)
    assert max(lpn_gap.values()) > 1e-2  # measured: the LPN reconstruction depends on the scale


def test_noise_input_prior_run_same_image_in_every_convention(tmp_path, hu_slice):
    """`recon`'s rule σ = prior_sigma_rel × range(x0) keeps a run with a prior that takes the
    noise level exactly equivariant: range(x0) scales with a and ignores b."""
    from priors.checkpoint import save_checkpoint
    from recon.pipeline import reconstruct

    torch.manual_seed(0)
    path = tmp_path / "ni.safetensors"
    save_checkpoint(path, ConvLPN(noise_input=True, local_mean_sigma=2.0, width=4, levels=1))
    small = hu_slice[..., ::4, ::4]
    g = torch.Generator().manual_seed(1)
    op = MatrixOperator(torch.randn(200, 256, generator=g, dtype=D) / 16, 16, 16)
    y_hu = op.forward(small) + 5.0 * torch.randn(1, 1, 200, 1, generator=g, dtype=D)
    x0_hu = op.adjoint(y_hu) / op.norm_sq()
    params = {"rho_rel": 0.3, "prior_sigma_rel": 0.1, "iters": 5, "tol": 0.0, "cg_tol": 0.0}
    ref = reconstruct(op, y_hu, x0_hu, "pnp-admm", str(path), params)
    rng = x0_hu.max() - x0_hu.min()
    assert ref.params["prior_sigma"] == pytest.approx(0.1 * float(rng))
    ones = op.forward(torch.ones_like(small))
    for name, (fwd, inv) in _conventions().items():
        a = float(fwd(torch.tensor(1.0, dtype=D)) - fwd(torch.tensor(0.0, dtype=D)))
        b = float(fwd(torch.tensor(0.0, dtype=D)))
        rec = reconstruct(op, a * y_hu + b * ones, fwd(x0_hu), "pnp-admm", str(path), params)
        assert _rel(inv(rec.x), ref.x) <= 1e-9, name
    other = reconstruct(op, y_hu, x0_hu, "pnp-admm", str(path), {**params, "prior_sigma_rel": 0.3})
    assert _rel(other.x, ref.x) > 1e-4  # σ is used
    # σ = max(C × the start image's noise estimate, S × its range): also exactly equivariant
    from priors.lpn import estimate_noise_level

    both = {**params, "prior_sigma_noise": 50.0}
    ref2 = reconstruct(op, y_hu, x0_hu, "pnp-admm", str(path), both)
    est = float(estimate_noise_level(x0_hu)[0])
    assert ref2.params["prior_sigma"] == pytest.approx(max(50.0 * est, 0.1 * float(rng)))
    assert ref2.params["noise_estimate"] == pytest.approx(est)
    for name, (fwd, inv) in _conventions().items():
        a, b = _scale(fwd), float(fwd(torch.tensor(0.0, dtype=D)))
        rec = reconstruct(op, a * y_hu + b * ones, fwd(x0_hu), "pnp-admm", str(path), both)
        assert _rel(inv(rec.x), ref2.x) <= 1e-9, name
    noise_only = {k: v for k, v in both.items() if k != "prior_sigma_rel"}
    rec = reconstruct(op, y_hu, x0_hu, "pnp-admm", str(path), noise_only)
    assert rec.params["prior_sigma"] == pytest.approx(50.0 * est)
    with pytest.raises(ValueError, match="takes the noise level"):
        reconstruct(op, y_hu, x0_hu, "pnp-admm", str(path), {"rho_rel": 0.3, "iters": 1})
    with pytest.raises(ValueError, match="does not take a noise level"):
        reconstruct(op, y_hu, x0_hu, "pnp-admm", "lpn-ct", {**params, "iters": 1})


def test_noise_estimate_of_a_complex_start_image_scales_with_it():
    """The σ rule's σ̂ for MRI (complex x₀): real and imaginary parts as channels, one σ for a
    batch (the largest), and σ̂(a·z) = a·σ̂(z) for a real a > 0."""
    from priors.lpn import estimate_noise_level
    from recon.pipeline import blind_noise_estimate

    g = torch.Generator().manual_seed(4)
    z = torch.complex(
        torch.randn(2, 1, 32, 32, generator=g), torch.randn(2, 1, 32, 32, generator=g)
    )
    z = z.to(torch.complex128) * torch.tensor([0.1, 0.3], dtype=D).view(2, 1, 1, 1)
    est = blind_noise_estimate(z)
    per_image = estimate_noise_level(torch.cat([z.real, z.imag], 1))
    assert est == pytest.approx(float(per_image.max())) and est == pytest.approx(0.3, rel=0.1)
    assert blind_noise_estimate(7.5 * z) == pytest.approx(7.5 * est, rel=1e-12)
