"""CT phantoms: modified Shepp–Logan and seeded random ellipses, float32 values in [0, 1].

Random-ellipse phantoms follow the recipe of the synthetic "ellipses" CT sets (as in
LoDoPaB/dival): on the square [−1, 1]², an image is the sum of K ellipses, each adding its
intensity v inside it, then clipped to [0, 1]. Per image K ~ min(Poisson(40), 70) (or a fixed
``n``); per ellipse v ~ U(−0.4, 1), semi-axes a, b ~ 0.2·Exp(1) (capped at 1), centre
~ U(−0.9, 0.9)², rotation ~ U(0, 2π). All parameters come from one ``numpy.random.Generator``,
so a seed fixes the phantoms. Rasterized in vectorized numpy (no Python loop over ellipses).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["shepp_logan", "random_ellipses", "ellipse_batches"]

MEAN_ELLIPSES, MAX_ELLIPSES = 40, 70
_CHUNK_ELEMENTS = 1 << 23  # bound on images·ellipses·pixels held at once (~32 MB float32)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or size < 8:
        raise ValueError(f"phantom size must be an integer ≥ 8, got {size!r}")
    return int(size)


def shepp_logan(size: int = 256) -> np.ndarray:
    """Modified Shepp–Logan (scikit-image's, 400×400), resized to (size, size), in [0, 1]."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    size = _check_size(size)
    img = resize(shepp_logan_phantom(), (size, size), order=1, anti_aliasing=size < 400)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _ellipse_images(rng: np.random.Generator, count: int, size: int, n: int | None) -> np.ndarray:
    """(count, size, size) float32 random-ellipse phantoms (see module for the distribution)."""
    if n is None:
        k = np.minimum(rng.poisson(MEAN_ELLIPSES, count), MAX_ELLIPSES)
    else:
        k = np.full(count, int(n))
    kmax = max(int(k.max()), 1)
    shape = (count, kmax)
    value = rng.uniform(-0.4, 1.0, shape)
    a = np.minimum(0.2 * rng.exponential(1.0, shape), 1.0) + 1e-3
    b = np.minimum(0.2 * rng.exponential(1.0, shape), 1.0) + 1e-3
    cx = rng.uniform(-0.9, 0.9, shape)
    cy = rng.uniform(-0.9, 0.9, shape)
    rot = rng.uniform(0.0, 2 * np.pi, shape)
    value = np.where(np.arange(kmax) < k[:, None], value, 0.0).astype(np.float32)
    # Inside ⇔ q(dx, dy) = A·dx² + 2B·dx·dy + C·dy² ≤ 1 for the rotated ellipse quadratic form.
    c, s = np.cos(rot), np.sin(rot)
    qa = (c**2 / a**2 + s**2 / b**2).astype(np.float32)
    qb = (c * s * (1 / a**2 - 1 / b**2)).astype(np.float32)
    qc = (s**2 / a**2 + c**2 / b**2).astype(np.float32)
    grid = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    out = np.empty((count, size, size), np.float32)
    step = max(1, _CHUNK_ELEMENTS // (kmax * size * size))
    for lo in range(0, count, step):
        sl = slice(lo, lo + step)
        dx = grid[None, None, None, :] - cx[sl, :, None, None].astype(np.float32)
        dy = grid[None, None, ::-1, None] - cy[sl, :, None, None].astype(np.float32)
        q = 2 * qb[sl, :, None, None] * dx * dy
        q += qa[sl, :, None, None] * dx * dx
        q += qc[sl, :, None, None] * dy * dy
        out[sl] = np.einsum("bk,bkhw->bhw", value[sl], (q <= 1.0).astype(np.float32))
    return np.clip(out, 0.0, 1.0)


def random_ellipses(size: int = 128, n: int | None = None, seed: int = 0) -> np.ndarray:
    """One seeded random-ellipse phantom, (size, size) float32 in [0, 1].

    Args:
        size: image side in pixels (≥ 8).
        n: number of ellipses; default random, min(Poisson(40), 70).
        seed: seed of ``numpy.random.default_rng``.
    """
    size = _check_size(size)
    if n is not None and (int(n) != n or n < 0):
        raise ValueError(f"number of ellipses must be an integer ≥ 0, got {n!r}")
    return _ellipse_images(np.random.default_rng(seed), 1, size, n)[0]


def ellipse_batches(
    size: int, batch: int, seed: int = 0, n: int | None = None
) -> Iterator[torch.Tensor]:
    """Endless stream of (batch, 1, size, size) float32 random-ellipse phantom tensors.

    The stream is fixed by ``seed``: the k-th batch is the same on every run.
    """
    size = _check_size(size)
    if batch < 1:
        raise ValueError(f"batch must be ≥ 1, got {batch}")
    rng = np.random.default_rng(seed)
    while True:
        yield torch.from_numpy(_ellipse_images(rng, batch, size, n))[:, None]
