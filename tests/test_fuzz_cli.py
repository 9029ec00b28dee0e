"""A table of bad inputs through the command line: each is refused before any work with exit 2,
one line on stderr naming what is wrong, and no output folder left behind."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file
from safetensors.torch import save_file

from data.fastmri import write_fastmri
from recon.cli import main

CT = ["ct", "--input", "phantom:shepp-logan", "--size", "32", "--views", "10", "--quiet"]
MRI = ["mri", "--input", "bundled:brain-t1", "--coils", "2", "--quiet"]


def _files(root):
    """Bad files of every kind a user might hand over, written in their real formats."""
    f = {}
    f["missing"] = root / "nope.dcm"
    (root / "empty").mkdir()
    f["empty_dir"] = root / "empty"
    f["corrupt_dcm"] = root / "broken.dcm"
    f["corrupt_dcm"].write_bytes(b"DICM" + b"\x00" * 40)
    f["mr_dcm"] = get_testdata_file("MR_small.dcm")
    f["text_npy"] = root / "text.npy"
    f["text_npy"].write_text("not an array")
    f["empty_npy"] = root / "empty.npy"
    f["empty_npy"].write_bytes(b"")
    f["nan_npy"] = root / "nan.npy"
    np.save(f["nan_npy"], np.full((8, 8), np.nan))
    f["vol_npy"] = root / "vol.npy"
    np.save(f["vol_npy"], np.zeros((2, 8, 8)))
    f["complex_npy"] = root / "c.npy"
    np.save(f["complex_npy"], np.ones((8, 8), np.complex64))
    f["corrupt_h5"] = root / "bad.h5"
    f["corrupt_h5"].write_bytes(b"\x89HDF\r\n" + b"\x00" * 20)
    f["no_kspace_h5"] = root / "nok.h5"
    with h5py.File(f["no_kspace_h5"], "w") as h:
        h["other"] = np.zeros(3)
    f["corrupt_ckpt"] = root / "c.safetensors"
    f["corrupt_ckpt"].write_bytes(b"\x00 not safetensors")
    f["foreign_ckpt"] = root / "f.safetensors"
    save_file({"w": torch.zeros(2)}, str(f["foreign_ckpt"]))
    from priors.checkpoint import load_prior, save_checkpoint

    nan_prior = load_prior("ridge-ct")
    with torch.no_grad():
        next(nan_prior.parameters()).fill_(float("nan"))
    f["nan_ckpt"] = root / "nanw.safetensors"
    save_checkpoint(f["nan_ckpt"], nan_prior)
    f["pickle_ckpt"] = root / "model.pt"
    f["pickle_ckpt"].write_bytes(b"\x80\x04\x95 a pickle, never unpickled")
    f["zero_kspace"] = root / "zerok.h5"
    with h5py.File(f["zero_kspace"], "w") as h:
        h["kspace"] = np.zeros((1, 2, 32, 32), np.complex64)
    f["group_kspace"] = root / "groupk.h5"
    with h5py.File(f["group_kspace"], "w") as h:
        h.create_group("kspace")
    f["empty_kspace"] = root / "emptyk.h5"
    with h5py.File(f["empty_kspace"], "w") as h:
        h["kspace"] = np.zeros((0, 2, 32, 32), np.complex64)
    import pydicom

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PixelData = ds.PixelData[:1000]
    f["truncated_dcm"] = root / "cut.dcm"
    ds.save_as(f["truncated_dcm"])
    import nibabel

    f["tiny_nifti"] = root / "tiny.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), f["tiny_nifti"])
    f["tiny_npy"] = root / "tiny.npy"
    np.save(f["tiny_npy"], np.arange(9.0).reshape(3, 3))
    f["small_ref"] = root / "smallref.h5"  # its header's recon size is 32×32 (without a
    # header the reconstruction is cropped to the reference, as fastMRI's evaluation does)
    write_fastmri(f["small_ref"], np.ones((1, 2, 32, 32), np.complex64),
                  np.ones((1, 10, 10), np.float32), recon_size=(32, 32))  # fmt: skip
    for name, cfg in {
        "cfg_nan": {"pnp-admm": {"rho_rel": float("nan")}},
        "cfg_string": {"pnp-admm": {"rho_rel": "abc"}},
        "cfg_unknown": {"pnp-admm": {"rho": 0.1}},
        "cfg_list": [1, 2],
        "cfg_fraction_iters": {"pnp-admm": {"iters": 2.7}},
    }.items():
        f[name] = root / f"{name}.json"
        f[name].write_text(json.dumps(cfg))  # NaN as JSON's NaN token, as Python writes it
    f["cfg_latin1"] = root / "latin1.json"
    f["cfg_latin1"].write_bytes('{"tv": {"weight_rel": 0.1}} # é'.encode("latin-1"))
    f["cfg_not_json"] = root / "bad.json"
    f["cfg_not_json"].write_text("{pnp-admm: ")
    return f


CASES = [
    # (name, argv builder, words the one-line message must contain)
    ("missing file", lambda f: ["ct", "--input", str(f["missing"])], "no such file"),
    ("folder without DICOM", lambda f: ["ct", "--input", str(f["empty_dir"])], "no DICOM files"),
    ("corrupt DICOM", lambda f: ["ct", "--input", str(f["corrupt_dcm"])], "broken.dcm"),
    ("MR DICOM to recon ct", lambda f: ["ct", "--input", str(f["mr_dcm"])], "not CT"),
    ("text as .npy", lambda f: ["ct", "--input", str(f["text_npy"])], "text.npy"),
    ("empty .npy", lambda f: ["ct", "--input", str(f["empty_npy"])], "empty.npy"),
    ("NaN image", lambda f: ["ct", "--input", str(f["nan_npy"])], "nan.npy"),
    ("3-D .npy", lambda f: ["ct", "--input", str(f["vol_npy"])], "vol.npy"),
    ("complex .npy to CT", lambda f: ["ct", "--input", str(f["complex_npy"])], "c.npy"),
    ("truncated DICOM", lambda f: ["ct", "--input", str(f["truncated_dcm"])], "cut.dcm: pixel"),
    ("3×3 image", lambda f: ["ct", "--input", str(f["tiny_npy"])], "tiny.npy: a 3×3 image"),
    ("4×4 volume", lambda f: ["ct", "--input", str(f["tiny_nifti"])], "tiny.nii.gz: 4×4 slices"),
    ("corrupt HDF5", lambda f: ["mri", "--input", str(f["corrupt_h5"])], "bad.h5"),
    ("HDF5 without k-space", lambda f: ["mri", "--input", str(f["no_kspace_h5"])], "nok.h5"),
    ("corrupt checkpoint", lambda f: [*CT, "--prior", str(f["corrupt_ckpt"])], "c.safetensors"),
    ("foreign checkpoint", lambda f: [*CT, "--prior", str(f["foreign_ckpt"])], "f.safetensors"),
    ("unknown prior", lambda f: [*CT, "--prior", "no-such-prior"], "no-such-prior"),
    ("NaN weights", lambda f: [*CT, "--prior", str(f["nan_ckpt"])], "NaN or infinite value"),
    ("pickled .pt", lambda f: [*CT, "--prior", str(f["pickle_ckpt"])], "never loaded"),
    ("all-zero k-space", lambda f: ["mri", "--input", str(f["zero_kspace"])], "zerok.h5"),
    ("k-space a group", lambda f: ["mri", "--input", str(f["group_kspace"])], "groupk.h5"),
    ("no slices", lambda f: ["mri", "--input", str(f["empty_kspace"])], "emptyk.h5"),
    ("small reference", lambda f: ["mri", "--input", str(f["small_ref"])], "10×10, smaller"),
    ("config NaN", lambda f: [*CT, "--config", str(f["cfg_nan"])], "rho_rel"),
    ("config string", lambda f: [*CT, "--config", str(f["cfg_string"])], "rho_rel"),
    ("config unknown key", lambda f: [*CT, "--config", str(f["cfg_unknown"])], "'rho'"),
    ("config not an object", lambda f: [*CT, "--config", str(f["cfg_list"])], "JSON object"),
    ("config iters 2.7", lambda f: [*CT, "--config", str(f["cfg_fraction_iters"])], "iters"),
    ("config not UTF-8", lambda f: [*CT, "--config", str(f["cfg_latin1"])], "UTF-8"),
    ("config not JSON", lambda f: [*CT, "--config", str(f["cfg_not_json"])], "not valid JSON"),
    ("--noise inf", lambda f: [*CT, "--noise", "inf"], "--noise"),
    ("--noise 1e9", lambda f: [*CT, "--noise", "1e9"], "--noise: must be ≤ 1"),
    ("--photons nan", lambda f: [*CT, "--photons", "nan"], "--photons"),
    ("--views 0", lambda f: [*CT, "--views", "0"], "--views"),
    ("--size 100000", lambda f: [*CT, "--size", "100000"], "--size"),
    ("--iters -1", lambda f: [*CT, "--iters", "-1"], "iters"),
    ("--tol -1", lambda f: [*CT, "--tol", "-1"], "tol"),
    ("--objective-every -1", lambda f: [*CT, "--objective-every", "-1"], "--objective-every"),
    ("--slice on one image", lambda f: [*CT, "--slice", "1"], "single image"),
    ("--accel 0.5", lambda f: [*MRI, "--accel", "0.5"], "--accel"),
    ("--accel 1000", lambda f: [*MRI, "--accel", "1000", "--solver", "zero-filled"], "--accel"),
    ("--threads 0", lambda f: [*CT, "--threads", "0"], "--threads"),
    ("unknown window", lambda f: [*CT, "--window", "nowhere"], "window"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name, argv, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(files, tmp_path, capsys, name, argv,
                                                         words):  # fmt: skip
    args = argv(files)
    if "--quiet" not in args:
        args = [*args, "--quiet"]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2, name
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback, no stray warning
    assert words in err, err
    assert not out.exists()
