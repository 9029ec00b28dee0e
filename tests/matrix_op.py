"""A dense-matrix operator for solver tests: images (B, 1, H, W) -> vectors (B, 1, M, 1)."""

from __future__ import annotations

import torch

from operators.base import LinearOperator


class MatrixOperator(LinearOperator):
    def __init__(self, matrix: torch.Tensor, h: int, w: int) -> None:
        m, n = matrix.shape
        assert n == h * w
        super().__init__((1, h, w), (1, m, 1))
        self.A = matrix
        self.domain_complex = self.range_complex = matrix.is_complex()

    def _forward(self, x):
        return (x.reshape(x.shape[0], -1).to(self.A.dtype) @ self.A.T).reshape(
            -1, *self.range_shape
        )

    def _adjoint(self, y):
        flat = y.reshape(y.shape[0], -1).to(self.A.dtype) @ self.A.conj()
        return flat.reshape(-1, *self.domain_shape)
