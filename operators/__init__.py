"""Forward models: CT (ASTRA) and MRI (SigPy) as torch linear operators with exact adjoints."""

from operators.base import (
    Adjoint,
    Composed,
    Identity,
    LinearOperator,
    Scaled,
    adjointness_gap,
    inner,
    norm,
)

__all__ = [
    "Adjoint",
    "Composed",
    "Identity",
    "LinearOperator",
    "Scaled",
    "adjointness_gap",
    "inner",
    "norm",
]
