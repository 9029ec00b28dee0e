"""2-D CT forward model (parallel and fan beam) through ASTRA.

A maps an image x (B, 1, H, W) — attenuation per unit length, pixels of physical size
``pixel_size`` — to line integrals y (B, 1, views, detectors) in the same length units. The
adjoint is ASTRA's backprojector for the same projector, which for ASTRA's CPU projectors is the
exact transpose of the projection matrix (tested to float32 round-off). Images and sinograms stay
torch tensors on the caller's device; ASTRA runs on numpy (CPU projectors 'linear', 'strip',
'line' for parallel, 'line_fanflat', 'strip_fanflat' for fan beam) or on its CUDA projectors when
``astra.use_cuda()`` and the input lives on a CUDA device.
"""

from __future__ import annotations

import math
from typing import Any

import astra
import numpy as np
import torch

from operators.base import LinearOperator

__all__ = ["CTOperator", "FBP_FILTERS"]

FBP_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
_PARALLEL = ("linear", "strip", "line")
_FAN = ("line_fanflat", "strip_fanflat")


class CTOperator(LinearOperator):
    """Radon transform of a (B, 1, H, W) batch on a 2-D parallel- or fan-beam geometry.

    Args:
        image_size: H (square) or (H, W) in pixels.
        views: number of projection angles, equally spaced over ``arc``.
        arc: angular range in degrees (default 180 parallel, 360 fan); less is limited angle.
        geometry: 'parallel' or 'fan' (flat detector).
        detectors: detector count (default: enough to cover the image diagonal).
        detector_spacing: detector pixel size in units of ``pixel_size`` (default 1; fan beam
            default so the magnified object fits).
        pixel_size: physical size of an image pixel (e.g. mm); projections are in these units.
        source_origin, origin_detector: fan-beam distances in pixels (default 2·max(H, W) each).
        projector: ASTRA projector name (default 'linear' parallel, 'line_fanflat' fan).
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        views: int,
        arc: float | None = None,
        geometry: str = "parallel",
        detectors: int | None = None,
        detector_spacing: float | None = None,
        pixel_size: float = 1.0,
        source_origin: float | None = None,
        origin_detector: float | None = None,
        projector: str | None = None,
    ) -> None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if geometry not in ("parallel", "fan"):
            raise ValueError(f"geometry must be 'parallel' or 'fan', got {geometry!r}")
        arc = (180.0 if geometry == "parallel" else 360.0) if arc is None else float(arc)
        if min(h, w) < 8:
            raise ValueError(f"image size {h}×{w} is too small (at least 8×8)")
        if views < 1:
            raise ValueError(f"views must be ≥ 1, got {views}")
        if not 0 < arc <= 360:
            raise ValueError(f"arc must be in (0, 360] degrees, got {arc}")
        if pixel_size <= 0:
            raise ValueError(f"pixel_size must be > 0, got {pixel_size}")
        diag = math.ceil(math.hypot(h, w))
        so = float(source_origin or 2 * max(h, w))
        od = float(origin_detector or 2 * max(h, w))
        if geometry == "fan":
            if so <= diag / 2:
                raise ValueError(f"source_origin {so} puts the source inside the image")
            mag = (so + od) / so
            detector_spacing = detector_spacing or mag
            detectors = detectors or math.ceil(diag * mag / detector_spacing) + 2
        else:
            detector_spacing = detector_spacing or 1.0
            detectors = detectors or diag + 1
        if detectors < 1 or detector_spacing <= 0:
            raise ValueError(f"invalid detector: count {detectors}, spacing {detector_spacing}")
        projector = projector or ("linear" if geometry == "parallel" else "line_fanflat")
        valid = _PARALLEL if geometry == "parallel" else _FAN
        if projector not in valid + ("cuda",):
            raise ValueError(f"projector {projector!r} does not fit {geometry} beam: use {valid}")
        super().__init__((1, h, w), (1, views, detectors))
        self.geometry, self.views, self.arc = geometry, views, arc
        self.detectors, self.pixel_size = detectors, float(pixel_size)
        self.detector_spacing, self.projector = float(detector_spacing), projector
        self.source_origin, self.origin_detector = so, od

        ps = self.pixel_size
        self._vol = astra.create_vol_geom(h, w, -w * ps / 2, w * ps / 2, -h * ps / 2, h * ps / 2)
        angles = np.linspace(0.0, math.radians(arc), views, endpoint=False)
        dw = self.detector_spacing * ps
        if geometry == "parallel":
            self._proj = astra.create_proj_geom("parallel", dw, detectors, angles)
        else:
            self._proj = astra.create_proj_geom("fanflat", dw, detectors, angles, so * ps, od * ps)
        self._pid = astra.create_projector(projector, self._proj, self._vol)
        self._op = astra.OpTomo(self._pid)
        self._cuda_op = None

    # ---------------------------------------------------------------------------------------
    def _astra_for(self, t: torch.Tensor):
        if t.is_cuda and astra.use_cuda():
            if self._cuda_op is None:
                self._cuda_pid = astra.create_projector("cuda", self._proj, self._vol)
                self._cuda_op = astra.OpTomo(self._cuda_pid)
            return self._cuda_op
        return self._op

    def _map(self, t: torch.Tensor, fn, out_shape: tuple[int, ...]) -> torch.Tensor:
        arr = t.detach().to("cpu", torch.float32).numpy()
        out = np.empty((arr.shape[0], *out_shape), dtype=np.float32)
        for b in range(arr.shape[0]):
            out[b, 0] = fn(np.ascontiguousarray(arr[b, 0]))
        return torch.from_numpy(out).to(device=t.device, dtype=t.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        op = self._astra_for(x)
        return self._map(x, lambda a: op.FP(a), self.range_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        op = self._astra_for(y)
        return self._map(y, lambda a: op.BP(a), self.domain_shape)

    def fbp(self, y: torch.Tensor, filter: str = "ram-lak") -> torch.Tensor:
        """Filtered backprojection (B, 1, H, W) in the image's units.

        Parallel beam: ASTRA's FBP with the chosen filter. Fan beam: ASTRA's CPU build has no
        fan-beam FBP, so on the CPU this is 30 iterations of ASTRA's CGLS (the filter does not
        apply), and on CUDA ASTRA's FBP_CUDA with the filter.
        """
        if filter not in FBP_FILTERS:
            raise ValueError(f"unknown FBP filter {filter!r}; choose from {FBP_FILTERS}")
        self._check(y, self.range_shape, "sinogram")
        op = self._astra_for(y)
        cuda = op is self._cuda_op
        if self.geometry == "parallel" or cuda:
            method = "FBP_CUDA" if cuda else "FBP"
            opts = {"FilterType": filter}
            return self._map(y, lambda a: op.reconstruct(method, a, 1, opts), self.domain_shape)
        return self._map(y, lambda a: op.reconstruct("CGLS", a, 30), self.domain_shape)

    def describe(self) -> dict[str, Any]:
        return {
            "geometry": self.geometry,
            "views": self.views,
            "arc_degrees": self.arc,
            "image_size": list(self.domain_shape[1:]),
            "detectors": self.detectors,
            "detector_spacing": self.detector_spacing,
            "pixel_size": self.pixel_size,
            "source_origin": self.source_origin if self.geometry == "fan" else None,
            "origin_detector": self.origin_detector if self.geometry == "fan" else None,
            "projector": self.projector,
        }

    def __del__(self) -> None:
        try:
            astra.projector.delete(self._pid)
            if self._cuda_op is not None:
                astra.projector.delete(self._cuda_pid)
        except Exception:  # interpreter shutdown, or construction failed early
            pass
