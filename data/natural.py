"""Natural grayscale images bundled with scikit-image, as a training/validation set for priors.

The images are split by name into a training and a held-out set, so validation never sees a
training image. ``patch_sampler`` draws seeded random crops with flips and 90° rotations.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import torch

__all__ = ["TRAIN_IMAGES", "VAL_IMAGES", "natural_images", "patch_sampler", "center_crops"]

# Held out: camera, moon. (astronaut/coffee/chelsea/rocket are colour: converted to gray.)
TRAIN_IMAGES = (
    "astronaut",
    "brick",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "page",
    "rocket",
    "text",
    "clock",
    "horse",
    "binary_blobs",
)
VAL_IMAGES = ("camera", "moon", "cat")


@cache
def _load(name: str) -> np.ndarray:
    from skimage import color, data, img_as_float32

    img = getattr(data, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    img = img_as_float32(img).astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else img


def natural_images(names: tuple[str, ...] = TRAIN_IMAGES) -> list[np.ndarray]:
    """Grayscale float32 images in [0, 1] (each min-max normalized)."""
    return [_load(n) for n in names]


def patch_sampler(
    images: list[np.ndarray], patch: int = 64
) -> Callable[[int, torch.Generator], torch.Tensor]:
    """sampler(batch, gen) -> (B, 1, patch, patch) random crops with flips/rot90 (seeded)."""
    tens = [torch.from_numpy(im) for im in images if min(im.shape) >= patch]
    if not tens:
        raise ValueError(f"no image is at least {patch}×{patch}")
    areas = torch.tensor([float(t.numel()) for t in tens])

    def sample(batch: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.multinomial(areas, batch, replacement=True, generator=gen)
        out = torch.empty(batch, 1, patch, patch)
        for b, i in enumerate(idx.tolist()):
            im = tens[i]
            r = int(torch.randint(0, im.shape[0] - patch + 1, (1,), generator=gen))
            c = int(torch.randint(0, im.shape[1] - patch + 1, (1,), generator=gen))
            p = im[r : r + patch, c : c + patch]
            k = int(torch.randint(0, 4, (1,), generator=gen))
            if int(torch.randint(0, 2, (1,), generator=gen)):
                p = p.flip(-1)
            out[b, 0] = torch.rot90(p, k, (0, 1))
        return out

    return sample


def center_crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    """(N, 1, size, size) centre crops (resized down first if smaller than the image)."""
    from skimage.transform import resize

    out = []
    for im in images:
        s = min(im.shape)
        r0, c0 = (im.shape[0] - s) // 2, (im.shape[1] - s) // 2
        sq = im[r0 : r0 + s, c0 : c0 + s]
        if s != size:
            sq = resize(sq, (size, size), anti_aliasing=True).astype(np.float32)
        out.append(torch.from_numpy(np.ascontiguousarray(sq)))
    return torch.stack(out)[:, None]
