"""Registry of operators run through the same generic tests (adjointness, autograd, norm).

Each modality's test module registers factories here via ``register``; a factory takes a
``torch.dtype`` (the real dtype: float32 or float64) and returns ``(op, batch_size)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from operators import Identity, LinearOperator

Factory = Callable[[torch.dtype], tuple[LinearOperator, int]]
CASES: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def deco(fn: Factory) -> Factory:
        CASES[name] = fn
        return fn

    return deco


@register("identity")
def _identity(dtype: torch.dtype):
    return Identity((1, 8, 8)), 2


@register("composed-scaled")
def _composed(dtype: torch.dtype):
    a = Identity((1, 8, 8))
    return (2.0 * a) @ a.H, 3
