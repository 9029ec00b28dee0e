"""What `recon batch` has to do: find the inputs, name each one's output folder, group the work.

A *unit* is one reconstruction (what one `recon ct` / `recon mri` run does): one CT image file
(a DICOM file or a ``.npy`` image), one slice of a fastMRI ``.h5`` file, or one ``.npy``
magnitude image for simulated MRI. A *task* (what Dask schedules) is one unit (``--per slice``)
or all units of a volume. With ``--per volume`` an MRI ``.h5`` file is one unit, reconstructed
whole as ``recon mri --input FILE`` does (every slice, or ``--slice K``; reconstruction.h5 holds
them all, metrics.json fastMRI's volume metrics). For CT,
``--per volume`` makes each folder holding DICOM files one unit: that series,
reconstructed as ``recon ct --input FOLDER`` does (every slice, each warm-started from its
neighbour, resumable, written as recon.nii.gz and a derived DICOM series: ``recon.ct_series``).

Output layout mirrors the inputs: with ROOT the deepest folder holding every input, the input
ROOT/a/b/scan.dcm writes into OUT/a/b/scan/, slice k of ROOT/a/vol.h5 into
OUT/a/vol/slice_{k:03d}/ and, with ``--per volume``, the file ROOT/a/vol.h5 into OUT/a/vol/ and
the series ROOT/a/b/ into OUT/a/b/ (the series in ROOT itself into OUT/ROOT's name/); the same
files `recon ct` / `recon mri` write. A unit is
finished when its metrics.json exists: the pipelines write it atomically, and last.
"""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from data.dicom import is_dicom_file
from data.nifti import is_nifti

__all__ = ["Unit", "find_inputs", "plan_units", "group_tasks", "MARKER"]

MARKER = "metrics.json"
OPTIONS_MARK = ".batch-options"  # digest of the options a scan's files were made with


# options that change how fast a scan runs, not its result: a rerun may change them freely
NEUTRAL_OPTIONS = ("threads",)


