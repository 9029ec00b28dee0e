"""The prior interface the solvers use.

A prior is an object with ``prox(v)``: a (possibly learned) proximal operator

    prox_R(v) = argmin_x  R(x) + ½||x − v||²,        v, x: (B, C, H, W) real tensors,

where R already contains the prior's own strength (a TV weight, or whatever a learned network
encodes). ``prox`` deliberately takes no step size: a learned proximal network is the prox of one
fixed R and cannot honour an arbitrary step, so instead of silently ignoring one, the solvers put
the balance into the data term (PnP-PGD minimizes γ·D + R, PnP-ADMM minimizes D/ρ + R).

Priors that can evaluate their regularizer (the LPN family, TV) also provide
``regularizer(x) -> (B,)`` so a solver can monitor the true objective.

``ComplexAsChannels`` is the single place where complex MRI images (B, 1, H, W) complex are
carried to a prior as two real channels (B, 2, H, W) and back.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Prior", "ProxPrior", "PriorWrapper", "ComplexAsChannels", "has_regularizer"]


@runtime_checkable
class Prior(Protocol):
    """Anything with a proximal operator on (B, C, H, W) tensors."""

    def prox(self, v: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ProxPrior(Prior, Protocol):
    """A prior that can also evaluate its regularizer R(x), shape (B,)."""

    def regularizer(self, x: torch.Tensor) -> torch.Tensor: ...


def has_regularizer(prior: object) -> bool:
    """True if the prior can evaluate R(x) (so an objective can be monitored)."""
    return callable(getattr(prior, "regularizer", None))


def has_free_regularizer(prior: object) -> bool:
    """True if the prior returns R at its own output with the prox (``prox_and_regularizer``):
    the objective can then be watched at every iteration at no extra cost."""
    return callable(getattr(prior, "prox_and_regularizer", None))


class PriorWrapper:
    """A prior built around another one (``self.prior``): its ``noise_level`` is the wrapped
    prior's, read *and written* through, so ``wrapper.noise_level = σ`` tells the model inside
    (as ``priors.lpn.set_noise_level`` does)."""

    prior: Prior

    @property
    def noise_level(self):
        return getattr(self.prior, "noise_level", None)

    @noise_level.setter
    def noise_level(self, sigma) -> None:
        self.prior.noise_level = sigma


class ComplexAsChannels(PriorWrapper):
    """Wrap a real 2-channel prior so it takes complex images (B, 1, H, W).

    prox(v) = c(p(r(v))) with r: complex -> (real, imag) channels and c its inverse. r is an
    isometry from Cⁿ (as R²ⁿ) onto R²ⁿ, so the wrapped map is again exactly a prox (of R∘r), and
    equivariance to x -> a·x + b (a > 0 real, b real) is preserved; R(x) = R_real(r(x)).
    """

    def __init__(self, prior: Prior) -> None:
        self.prior = prior

    @staticmethod
    def to_channels(x: torch.Tensor) -> torch.Tensor:
        if not x.is_complex() or x.shape[1] != 1:
            raise ValueError(
                f"expected a complex tensor (B, 1, H, W), got {x.dtype} {tuple(x.shape)}"
            )
        return torch.view_as_real(x[:, 0]).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def from_channels(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 2:
            raise ValueError(f"expected 2 channels (real, imag), got {tuple(x.shape)}")
        return torch.complex(x[:, 0], x[:, 1]).unsqueeze(1)

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        return self.from_channels(self.prior.prox(self.to_channels(v)))

    def regularizer(self, x: torch.Tensor) -> torch.Tensor:
        return self.prior.regularizer(self.to_channels(x))

    def prox_and_regularizer(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, r = self.prior.prox_and_regularizer(self.to_channels(v))
        return self.from_channels(x), r

    def __getattr__(self, name: str):
        if name == "prior":  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.prior, name)
