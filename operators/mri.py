"""MRI forward models: Cartesian masked FFT, multi-coil SENSE, non-Cartesian SENSE (NUFFT).

Shapes: images are complex tensors (B, 1, H, W) (complex64 or complex128; a real input is
promoted to the matching complex dtype); k-space is complex.

Fourier convention: the centred orthonormal DFT fastMRI uses,
    F x = fftshift(FFT_ortho(ifftshift(x))),
over the last two axes. It equals ``sigpy.fft(x, axes=(-2, -1), center=True, norm="ortho")``
(tests check it) and is unitary, so Fᴴ = F⁻¹ = ``ifft2c``. It is done in torch, so the Cartesian
operators run on the input's device (GPU included). The non-Cartesian operator calls SigPy's
NUFFT on numpy arrays inside; LinearOperator's autograd wrapper supplies its gradients.

Masks and coil maps are stored as tensors and moved (once per device and dtype, then cached) to
the device and precision of the input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from operators.base import LinearOperator, _Cached, inner, norm

__all__ = [
    "coil_support",
    "fft2c",
    "ifft2c",
    "rss",
    "zero_filled",
    "MaskedFFT",
    "SENSE",
    "NonCartesianSENSE",
]

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D DFT over the last two axes: fftshift(FFT_ortho(ifftshift(x)))."""
    return torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS
    )


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse (= adjoint, the transform is unitary) of ``fft2c`` over the last two axes."""
    return torch.fft.fftshift(
        torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS
    )


def ifft2c_rows(k: torch.Tensor) -> torch.Tensor:
    """The centred orthonormal inverse DFT along axis −2 only (the readout, rows)."""
    return torch.fft.fftshift(
        torch.fft.ifft(torch.fft.ifftshift(k, dim=-2), dim=-2, norm="ortho"), dim=-2
    )


def _per_data(owner: object, y: torch.Tensor, extra: tuple, build: Callable[[], Any]) -> Any:
    """``build()`` once per data tensor y (and ``extra``) for ``owner``'s ``residual_sq``: kept
    until y changes (other memory, shape, strides, dtype, device, or an in-place write). A view
    of the same memory (``Stacked.split``) hits; y itself is kept, so its memory cannot be
    reused for other data meanwhile."""
    key = (y.data_ptr(), tuple(y.shape), y.stride(), y.dtype, y.device, y._version, *extra)
    cached = owner.__dict__.get("_residual_data")
    if cached is None or cached[1] != key:
        cached = owner.__dict__["_residual_data"] = (y, key, build())
    return cached[2]


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination sqrt(Σ_c |x_c|²) over ``dim`` (removed), real."""
    return coil_images.abs().pow(2).sum(dim=dim).sqrt()


def zero_filled(
    op: LinearOperator, y: torch.Tensor, dcf: torch.Tensor | np.ndarray | None = None
) -> torch.Tensor:
    """The zero-filled (adjoint) reconstruction Aᴴy, shape (B, 1, H, W).

    For ``MaskedFFT`` this is Fᴴ(M y); for ``SENSE`` the coil-combined image Σ_c conj(S_c) Fᴴ(M y_c)
    (with RSS-normalized maps, Σ|S_c|² = 1, it is the SENSE-combined zero-filled image); for
    ``NonCartesianSENSE`` the gridding image, Aᴴ(w ⊙ y) when density compensation weights
    ``dcf`` (K,) are given (they weight the data, they are not part of A). fastMRI's own
    multi-coil baseline without maps is ``rss(ifft2c(y))``.
    """
    if dcf is not None:
        w = torch.as_tensor(np.asarray(dcf) if not torch.is_tensor(dcf) else dcf)
        y = y * w.to(y.device, y.real.dtype if y.is_complex() else y.dtype)
    return op.adjoint(y)


def _complex_dtype(t: torch.Tensor) -> torch.dtype:
    """complex128 for double-precision input, complex64 otherwise."""
    return torch.complex128 if t.dtype in (torch.complex128, torch.float64) else torch.complex64


