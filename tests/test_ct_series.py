"""`recon ct --input SERIES_FOLDER`: every slice, warm-started from its neighbour, resumable
after a kill, written back as a DICOM series (HU, geometry, a new series) that pydicom reads in
the input's order and as NIfTI with the affine of the DICOM geometry."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

import recon.ct as ct_module
from data.dicom import read_dicom_series
from data.phantoms import random_ellipses
from recon.cli import main

pytestmark = pytest.mark.slow  # whole DICOM series: `pytest -m "not slow"` skips them

N, SIZE = 5, 40
# a coronal series: rows run along +x (patient left), columns along −z (feet); slices step in y
ORIENT = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SPACING = (0.8, 0.7)  # between rows, between columns (mm)
COMMON = ["--views", "24", "--noise", "0.01", "--solver", "tv", "--iters", "12", "--quiet"]


def _series(folder, n: int = N) -> list[tuple[float, float, float]]:
    """n slices of slowly changing ellipse phantoms in HU (−1000..~1000), shuffled file names,
    IPP stepping 2.5 mm in y from slice to slice; returns the positions in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    base = random_ellipses(SIZE, seed=3)
    positions = []
    for k in range(n):
        img = np.clip(base * (1 + 0.05 * k), 0, 1) * 2000 - 1000  # HU
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"f{(k * 3) % n}.dcm"  # file names unrelated to the order
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.StudyInstanceUID = "CT", "P-42", "1.2.3.4"
        ds.SeriesInstanceUID, ds.SeriesNumber = "1.2.3.4.5", 3
        ds.Rows = ds.Columns = SIZE
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.PixelSpacing = list(SPACING)
        pos = (-16.0, 30.0 + 2.5 * k, 12.0)
        positions.append(pos)
        ds.ImagePositionPatient = list(pos)
        ds.ImageOrientationPatient = list(ORIENT)
        ds.SliceThickness = 2.5
        ds.InstanceNumber = n - k
        ds.PixelData = np.rint(img + 1024).astype("<u2").tobytes()
        ds.save_as(str(path), enforce_file_format=True)
    return positions


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "series"
    return folder, _series(folder)


@pytest.fixture(scope="module")
def full_run(series, tmp_path_factory):
    """One uninterrupted run over the whole series."""
    out = tmp_path_factory.mktemp("runs") / "full"
    assert main(["ct", "--input", str(series[0]), *COMMON, "--out", str(out)]) == 0
    return out


