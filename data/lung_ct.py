"""Real chest CT for training and testing CT priors: the two lung CT volumes of pyradiomics'
test cases (``lung1``: 48 slices of 512², 0.57 mm pixels; ``lung2``: 61 slices, 0.63 mm; 5 mm
apart, NRRD in HU), taken from the pyradiomics 3.1.0 source distribution on PyPI.

``lung1`` is trained on (``recon train --data ct-real --ct-real-extra``); ``lung2`` (another
patient) is only ever a test volume. The files are fetched once, by hand
(``python scripts/fetch_lung_ct.py``), never at run time; the archive's SHA-256 is checked
before anything is extracted, and each file appears under its name only once complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

__all__ = ["LUNG_CT_ARCHIVE", "LUNG_CT_SHA256", "LUNG_CT_MEMBERS", "fetch_lung_ct"]

LUNG_CT_ARCHIVE = (
    "https://files.pythonhosted.org/packages/03/c1/"
    "20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/pyradiomics-3.1.0.tar.gz"
)
LUNG_CT_SHA256 = "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"
LUNG_CT_MEMBERS = {
    "lung1_image.nrrd": "pyradiomics-3.1.0/data/lung1_image.nrrd",  # training
    "lung2_image.nrrd": "pyradiomics-3.1.0/data/lung2_image.nrrd",  # test only
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_checked(url: str, sha256: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` and check its SHA-256; ValueError naming the URL when it
    differs (the caller removes ``dest``: it downloads into a temporary folder)."""
    with urllib.request.urlopen(url) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f)
    got = _sha256(dest)
    if got != sha256:
        raise ValueError(f"{url}: SHA-256 {got} differs from the expected {sha256}")
    return dest


def fetch_lung_ct(
    out: str | Path,
    url: str = LUNG_CT_ARCHIVE,
    sha256: str = LUNG_CT_SHA256,
    members: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Download ``url`` (a ``.tar.gz``), check its SHA-256 and extract ``members`` (output name
    → path inside the archive) into ``out``; returns {name: path}. Files already in ``out`` are
    kept and nothing is downloaded when all are there.

    Raises ValueError naming the archive when its checksum differs or a member is missing;
    nothing is left in ``out`` then (the download and partial files live in a temporary folder)."""
    members = dict(LUNG_CT_MEMBERS if members is None else members)
    out = Path(out)
    targets = {name: out / name for name in members}
    if all(p.is_file() for p in targets.values()):
        return targets
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".fetch-") as tmp:
        archive = download_checked(url, sha256, Path(tmp) / "archive.tar.gz")
        with tarfile.open(archive, "r:gz") as tar:
            names = set(tar.getnames())
            for name, member in members.items():
                if member not in names:
                    raise ValueError(f"{url}: the archive has no {member}")
                source = tar.extractfile(member)
                if source is None:
                    raise ValueError(f"{url}: {member} is not a regular file")
                part = Path(tmp) / name
                with source, open(part, "wb") as f:
                    shutil.copyfileobj(source, f)
                os.replace(part, targets[name])
    return targets
