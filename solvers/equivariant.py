"""Making a prior's prox equivariant to flips and 90° rotations.

Group G: 'd4' — the 8 symmetries of the square (4 rotations by 90°, each with or without a
horizontal flip; square images only), or 'flips' — identity, horizontal flip, vertical flip and
rotation by 180° (any H×W). Each T ∈ G is a permutation of pixels, hence a linear isometry
(T⁻¹ = Tᵀ) that maps constant images to themselves.

``GroupAveragedPrior``: prox_G(v) = (1/|G|) Σ_{T∈G} T⁻¹ prox(T v).

What is guaranteed:

* G-equivariance, exactly: prox_G(S v) = S prox_G(v) for every S ∈ G (re-indexing the sum).
* It is again a proximal operator when prox is one. If prox = ∇ψ with ψ convex (by Moreau, and
  Gribonval & Nikolova 2020, this characterizes the proxes of possibly non-convex functions, and
  is what an LPN is by construction), then T⁻¹∇ψ(T v) = ∇(ψ∘T)(v), so
  prox_G = ∇ψ_G with ψ_G = (1/|G|) Σ ψ∘T convex: prox_G is the prox of some function R_G.
  If moreover prox is the prox of a convex R (i.e. ∇ψ is also 1-Lipschitz), the average is
  1-Lipschitz as well, so R_G is convex.
* Affine equivariance is kept: every T is linear and fixes constants, so if
  prox(a·v + b·1) = a·prox(v) + b·1 then the same holds for prox_G.

Not available: R_G itself. It is defined through ψ_G (R_G = ψ_G* − ½||·||² up to a constant),
not as an average of R∘T, so no closed form exists and no ``regularizer`` is exposed (the
solvers then monitor the data term only). Cost: |G| prox evaluations per call.

``RandomTransformPrior`` (Terris et al., equivariant PnP): T⁻¹ prox(T v) with one T drawn at
random per call (seeded). Costs one prox evaluation, and is G-equivariant only in expectation;
it is *not* a fixed operator (two calls on the same v may differ), so it is not the prox of any
one function: no objective is defined and no ``regularizer`` is exposed.
"""

from __future__ import annotations

import torch

from priors.base import Prior, PriorWrapper

__all__ = ["GroupAveragedPrior", "RandomTransformPrior", "group_elements", "transform", "inverse"]

Element = tuple[int, bool]  # (number of 90° rotations, horizontal flip applied first?)


def group_elements(group: str = "d4") -> list[Element]:
    """The elements of 'd4' (8) or 'flips' (4) as (rotations by 90°, flip first?) pairs."""
    if group == "d4":
        return [(k, f) for f in (False, True) for k in range(4)]
    if group == "flips":
        return [(0, False), (0, True), (2, False), (2, True)]
    raise ValueError(f"unknown group {group!r}: use 'd4' or 'flips'")


def transform(x: torch.Tensor, element: Element) -> torch.Tensor:
    """T x on the last two axes: optional horizontal flip, then k rotations by 90°."""
    k, flip = element
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1)) if k % 4 else x


def inverse(x: torch.Tensor, element: Element) -> torch.Tensor:
    """T⁻¹ x (undo the rotations, then the flip)."""
    k, flip = element
    if k % 4:
        x = torch.rot90(x, -k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def _check_square(v: torch.Tensor, elements: list[Element]) -> None:
    if any(k % 2 for k, _ in elements) and v.shape[-1] != v.shape[-2]:
        raise ValueError(
            f"90° rotations need square images, got {tuple(v.shape[-2:])}: use group='flips'"
        )


class GroupAveragedPrior(PriorWrapper):
    """prox_G(v) = (1/|G|) Σ_T T⁻¹ prox(T v); v (B, C, H, W), real or complex.

    Exactly G-equivariant, a prox whenever ``prior.prox`` is one, affine-equivariant whenever
    ``prior.prox`` is (see the module docstring). Exposes no ``regularizer``.
    """

    def __init__(self, prior: Prior, group: str = "d4") -> None:
        self.prior, self.group, self.elements = prior, group, group_elements(group)

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        _check_square(v, self.elements)
        out = None
        for e in self.elements:
            term = inverse(self.prior.prox(transform(v, e)), e)
            out = term if out is None else out + term
        return out / len(self.elements)

    def __repr__(self) -> str:
        return f"GroupAveragedPrior({self.prior!r}, group={self.group!r})"


class RandomTransformPrior(PriorWrapper):
    """T⁻¹ prox(T v) with T drawn uniformly from the group at every call (seeded generator).

    Not a fixed operator: successive calls on the same input may differ. Exposes no
    ``regularizer``. ``last_element`` holds the transform used by the latest call.
    """

    def __init__(self, prior: Prior, seed: int = 0, group: str = "d4") -> None:
        self.prior, self.group, self.elements = prior, group, group_elements(group)
        self.seed = int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.last_element: Element | None = None

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        _check_square(v, self.elements)
        i = int(torch.randint(len(self.elements), (1,), generator=self.gen))
        e = self.elements[i]
        self.last_element = e
        return inverse(self.prior.prox(transform(v, e)), e)

    def __repr__(self) -> str:
        return f"RandomTransformPrior({self.prior!r}, seed={self.seed}, group={self.group!r})"