def test_every_slice_is_reconstructed_with_volume_and_slice_metrics(series, full_run):
    vol = np.load(full_run / "recon.npy")
    assert vol.shape == (N, SIZE, SIZE)
    m = json.loads((full_run / "metrics.json").read_text())
    assert [r["slice"] for r in m["slices"]] == list(range(N))
    ref = read_dicom_series(series[0]).hu
    drange = float(ref.max() - ref.min())
    expect = 10 * np.log10(drange**2 / np.mean((vol.astype(np.float64) - ref) ** 2))
    assert m["psnr"] == pytest.approx(expect, rel=1e-9)
    assert m["psnr"] > m["baseline"]["psnr"] + 3  # TV well above FBP at 24 views
    assert all(r["psnr"] > r["fbp_psnr"] for r in m["slices"])
    assert m["resumed_slices"] == 0 and m["slices_per_minute"] > 0
    mid = ref[len(ref) // 2]  # no --window: the PNGs span the shown slice's reference range
    assert m["display"] == {
        "window": None,
        "range": [float(mid.min()), float(mid.max())],
        "units": "HU",
    }
    assert not (full_run / ".slices").exists()  # the cache goes once all is written


def test_dicom_series_keeps_hu_geometry_and_order(series, full_run):
    folder, positions = series
    vol = np.load(full_run / "recon.npy")
    back = read_dicom_series(full_run / "dicom")  # sorted by position, as the input
    assert back.patient_positions == positions
    assert back.orientation == ORIENT and back.pixel_spacing == SPACING
    assert back.thickness == 2.5
    # every HU a reconstruction reaches is stored (air undershoots −1024; the reader's padding
    # rule takes HU ≤ −2000), rounded to integers
    inside = vol > -2000
    assert inside.mean() > 0.999
    assert np.abs(back.hu - vol)[inside].max() <= 0.5 + 1e-3
    files = sorted((full_run / "dicom").glob("*.dcm"))
    headers = [pydicom.dcmread(f) for f in files]
    uids = {h.SeriesInstanceUID for h in headers}
    assert len(uids) == 1 and uids != {"1.2.3.4.5"}  # one new series
    assert len({h.SOPInstanceUID for h in headers}) == N
    h = headers[0]
    assert h.PatientID == "P-42" and h.StudyInstanceUID == "1.2.3.4"  # the same patient, study
    assert "DERIVED" in h.ImageType and "tv" in h.DerivationDescription
    assert float(h.RescaleSlope) == 1.0 and float(h.RescaleIntercept) == -3024.0
    assert h.FrameOfReferenceUID == headers[-1].FrameOfReferenceUID
    assert h.Modality == "CT" and int(h.SeriesNumber) == 1003


def test_nifti_volume_has_the_affine_of_the_dicom_geometry(series, full_run):
    _, positions = series
    vol = np.load(full_run / "recon.npy")
    img = nib.load(full_run / "recon.nii.gz")
    data = np.asarray(img.dataobj)
    assert data.shape == (SIZE, SIZE, N)
    assert np.array_equal(data, np.transpose(vol, (2, 1, 0)))  # data[i, j, k] = vol[k, j, i]
    r, c = np.array(ORIENT[:3]), np.array(ORIENT[3:])
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    for i, j, k in [(0, 0, 0), (7, 3, 2), (SIZE - 1, SIZE - 1, N - 1)]:
        # DICOM: voxel (column i, row j) of slice k sits at IPP_k + i·Δc·r + j·Δr·c (LPS)
        lps = np.array(positions[k]) + i * SPACING[1] * r + j * SPACING[0] * c
        got = img.affine @ np.array([i, j, k, 1.0])
        assert np.allclose(got[:3], lps_to_ras * lps, atol=1e-4)


def test_a_nifti_volume_reads_back_with_the_series_values_and_geometry(series, full_run, tmp_path):
    """read_nifti_volume inverts write_nifti_volume: recon.nii.gz gives recon.npy's values and
    the source series' positions, orientation and spacing; `recon ct` takes it as a volume,
    every slice, as it takes the DICOM series."""
    from data.dicom import read_dicom_series
    from data.nifti import read_nifti_volume

    vol = read_nifti_volume(full_run / "recon.nii.gz")
    np.testing.assert_array_equal(vol.hu, np.load(full_run / "recon.npy"))
    src = read_dicom_series(series[0])
    assert vol.pixel_spacing == pytest.approx(src.pixel_spacing)
    assert np.allclose(vol.patient_positions, src.patient_positions, atol=1e-4)
    assert np.allclose(vol.orientation, src.orientation, atol=1e-6)
    assert vol.thickness == pytest.approx(2.5)
    out = tmp_path / "from-nifti"
    args = ["ct", "--input", str(full_run / "recon.nii.gz"), *COMMON, "--out", str(out)]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [r["slice"] for r in m["slices"]] == list(range(N))
    assert (out / "recon.nii.gz").is_file() and len(list((out / "dicom").glob("*.dcm"))) == N


def test_a_killed_run_resumes_without_redoing_finished_slices(series, full_run, tmp_path,
                                                              monkeypatch):  # fmt: skip
    """The run dies after 3 slices (an exception from the fourth, like a kill between writes):
    no metrics.json, 3 cached slices. The rerun reconstructs only the 2 others and ends
    bit-identical to the uninterrupted run (each slice starts from the same neighbour); the
    middle slice was cached, and history.json is still its history."""
    out = tmp_path / "resumed"
    real = ct_module.reconstruct_slice
    calls = []

    def dies_on_fourth(*a, **kw):
        calls.append(a[5])  # the seed: --seed + slice index
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr("recon.ct_series.reconstruct_slice", dies_on_fourth)
    # the CLI turns the interrupt into its exit status, as for Ctrl-C
    assert main(["ct", "--input", str(series[0]), *COMMON, "--out", str(out)]) == 130
    assert not (out / "metrics.json").exists()
    assert len(list((out / ".slices").glob("*.npz"))) == 3
    calls.clear()

    def counts(*a, **kw):
        calls.append(a[5])
        return real(*a, **kw)

    monkeypatch.setattr("recon.ct_series.reconstruct_slice", counts)
    assert main(["ct", "--input", str(series[0]), *COMMON, "--out", str(out)]) == 0
    assert calls == [3, 4]  # seeds 0 + k: only the unfinished slices
    assert np.array_equal(np.load(out / "recon.npy"), np.load(full_run / "recon.npy"))
    assert json.loads((out / "metrics.json").read_text())["resumed_slices"] == 3
    history = json.loads((out / "history.json").read_text())
    whole = json.loads((full_run / "history.json").read_text())
    assert history.keys() == whole.keys() and len(history["psnr"]) > 0
    for key in ("rel_change", "psnr"):  # the same iterates (only the seconds differ)
        assert history[key] == whole[key]


def test_slices_made_with_other_options_are_redone(series, tmp_path, monkeypatch):
    out = tmp_path / "o"
    real = ct_module.reconstruct_slice
    calls = []

    def dies_on_second(*a, **kw):
        calls.append(a[5])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr("recon.ct_series.reconstruct_slice", dies_on_second)
    args = ["ct", "--input", str(series[0]), *COMMON, "--slice", "0:3", "--out", str(out)]
    assert main(args) == 130
    calls.clear()
    monkeypatch.setattr("recon.ct_series.reconstruct_slice",
                        lambda *a, **kw: calls.append(a[5]) or real(*a, **kw))  # fmt: skip
    other = [*COMMON[:1], "20", *COMMON[2:]]  # --views 20
    assert main(["ct", "--input", str(series[0]), *other, "--slice", "0:3", "--out", str(out)]) == 0
    assert calls == [0, 1, 2]
    assert np.load(out / "recon.npy").shape == (3, SIZE, SIZE)


def test_cached_slices_of_other_images_are_redone(tmp_path, monkeypatch):
    """The per-slice cache was keyed by index: a slice put back into the folder after a kill
    shifted every later slice, and the rerun stacked the old results at the new positions
    (exit 0, one slice twice, one missing). A cached slice now carries a digest of its image
    and of the slices before it (its warm starts)."""
    import shutil

    folder = tmp_path / "s"
    _series(folder)
    middle = folder / "f1.dcm"  # slice 2 (file names are f{3k mod 5})
    kept = tmp_path / "f1.dcm"
    shutil.move(middle, kept)
    real = ct_module.reconstruct_slice
    calls = []

    def record(*a, **kw):
        calls.append(a[5])  # the seed: --seed + slice index
        return real(*a, **kw)

    def dies_after_three(*a, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt
        return record(*a, **kw)

    args = ["ct", "--input", str(folder), *COMMON, "--slice", "0:4"]
    monkeypatch.setattr("recon.ct_series.reconstruct_slice", dies_after_three)
    with pytest.warns(UserWarning):  # the gap: uneven spacing
        assert main([*args, "--out", str(tmp_path / "k")]) == 130
    assert calls == [0, 1, 2]  # cached: slices 0, 1 and 3 of the full series
    monkeypatch.setattr("recon.ct_series.reconstruct_slice", record)
    with pytest.warns(UserWarning):  # what the reader said is kept in metrics.json
        assert main(["ct", "--input", str(folder), *COMMON, "--slice", "0:4",
                     "--out", str(tmp_path / "gap")]) == 0  # fmt: skip
    said = json.loads((tmp_path / "gap" / "metrics.json").read_text())["input_warnings"]
    assert any("uneven slice spacing" in w and "a slice missing?" in w for w in said)
    shutil.move(kept, middle)  # back: indices 2 and 3 now hold other images
    calls.clear()
    monkeypatch.setattr("recon.ct_series.reconstruct_slice", record)
    assert main([*args, "--out", str(tmp_path / "k")]) == 0
    assert calls == [2, 3]  # 0 and 1 reused; 2 is another image now, 3 another neighbour's
    assert main([*args, "--out", str(tmp_path / "fresh")]) == 0
    got, fresh = (np.load(tmp_path / d / "recon.npy") for d in ("k", "fresh"))
    assert np.array_equal(got, fresh)


def test_slice_selection_and_its_errors(series, tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["ct", "--input", str(series[0]), *COMMON, "--slice", "3", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [r["slice"] for r in m["slices"]] == [3]
    assert read_dicom_series(out / "dicom").patient_positions == [series[1][3]]
    assert main(["ct", "--input", str(series[0]), *COMMON, "--slice", "9",
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "has slices 0..4" in capsys.readouterr().err
    assert main(["ct", "--input", "phantom:shepp-logan", "--size", "32", *COMMON, "--slice", "1",
                 "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    assert "single image" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_series_without_source_files_is_one_study_readable_by_others(tmp_path):
    """A volume without DICOM sources (an NRRD input) becomes one study and one frame of
    reference (they were new per slice: a viewer split the series), values below −1024 HU are
    kept, and the folder is readable by others as the umask allows (mkdtemp made it 0700)."""
    import os
    import stat

    from data.dicom_write import write_dicom_series

    vol = np.full((3, 8, 8), -1100.0, np.float32)
    vol[:, 2:6, 2:6] = 40.0
    positions = [(0.0, 0.0, 2.5 * k) for k in range(3)]
    write_dicom_series(tmp_path / "d", vol, None, pixel_spacing=(1.0, 1.0), positions=positions,
                       orientation=(1, 0, 0, 0, 1, 0), description="test")  # fmt: skip
    headers = [pydicom.dcmread(f) for f in sorted((tmp_path / "d").glob("*.dcm"))]
    assert len({h.StudyInstanceUID for h in headers}) == 1
    assert len({h.FrameOfReferenceUID for h in headers}) == 1
    back = read_dicom_series(tmp_path / "d")
    np.testing.assert_array_equal(back.hu, vol)
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "d").stat().st_mode)
    assert mode == 0o777 & ~umask


def test_derived_series_geometry_fits_dicom_decimal_strings(tmp_path):
    """A tilted orientation (cos 15° = 0.9659258262890683) and a float32 pixel spacing were
    written as 18-character decimal strings, over DICOM's 16: pydicom in strict mode refused the
    files. They are written within 16 characters, the geometry kept to ~1e-12."""
    from data.dicom_write import write_dicom_series

    c, s = np.cos(np.radians(15)), np.sin(np.radians(15))
    orient = (1.0, 0.0, 0.0, 0.0, float(c), float(-s))
    spacing = (float(np.float32(0.9)), float(np.float32(0.9)))
    positions = [(-123.456789012345, 0.0, 2.5 * k) for k in range(2)]
    vol = np.zeros((2, 8, 8), np.float32)
    write_dicom_series(tmp_path / "d", vol, None, pixel_spacing=spacing, positions=positions,
                       orientation=orient, thickness=2.5, description="test")  # fmt: skip
    strict = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.RAISE
    try:
        for f in sorted((tmp_path / "d").glob("*.dcm")):
            ds = pydicom.dcmread(f)
            for key in ("ImageOrientationPatient", "PixelSpacing", "ImagePositionPatient"):
                assert all(len(str(v)) <= 16 for v in ds[key].value), (key, ds[key].value)
            np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], orient,
                                       atol=1e-12)  # fmt: skip
    finally:
        pydicom.config.settings.reading_validation_mode = strict


def test_the_nifti_spacing_and_its_warning_are_those_of_the_slices_written(tmp_path):
    """The uneven-spacing warning was computed on the whole series: `--slice A:B` over evenly
    spaced slices (an exact affine) still warned, and a range over the gap was told the whole
    series' mean step, not the one its recon.nii.gz took. Both now come from the range."""
    import warnings

    folder = tmp_path / "s"
    _series(folder)  # y = 30, 32.5, 35, 37.5, 40
    (folder / "f3.dcm").unlink()  # slice 1 (names are f{3k mod 5}): y = 30, 35, 37.5, 40

    def run(spec: str, out: str) -> tuple[list[str], np.ndarray]:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            argv = ["ct", "--input", str(folder), *COMMON, "--solver", "fbp", "--out"]
            assert main([*argv, str(tmp_path / out), *(["--slice", spec] if spec else [])]) == 0
        uneven = [str(w.message) for w in said if "uneven" in str(w.message)]
        return uneven, nib.load(tmp_path / out / "recon.nii.gz").affine

    uneven, affine = run("1:4", "even")  # y = 35, 37.5, 40
    assert uneven == []
    np.testing.assert_allclose(affine[:3, 2], [0.0, -2.5, 0.0], atol=1e-6)  # LPS +y: RAS −y
    np.testing.assert_allclose(affine[:3, 3], [16.0, -35.0, 12.0], atol=1e-6)
    metrics = json.loads((tmp_path / "even" / "metrics.json").read_text())
    assert not any("uneven" in w for w in metrics.get("input_warnings", []))
    uneven, affine = run("0:3", "gap")  # y = 30, 35, 37.5
    assert len(uneven) == 1 and "--slice 0:3: uneven slice spacing (2.5 to 5 mm" in uneven[0]
    assert "takes the mean, 3.75 mm" in uneven[0] and "between f0.dcm and f1.dcm" in uneven[0]
    np.testing.assert_allclose(affine[:3, 2], [0.0, -3.75, 0.0], atol=1e-6)
    metrics = json.loads((tmp_path / "gap" / "metrics.json").read_text())
    assert uneven[0] in metrics["input_warnings"]
    uneven, affine = run("", "all")
    assert len(uneven) == 1 and "(a slice missing?)" in uneven[0] and "3.33 mm" in uneven[0]
    np.testing.assert_allclose(affine[:3, 2], [0.0, -10.0 / 3, 0.0], atol=1e-6)


def test_derived_series_has_the_window_and_the_spacing_between_slices(series, tmp_path):
    """The derived dicom/ series had no WindowCenter/WindowWidth (a viewer opened it at its own
    guess) and no SpacingBetweenSlices. It takes --window when given, else the range the PNGs
    were drawn with, and the spacing when the slices are evenly spaced (not across a gap)."""
    from data.dicom_write import write_dicom_series

    argv = ["ct", "--input", str(series[0]), *COMMON, "--solver", "fbp", "--slice", "0:3"]
    assert main([*argv, "--window", "lung", "--out", str(tmp_path / "lung")]) == 0
    files = sorted((tmp_path / "lung" / "dicom").glob("*.dcm"))
    assert len(files) == 3
    for f in files:
        ds = pydicom.dcmread(f)
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (-600.0, 1500.0)
        assert float(ds.SpacingBetweenSlices) == 2.5
    assert main([*argv, "--out", str(tmp_path / "auto")]) == 0
    lo, hi = json.loads((tmp_path / "auto" / "metrics.json").read_text())["display"]["range"]
    ds = pydicom.dcmread(sorted((tmp_path / "auto" / "dicom").glob("*.dcm"))[0])
    assert float(ds.WindowCenter) == pytest.approx((lo + hi) / 2, abs=1e-3)
    assert float(ds.WindowWidth) == pytest.approx(hi - lo, abs=1e-3)
    vol = np.zeros((3, 8, 8), np.float32)
    uneven = [(0.0, 0.0, 0.0), (0.0, 0.0, 2.5), (0.0, 0.0, 7.5)]
    write_dicom_series(tmp_path / "gap", vol, None, pixel_spacing=(1.0, 1.0), positions=uneven,
                       orientation=(1, 0, 0, 0, 1, 0), description="test")  # fmt: skip
    ds = pydicom.dcmread(tmp_path / "gap" / "IM_0001.dcm")
    assert "SpacingBetweenSlices" not in ds and "WindowCenter" not in ds
