"""A learned prox that is firmly nonexpansive by construction: the convex-ridge AE-LPN.

    ψ(x; σ) = ½||x||² − Σ_{c, pixels} p_c((W Q x)_c; σ),     f(x; σ) = ∇ψ = x − Q Wᵀ g(W Q x; σ)

* Q = P⊥ = I − P₁ removes each image's (per channel) mean: symmetric, ||Q|| ≤ 1, Q 1 = 0.
* W: R^{C_in×H×W} → R^{C×H×W} is a convolution with C learned zero-mean k×k filters V (zero
  padding), divided by √B(V), where B(V) is a *guaranteed* upper bound on ||V||²
  (``conv_norm_bound``), so ||W|| ≤ 1 (with ``slope_bound``: B(S^½V), S = diag(each filter's
  largest slope), so ||S^½W|| ≤ 1, which is all the argument below needs).
* p_c(t; σ) = (σ w_c)² Φ_c(t / (σ w_c)) with Φ_c convex and piecewise quadratic: Φ_c' is a
  continuous linear spline on a fixed knot grid whose slopes are clamped to [0, 1], so
  0 ≤ p_c'' ≤ 1. g = ∂p/∂t = σ w_c Φ_c'(t / (σ w_c)) (a learned shrinkage curve), w_c > 0 a
  learned width per filter.

Why f is exactly a firmly nonexpansive prox of a *convex* regularizer, for any weights:
m(x) = Σ p(WQx) is convex with ∇²m = Q Wᵀ D W Q, D = diag(p'') ∈ [0, 1], so 0 ⪯ ∇²m ⪯ ||W||²
||Q||² I ⪯ I (a.e.; ∇m is Lipschitz). Hence ψ = ½||·||² − m is convex with 0 ⪯ ∇²ψ ⪯ I, i.e. ψ is
convex and 1-smooth, and by Baillon–Haddad f = ∇ψ is firmly nonexpansive: f = prox_R with R =
ψ* − ½||·||² convex (Moreau). PnP-ADMM (any ρ) and PnP-PGD (step < 2/L of the data term) then
converge (seed 001). The largest Jacobian eigenvalue is exactly 1 (constants: f(x + b) = f(x) + b).

Equivariance: Q(a·x + b·1) = a·Qx, and p(a·t; a·σ) = a²·p(t; σ), so
f(a·x + b; a·σ) = a·f(x; σ) + b for a > 0, exactly (at σ = 0, p is the limit ½ s_± t², still
2-homogeneous).

The model takes the noise level σ (``noise_input``; ``priors.lpn.set_noise_level``) like the
AE-LPN with ``--noise-input``, and works at any image size.

``mode="prox"``: the exact prox of the learned convex-ridge regularizer itself,

    f(y; σ) = argmin_z ½||z − y||² + λ·m(z; σ),    R = λ·m = λ Σ p(W Q z; σ),

with a learned strength λ > 0 (any size: the closed form above caps the smoothing of each
direction, this does not). With ``groups`` = G > 0 (mode "prox" only), m gains an isotropic part,

    m(z; σ) = Σ p(W Q z; σ) + Σ_{g, pixels} q_g(|(W_g Q z)_g|; σ),

W_g a convolution with G groups of 2·C_in learned zero-mean filters (at first the horizontal and
vertical differences of each channel, at distance g + 1), over the root of its own norm bound,
|·|_g the Euclidean norm of group g's responses at a pixel, and q_g(r; σ) = (σ w_g)² Φ_g(r /
(σ w_g)) with Φ_g(0) = 0 and Φ_g' a linear spline from Φ_g'(0) = 0 with slopes in [0, 1]: Φ_g
convex and nondecreasing on r ≥ 0, Huber at first (TV's form: the weight σ w_g Φ_g'(∞) on
|∇z|). q_g(|u|) is convex with Hessian a·(I − ûûᵀ) + b·ûûᵀ, a = Φ'(ρ)/ρ and b = Φ''(ρ) in [0, 1],
so ∇²m ⪯ 2I (``m_smoothness``), and it is 2-homogeneous in (z, σ): the prox stays exact,
firmly nonexpansive and affine-equivariant.

F(z) = ½||z − y||² + λm(z) is 1-strongly convex and κ-smooth, κ = 1 + λL (L = 1, or 2 with
groups), so accelerated gradient descent with step 1/κ and momentum (√κ − 1)/(√κ + 1)
converges linearly from z₀ = y; it stops per image when the RMS of ∇F is below ``tol``·σ (every
quantity scales with a under x → a·x + b, σ → a·σ, so the stopping step, and the output, are
exactly equivariant). f is the prox of a convex function, hence firmly nonexpansive; its Jacobian
is (I + λ∇²m(z*))⁻¹ = (I + λ Q Wᵀ D W Q)⁻¹, eigenvalues in (0, 1] (``jacobian_operator``). The
regularizer is explicit: R(x) = λ·m(x). Training differentiates the fixed point implicitly
(dz*/dθ = −H⁻¹ ∂∇F/∂θ, H = ∇²F by conjugate gradients), so what is trained is the prox used.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from priors.lpn import LearnedProx, mean_split, noise_levels

__all__ = ["RidgeProx", "conv_adjoint", "conv_forward", "conv_norm_bound", "KIND", "MODES"]

KIND = "fne-ridge"
# η of a warm-started inner solve (mode "prox", a solver's successive prox inputs v_prev, v): with
# η > 0 it may stop once ||∇F|| ≤ η·||v − v_prev|| (then ||z − z*|| ≤ η·||v − v_prev||, F being
# 1-strongly convex) when that is above ``tol``·σ·√n; a run's first solve, from z₀ = v, once
# ||∇F|| ≤ η·||∇F(v)|| (||v − z*|| ≤ ||∇F(v)||: the error is η times the prox's move). Far
# from the solution the solver's next step corrects the prox's error anyway; near it
# ||v − v_prev|| shrinks geometrically, so the errors are summable (the condition of inexact
# ADMM and forward-backward) and the last solves meet ``tol``. Off by default (exact to
# ``tol``); the presets turn it on where a solver runs to its tolerance (crr-ct:
# ``prox_relative_tol`` 0.5, docs/results/convergent-prior.md).
RELATIVE_TOL = 0.0
MODES = ("gradient-step", "prox")


def _fits(buf: torch.Tensor, t: torch.Tensor) -> bool:
    """Whether work buffer ``buf`` can hold ``t`` (same shape, dtype and device)."""
    return buf.shape == t.shape and buf.dtype == t.dtype and buf.device == t.device


@contextlib.contextmanager
def _plain_cpu_kernels(on: bool) -> Iterator[None]:
    """With ``on``, torch's own CPU convolution kernels instead of oneDNN's for the block.

    The ridge filters map one or two input channels to 64: oneDNN handles that shape poorly
    (one thread: a 512² slice, forward 70 → 58 ms and adjoint 56 → 43 ms; a 320² complex
    image 34 → 11 and 117 → 31 ms; training batches 1.4–1.8× faster forward and backward). It
    wins only on the gradient-free forward convolution of a batch of many small images (16 ×
    48²: 2.2 against 7.0 ms), so ``conv_forward`` keeps it there. Same sums in another order."""
    if not on:
        yield
        return
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def conv_adjoint(t: torch.Tensor, w: torch.Tensor, padding: int, dilation: int = 1) -> torch.Tensor:
    """Vᵀt for V = ``F.conv2d(·, w, padding=padding, dilation=dilation)``, w (C, C_in, k, k),
    t (B, C, H, W) → (B, C_in, H, W): ``F.conv_transpose2d`` with the same arguments (on the
    CPU with torch's own kernels, ``_plain_cpu_kernels``)."""
    with _plain_cpu_kernels(t.device.type == "cpu"):
        return F.conv_transpose2d(t, w, padding=padding, dilation=dilation)


def conv_forward(u: torch.Tensor, w: torch.Tensor, padding: int, dilation: int = 1) -> torch.Tensor:
    """V u = ``F.conv2d(u, w, padding=padding, dilation=dilation)``; on the CPU with torch's own
    kernels unless it is a gradient-free batch of more than 4 images (``_plain_cpu_kernels``)."""
    graph = torch.is_grad_enabled() and (u.requires_grad or w.requires_grad)
    plain = u.device.type == "cpu" and (graph or u.shape[0] <= 4)
    with _plain_cpu_kernels(plain):
        return F.conv2d(u, w, padding=padding, dilation=dilation)


def conv_norm_bound(weight: torch.Tensor, grid: int = 256) -> torch.Tensor:
    """A guaranteed upper bound on ||V||² for the convolution with ``weight`` (C, C_in, k, k)
    (zero padding, any image size).

    ||V||² ≤ M = sup_ω λ_max(M(ω)), M(ω) = V̂(ω)ᴴV̂(ω) (C_in × C_in), V̂ the filters' Fourier
    transform. Let (ω*, u*) attain M; p(ω) = u*ᴴM(ω)u* is a trigonometric polynomial of degree
    d = k − 1 per axis with 0 ≤ p ≤ M and its maximum M at ω*, so ∇p(ω*) = 0. The nearest point
    ω_g of an N×N grid is ω* + δ with |δ_i| ≤ π/N; along that segment p is of exponential type
    τ = (π/N)·2d, so |p''| ≤ τ²M (Bernstein) and p(ω_g) ≥ M(1 − τ²/2). Hence
    M ≤ max_grid λ_max / (1 − τ²/2): 1.1 % above the grid maximum for 7×7 filters at N = 256.
    The grid maximum comes from one FFT."""
    c_out, c_in, kh, kw = weight.shape
    tau = math.pi * ((kh - 1) + (kw - 1)) / grid
    if tau >= 1.0:
        raise ValueError(f"grid {grid} too coarse for {kh}x{kw} filters: use >= {4 * (kh + kw)}")
    vh = torch.fft.rfft2(weight, s=(grid, grid))  # (C, C_in, N, N/2 + 1)
    if c_in == 1:
        top = vh.abs().pow(2).sum(0)[0]
    else:
        m = torch.einsum("cipq,cjpq->pqij", vh.conj(), vh)  # (N, N/2 + 1, C_in, C_in)
        top = torch.linalg.eigvalsh(m)[..., -1]
    # float round-off of the FFT is far below 1e-4 of the maximum
    return top.max() / (1.0 - 0.5 * tau**2) * (1.0 + 1e-4)


class RidgeProx(LearnedProx):
    """f(x; σ) = x − Q Wᵀ g(W Q x; σ): see the module docstring. x (B, C_in, H, W)."""

    kind = KIND
    equivariance = "affine"
    # R grows like σ·Σ|Wx| where the shrinkage is past its knee (an ℓ1 part, like TV's weight):
    # in the closed form PnP-PGD is told σ·(step_rel·rho_rel) to solve ADMM's problem
    # (recon.pipeline.pgd_sigma_factor); in mode "prox" it scales R instead (strength_factor)
    sigma_power = 1.0

    def __init__(
        self,
        in_channels: int = 1,
        filters: int = 64,
        kernel: int = 7,
        knots: int = 17,
        knot_range: float = 4.0,
        grid: int = 256,
        threshold: float = 2.5,
        dilations: tuple[int, ...] | list[int] = (1,),
        slope_bound: bool = False,
        mode: str = "gradient-step",
        tol: float = 1e-3,
        max_iters: int = 300,
        groups: int = 0,
        group_knots: int = 9,
        group_range: float = 4.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not (tol > 0 and math.isfinite(tol)) or max_iters < 1:
            raise ValueError(f"need tol > 0 and max_iters >= 1, got {tol}, {max_iters}")
        if filters < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(
                f"need filters >= 1 and an odd kernel (--filters, --kernel), got {filters}, "
                f"{kernel}"
            )
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1 or filters % len(dilations):
            raise ValueError(
                f"dilations must be >= 1 and divide the {filters} filters into equal groups, "
                f"got {dilations}"
            )
        if knots < 2 or not knot_range > 0:
            raise ValueError(f"need knots >= 2 and knot_range > 0, got {knots}, {knot_range}")
        if groups < 0 or (groups and (mode != "prox" or kernel < 3)):
            raise ValueError(f"groups (>= 0, got {groups}) need mode 'prox' and a kernel >= 3")
        if groups and (group_knots < 2 or not group_range > 0):
            raise ValueError(
                f"need group_knots >= 2 and group_range > 0, got {group_knots}, {group_range}"
            )
        self._config = dict(
            kind=KIND,
            in_channels=in_channels,
            filters=filters,
            kernel=kernel,
            knots=knots,
            knot_range=float(knot_range),
            grid=grid,
        )
        if dilations != (1,):  # recorded only when used, so older checkpoints keep their config
            self._config["dilations"] = list(dilations)
        self.slope_bound = slope_bound
        if slope_bound:
            self._config["slope_bound"] = True
        self.mode, self.tol, self.max_iters = mode, float(tol), int(max_iters)
        self._warm_start, self._warm = False, None
        self.relative_tol = RELATIVE_TOL
        self._strength_factor = 1.0
        if mode == "prox":  # recorded only then, so older checkpoints keep their config
            self._config.update(mode=mode, tol=self.tol, max_iters=self.max_iters)
            # λ, the regularizer's strength (its curvature scale: p'' ∈ [0, λ])
            self.log_strength = nn.Parameter(torch.tensor(math.log(4.0)))
        # the isotropic part: groups of 2·C_in filters (∂x, ∂y per channel at first) whose
        # responses enter through their norm, |(W_g Q z)_g| (TV's form, with learned filters)
        self.groups, self.group_size = int(groups), 2 * in_channels
        if self.groups:
            self._config.update(groups=self.groups, group_knots=group_knots)
            self._config["group_range"] = float(group_range)
            self.group_weight = nn.Parameter(_difference_filters(groups, in_channels, kernel))
            self.register_buffer("group_knot_grid", torch.linspace(0.0, group_range, group_knots))
            # Huber at first: Φ'(ρ) = min(ρ, r_1), TV past the first knot
            slopes = torch.zeros(groups, group_knots)
            slopes[:, 0] = 1.0
            self.group_slopes = nn.Parameter(slopes)
            with torch.no_grad():
                wg = _unit_norm(self.group_weight, grid).view(groups, -1)
                self.log_group_width = nn.Parameter(torch.log(wg.norm(dim=1)))
        self.dilations, self.kernel = dilations, kernel
        self.in_channels, self.grid = in_channels, grid
        self.noise_input = True
        self.noise_level: float | torch.Tensor | None = None
        self.register_buffer("knot_grid", torch.linspace(-knot_range, knot_range, knots))
        per = filters // len(dilations)  # one group of filters per dilation
        init = [_init_filters(per, in_channels, kernel) for _ in dilations]
        self.weight = nn.Parameter(torch.cat(init))
        # per-filter width: the filter's noise response in units of σ (its norm after scaling)
        self.log_width = nn.Parameter(torch.zeros(filters))
        mid = 0.5 * (self.knot_grid[1:] + self.knot_grid[:-1])
        # one point inside each segment
        seg = torch.cat([self.knot_grid[:1] - 1, mid, self.knot_grid[-1:] + 1])
        slopes = (seg.abs() < threshold).to(torch.float32)  # soft thresholding at init
        self.slopes = nn.Parameter(slopes.repeat(filters, 1))  # (C, knots + 1), in [0, 1]
        self.offset = nn.Parameter(torch.zeros(filters))  # Φ'(0)
        with torch.no_grad():
            self.log_width.copy_(torch.log(self._scaled_weight().flatten(1).norm(dim=1)))

    # -- the pieces ---------------------------------------------------------------------------
    def _scaled_weight(self) -> torch.Tensor:
        """W's filters, recomputed only when the weights changed or a graph to them is needed
        (the norm bound's FFT costs about a third of a 128² prox)."""
        if torch.is_grad_enabled() and (self.weight.requires_grad or self.slopes.requires_grad):
            return self._compute_scaled_weight()
        p = (self.weight, self.slopes)
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in p)
        cached = getattr(self, "_w_cache", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, self._compute_scaled_weight())
            self._w_cache = cached
        return cached[1]

    def _compute_scaled_weight(self) -> torch.Tensor:
        """W's filters: V minus its mean (per filter and input channel: each filter ignores the
        local mean level, as on training patches, at any image size), over √B, so ||W|| ≤ 1."""
        v = self.weight - self.weight.mean(dim=(2, 3), keepdim=True)
        if not self.slope_bound:
            return v / conv_norm_bound(self._dilated(v), self.grid).sqrt()
        # ``slope_bound``: bound ||S^½ W|| instead, S = diag(each filter's largest slope), since
        # ∇²m = QWᵀDWQ ⪯ QWᵀSWQ: a filter whose curve never bends fully takes less of the budget
        top = self.slopes.clamp(0.0, 1.0).amax(1).to(v.dtype).view(-1, 1, 1, 1)
        bound = conv_norm_bound(self._dilated(v * top.sqrt()), self.grid)
        return v / (bound + 1e-12 * v.pow(2).sum()).sqrt()

    def _dilated(self, v: torch.Tensor) -> torch.Tensor:
        """The filters as one convolution: each group's kernels dilated by its factor (zeros in
        between) and centred in the largest span, so one bound covers W as a whole."""
        if self.dilations == (1,):
            return v
        k, span = self.kernel, (self.kernel - 1) * max(self.dilations) + 1
        rows = []
        for g, d in zip(v.chunk(len(self.dilations)), self.dilations, strict=True):
            off = (span - ((k - 1) * d + 1)) // 2
            z = v.new_zeros(g.shape[0], g.shape[1], span, span)
            z[:, :, off : off + (k - 1) * d + 1 : d, off : off + (k - 1) * d + 1 : d] = g
            rows.append(z)
        return torch.cat(rows)

    def _conv(self, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """W u: each group of filters at its dilation, zero padding, same size."""
        return torch.cat(
            [
                conv_forward(u, wg, padding=d * (self.kernel // 2), dilation=d)
                for wg, d in zip(w.chunk(len(self.dilations)), self.dilations, strict=True)
            ],
            1,
        )

    def _conv_t(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Wᵀ t, the exact adjoint of ``_conv``."""
        n = len(self.dilations)
        return sum(
            conv_adjoint(tg, wg, padding=d * (self.kernel // 2), dilation=d)
            for tg, wg, d in zip(t.chunk(n, 1), w.chunk(n), self.dilations, strict=True)
        )

    def _spline(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(s, c, k), each (C, knots + 1): on segment j, Φ'(u) = c_j + s_j·u and
        Φ(u) = k_j + c_j·u + ½ s_j·u², continuous, with Φ(0) = 0 and Φ'(0) = offset."""
        s = self.slopes.clamp(0.0, 1.0)
        r = self.knot_grid.to(s)
        n = r.numel()
        # Φ' at the knots: continuous, slope s_j on segment j (between r_{j-1} and r_j)
        dv = s[:, 1:n] * (r[1:] - r[:-1])  # (C, n - 1)
        v = torch.cat([torch.zeros_like(s[:, :1]), dv.cumsum(1)], 1)  # Φ'(r_k) − Φ'(r_0)
        anchor = torch.cat([r[:1], r])  # segment j passes through knot a(j) = max(j − 1, 0)
        va = torch.cat([v[:, :1], v], 1)
        c = va - s * anchor
        j0 = int(torch.bucketize(torch.zeros(()), r.detach().cpu()))  # the segment holding 0
        c = c - (c[:, j0] - self.offset).unsqueeze(1)  # Φ'(0) = c_{j0} = offset
        # Φ continuous at every knot: k_{j+1} − k_j = (c_j − c_{j+1}) r_j + ½(s_j − s_{j+1}) r_j²
        dk = (c[:, :-1] - c[:, 1:]) * r + 0.5 * (s[:, :-1] - s[:, 1:]) * r.pow(2)
        k = torch.cat([torch.zeros_like(s[:, :1]), dk.cumsum(1)], 1)
        return s, c, k - k[:, j0].unsqueeze(1)  # Φ(0) = k_{j0} = 0

    def _scales(self, x: torch.Tensor) -> tuple[_Analysis, torch.Tensor]:
        """(m's analysis pieces at the told σ, σ (B,)) for images x (B, C_in, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        w = self._scaled_weight().to(x.dtype)
        sigma = noise_levels(self.noise_level, x).view(-1)
        scale = sigma.view(-1, 1, 1, 1) * self.log_width.exp().to(x.dtype).view(1, -1, 1, 1)
        if not self.groups:
            return _Analysis(w, scale, None, None), sigma
        wg = self._scaled_group_weight().to(x.dtype)
        gscale = sigma.view(-1, 1, 1, 1) * self.log_group_width.exp().to(x.dtype).view(1, -1, 1, 1)
        return _Analysis(w, scale, wg, gscale), sigma

    def _responses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t = W Q x (B, C, H, W), the scale σ·w_c (B, C, 1, 1), W's filters)."""
        ops, _ = self._scales(x)
        _, u = mean_split(x)
        return self._conv(u, ops.w), ops.scale, ops.w

    def _knot_index(self, u: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """j with r_{j−1} < u ≤ r_j on the knot grid r (``torch.bucketize``; j in [0, knots]),
        plus ``offset`` (broadcast), as int32. The grid is uniform (``torch.linspace``), so
        j = ⌈(u − r_0)/h⌉ clamped: elementwise arithmetic instead of a binary search (it can
        differ from bucketize only for u within rounding of a knot, where Φ' is continuous)."""
        r = self.knot_grid.to(u.dtype)
        n = r.numel()
        if not self._knots_uniform():
            j = torch.bucketize(u, r, out_int32=True)
            return j if offset is None else j + offset.to(torch.int32)
        h = (r[-1] - r[0]) / (n - 1)
        j = torch.ceil((u - r[0]) / h).clamp_(0, n).nan_to_num_(0.0)  # NaN: a valid row, NaN out
        if offset is not None:  # small integers: exact in floating point
            j = j + offset.to(j.dtype)
        return j.to(torch.int32)

    def _segments(
        self,
        t: torch.Tensor,
        scale: torch.Tensor,
        with_k: bool = True,
        has_zero: bool | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Per entry of t: (u = t / scale, s_j, c_j, k_j) of its spline segment (k_j None
        unless ``with_k``); at σ = 0 the segment is the outer one on t's side (the limit σ → 0).
        ``has_zero`` is whether any scale is 0, when the caller knows it (one device sync less).
        The tables (C, knots + 1) are read with one flat int32 ``index_select`` each (torch's
        advanced indexing with a 4-D int64 index is about 10× slower on the CPU)."""
        s, c, k = (a.to(t.dtype) for a in self._spline())
        if has_zero is None:
            has_zero = bool((scale == 0).any())
        if has_zero:
            zero = scale == 0
            u = t / torch.where(zero, torch.ones_like(scale), scale)
            u = torch.where(zero, t.sign() * math.inf, u)
        else:
            u = t / scale
        rows = torch.arange(t.shape[1], device=t.device).view(1, -1, 1, 1) * s.shape[1]
        idx = self._knot_index(u.detach(), rows).flatten()

        def read(table: torch.Tensor) -> torch.Tensor:
            return table.flatten().index_select(0, idx).view_as(t)

        return u, read(s), read(c), read(k) if with_k else None

    def _shrinkage(
        self, t: torch.Tensor, scale: torch.Tensor, with_p: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(g, p) per entry: g = ∂p/∂t = scale·Φ'(t/scale), p = scale²·Φ(t/scale) (None unless
        ``with_p``: the inner solve needs g only); at scale 0 the limits g = s_±·t, p = ½ s_±·t²."""
        has_zero = bool((scale == 0).any())
        u, s, c, k = self._segments(t, scale, with_k=with_p, has_zero=has_zero)
        if not has_zero:
            g = scale * c + s * t
            p = scale.pow(2) * k + t * (scale * c + 0.5 * s * t) if with_p else None
            return g, p
        zero = (scale == 0).expand_as(t)
        g = torch.where(zero, s * t, scale * c + s * t)
        if not with_p:
            return g, None
        p = scale.pow(2) * k + scale * c * t + 0.5 * s * t.pow(2)
        p = torch.where(zero, 0.5 * s * t.pow(2), p)
        return g, p

    def _segment_index_(
        self, t: torch.Tensor, scale: torch.Tensor, work: list[torch.Tensor]
    ) -> torch.Tensor | None:
        """Fill ``work`` = [buffer, index] for t and return the flat int32 index of each entry's
        segment row in the (C, knots + 1) tables: j = ⌈(t/scale − r₀)/h⌉ clamped to [0, knots]
        (a uniform grid, ``_knot_index``) plus the row offset of t's channel. None when the
        in-place route does not apply (σ = 0, or a grid that is not uniform)."""
        if bool((scale == 0).any()) or not self._knots_uniform():
            return None
        r = self.knot_grid.to(t.dtype)
        n = r.numel()
        if not work or not _fits(work[0], t):
            work[:] = [torch.empty_like(t), torch.empty_like(t, dtype=torch.int32)]
        buf, idx = work[:2]
        h = (r[-1] - r[0]) / (n - 1)
        rows = torch.arange(t.shape[1], device=t.device, dtype=t.dtype).view(1, -1, 1, 1)
        torch.mul(t, 1.0 / (scale * h), out=buf)
        # a NaN entry reads row 0 (any valid row): g = s_j·t + scale·c_j is NaN there, so a NaN
        # input gives a NaN output (a solver's divergence test sees it), not an IndexError
        buf.sub_(r[0] / h).ceil_().clamp_(0, n).nan_to_num_(0.0).add_(rows * (n + 1))
        idx.copy_(buf)
        return idx.view(-1)

    @torch.no_grad()
    def _shrinkage_(
        self,
        t: torch.Tensor,
        scale: torch.Tensor,
        work: list[torch.Tensor] | None = None,
        with_value: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(g, Σp per image (B,) or None unless ``with_value``) of ``_shrinkage``, g written over
        t (no graph): the same segments, found once for both, and g = scale·c_j + s_j·t in
        about ten in-place passes through two buffers, ``work`` (a list, filled on first use and
        reusable while t's shape stays). Over C·H·W responses these passes are most of a prox's
        cost on the CPU, where each new tensor of that size is fresh memory to fault in (a 512²
        slice: 64 MiB a tensor). Falls back to ``_shrinkage`` at σ = 0 or on a knot grid that
        is not uniform."""
        work = [] if work is None else work
        flat = self._segment_index_(t, scale, work)
        if flat is None:
            g, p = self._shrinkage(t, scale, with_p=with_value)
            return g, None if p is None else p.flatten(1).sum(1)
        s, c, k = (a.to(t.dtype) for a in self._spline())
        buf = work[0]
        if with_value:
            return self._shrinkage_and_value_(t, scale, flat, work, s, c, k)
        torch.index_select(s.flatten(), 0, flat, out=buf.view(-1))
        t.mul_(buf)
        torch.index_select(c.flatten(), 0, flat, out=buf.view(-1))
        return t.addcmul_(buf, scale), None

    @staticmethod
    def _shrinkage_and_value_(
        t: torch.Tensor,
        scale: torch.Tensor,
        flat: torch.Tensor,
        work: list[torch.Tensor],
        s: torch.Tensor,
        c: torch.Tensor,
        k: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``_shrinkage_`` with the value: each table read once (three reads, not five) into
        two buffers. With a = scale, per channel Σp = ½Σ s_j t² + a Σ c_j t + a² Σ k_j, whose
        sums over the pixels are dot products (``einsum``, no temporary), and g = s_j t + a c_j
        is written over t in one pass."""
        if len(work) < 3 or not _fits(work[2], t):
            work[2:] = [torch.empty_like(t)]
        st, cj = work[0], work[2]
        b, ch = t.shape[:2]

        def dots(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # Σ_pixels u·v, (B, C)
            return torch.einsum("bchw,bchw->bc", u, v)

        torch.index_select(s.flatten(), 0, flat, out=st.view(-1))
        st.mul_(t)  # s_j t
        torch.index_select(c.flatten(), 0, flat, out=cj.view(-1))
        a = scale.expand(b, ch, 1, 1).reshape(b, ch)
        value = 0.5 * dots(st, t) + a * dots(cj, t)
        torch.addcmul(st, cj, scale, out=t)  # g
        torch.index_select(k.flatten(), 0, flat, out=cj.view(-1))
        value = value + a.pow(2) * cj.sum((2, 3))
        return t, value.sum(1)

    @torch.no_grad()
    def _potential_sum_(
        self, t: torch.Tensor, scale: torch.Tensor, work: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Σ p over t's entries per image (B,), p = scale²·k_j + scale·c_j·t + ½ s_j·t² as in
        ``_shrinkage``, without a graph and through ``work`` (t is left as it was)."""
        work = [] if work is None else work
        flat = self._segment_index_(t, scale, work)
        if flat is None:
            return self._shrinkage(t, scale)[1].flatten(1).sum(1)
        return self._potential_sum_at(t, scale, flat, work[0])

    def _potential_sum_at(
        self, t: torch.Tensor, scale: torch.Tensor, flat: torch.Tensor, buf: torch.Tensor
    ) -> torch.Tensor:
        """Σ p per image (B,) at the segments ``flat`` (``_segment_index_``), through ``buf``."""
        s, c, k = (a.to(t.dtype) for a in self._spline())
        torch.index_select(s.flatten(), 0, flat, out=buf.view(-1))
        total = 0.5 * buf.mul_(t).mul_(t).flatten(1).sum(1)
        torch.index_select(c.flatten(), 0, flat, out=buf.view(-1))
        total = total + (buf.mul_(t).sum((2, 3)) * scale.flatten(1)).sum(1)
        torch.index_select(k.flatten(), 0, flat, out=buf.view(-1))
        return total + (buf.sum((2, 3)) * scale.flatten(1).pow(2)).sum(1)

    def _knots_uniform(self) -> bool:
        """Whether the knot grid is uniform (checked once per grid, ``_knot_index``)."""
        key = (self.knot_grid.data_ptr(), self.knot_grid._version)
        if getattr(self, "_uniform_knots", (None,))[0] != key:
            r = self.knot_grid
            steps = r[1:] - r[:-1]
            self._uniform_knots = (key, bool(torch.allclose(steps, steps[:1].expand_as(steps))))
        return self._uniform_knots[1]

    # -- LearnedProx ---------------------------------------------------------------------------
    def potential(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "prox":  # its gradient is the prox (Moreau); its Hessian is not built
            return self._prox_solution(x, create_graph=False)[1]
        t, scale, _ = self._responses(x)
        _, p = self._shrinkage(t, scale)
        return 0.5 * x.pow(2).flatten(1).sum(1) - p.flatten(1).sum(1)

    def _gradient(self, v: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(v), ψ(v)) in closed form (no autograd through ψ): f = v − Q Wᵀ g(W Q v); in mode
        "prox" by the inner solve (``_prox_solution``)."""
        if self.mode == "prox":
            return self._prox_solution(v, create_graph)
        if not (create_graph and torch.is_grad_enabled()):
            with torch.no_grad():  # in place: the value, then g over the responses
                ops, _ = self._scales(v)
                _, u = mean_split(v)
                g, psum = self._shrinkage_(
                    self._conv(u, ops.w), ops.scale, self._closed_form_work(), True
                )
                _, back = mean_split(self._conv_t(g, ops.w))
                return v - back, 0.5 * v.pow(2).flatten(1).sum(1) - psum
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            t, scale, w = self._responses(v)
            g, p = self._shrinkage(t, scale)
            back = self._conv_t(g, w)
            _, back = mean_split(back)
            f = v - back
            psi = 0.5 * v.pow(2).flatten(1).sum(1) - p.flatten(1).sum(1)
        return (f, psi) if create_graph else (f.detach(), psi.detach())

    def _closed_form_work(self) -> list[torch.Tensor]:
        """The buffers of the gradient-free closed-form prox, kept between calls (per thread):
        a solver calls it at one shape many times, and fresh response-sized buffers cost more
        than the passes through them (a 256² complex slice: 61 against 90 ms a prox)."""
        local = self.__dict__.get("_work_local")
        if local is None:
            local = self.__dict__["_work_local"] = threading.local()
        if not hasattr(local, "work"):
            local.work = []
        return local.work

    @torch.no_grad()
    def clamp_(self) -> None:
        self.slopes.clamp_(0.0, 1.0)
        if self.groups:
            self.group_slopes.clamp_(0.0, 1.0)

    @property
    def m_smoothness(self) -> float:
        """L with ∇²m ⪯ L·I: 1 per part (||W||² ≤ 1 and p'' ≤ 1; ||W_g||² ≤ 1 and the group
        curve's a, b ≤ 1), so 1, or 2 with groups."""
        return 2.0 if self.groups else 1.0

    # -- mode "prox": the exact prox of λ·m ----------------------------------------------------
    @property
    def warm_start(self) -> bool:
        """Whether each inner solve starts from the previous call's output (a solver's
        successive prox inputs are close), shifted by the change of input, z₀ = z_prev +
        (v − v_prev), at strength factor 1 (ADMM); with ``relative_tol`` η > 0 (the presets'
        ``prox_relative_tol``; default ``RELATIVE_TOL``) it may stop at the looser limit
        η·||v − v_prev||. The result then depends on the call history, so it is off unless a
        solver run turns it on; setting it forgets the previous call, so every run starts
        cold."""
        return self._warm_start

    @warm_start.setter
    def warm_start(self, on: bool) -> None:
        self._warm_start, self._warm = bool(on), None

    @property
    def strength_factor(self) -> float:
        """t in R = t·λ·m (mode "prox"; 1, the trained regularizer, unless a solver sets it).

        PnP-PGD with step γ solves min D + ρ·R when its prox is prox_{γρR}: it sets t = γρ
        (= step_rel·rho_rel, a ratio, so the run stays affine-equivariant) and keeps ADMM's σ,
        so both solvers minimize exactly the same objective (``recon.pipeline``). Not saved
        with the weights; ``strength`` includes it, so the prox, R, the Jacobian and the
        certificate all see the same R."""
        return self._strength_factor

    @strength_factor.setter
    def strength_factor(self, t: float) -> None:
        if self.mode != "prox":
            raise ValueError("strength_factor needs mode 'prox' (the closed form's R is not m)")
        t = float(t)
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"strength_factor must be a finite number > 0, got {t}")
        self._strength_factor, self._warm = t, None

    def strength(self) -> torch.Tensor:
        """t·λ, the weight of m in R = t·λ·m (1 in the closed form, whose R is not m); λ is
        learned, t is ``strength_factor``."""
        if self.mode != "prox":
            return torch.ones(())
        return self._strength_factor * self.log_strength.exp()

    def _grad_m(
        self,
        z: torch.Tensor,
        ops: _Analysis,
        with_value: bool = True,
        work: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(∇m(z) = Q Wᵀ g(W Q z; σ) [+ Q W_gᵀ (a ⊙ W_g Q z)], m(z) (B,), None unless
        ``with_value``). ``work`` (buffers for ``_shrinkage_``): no value and no graph, the
        inner solve's in-place step."""
        _, u = mean_split(z)
        if work is not None and not with_value:
            g, p = self._shrinkage_(self._conv(u, ops.w), ops.scale, work)[0], None
        else:
            g, p = self._shrinkage(self._conv(u, ops.w), ops.scale, with_p=with_value)
        back = self._conv_t(g, ops.w)
        total = p.flatten(1).sum(1) if with_value else None
        if ops.wg is not None:
            tg = self._group_conv(u, ops.wg)
            coef, _, pg = self._group_curve(tg, ops.gscale)
            back = back + self._group_conv_t(coef * tg, ops.wg)
            if with_value:
                total = total + pg.flatten(1).sum(1)
        _, back = mean_split(back)
        return back, total

    def _hessian_m(self, z: torch.Tensor, ops: _Analysis):
        """v -> ∇²m(z)·v = Q Wᵀ (D ⊙ W Q v), D = p''(W Q z) ∈ [0, 1] (the segments' slopes);
        with groups + Q W_gᵀ H_g W_g Q v, H_g per group and pixel a·I + (b − a)ûûᵀ (û = u/|u|,
        a = Φ'(ρ)/ρ and b = Φ''(ρ), both in [0, 1])."""
        _, u = mean_split(z)
        _, d, _, _ = self._segments(self._conv(u, ops.w), ops.scale)
        if ops.wg is not None:
            tg = self._group_conv(u, ops.wg)
            a, b, _ = self._group_curve(tg, ops.gscale)
            unit = _grouped(tg, self.group_size)
            r = unit.pow(2).sum(2, keepdim=True).sqrt()
            unit = unit / torch.where(r > 0, r, torch.ones_like(r))
            ab = _grouped(b - a, self.group_size)[:, :, :1]

        def hvp(v: torch.Tensor) -> torch.Tensor:
            _, q = mean_split(v)
            back = self._conv_t(d * self._conv(q, ops.w), ops.w)
            if ops.wg is not None:
                s = self._group_conv(q, ops.wg)
                sg = _grouped(s, self.group_size)
                extra = ab * (unit * sg).sum(2, keepdim=True) * unit
                back = back + self._group_conv_t(a * s + extra.flatten(1, 2), ops.wg)
            _, back = mean_split(back)
            return back

        return hvp

    # -- the groups: Σ_g,pixels q_g(|(W_g Q z)_g|; σ), an isotropic (TV-like) part ------------
    def _scaled_group_weight(self) -> torch.Tensor:
        """W_g's filters: zero-mean, over the square root of a guaranteed bound on ||W_g||²."""
        if torch.is_grad_enabled() and self.group_weight.requires_grad:
            return _unit_norm(self.group_weight, self.grid)
        p = self.group_weight
        key = (p.data_ptr(), p._version, p.dtype, p.device)
        cached = getattr(self, "_wg_cache", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, _unit_norm(p, self.grid))
            self._wg_cache = cached
        return cached[1]

    def _group_conv(self, u: torch.Tensor, wg: torch.Tensor) -> torch.Tensor:
        return conv_forward(u, wg, padding=self.kernel // 2)

    def _group_conv_t(self, t: torch.Tensor, wg: torch.Tensor) -> torch.Tensor:
        return conv_adjoint(t, wg, padding=self.kernel // 2)

    def _group_spline(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(s, c, k), each (G, knots): on segment j (ρ from r_j, r_0 = 0, to r_{j+1} or ∞),
        Φ'(ρ) = c_j + s_j·ρ and Φ(ρ) = k_j + c_j·ρ + ½ s_j·ρ², with Φ(0) = Φ'(0) = 0. Slopes in
        [0, 1] make Φ convex and nondecreasing on ρ ≥ 0 with 0 ≤ Φ'(ρ) ≤ ρ."""
        s = self.group_slopes.clamp(0.0, 1.0)
        r = self.group_knot_grid.to(s)
        ds = s[:, :-1] - s[:, 1:]  # at the knots r_1 … r_{n−1}
        c = torch.cat([torch.zeros_like(s[:, :1]), (ds * r[1:]).cumsum(1)], 1)
        dk = (c[:, :-1] - c[:, 1:]) * r[1:] + 0.5 * ds * r[1:].pow(2)
        k = torch.cat([torch.zeros_like(s[:, :1]), dk.cumsum(1)], 1)
        return s, c, k

    def _group_curve(
        self, t: torch.Tensor, gscale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per group entry of t (B, G·k, H, W): (a = q'(r)/r, b = q''(r), both repeated over the
        group's k responses, and q (B, G, H, W)), q(r) = S²Φ(r/S), S = σ·w_g, r the group's
        norm; at S = 0 the limit q = ½ s_last·r²."""
        s, c, k = (v.to(t.dtype) for v in self._group_spline())
        r2 = _grouped(t, self.group_size).pow(2).sum(2)  # (B, G, H, W)
        pos = r2 > 0
        r = torch.where(pos, r2, torch.ones_like(r2)).sqrt()  # used only where r > 0
        zero = gscale == 0
        big = torch.where(zero, torch.ones_like(gscale), gscale)
        rho = torch.where(zero.expand_as(r), math.inf, r / big)
        j = torch.bucketize(rho.detach(), self.group_knot_grid[1:].to(t.dtype))
        idx = j + torch.arange(s.shape[0], device=t.device).view(1, -1, 1, 1) * s.shape[1]
        sj, cj, kj = s.flatten()[idx], c.flatten()[idx], k.flatten()[idx]
        first = (j == 0) | ~pos
        a = sj + torch.where(first, torch.zeros_like(cj), cj / torch.where(first, 1.0, rho))
        q = 0.5 * sj * r2 + torch.where(zero, 0.0, big.pow(2) * kj + big * cj * r)
        q = torch.where(first & ~zero, 0.5 * sj * r2, q)
        rep = self.group_size
        return a.repeat_interleave(rep, 1), sj.repeat_interleave(rep, 1), q

    @torch.no_grad()
    def _solve(
        self,
        y: torch.Tensor,
        ops: _Analysis,
        sigma: torch.Tensor,
        z0: torch.Tensor | None = None,
        slack: torch.Tensor | None = None,
        first_slack: float = 0.0,
    ) -> tuple[torch.Tensor, int]:
        """z* = argmin ½||z − y||² + λm(z) by accelerated gradient descent from ``z0`` (default
        y); each image stops (and stays) once ||∇F|| ≤ tol·min(1, t)·σ·√n, which puts it within
        that distance of z* whatever the start (F is 1-strongly convex; (1 + λL)-smooth, L the
        bound ``m_smoothness`` on ∇²m). t = ``strength_factor``: a prox scaled down by PnP-PGD
        moves its input by about t times as much, so its error is held to the same share of
        that move (else a warm start could pass the test unchanged while PGD still moves, and
        PGD would stop short). ``slack`` (B,): a larger per-image limit, the inexact-prox
        allowance of a warm-started solve; ``first_slack`` η: the limit is at least η·||∇F(z₀)||
        (a solver run's first solve, from z₀ = y: ||y − z*|| ≤ ||∇F(y)||, so its error is held
        to η times its move; ``_prox_solution``). Returns (z*, iterations)."""
        lam = float(self.strength().detach())
        kappa = 1.0 + lam * self.m_smoothness
        step, beta = 1.0 / kappa, (math.sqrt(kappa) - 1.0) / (math.sqrt(kappa) + 1.0)
        share = min(1.0, self._strength_factor)
        limit = self.tol * share * sigma * math.sqrt(y[0].numel())
        if slack is not None:  # held to the same share as the tolerance
            limit = torch.maximum(limit, share * slack)
        z = prev = y if z0 is None else z0
        done = torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)
        work: list[torch.Tensor] = []  # the in-place step's buffers, kept for the whole solve
        iters = 0
        while iters < self.max_iters:
            iters += 1
            u = z + beta * (z - prev)
            grad = (u - y) + lam * self._grad_m(u, ops, with_value=False, work=work)[0]
            if iters == 1 and first_slack > 0:
                limit = torch.maximum(limit, first_slack * grad.flatten(1).norm(dim=1))
            now = (grad.flatten(1).norm(dim=1) <= limit) & ~done
            keep, hit = done.view(-1, 1, 1, 1), now.view(-1, 1, 1, 1)  # y is (B, C, H, W)
            z_next = torch.where(keep, z, torch.where(hit, u, u - step * grad))
            prev = torch.where(keep | hit, z_next, z)  # a stopped image keeps no momentum
            z, done = z_next, done | now
            if bool(done.all()):
                break
        return z, iters

    def _solve_hessian(self, hvp, b: torch.Tensor, lam: float, tol: float) -> torch.Tensor:
        """(I + λ∇²m)⁻¹ b per image by the solvers' batched conjugate gradients, to a relative
        residual ≤ tol (the matrix is symmetric with eigenvalues in [1, 1 + λL])."""
        from solvers.cg import conjugate_gradient  # (solvers import priors: imported on use)

        iters = 50 + int(30 * math.sqrt(1.0 + lam * self.m_smoothness))
        return conjugate_gradient(lambda p: p + lam * hvp(p), b, iters=iters, tol=tol)[0]

    def _prox_solution(
        self, v: torch.Tensor, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(v), ψ(v)) in mode "prox": ψ(v) = ½||v||² − min_z [½||z − v||² + λm(z)], whose
        gradient is z* (Moreau). With ``create_graph`` the output carries the implicit gradient:
        out = z* − G + G.detach(), G = ∇F(z*; θ, v), and G's incoming gradient is mapped by
        H⁻¹ (a hook), so ∂out/∂θ = −H⁻¹ ∂G/∂θ and ∂out/∂v = H⁻¹, the implicit-function rule."""
        z, psi, _ = self._prox_parts(v, create_graph)
        return z, psi

    def _prox_parts(
        self, v: torch.Tensor, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(f(v), ψ(v), R(f(v)) = λ·m(z*) (B,), None with a graph): ``_prox_solution``'s work,
        with the regularizer it reads on the way (without a graph m(z*) alone is evaluated, in
        place: the gradient at z* is not needed)."""
        graph = create_graph and torch.is_grad_enabled()
        with torch.set_grad_enabled(graph):
            ops, sigma = self._scales(v)
        warm = self._warm if self.warm_start and not graph else None
        if warm is not None and (warm[0].shape != v.shape or warm[0].dtype != v.dtype):
            warm = None
        z0 = slack = None
        if warm is not None:
            z0, dv = warm[0].to(v.device), v.detach() - warm[1].to(v.device)
            if self.relative_tol > 0:  # an inexact prox (``RELATIVE_TOL``)
                slack = self.relative_tol * dv.flatten(1).norm(dim=1)
            if self._strength_factor >= 1.0:
                # ADMM's prox: prox(v) ≈ prox(v_prev) + (v − v_prev), exact where m is flat. Not
                # for the scaled-down prox of PnP-PGD, which moves its input little: there a
                # solve that passes at its first check must leave the iterate where it was
                # (PGD's fixed point to the tolerance), not carry the whole step
                z0 = z0 + dv
        first = self.relative_tol if warm is None and self.warm_start and not graph else 0.0
        z, _ = self._solve(v.detach(), ops.detach(), sigma.detach(), z0, slack, first)
        if self.warm_start and not graph:
            self._warm = (z, v.detach())
        lam = self.strength().to(v.dtype)
        if not graph:
            with torch.no_grad():
                r = lam * self._m_value(z, ops)
                psi = 0.5 * v.pow(2).flatten(1).sum(1) - 0.5 * (z - v).pow(2).flatten(1).sum(1)
            return z, psi - r, r
        with torch.enable_grad():
            gm, msum = self._grad_m(z, ops)
            psi = 0.5 * v.pow(2).flatten(1).sum(1) - 0.5 * (z - v).pow(2).flatten(1).sum(1)
            psi = psi - lam * msum
            big_g = (z - v) + lam * gm
            hvp = self._hessian_m(z, ops.detach())
            lam_f = float(lam.detach())
            tol = 1e-4 if v.dtype == torch.float32 else 1e-10
            big_g.register_hook(lambda g: self._solve_hessian(hvp, g, lam_f, tol))
            return z - big_g + big_g.detach(), psi, None

    def _m_value(
        self, z: torch.Tensor, ops: _Analysis, work: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """m(z) (B,) alone, no graph: ``_grad_m``'s value without the gradient's Wᵀ."""
        _, u = mean_split(z)
        total = self._potential_sum_(self._conv(u, ops.w), ops.scale, work)
        if ops.wg is not None:
            pg = self._group_curve(self._group_conv(u, ops.wg), ops.gscale)[2]
            total = total + pg.flatten(1).sum(1)
        return total

    def jacobian_operator(self, x: torch.Tensor):
        """v -> J v, J = ∂f/∂x = (I + λ∇²m(z*))⁻¹ at z* = f(x) (symmetric, eigenvalues in
        (0, 1]): the exact prox's Jacobian, for ``priors.jacobian``. Mode "prox" only."""
        if self.mode != "prox":
            raise ValueError("jacobian_operator is for mode 'prox'; the closed form has ∇²ψ")
        with torch.no_grad():
            ops, sigma = self._scales(x)
            z, _ = self._solve(x, ops, sigma)
            hvp = self._hessian_m(z, ops)
        lam = float(self.strength().detach())
        tol = 1e-12 if x.dtype == torch.float64 else 1e-5

        def jvp(v: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self._solve_hessian(hvp, v, lam, tol)

        return jvp

    def prox_and_regularizer(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(v), R(f(v)) (B,)). Mode "prox": R = t·λ·m read at the output directly, not by
        Fenchel–Young (⟨v, x⟩ − ½||x||² − ψ(v) cancels terms of size ½||v||², which in float32
        leaves an error of about 2⁻²⁴·||v||², far above PGD's late decreases)."""
        if self.mode != "prox":
            return super().prox_and_regularizer(v)
        self.check_input(v)
        z, _, r = self._prox_parts(v, create_graph=False)
        return z, r

    def regularizer(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """R(x) (B,). Mode "prox": λ·m(x) exactly (f = prox_R); the closed form's R is found by
        inverting f (``LearnedProx.regularizer``)."""
        if self.mode != "prox":
            return super().regularizer(x, **kwargs)
        with torch.no_grad():
            ops, _ = self._scales(x)
            return self.strength().to(x.dtype) * self._m_value(x, ops)

    def lipschitz_bound(self) -> float:
        """An upper bound on the largest eigenvalue of the Jacobian (of ∇²ψ): 1 by construction
        (||W||² · max p'' · ||Q||² ≤ 1, and the identity's 1 on constants; in mode "prox",
        (I + λ∇²m)⁻¹ with ∇²m ⪰ 0)."""
        return 1.0


class _Analysis(NamedTuple):
    """m's pieces at the told σ: W's filters and scales σ·w_c (B, C, 1, 1); with groups W_g's
    filters and scales σ·w_g (B, G, 1, 1), else None."""

    w: torch.Tensor
    scale: torch.Tensor
    wg: torch.Tensor | None
    gscale: torch.Tensor | None

    def detach(self) -> _Analysis:
        return _Analysis(*(None if t is None else t.detach() for t in self))


def _grouped(t: torch.Tensor, size: int) -> torch.Tensor:
    """(B, G·size, H, W) -> (B, G, size, H, W)."""
    return t.view(t.shape[0], -1, size, *t.shape[2:])


def _unit_norm(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """The filters minus their means, divided by √(a guaranteed bound on their norm²)."""
    v = weight - weight.mean(dim=(2, 3), keepdim=True)
    return v / conv_norm_bound(v, grid).sqrt()


def _difference_filters(groups: int, in_channels: int, kernel: int) -> torch.Tensor:
    """(G·2C, C, k, k): group j holds the horizontal and vertical differences at distance
    j + 1 (up to k // 2) of each channel, so one group starts as isotropic TV's gradient."""
    out = torch.zeros(groups, in_channels, 2, in_channels, kernel, kernel)
    mid = kernel // 2
    for j in range(groups):
        d = min(j + 1, max(mid, 1))
        for c in range(in_channels):
            out[j, c, 0, c, mid, mid], out[j, c, 0, c, mid, min(mid + d, kernel - 1)] = -1.0, 1.0
            out[j, c, 1, c, mid, mid], out[j, c, 1, c, min(mid + d, kernel - 1), mid] = -1.0, 1.0
    return out.view(groups * 2 * in_channels, in_channels, kernel, kernel)


def _init_filters(filters: int, in_channels: int, kernel: int) -> torch.Tensor:
    """The 2-D DCT-II basis of k×k patches without its constant atom (a tight frame of the
    patch space, so W starts near a sliding-window DCT), then random filters if more are
    asked; for several input channels the atoms repeat per channel."""
    n = torch.arange(kernel, dtype=torch.float64)
    basis = torch.cos(math.pi * (n.view(-1, 1) + 0.5) * n.view(1, -1) / kernel)  # (x, freq)
    basis = basis / basis.norm(dim=0, keepdim=True)
    atoms = [
        torch.outer(basis[:, i], basis[:, j])
        for i in range(kernel)
        for j in range(kernel)
        if i or j
    ]
    out = torch.zeros(filters, in_channels, kernel, kernel, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    for f in range(filters):
        ch, a = divmod(f, len(atoms))
        if ch < in_channels:
            out[f, ch] = atoms[a]
        else:
            out[f] = torch.randn(in_channels, kernel, kernel, generator=gen, dtype=torch.float64)
            out[f] /= out[f].norm()
    return out.to(torch.float32)
