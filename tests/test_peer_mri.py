"""MRI data made by other tools (BART, ISMRMRD), read into the fastMRI layout: shapes,
orientation, the generators' own coil maps explaining their coil images, the RSS reference, and
a round trip through a fastMRI file. Each test needs its tool and skips with the install line
when it is absent."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from data.fastmri import read_fastmri
from data.peer_mri import (
    INSTALL,
    add_kspace_noise,
    bart_phantom,
    ismrmrd_shepp_logan,
    read_ismrmrd_cartesian,
    write_peer_file,
)
from operators.mri import ifft2c

BART_EXE = shutil.which("bart") or "bart"
needs_bart = pytest.mark.skipif(
    shutil.which("bart") is None,
    reason=f"BART is not installed; these tests compare with it ({INSTALL})",
)
needs_ismrmrd = pytest.mark.skipif(
    shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None,
    reason=f"ismrmrd-tools is not installed; these tests read its data ({INSTALL})",
)


def _ifft2c(k: np.ndarray) -> np.ndarray:
    return ifft2c(torch.from_numpy(np.ascontiguousarray(k))).numpy()


def _unexplained(coils: np.ndarray, maps: np.ndarray) -> float:
    """||I − S·x̂|| / ||I|| with x̂ the least-squares image of the coil images I under maps S."""
    x = (np.conj(maps) * coils).sum(0) / np.maximum((np.abs(maps) ** 2).sum(0), 1e-30)
    return float(np.linalg.norm(coils - maps * x) / np.linalg.norm(coils))


@needs_ismrmrd
def test_ismrmrd_file_has_readout_oversampling_and_its_maps_explain_it():
    d = ismrmrd_shepp_logan(64, 4)
    assert d.kspace.shape == (4, 128, 64) and d.recon_size == (64, 64)
    coils = _ifft2c(d.kspace)
    # readout oversampling: the object lies in the central half of the rows
    assert np.abs(coils[:, 32:96]).sum() > 0.999 * np.abs(coils).sum()
    centre = coils[:, 32:96]
    assert _unexplained(centre, d.maps) < 1e-4  # the generator's csm, same orientation
    rss = np.sqrt((np.abs(centre) ** 2).sum(0))
    np.testing.assert_allclose(d.reference, rss, rtol=1e-4, atol=1e-6 * rss.max())


@needs_ismrmrd
def test_ismrmrd_reader_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="x.h5"):
        read_ismrmrd_cartesian(bad)
    import h5py

    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["kspace"] = np.zeros(3)
    with pytest.raises(ValueError, match="y.h5: not an ISMRMRD file"):
        read_ismrmrd_cartesian(tmp_path / "y.h5")


@needs_bart
def test_bart_phantom_and_its_sensitivities():
    d = bart_phantom(64, 4)
    assert d.kspace.shape == (4, 64, 64) and d.maps.shape == (4, 64, 64)
    # BART's k-space phantom is analytic (not the FFT of its image): ~1 % model mismatch
    assert _unexplained(_ifft2c(d.kspace), d.maps) < 0.03
    with pytest.raises(ValueError, match="1 to 8 coils"):
        bart_phantom(64, 12)


@needs_ismrmrd
def test_peer_file_round_trip_and_noise(tmp_path):
    d = ismrmrd_shepp_logan(32, 2)
    path = write_peer_file(tmp_path / "p.h5", d, 0.01, seed=4)
    f = read_fastmri(path)
    np.testing.assert_array_equal(f.kspace[0], add_kspace_noise(d.kspace, 0.01, 4))
    assert f.recon_size == (32, 32) and f.reference.shape == (1, 32, 32)
    assert f.attrs["kspace_noise"] == 0.01
    noise = f.kspace[0] - d.kspace
    sigma = 0.01 * np.abs(d.kspace).max()
    assert np.std(noise.real) == pytest.approx(sigma, rel=0.1)


@needs_bart
@needs_ismrmrd
def test_recon_mri_defaults_hold_up_against_bart_on_ismrmrd_data(tmp_path):
    """Side by side on a file ISMRMRD's generator made (readout oversampling, 8 coils, noise
    0.5 % of max|k|, random 4×): `recon mri --solver tv` with its defaults is at least as good
    as zero-filled by 3 dB and within 0.5 dB of BART's pics TV at its best λ of a small grid
    (the acceptance margin of the peer table, on a smaller problem)."""
    import json

    from data.fastmri import center_crop, evaluate
    from data.masks import fastmri_random_mask
    from recon.bench.peers import run_bart
    from recon.cli import main
    from recon.peers_io import read_cfl, write_cfl

    d = ismrmrd_shepp_logan(64, 8)
    path = write_peer_file(tmp_path / "ism.h5", d, 0.005, seed=0)
    out = tmp_path / "ours"
    args = ["mri", "--input", str(path), "--solver", "tv", "--center-fraction", "0.16"]
    assert main([*args, "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["psnr"] >= m["baseline"]["psnr"] + 3
    mask = fastmri_random_mask(64, 4.0, 0.16, seed=0)  # the mask recon mri drew
    ku = read_fastmri(path).kspace[0] * mask
    write_cfl(tmp_path / "ku", np.transpose(ku, (1, 2, 0))[:, :, None, :])
    best = -np.inf
    for crop in ("0.8", "0.5"):
        run_bart(BART_EXE, "ecalib", "-m1", "-c", crop, "-r", "10", "ku", "s", cwd=tmp_path)
        for lam in ("0.003", "0.01", "0.03", "0.1"):
            run_bart(BART_EXE, "pics", "-S", "-i", "100", "-R", f"T:3:0:{lam}", "ku", "s", "r",
                  cwd=tmp_path)  # fmt: skip
            img = center_crop(np.abs(read_cfl(tmp_path / "r")), (64, 64))
            best = max(best, evaluate(d.reference, img)["psnr"])
    assert m["psnr"] >= best - 0.5, (m["psnr"], best)


@needs_bart
def test_our_espirit_maps_match_bart_ecalib(tmp_path):
    """On BART's phantom (its own coil sensitivities), our ESPIRiT maps and BART's `ecalib -m1`
    agree up to one phase per pixel: per-pixel correlation over coils ≥ 0.99 on 95 % of the
    object (both maps are unit-norm over coils there)."""
    from data.coils import espirit_maps
    from recon.bench.peers import run_bart
    from recon.peers_io import bart_to_kspace, kspace_to_bart, read_cfl, write_cfl

    d = bart_phantom(128, 8)
    ours = espirit_maps(d.kspace, calib_width=24)
    write_cfl(tmp_path / "k", kspace_to_bart(d.kspace))
    run_bart(BART_EXE, "ecalib", "-m1", "-r", "24", "k", "s", cwd=tmp_path)
    theirs = bart_to_kspace(read_cfl(tmp_path / "s"))
    inside = d.reference > 0.1 * d.reference.max()
    num = np.abs((np.conj(ours) * theirs).sum(0))
    den = np.linalg.norm(ours, axis=0) * np.linalg.norm(theirs, axis=0) + 1e-30
    corr = (num / den)[inside]
    assert np.mean(corr >= 0.99) >= 0.95, np.percentile(corr, [1, 5, 50])


@needs_ismrmrd
def test_peer_bench_pnp_column_is_what_recon_mri_gives_by_default(tmp_path):
    """`recon bench peers --mri`'s PnP column runs `recon mri` without --solver: the same image
    quality as the CLI's default run on the same file, with the default prior's default solver
    (PnP-FISTA for ridge-mri) named in the row."""
    import json

    from recon.bench.peers_mri import PNP, _ours
    from recon.cli import main
    from recon.mri import default_solver

    path = write_peer_file(tmp_path / "ism.h5", ismrmrd_shepp_logan(64, 8), 0.005, seed=0)
    row = _ours(path, None, 4.0, 0.16, seed=0)
    assert row["method"] == PNP and row["prior"] == "ridge-mri"
    assert default_solver("ridge-mri") == "pnp-pgd" and row["solver"] == "pnp-fista"
    out = tmp_path / "cli"
    args = ["mri", "--input", str(path), "--center-fraction", "0.16", "--seed", "0"]
    assert main([*args, "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["solver"] == "pnp-pgd" and m["parameters"]["accelerated"]
    assert abs(row["psnr"] - m["psnr"]) < 1e-6, (row["psnr"], m["psnr"])


@needs_ismrmrd
def test_recon_mri_reads_an_ismrmrd_file_as_it_is(tmp_path, capsys):
    """`recon mri --input raw.h5` with the generator's own ISMRMRD file (no conversion): one
    slice, the readout oversampling dropped, fastMRI's RSS reference computed from the fully
    sampled data, so TV beats zero-filled; files with repetitions are refused by name."""
    import h5py

    from recon.cli import main

    raw = tmp_path / "raw.h5"
    exe = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    cmd = [exe, "-o", str(raw), "-m", "64", "-c", "4", "-O", "2", "-n", "0.01"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)
    out = tmp_path / "o"
    argv = ["mri", "--input", str(raw), "--accel", "2", "--center-fraction", "0.2", "--quiet"]
    assert main([*argv, "--solver", "tv", "--iters", "20", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["input"] == str(raw) and m["coils"] == 4 and m["recon_size"] == [64, 64]
    assert m["psnr"] > m["baseline"]["psnr"] + 3
    with h5py.File(out / "reconstruction.h5") as f:
        assert f["reconstruction"].shape == (1, 64, 64)
    reps = tmp_path / "reps.h5"
    subprocess.run([*cmd[:2], str(reps), *cmd[3:9], "-r", "2"], check=True, capture_output=True)
    assert main(["mri", "--input", str(reps), "--quiet", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "reps.h5: 2 repetitions, and recon mri reads files with one" in err
