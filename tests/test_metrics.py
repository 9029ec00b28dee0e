"""solvers.metrics: PSNR/SSIM/NMSE against scikit-image's own implementations, one convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from solvers.metrics import image_metrics, psnr


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.uniform(-1000, 400, (24, 20))
    return ref, ref + rng.normal(0, 30, ref.shape)


def test_psnr_matches_skimage_with_default_and_given_range():
    ref, x = _pair()
    assert psnr(x, ref) == pytest.approx(peak_signal_noise_ratio(ref, x, data_range=np.ptp(ref)))
    assert psnr(x, ref, 2000.0) == pytest.approx(peak_signal_noise_ratio(ref, x, data_range=2000))
    # tensors (float32, with batch axes) give the float64 figure of the same numbers
    t = psnr(torch.from_numpy(x)[None, None], torch.from_numpy(ref)[None, None])
    assert t == pytest.approx(psnr(x, ref), abs=1e-9)


def test_psnr_of_complex_input_is_on_the_magnitude_and_inf_when_equal():
    ref, x = _pair(1)
    phase = np.exp(1j * np.random.default_rng(2).uniform(0, 6.28, ref.shape))
    assert psnr(np.abs(x) * phase, np.abs(ref)) == pytest.approx(psnr(np.abs(x), np.abs(ref)))
    assert psnr(ref, ref) == math.inf
    bad = ref.copy()
    bad[0, 0] = np.nan  # a failed image (NaN weights, a diverged run) is no perfect score
    assert math.isnan(psnr(bad, ref))
    bad[0, 0] = np.inf
    assert math.isnan(psnr(bad, ref))
    bad[0, 0] = 1e200  # finite, but its squared error overflows
    assert psnr(bad, ref) == -math.inf


def test_bad_inputs_are_refused():
    ref, x = _pair()
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x[:-1], ref)
    with pytest.raises(ValueError, match="data_range must be > 0"):
        psnr(x, np.ones_like(ref))


def test_image_metrics_agree_with_skimage():
    ref, x = _pair(3)
    m = image_metrics(x, ref)
    rng = float(np.ptp(ref))
    assert m["data_range"] == pytest.approx(rng)
    assert m["ssim"] == pytest.approx(structural_similarity(x, ref, data_range=rng))
    assert m["nmse"] == pytest.approx(np.sum((x - ref) ** 2) / np.sum(ref**2))
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(ref, x, data_range=rng))


def test_recorded_versions_are_those_of_the_imported_packages():
    import astra
    import sigpy

    from recon.pipeline import versions

    v = versions()
    assert v["astra"] == astra.__version__ and v["sigpy"] == sigpy.__version__
    assert v["torch"] == torch.__version__
