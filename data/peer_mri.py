"""Multi-coil MRI test data made by other tools, in the fastMRI layout.

Two generators we did not write, so that MRI defaults are checked on data they were not tuned on:

* BART (``bart phantom -x N -s C -k``): the analytic Shepp–Logan k-space with BART's own coil
  sensitivities, no readout oversampling.
* ISMRMRD (``ismrmrd_generate_cartesian_shepp_logan``): a raw ISMRMRD file with readout
  oversampling (the k-space is twice as wide as the image along the readout, like the fastMRI
  knee and brain sets), its true coil maps (``csm``) and the phantom.

Both become (C, H, W) k-space with the readout along H (rows) and the phase encodes along W
(columns, the axis fastMRI masks undersample), plus complex Gaussian noise of standard deviation
``noise × max|k|`` per real and imaginary part (seeded). The reference is the RSS of the
noiseless coil images, centre-cropped to the recon matrix, as fastMRI's ``reconstruction_rss``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "PeerKspace",
    "bart_phantom",
    "ismrmrd_shepp_logan",
    "read_ismrmrd_cartesian",
    "is_ismrmrd",
    "rss_center",
    "add_kspace_noise",
    "write_peer_file",
]

INSTALL = "Debian/Ubuntu: apt-get install bart ismrmrd-tools"


@dataclass
class PeerKspace:
    """kspace (C, H, W) complex64 noiseless, reference (h, w) float32 (RSS, recon-cropped),
    maps (C, H, W) complex64 or None (the generator's coil sensitivities), and a description."""

    kspace: np.ndarray
    reference: np.ndarray
    recon_size: tuple[int, int]
    maps: np.ndarray | None
    source: str


def _ifft2c(k: np.ndarray) -> np.ndarray:
    """The coil images of k-space (numpy in, numpy out) by ``operators.mri.ifft2c``."""
    import torch

    from operators.mri import ifft2c

    return ifft2c(torch.from_numpy(np.ascontiguousarray(k))).numpy()


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise FileNotFoundError(f"'{name}' not found on PATH ({INSTALL})")
    return exe


def _run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip()}")


