"""Training-data sources: the real CT slices and the sampler mixture."""

import shutil

import numpy as np
import pytest
import torch

from data.bundled import load_bundled
from data.training_sets import hu_to_unit, mix_samplers, real_ct_slices


def test_real_ct_slices_are_real_and_not_the_test_slice():
    slices = real_ct_slices()
    assert len(slices) == 2
    test = hu_to_unit(load_bundled("ct-small").hu)
    for s in slices:
        assert s.shape == (512, 512) and s.dtype == np.float32
        assert 0.0 <= s.min() and s.max() <= 1.0
        # real anatomy: air, soft tissue (~0.4) and bone (> 0.7) all present
        assert (s < 0.05).mean() > 0.1 and ((s > 0.38) & (s < 0.45)).mean() > 0.05
        assert (s > 0.7).mean() > 0.001
        # the 128×128 test slice is not a crop or a downsampling of a training slice
        small = s[::4, ::4]
        assert not np.allclose(small, test, atol=0.05)


def _const(v: float):
    return lambda b, g: torch.full((b, 1, 4, 4), v)


def test_mix_samplers_proportions_and_seed():
    s = mix_samplers([(_const(0.0), 3.0), (_const(1.0), 1.0)])
    out = s(4000, torch.Generator().manual_seed(0))
    assert out.shape == (4000, 1, 4, 4)
    frac = float(out[:, 0, 0, 0].mean())
    assert abs(frac - 0.25) < 0.03
    again = s(4000, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_mix_samplers_rejects_bad_weights():
    with pytest.raises(ValueError, match="weights"):
        mix_samplers([(_const(0.0), -1.0), (_const(1.0), 1.0)])


def test_ct_real_mix_sets_the_shares_of_each_source():
    from recon.train import _parse_mix, make_sampler

    # real CT only: the patches take the real slices' own values (the half-scale copies add
    # averaged ones) and have dozens of distinct values (air-only crops have one)
    s, _, desc = make_sampler("ct-real", 16, 1, (0.0, 1.0, 0.0))
    assert "0% ellipses + 100% real" in desc and "+ 0% natural" in desc
    out = s(6, torch.Generator().manual_seed(0))
    values = np.unique(np.concatenate([np.unique(x) for x in real_ct_slices()]))
    assert np.isin(out.numpy(), values).mean() > 0.9
    assert max(len(torch.unique(x)) for x in out) > 40
    # ellipses only: piecewise-constant phantoms, a few distinct values per patch
    s, _, _ = make_sampler("ct-real", 16, 1, (1.0, 0.0, 0.0))
    for x in s(6, torch.Generator().manual_seed(1)):
        assert len(torch.unique(x)) <= 20
    assert _parse_mix("0.1,0.8,0.1") == (0.1, 0.8, 0.1)
    for bad in ("0.5,0.5", "a,b,c", "0,0,0", "-1,1,1"):
        with pytest.raises(ValueError, match="--ct-real-mix"):
            _parse_mix(bad)


def test_ct_real_mix_with_other_data_is_refused(tmp_path, capsys):
    """--ct-real-mix only mixes --data ct-real batches; elsewhere it was silently ignored."""
    from recon.cli import main

    out = tmp_path / "p.safetensors"
    args = ["train", "--data", "ellipses", "--ct-real-mix", "0.2,0.6,0.2", "--steps", "1"]
    assert main([*args, "--out", str(out)]) == 2
    assert "--ct-real-mix mixes the --data ct-real batches" in capsys.readouterr().err
    assert not out.exists()


def test_colour_images_and_objects_without_an_image_in_a_training_folder(tmp_path):
    """What a DICOM export and an image folder hold: a DICOMDIR (it stopped training as
    "unreadable"), an RGB DICOM and an RGB .npy (each read as 100 slices of 100×3, all "too
    small"), a grey+alpha PNG (refused). Colour becomes its grey level, as for RGB PNGs; the
    DICOMDIR is skipped with a warning."""
    import shutil

    import pydicom
    from pydicom.data import get_testdata_file
    from skimage import color, io

    from data.training_sets import read_image_folder

    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "DICOMDIR")
    shutil.copy(get_testdata_file("SC_rgb.dcm"), tmp_path / "rgb.dcm")
    rgb = pydicom.dcmread(get_testdata_file("SC_rgb.dcm")).pixel_array
    np.save(tmp_path / "rgb.npy", rgb.astype(np.float32))
    grey = np.linspace(0, 255, 40 * 40).reshape(40, 40).astype(np.uint8)
    io.imsave(tmp_path / "la.png", np.stack([grey, np.full_like(grey, 255)], -1))
    with pytest.warns(UserWarning, match=r"1 DICOM object\(s\) without an image skipped"):
        found = read_image_folder(tmp_path, 32, normalize=False)
    names = sorted(p.name for p in found.files)
    assert names == ["la.png", "rgb.dcm", "rgb.npy"] and found.too_small == 0
    by_name = {p.name: ims for p, ims in zip(found.files, found.images, strict=True)}
    want = color.rgb2gray(rgb)
    for name in ("rgb.dcm", "rgb.npy"):
        (im,) = by_name[name]
        assert im.shape == (100, 100)
        np.testing.assert_allclose(im / im.max(), want / want.max(), atol=1e-5)
    (la,) = by_name["la.png"]
    np.testing.assert_array_equal(la, grey)


