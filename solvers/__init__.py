"""Plug-and-play solvers (PnP-PGD, PnP-ADMM) with convergence monitoring."""

from solvers.admm import pnp_admm
from solvers.cg import conjugate_gradient
from solvers.equivariant import GroupAveragedPrior, RandomTransformPrior
from solvers.monitor import Monitor
from solvers.pgd import pnp_pgd
from solvers.result import SolverResult

__all__ = [
    "GroupAveragedPrior",
    "Monitor",
    "RandomTransformPrior",
    "SolverResult",
    "conjugate_gradient",
    "pnp_admm",
    "pnp_pgd",
]