def options_digest(modality: str, options: dict) -> str:
    """A short fingerprint of a run's options (keys starting with '_' and ``NEUTRAL_OPTIONS``
    left out): a scan is finished *with these options* when its folder's OPTIONS_MARK holds it."""
    import hashlib
    import json

    from recon.outputs import jsonable

    clean = {k: v for k, v in options.items() if not k.startswith("_") and k not in NEUTRAL_OPTIONS}
    text = json.dumps({"modality": modality, **jsonable(clean)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


CT_SUFFIXES = (".npy", ".dcm", ".dicom", ".nrrd", ".nii")  # and .nii.gz (``data.nifti.is_nifti``)
MRI_SUFFIXES = (".h5", ".npy")


@dataclass(frozen=True)
class Unit:
    """One reconstruction: ``input`` file (absolute), optional ``slice``, ``out`` folder
    (absolute), ``name`` as shown in the summary (relative to the input root) and ``volume``
    (the key grouping units into one task with ``--per volume``). ``whole``: an MRI k-space
    file reconstructed whole (its selected slices into one reconstruction.h5)."""

    input: str
    slice: int | None
    out: str
    name: str
    volume: str
    whole: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def finished(self, digest: str | None = None) -> bool:
        """Its metrics.json exists (written last), and with ``digest``, it was made with those
        options (an interrupted ``--redo`` with other options leaves scans that were not yet
        redone holding the old ones)."""
        out = Path(self.out)
        if not (out / MARKER).is_file():
            return False
        if digest is None:
            return True
        mark = out / OPTIONS_MARK
        return mark.is_file() and mark.read_text().strip() == digest


def is_input_file(path: Path, modality: str) -> bool:
    """Whether ``path`` is a scan of ``modality`` a folder search picks up: CT .npy/.dcm/.dicom,
    NRRD and NIfTI volumes, DICOM files by ``data.dicom.is_dicom_file`` (.dcm/.dicom/.ima, or
    any other name, UID names with dots too, whose preamble says DICM); MRI .h5/.npy. Hidden
    files never."""
    if path.name.startswith("."):
        return False
    suffix = path.suffix.lower()
    if modality == "mri":
        return suffix in MRI_SUFFIXES
    if is_nifti(path):
        return True
    return suffix in CT_SUFFIXES or is_dicom_file(path)


def find_inputs(specs: list[str], modality: str, exclude: Path | None = None) -> list[Path]:
    """Input files from files, folders (searched recursively) and glob patterns (``**``
    allowed), sorted and without duplicates; files under ``exclude`` (the output folder) are
    ignored. Raises ValueError naming a spec that matches nothing."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            hits = [
                p for p in sorted(path.rglob("*")) if p.is_file() and is_input_file(p, modality)
            ]
        elif path.is_file():
            hits = [path]
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
            hits = [p for p in matches if p.is_file() and is_input_file(p, modality)]
        else:
            raise ValueError(f"--inputs {spec}: no such file or folder")
        hits = [p.resolve() for p in hits]
        if exclude is not None:
            hits = [p for p in hits if not p.is_relative_to(exclude)]
        if not hits:
            kinds = "fastMRI .h5 or .npy" if modality == "mri" else "DICOM, NRRD, NIfTI or .npy"
            raise ValueError(f"--inputs {spec}: no {kinds} files found")
        found.extend(hits)
    return sorted(set(found))


def _stem(rel: Path) -> Path:
    if is_nifti(rel) and rel.suffix.lower() == ".gz":  # x.nii.gz: x
        return rel.with_suffix("").with_suffix("")
    return rel.with_suffix("") if rel.suffix.lower() in CT_SUFFIXES + MRI_SUFFIXES else rel


def _series_folders(files: list[Path], named: set[Path]) -> set[Path]:
    """The folders holding DICOM files, each a CT series: those with several, and those whose
    one DICOM file was found in a folder rather than named (``named``: files given as
    ``--inputs`` themselves, which stay single-file units)."""
    count: dict[Path, list[Path]] = {}
    for f in files:
        if is_dicom_file(f):
            count.setdefault(f.parent, []).append(f)
    return {d for d, fs in count.items() if len(fs) > 1 or fs[0] not in named}


def plan_units(
    files: list[Path],
    modality: str,
    out: Path,
    slice_index: int | None = None,
    per: str = "slice",
    named: set[Path] | None = None,
) -> tuple[list[Unit], list[dict]]:
    """(units in input order, planning failures) for the input files.

    MRI ``.h5`` files give one unit per slice (only ``slice_index`` when given), or with
    ``per="volume"`` one whole-file unit (``whole``; its ``slice`` the selection, None for all);
    a file whose slices cannot be counted becomes a failure record ``{"name", "input", "error"}``
    instead.
    CT with ``per="volume"``: one unit per DICOM series folder (input: the folder); a DICOM
    file in ``named`` (given as an input itself) alone in its folder stays a file unit, as do
    NRRD, NIfTI and ``.npy`` files.
    Raises ValueError when two inputs would write into the same output folder."""
    from recon.mri import file_slices  # fastMRI files, and one-slice ISMRMRD files

    root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path(".")
    units: list[Unit] = []
    failures: list[dict] = []
    series = (
        _series_folders(files, named or set()) if modality == "ct" and per == "volume" else set()
    )
    planned: set[Path] = set()
    for f in files:
        if f.parent in series and is_dicom_file(f):
            if f.parent not in planned:
                planned.add(f.parent)
                rel = f.parent.relative_to(root)
                base = out / (rel if rel != Path(".") else Path(root.name))
                name = f"{rel.as_posix() if rel != Path('.') else root.name}/"
                units.append(Unit(str(f.parent), None, str(base), name, name))
            continue
        rel = f.relative_to(root)
        base = out / _stem(rel)
        if modality == "mri" and f.suffix.lower() == ".h5":
            try:
                n = file_slices(f)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is recorded, not fatal
                failures.append({"name": str(rel), "input": str(f), "error": _describe(exc)})
                continue
            if slice_index is not None:
                if not 0 <= slice_index < n:
                    err = f"--slice {slice_index}: {f} has {n} slices"
                    failures.append({"name": str(rel), "input": str(f), "error": err})
                    continue
                ks = [slice_index]
            else:
                ks = list(range(n))
            if per == "volume":
                units.append(Unit(str(f), slice_index, str(base), str(rel), str(rel), True))
                continue
            for k in ks:
                units.append(Unit(str(f), k, str(base / f"slice_{k:03d}"), f"{rel}[{k}]", str(rel)))
        else:
            volume = str(rel) if modality == "mri" else str(rel.parent)
            units.append(Unit(str(f), None, str(base), str(rel), volume))
    seen: dict[str, str] = {}
    for u in units:
        if u.out in seen:
            raise ValueError(
                f"--inputs: {seen[u.out]} and {u.name} would both write into {u.out}; "
                "rename one of them"
            )
        seen[u.out] = u.name
    return units, failures


def group_tasks(units: list[Unit], per: str) -> list[list[Unit]]:
    """One task per unit (``per='slice'``) or per volume (``per='volume'``), in input order."""
    if per == "slice":
        return [[u] for u in units]
    if per != "volume":
        raise ValueError(f"--per {per}: expected slice or volume")
    groups: dict[str, list[Unit]] = {}
    for u in units:
        groups.setdefault(u.volume, []).append(u)
    return list(groups.values())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
