"""`recon bench speed` mechanics (not a timing): the convolutions a prox runs are recorded with
their shapes and replayed with the right operation count; channels-last inputs give the same
prox as contiguous ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import priors.lpn as lpn
from priors.checkpoint import load_prior
from priors.lpn import told_noise_level
from recon.bench.speed import conv_calls, replay_convs


def test_recorded_convolutions_and_their_operation_count():
    x = torch.randn(2, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3)
    wt = torch.randn(4, 5, 3, 3)

    def run():
        y = F.conv2d(x, w, padding=1)
        return F.conv_transpose2d(y, wt, stride=2, padding=1, output_padding=1)

    calls = conv_calls(run)
    assert [c["kind"] for c in calls] == ["conv2d", "conv_transpose2d"]
    assert calls[0]["x"] == (2, 3, 8, 8) and calls[0]["w"] == (4, 3, 3, 3)
    assert calls[1]["stride"] == 2 and calls[1]["output_padding"] == 1
    seconds, gflop = replay_convs(calls, channels_last=False, repeats=1)
    # conv2d: 3·9 MACs per output × 2·4·8·8 outputs; transpose: 5·9 per input × 2·4·8·8 inputs;
    # forward + input gradient, 2 FLOP per MAC
    macs = 27 * 2 * 4 * 64 + 45 * 2 * 4 * 64
    assert abs(gflop - 4 * macs / 1e9) <= 1e-12 and seconds > 0
    assert F.conv2d.__name__ == "conv2d"  # restored after recording


def test_channels_last_prox_equals_the_contiguous_one():
    """Same network, two memory layouts: the prox differs only by float32 summation order."""
    model = load_prior("aelpn-ct").eval()
    x = torch.rand(1, 1, 48, 48)
    with told_noise_level(model, 0.05):
        lpn.CHANNELS_LAST = False
        try:
            a = model.prox(x)
        finally:
            lpn.CHANNELS_LAST = True
        b = model.prox(x)
        calls = conv_calls(lambda: model.prox(x))
    assert b.is_contiguous() and b.shape == x.shape
    # float32 round-off of sums over ~10³ terms, through a few dozen layers
    assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())
    assert len(calls) >= 10 and all(c["kind"] in ("conv2d", "conv_transpose2d") for c in calls)
