"""Solvers against known answers, exact affine equivariance, divergence handling, monitoring."""

from __future__ import annotations

import json

import pytest
import torch

from operators.ct import CTOperator
from priors.classical import CenteredQuadraticPrior, QuadraticPrior, TVPrior
from solvers import GroupAveragedPrior, conjugate_gradient, pnp_admm, pnp_pgd
from tests.matrix_op import MatrixOperator

D = torch.float64


def _problem(seed=0, m=40, h=6, w=7, complex_=False):
    g = torch.Generator().manual_seed(seed)
    dt = torch.complex128 if complex_ else D
    a = torch.randn(m, h * w, generator=g, dtype=dt) / m**0.5
    op = MatrixOperator(a, h, w)
    x = torch.randn(1, 1, h, w, generator=g, dtype=dt)
    y = op.forward(x) + 0.01 * torch.randn(op.forward(x).shape, generator=g, dtype=dt)
    return op, y


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _direct_quadratic(op, y, lam, weight_d, mu):
    """argmin weight_d·(λ/2)||Ax − y||² + (μ/2)||x||²: (wλAᴴA + μI) x = wλAᴴy."""
    a = op.A
    n = a.shape[1]
    m = weight_d * lam * (a.conj().T @ a) + mu * torch.eye(n, dtype=a.dtype)
    rhs = weight_d * lam * (a.conj().T @ y.reshape(-1).to(a.dtype))
    return torch.linalg.solve(m, rhs).reshape(1, *op.domain_shape)


@pytest.mark.parametrize("complex_", [False, True])
def test_quadratic_prior_pgd_and_admm_reach_the_direct_solution(complex_):
    op, y = _problem(complex_=complex_)
    mu, lam = 0.3, 2.0
    prior = QuadraticPrior(mu)
    step = 0.9 / (lam * op.norm_sq())
    r = pnp_pgd(op, y, prior, lam=lam, step=step, iters=3000, tol=1e-13)
    assert _rel(r.x, _direct_quadratic(op, y, lam, step, mu)) <= 1e-4
    fista = pnp_pgd(op, y, prior, lam=lam, step=step, iters=3000, tol=1e-13, accelerated=True)
    assert _rel(fista.x, _direct_quadratic(op, y, lam, step, mu)) <= 1e-4
    assert fista.iterations < r.iterations
    rho = 1.5
    r2 = pnp_admm(op, y, prior, lam=lam, rho=rho, iters=3000, tol=1e-13, cg_iters=200, cg_tol=1e-14)
    assert _rel(r2.x, _direct_quadratic(op, y, lam, 1 / rho, mu)) <= 1e-4


def test_tv_pgd_and_admm_agree_with_long_reference_run():
    """Both solve min D/ρ + w·TV (PGD with γ = 1/ρ); a long FISTA run is the reference."""
    op = CTOperator(image_size=24, views=16)
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 1, 24, 24, dtype=D)
    x[..., 6:18, 8:16] = 1.0
    y = op.forward(x) + 0.05 * torch.randn(op.forward(x).shape, generator=g, dtype=D)
    lam = 1.0 / op.norm_sq()
    gamma = 0.9 / (lam * op.norm_sq())
    prior = TVPrior(0.05, iters=200, tol=1e-10)
    ref = pnp_pgd(op, y, prior, lam=lam, step=gamma, iters=600, tol=1e-11, accelerated=True).x
    pgd = pnp_pgd(op, y, prior, lam=lam, step=gamma, iters=200, tol=1e-8).x
    admm = pnp_admm(op, y, prior, lam=lam, rho=1 / gamma, iters=200, tol=1e-8, cg_iters=30).x
    print("TV rel. to reference: PGD", _rel(pgd, ref), "ADMM", _rel(admm, ref))
    # measured: PGD 6.3e-4, ADMM 7.5e-4 relative to the reference; bounds with margin
    assert _rel(pgd, ref) <= 2e-3
    assert _rel(admm, ref) <= 5e-3


