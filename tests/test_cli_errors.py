"""The CLI's top level: a bad --out is refused before any work (exit 2, one line naming it), an
unexpected failure is one line and exit 1 (the traceback with --debug)."""

from __future__ import annotations

import pytest

import recon.ct
from recon.cli import main

CT = ["ct", "--input", "phantom:shepp-logan", "--size", "32", "--views", "10", "--quiet"]


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_bad_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch, where):
    f = tmp_path / "taken"
    f.write_text("x")
    out = f if where == "file" else f / "sub" / "dir"
    called = []
    monkeypatch.setattr(recon.ct, "reconstruct_input", lambda *a: called.append(a))
    assert main([*CT, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and str(out) in err
    assert not called  # refused before the reconstruction
    assert f.read_text() == "x"


def test_unexpected_failure_is_one_line_and_debug_shows_the_traceback(
    tmp_path, capsys, monkeypatch
):
    def boom(*_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(recon.ct, "reconstruct_input", boom)
    assert main([*CT, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "RuntimeError: disk on fire" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["--debug", *CT, "--out", str(tmp_path / "o")])


@pytest.mark.parametrize(
    "args, option",
    [
        (["ct", "--input", "phantom:shepp-logan", "--noise", "inf"], "--noise"),
        (["ct", "--input", "phantom:shepp-logan", "--noise", "-0.1"], "--noise"),
        (["ct", "--input", "phantom:shepp-logan", "--photons", "nan"], "--photons"),
        (["ct", "--input", "phantom:shepp-logan", "--photons", "0"], "--photons"),
        (["ct", "--input", "phantom:shepp-logan", "--size", "100000"], "--size"),
        (["ct", "--input", "phantom:shepp-logan", "--views", "0"], "--views"),
        (["ct", "--input", "phantom:shepp-logan", "--arc", "nan"], "--arc"),
        (["mri", "--input", "bundled:brain-t1", "--accel", "0.5"], "--accel"),
        (["mri", "--input", "bundled:brain-t1", "--accel", "inf"], "--accel"),
        (["mri", "--input", "bundled:brain-t1", "--center-fraction", "1.5"], "--center-fraction"),
        (["mri", "--input", "bundled:brain-t1", "--coils", "0"], "--coils"),
        (["mri", "--input", "bundled:brain-t1", "--coils", "1", "--accel", "1000"], "--accel"),
    ],
)
def test_bad_numbers_are_refused_naming_the_option(tmp_path, capsys, args, option):
    """NaN, infinities and out-of-range numbers on the command line: exit 2, the option named,
    nothing written (they used to run to an all-NaN or all-zero image and exit 0)."""
    out = tmp_path / "o"
    solver = "zero-filled" if args[0] == "mri" else "fbp"
    assert main([*args, "--solver", solver, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0]
    assert not out.exists()
