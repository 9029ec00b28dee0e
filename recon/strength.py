"""The regularization strength chosen from the data: k-space cross-validation.

The presets' rules set the regularizer's weight from the measured noise, and one rule serves
anatomy and phantoms alike, which want weights several times apart (docs/results). A user
without a reference image can still ask the data: hold out some of the sampled k-space, solve
from the rest at strengths s = 2^j (s multiplies the weight the rules give,
``recon.pipeline.reconstruct``), and keep the s whose image predicts the held-out samples best,

    e(s) = Σ_folds ||M_h A x_s − y_h||² / Σ_folds ||y_h||²,

x_s reconstructed from y without the fold's held-out samples M_h (Ward 2013, "Compressed sensing
with cross validation"). The held-out samples are measured, so e(s) needs no reference; it
includes their noise, the same for every s.

What is held out mimics what is missing: with fastMRI's column masks (the readout fully
sampled), whole phase-encode columns outside the calibration block; with a 2-D mask, samples
outside its calibration box. Each fold holds out ``fraction`` of them, the folds disjoint, so
the calibration data (and the coil maps estimated from it) are the same in every solve.

The search starts at s = 1 (the rules) and walks by factors of 2 while the error falls, within
[``lowest``, ``highest``]. By default only upward (``lowest`` = 1): the rules' floors are what
the validation data wanted at their lowest noise, and below them the held-out error misleads.
On noiseless slices it kept falling while the image got worse (the bundled brain slice at 4×:
the walk went down to 1/16, 28.95 dB against 29.83 at 1): the weaker the regularizer, the more
slowly the solvers fill the unsampled k-space, at a fixed iteration budget, and the held-out
columns, a few per fold, favour the data over the prior. Upward, where phantoms and noisier
data want 2–4× the rules' weight, it found the best strength of the grid (docs/results).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "TooFewToHoldOut",
    "StrengthChoice",
    "calibration_block",
    "holdout_masks",
    "choose_strength",
    "with_mask",
    "parse_strength",
]


def parse_strength(text: str) -> float | str:
    """argparse type of ``--strength``: 'auto' or a number > 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--strength {text!r}: expected 'auto' or a number > 0") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"--strength {text!r}: expected 'auto' or a finite number > 0")
    return value


@dataclass
class StrengthChoice:
    """The strength kept, the held-out error e(s) of every strength tried, and the cost."""

    strength: float
    errors: dict[float, float] = field(default_factory=dict)
    folds: int = 0
    held_out: int = 0  # columns (column masks) or samples (2-D masks) per fold
    unit: str = "columns"
    solves: int = 0
    seconds: float = 0.0

    def record(self) -> dict:
        """For metrics.json."""
        return {
            "value": self.strength,
            "method": "k-space cross-validation",
            "held_out_error": {f"{s:g}": e for s, e in sorted(self.errors.items())},
            "folds": self.folds,
            f"held_out_{self.unit}_per_fold": self.held_out,
            "solves": self.solves,
            "seconds": self.seconds,
        }


class TooFewToHoldOut(ValueError):
    """The mask samples too few points outside its calibration block to hold any out."""


def calibration_block(mask: np.ndarray) -> np.ndarray:
    """The fully sampled block around the k-space centre of ``mask`` ((W,) columns: the run of
    sampled columns through the centre; (H, W): the largest such centred square), as a boolean
    array of the mask's shape."""
    m = np.asarray(mask) > 0
    block = np.zeros_like(m)
    if m.ndim == 1:
        c = m.size // 2
        if m[c]:
            lo, hi = c, c
            while lo > 0 and m[lo - 1]:
                lo -= 1
            while hi < m.size - 1 and m[hi + 1]:
                hi += 1
            block[lo : hi + 1] = True
        return block
    if m.ndim != 2:
        raise ValueError(f"mask must be (W,) or (H, W), got shape {m.shape}")
    h, w = m.shape
    r = 0
    while r < min(h, w):
        r0, c0 = h // 2 - (r + 1) // 2, w // 2 - (r + 1) // 2
        if not m[r0 : r0 + r + 1, c0 : c0 + r + 1].all():
            break
        r += 1
    r0, c0 = h // 2 - r // 2, w // 2 - r // 2
    block[r0 : r0 + r, c0 : c0 + r] = True
    return block


