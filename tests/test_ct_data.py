"""CT data: DICOM series written with pydicom and read back in HU and order; clear errors;
windows; phantoms; the bundled slice."""

from __future__ import annotations

import random

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from data.bundled import load_bundled
from data.dicom import (
    DicomError,
    read_dicom_file,
    read_dicom_series,
    resample_to_spacing,
    uneven_spacing_warning,
)
from data.phantoms import ellipse_batches, random_ellipses, shepp_logan
from data.windows import (
    WINDOWS,
    parse_window,
    window_denormalize,
    window_display,
    window_display_inverse,
    window_normalize,
)


def write_ct_slice(path, stored: np.ndarray, z: float, slope=2.0, intercept=-1024.0, inst=1):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.InstanceNumber = inst
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_series_round_trip_in_hu_and_order(tmp_path):
    rng = np.random.default_rng(0)
    stored = [rng.integers(0, 2000, (12, 10)).astype(np.uint16) for _ in range(5)]
    zs = [-10.0, 2.5, 7.5, 15.0, 40.0]
    names = [f"im{i}.dcm" for i in range(5)]
    random.Random(1).shuffle(names)  # file order unrelated to position
    for i, (st, z) in enumerate(zip(stored, zs, strict=True)):
        # instance numbers deliberately reversed: the position must win
        write_ct_slice(tmp_path / names[i], st, z, inst=5 - i)
    vol = read_dicom_series(tmp_path)
    assert "uneven slice spacing (5 to 25 mm" in uneven_spacing_warning(str(tmp_path), vol)
    assert vol.hu.shape == (5, 12, 10)
    assert vol.positions == sorted(zs)
    for k in range(5):
        np.testing.assert_array_equal(vol.hu[k], stored[k].astype(np.float32) * 2.0 - 1024.0)
    assert vol.pixel_spacing == (0.7, 0.7)
    one = read_dicom_file(tmp_path / names[0])
    np.testing.assert_array_equal(one.hu, stored[0] * 2.0 - 1024.0)


def test_corrupt_file_names_the_file(tmp_path):
    write_ct_slice(tmp_path / "good.dcm", np.zeros((8, 8), np.uint16), 0.0)
    (tmp_path / "broken.dcm").write_bytes(b"this is not DICOM")
    with pytest.raises(DicomError, match=r"broken\.dcm: not a readable DICOM file"):
        read_dicom_series(tmp_path)
    with pytest.raises(DicomError, match=r"broken\.dcm"):
        read_dicom_file(tmp_path / "broken.dcm")


