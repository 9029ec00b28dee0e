"""Property-based tests (hypothesis) of the validators and loaders every command runs first:
whatever the input, they either return something valid or raise the one error type the CLI
turns into a one-line message naming the option or file; never another exception."""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from data.npy import load_npy_image
from recon.argtypes import count, number
from recon.mri import parse_slices
from recon.pipeline import load_presets

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUMBER_TEXT = st.one_of(
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", " 3 ", "1_000", "", "-0"]),
)


@SETTINGS
@given(text=NUMBER_TEXT, lo=st.sampled_from([None, 0.0, 1.0]), lo_open=st.booleans())
def test_number_is_finite_and_in_range_or_refused(text, lo, lo_open):
    parse = number(lo, 100.0, lo_open=lo_open)
    try:
        v = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert str(exc)
        return
    assert math.isfinite(v) and v == float(text) and v <= 100.0
    if lo is not None:
        assert v > lo if lo_open else v >= lo


@SETTINGS
@given(text=NUMBER_TEXT, lo=st.integers(-3, 3))
def test_count_is_a_whole_number_in_range_or_refused(text, lo):
    try:
        v = count(lo, 50)(text)
    except argparse.ArgumentTypeError as exc:
        assert str(exc)
        return
    assert isinstance(v, int) and lo <= v <= 50 and v == int(text)


SLICE_SPECS = st.one_of(
    st.none(),
    st.just("all"),
    st.text(max_size=8),
    st.integers(-20, 20).map(str),
    st.tuples(st.integers(-20, 20) | st.none(), st.integers(-20, 20) | st.none()).map(
        lambda ab: f"{'' if ab[0] is None else ab[0]}:{'' if ab[1] is None else ab[1]}"
    ),
)


@SETTINGS
@given(spec=SLICE_SPECS, n=st.integers(1, 12))
def test_slice_selection_is_a_nonempty_increasing_subset_or_refused(spec, n):
    try:
        got = parse_slices(spec, n, "scan.h5")
    except ValueError as exc:
        assert "--slice" in str(exc)
        return
    assert got and all(0 <= k < n for k in got)
    assert all(b == a + 1 for a, b in zip(got, got[1:], strict=False))  # a contiguous range


def _check_npy(path: Path) -> None:
    try:
        img = load_npy_image(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert img.ndim == 2 and np.issubdtype(img.dtype, np.number)
    assert not np.iscomplexobj(img) and np.isfinite(img).all()


@SETTINGS
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from(["f4", "f8", "i2", "u1", "c8", "?", "U3", "f2"]).map(np.dtype),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
    )
)
def test_any_npy_array_loads_as_a_finite_real_image_or_is_refused(arr):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "img.npy"
        np.save(path, arr)
        _check_npy(path)


@SETTINGS
@given(data=st.binary(max_size=300), keep_header=st.booleans())
def test_any_bytes_as_npy_are_refused_with_the_file_name(data, keep_header):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "img.npy"
        if keep_header:  # a real header, then a truncated or garbled body
            np.save(path, np.zeros((4, 4), np.float32))
            head = path.read_bytes()[:128]
            path.write_bytes(head + data)
        else:
            path.write_bytes(data)
        _check_npy(path)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["pnp-admm", "tv", "priors", "aelpn-ct", "rho_rel", "iters", "x"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


@pytest.mark.parametrize("modality", ["ct", "mri"])
@SETTINGS
@given(cfg=JSON)
def test_any_json_config_is_accepted_or_refused_naming_the_file(modality, cfg):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.json"
        path.write_text(json.dumps(cfg))
        try:
            presets = load_presets(modality, path)
        except ValueError as exc:
            assert str(path) in str(exc)
            return
        assert isinstance(presets, dict)


@SETTINGS
@given(data=st.binary(max_size=64))
def test_config_bytes_that_are_not_utf8_json_are_refused(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.json"
        path.write_bytes(data)
        try:
            load_presets("ct", path)
        except ValueError as exc:
            assert str(path) in str(exc)
