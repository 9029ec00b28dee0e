"""The one-call Python API: a problem, then its reconstruction.

    from recon.api import ct_problem, solve
    problem = ct_problem(hu_image, views=60, noise=0.01)          # HU in, HU out
    result = solve(problem, solver="pnp-admm", prior="aelpn-ct")  # presets, σ rule, ρ inside
    result.image, result.psnr, result.history

``ct_problem`` is the CT set-up `recon ct` runs for every slice: the image in normalized
attenuation u = (HU + 1000)/2500 (a.u. images as they are), ASTRA's projector, Gaussian
(``noise``, relative to max |sinogram|) or Poisson (``photons``) data seeded by ``seed``, and the
FBP start. ``solve`` runs a solver with the shipped presets (``recon/presets/ct.json``, a
``config`` file on top) exactly as `recon ct` does, and maps the result back to the input's
units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["CTProblem", "Result", "ct_problem", "solve"]

MU_WATER_PER_MM = 0.02
HU_OFFSET, HU_SCALE = 1000.0, 2500.0  # u = (HU + 1000) / 2500


@dataclass
class CTProblem:
    """A simulated CT scan: ``op`` (the projector), data ``y``, the FBP image ``x0`` and the
    reference ``x_true`` (1, 1, H, W) in internal units, its ``data_range``, the input's
    ``units`` ('HU' or 'a.u.'), the ``noise`` that was added, the FBP's seconds and the input
    ``image`` (H, W) itself (the reference results are measured against)."""

    op: object
    y: torch.Tensor
    x0: torch.Tensor
    x_true: torch.Tensor
    data_range: float
    units: str
    noise: dict
    fbp_seconds: float
    image: np.ndarray

    def to_units(self, x: torch.Tensor) -> np.ndarray:
        """An internal image (1, 1, H, W) as (H, W) float32 in the input's units."""
        a = x[0, 0].detach().cpu().numpy().astype(np.float64)
        return (a * HU_SCALE - HU_OFFSET if self.units == "HU" else a).astype(np.float32)


@dataclass
class Result:
    """``image`` (H, W) float32 in the problem's units, its PSNR/SSIM against the reference
    (data range of the reference), the internal image ``x``, and the solver's record."""

    image: np.ndarray
    psnr: float
    ssim: float
    x: torch.Tensor
    iterations: int
    seconds: float
    converged: bool
    stop_reason: str
    params: dict
    history: dict = field(default_factory=dict)
    objective: str = ""


def ct_problem(
    image: np.ndarray | torch.Tensor,
    *,
    units: str = "HU",
    views: int = 60,
    arc: float | None = None,
    geometry: str = "parallel",
    pixel_size: float = 1.0,
    noise: float = 0.01,
    photons: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    fbp_filter: str = "ram-lak",
    op=None,
) -> CTProblem:
    """Simulate a scan of ``image`` (H, W) in ``units`` ('HU' or 'a.u.'): ``views`` projections
    over ``arc`` degrees (180 parallel, 360 fan), Gaussian noise of std ``noise`` × max|sinogram|
    or, with ``photons``, Poisson counts (μ = μ_water(1 + HU/1000) per mm, ``pixel_size`` mm).
    ``op``: a projector built before for images of this size (a series reuses one)."""
    from data.ct_noise import add_gaussian_noise, add_poisson_noise
    from operators.ct import CTOperator
    from recon.pipeline import Timer

    if units not in ("HU", "a.u."):
        raise ValueError(f"units must be 'HU' or 'a.u.', got {units!r}")
    img = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    if img.ndim != 2 or not np.isfinite(img).all():
        raise ValueError(f"expected a finite 2-D image, got shape {img.shape}")
    ref = (img.astype(np.float64) + HU_OFFSET) / HU_SCALE if units == "HU" else img
    ref = np.ascontiguousarray(ref, dtype=np.float32)
    if op is None:
        op = CTOperator(image_size=ref.shape, views=views, arc=arc, geometry=geometry,
                        pixel_size=pixel_size)  # fmt: skip
    x_true = torch.from_numpy(ref)[None, None].to(device)
    clean = op.forward(x_true)
    if photons is not None:
        mu = MU_WATER_PER_MM * HU_SCALE / 1000.0 if units == "HU" else MU_WATER_PER_MM
        y = add_poisson_noise(clean, photons, seed=seed, mu_scale=mu)
        desc = {"type": "poisson", "photons": photons, "mu_scale": mu}
    else:
        y = add_gaussian_noise(clean, noise, seed=seed)
        desc = {"type": "gaussian", "rel": noise}
    with Timer() as t:
        x0 = op.fbp(y, filter=fbp_filter)
    drange = float(ref.max() - ref.min())
    return CTProblem(op, y, x0, x_true, drange, units, desc, t.seconds, img.astype(np.float32))


def solve(
    problem: CTProblem,
    solver: str = "pnp-admm",
    prior: str | Path | None = "aelpn-ct",
    *,
    config: str | Path | None = None,
    iters: int | None = None,
    tol: float | None = None,
    start: torch.Tensor | None = None,
    progress: bool = False,
) -> Result:
    """Reconstruct ``problem`` with ``solver`` ('pnp-admm', 'pnp-pgd', 'tv' or 'fbp') and
    ``prior`` (a shipped name, a checkpoint path or 'tv'; ignored by 'tv' and 'fbp') using the
    shipped presets (``config``: a JSON file of overrides, as `recon ct --config`), with the
    presets' σ rule and step sizes relative to the operator. ``start``: a warm start (internal
    units) instead of the FBP image."""
    from recon.pipeline import fbp_reconstruction, load_presets, solve_with_presets
    from solvers.metrics import image_metrics

    presets = load_presets("ct", config)
    if solver == "fbp":
        rec = fbp_reconstruction(problem.x0, problem.fbp_seconds, presets)
    else:
        rec = solve_with_presets(
            presets, problem.op, problem.y, problem.x0, solver,
            None if solver == "tv" else prior, reference=problem.x_true,
            data_range=problem.data_range, start=start, iters=iters, tol=tol, progress=progress,
        )  # fmt: skip
    ref = problem.image
    image = problem.to_units(rec.x)
    m = image_metrics(image, ref, float(ref.max() - ref.min()))
    return Result(image=image, psnr=m["psnr"], ssim=m["ssim"], x=rec.x.detach(),
                  iterations=rec.iterations, seconds=rec.seconds, converged=rec.converged,
                  stop_reason=rec.stop_reason, params=rec.params, history=rec.history,
                  objective=rec.objective)  # fmt: skip
