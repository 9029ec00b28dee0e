"""The penalty off the coil support (``recon.pipeline.support_penalty``).

Coil maps cropped to the object leave AᴴA exactly zero off the support; the penalty adds
(μ/2)||x off the support||² to the data term through a stacked operator. Checked here: the
stacked data term is that sum, its norm is max(||A||², μ) as stated, operators without a
(partial) support pass through untouched, and on a small multi-coil problem a learned prior
run to its fixed point keeps the background at zero with the penalty and lets a haze grow
there without it, losing PSNR.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.transform import resize

from data.bundled import load_bundled
from data.coils import birdcage_maps
from data.masks import fastmri_random_mask
from operators.mri import SENSE, MaskedFFT, fft2c
from recon.pipeline import load_presets, method_params, reconstruct, support_penalty


def _disc(h: int, w: int, r: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 < r * r


def _cropped_sense(size: int, coils: int, dtype=torch.complex128) -> SENSE:
    maps = torch.from_numpy(birdcage_maps(coils, (size, size))).to(dtype)
    disc = _disc(size, size, 0.42 * size)
    return SENSE(maps * disc, fastmri_random_mask(size, 4, 0.16, seed=0))


def test_stacked_data_term_is_the_sum_and_its_norm_is_the_larger_block():
    op = _cropped_sense(24, 4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 1, 24, 24), generator=gen, dtype=torch.complex128)
    y = op.forward(torch.randn((2, 1, 24, 24), generator=gen, dtype=torch.complex128))
    for w in (0.5, 3.0):
        stacked, y2, record = support_penalty(op, y, w)
        mu = w * op.norm_sq()
        off = ~op.support
        assert record["support_weight"] == w
        assert abs(record["support_fraction"] - float(op.support.double().mean())) < 1e-12
        lhs = (stacked.forward(x) - y2).abs().pow(2).sum()
        rhs = (op.forward(x) - y).abs().pow(2).sum() + mu * x[..., off].abs().pow(2).sum()
        assert abs(float(lhs - rhs)) <= 1e-12 * float(rhs)
        # it records max(||A||², μ); power iteration on the stacked normal operator, run long
        # (float32), finds the same against the same long run on A alone
        assert stacked.norm_sq() == max(op.norm_sq(), mu)
        stacked._norm_sq = None
        measured = stacked.norm_sq(iters=2000, tol=1e-9)
        alone = SENSE(op.maps, op.mask).norm_sq(iters=2000, tol=1e-9)
        assert abs(measured - max(alone, mu)) <= 1e-4 * measured


def test_operators_without_a_partial_support_pass_through():
    y = torch.zeros((1, 1, 16, 16), dtype=torch.complex64)
    single = MaskedFFT(fastmri_random_mask(16, 4, 0.25, seed=0))
    full = SENSE(birdcage_maps(3, (16, 16)), fastmri_random_mask(16, 4, 0.25, seed=0))
    cropped = _cropped_sense(16, 3, torch.complex64)
    yc = torch.zeros((1, 3, 16, 16), dtype=torch.complex64)
    assert bool(full.support.all())
    for op, yy in ((single, y), (full, yc)):
        out, y2, record = support_penalty(op, yy, 0.5)
        assert out is op and y2 is yy and record == {}
    out, y2, record = support_penalty(cropped, yc, 0.0)  # weight 0: off
    assert out is cropped and record == {}


def test_learned_prior_keeps_the_background_clean_with_the_penalty():
    """48² brain slice inside the maps' disc, 4 coils, 4×: PnP-ADMM with ``ridge-mri`` at the
    presets, run past its preset length (100 iterations). Without the penalty the iterate off
    the support is free and drifts; with it the background stays near zero and the PSNR is
    higher (measured: 22.4 against 24.9 dB, haze 35 % of the image's peak against 0.1 %)."""
    size = 48
    img = resize(np.asarray(load_bundled("brain-t1"), np.float64), (size, size), anti_aliasing=True)
    disc = _disc(size, size, 0.42 * size).numpy()
    img = img * disc * 1e-3  # fastMRI's scale, zero outside the object
    maps = birdcage_maps(4, (size, size)) * disc
    mask = fastmri_random_mask(size, 4, 0.16, seed=0)
    op = SENSE(maps, mask)
    x_true = torch.from_numpy(img.astype(np.complex64))[None, None]
    y = op.forward(x_true)
    gen = torch.Generator().manual_seed(1)
    noise = 1e-3 * float(fft2c(x_true).abs().max())
    y = y + noise * torch.randn(y.shape, generator=gen, dtype=y.dtype) * op.mask
    x0 = op.adjoint(y)
    solver, prior, params = method_params(load_presets("mri"), "pnp-admm", "ridge-mri")
    params.update(iters=100, tol=0.0)
    off = torch.from_numpy(~disc)
    out = {}
    for w in (0.0, 0.5):
        rec = reconstruct(op, y, x0, solver, prior, {**params, "support_weight": w})
        x = rec.x[0, 0]
        err = (x.abs() - x_true[0, 0].abs()).pow(2).mean()
        out[w] = (float(x[off].abs().max()), 10 * np.log10(img.max() ** 2 / float(err)))
    (haze_free, psnr_free), (haze_pen, psnr_pen) = out[0.0], out[0.5]
    assert haze_pen < 0.01 * img.max() < haze_free
    assert psnr_pen > psnr_free + 1.0
