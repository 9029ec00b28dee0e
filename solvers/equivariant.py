"""Equivariant PnP: making a prior's prox equivariant to flips and 90° rotations.

``GroupAveragedPrior``: prox_G(v) = (1/|G|) Σ_{T∈G} T⁻¹ prox(T v) over the dihedral group D4
(8 flips/rotations, square images) or the 4 flips. If prox = ∇ψ with ψ convex, then
T⁻¹∇ψ(Tv) = ∇(ψ∘T)(v) for an isometry T, so the average is ∇ of the convex potential
(1/|G|) Σ ψ∘T: it is again exactly a proximal operator (of some R), and x -> a·x + b
equivariance is kept because every T is linear and fixes constant images.
``RandomTransformPrior`` (Terris et al.): one random T per call, T⁻¹ prox(T v). Cheaper, but not a
fixed operator, so no objective is defined and no regularizer is exposed.
"""

from __future__ import annotations

import torch

__all__ = ["GroupAveragedPrior", "RandomTransformPrior", "group_elements"]


def group_elements(group: str = "d4") -> list[tuple[int, bool]]:
    """(k rotations by 90°, horizontal flip first?) pairs."""
    if group == "d4":
        return [(k, f) for f in (False, True) for k in range(4)]
    if group == "flips":
        return [(0, False), (0, True), (2, False), (2, True)]
    raise ValueError(f"unknown group {group!r} (d4, flips)")


def _apply(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1))


def _invert(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1))
    return x.flip(-1) if flip else x


class GroupAveragedPrior:
    def __init__(self, prior, group: str = "d4") -> None:
        self.prior, self.elements = prior, group_elements(group)

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        if any(k % 2 for k, _ in self.elements) and v.shape[-1] != v.shape[-2]:
            raise ValueError(f"90° rotations need square images, got {tuple(v.shape[-2:])}")
        out = torch.zeros_like(v)
        for k, f in self.elements:
            out = out + _invert(self.prior.prox(_apply(v, k, f)), k, f)
        return out / len(self.elements)


class RandomTransformPrior:
    def __init__(self, prior, group: str = "d4", seed: int = 0) -> None:
        self.prior, self.elements = prior, group_elements(group)
        self.gen = torch.Generator().manual_seed(seed)

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        i = int(torch.randint(len(self.elements), (1,), generator=self.gen))
        k, f = self.elements[i]
        return _invert(self.prior.prox(_apply(v, k, f)), k, f)
