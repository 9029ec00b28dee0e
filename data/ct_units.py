"""CT intensity units: Hounsfield units (HU) <-> linear attenuation coefficient μ.

HU = 1000 · (μ − μ_water) / μ_water, so μ = μ_water · (1 + HU/1000): air (−1000 HU) has μ = 0,
water (0 HU) has μ = μ_water. μ is per unit length; the default μ_water = 0.02 per mm is water
at a typical effective CT energy (~70 keV, 0.2 per cm). A sinogram of a μ image (per mm) through
an operator with ``pixel_size`` in mm is dimensionless attenuation (μ·length): the quantity
Beer–Lambert (Poisson) noise needs, see ``data.ct_noise``. Works on numpy arrays, torch tensors
and floats.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = ["MU_WATER_PER_MM", "hu_to_mu", "mu_to_hu"]

MU_WATER_PER_MM = 0.02

T = TypeVar("T", np.ndarray, torch.Tensor, float)


def hu_to_mu(hu: T, mu_water: float = MU_WATER_PER_MM) -> T:
    """μ = μ_water · (1 + HU/1000), in the units of ``mu_water`` (default per mm)."""
    if mu_water <= 0:
        raise ValueError(f"mu_water must be > 0, got {mu_water}")
    return mu_water * (1.0 + hu / 1000.0)


def mu_to_hu(mu: T, mu_water: float = MU_WATER_PER_MM) -> T:
    """HU = 1000 · (μ/μ_water − 1), the exact inverse of :func:`hu_to_mu`."""
    if mu_water <= 0:
        raise ValueError(f"mu_water must be > 0, got {mu_water}")
    return 1000.0 * (mu / mu_water - 1.0)
