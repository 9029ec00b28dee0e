"""Priors: AE-LPN, its ablations, classical TV, training and checkpoints.

``load_prior(name_or_path)`` gives a shipped prior by name (``aelpn-ct``, ``lpn-ct``, ...; see
``shipped_priors()``), ``tv`` / ``tv:WEIGHT``, or a checkpoint file.
"""

from priors.base import ComplexAsChannels, Prior, ProxPrior, has_regularizer
from priors.checkpoint import CheckpointError, load_prior, shipped_priors

__all__ = [
    "CheckpointError",
    "ComplexAsChannels",
    "Prior",
    "ProxPrior",
    "has_regularizer",
    "load_prior",
    "shipped_priors",
]
