"""Derivative-free maximization of a noisy, expensive score over a few positive parameters.

Coordinate search on log grids: for each parameter in turn (the others held at their current
best), a coarse log-spaced grid over [lo, hi], then ``rounds`` refinements that evaluate
``refine`` log-spaced points strictly between the best point and each grid neighbour, shrinking
the log step by a factor refine + 1 each round. Every evaluation is cached, so revisiting a
point costs nothing.
With ``points`` n and range ratio hi/lo = r, the coarse step is a factor s = r^(1/(n−1)); after
k refinement rounds with ``refine`` = 2, the best value is located to within a factor
s^(1/3^k) (for a score that is unimodal along the coordinate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Param", "Trial", "SearchResult", "log_grid", "coordinate_search"]


@dataclass(frozen=True)
class Param:
    """A positive parameter searched on a log scale in [lo, hi] from ``init``."""

    name: str
    lo: float
    hi: float
    init: float
    points: int = 7

    def __post_init__(self) -> None:
        if not (0 < self.lo < self.hi) or self.points < 2:
            raise ValueError(f"{self.name}: need 0 < lo < hi and ≥ 2 points, got {self}")


@dataclass
class Trial:
    params: dict[str, float]
    score: float
    stage: str  # "coarse:NAME" or "refine:NAME:k"


@dataclass
class SearchResult:
    best: dict[str, float]
    score: float
    trials: list[Trial] = field(default_factory=list)
    at_edge: list[str] = field(default_factory=list)  # parameters whose best is a range end


def log_grid(lo: float, hi: float, n: int) -> list[float]:
    """n points lo·(hi/lo)^(i/(n−1)), i = 0..n−1."""
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def _key(p: dict[str, float]) -> tuple:
    return tuple(sorted((k, float(f"{v:.6g}")) for k, v in p.items()))


def coordinate_search(
    score: Callable[[dict[str, float]], float],
    params: list[Param],
    refine: int = 2,
    rounds: int = 1,
    passes: int = 1,
    on_trial: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """Maximize ``score(values)`` (values: {name: float}) by coordinate log-grid search.

    Args:
        score: the objective (e.g. mean validation PSNR); non-finite values count as −∞.
        params: the parameters, searched in this order.
        refine: points added on each side of the best per round, at j/(refine + 1) of the
            round's log step (j = 1..refine): between the best and its grid neighbours when
            the best is a grid point.
        rounds: refinement rounds per parameter (the log step shrinks by refine + 1 each round).
        passes: sweeps over all parameters (later passes only refine around the current best).
        on_trial: called after each new evaluation (progress, logging).
    """
    cache: dict[tuple, float] = {}
    trials: list[Trial] = []
    current = {p.name: float(p.init) for p in params}

    def evaluate(values: dict[str, float], stage: str) -> float:
        k = _key(values)
        if k not in cache:
            s = float(score(dict(values)))
            cache[k] = s if math.isfinite(s) else -math.inf
            t = Trial(dict(values), cache[k], stage)
            trials.append(t)
            if on_trial:
                on_trial(t)
        return cache[k]

    best_score = evaluate(current, "init")
    at_edge: set[str] = set()
    for sweep in range(passes):
        for p in params:
            step = math.log(p.hi / p.lo) / (p.points - 1)
            if sweep == 0:
                for v in log_grid(p.lo, p.hi, p.points):
                    s = evaluate({**current, p.name: v}, f"coarse:{p.name}")
                    if s > best_score:
                        best_score, current = s, {**current, p.name: v}
            else:
                step /= (refine + 1) ** rounds
            for r in range(rounds):
                centre = current[p.name]
                offsets = [step * j / (refine + 1) for j in range(1, refine + 1)]
                for v in [centre * math.exp(-o) for o in offsets] + [
                    centre * math.exp(o) for o in offsets
                ]:
                    if not (p.lo * (1 - 1e-9) <= v <= p.hi * (1 + 1e-9)):
                        continue
                    s = evaluate({**current, p.name: v}, f"refine:{p.name}:{sweep}.{r}")
                    if s > best_score:
                        best_score, current = s, {**current, p.name: v}
                step /= refine + 1
            v = current[p.name]
            if math.isclose(v, p.lo, rel_tol=1e-6) or math.isclose(v, p.hi, rel_tol=1e-6):
                at_edge.add(p.name)
            else:
                at_edge.discard(p.name)
    return SearchResult(current, best_score, trials, sorted(at_edge))
