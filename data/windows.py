"""CT display windows (level L, width W) in HU, by name or as "LEVEL,WIDTH".

With lo = L − W/2, two maps for numpy arrays and torch tensors alike (any shape):
* ``window_normalize``: v = (hu − lo) / W, unclipped: an exact affine change of units, inverted
  exactly by ``window_denormalize``: hu = v·W + lo.
* ``window_display``: the same map clipped to [0, 1], for viewing; ``window_display_inverse``
  maps [0, 1] back to [lo, lo + W] (exact for values that were inside the window).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "WINDOWS",
    "Window",
    "parse_window",
    "window_display",
    "window_display_inverse",
    "window_normalize",
    "window_denormalize",
]

WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}

Window = str | Sequence[float]
T = TypeVar("T", np.ndarray, torch.Tensor)


def parse_window(window: Window) -> tuple[float, float]:
    """(level, width) in HU from a name ('lung'), a string 'LEVEL,WIDTH' ('-600,1500') or a pair."""
    if isinstance(window, str):
        key = window.strip().lower()
        if key in WINDOWS:
            return WINDOWS[key]
        parts = key.split(",")
    else:
        parts = list(window)
    try:
        if len(parts) != 2:
            raise ValueError
        level, width = float(parts[0]), float(parts[1])
    except (TypeError, ValueError):
        raise ValueError(
            f"window {window!r}: use a name ({', '.join(WINDOWS)}) or LEVEL,WIDTH in HU"
        ) from None
    if not (np.isfinite(level) and np.isfinite(width) and width > 0):
        raise ValueError(f"window {window!r}: level must be finite and width > 0")
    return level, width


def window_normalize(hu: T, window: Window) -> T:
    """(hu − (level − width/2)) / width, unclipped."""
    level, width = parse_window(window)
    return (hu - (level - width / 2)) / width


def window_denormalize(v: T, window: Window) -> T:
    """v·width + level − width/2: the exact inverse of :func:`window_normalize`."""
    level, width = parse_window(window)
    return v * width + (level - width / 2)


def window_display(hu: T, window: Window) -> T:
    """:func:`window_normalize` clipped to [0, 1] (values below the window -> 0, above -> 1)."""
    v = window_normalize(hu, window)
    return v.clamp(0, 1) if isinstance(v, torch.Tensor) else np.clip(v, 0, 1)


def window_display_inverse(v: T, window: Window) -> T:
    """HU from display values in [0, 1]; exact for pixels that were inside the window."""
    return window_denormalize(v, window)
