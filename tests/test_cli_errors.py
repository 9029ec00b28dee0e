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
