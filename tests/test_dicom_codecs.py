"""DICOM encodings of clinical archives decode to the right values: lossless encodings of the
same image (JPEG 2000 lossless, JPEG-LS lossless, RLE) equal the uncompressed file exactly;
JPEG 2000 files equal their reference decompression; 12-bit JPEG Extended stays close to a
lossless file of the same image; a real neck CT in JPEG Lossless (process 14) reads as HU.
The files are the ones pydicom and pydicom-data ship."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from data.dicom import DicomError, decode_pixels, read_dicom_file


def _shipped(name: str) -> Path:
    """A pydicom test file, from pydicom's package or the installed pydicom-data (no network)."""
    local = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if local.is_file():
        return local
    spec = importlib.util.find_spec("data_store")
    if spec is None or spec.origin is None:
        pytest.skip(f"{name} comes with pydicom-data: pip install pydicom-data (the ctdata extra)")
    path = Path(spec.origin).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"{name} is not in the installed pydicom-data")
    return path


def _pixels(name: str) -> np.ndarray:
    path = _shipped(name)
    return decode_pixels(pydicom.dcmread(path), path)


def _syntax(name: str) -> str:
    return pydicom.dcmread(_shipped(name)).file_meta.TransferSyntaxUID.name


@pytest.mark.parametrize(
    "name, syntax",
    [
        ("MR_small_jp2klossless.dcm", "JPEG 2000 Image Compression (Lossless Only)"),
        ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless Image Compression"),
        ("MR_small_RLE.dcm", "RLE Lossless"),
    ],
)
def test_lossless_encodings_equal_the_uncompressed_image(name, syntax):
    assert _syntax(name) == syntax
    ref = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    got = _pixels(name)
    assert got.dtype == ref.dtype and np.array_equal(got, ref)


def _psnr(a: np.ndarray, ref: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    mse = float(np.mean((a.astype(np.float64) - ref) ** 2))
    return 10 * np.log10(float(ref.max() - ref.min()) ** 2 / mse)


@pytest.mark.parametrize(
    "name, reference",
    [("JPEG2000.dcm", "JPEG2000_UNC.dcm"), ("693_J2KI.dcm", "693_UNCI.dcm")],
)
def test_jpeg2000_decodes_to_the_reference_decompression(name, reference):
    """JPEG 2000 (the lossy syntax): pydicom-data ships each file's decompressed image."""
    assert _syntax(name) == "JPEG 2000 Image Compression"
    ref = _pixels(reference)
    got = _pixels(name)
    assert got.shape == ref.shape and np.array_equal(got, ref)


def test_12_bit_jpeg_extended_is_the_image_of_the_lossless_file():
    """JPGExtended.dcm (12-bit JPEG Extended, process 4: typical of older CT archives) against
    JPEG-LL.dcm, a lossless (process 14) file of the same image: measured 37.7 dB. Only
    pylibjpeg-libjpeg decodes 12-bit JPEG Extended."""
    assert _syntax("JPGExtended.dcm") == "JPEG Extended (Process 2 and 4)"
    assert _syntax("JPEG-LL.dcm").startswith("JPEG Lossless")
    if importlib.util.find_spec("libjpeg") is None:
        pytest.skip("12-bit JPEG Extended needs pylibjpeg-libjpeg: pip install '.[jpeg12]'")
    ref = _pixels("JPEG-LL.dcm")
    got = _pixels("JPGExtended.dcm")
    assert got.shape == ref.shape
    assert _psnr(got, ref) >= 35.0


def test_jpeg_ls_near_lossless_decodes_within_its_bit_depth():
    """JPEG-LS near-lossless (no reference image ships with it): the whole frame decodes, in
    the file's 16-bit stored range, with structure (not a constant)."""
    ds = pydicom.dcmread(_shipped("JPEGLSNearLossless_16.dcm"))
    assert ds.file_meta.TransferSyntaxUID.name.startswith("JPEG-LS Lossy")
    a = decode_pixels(ds, "JPEGLSNearLossless_16.dcm")
    assert a.shape == (ds.Rows, ds.Columns)
    assert int(a.max()) < 2**ds.BitsStored and int(a.min()) >= 0 and float(a.std()) > 0


def test_real_neck_ct_in_jpeg_lossless_reads_as_hu():
    """pydicom-data's bad_sequence.dcm: a 512² neck CT, JPEG Lossless process 14, 12 bits
    stored, RescaleIntercept −1024. Air sits near −1000 HU and the image holds soft tissue and
    bone."""
    path = _shipped("bad_sequence.dcm")
    assert _syntax("bad_sequence.dcm").startswith("JPEG Lossless")
    sl = read_dicom_file(path)
    assert sl.hu.shape == (512, 512)
    assert sl.pixel_spacing == pytest.approx((0.287109375, 0.287109375))
    hu = sl.hu
    assert -1030 <= float(np.percentile(hu, 5)) <= -900  # air around the neck
    assert float(np.mean((hu > 0) & (hu < 100))) > 0.05  # soft tissue
    assert float(hu.max()) > 700  # bone


def test_undecodable_and_non_ct_files_name_the_file_and_the_reason(tmp_path):
    """pydicom's JPEG-lossy.dcm has a stream no plugin decodes; an MR image is not CT."""
    path = _shipped("JPEG-lossy.dcm")
    with pytest.raises(DicomError, match=r"JPEG-lossy\.dcm: cannot decode pixel data \(JPEG Ext"):
        decode_pixels(pydicom.dcmread(path), path)
    with pytest.raises(DicomError, match=r"MR_small\.dcm: Modality MR, not CT"):
        read_dicom_file(get_testdata_file("MR_small.dcm"))
