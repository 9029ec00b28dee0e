"""MRI operators registered for the generic operator tests (adjointness, gradients, norm)."""

import numpy as np

from data.coils import birdcage_maps
from data.masks import fastmri_random_mask, poisson_disc_mask, radial_trajectory, spiral_trajectory
from operators.mri import SENSE, MaskedFFT, NonCartesianSENSE
from tests.cases import register


def _random_maps(c, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((c, h, w)) + 1j * rng.standard_normal((c, h, w))).astype(
        np.complex64
    )


@register("mri-maskedfft-columns")
def _cols(dtype):
    return MaskedFFT(fastmri_random_mask(32, 4, 0.08, seed=1), height=24), 2


@register("mri-maskedfft-poisson")
def _poisson(dtype):
    return MaskedFFT(poisson_disc_mask((32, 32), 3, seed=0, calib=6)), 1


@register("mri-sense-random-maps")
def _sense(dtype):
    return SENSE(_random_maps(4, 24, 28), fastmri_random_mask(28, 4, 0.08, seed=2)), 2


@register("mri-noncartesian-radial")
def _radial(dtype):
    return NonCartesianSENSE(birdcage_maps(3, (24, 24)), radial_trajectory(12, 24)), 2


@register("mri-noncartesian-spiral")
def _spiral(dtype):
    return NonCartesianSENSE(_random_maps(2, 24, 24, 1), spiral_trajectory(24, 4, 128)), 1
