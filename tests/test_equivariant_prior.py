"""Group-averaged and random-transform priors: exact group equivariance, prox property kept,
affine equivariance kept."""

from __future__ import annotations

import pytest
import torch

from priors.base import has_regularizer
from priors.classical import CenteredQuadraticPrior, TVPrior
from solvers import GroupAveragedPrior, RandomTransformPrior
from solvers.equivariant import group_elements, inverse, transform

D = torch.float64


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


class Shifty:
    """Not symmetric: its output is shifted one pixel to the right (a prior that 'moves' pixels)."""

    def prox(self, v):
        return 0.5 * v + 0.5 * torch.roll(v, 1, dims=-1)


class WeightedQuadratic:
    """prox of R(x) = ½Σ_p w_p x_p² with a non-symmetric weight map w: a true prox (of a convex
    R), linear, with Jacobian diag(1/(1 + w)), not invariant under flips/rotations."""

    def __init__(self, n: int) -> None:
        yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        self.w = (xx + 2.0 * yy * (xx > 1)).to(D) / n

    def prox(self, v):
        return v / (1.0 + self.w)


def _v(b=2, n=8, seed=0):
    return torch.randn(b, 1, n, n, generator=torch.Generator().manual_seed(seed), dtype=D)


def test_transforms_form_the_group():
    x = _v(1)
    for group, size in (("d4", 8), ("flips", 4)):
        els = group_elements(group)
        assert len(els) == size
        images = [transform(x, e) for e in els]
        for i, e in enumerate(els):
            assert torch.equal(inverse(images[i], e), x)
            for j in range(i):  # distinct elements
                assert not torch.equal(images[i], images[j])
    with pytest.raises(ValueError):
        group_elements("c17")


@pytest.mark.parametrize("group", ["d4", "flips"])
@pytest.mark.parametrize(
    "stand_in",
    [Shifty, lambda: WeightedQuadratic(8), lambda: TVPrior(0.3, iters=50, tol=0.0)],
    ids=["shifty", "weighted-quadratic", "tv"],
)
def test_group_average_is_exactly_equivariant(group, stand_in):
    base = stand_in()
    avg = GroupAveragedPrior(base, group)
    v = _v()
    out = avg.prox(v)
    worst_base = 0.0
    for e in group_elements(group):
        tv_ = transform(v, e)
        assert _rel(avg.prox(tv_), transform(out, e)) <= 1e-14
        worst_base = max(worst_base, _rel(base.prox(tv_), transform(base.prox(v), e)))
    print(f"{group}: the stand-in alone is off by up to {worst_base:.1e}")
    assert worst_base > 1e-3  # so the test is meaningful: the base prior is not equivariant


def test_group_average_of_a_prox_is_a_prox_of_a_convex_function():
    """Jacobian of the averaged linear map: symmetric with eigenvalues in [0, 1] — the gradient of
    a convex, 1-smooth potential, i.e. the prox of a convex function (Moreau)."""
    n = 6
    avg = GroupAveragedPrior(WeightedQuadratic(n))
    eye = torch.eye(n * n, dtype=D).reshape(n * n, 1, n, n)
    jac = avg.prox(eye).reshape(n * n, n * n).T
    assert torch.allclose(jac, jac.T, atol=1e-15)
    ev = torch.linalg.eigvalsh(jac)
    assert float(ev.min()) >= 0.0 and float(ev.max()) <= 1.0 + 1e-15


@pytest.mark.parametrize("a,b", [(1e-3, -1000.0), (7.5, 3.0), (1e3, 3.0)])
def test_affine_equivariance_is_kept(a, b):
    v = _v()
    for prior in (
        GroupAveragedPrior(CenteredQuadraticPrior(0.6)),
        RandomTransformPrior(CenteredQuadraticPrior(0.6), seed=1),
    ):
        if isinstance(prior, RandomTransformPrior):
            out = prior.prox(v)
            e = prior.last_element
            prior.gen.manual_seed(1)  # same draw again
            prior.prox(v)
            assert prior.last_element == e
            prior.gen.manual_seed(1)
            assert _rel(prior.prox(a * v + b), a * out + b) <= 1e-12
        else:
            assert _rel(prior.prox(a * v + b), a * prior.prox(v) + b) <= 1e-12


def test_random_transform_prior_is_seeded_and_not_a_fixed_map():
    v = _v()
    r1, r2 = RandomTransformPrior(Shifty(), seed=3), RandomTransformPrior(Shifty(), seed=3)
    outs1 = [r1.prox(v) for _ in range(12)]
    outs2 = [r2.prox(v) for _ in range(12)]
    assert all(torch.equal(a, b) for a, b in zip(outs1, outs2, strict=True))  # reproducible
    assert any(not torch.equal(outs1[0], o) for o in outs1[1:])  # varies between calls
    candidates = [inverse(Shifty().prox(transform(v, e)), e) for e in group_elements("d4")]
    for o in outs1:
        assert any(torch.equal(o, c) for c in candidates)


def test_no_regularizer_exposed_and_shape_checks():
    assert not has_regularizer(GroupAveragedPrior(TVPrior(0.1)))
    assert not has_regularizer(RandomTransformPrior(TVPrior(0.1)))
    rect = torch.zeros(1, 1, 6, 8, dtype=D)
    with pytest.raises(ValueError, match="square"):
        GroupAveragedPrior(Shifty()).prox(rect)
    assert GroupAveragedPrior(Shifty(), "flips").prox(rect).shape == rect.shape
    z = torch.complex(_v(1), _v(1, seed=2))
    out = GroupAveragedPrior(CenteredQuadraticPrior(0.5)).prox(z)
    assert out.is_complex() and _rel(out, CenteredQuadraticPrior(0.5).prox(z)) <= 1e-14
