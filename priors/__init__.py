"""Priors: AE-LPN, its ablations, classical TV/wavelet, training and checkpoints."""

from priors.base import ComplexAsChannels, Prior, ProxPrior, has_regularizer

__all__ = ["ComplexAsChannels", "Prior", "ProxPrior", "has_regularizer"]
