"""CT volumes in NRRD: pynrrd writes real files that `data.nrrd` reads back as HU with the
file's geometry, `recon ct --input VOLUME.nrrd --slice K` reconstructs them like a DICOM series,
`recon train --ct-real-extra` trains on their slices, and `data.lung_ct.fetch_lung_ct` checks
its archive before it extracts anything."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pydicom
import pytest
import torch

from data.nrrd import NrrdError, read_nrrd_volume
from data.phantoms import random_ellipses
from data.training_sets import hu_to_unit
from recon.cli import main

nrrd = pytest.importorskip("nrrd", reason="pynrrd is not installed (pip install pynrrd)")

S, H, W = 3, 40, 36
DIRS = np.array([[0.7, 0.0, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 2.5]])  # x, y, z axes (mm)
ORIGIN = np.array([-12.0, 30.0, 100.0])


def _volume_hu() -> np.ndarray:
    """(S, H, W) int16 HU: ellipse phantoms, a little different per slice, padding in a corner."""
    base = random_ellipses(max(H, W), seed=5)[:H, :W]
    vol = np.stack([np.clip(base * (1 + 0.05 * k), 0, 1) * 2000 - 1000 for k in range(S)])
    vol = np.rint(vol).astype(np.int16)
    vol[:, :3, :3] = -3024  # scanner padding outside the field of view
    return vol


def _write(path, vol_hu: np.ndarray, space: str = "left-posterior-superior", flip=(1, 1, 1)):
    """NRRD axes run fastest first (x, y, z): the file holds vol_hu transposed to (W, H, S).
    ``flip`` multiplies the LPS geometry's coordinates (RAS: (−1, −1, 1))."""
    header = {
        "space": space,
        "space directions": DIRS * np.asarray(flip, dtype=float),
        "space origin": ORIGIN * np.asarray(flip, dtype=float),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }
    nrrd.write(str(path), np.transpose(vol_hu, (2, 1, 0)), header)


def test_nrrd_volume_reads_back_hu_and_geometry(tmp_path):
    vol = _volume_hu()
    path = tmp_path / "scan.nrrd"
    _write(path, vol)
    got = read_nrrd_volume(path)
    expect = vol.astype(np.float32)
    expect[expect <= -2000] = -1024.0
    assert got.hu.shape == (S, H, W) and got.hu.dtype == np.float32
    np.testing.assert_array_equal(got.hu, expect)
    assert got.pixel_spacing == pytest.approx((0.8, 0.7))  # (between rows, between columns)
    assert got.thickness == pytest.approx(2.5)
    assert got.orientation == pytest.approx((1, 0, 0, 0, 1, 0))
    for k, pos in enumerate(got.patient_positions):
        assert pos == pytest.approx(tuple(ORIGIN + k * DIRS[2]))


@pytest.mark.parametrize(
    "space, flip", [("RAS", (-1, -1, 1)), ("left-anterior-superior", (1, -1, 1))]
)
def test_nrrd_in_another_patient_space_gets_lps_geometry(tmp_path, space, flip):
    """The same scan written in RAS or LAS coordinates reads back with DICOM's LPS geometry."""
    path = tmp_path / "scan.nrrd"
    _write(path, _volume_hu(), space=space, flip=flip)
    got = read_nrrd_volume(path)
    assert got.orientation == pytest.approx((1, 0, 0, 0, 1, 0))
    assert got.thickness == pytest.approx(2.5)
    for k, pos in enumerate(got.patient_positions):
        assert pos == pytest.approx(tuple(ORIGIN + k * DIRS[2]))


def test_nrrd_errors_name_the_file(tmp_path):
    path = tmp_path / "scan.nrrd"
    _write(path, _volume_hu())
    cut = tmp_path / "cut.nrrd"
    cut.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(NrrdError, match="cut.nrrd: not a readable NRRD"):
        read_nrrd_volume(cut)
    vec = tmp_path / "vec.nrrd"
    nrrd.write(str(vec), np.zeros((3, 8, 8, 2), np.int16), {"kinds": ["vector"] + ["domain"] * 3})
    with pytest.raises(NrrdError, match="vec.nrrd: expected a scalar image"):
        read_nrrd_volume(vec)
    with pytest.raises(NrrdError, match="missing.nrrd: no such NRRD file"):
        read_nrrd_volume(tmp_path / "missing.nrrd")


