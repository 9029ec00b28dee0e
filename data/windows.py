"""CT display windows (level, width) in HU, by name or as "LEVEL,WIDTH".

Two mappings, each with its inverse, for numpy arrays and torch tensors alike:
* ``window_display``: (hu − lo)/width clipped to [0, 1] (lo = level − width/2), for viewing;
  its inverse is exact on unclipped values.
* ``window_normalize``: the same linear map without clipping, an exact affine change of units.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "WINDOWS",
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

T = TypeVar("T", np.ndarray, torch.Tensor)


def parse_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """(level, width) from a name ('lung') or 'LEVEL,WIDTH' ('-600,1500') or a tuple."""
    if isinstance(window, tuple):
        level, width = float(window[0]), float(window[1])
    elif window.lower() in WINDOWS:
        level, width = WINDOWS[window.lower()]
    else:
        try:
            level, width = (float(v) for v in window.split(","))
        except ValueError:
            raise ValueError(
                f"window {window!r}: use a name ({', '.join(WINDOWS)}) or LEVEL,WIDTH in HU"
            ) from None
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return level, width


def window_normalize(hu: T, window: str | tuple[float, float]) -> T:
    level, width = parse_window(window)
    return (hu - (level - width / 2)) / width


def window_denormalize(v: T, window: str | tuple[float, float]) -> T:
    level, width = parse_window(window)
    return v * width + (level - width / 2)


def window_display(hu: T, window: str | tuple[float, float]) -> T:
    v = window_normalize(hu, window)
    return v.clamp(0, 1) if isinstance(v, torch.Tensor) else np.clip(v, 0, 1)


def window_display_inverse(v: T, window: str | tuple[float, float]) -> T:
    return window_denormalize(v, window)
