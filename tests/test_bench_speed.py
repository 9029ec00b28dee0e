"""`recon bench speed` mechanics (not a timing): the convolutions a prox runs are recorded with
their shapes and replayed with the right operation count; channels-last inputs give the same
prox as contiguous ones."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize(
    "option, value, words",
    [("--size", "-5", "must be ≥ 1, got -5"), ("--size", "0", "must be ≥ 1, got 0"),
     ("--size", "600", "must be ≤ 512 (the slice's side)"),
     ("--repeats", "0", "must be ≥ 1, got 0")],
)  # fmt: skip
def test_bad_sizes_and_repeats_are_refused_in_one_line(tmp_path, capsys, option, value, words):
    """--size -5 ran at 507² (a negative slice end), --size 0 and --repeats 0 crashed."""
    from recon.cli import main

    out = tmp_path / "o"
    args = ["bench", "speed", "--out", str(out), "--no-solvers", "--priors", "ridge-ct"]
    assert main([*args, option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"argument {option}: {words}" in err[-1] and not out.exists()


def test_the_table_gives_fast_prox_times_in_milliseconds():
    from recon.bench.speed import _table

    row = {"prior": "ridge-ct", "prox_s_contiguous": 0.0012, "prox_s_channels_last": 0.00034}
    row |= {"convs_s_channels_last": 0.0002, "conv_fraction_channels_last": 0.6, "gflop": 0.01}
    meta = {"date": "d", "threads": 1, "cpu": "c"}
    assert "| ridge-ct | 1.2 | 0.34 | 0.2 | 0.60 |" in _table([row], [], meta)
