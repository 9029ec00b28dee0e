"""The progress bars of every long run (solvers, series, batch, training, tuning, benchmarks).

On a terminal a tqdm bar redraws in place. Sent to a file or a pipe (``recon mri ... 2>&1 |
tee log``), each redraw is a new line of the log, one per iteration; there the bar is redrawn
at most every ``LOG_INTERVAL_S`` seconds (tqdm's ``mininterval``), postfix changes included
(they wait for the next redraw), and once more when it closes.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["LOG_INTERVAL_S", "progress_bar"]

LOG_INTERVAL_S = 30.0
"""Seconds between redraws of a bar whose stream is not a terminal."""


def _interactive(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm bar (``tqdm.auto``: a widget in a notebook) with tqdm's arguments; on a stream
    (``file``, default stderr) that is not a terminal it redraws every ``LOG_INTERVAL_S``
    seconds at most, and ``set_postfix``/``set_postfix_str`` wait for that redraw."""
    from tqdm.auto import tqdm

    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or "notebook" in tqdm.__module__ or _interactive(stream):
        return tqdm(iterable, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    return _log_bar_class()(iterable, **kwargs)


@functools.cache
def _log_bar_class() -> type:
    """tqdm whose postfix setters do not force a redraw (tqdm's default refresh=True would
    write a line per call whatever ``mininterval`` says); built once, on first use, so that
    importing this module does not import tqdm."""
    from tqdm import tqdm

    class LogBar(tqdm):
        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_postfix_str(self, s="", refresh=True):
            super().set_postfix_str(s, refresh=False)

    return LogBar
