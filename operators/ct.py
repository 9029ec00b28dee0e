"""2-D CT forward model (parallel and fan beam) through ASTRA.

A maps an image x of shape (B, 1, H, W) — attenuation per unit length, square pixels of physical
size ``pixel_size`` (e.g. mm) — to line integrals y = A x of shape (B, 1, views, detectors), in
attenuation × length. The volume geometry spans H·pixel_size × W·pixel_size, so a sinogram
scales linearly with ``pixel_size`` for the same pixel values.

The adjoint is ASTRA's backprojector for the same CPU projector, which is the exact transpose of
the projection matrix: <Ax, y> = <x, Aᵀy> holds to float32 round-off for every CPU projector
('linear', 'strip', 'line' parallel; 'line_fanflat', 'strip_fanflat' fan; verified in the
generic operator tests). Tensors may live on any device and be float32 or float64; ASTRA
computes in float32 on numpy buffers and the result goes back to the input's device and dtype.

On the CPU, forward and adjoint multiply by ASTRA's own projection matrix of the chosen projector
(``astra.projector.matrix``, kept as float32 CSR with its transpose, rows split over the torch
thread count) whenever both fit in ``MATRIX_BUDGET_BYTES``: the same operator as ASTRA's FP/BP
algorithms (FP to float32 round-off, BP exactly) at about half the cost of a call, and it uses
every thread where ASTRA's 2-D CPU algorithms use one. ``matrix=False`` keeps the algorithms;
larger problems keep them automatically. The matrix is built on the first projection
(about 7 s at 512², 90 views) and reused.

On a CUDA tensor with a CUDA build of ASTRA (``astra.use_cuda()``), forward and adjoint use
ASTRA's 'cuda' projector. ASTRA's GPU backprojector is a matched *approximation* of the
transpose, not an exact one; pass ``use_cuda=False`` when exact adjointness matters more than
speed.

Filtered backprojection (:meth:`CTOperator.fbp`) runs on the CPU. Parallel beam: ASTRA's 'FBP'.
Fan beam: ASTRA's CPU build has no fan-beam FBP ("FBP currently only supports parallel projection
geometries"), so the fan sinogram is rebinned to parallel beam over [0, π) — every parallel line
(θ, t) is read, by bilinear interpolation, from the fan ray along the same line, averaged with
its conjugate ray when both were measured — and then reconstructed with ASTRA's parallel FBP.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import astra
import numpy as np
import scipy.sparse as sp
import torch

from operators.base import LinearOperator
from operators.precond import FourierNormalPreconditioner

__all__ = [
    "CTOperator",
    "matrix_bytes_estimate",
    "FBP_FILTERS",
    "PARALLEL_PROJECTORS",
    "FAN_PROJECTORS",
    "MATRIX_BUDGET_BYTES",
]

FBP_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
PARALLEL_PROJECTORS = ("linear", "strip", "line")
FAN_PROJECTORS = ("line_fanflat", "strip_fanflat")
MATRIX_BUDGET_BYTES = 3 * 2**30 // 2
"""Largest estimated size of the projection matrix and its transpose kept in memory (1.5 GiB)."""

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="ct-matrix")
    return _POOL


def _forget_pool() -> None:
    """A forked child has none of the parent's threads: it starts its own pool."""
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def matrix_bytes_estimate(views: int, rows: int, cols: int, projector: str) -> int:
    """Upper estimate of the bytes of the CSR projection matrix and its transpose.

    Each pixel meets about two detector bins per view with the line and linear (Joseph)
    projectors and up to four with the strip ones; a stored entry costs 4 bytes of value and 4 of
    column index, twice (matrix and transpose).
    """
    per_view = 4 if projector.startswith("strip") else 2
    return 16 * per_view * views * rows * cols


