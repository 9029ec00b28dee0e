"""Every registered operator passes the same checks: exact adjoint (float32 and float64),
gradients through forward and adjoint (torch.autograd.gradcheck in float64), and a power-iteration
norm consistent with ||Ax|| ≤ ||A||·||x||."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

from operators import adjointness_gap, inner
from tests.cases import CASES

# Import every tests/cases_*.py so its @register calls run.
for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if mod.name.startswith("cases_"):
        importlib.import_module(f"tests.{mod.name}")

NAMES = sorted(CASES)


def _rand(shape, complex_, dtype, gen):
    if complex_:
        cd = torch.complex64 if dtype == torch.float32 else torch.complex128
        return torch.randn(shape, generator=gen, dtype=cd)
    return torch.randn(shape, generator=gen, dtype=dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-5)])
def test_adjointness(name, dtype, tol):
    op, batch = CASES[name](dtype)
    gen = torch.Generator().manual_seed(1)
    x = _rand((batch, *op.domain_shape), op.domain_complex, dtype, gen)
    y = _rand((batch, *op.range_shape), op.range_complex, dtype, gen)
    assert op.forward(x).shape == (batch, *op.range_shape)
    assert op.adjoint(y).shape == (batch, *op.domain_shape)
    assert adjointness_gap(op, x, y) <= tol


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_is_adjoint_of_forward(name, dtype):
    """``normal`` (which an operator may fuse) is AᴴA: equal to adjoint(forward(x)) to the
    round-off of the two evaluations (a few units of the dtype's eps per FFT or projection
    stage, far below 1e-4 in float32), and gradients flow through it as through the pair."""
    op, batch = CASES[name](dtype)
    gen = torch.Generator().manual_seed(3)
    x = _rand((batch, *op.domain_shape), op.domain_complex, dtype, gen)
    pair = op.adjoint(op.forward(x))
    fused = op.normal(x)
    assert fused.shape == pair.shape and fused.dtype == pair.dtype
    eps = torch.finfo(dtype).eps
    rel = torch.linalg.vector_norm(fused - pair) / torch.linalg.vector_norm(pair)
    assert rel <= 1e3 * eps
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(inner(op.normal(xg), x).sum(), xg)
    (g_pair,) = torch.autograd.grad(inner(op.adjoint(op.forward(xg)), x).sum(), xg)
    assert torch.linalg.vector_norm(g - g_pair) <= 1e3 * eps * torch.linalg.vector_norm(g_pair)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_through_forward_and_adjoint(name):
    """d/dx ½||Ax − y||² = Aᴴ(Ax − y), checked against autograd, and the same for Aᴴ."""
    op, batch = CASES[name](torch.float64)
    gen = torch.Generator().manual_seed(2)
    x = _rand((batch, *op.domain_shape), op.domain_complex, torch.float64, gen).requires_grad_()
    y = _rand((batch, *op.range_shape), op.range_complex, torch.float64, gen)
    loss = 0.5 * (op.forward(x) - y).abs().pow(2).sum()
    (g,) = torch.autograd.grad(loss, x)
    expected = op.adjoint(op.forward(x.detach()) - y)
    rel = torch.linalg.vector_norm(g - expected) / torch.linalg.vector_norm(expected)
    assert rel < 1e-5

    y2 = y.clone().requires_grad_()
    x2 = x.detach()
    loss2 = 0.5 * (op.adjoint(y2) - x2).abs().pow(2).sum()
    (g2,) = torch.autograd.grad(loss2, y2)
    expected2 = op.forward(op.adjoint(y) - x2)
    rel2 = torch.linalg.vector_norm(g2 - expected2) / torch.linalg.vector_norm(expected2)
    assert rel2 < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_norm_bounds_random_inputs(name):
    op, batch = CASES[name](torch.float32)
    nsq = op.norm_sq()
    assert nsq > 0
    gen = torch.Generator().manual_seed(3)
    x = _rand((4, *op.domain_shape), op.domain_complex, torch.float32, gen)
    ratio = inner(op.forward(x), op.forward(x)) / inner(x, x)
    assert float(ratio.max()) <= nsq * (1 + 1e-3)


def test_norm_matches_torch_vector_norm_on_real_complex_conjugated_and_strided():
    """``operators.norm`` (through the real view) is the Euclidean norm torch's complex
    ``vector_norm`` gives, for lazily conjugated and strided tensors too (float64 round-off)."""
    from operators import norm

    gen = torch.Generator().manual_seed(4)
    z = torch.randn((2, 3, 8, 6), generator=gen, dtype=torch.complex128)
    r = torch.randn((2, 3, 8, 6), generator=gen, dtype=torch.float64)
    for t in (z, z.conj(), z[:, :, ::2, 1:], z.transpose(-1, -2), r, r[..., ::3]):
        expected = torch.linalg.vector_norm(t)
        assert abs(float(norm(t)) - float(expected)) <= 1e-14 * float(expected)
    assert norm(z.to(torch.complex64)).dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_inputs_the_operator_cannot_apply_are_refused(name):
    """Every operator refuses, naming what is wrong, an integer tensor (it came back truncated),
    a complex tensor on a real side (the imaginary part was dropped) and a numpy array."""
    import numpy as np

    op, batch = CASES[name](torch.float32)
    sides = [(op.forward, op.domain_shape, op.domain_complex, "input")]
    sides.append((op.adjoint, op.range_shape, op.range_complex, "measurement|sinogram"))
    for apply, shape, complex_, what in sides:
        with pytest.raises(ValueError, match=f"({what}) has dtype torch.int32"):
            apply(torch.ones((batch, *shape), dtype=torch.int32))
        if not complex_:
            with pytest.raises(ValueError, match=f"({what}) is complex"):
                apply(torch.ones((batch, *shape), dtype=torch.complex64))
        with pytest.raises(ValueError, match="expected a torch tensor"):
            apply(np.ones((batch, *shape), np.float32))
