"""Batched conjugate gradients: dense agreement, per-item steps, warm start, invariance."""

from __future__ import annotations

import pytest
import torch

from operators.dense import MatrixOperator
from solvers import conjugate_gradient

D = torch.float64


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _normal(op, rho):
    """v -> (AᴴA + ρI) v, the system PnP-ADMM's x-update solves."""
    return lambda v: op.normal(v) + rho * v


def _op(complex_: bool, m=80, h=6, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    dt = torch.complex128 if complex_ else D
    return MatrixOperator(torch.randn(m, h * w, generator=g, dtype=dt) / m**0.5, h, w), g, dt


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_cg_matches_dense_solve(complex_):
    op, g, dt = _op(complex_)
    rho = 0.5
    b = torch.randn(3, 1, 6, 6, generator=g, dtype=dt)
    x, k = conjugate_gradient(_normal(op, rho), b, iters=200, tol=1e-12)
    dense = torch.linalg.solve(op.dense_normal(1.0, rho), b.reshape(3, -1).T).T.reshape(b.shape)
    assert _rel(x, dense) <= 1e-10
    assert k <= 36 + 5  # n = 36 unknowns: CG terminates in about n steps in exact arithmetic


def test_per_item_step_sizes_solve_independent_systems():
    """Items with different scales and diagonal systems are solved as if alone."""
    g = torch.Generator().manual_seed(1)
    diag = torch.rand(2, 1, 5, 5, generator=g, dtype=D) + 0.1
    diag[1] *= 1e4  # very different conditioning and scale in item 1
    b = torch.randn(2, 1, 5, 5, generator=g, dtype=D)
    b[1] *= 1e-3
    x, _ = conjugate_gradient(lambda v: diag * v, b, iters=100, tol=1e-13)
    assert _rel(x, b / diag) <= 1e-10
    for i in range(2):
        xi, _ = conjugate_gradient(
            lambda v, i=i: diag[i : i + 1] * v, b[i : i + 1], iters=100, tol=1e-13
        )
        assert _rel(x[i : i + 1], xi) <= 1e-10


def test_warm_start_reduces_iterations():
    op, g, dt = _op(False)
    rho = 0.05
    mv = _normal(op, rho)

    b = torch.randn(1, 1, 6, 6, generator=g, dtype=D)
    exact = torch.linalg.solve(op.dense_normal(1.0, rho), b.reshape(-1)).reshape(b.shape)
    _, k_cold = conjugate_gradient(mv, b, iters=200, tol=1e-10)
    x_warm, k_warm = conjugate_gradient(
        mv, b, x0=exact + 1e-6 * torch.randn(b.shape, generator=g, dtype=D), iters=200, tol=1e-10
    )
    print(f"CG iterations to 1e-10: cold {k_cold}, warm {k_warm}")
    assert k_warm < k_cold
    assert _rel(x_warm, exact) <= 1e-8
    x_done, k_done = conjugate_gradient(mv, b, x0=exact, iters=200, tol=1e-10)
    assert k_done == 0 and torch.equal(x_done, exact)


def test_iterates_are_affine_invariant_with_the_initial_residual_rule():
    """b' = a·b + M c, x0' = a·x0 + c -> x' = a·x + c, with the same number of iterations."""
    op, g, dt = _op(False)
    rho = 0.3
    mv = _normal(op, rho)

    b = torch.randn(1, 1, 6, 6, generator=g, dtype=D)
    x0 = torch.randn(1, 1, 6, 6, generator=g, dtype=D)
    c = torch.full_like(x0, -1000.0)
    a = 7.5
    x1, k1 = conjugate_gradient(mv, b, x0, iters=50, tol=1e-2, relative_to="initial")
    x2, k2 = conjugate_gradient(mv, a * b + mv(c), a * x0 + c, 50, 1e-2, relative_to="initial")
    assert k1 == k2 and 0 < k1 < 50
    assert _rel(x2, a * x1 + c) <= 1e-12
    with pytest.raises(ValueError):
        conjugate_gradient(mv, b, relative_to="bogus")


def test_zero_rhs_and_float32():
    z = torch.zeros(2, 1, 4, 4)
    x, k = conjugate_gradient(lambda v: 2 * v, z)
    assert k == 0 and torch.equal(x, z)
    b = torch.randn(2, 1, 4, 4)
    x, _ = conjugate_gradient(lambda v: 2 * v, b, iters=5, tol=1e-6)
    assert x.dtype == torch.float32 and _rel(x, b / 2) <= 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cg_on_cuda():
    b = torch.randn(2, 1, 8, 8, device="cuda")
    x, _ = conjugate_gradient(lambda v: 3 * v, b, iters=5)
    assert x.device == b.device and _rel(x, b / 3) <= 1e-5


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_cg_carries_m_x_between_solves(complex_):
    """return_mx gives M x from the residual (to float64 round-off of the recursion), and a
    solve started from that M x (mx0) takes the same steps as one that recomputes it."""
    op, g, dt = _op(complex_)
    rho = 0.3
    mv = _normal(op, rho)

    b1 = torch.randn(2, 1, 6, 6, generator=g, dtype=dt)
    b2 = torch.randn(2, 1, 6, 6, generator=g, dtype=dt)
    x1, _, mx1 = conjugate_gradient(mv, b1, iters=4, tol=0.0, return_mx=True)
    assert _rel(mx1, mv(x1)) <= 1e-12
    x2, k2 = conjugate_gradient(mv, b2, x1, iters=4, tol=0.0, relative_to="initial")
    x3, k3, mx3 = conjugate_gradient(
        mv, b2, x1, iters=4, tol=0.0, relative_to="initial", mx0=mx1, return_mx=True
    )
    assert k2 == k3 == 4
    assert _rel(x3, x2) <= 1e-12 and _rel(mx3, mv(x3)) <= 1e-12


def _jacobi(op, rho):
    """P = diag(AᴴA + ρI)⁻¹ for a dense operator: symmetric positive definite."""
    d = torch.diagonal(op.dense_normal(1.0, rho)).real
    return lambda v: v / d.reshape(v.shape[1:]).to(v.dtype)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_preconditioned_cg_solves_the_same_system(complex_):
    op, g, dt = _op(complex_)
    rho = 0.5
    b = torch.randn(3, 1, 6, 6, generator=g, dtype=dt)
    x, _ = conjugate_gradient(_normal(op, rho), b, iters=200, tol=1e-12, precond=_jacobi(op, rho))
    dense = torch.linalg.solve(op.dense_normal(1.0, rho), b.reshape(3, -1).T).T.reshape(b.shape)
    assert _rel(x, dense) <= 1e-10


def test_preconditioned_cg_is_affine_invariant_and_carries_m_x():
    """A linear P keeps x' = a·x + c (same iterations), and return_mx is still M x."""
    op, g, dt = _op(False)
    rho = 0.3
    mv, pc = _normal(op, rho), _jacobi(op, rho)
    b = torch.randn(1, 1, 6, 6, generator=g, dtype=D)
    x0 = torch.randn(1, 1, 6, 6, generator=g, dtype=D)
    c, a = torch.full_like(x0, -1000.0), 7.5
    x1, k1, mx1 = conjugate_gradient(mv, b, x0, 50, 1e-2, relative_to="initial", precond=pc,
                                     return_mx=True)  # fmt: skip
    x2, k2 = conjugate_gradient(mv, a * b + mv(c), a * x0 + c, 50, 1e-2, relative_to="initial",
                                precond=pc)  # fmt: skip
    assert k1 == k2 and 0 < k1 < 50
    assert _rel(x2, a * x1 + c) <= 1e-12
    assert _rel(mx1, mv(x1)) <= 1e-12