def rss_center(k: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """fastMRI's reference of fully sampled k-space (C, H, W): the root-sum-of-squares of the
    centred coil images, cropped to ``size``."""
    from data.fastmri import center_crop

    return center_crop(np.sqrt((np.abs(_ifft2c(k)) ** 2).sum(0)), size).astype(np.float32)


def bart_phantom(n: int = 256, coils: int = 8, bart: str | None = None) -> PeerKspace:
    """BART's Shepp–Logan k-space (``phantom -x n -s coils -k``) and its sensitivities
    (``phantom -x n -S coils``), as (C, n, n); no oversampling, so the recon size is (n, n)."""
    from recon.peers_io import bart_to_kspace, read_cfl

    if not 1 <= int(coils) <= 8:
        raise ValueError(f"BART's phantom simulates 1 to 8 coils, not {coils}")
    exe = bart or _tool("bart")
    with tempfile.TemporaryDirectory() as tmp:
        _run([exe, "phantom", "-x", str(n), "-s", str(coils), "-k", "k"], Path(tmp))
        _run([exe, "phantom", "-x", str(n), "-S", str(coils), "s"], Path(tmp))
        k = bart_to_kspace(read_cfl(Path(tmp) / "k")).astype(np.complex64)
        maps = bart_to_kspace(read_cfl(Path(tmp) / "s")).astype(np.complex64)
    # BART's first two axes are (read, phase) = (x, y): rows = readout, as fastMRI
    return PeerKspace(k, rss_center(k, (n, n)), (n, n), maps, f"bart phantom -x {n} -s {coils}")


def is_ismrmrd(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file in the ISMRMRD layout (``dataset/data``, ``/xml``)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "dataset/data" in f and "dataset/xml" in f
    except OSError:
        return False


def read_ismrmrd_cartesian(
    path: str | Path,
) -> tuple[np.ndarray, tuple[int, int], np.ndarray | None]:
    """Fully sampled single-slice Cartesian k-space from an ISMRMRD HDF5 file (group
    ``dataset``): acquisitions stacked by ``kspace_encode_step_1`` into (C, readout, phase) with
    the readout on rows, as fastMRI stores it (so images come out as fastMRI shows them: the
    transpose of ISMRMRD's own images, stored (y, x) with the phase on rows). Returns (kspace,
    recon size (x, y) from ``reconSpace``, csm transposed to (C, x, y) if the file holds one,
    else None). Raises ValueError naming the file."""
    import xml.etree.ElementTree as ET

    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        if "dataset/data" not in f or "dataset/xml" not in f:
            raise ValueError(f"{path}: not an ISMRMRD file (no dataset/data and dataset/xml)")
        acq = f["dataset/data"][()]
        raw = f["dataset/xml"][0]
        csm = f["dataset/csm"][()] if "dataset/csm" in f else None
    xml = raw.decode() if isinstance(raw, bytes) else str(raw)
    root = ET.fromstring(xml)
    ns = {"m": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    pre = "m:" if ns else ""

    def size(space: str) -> tuple[int, int]:
        node = root.find(f"{pre}encoding/{pre}{space}/{pre}matrixSize", ns)
        if node is None:
            raise ValueError(f"{path}: ISMRMRD header has no {space}/matrixSize")
        return int(node.find(f"{pre}x", ns).text), int(node.find(f"{pre}y", ns).text)

    enc, rec = size("encodedSpace"), size("reconSpace")
    acq = acq[(acq["head"]["flags"].astype(np.uint64) & np.uint64(1 << 18)) == 0]  # no noise scans
    if len(acq) == 0:
        raise ValueError(f"{path}: no imaging readouts (only noise scans)")
    head = acq["head"]
    if len(np.unique(head["number_of_samples"])) > 1 or len(np.unique(head["active_channels"])) > 1:
        raise ValueError(f"{path}: readouts of different lengths or channel counts")
    ch = int(head["active_channels"][0])
    ns_ = int(head["number_of_samples"][0])
    if ns_ != enc[0]:
        raise ValueError(f"{path}: readouts of {ns_} samples, header encodes {enc[0]}")
    k = np.zeros((ch, enc[0], enc[1]), np.complex64)
    slices = np.unique(head["idx"]["slice"])
    if len(slices) > 1:
        raise ValueError(f"{path}: {len(slices)} slices; one-slice ISMRMRD files are read")
    reps = np.unique(head["idx"]["repetition"])
    if len(reps) > 1:
        raise ValueError(
            f"{path}: {len(reps)} repetitions, and recon mri reads files with one: a single "
            "fully sampled repetition (it undersamples it itself); write one repetition's "
            "acquisitions to a file of its own"
        )
    steps = head["idx"]["kspace_encode_step_1"].astype(int)
    if sorted(steps.tolist()) != list(range(enc[1])):
        lines = len(np.unique(steps))
        why = (
            f"{lines} of {enc[1]} phase-encoding lines present (undersampled?)"
            if lines < enc[1]
            else f"{len(steps)} readouts for {enc[1]} lines (averages?)"
        )
        raise ValueError(
            f"{path}: {why}; fully sampled Cartesian k-space with each line once is read "
            "(recon mri undersamples it)"
        )
    for h, d in zip(head, acq["data"], strict=True):
        v = np.asarray(d, np.float32).view(np.complex64).reshape(ch, ns_)
        k[:, :, int(h["idx"]["kspace_encode_step_1"])] = v
    maps = None
    if csm is not None:
        c = csm.view(np.complex64) if csm.dtype.kind == "V" else np.asarray(csm, np.complex64)
        maps = np.transpose(c.reshape(csm.shape)[0], (0, 2, 1)).astype(np.complex64)
    return k, rec, maps


def ismrmrd_shepp_logan(n: int = 128, coils: int = 8, oversampling: int = 2) -> PeerKspace:
    """``ismrmrd_generate_cartesian_shepp_logan -m n -c coils -O oversampling -n 0``: k-space
    (C, oversampling·n, n) with the readout on rows; the recon size is (n, n)."""
    exe = _tool("ismrmrd_generate_cartesian_shepp_logan")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [exe, "-o", "sl.h5", "-m", str(n), "-c", str(coils), "-O", str(oversampling)]
        _run([*cmd, "-n", "0"], Path(tmp))
        k, rec, maps = read_ismrmrd_cartesian(Path(tmp) / "sl.h5")
    size = (rec[0], rec[1])
    desc = f"ismrmrd_generate_cartesian_shepp_logan -m {n} -c {coils} -O {oversampling}"
    return PeerKspace(k, rss_center(k, size), size, maps, desc)


def add_kspace_noise(k: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    """k + complex Gaussian noise, σ = noise × max|k| per real and imaginary part (seeded)."""
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    s = noise * float(np.abs(k).max())
    n = rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)
    return (k + s * n).astype(np.complex64)


def write_peer_file(path: str | Path, data: PeerKspace, noise: float, seed: int = 0) -> Path:
    """One-slice fastMRI-layout file of ``data`` with k-space noise ``noise`` × max|k|; the
    attrs record the generator and the noise level."""
    from data.fastmri import write_fastmri

    k = add_kspace_noise(data.kspace, noise, seed)
    attrs = {"acquisition": "multicoil", "patient_id": data.source, "kspace_noise": noise}
    return write_fastmri(
        path, k[None], data.reference[None], attrs=attrs, recon_size=data.recon_size
    )
