"""Forward models: CT (ASTRA) and MRI (SigPy) as torch linear operators with exact adjoints."""

from operators.base import (
    Adjoint,
    Composed,
    Diagonal,
    Identity,
    LinearOperator,
    Scaled,
    Stacked,
    adjointness_gap,
    inner,
    norm,
)

__all__ = [
    "Adjoint",
    "Composed",
    "Diagonal",
    "Identity",
    "LinearOperator",
    "Scaled",
    "Stacked",
    "adjointness_gap",
    "inner",
    "norm",
]
