"""A dense-matrix operator: images (B, 1, H, W) -> vectors (B, 1, M, 1).

For small problems that must run exactly in float64 (solver tests, the exactness rows of the
robustness benchmark): ``matrix_of`` turns any operator on small images (ASTRA's projector
included, whose own arithmetic is float32) into an explicit matrix, so every later product is
float64 and a true adjoint by construction."""

from __future__ import annotations

import torch

from operators.base import LinearOperator


class MatrixOperator(LinearOperator):
    """y = A x with an explicit (M, H·W) matrix, real or complex; Aᴴ = conj(A)ᵀ.

    closed_form=True also provides ``solve_normal`` by a dense solve of (λAᴴA + ρI), so PnP-ADMM
    takes its closed-form branch.
    """

    def __init__(self, matrix: torch.Tensor, h: int, w: int, *, closed_form: bool = False):
        m, n = matrix.shape
        if n != h * w:
            raise ValueError(f"matrix has {n} columns, an {h}x{w} image has {h * w} pixels")
        super().__init__((1, h, w), (1, m, 1))
        self.A = matrix
        self.domain_complex = self.range_complex = matrix.is_complex()
        self.closed_form = closed_form

    # Products as broadcast multiply-and-sum: small float64 BLAS calls can stall for
    # milliseconds on a busy machine (thread hand-off), element-wise kernels do not.
    def _forward(self, x):
        flat = x.reshape(x.shape[0], 1, -1).to(self.A.dtype)
        return (flat * self.A).sum(dim=-1).reshape(-1, *self.range_shape)

    def _adjoint(self, y):
        flat = y.reshape(y.shape[0], -1, 1).to(self.A.dtype)
        return (flat * self.A.conj()).sum(dim=1).reshape(-1, *self.domain_shape)

    def dense_normal(self, lam: float, rho: float) -> torch.Tensor:
        """The matrix λAᴴA + ρI."""
        n = self.A.shape[1]
        return lam * (self.A.conj().T @ self.A) + rho * torch.eye(n, dtype=self.A.dtype)

    def solve_normal(self, rhs, lam, rho):
        if not self.closed_form:
            return None
        flat = rhs.reshape(rhs.shape[0], -1).to(self.A.dtype).T
        sol = torch.linalg.solve(self.dense_normal(lam, rho), flat)
        return sol.T.reshape(-1, *self.domain_shape)


def matrix_of(op: LinearOperator, dtype: torch.dtype = torch.float64, batch: int = 256):
    """The (M, H·W) matrix of a real operator on (1, H, W) images, column j = A e_j, in
    ``dtype`` (the operator's own products may be float32: the matrix holds what it computes).
    Builds H·W images in batches; for small images only."""
    c, h, w = op.domain_shape
    if c != 1 or op.domain_complex or op.range_complex:
        raise ValueError("matrix_of: real operators on one-channel images only")
    n = h * w
    if n > 128 * 128:
        raise ValueError(f"matrix_of: {h}x{w} images make a {n}-column matrix; use ≤ 128x128")
    cols = []
    for start in range(0, n, batch):
        idx = torch.arange(start, min(start + batch, n))
        e = torch.zeros(len(idx), n, dtype=torch.float32)
        e[torch.arange(len(idx)), idx] = 1.0
        cols.append(op.forward(e.view(-1, 1, h, w)).reshape(len(idx), -1).to(dtype))
    return torch.cat(cols).T.contiguous()
