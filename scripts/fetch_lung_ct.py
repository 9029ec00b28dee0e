"""Fetch the two real lung CT volumes used to train and test the CT priors (once, by hand).

    .venv/bin/python scripts/fetch_lung_ct.py --out runs/lung-ct

Downloads the pyradiomics 3.1.0 source archive from PyPI (34 MB), checks its SHA-256 and keeps
``lung1_image.nrrd`` (training) and ``lung2_image.nrrd`` (test only); see ``data.lung_ct``.
"""

from __future__ import annotations

import argparse

from data.lung_ct import LUNG_CT_ARCHIVE, fetch_lung_ct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lung-ct", help="folder for the NRRD files")
    args = ap.parse_args()
    print(f"fetching {LUNG_CT_ARCHIVE} ...")
    for name, path in fetch_lung_ct(args.out).items():
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
