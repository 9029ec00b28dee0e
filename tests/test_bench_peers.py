"""BART's .cfl/.hdr format (always), BART's FFT convention against ours (when `bart` is on PATH),
and the pieces of `recon bench peers` that need no peer: time-to-PSNR, peer discovery messages."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from recon.bench.peers import check_peer_python, find_bart, first_reach
from recon.peers_io import (
    CflError,
    bart_to_kspace,
    kspace_to_bart,
    read_cfl,
    write_cfl,
)

BART = shutil.which("bart")
needs_bart = pytest.mark.skipif(
    BART is None, reason="BART is not installed (apt-get install bart) - peer not available"
)


def _random_complex(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 6, 1, 3), (2, 3, 4, 1, 1)])
def test_cfl_round_trip(tmp_path, shape):
    a = _random_complex(shape)
    base = write_cfl(tmp_path / "arr", a)
    assert base.with_suffix(".cfl").stat().st_size == 8 * a.size
    back = read_cfl(tmp_path / "arr")
    squeezed = shape
    while len(squeezed) > 1 and squeezed[-1] == 1:
        squeezed = squeezed[:-1]
    assert back.shape == squeezed and back.dtype == np.complex64
    np.testing.assert_array_equal(back.reshape(shape), a)
    full = read_cfl(tmp_path / "arr.hdr", squeeze_trailing=False)
    assert full.shape == tuple(shape) + (1,) * (16 - len(shape))


def test_cfl_is_column_major(tmp_path):
    a = np.arange(6, dtype=np.complex64).reshape(2, 3) * (1 + 2j)
    write_cfl(tmp_path / "a", a)
    raw = np.fromfile(tmp_path / "a.cfl", dtype="<c8")
    np.testing.assert_array_equal(raw, a.ravel(order="F"))
    assert (tmp_path / "a.hdr").read_text().splitlines()[1].split()[:3] == ["2", "3", "1"]


def test_cfl_real_input_becomes_complex(tmp_path):
    a = np.linspace(-1, 1, 12).reshape(3, 4)
    write_cfl(tmp_path / "r", a)
    back = read_cfl(tmp_path / "r")
    np.testing.assert_allclose(back.real, a, rtol=1e-7)
    assert not back.imag.any()


def test_cfl_truncated_file_is_a_clear_error(tmp_path):
    write_cfl(tmp_path / "t", _random_complex((8, 8)))
    cfl = tmp_path / "t.cfl"
    cfl.write_bytes(cfl.read_bytes()[:-5])
    with pytest.raises(CflError, match=r"t\.cfl: truncated.*need 512"):
        read_cfl(tmp_path / "t")


def test_cfl_bad_headers_and_missing_files(tmp_path):
    with pytest.raises(CflError, match="no such header"):
        read_cfl(tmp_path / "missing")
    (tmp_path / "h.hdr").write_text("# nothing here\n")
    with pytest.raises(CflError, match="Dimensions"):
        read_cfl(tmp_path / "h")
    (tmp_path / "g.hdr").write_text("# Dimensions\n4 x 1\n")
    with pytest.raises(CflError, match="not integers"):
        read_cfl(tmp_path / "g")
    (tmp_path / "d.hdr").write_text("# Dimensions\n2 2\n")
    with pytest.raises(CflError, match="no such data file"):
        read_cfl(tmp_path / "d")
    with pytest.raises(CflError, match="numeric"):
        write_cfl(tmp_path / "s", np.array(["a", "b"]))


def test_kspace_layout_round_trip():
    k = _random_complex((8, 6, 5))
    b = kspace_to_bart(k)
    assert b.shape == (6, 5, 1, 8)
    np.testing.assert_array_equal(b[:, :, 0, 3], k[3])
    np.testing.assert_array_equal(bart_to_kspace(b), k)
    with pytest.raises(ValueError, match="multi-coil"):
        kspace_to_bart(k[0])


def test_first_reach():
    psnr = [20.0, None, 25.0, 31.0, 30.0]
    secs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert first_reach(psnr, secs, 24.0) == (3, 3.0)
    assert first_reach(psnr, secs, 31.0) == (4, 4.0)
    assert first_reach(psnr, secs, 32.0) == (None, None)


def test_deepinverse_driver_is_where_the_bench_runs_it():
    """The DeepInverse driver script the CT bench hands to --peer-python exists (its path is
    computed from the bench module's location)."""
    from recon.bench.peers import DRIVER

    assert DRIVER.is_file(), DRIVER
    assert "deepinv" in DRIVER.read_text()


def test_missing_peers_are_named_with_install_hints(tmp_path):
    py, msg = check_peer_python(None)
    assert py is None and "pip install" in msg and "deepinv" in msg
    py, msg = check_peer_python(str(tmp_path / "no-python"))
    assert py is None and "does not exist" in msg
    exe, msg = find_bart(str(tmp_path / "no-bart"))
    assert exe is None and "apt-get install bart" in msg


@needs_bart
def test_bart_fft_equals_our_centred_fft(tmp_path):
    """BART's unitary FFT (fft -u) is our fft2c; without -u it is √N larger."""
    from operators.mri import fft2c

    for shape in [(16, 12), (15, 9)]:
        x = _random_complex(shape, seed=1)
        write_cfl(tmp_path / "x", x)
        ours = fft2c(torch.from_numpy(x)).numpy()
        subprocess.run([BART, "fft", "-u", "3", "x", "ku"], cwd=tmp_path, check=True)
        np.testing.assert_allclose(read_cfl(tmp_path / "ku"), ours, atol=1e-5 * np.abs(ours).max())
        subprocess.run([BART, "fft", "3", "x", "kn"], cwd=tmp_path, check=True)
        np.testing.assert_allclose(
            read_cfl(tmp_path / "kn"), np.sqrt(np.prod(shape)) * ours, rtol=1e-4, atol=1e-4
        )


@needs_bart
def test_bart_reads_our_multicoil_layout(tmp_path):
    """BART's root-sum-of-squares over its coil dimension (3) of our k-space in BART layout
    equals our RSS of the coil images: the layouts and FFT conventions agree end to end."""
    from operators.mri import ifft2c, rss

    k = _random_complex((4, 10, 8), seed=2)
    write_cfl(tmp_path / "k", kspace_to_bart(k))
    subprocess.run([BART, "fft", "-u", "-i", "3", "k", "img"], cwd=tmp_path, check=True)
    subprocess.run([BART, "rss", "8", "img", "r"], cwd=tmp_path, check=True)
    ours = rss(ifft2c(torch.from_numpy(k))[None], dim=1)[0].numpy()
    np.testing.assert_allclose(np.abs(read_cfl(tmp_path / "r")), ours, rtol=1e-4, atol=1e-6)


def test_ct_bench_runs_ours_without_a_peer(tmp_path):
    """`recon bench peers --ct --quick` with no DeepInverse: every method of ours and `recon ct`'s
    defaults run on the same problem, the table names the skipped peer with its install hint, and
    the defaults (the shipped prior and TV, with their noise rules) beat FBP by a wide margin."""
    import json

    from recon.bench.peers import CT_METHODS
    from recon.cli import main

    out = tmp_path / "peers"
    assert main(["bench", "peers", "--ct", "--quick", "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())["ct"]["shepp-logan"]
    assert "pip install" in res["peer"]["skipped"]
    ours = res["ours"]
    assert {m[0] for m in CT_METHODS} < set(ours)
    # a quick run says its shorter runs are not the defaults' iteration counts
    defaults = [v for k, v in ours.items() if "(recon ct defaults, --quick: 10 iterations)" in k]
    assert len(defaults) == 2
    for d in defaults:
        assert d["psnr"] > res["fbp"]["psnr"] + 5, d
    text = (out / "table.md").read_text()
    assert "crr-ct (recon ct defaults, --quick: 10 iterations)" in text and "pip install" in text
    assert (out / "ct_shepp-logan_psnr_vs_seconds.png").stat().st_size > 0


def test_a_peer_asked_for_by_name_that_cannot_run_is_an_error(tmp_path, capsys):
    """`--peer-python /nonexistent/python` printed "DeepInverse skipped" and exited 0, so a
    comparison script could not tell that the peer never ran."""
    from recon.cli import main

    out = tmp_path / "p"
    argv = ["bench", "peers", "--ct", "--quick", "--peer-python", str(tmp_path / "no-python")]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no-python does not exist" in err and "leave out --peer-python" in err
    assert not out.exists()
    argv[-1] = str(tmp_path)  # a folder: it exists, and cannot run
    assert main([*argv, "--out", str(out)]) == 2
    assert "cannot run" in capsys.readouterr().err