class _ProjectionMatrix:
    """ASTRA's projection matrix of one CPU projector as float32 CSR row blocks.

    ``forward`` (M v) and ``adjoint`` (Mᵀ v) run one row block per thread; each row is summed
    in the same order whatever the block count, so the result does not depend on the threads.
    """

    def __init__(self, projector_id: int, threads: int) -> None:
        mid = astra.projector.matrix(projector_id)
        try:
            m = astra.matrix.get(mid)
        finally:
            astra.matrix.delete(mid)
        m = sp.csr_matrix(m, dtype=np.float32)  # ASTRA returns float64
        m.sort_indices()
        self.forward_blocks = self._blocks(m, threads)
        self.adjoint_blocks = self._blocks(m.T.tocsr(), threads)

    def forward(self, image: np.ndarray) -> np.ndarray:
        """M x for one image (rows, cols) -> flat sinogram."""
        return self._apply(self.forward_blocks, image)

    def adjoint(self, sino: np.ndarray) -> np.ndarray:
        """Mᵀ y for one sinogram (views, detectors) -> flat image."""
        return self._apply(self.adjoint_blocks, sino)

    @staticmethod
    def _blocks(m: sp.csr_matrix, threads: int) -> list[tuple[int, int, sp.csr_matrix]]:
        """Split m's rows into ``threads`` blocks of about equal stored entries."""
        edges = [0]
        for k in range(1, max(1, threads)):
            edges.append(int(np.searchsorted(m.indptr, m.nnz * k / threads)))
        edges.append(m.shape[0])
        edges = sorted(set(edges))
        if len(edges) == 2:
            return [(0, m.shape[0], m)]  # no copy
        return [(a, b, m[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]

    @staticmethod
    def _apply(blocks: list[tuple[int, int, sp.csr_matrix]], a: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
        out = np.empty(blocks[-1][1], dtype=np.float32)  # the last block ends at the last row

        def work(block: tuple[int, int, sp.csr_matrix]) -> None:
            a, b, m = block
            out[a:b] = m @ v

        if len(blocks) == 1:
            work(blocks[0])
        else:
            list(_pool().map(work, blocks))  # scipy's sparse products release the GIL
        return out


class _AstraPair:
    """One ASTRA projector with persistent, numpy-linked data objects and FP/BP algorithms.

    Creating ASTRA data objects and algorithms costs about 30 % of a 32×32 projection, so they
    are made once; a call copies the input into the linked buffer, runs, and copies out.
    Not re-entrant: callers hold ``lock``.
    """

    def __init__(
        self, projector: str, proj_geom: dict, vol_geom: dict, matrix: bool = False
    ) -> None:
        self.ids: list[tuple[Any, int]] = []
        self.use_matrix = matrix
        self.matrix: _ProjectionMatrix | None = None
        self.pid = astra.create_projector(projector, proj_geom, vol_geom)
        self.ids.append((astra.projector, self.pid))
        rows, cols = vol_geom["GridRowCount"], vol_geom["GridColCount"]
        views, dets = len(proj_geom["ProjectionAngles"]), proj_geom["DetectorCount"]
        self.vol = np.zeros((rows, cols), np.float32)
        self.sino = np.zeros((views, dets), np.float32)
        self.vid = astra.data2d.link("-vol", vol_geom, self.vol)
        self.ids.append((astra.data2d, self.vid))
        self.sid = astra.data2d.link("-sino", proj_geom, self.sino)
        self.ids.append((astra.data2d, self.sid))
        self.fp_alg = self._algorithm("FP", VolumeDataId=self.vid)
        self.bp_alg = self._algorithm("BP", ReconstructionDataId=self.vid)
        self.lock = threading.Lock()

    def _algorithm(self, name: str, **cfg: Any) -> int:
        conf = astra.astra_dict(name)
        conf.update(ProjectorId=self.pid, ProjectionDataId=self.sid, **cfg)
        aid = astra.algorithm.create(conf)
        self.ids.append((astra.algorithm, aid))
        return aid

    def _matrix(self) -> _ProjectionMatrix:
        if self.matrix is None:
            self.matrix = _ProjectionMatrix(self.pid, torch.get_num_threads())
        return self.matrix

    def fp(self, image: np.ndarray) -> np.ndarray:
        if self.use_matrix:
            return self._matrix().forward(image).reshape(self.sino.shape)
        np.copyto(self.vol, image)
        astra.algorithm.run(self.fp_alg)
        return self.sino.copy()

    def bp(self, sino: np.ndarray) -> np.ndarray:
        if self.use_matrix:
            return self._matrix().adjoint(sino).reshape(self.vol.shape)
        np.copyto(self.sino, sino)
        astra.algorithm.run(self.bp_alg)
        return self.vol.copy()

    def fbp(self, sino: np.ndarray, filter_type: str) -> np.ndarray:
        np.copyto(self.sino, sino)
        conf = astra.astra_dict("FBP")
        conf.update(
            ProjectorId=self.pid,
            ProjectionDataId=self.sid,
            ReconstructionDataId=self.vid,
            option={"FilterType": filter_type},
        )
        aid = astra.algorithm.create(conf)
        try:
            astra.algorithm.run(aid)
        finally:
            astra.algorithm.delete(aid)
        return self.vol.copy()

    def free(self) -> None:
        self.matrix = None
        for module, i in reversed(self.ids):
            try:
                module.delete(i)
            except Exception:  # already gone (interpreter shutdown)
                pass
        self.ids.clear()


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


class CTOperator(LinearOperator):
    """Radon transform of a (B, 1, H, W) batch on a 2-D parallel- or fan-beam geometry.

    Lengths below (``detector_spacing``, ``source_origin``, ``origin_detector``) are in image
    pixels; multiply by ``pixel_size`` for physical units. The rotation centre is the image
    centre; views are equally spaced over ``arc`` starting at 0 (no endpoint).

    Args:
        image_size: H (square image) or (H, W), each ≥ 8.
        views: number of projection angles.
        arc: angular range in degrees, in (0, 360]; default 180 (parallel) or 360 (fan). Less
            than that is a limited-angle scan.
        geometry: 'parallel' or 'fan' (flat detector).
        detectors: detector count. Default parallel: ceil(hypot(H, W)) + 1, the image diagonal.
            Default fan: enough for the fan through the image's circumscribed circle.
        detector_spacing: detector element width (pixels). Default 1 (parallel) or the
            magnification (source_origin + origin_detector) / source_origin (fan), i.e. one
            pixel at the rotation centre.
        pixel_size: physical size of an image pixel (e.g. mm); sinograms are in its units.
        source_origin: fan beam source-to-centre distance (pixels); default 2·max(H, W). Must
            put the source outside the image's circumscribed circle.
        origin_detector: fan beam centre-to-detector distance (pixels); default 2·max(H, W).
        projector: ASTRA CPU projector; default 'linear' (parallel) or 'line_fanflat' (fan).
        use_cuda: use ASTRA's GPU projector for CUDA tensors when ASTRA has CUDA.
        matrix: on the CPU, apply ASTRA's projection matrix (True) or its FP/BP algorithms
            (False); default: the matrix when :func:`matrix_bytes_estimate` is within
            ``MATRIX_BUDGET_BYTES``.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        views: int,
        arc: float | None = None,
        geometry: str = "parallel",
        detectors: int | None = None,
        detector_spacing: float | None = None,
        pixel_size: float = 1.0,
        source_origin: float | None = None,
        origin_detector: float | None = None,
        projector: str | None = None,
        use_cuda: bool = True,
        matrix: bool | None = None,
    ) -> None:
        self._pairs: list[_AstraPair] = []  # first, so close() works if validation fails
        if geometry not in ("parallel", "fan"):
            raise ValueError(f"geometry must be 'parallel' or 'fan', got {geometry!r}")
        if isinstance(image_size, int | np.integer):
            h = w = int(image_size)
        else:
            if len(image_size) != 2:
                raise ValueError(f"image_size must be N or (H, W), got {image_size!r}")
            h, w = image_size
        if min(h, w) < 8:
            raise ValueError(f"image size {h}×{w} is too small (at least 8×8)")
        h, w = _count("image height", h, 8), _count("image width", w, 8)
        views = _count("views", views, 1)
        arc = (180.0 if geometry == "parallel" else 360.0) if arc is None else float(arc)
        if not (math.isfinite(arc) and 0 < arc <= 360):
            raise ValueError(f"arc must be in (0, 360] degrees, got {arc}")
        pixel_size = _positive("pixel_size", pixel_size)
        diag = math.hypot(h, w)
        if geometry == "parallel":
            if source_origin is not None or origin_detector is not None:
                raise ValueError("source_origin / origin_detector apply to fan beam only")
            so = od = None
            spacing = (
                1.0 if detector_spacing is None else _positive("detector_spacing", detector_spacing)
            )
            default_dets = math.ceil(diag / spacing) + 1
        else:
            so = 2.0 * max(h, w) if source_origin is None else float(source_origin)
            od = 2.0 * max(h, w) if origin_detector is None else float(origin_detector)
            if not (math.isfinite(so) and so > diag / 2):
                raise ValueError(
                    f"source_origin {so} puts the source inside the image: it must exceed "
                    f"half the image diagonal, {diag / 2:.1f} pixels"
                )
            if not (math.isfinite(od) and od >= 0):
                raise ValueError(f"origin_detector must be ≥ 0, got {od}")
            mag = (so + od) / so
            spacing = (
                mag if detector_spacing is None else _positive("detector_spacing", detector_spacing)
            )
            half_fan = math.asin(diag / 2 / so)  # fan half-angle covering the image
            default_dets = 2 * math.ceil((so + od) * math.tan(half_fan) / spacing) + 1
        detectors = default_dets if detectors is None else _count("detectors", detectors, 1)
        projector = projector or ("linear" if geometry == "parallel" else "line_fanflat")
        valid = PARALLEL_PROJECTORS if geometry == "parallel" else FAN_PROJECTORS
        if projector not in valid:
            raise ValueError(
                f"projector {projector!r} does not fit {geometry} beam: use one of {valid}"
            )

        super().__init__((1, h, w), (1, views, detectors))
        self.geometry, self.views, self.arc = geometry, views, arc
        self.detectors, self.detector_spacing = detectors, spacing
        self.pixel_size, self.projector = pixel_size, projector
        self.source_origin, self.origin_detector = so, od
        self.use_cuda = bool(use_cuda)

        ps = pixel_size
        self._vol = astra.create_vol_geom(h, w, -w * ps / 2, w * ps / 2, -h * ps / 2, h * ps / 2)
        self._angles = np.linspace(0.0, math.radians(arc), views, endpoint=False)
        if geometry == "parallel":
            self._proj = astra.create_proj_geom("parallel", spacing * ps, detectors, self._angles)
        else:
            self._proj = astra.create_proj_geom(
                "fanflat", spacing * ps, detectors, self._angles, so * ps, od * ps
            )
        if matrix is None:
            matrix = matrix_bytes_estimate(views, h, w, projector) <= MATRIX_BUDGET_BYTES
        self.matrix = bool(matrix)
        self._cpu = _AstraPair(projector, self._proj, self._vol, matrix=self.matrix)
        self._pairs.append(self._cpu)
        self._cuda_op: Any = None
        self._cuda_pid: int | None = None
        self._rebin: tuple[sp.csr_matrix, _AstraPair] | None = None
        self._preconditioners: dict[tuple[str, torch.dtype], FourierNormalPreconditioner] = {}

    # --- forward / adjoint ---------------------------------------------------------------
    def _cuda_for(self, t: torch.Tensor):
        """ASTRA's GPU operator when the tensor is on CUDA and ASTRA can use it, else None."""
        if not (self.use_cuda and t.is_cuda and astra.use_cuda()):
            return None
        if self._cuda_op is None:
            self._cuda_pid = astra.create_projector("cuda", self._proj, self._vol)
            self._cuda_op = astra.OpTomo(self._cuda_pid)
        return self._cuda_op

    @staticmethod
    def _apply(t: torch.Tensor, fn, out_shape: tuple[int, ...]) -> torch.Tensor:
        """fn on each (rows, cols) float32 item of t (B, 1, ...), back on t's device/dtype."""
        arr = t.detach().to("cpu", torch.float32).numpy()
        out = np.empty((arr.shape[0], *out_shape), dtype=np.float32)
        for b in range(arr.shape[0]):
            out[b, 0] = fn(arr[b, 0])
        return torch.from_numpy(out).to(device=t.device, dtype=t.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        gpu = self._cuda_for(x)
        if gpu is not None:
            return self._apply(x, lambda a: gpu.FP(np.ascontiguousarray(a)), self.range_shape)
        with self._cpu.lock:
            return self._apply(x, self._cpu.fp, self.range_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        gpu = self._cuda_for(y)
        if gpu is not None:
            return self._apply(y, lambda a: gpu.BP(np.ascontiguousarray(a)), self.domain_shape)
        with self._cpu.lock:
            return self._apply(y, self._cpu.bp, self.domain_shape)

    # --- filtered backprojection -----------------------------------------------------------
    def fbp(self, y: torch.Tensor, filter: str = "ram-lak") -> torch.Tensor:
        """Filtered backprojection of sinograms y (B, 1, views, detectors) -> (B, 1, H, W).

        The result is in the image's units (attenuation per length, the units of x in y = A x),
        for any ``pixel_size``. ``filter`` is one of FBP_FILTERS: the ramp |ω| (ram-lak) times
        a window (shepp-logan: sinc, cosine, hamming, hann) that trades resolution for noise.
        Always computed on the CPU (see the module docstring for fan beam).
        """
        key = filter.lower() if isinstance(filter, str) else filter
        if key not in FBP_FILTERS:
            raise ValueError(f"unknown FBP filter {filter!r}; choose from {', '.join(FBP_FILTERS)}")
        self._check(y, self.range_shape, "sinogram", self.range_complex)
        if self.geometry == "parallel":
            with self._cpu.lock:
                return self._apply(y, lambda s: self._cpu.fbp(s, key), self.domain_shape)
        matrix, pair = self._rebinning()
        shape = pair.sino.shape

        def fan_fbp(s: np.ndarray) -> np.ndarray:
            par = (matrix @ s.reshape(-1).astype(np.float64)).reshape(shape)
            return pair.fbp(par.astype(np.float32), key)

        with pair.lock:
            return self._apply(y, fan_fbp, self.domain_shape)

    def _rebinning(self) -> tuple[sp.csr_matrix, _AstraPair]:
        """Sparse fan -> parallel resampling matrix and the parallel projector it feeds.

        ASTRA's fan geometry (rotation angle β): source at D_so·(sin β, −cos β), flat detector
        coordinate u along (cos β, sin β) at distance D_od beyond the centre. Its parallel
        geometry (angle θ) integrates along (sin θ, −cos θ) at offset t along (cos θ, sin θ).
        The fan ray (β, u) is the parallel line (θ, t) = (β − γ, D_so·sin γ), γ = atan(u/D_sd),
        and also (θ + π, −t). So a parallel line (θ, t) is measured at β = θ + γ, u = D_sd·tan γ
        with γ = asin(t/D_so) (direct ray) and at β = θ + π − γ, u = −D_sd·tan γ (conjugate).
        Each is read by bilinear interpolation where it lies inside the measured (β, u) range
        (periodic in β for a full 360° scan) and the available readings are averaged.
        """
        if self._rebin is not None:
            return self._rebin
        h, w = self.domain_shape[1:]
        ps = self.pixel_size
        assert self.source_origin is not None and self.origin_detector is not None
        d_so = self.source_origin * ps
        d_sd = (self.source_origin + self.origin_detector) * ps
        du = self.detector_spacing * ps
        n_par = max(self.views, math.ceil(self.views * 180.0 / self.arc))
        n_t = math.ceil(math.hypot(h, w)) + 1
        theta = np.arange(n_par) * (math.pi / n_par)
        t = (np.arange(n_t) - (n_t - 1) / 2) * ps
        th, tt = np.meshgrid(theta, t, indexing="ij")
        gamma = np.arcsin(np.clip(tt / d_so, -1.0, 1.0))
        u = d_sd * np.tan(gamma)
        d_beta = math.radians(self.arc) / self.views
        full = self.arc >= 360.0
        rows_all, cols_all, vals_all = [], [], []
        hits = np.zeros(th.size)
        for beta, uu in ((th + gamma, u), (th + math.pi - gamma, -u)):
            fi = np.mod(beta, 2 * math.pi) / d_beta
            fj = uu / du + (self.detectors - 1) / 2
            ok = (fj >= 0) & (fj <= self.detectors - 1)
            if not full:
                ok &= fi <= self.views - 1 + 1e-9
            i0 = np.floor(fi).astype(np.int64)
            j0 = np.minimum(np.floor(fj).astype(np.int64), self.detectors - 2)
            ai, aj = fi - i0, fj - j0
            i1 = (i0 + 1) % self.views if full else np.minimum(i0 + 1, self.views - 1)
            i0 = i0 % self.views
            row = np.arange(th.size).reshape(th.shape)
            for ii, wi in ((i0, 1 - ai), (i1, ai)):
                for jj, wj in ((j0, 1 - aj), (j0 + 1, aj)):
                    wgt = wi * wj
                    keep = ok & (wgt > 0) & (jj >= 0) & (jj < self.detectors)
                    rows_all.append(row[keep])
                    cols_all.append(ii[keep] * self.detectors + jj[keep])
                    vals_all.append(wgt[keep])
            hits += ok.reshape(-1)
        rows = np.concatenate(rows_all)
        vals = np.concatenate(vals_all) / np.maximum(hits, 1)[rows]
        matrix = sp.csr_matrix(
            (vals, (rows, np.concatenate(cols_all))), shape=(th.size, self.views * self.detectors)
        )
        par_geom = astra.create_proj_geom("parallel", ps, n_t, theta)
        pair = _AstraPair("linear", par_geom, self._vol)
        self._pairs.append(pair)
        self._rebin = (matrix, pair)
        return self._rebin

    # --- bookkeeping ---------------------------------------------------------------------
    def normal_preconditioner(
        self, lam: float, rho: float, like: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The Fourier preconditioner of ``operators.precond`` (built from one AᴴA on the
        first call for a device and dtype, then cached); None for complex tensors."""
        if like.is_complex():
            return None
        key = (str(like.device), like.dtype)
        if key not in self._preconditioners:
            with torch.no_grad():
                self._preconditioners[key] = FourierNormalPreconditioner(
                    self.normal, self.domain_shape, like.device, like.dtype
                )
        return self._preconditioners[key].operator(lam, rho)

    def describe(self) -> dict[str, Any]:
        """Geometry parameters (JSON-serializable) for a run record; lengths in pixels."""
        return {
            "geometry": self.geometry,
            "image_size": list(self.domain_shape[1:]),
            "views": self.views,
            "arc_degrees": self.arc,
            "detectors": self.detectors,
            "detector_spacing_pixels": self.detector_spacing,
            "pixel_size": self.pixel_size,
            "source_origin_pixels": self.source_origin,
            "origin_detector_pixels": self.origin_detector,
            "projector": self.projector,
            "projection_matrix": self.matrix,
            "backend": f"astra {astra.__version__}",
        }

    def close(self) -> None:
        """Free the ASTRA objects (also done when the operator is garbage collected)."""
        for pair in getattr(self, "_pairs", []):
            pair.free()
        self._pairs = []
        if getattr(self, "_cuda_pid", None) is not None:
            try:
                astra.projector.delete(self._cuda_pid)
            except Exception:
                pass
            self._cuda_pid, self._cuda_op = None, None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
