"""Issue #5's scale claim, end to end on MRI: fastMRI k-space is tiny (image max ~1e-3).

The AE-LPN's reconstruction of k-space multiplied by s is s times the reconstruction of the
original k-space (no normalization needed), while the plain LPN, whose prox has biases, gives a
different and worse image unless the data are normalized first. Both claims are measured here
with the shipped 2-channel priors on a small multi-coil problem.
"""

import numpy as np
import pytest
import torch
from skimage.transform import resize

from data.bundled import load_bundled
from data.fastmri import simulate_multicoil
from data.masks import fastmri_random_mask
from operators.mri import SENSE
from priors.base import ComplexAsChannels
from priors.checkpoint import load_prior, shipped_priors
from solvers import pnp_admm


def _problem(size: int = 64):
    img = resize(np.asarray(load_bundled("brain-t1"), np.float64), (size, size), anti_aliasing=True)
    k, ref, maps = simulate_multicoil(img, 4, seed=0)  # image max 1e-3 as in fastMRI files
    mask = np.broadcast_to(fastmri_random_mask(size, 4, 0.16, seed=0)[None], (size, size)).copy()
    op = SENSE(maps, mask)
    y = torch.from_numpy((k * mask[None])[None])
    return op, y, torch.from_numpy(ref)


def _recon(op, y, prior, scale: float) -> torch.Tensor:
    ys = y * scale
    res = pnp_admm(op, ys, prior, rho=0.05 * op.norm_sq(), x0=op.adjoint(ys), iters=8, tol=0.0)
    return res.x[0, 0] / scale


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    mse = float((x.abs() - ref).pow(2).mean())
    return 10 * np.log10(float(ref.max()) ** 2 / mse)


@pytest.mark.skipif("lpn-mri" not in shipped_priors(), reason="lpn-mri weights are not shipped")
def test_aelpn_needs_no_normalization_lpn_does():
    op, y, ref = _problem()
    torch.manual_seed(0)
    ae = ComplexAsChannels(load_prior("aelpn-mri"))
    lpn = ComplexAsChannels(load_prior("lpn-mri"))
    to_unit = 1.0 / float(ref.max())  # the normalization an LPN needs: image max -> 1
    ae_raw, ae_unit = _recon(op, y, ae, 1.0), _recon(op, y, ae, to_unit)
    # AE-LPN: identical at the file's scale and at the normalized scale (float32 round-off)
    rel = float((ae_raw - ae_unit).abs().norm() / ae_unit.abs().norm())
    assert rel < 1e-4
    lpn_raw, lpn_unit = _recon(op, y, lpn, 1.0), _recon(op, y, lpn, to_unit)
    # LPN: a different image at the raw scale, and a clearly worse one
    assert float((lpn_raw - lpn_unit).abs().norm() / lpn_unit.abs().norm()) > 0.05
    assert _psnr(lpn_raw, ref) < _psnr(lpn_unit, ref) - 3.0
    assert _psnr(ae_raw, ref) > _psnr(lpn_raw, ref)
