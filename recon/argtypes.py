"""argparse types that refuse NaN, infinities and out-of-range numbers on the command line (the
error names the option: ``argument --noise: ...``, exit 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["number", "count"]


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable:
    """A finite float in [lo, hi] ((lo, hi] with ``lo_open``); either bound optional."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '≥'} {lo:g}, got {v:g}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be ≤ {hi:g}, got {v:g}")
        return v

    return parse


def count(lo: int = 1, hi: int | None = None, what: str = "") -> Callable:
    """A whole number in [lo, hi]; ``what`` explains the upper bound in the message."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be ≥ {lo}, got {v}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be ≤ {hi}{what}, got {v}")
        return v

    return parse
