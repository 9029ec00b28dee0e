"""CT phantoms: modified Shepp–Logan and seeded random ellipses (numpy, values in [0, 1])."""

from __future__ import annotations

import numpy as np
import torch

from data.training_sets import ellipse_sampler

__all__ = ["shepp_logan", "random_ellipses"]


def shepp_logan(size: int = 256) -> np.ndarray:
    """Modified Shepp–Logan (scikit-image's), resized to size×size, float32 in [0, 1]."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    if size < 8:
        raise ValueError(f"phantom size must be ≥ 8, got {size}")
    img = resize(shepp_logan_phantom(), (size, size), order=1, anti_aliasing=True)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def random_ellipses(size: int = 128, seed: int = 0) -> np.ndarray:
    """One seeded random-ellipse phantom (the training-set distribution), float32 in [0, 1]."""
    gen = torch.Generator().manual_seed(int(seed))
    return ellipse_sampler(size)(1, gen)[0, 0].numpy()