def holdout_masks(
    mask: np.ndarray, *, folds: int = 2, fraction: float = 0.2, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kept, held-out) masks for ``folds`` disjoint folds of the sampled points of ``mask``.

    ``mask``: (W,) columns (fastMRI's column masks) or (H, W) samples, 0/1. The calibration
    block (``calibration_block``) is never held out. The points outside it, ranked by distance
    from the centre, fall into round(``fraction`` × their number) strata (at least one) of
    consecutive ranks, and each fold holds out one point of every stratum (drawn with ``seed``):
    every fold spans the distances alike. ValueError when there are fewer than ``folds`` such
    points."""
    if not (0 < fraction and folds * fraction <= 1):
        raise ValueError(f"need 0 < fraction and folds × fraction ≤ 1, got {folds} × {fraction}")
    m = np.asarray(mask) > 0
    outside = m & ~calibration_block(m)
    candidates = np.flatnonzero(outside)
    if candidates.size < folds:
        raise TooFewToHoldOut(
            f"cross-validation needs at least {folds} sampled points outside the calibration "
            f"region, found {candidates.size}"
        )
    # stratified by distance from the centre: the error concentrates near it, so a fold drawn
    # at random over- or under-represents the few columns there from one draw to the next
    size = max(1, round(fraction * candidates.size))
    index = np.unravel_index(candidates, m.shape)
    dist = np.sqrt(sum((i - n // 2) ** 2.0 for i, n in zip(index, m.shape, strict=True)))
    ranked = candidates[np.lexsort((candidates, dist))]
    rng = np.random.default_rng(seed)
    held = np.zeros((folds, m.size), bool)
    for stratum in np.array_split(ranked, size):  # about 1/fraction ≥ folds points each
        for f, point in enumerate(rng.permutation(stratum)[:folds]):
            held[f, point] = True
    return [(m & ~h.reshape(m.shape), h.reshape(m.shape)) for h in held]


def with_mask(op, mask: np.ndarray):
    """The same Cartesian operator (``SENSE`` or ``MaskedFFT``) sampling ``mask`` instead."""
    from operators.mri import SENSE, MaskedFFT

    m = np.asarray(mask, np.float32)
    if isinstance(op, SENSE):
        return SENSE(op.maps, m)
    if isinstance(op, MaskedFFT):
        return MaskedFFT(m, height=op.domain_shape[-2])
    raise ValueError(
        f"cross-validating the strength needs a Cartesian operator, got {type(op).__name__}"
    )


Solve = Callable[[object, torch.Tensor, torch.Tensor, float], torch.Tensor]


def choose_strength(
    op,
    y: torch.Tensor,
    mask: np.ndarray,
    solve: Solve,
    *,
    folds: int = 2,
    fraction: float = 0.2,
    seed: int = 0,
    lowest: float = 1.0,
    highest: float = 16.0,
) -> StrengthChoice:
    """Cross-validate the strength s (module docstring).

    Args:
        op, y: the Cartesian forward operator and its data (1, C, H, W), zero where unsampled.
        mask: its sampling mask, (W,) columns or (H, W) (its calibration block is never held
            out).
        solve: ``solve(op_kept, y_kept, x0_kept, s)`` → image (1, 1, H, W), the slice
            reconstructed from the kept samples at strength s, from x0_kept, as the final solve
            will be (not warm-started from another strength: at a fixed iteration budget a warm
            start is a longer run, and strengths tried later would look better for it; on a
            noiseless brain slice that walked to 4, 1.15 dB worse than 1).
        folds, fraction, seed: the hold-out (``holdout_masks``).
        lowest, highest: the range of strengths searched (1 ≥ lowest, highest ≥ 1).
    """
    if not (0 < lowest <= 1.0 <= highest):
        raise ValueError(f"need 0 < lowest <= 1 <= highest, got {lowest}, {highest}")
    t0 = time.perf_counter()
    splits = holdout_masks(mask, folds=folds, fraction=fraction, seed=seed)
    problems = []
    with torch.no_grad():
        for kept, held in splits:
            op_k, op_h = with_mask(op, kept), with_mask(op, held)
            scale_k = torch.as_tensor(kept, dtype=torch.float32, device=y.device)
            scale_h = torch.as_tensor(held, dtype=torch.float32, device=y.device)
            y_k = y * scale_k
            y_h = y * scale_h
            problems.append((op_k, y_k, op_k.adjoint(y_k), op_h, y_h))
    total = sum(float((p[4].abs() ** 2).sum()) for p in problems)
    if not total > 0:
        raise ValueError("cross-validation: the held-out k-space samples are all zero")
    choice = StrengthChoice(1.0, folds=folds, unit="columns" if np.ndim(mask) == 1 else "samples")
    choice.held_out = int(splits[0][1].sum())

    def error(s: float) -> float:
        if s not in choice.errors:
            e = 0.0
            for op_k, y_k, x0_k, op_h, y_h in problems:
                x = solve(op_k, y_k, x0_k, s)
                with torch.no_grad():
                    e += float((op_h.forward(x.to(y_h.device, y_h.dtype)) - y_h).abs().pow(2).sum())
                choice.solves += 1
            choice.errors[s] = e / total
        return choice.errors[s]

    for factor in (2.0, 0.5):  # up first; down only when up did not help and lowest allows
        s = factor
        base = error(1.0)
        if not (lowest <= s <= highest) or error(s) >= base:
            continue
        while lowest <= s * factor <= highest and error(s * factor) < choice.errors[s]:
            s *= factor
        break
    choice.strength = min(choice.errors, key=choice.errors.get)
    choice.seconds = time.perf_counter() - t0
    return choice