def test_a_nifti_volume_in_a_training_folder_gives_its_axial_slices(tmp_path):
    """`recon train --data FOLDER` said "no training images found" for a folder of NIfTI volumes
    (what MRI studies hold); a volume now gives its slices along the third axis, scaled by the
    volume's max, as the Colin27 training slices are read."""
    import nibabel as nib

    from data.training_sets import read_image_folder

    vol = np.random.default_rng(0).random((40, 36, 3)).astype(np.float32)
    # stored with a trailing time axis of one point, as 4-D exports are
    nib.save(nib.Nifti1Image(vol[..., None], np.eye(4)), str(tmp_path / "scan.nii.gz"))
    found = read_image_folder(tmp_path, 32, normalize=False)
    (ims,) = found.images
    assert [p.name for p in found.files] == ["scan.nii.gz"] and len(ims) == 3
    for k, im in enumerate(ims):
        np.testing.assert_allclose(im, np.rot90(vol[:, :, k]) / vol.max(), rtol=1e-6)


def test_a_channels_last_npy_is_one_image_in_training_and_in_recon_inputs(tmp_path):
    """A (H, W, 1) .npy was read as H images of W×1 and left out as "smaller" than --patch;
    it is one (H, W) image, as (1, H, W) is, for training and for recon ct / recon mri input."""
    from data.npy import load_npy_image
    from data.training_sets import read_image_file, read_image_folder

    im = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    np.save(tmp_path / "hw1.npy", im[..., None])
    np.save(tmp_path / "1hw.npy", im[None])
    for name in ("hw1.npy", "1hw.npy"):
        (got,) = read_image_file(tmp_path / name)
        np.testing.assert_array_equal(got, im)
        np.testing.assert_array_equal(load_npy_image(tmp_path / name), im)
    found = read_image_folder(tmp_path, 32)
    assert found.too_small == 0 and [len(ims) for ims in found.images] == [1, 1]
    np.save(tmp_path / "stack.npy", np.stack([im, im]))  # a stack is still refused as input
    with pytest.raises(
        ValueError, match=r"stack.npy: expected a 2-D numeric image .*\(2, 40, 48\)"
    ):
        load_npy_image(tmp_path / "stack.npy")


def test_kspace_only_fastmri_files_are_skipped_with_a_warning(tmp_path, capsys):
    """A fastMRI test/challenge .h5 (k-space, no reconstruction_rss/_esc) was refused as
    "unreadable" and aborted the folder: it is a valid file without a reference image, so it
    is skipped with a warning that says so, as a DICOMDIR is; a folder of only such files says
    it has no image to train on. An .h5 of neither kind is still refused by name."""
    import h5py

    from recon.cli import main

    data = tmp_path / "data"
    data.mkdir()
    ref = np.random.default_rng(0).random((2, 24, 24)).astype(np.float32)
    for i in range(2):
        with h5py.File(data / f"train{i}.h5", "w") as f:
            f["kspace"] = np.zeros((2, 24, 24), np.complex64)
            f["reconstruction_rss"] = ref
    with h5py.File(data / "test0.h5", "w") as f:
        f["kspace"] = np.zeros((2, 24, 24), np.complex64)
    args = ["train", "--data", str(data), "--steps", "1", "--patch", "16", "--quiet"]
    args += ["--width", "4", "--levels", "1", "--depth", "1", "--batch", "2", "--threads", "1"]
    warned = r"1 fastMRI file\(s\) with k-space only skipped \(e.g. test0.h5\): no reference image"
    with pytest.warns(UserWarning, match=warned):
        assert main([*args, "--out", str(tmp_path / "a.safetensors")]) == 0
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(data / "test0.h5", only / "test0.h5")
    with pytest.warns(UserWarning, match=warned):
        assert (
            main([*args[:2], str(only), *args[3:], "--out", str(tmp_path / "b.safetensors")]) == 2
        )
    assert "no image to train on: its 1 image file(s) hold none (k-space only" in (
        capsys.readouterr().err
    )
    with h5py.File(data / "other.h5", "w") as f:
        f["data"] = ref
    assert main([*args, "--out", str(tmp_path / "c.safetensors")]) == 2
    assert "other.h5: unreadable (no reconstruction_rss/_esc dataset" in capsys.readouterr().err


def test_a_constant_image_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    """A constant image (a blank DICOM slice) was min-max scaled to all zeros and trained on
    without a word; it is skipped with a warning naming the file, and a folder of only such
    images has nothing to train on."""
    from data.dicom_write import write_dicom_series
    from data.training_sets import read_image_folder
    from recon.cli import main

    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(tmp_path / f"im{i}.npy", rng.random((24, 24)).astype(np.float32))
    blank = np.full((1, 24, 24), -1000.0, np.float32)  # an air-only DICOM slice
    write_dicom_series(tmp_path / "blank", blank, None, pixel_spacing=(1, 1), description="t")
    match = r"1 constant image\(s\) skipped \(e.g. blank/IM_0001.dcm: every pixel -1000\)"
    with pytest.warns(UserWarning, match=match):
        found = read_image_folder(tmp_path, 16)
    assert [p.name for p in found.files] == ["im0.npy", "im1.npy"] and found.constant == 1
    assert all(float(im.max()) == 1.0 for ims in found.images for im in ims)
    only = tmp_path / "blank"
    args = ["train", "--data", str(only), "--steps", "1", "--patch", "16", "--quiet"]
    with pytest.warns(UserWarning, match="constant image"):
        assert main([*args, "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "no image to train on: 1 constant image(s)" in capsys.readouterr().err
