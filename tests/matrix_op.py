"""A dense-matrix operator for solver tests: images (B, 1, H, W) -> vectors (B, 1, M, 1)."""

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
        assert n == h * w
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
