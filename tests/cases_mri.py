"""MRI operators registered for the generic operator tests (adjointness in float32 and float64,
gradients through forward and adjoint, power-iteration norm). Small sizes keep them fast."""

from __future__ import annotations

import numpy as np
import torch

from data.coils import birdcage_maps
from data.masks import fastmri_random_mask, poisson_disc_mask, radial_trajectory, spiral_trajectory
from operators.mri import SENSE, MaskedFFT, NonCartesianSENSE
from tests.cases import register


def _random_maps(c: int, h: int, w: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Random complex maps (not normalized: the adjoint must not rely on Σ|S|² = 1)."""
    g = torch.Generator().manual_seed(seed)
    cd = torch.complex128 if dtype == torch.float64 else torch.complex64
    return torch.randn((c, h, w), generator=g, dtype=cd)


@register("mri-maskedfft-1d-columns")
def _masked_cols(dtype):
    return MaskedFFT(fastmri_random_mask(28, 4, 0.08, seed=1), height=24), 2


@register("mri-maskedfft-2d-random")
def _masked_2d(dtype):
    m = (np.random.default_rng(5).random((24, 20)) < 0.4).astype(np.float32)
    return MaskedFFT(m), 2


@register("mri-maskedfft-poisson")
def _masked_poisson(dtype):
    return MaskedFFT(poisson_disc_mask((24, 24), 3, seed=0, calib=6)), 1


@register("mri-sense-random-maps")
def _sense(dtype):
    maps = _random_maps(4, 24, 28, 0, dtype)
    return SENSE(maps, fastmri_random_mask(28, 4, 0.08, seed=2)), 2


@register("mri-sense-odd-size")
def _sense_odd(dtype):  # odd H and W: fftshift and ifftshift differ
    maps = _random_maps(3, 21, 17, 4, dtype)
    return SENSE(maps, fastmri_random_mask(17, 3, 0.2, seed=3)), 2


@register("mri-sense-birdcage-2d-mask")
def _sense_birdcage(dtype):
    m = (np.random.default_rng(6).random((20, 20)) < 0.5).astype(np.float32)
    return SENSE(birdcage_maps(3, (20, 20)), m), 1


@register("mri-noncartesian-radial")
def _radial(dtype):
    maps = _random_maps(3, 24, 24, 1, dtype)
    return NonCartesianSENSE(maps, radial_trajectory(10, 24)), 2


@register("mri-noncartesian-spiral")
def _spiral(dtype):
    maps = _random_maps(2, 24, 24, 2, dtype)
    return NonCartesianSENSE(maps, spiral_trajectory(24, 4, 128)), 1


@register("mri-sense-stacked-support-penalty")
def _sense_support_penalty(dtype):
    """SENSE with maps cropped to a disc, stacked with a weighted identity off the disc (the
    support penalty ``recon.pipeline.support_penalty`` builds)."""
    from operators import Diagonal, Stacked

    maps = _random_maps(3, 16, 18, 5, dtype)
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(18), indexing="ij")
    disc = (yy - 7.5) ** 2 + (xx - 8.5) ** 2 < 49
    op = SENSE(maps * disc, fastmri_random_mask(18, 3, 0.2, seed=4))
    pen = Diagonal((~op.support).to(dtype) * 0.7, op.domain_shape, complex_=True)
    return Stacked(op, pen), 2
