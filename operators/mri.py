"""MRI forward models: Cartesian masked FFT, multi-coil SENSE, non-Cartesian SENSE (NUFFT).

Images are complex tensors (B, 1, H, W); k-space is complex. The Fourier transform is the
centred orthonormal one fastMRI uses, F = fftshift ∘ FFT_ortho ∘ ifftshift (equal to
``sigpy.fft(x, center=True, norm="ortho")``, which a test checks), done in torch so it runs on
the input's device. The non-Cartesian operator calls SigPy's NUFFT on numpy arrays inside.
Masks and coil maps are kept as tensors and moved to the input's device on use.
"""

from __future__ import annotations

import numpy as np
import torch

from operators.base import LinearOperator

__all__ = ["fft2c", "ifft2c", "rss", "MaskedFFT", "SENSE", "NonCartesianSENSE"]


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two axes."""
    dims = (-2, -1)
    return torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims
    )


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of ``fft2c`` (and its adjoint: the transform is unitary)."""
    dims = (-2, -1)
    return torch.fft.fftshift(
        torch.fft.ifft2(torch.fft.ifftshift(k, dim=dims), norm="ortho"), dim=dims
    )


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares over the coil axis."""
    return coil_images.abs().pow(2).sum(dim=dim).sqrt()


def _complex_dtype(t: torch.Tensor) -> torch.dtype:
    if t.dtype in (torch.complex128, torch.float64):
        return torch.complex128
    return torch.complex64


def _mask2d(mask, shape: tuple[int, int]) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    if m.ndim == 1:
        if m.shape[0] != shape[1]:
            raise ValueError(f"1-D mask has {m.shape[0]} columns, the image {shape[1]}")
        m = m[None, :].expand(shape).clone()
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"mask shape {tuple(m.shape)} does not match the image {shape}")
    return m


class MaskedFFT(LinearOperator):
    """Single-coil Cartesian MRI: y = M ⊙ F x, x (B, 1, H, W) -> y (B, 1, H, W) (zero-filled).

    mask: 0/1 of shape (H, W), or (W,) phase-encode columns (fastMRI style) with ``height``.
    """

    domain_complex = range_complex = True

    def __init__(self, mask, height: int | None = None) -> None:
        m = np.asarray(mask.cpu() if torch.is_tensor(mask) else mask, dtype=np.float32)
        if m.ndim == 1:
            if height is None:
                raise ValueError("a 1-D (column) mask needs the image height: MaskedFFT(mask, H)")
            h, w = int(height), m.shape[0]
        elif m.ndim == 2:
            h, w = m.shape
        else:
            raise ValueError(f"mask must be (W,) or (H, W), got shape {m.shape}")
        super().__init__((1, h, w), (1, h, w))
        self.mask = _mask2d(m, (h, w))

    def _m(self, t: torch.Tensor) -> torch.Tensor:
        return self.mask.to(t.device, t.real.dtype if t.is_complex() else t.dtype)

    def _forward(self, x):
        x = x.to(_complex_dtype(x))
        return self._m(x) * fft2c(x)

    def _adjoint(self, y):
        y = y.to(_complex_dtype(y))
        return ifft2c(self._m(y) * y)

    def solve_normal(self, rhs, lam, rho):
        """(λFᴴMF + ρI)⁻¹ = Fᴴ diag(1/(λm + ρ)) F, exact since F is unitary and M diagonal."""
        k = fft2c(rhs.to(_complex_dtype(rhs)))
        return ifft2c(k / (lam * self._m(k) + rho))


class SENSE(LinearOperator):
    """Multi-coil Cartesian SENSE: y_c = M ⊙ F(S_c x), x (B, 1, H, W) -> y (B, C, H, W).

    maps: (C, H, W) complex coil sensitivities; mask: (W,) or (H, W).
    Adjoint: Σ_c conj(S_c) Fᴴ(M ⊙ y_c).
    """

    domain_complex = range_complex = True

    def __init__(self, maps, mask) -> None:
        s = torch.as_tensor(np.asarray(maps)) if not torch.is_tensor(maps) else maps
        if s.ndim != 3:
            raise ValueError(f"coil maps must be (C, H, W), got shape {tuple(s.shape)}")
        c, h, w = s.shape
        super().__init__((1, h, w), (c, h, w))
        self.maps = s.to(torch.complex64)
        self.mask = _mask2d(mask.cpu().numpy() if torch.is_tensor(mask) else mask, (h, w))

    def _s(self, t):
        return self.maps.to(t.device, _complex_dtype(t))

    def _m(self, t):
        return self.mask.to(t.device, t.real.dtype)

    def _forward(self, x):
        x = x.to(_complex_dtype(x))
        return self._m(x) * fft2c(self._s(x)[None] * x)

    def _adjoint(self, y):
        y = y.to(_complex_dtype(y))
        return (self._s(y).conj()[None] * ifft2c(self._m(y) * y)).sum(dim=1, keepdim=True)


class NonCartesianSENSE(LinearOperator):
    """Non-Cartesian multi-coil SENSE through SigPy's NUFFT: y_c = NUFFT(S_c x) at ``coord``.

    maps: (C, H, W); coord: (K, 2) in SigPy's convention (cycles, in [−N/2, N/2)). Range shape
    (C, K). The NUFFT is scaled to be approximately unitary on a full trajectory (SigPy's
    orthonormal convention); density compensation is not part of A, so its adjoint stays exact.
    """

    domain_complex = range_complex = True

    def __init__(self, maps, coord) -> None:
        s = np.asarray(maps.cpu().numpy() if torch.is_tensor(maps) else maps, dtype=np.complex64)
        if s.ndim != 3:
            raise ValueError(f"coil maps must be (C, H, W), got shape {s.shape}")
        k = np.asarray(coord, dtype=np.float32)
        if k.ndim != 2 or k.shape[1] != 2:
            raise ValueError(f"coord must be (K, 2), got shape {k.shape}")
        c, h, w = s.shape
        super().__init__((1, h, w), (c, k.shape[0]))
        self.maps_np, self.coord = s, k

    def _forward(self, x):
        import sigpy as sp

        dt = np.complex128 if x.dtype == torch.complex128 else np.complex64
        arr = x.detach().cpu().numpy().astype(dt)
        out = np.stack(
            [sp.nufft(self.maps_np * arr[b, 0], self.coord) for b in range(arr.shape[0])]
        )
        return torch.from_numpy(out).to(x.device, _complex_dtype(x))

    def _adjoint(self, y):
        import sigpy as sp

        h, w = self.domain_shape[1:]
        arr = y.detach().cpu().numpy()
        out = []
        for b in range(arr.shape[0]):
            coil = sp.nufft_adjoint(arr[b], self.coord, oshape=(arr.shape[1], h, w))
            out.append((np.conj(self.maps_np) * coil).sum(axis=0, keepdims=True))
        return torch.from_numpy(np.stack(out)).to(y.device, _complex_dtype(y))