@pytest.mark.parametrize("solver", ["pgd", "fista", "admm-cg", "admm-closed"])
@pytest.mark.parametrize("a,b", [(1e-3, -1000.0), (7.5, 3.0), (1e3, 3.0)])
def test_whole_solver_exactly_affine_equivariant(solver, a, b):
    from operators.base import Identity

    op = Identity((1, 8, 8)) if solver == "admm-closed" else _problem(m=60, h=8, w=8)[0]
    g = torch.Generator().manual_seed(5)
    y = op.forward(torch.randn(1, 1, 8, 8, generator=g, dtype=D))
    x0 = torch.randn(1, 1, 8, 8, generator=g, dtype=D)
    ones = torch.ones_like(x0)
    y2 = a * y + b * op.forward(ones)
    prior = CenteredQuadraticPrior(0.7)
    its1, its2 = [], []

    def run(yy, xx, store):
        kw = dict(iters=15, tol=0.0, x0=xx, callback=lambda k, x: store.append(x.clone()))
        if solver in ("pgd", "fista"):
            return pnp_pgd(op, yy, prior, step=0.5, accelerated=solver == "fista", **kw)
        return pnp_admm(op, yy, prior, rho=0.8, cg_iters=5, cg_tol=0.0, **kw)

    run(y, x0, its1)
    run(y2, a * x0 + b, its2)
    assert len(its1) == len(its2) == 15
    worst = max(_rel(x2, a * x1 + b) for x1, x2 in zip(its1, its2, strict=True))
    assert worst <= 1e-9


def test_divergence_detected_and_last_good_iterate_returned():
    op, y = _problem()
    absurd = 1000.0 / op.norm_sq()
    r = pnp_pgd(op, y, QuadraticPrior(0.0), step=absurd, iters=200, tol=0)
    assert r.stop_reason.startswith("diverged")
    assert not r.converged
    assert bool(torch.isfinite(r.x).all())
    assert r.iterations < 200


@pytest.mark.parametrize("prior", [QuadraticPrior(0.5), TVPrior(0.02, iters=200, tol=1e-10)])
def test_monitored_objective_decreases_along_pgd(prior):
    op, y = _problem(m=50, h=8, w=8)
    r = pnp_pgd(op, y, prior, iters=30, tol=0, objective_every=1)
    obj = [v for v in r.history["objective"] if v is not None]
    assert len(obj) == 30
    increases = sum(b > a * (1 + 1e-9) + 1e-12 for a, b in zip(obj, obj[1:], strict=False))
    assert increases == 0
    json.dumps(r.history)  # plain data


def test_history_has_reference_metrics_and_is_json():
    op, y = _problem(m=60, h=8, w=8)
    ref = torch.zeros(1, 1, 8, 8, dtype=D)
    r = pnp_admm(op, y, QuadraticPrior(0.1), iters=5, tol=0, reference=ref + 1, data_range=1.0)
    assert all(v is not None for v in r.history["psnr"])
    assert r.history["primal_residual"][0] is not None
    assert json.loads(r.to_json())["iterations"] == 5


def test_cg_matches_dense_solve_and_warm_start_helps():
    op, y = _problem(m=80, h=6, w=6)
    rho = 0.5

    def mv(v):
        return op.normal(v) + rho * v

    b = op.adjoint(y)
    x, k = conjugate_gradient(mv, b, iters=200, tol=1e-12)
    dense = _direct_quadratic(op, y, 1.0, 1.0, rho)
    assert _rel(x, dense) <= 1e-8
    _, k_warm = conjugate_gradient(
        mv, b, x0=dense + 1e-6 * torch.randn_like(dense), iters=200, tol=1e-12
    )
    assert k_warm < k


def test_group_averaged_prior_is_group_equivariant_and_keeps_affine_equivariance():
    class Shifty:  # a prox that prefers a direction (not rotation-invariant)
        def prox(self, v):
            return 0.5 * v + 0.5 * torch.roll(v, 1, dims=-1)

    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 1, 8, 8, generator=g, dtype=D)
    avg = GroupAveragedPrior(Shifty())
    rot = torch.rot90(v, 1, dims=(-2, -1))
    assert _rel(avg.prox(rot), torch.rot90(avg.prox(v), 1, dims=(-2, -1))) <= 1e-12
    assert _rel(Shifty().prox(rot), torch.rot90(Shifty().prox(v), 1, dims=(-2, -1))) > 1e-2
    cq = GroupAveragedPrior(CenteredQuadraticPrior(0.4))
    assert _rel(cq.prox(3 * v - 2), 3 * cq.prox(v) - 2) <= 1e-12