def coil_support(maps: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: Σ_c |S_c|² > 0 for coil maps (C, H, W)."""
    return torch.view_as_real(maps.resolve_conj()).pow(2).sum((0, -1)) > 0


def _as_complex(t: torch.Tensor) -> torch.Tensor:
    return t.to(_complex_dtype(t))


def _to_numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)


def _mask_tensor(mask, height: int | None) -> torch.Tensor:
    """A real mask as an (H, W) tensor; a 1-D (W,) column mask is broadcast over H rows."""
    m = np.asarray(_to_numpy(mask))
    if np.iscomplexobj(m):
        raise ValueError("the sampling mask must be real (0/1 or nonnegative weights)")
    m = m.astype(np.float64)
    if not np.all(np.isfinite(m)) or m.min(initial=0.0) < 0:
        raise ValueError("the sampling mask must be finite and nonnegative")
    if m.ndim == 1:
        h = m.shape[0] if height is None else int(height)
        m = np.broadcast_to(m[None, :], (h, m.shape[0]))
    elif m.ndim == 2:
        if height is not None and int(height) != m.shape[0]:
            raise ValueError(f"mask has {m.shape[0]} rows but height={height} was given")
    else:
        raise ValueError(f"mask must be (W,) columns or (H, W), got shape {m.shape}")
    return torch.from_numpy(np.ascontiguousarray(m))


class MaskedFFT(LinearOperator):
    """Single-coil Cartesian MRI: y = M ⊙ F x, x (B, 1, H, W) -> y (B, 1, H, W).

    The range is zero-filled k-space (fastMRI's convention: unsampled entries are 0).

    Args:
        mask: (H, W), or (W,) phase-encode columns (fastMRI style) broadcast over the rows; 0/1
            (nonnegative weights are also accepted: then AᴴA = Fᴴ diag(m²) F).
        height: rows H for a 1-D mask (default: W, a square image).

    ``solve_normal`` is closed form: (λ FᴴMᴴMF + ρI)⁻¹ = Fᴴ diag(1/(λ m² + ρ)) F (F unitary, M
    diagonal), which for a 0/1 mask is Fᴴ diag(1/(λ m + ρ)) F.
    """

    domain_complex = True
    range_complex = True

    def __init__(self, mask, height: int | None = None) -> None:
        m = _mask_tensor(mask, height)
        h, w = m.shape
        super().__init__((1, h, w), (1, h, w))
        self._mask = _Cached(m.to(torch.float32))
        self._mask64 = _Cached(m)

    @property
    def mask(self) -> torch.Tensor:
        """The (H, W) float32 mask on the CPU."""
        return self._mask.base

    def _m(self, t: torch.Tensor) -> torch.Tensor:
        src = self._mask64 if t.dtype == torch.complex128 else self._mask
        return src.like(t.device, t.real.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_complex(x)
        return self._m(x) * fft2c(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        y = _as_complex(y)
        return ifft2c(self._m(y) * y)

    def solve_normal(self, rhs: torch.Tensor, lam: float, rho: float) -> torch.Tensor:
        """(λAᴴA + ρI)⁻¹ rhs = Fᴴ [F rhs / (λ m² + ρ)], exact; rhs (B, 1, H, W)."""
        if rho <= 0 and lam <= 0:
            raise ValueError(f"need λ > 0 or ρ > 0, got λ={lam}, ρ={rho}")
        k = fft2c(_as_complex(rhs))
        m = self._m(k)
        return ifft2c(k / (lam * m * m + rho))


class SENSE(LinearOperator):
    """Multi-coil Cartesian SENSE: y_c = M ⊙ F(S_c x), x (B, 1, H, W) -> y (B, C, H, W).

    Adjoint: Aᴴy = Σ_c conj(S_c) Fᴴ(M ⊙ y_c), shape (B, 1, H, W).

    Args:
        maps: (C, H, W) complex coil sensitivities (numpy or torch; kept in their precision,
            cast to the input's on use).
        mask: (H, W), or (W,) columns broadcast over the rows; 0/1.
    """

    domain_complex = True
    range_complex = True

    def __init__(self, maps, mask) -> None:
        s = maps.detach().cpu() if torch.is_tensor(maps) else torch.from_numpy(np.asarray(maps))
        if s.ndim != 3:
            raise ValueError(f"coil maps must be (C, H, W), got shape {tuple(s.shape)}")
        if not s.is_complex():
            s = s.to(torch.complex128 if s.dtype == torch.float64 else torch.complex64)
        if not bool(torch.isfinite(torch.view_as_real(s)).all()):
            raise ValueError("coil maps contain NaN or infinite values")
        c, h, w = s.shape
        m = _mask_tensor(mask, h)
        if tuple(m.shape) != (h, w):
            hint = ""
            if tuple(m.shape) == (c, h):  # maps (H, W, C) read as (C, H, W), mask (H, W)
                hint = (
                    f"; the maps' last axis ({w}) looks like coils: give them as (C, H, W), "
                    "e.g. np.moveaxis(maps, -1, 0)"
                )
            raise ValueError(
                f"mask shape {tuple(m.shape)} does not match the maps' image ({h}, {w}){hint}"
            )
        super().__init__((1, h, w), (c, h, w))
        self._maps = _Cached(s)
        self._mask = _Cached(m.to(torch.float32))
        self._mask64 = _Cached(m)
        self._shifted_cache: dict[tuple[torch.device, torch.dtype], tuple] = {}

    @property
    def maps(self) -> torch.Tensor:
        """The (C, H, W) coil maps on the CPU."""
        return self._maps.base

    @property
    def mask(self) -> torch.Tensor:
        """The (H, W) float32 mask on the CPU."""
        return self._mask.base

    @property
    def support(self) -> torch.Tensor:
        """(H, W) bool: the pixels some coil sees (Σ_c |S_c|² > 0). Off it AᴴA is exactly 0,
        so the data say nothing there (ESPIRiT's maps are cropped to the object)."""
        return coil_support(self.maps)

    @property
    def n_coils(self) -> int:
        return self.range_shape[0]

    def _s(self, t: torch.Tensor) -> torch.Tensor:
        return self._maps.like(t.device, t.dtype)

    def _m(self, t: torch.Tensor) -> torch.Tensor:
        src = self._mask64 if t.dtype == torch.complex128 else self._mask
        return src.like(t.device, t.real.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_complex(x)
        return self._m(x) * fft2c(self._s(x)[None] * x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        y = _as_complex(y)
        return (self._s(y).conj()[None] * ifft2c(self._m(y) * y)).sum(dim=1, keepdim=True)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """AᴴA x = Σ_c conj(S_c) Fᴴ(M² ⊙ F(S_c x)), without the work that cancels.

        With P = fftshift and P⁻¹ = ifftshift (exact permutations, any size), fft2c = P F P⁻¹ and
        ifft2c = P Fᴴ P⁻¹, so AᴴA x = P Σ_c conj(P⁻¹S_c) Fᴴ((P⁻¹M²) ⊙ F((P⁻¹S_c) ⊙ P⁻¹x)):
        two shifts of one image instead of four of C coil images per call (the hot loop of
        ADMM's conjugate gradients). When M is the same on every row (a fastMRI column mask:
        the readout is fully sampled), F = F_H F_W and F_Hᴴ M² F_H = M² on each column, so only
        the 1-D transform along W remains: half the FFT work. Gradients go through
        ``forward``/``adjoint``."""
        if torch.is_grad_enabled() and x.requires_grad:
            return super().normal(x)
        self._check(x, self.domain_shape, "input", self.domain_complex)
        x = _as_complex(x)
        s, m2, dims = self._shifted(x)
        xs = torch.fft.ifftshift(x, dim=dims)
        if len(dims) == 1:
            k = torch.fft.fft(s[None] * xs, dim=-1, norm="ortho")
            v = torch.fft.ifft(k.mul_(m2), dim=-1, norm="ortho")
        else:
            k = torch.fft.fft2(s[None] * xs, norm="ortho")
            v = torch.fft.ifft2(k.mul_(m2), norm="ortho")
        return torch.fft.fftshift(v.mul_(s.conj()[None]).sum(dim=1, keepdim=True), dim=dims)

    def residual_sq(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """||Ax − y||². With a column mask (the same on every row) the transform along the
        fully sampled readout is unitary and commutes with M, so ||M ⊙ F_H F_W(S x) − y|| =
        ||M ⊙ F_W(S x) − F_Hᴴ y||: one 1-D FFT per coil image instead of a 2-D one, with
        F_Hᴴ y computed once per data tensor (the shifts folded in as in ``normal``)."""
        self._check(x, self.domain_shape, "input", self.domain_complex)
        with torch.no_grad():
            x = _as_complex(x)
            s, m2, dims = self._shifted(x)
            if len(dims) != 1:
                return super().residual_sq(x, y)

            def build() -> tuple[torch.Tensor, torch.Tensor]:
                yh = torch.fft.ifftshift(ifft2c_rows(_as_complex(y)), dim=-1)  # P_W⁻¹ F_Hᴴ y
                return yh.to(device=x.device, dtype=x.dtype), m2.sqrt()

            yh, m = _per_data(self, y, (x.dtype, x.device), build)
            xs = torch.fft.ifftshift(x, dim=-1)
            k = torch.fft.fft(s[None] * xs, dim=-1, norm="ortho").mul_(m)
            return float(norm(k.sub_(yh))) ** 2

    def _shifted(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
        """(P⁻¹S, P⁻¹M², the axes transformed) like ``t`` (device, dtype), made once per device
        and dtype; the axes are (-1,) for a mask that is the same on every row, else (-2, -1)."""
        key = (t.device, t.dtype)
        if key not in self._shifted_cache:
            m = self._m(t)
            dims = (-1,) if bool((m == m[:1]).all()) else _DIMS
            m2 = (m * m)[:1] if len(dims) == 1 else m * m
            self._shifted_cache[key] = (
                torch.fft.ifftshift(self._s(t), dim=dims),
                torch.fft.ifftshift(m2, dim=dims),
                dims,
            )
        return self._shifted_cache[key]


class NonCartesianSENSE(LinearOperator):
    """Non-Cartesian multi-coil SENSE through SigPy's NUFFT: y_c = N(S_c x) at ``coord``.

    x (B, 1, H, W) -> y (B, C, K); Aᴴy = Σ_c conj(S_c) Nᴴ y_c. N is SigPy's Kaiser–Bessel NUFFT
    (``sigpy.nufft`` / ``sigpy.nufft_adjoint``, which are exact adjoints of each other), scaled
    like the orthonormal DFT: on a Cartesian grid of coordinates it approximates ``fft2c``.

    Args:
        maps: (C, H, W) complex coil sensitivities (use ones((1, H, W)) for single-coil).
        coord: (K, 2) k-space coordinates in SigPy's convention: cycles per field of view in
            [−N/2, N/2), column 0 along H (rows), column 1 along W (columns).
        oversamp, width: NUFFT grid oversampling and kernel width (SigPy's defaults).
        toeplitz: compute ``normal`` (AᴴA, the hot loop of every solver) by Toeplitz embedding
            instead of a NUFFT and its adjoint (``toeplitz_kernel``): two FFTs of each coil
            image on a grid twice the size, in torch, on the input's device. It is the exact
            AᴴA of the non-uniform DFT, so it differs from ``adjoint(forward(x))`` (the gridded
            NUFFT) by the NUFFT's interpolation error, about 0.5 % relative; ``residual_sq``
            reports the quadratic this ``normal`` defines.

    Density compensation is not part of A (so Aᴴ stays the exact adjoint); pass weights to
    ``zero_filled`` or weight the data term instead. ``dcf()`` gives Pipe–Menon weights.
    The NUFFTs run on the CPU in numpy (in the input's precision); results return to the
    input's device.
    """

    domain_complex = True
    range_complex = True

    def __init__(
        self, maps, coord, oversamp: float = 1.25, width: int = 4, toeplitz: bool = False
    ) -> None:
        s = np.asarray(_to_numpy(maps))
        if s.ndim != 3:
            raise ValueError(f"coil maps must be (C, H, W), got shape {s.shape}")
        s = s.astype(np.complex128 if s.dtype in (np.complex128, np.float64) else np.complex64)
        if not np.all(np.isfinite(s)):
            raise ValueError("coil maps contain NaN or infinite values")
        k = np.asarray(_to_numpy(coord), dtype=np.float64)
        if k.ndim != 2 or k.shape[1] != 2:
            raise ValueError(f"coord must be (K, 2), got shape {k.shape}")
        c, h, w = s.shape
        lim = np.array([h, w]) / 2
        if not np.all(np.isfinite(k)) or np.any(np.abs(k) > lim + 1e-6):
            raise ValueError(f"coord must lie in [−N/2, N/2) for the image ({h}, {w})")
        super().__init__((1, h, w), (c, k.shape[0]))
        self.coord = k
        self.oversamp, self.width = float(oversamp), int(width)
        self._maps = {np.complex64: s.astype(np.complex64), np.complex128: s.astype(np.complex128)}
        self.toeplitz = bool(toeplitz)
        self._maps_t = _Cached(torch.from_numpy(self._maps[np.complex128]))
        self._kernel: _Cached | None = None

    @property
    def maps(self) -> np.ndarray:
        """The (C, H, W) coil maps (numpy, complex64)."""
        return self._maps[np.complex64]

    @property
    def support(self) -> torch.Tensor:
        """(H, W) bool: the pixels some coil sees (Σ_c |S_c|² > 0); off it AᴴA is 0."""
        return coil_support(torch.from_numpy(self._maps[np.complex128]))

    @property
    def n_coils(self) -> int:
        return self.range_shape[0]

    def _np(self, t: torch.Tensor) -> tuple[np.ndarray, type, np.ndarray]:
        dt = np.complex128 if t.dtype in (torch.complex128, torch.float64) else np.complex64
        rdt = np.float64 if dt is np.complex128 else np.float32
        a = t.detach().cpu().resolve_conj().resolve_neg().numpy()  # lazy conj/neg views
        return a.astype(dt, copy=False), dt, self.coord.astype(rdt)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        import sigpy as sp

        arr, dt, coord = self._np(x)
        coils = self._maps[dt][None] * arr[:, 0][:, None]  # (B, C, H, W)
        y = sp.nufft(coils, coord, oversamp=self.oversamp, width=self.width)
        return torch.from_numpy(np.ascontiguousarray(y.astype(dt, copy=False))).to(x.device)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        import sigpy as sp

        arr, dt, coord = self._np(y)
        b = arr.shape[0]
        coils = sp.nufft_adjoint(
            arr,
            coord,
            oshape=(b, *self.range_shape[:1], *self.domain_shape[1:]),
            oversamp=self.oversamp,
            width=self.width,
        )
        x = (np.conj(self._maps[dt])[None] * coils).sum(axis=1, keepdims=True)
        return torch.from_numpy(np.ascontiguousarray(x.astype(dt, copy=False))).to(y.device)

    def toeplitz_kernel(self) -> torch.Tensor:
        """K̂ (2H, 2W) float64: the eigenvalues of the circulant C whose top-left block is the
        single-coil AᴴA, so that AᴴA x = Σ_c conj(S_c) ⊙ Eᵀ F⁻¹[K̂ ⊙ F(E(S_c x))], E the
        zero-padding of an (H, W) image into the corner of a (2H, 2W) grid, F the plain DFT.

        Without the NUFFT's interpolation AᴴA is Toeplitz: (AᴴA)_{m,p} = T(m − p) with
        T(d) = Σ_k exp(2πi (k₀d₀/H + k₁d₁/W)) / (HW), offsets d in (−H, H) × (−W, W). T is one
        adjoint NUFFT of ones onto the (2H, 2W) grid at coordinates 2k, computed once at
        oversampling 2 and kernel width 8, so the normal this gives is the discrete Fourier
        model's AᴴA to about 1e-7 (relative), where the interpolating NUFFT pair is off by a
        few 1e-3 (SigPy's defaults; ``tests/test_mri_operators.py`` measures both against the
        dense model). The unused offset (−H or −W) is dropped and T is made Hermitian,
        T(−d) = conj T(d), so K̂ is real and the normal exactly self-adjoint."""
        if self._kernel is None:
            import sigpy as sp

            h, w = self.domain_shape[1:]
            ones = np.ones(self.coord.shape[0], np.complex128)
            t = sp.nufft_adjoint(ones, 2.0 * self.coord, (2 * h, 2 * w), oversamp=2.0, width=8)
            t = np.fft.ifftshift(t * (2.0 / np.sqrt(h * w)))  # offset d at index d mod 2N
            t[h, :], t[:, w] = 0.0, 0.0  # offset ±H, ±W: outside every (H, W) difference
            flip = np.roll(t[::-1, ::-1], 1, axis=(0, 1))  # T(−d)
            t = 0.5 * (t + np.conj(flip))
            self._kernel = _Cached(torch.from_numpy(np.fft.fft2(t).real.copy()))
        return self._kernel.base

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """AᴴA x: Aᴴ(A x) through two NUFFTs, or with ``toeplitz`` the embedding of
        ``toeplitz_kernel`` (torch FFTs on x's device; differentiable as it stands)."""
        if not self.toeplitz:
            return super().normal(x)
        self._check(x, self.domain_shape, "input", self.domain_complex)
        x = _as_complex(x)
        h, w = self.domain_shape[1:]
        self.toeplitz_kernel()
        k_hat = self._kernel.like(x.device, x.real.dtype)
        s = self._maps_t.like(x.device, x.dtype)
        k = torch.fft.fft2(s[None] * x, s=(2 * h, 2 * w))
        k = k * k_hat if torch.is_grad_enabled() and x.requires_grad else k.mul_(k_hat)
        v = torch.fft.ifft2(k)[..., :h, :w]
        return (v * s.conj()[None]).sum(dim=1, keepdim=True)

    def residual_sq(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """||Ax − y||²; with ``toeplitz`` the quadratic of the embedded normal T,
        xᴴTx − 2 Re xᴴAᴴy + ||y||², in float64 (the data term the solvers minimize; it equals
        ||Ax − y||² to the NUFFT's accuracy, and costs one embedded normal, not a NUFFT)."""
        if not self.toeplitz:
            return super().residual_sq(x, y)
        with torch.no_grad():

            def build() -> tuple[torch.Tensor, float]:
                y64 = y.to(torch.complex128)
                return self.adjoint(y64), float(norm(y64)) ** 2

            aty, yy = _per_data(self, y, (), build)
            x64 = x.to(torch.complex128)
            return float(inner(x64, self.normal(x64) - 2.0 * aty).sum()) + yy

    def dcf(self, max_iter: int = 30) -> np.ndarray:
        """Pipe–Menon density compensation weights w (K,) float32 for this trajectory (SigPy),
        scaled so that Aᴴ(w ⊙ A x) ≈ x (least-squares fit on a smooth single-coil test image)."""
        import sigpy as sp
        import sigpy.mri

        h, wd = self.domain_shape[1:]
        w = sigpy.mri.pipe_menon_dcf(
            self.coord, img_shape=(h, wd), max_iter=max_iter, show_pbar=False
        )
        w = np.abs(np.asarray(w, dtype=np.float64))
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, wd), indexing="ij")
        img = np.exp(-4 * (xx**2 + yy**2)).astype(np.complex128)
        kw = {"oversamp": self.oversamp, "width": self.width}
        back = sp.nufft_adjoint(w * sp.nufft(img, self.coord, **kw), self.coord, (h, wd), **kw)
        scale = float(np.real(np.vdot(back, img)) / max(np.real(np.vdot(back, back)), 1e-30))
        return (w * scale).astype(np.float32)