def test_truncated_file_and_missing_pixel_data_name_the_file(tmp_path):
    write_ct_slice(tmp_path / "full.dcm", np.zeros((16, 16), np.uint16), 0.0)
    data = (tmp_path / "full.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-200])  # pixel data cut short
    (tmp_path / "head.dcm").write_bytes(data[:300])  # header only
    with pytest.raises(DicomError, match=r"cut\.dcm: pixel data holds 312 bytes, 512 expected"):
        read_dicom_file(tmp_path / "cut.dcm")
    with pytest.raises(DicomError, match=r"head\.dcm: DICOM file has no pixel data"):
        read_dicom_file(tmp_path / "head.dcm")
    with pytest.raises(DicomError, match="no such DICOM file"):
        read_dicom_file(tmp_path / "missing.dcm")


def test_objects_without_an_image_are_skipped_in_a_series_damaged_slices_are_not(tmp_path):
    """A DICOMDIR (or a report, RT structures) beside the slices of a series is skipped with a
    warning (it stopped the whole series); a CT image file without pixel data is still an
    error naming it."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MediaStorageDirectoryStorage

    for k in range(3):
        img = np.full((16, 16), 1000 + 10 * k, np.uint16)
        write_ct_slice(tmp_path / f"s{k}.dcm", img, float(k), inst=k + 1)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    FileDataset(str(tmp_path / "DICOMDIR"), {}, file_meta=meta, preamble=b"\0" * 128).save_as(
        tmp_path / "DICOMDIR", enforce_file_format=True
    )
    with pytest.warns(UserWarning, match="1 DICOM object.*without an image skipped.*DICOMDIR"):
        vol = read_dicom_series(tmp_path)
    assert vol.hu.shape == (3, 16, 16)
    data = (tmp_path / "s0.dcm").read_bytes()
    (tmp_path / "s9.dcm").write_bytes(data[:300])  # a CT slice cut before its pixel data
    with pytest.raises(DicomError, match=r"s9\.dcm: DICOM file has no pixel data"):
        read_dicom_series(tmp_path)


def test_empty_folder_and_folder_without_dicom(tmp_path):
    with pytest.raises(DicomError, match="no DICOM files \\(empty folder\\)"):
        read_dicom_series(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DicomError, match="no DICOM files \\(only notes.txt\\)"):
        read_dicom_series(tmp_path)
    with pytest.raises(DicomError, match="not a folder"):
        read_dicom_series(tmp_path / "notes.txt")


def test_annotation_sidecar_files_are_skipped(tmp_path):
    """LIDC-IDRI series folders hold the radiologists' annotation XML next to the slices."""
    write_ct_slice(tmp_path / "1.dcm", np.ones((8, 8), np.uint16), 0.0, slope=1.0, intercept=0.0)
    (tmp_path / "069.xml").write_text("<LidcReadMessage/>")
    vol = read_dicom_series(tmp_path)
    assert vol.hu.shape == (1, 8, 8) and [p.name for p in vol.paths] == ["1.dcm"]


def test_mixed_sizes_name_the_file(tmp_path):
    write_ct_slice(tmp_path / "a.dcm", np.zeros((8, 8), np.uint16), 0.0)
    write_ct_slice(tmp_path / "b.dcm", np.zeros((8, 6), np.uint16), 1.0)
    with pytest.raises(DicomError, match=r"b\.dcm: slice size 8×6 differs from 8×8 .*a\.dcm"):
        read_dicom_series(tmp_path)


def test_localizers_are_skipped_and_an_odd_size_slice_is_named(tmp_path, capsys):
    """A scout (ImageType ...\\LOCALIZER) in the series folder, with the series' UID and size or
    another size, stopped `recon ct --input FOLDER` (exit 2, naming another file or the
    orientation); it is skipped with a warning naming it. A slice of another size that is not
    a localizer is named itself, even when its name sorts first (every other file was named)."""
    import json

    from recon.cli import main

    st = (512 + 40 * np.add.outer(np.arange(16), np.arange(16))).astype(np.uint16)
    for k in range(3):
        write_ct_slice(tmp_path / f"s{k}.dcm", st + 10 * k, 2.5 * k, inst=k + 1)
    for name, shape in (("aa_scout", (16, 16)), ("zz_scout", (16, 24))):
        write_ct_slice(tmp_path / name, np.zeros(shape, np.uint16), 50.0)
        ds = pydicom.dcmread(tmp_path / name)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.save_as(tmp_path / name)
    with pytest.warns(UserWarning, match=r"2 localizer image\(s\) skipped .*aa_scout, zz_scout"):
        vol = read_dicom_series(tmp_path)
    assert [p.name for p in vol.paths] == ["s0.dcm", "s1.dcm", "s2.dcm"]
    np.testing.assert_array_equal(vol.hu[:, 0, 0], [0.0, 20.0, 40.0])  # 512·2−1024, +10·2k
    out = tmp_path.parent / f"{tmp_path.name}-out"
    with pytest.warns(UserWarning, match="localizer"):
        assert main(["ct", "--input", str(tmp_path), "--solver", "fbp", "--views", "8",
                     "--threads", "1", "--quiet", "--out", str(out)]) == 0  # fmt: skip
    said = json.loads((out / "metrics.json").read_text())["input_warnings"]
    assert any("aa_scout" in w and "zz_scout" in w for w in said)
    assert np.load(out / "recon.npy").shape == (3, 16, 16)
    write_ct_slice(tmp_path / "a_odd.dcm", np.zeros((16, 20), np.uint16), 9.0)
    with pytest.warns(UserWarning, match="localizer"):
        assert main(["ct", "--input", str(tmp_path), "--solver", "fbp", "--views", "8",
                     "--threads", "1", "--quiet", "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "a_odd.dcm: slice size 16×20 differs from 16×16 of the other 3 slice(s)" in err


def test_order_falls_back_to_instance_number(tmp_path):
    for i, inst in enumerate([3, 1, 2]):
        st = np.full((4, 4), inst, np.uint16)
        write_ct_slice(tmp_path / f"s{i}.dcm", st, 0.0, slope=1.0, intercept=0.0, inst=inst)
    for i in range(3):  # remove the positions
        ds = pydicom.dcmread(tmp_path / f"s{i}.dcm")
        del ds.ImagePositionPatient
        ds.save_as(tmp_path / f"s{i}.dcm")
    vol = read_dicom_series(tmp_path)
    assert [float(v[0, 0]) for v in vol.hu] == [1.0, 2.0, 3.0]


def test_pixel_padding_value_is_clipped(tmp_path):
    st = np.full((4, 4), 1100, np.uint16)
    st[1, 1] = 5  # the scanner's padding value: −1019 HU, above −2000, so only the tag says so
    write_ct_slice(tmp_path / "p.dcm", st, 0.0, slope=1.0, intercept=-1024.0)
    ds = pydicom.dcmread(tmp_path / "p.dcm")
    ds.add_new(0x00280120, "US", 5)  # PixelPaddingValue (VR US: unsigned pixels)
    ds.save_as(tmp_path / "p.dcm")
    hu = read_dicom_file(tmp_path / "p.dcm").hu
    assert hu[1, 1] == -1024.0 and hu[0, 0] == 76.0


def test_duplicate_positions_dropped_and_padding_clipped(tmp_path):
    st = np.full((4, 4), 10, np.uint16)
    st[0, 0] = 0  # stored 0 -> HU = 0*1 - 3024: scanner padding
    write_ct_slice(tmp_path / "a.dcm", st, 0.0, slope=1.0, intercept=-3024.0)
    write_ct_slice(tmp_path / "b.dcm", st, 0.0, slope=1.0, intercept=-3024.0)
    with pytest.warns(UserWarning, match="b.dcm, at the position of a.dcm"):
        vol = read_dicom_series(tmp_path)
    assert vol.hu.shape[0] == 1
    assert vol.hu[0, 0, 0] == -1024.0


def test_a_folder_of_two_series_is_refused(tmp_path):
    """Two series in one folder (another SeriesInstanceUID) would interleave into one volume:
    refused naming a file of each."""
    from tests.test_ct_series import _series

    _series(tmp_path / "s", n=2)
    other = tmp_path / "s" / "other.dcm"
    ds = pydicom.dcmread(tmp_path / "s" / "f0.dcm")
    ds.SeriesInstanceUID = "1.2.3.4.6"
    ds.save_as(other)
    with pytest.raises(DicomError, match="2 series .*give each series its own folder"):
        read_dicom_series(tmp_path / "s")


def test_resample_to_common_spacing():
    img = np.ones((100, 100), np.float32)
    out = resample_to_spacing(img, (0.7, 0.7), (1.4, 1.4))
    assert out.shape == (50, 50)
    with pytest.raises(ValueError):
        resample_to_spacing(img, (0.7, 0.7), (0.0, 1.0))


def test_windows_by_name_and_values_round_trip():
    assert parse_window("lung") == WINDOWS["lung"]
    assert parse_window("-600,1500") == (-600.0, 1500.0)
    with pytest.raises(ValueError, match="LEVEL,WIDTH"):
        parse_window("liver")
    hu = np.linspace(-1500, 3000, 50)
    for w in WINDOWS:
        np.testing.assert_allclose(window_denormalize(window_normalize(hu, w), w), hu, atol=1e-9)
        d = window_display(hu, w)
        assert d.min() == 0.0 and d.max() == 1.0
    t = torch.tensor([-600.0 - 750.0, -600.0, -600.0 + 750.0])
    assert torch.allclose(window_display(t, "lung"), torch.tensor([0.0, 0.5, 1.0]))
    inside = torch.linspace(-125.0, 225.0, 11, dtype=torch.float64)  # the mediastinum window
    assert torch.allclose(
        window_display_inverse(window_display(inside, "mediastinum"), "50,350"), inside
    )
    assert parse_window(" Bone ") == WINDOWS["bone"] and parse_window([40, 80]) == (40.0, 80.0)
    for bad in ("40,0", "1,2,3", "a,b", (40.0,)):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_phantoms_seeded_and_in_range():
    a, b, c = random_ellipses(64, seed=1), random_ellipses(64, seed=1), random_ellipses(64, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.std() > 0.05  # not blank
    sl = shepp_logan(64)
    for img in (a, sl):
        assert img.shape == (64, 64) and img.dtype == np.float32
        assert img.min() >= 0 and img.max() <= 1
    assert sl.max() > 0.9 and sl[0, 0] == 0  # bright skull, empty corner
    assert not random_ellipses(32, n=0, seed=0).any()
    with pytest.raises(ValueError):
        random_ellipses(4)


def test_ellipse_batches_seeded_stream():
    first = ellipse_batches(48, 5, seed=7)
    again = ellipse_batches(48, 5, seed=7)
    b1, b2 = next(first), next(first)
    assert b1.shape == (5, 1, 48, 48) and b1.dtype == torch.float32
    assert torch.equal(b1, next(again)) and torch.equal(b2, next(again))
    assert not torch.equal(b1, b2) and not torch.equal(b1[0], b1[1])
    assert float(b1.min()) >= 0 and float(b1.max()) <= 1
    assert next(ellipse_batches(48, 5, seed=8)).ne(b1).any()


def test_bundled_real_slice():
    sl = load_bundled("ct-small")
    assert sl.hu.shape == (128, 128)
    assert -1100 < sl.hu.min() < -500 and 500 < sl.hu.max() < 3000  # air ... bone, in HU
    assert sl.pixel_spacing[0] > 0
    with pytest.raises(ValueError, match="unknown bundled"):
        load_bundled("nope")


def test_pydicom_reads_what_we_write(tmp_path):
    write_ct_slice(tmp_path / "x.dcm", np.zeros((4, 4), np.uint16), 0.0)
    assert pydicom.dcmread(tmp_path / "x.dcm").Modality == "CT"


def test_uneven_spacing_and_missing_positions_are_said(tmp_path):
    """Slices not evenly spaced get a warning from ``uneven_spacing_warning`` (the NIfTI affine
    takes the mean step of the slices written), naming the files around the widest gap; evenly
    spaced slices, a subrange of them or a whole even series say nothing, and reading says
    nothing about spacing. A slice lacking ImagePositionPatient gets a warning naming it (the
    whole series falls back to InstanceNumber order without geometry)."""
    import warnings

    st = np.full((4, 4), 1024, np.uint16)
    (tmp_path / "even").mkdir()
    for k, z in enumerate((0.0, 2.5, 5.0)):
        write_ct_slice(tmp_path / "even" / f"{k}.dcm", st, z, inst=k + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = read_dicom_series(tmp_path / "even")
    assert vol.hu.shape[0] == 3 and uneven_spacing_warning("x", vol) is None
    (tmp_path / "gap").mkdir()
    for k, z in enumerate((0.0, 2.5, 7.5, 10.0, 12.5)):
        write_ct_slice(tmp_path / "gap" / f"{k}.dcm", st, z, inst=k + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the gap is said for the slices a run writes
        vol = read_dicom_series(tmp_path / "gap")
    said = uneven_spacing_warning("gap", vol)
    assert said.startswith("gap: uneven slice spacing (2.5 to 5 mm")
    assert "the widest, 5 mm, between 1.dcm and 2.dcm (a slice missing?)" in said
    assert uneven_spacing_warning("gap", vol, [2, 3, 4]) is None  # 7.5, 10, 12.5: even
    assert "takes the mean, 3.75 mm" in uneven_spacing_warning("gap", vol, [0, 1, 2])
    ds = pydicom.dcmread(tmp_path / "gap" / "1.dcm")
    del ds.ImagePositionPatient
    ds.save_as(tmp_path / "gap" / "1.dcm")
    with pytest.warns(UserWarning, match="1 of 5 slices have no ImagePositionPatient .e.g. 1.dcm"):
        read_dicom_series(tmp_path / "gap")


def test_a_file_that_does_not_say_it_is_ct_in_hu_is_warned_about(tmp_path):
    """No Modality and no rescale tags: the stored values are all there is, taken as HU, and
    the reader says so (a JPEG-LS test image of 0-65535 went through silently)."""
    write_ct_slice(tmp_path / "a.dcm", np.full((4, 4), 7, np.uint16), 0.0)
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    del ds.Modality, ds.RescaleSlope, ds.RescaleIntercept
    ds.save_as(tmp_path / "a.dcm")
    with pytest.warns(UserWarning, match="taken as HU"):
        assert read_dicom_file(tmp_path / "a.dcm").hu.max() == 7.0


def test_slices_of_another_orientation_or_grid_are_refused_by_name(tmp_path):
    """A coronal localizer with the series' UID became a slice (shearing the NIfTI affine by
    15 mm per slice), and a slice with other pixel spacing was labelled with the first one's:
    both now stop the series, naming the file."""
    st = np.full((4, 4), 1024, np.uint16)
    for case in ("iop", "spacing"):
        folder = tmp_path / case
        folder.mkdir()
        for k, z in enumerate((0.0, 2.5, 5.0)):
            write_ct_slice(folder / f"{k}.dcm", st, z, inst=k + 1)
        for k in range(3):
            ds = pydicom.dcmread(folder / f"{k}.dcm")
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0] if k < 2 else [1, 0, 0, 0, 0, -1]
            if case == "spacing":
                ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
                ds.PixelSpacing = [0.8, 0.8] if k == 2 else [0.7, 0.7]
            ds.save_as(folder / f"{k}.dcm")
        words = "ImageOrientationPatient" if case == "iop" else "PixelSpacing"
        with pytest.raises(DicomError, match=rf"2.dcm: {words} .* differs from .* of 0.dcm"):
            read_dicom_series(folder)


def test_a_patient_folder_points_to_its_series(tmp_path):
    """An LIDC-style patient folder (study/series subfolders) was "no DICOM files (empty
    folder)"; the message names a subfolder and `recon batch --per volume`."""
    (tmp_path / "LIDC-IDRI-0001" / "study" / "series").mkdir(parents=True)
    with pytest.raises(DicomError, match=r"LIDC-IDRI-0001: no DICOM files in it, but 1 "
                       r"subfolder\(s\) \(e.g. study\).*--per volume"):  # fmt: skip
        read_dicom_series(tmp_path / "LIDC-IDRI-0001")


def test_slices_without_a_series_uid_beside_a_series_are_refused(tmp_path):
    """A second series without SeriesInstanceUID in the folder was interleaved with the first
    (24 slices at half the spacing, no warning); one series has its UID on every slice."""
    st = np.full((4, 4), 1024, np.uint16)
    for k, z in enumerate((0.0, 2.5, 5.0)):
        write_ct_slice(tmp_path / f"{k}.dcm", st, z, inst=k + 1)
        ds = pydicom.dcmread(tmp_path / f"{k}.dcm")
        if k < 2:
            ds.SeriesInstanceUID = "1.2.3"
        elif "SeriesInstanceUID" in ds:
            del ds.SeriesInstanceUID
        ds.save_as(tmp_path / f"{k}.dcm")
    with pytest.raises(DicomError, match=r"1 of 3 slices have no SeriesInstanceUID \(e.g. 2.dcm\)"):
        read_dicom_series(tmp_path)
