"""Plug-and-play solvers (PnP-PGD/FISTA, PnP-ADMM) with convergence monitoring.

Uses only the operator and prior interfaces (``operators.base``, ``priors.base``).
"""

from solvers.admm import pnp_admm
from solvers.cg import conjugate_gradient
from solvers.equivariant import GroupAveragedPrior, RandomTransformPrior
from solvers.monitor import Monitor, plot_history
from solvers.pgd import pnp_pgd
from solvers.result import SolverResult

__all__ = [
    "GroupAveragedPrior",
    "Monitor",
    "RandomTransformPrior",
    "SolverResult",
    "conjugate_gradient",
    "plot_history",
    "pnp_admm",
    "pnp_pgd",
]