@pytest.mark.slow
def test_recon_ct_reconstructs_slices_of_an_nrrd_volume(tmp_path):
    vol = _volume_hu()
    path = tmp_path / "scan.nrrd"
    _write(path, vol)
    out = tmp_path / "out"
    args = ["ct", "--input", str(path), "--slice", "1:3", "--views", "24", "--noise", "0.01"]
    assert main([*args, "--solver", "tv", "--iters", "12", "--quiet", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rec = np.load(out / "recon.npy")
    assert rec.shape == (2, H, W) and [r["slice"] for r in metrics["slices"]] == [1, 2]
    ref = read_nrrd_volume(path).hu[1:3]
    assert metrics["psnr"] > metrics["baseline"]["psnr"]  # TV beats FBP on these phantoms
    assert np.abs(rec - ref).mean() < np.abs(ref - ref.mean()).mean()
    # the derived DICOM series carries the NRRD geometry
    first = pydicom.dcmread(out / "dicom" / "IM_0001.dcm")
    assert [float(v) for v in first.ImagePositionPatient] == pytest.approx(ORIGIN + DIRS[2])
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([0.8, 0.7])
    bad = ["ct", "--input", str(path), "--slice", "7", "--quiet", "--out", str(tmp_path / "o2")]
    assert main(bad) == 2


def test_ct_real_extra_trains_on_every_slice_of_the_volume(tmp_path, capsys):
    from recon.train import ct_volume_slices, make_sampler

    vol = _volume_hu()
    path = tmp_path / "scan.nrrd"
    _write(path, vol)
    slices = ct_volume_slices([path])
    assert len(slices) == 2 * S  # full and half resolution
    hu = read_nrrd_volume(path).hu
    for k in range(S):
        np.testing.assert_array_equal(slices[k], hu_to_unit(hu[k]))
        assert slices[S + k].shape == ((H + 1) // 2, (W + 1) // 2)
    sampler, _, desc = make_sampler("ct-real", 16, 1, (0.0, 1.0, 0.0), [path])
    assert f"pydicom head and {S} slices of 1 volume)" in desc
    batch = sampler(8, torch.Generator().manual_seed(0))
    assert batch.shape == (8, 1, 16, 16) and 0.0 <= float(batch.min()) <= float(batch.max()) <= 1
    out = tmp_path / "p.safetensors"
    args = ["train", "--data", "ellipses", "--ct-real-extra", str(path), "--steps", "1"]
    assert main([*args, "--out", str(out)]) == 2
    assert "--ct-real-extra adds to --data ct-real batches" in capsys.readouterr().err
    assert not out.exists()


def _archive(tmp_path, files: dict[str, bytes]) -> tuple[str, str]:
    """A .tar.gz holding ``files``; returns its file:// URL and SHA-256."""
    path = tmp_path / "src.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_checks_the_archive_before_extracting(tmp_path):
    from data.lung_ct import fetch_lung_ct

    files = {"pkg/data/a.nrrd": b"volume a", "pkg/data/b.nrrd": b"volume b", "pkg/x": b"no"}
    url, sha = _archive(tmp_path, files)
    members = {"a.nrrd": "pkg/data/a.nrrd", "b.nrrd": "pkg/data/b.nrrd"}
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="SHA-256"):
        fetch_lung_ct(out, url, "0" * 64, members)
    assert list(out.iterdir()) == []  # nothing half-written, no temporary folder left
    with pytest.raises(ValueError, match="no pkg/data/c.nrrd"):
        fetch_lung_ct(out, url, sha, {"c.nrrd": "pkg/data/c.nrrd"})
    assert list(out.iterdir()) == []
    got = fetch_lung_ct(out, url, sha, members)
    assert {k: p.read_bytes() for k, p in got.items()} == {
        "a.nrrd": b"volume a",
        "b.nrrd": b"volume b",
    }
    assert sorted(p.name for p in out.iterdir()) == ["a.nrrd", "b.nrrd"]
    # once there, nothing is fetched again (a dead URL is not even opened)
    assert fetch_lung_ct(out, "file:///nonexistent.tar.gz", sha, members) == got
