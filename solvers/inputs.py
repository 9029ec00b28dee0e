"""What the solvers accept as a prior and a start, checked once with errors that say what to do.

A prior is anything with ``prox(v)``; a plain callable denoiser ``D(v)`` (a function, a
forward-only ``torch.nn.Module``, a DeepInverse-style denoiser bound to its σ) is taken as the
prox itself through ``CallableDenoiser``. PnP converges when D is the prox of a convex function
(firmly nonexpansive); nothing here checks that (``recon prior check`` measures it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from operators.base import LinearOperator
from priors.base import Prior

__all__ = [
    "CallableDenoiser",
    "as_prior",
    "check_positive",
    "check_start",
    "check_prox_output",
]


class CallableDenoiser:
    """prox(v) = fn(v) for a denoiser given as a plain callable (no regularizer: the monitor
    then reports no objective)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        return self.fn(v)

    def __repr__(self) -> str:
        return f"CallableDenoiser({self.fn!r})"


def as_prior(prior: object) -> Prior:
    """``prior`` itself when it has ``prox``, a ``CallableDenoiser`` around a callable, else a
    ValueError naming what was given."""
    if callable(getattr(prior, "prox", None)):
        return prior  # type: ignore[return-value]
    if callable(prior):
        return CallableDenoiser(prior)  # type: ignore[arg-type]
    raise ValueError(
        f"prior: expected an object with prox(v) or a callable denoiser v -> x, got "
        f"{type(prior).__name__}"
    )


def check_positive(**values: object) -> None:
    """ValueError naming the first of ``values`` (name=value) that is not a finite real number
    > 0: NaN passes a test like ``rho <= 0`` (every comparison with NaN is False)."""
    for name, v in values.items():
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            f = math.nan
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def check_start(op: LinearOperator, y: torch.Tensor, x0: torch.Tensor | None) -> None:
    """ValueError unless ``y`` is a tensor (B, *op.range_shape) and ``x0`` (when given) a
    tensor (B, *op.domain_shape) with the same B."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(
            f"y: expected a torch tensor (B, {', '.join(map(str, op.range_shape))}), got "
            f"{type(y).__name__} (torch.from_numpy(...) for a numpy array)"
        )
    if x0 is None:
        return
    want = (y.shape[0], *op.domain_shape)
    if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != want:
        got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0: expected shape {want} (y's batch, the operator's domain), got {got}")


def check_prox_output(out: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``out`` when the prior returned a tensor of ``v``'s shape, else a ValueError."""
    if not isinstance(out, torch.Tensor) or out.shape != v.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"prior.prox returned {got} for an input of shape {tuple(v.shape)}; a prox maps an "
            "image to an image of the same shape"
        )
    return out
