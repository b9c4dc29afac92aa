"""Compressed sensing with a Gaussian matrix, applied to the whole image or block by block.

A dense m×n Gaussian matrix for a 256×256 image would hold 16k×65k floats (4 GB at ratio 0.25), so
large images use block CS (as ISTA-Net and most CS-imaging work do): the same matrix Φ measures every
non-overlapping b×b block of every channel. `block_size=None` measures the whole image at once (fine for
MNIST-sized images). Entries are i.i.d. N(0, 1/m), so E‖Φx‖² = ‖x‖².

Closed forms use the eigendecomposition ΦΦᵀ = U diag(λ) Uᵀ (m×m, computed in float64 and kept in the
dtype of the call, once per dtype and device): (ΦᵀΦ + ρI)⁻¹ r = (r − Φᵀ U diag(1/(λ+ρ)) Uᵀ Φ r) / ρ
(Woodbury), exact for every ρ at O(mn) cost (to float64 rounding in a float64 call: a factorisation
stored in float32 would cap a float64 prox at float32 accuracy), and Φᵀ U diag(1/(λ+ε)) Uᵀ for the
pseudo-inverse (ε = 0: Φ⁺ exactly, on the eigenvalues above rounding).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.ops.base import register
from invlab.ops.common import ImageLinearOperator, as_rho


@register("cs")
class CompressedSensing(ImageLinearOperator):
    """y[b, c, block] = Φ · vec(x[b, c, block]); measurements have shape (B, C, n_blocks, m)."""

    def __init__(self, in_shape: tuple[int, ...], matrix: Tensor, block_size: int | None = None):
        super().__init__(in_shape)
        c, h, w = self.in_shape
        self.block = (h, w) if block_size is None else (int(block_size), int(block_size))
        bh, bw = self.block
        if h % bh or w % bw:
            raise ConfigError(f"compressed sensing with block_size={block_size} needs the image size "
                              f"({h}×{w}) to be a multiple of it; set task.operator.block_size.")
        matrix = torch.as_tensor(matrix)
        matrix = matrix if matrix.dtype == torch.float64 else matrix.to(torch.float32)
        if matrix.dim() == 2:
            matrix = matrix.unsqueeze(0)
        if matrix.shape[-1] != bh * bw:
            raise ValueError(f"CS matrix has {matrix.shape[-1]} columns but blocks have {bh * bw} pixels")
        self.register_buffer("matrix", matrix)          # (B or 1, m, b²)
        self._factors: dict[tuple, tuple[Tensor, Tensor]] = {}   # (dtype, device, matrix dtype) -> (λ, U)
        self.n_blocks = (h // bh) * (w // bw)
        self.out_shape = (c, self.n_blocks, matrix.shape[-2])

    @classmethod
    def gaussian(cls, in_shape, generator=None, ratio: float = 0.25,
                 block_size: int | None = 32) -> "CompressedSensing":
        """m = round(ratio · pixels per block) measurements per block."""
        c, h, w = in_shape
        n = h * w if block_size is None else block_size * block_size
        if not 0 < ratio:
            raise ConfigError(f"compressed sensing ratio must be positive, got {ratio}")
        m = max(1, round(ratio * n))
        matrix = torch.randn(m, n, generator=generator) / math.sqrt(m)
        return cls(in_shape, matrix, block_size)

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "CompressedSensing":
        return cls.gaussian(in_shape, generator, ratio=0.3, block_size=8)

    # ---- block <-> image ------------------------------------------------------------------------
    def _to_blocks(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        bh, bw = self.block
        x = x.reshape(b, c, h // bh, bh, w // bw, bw).permute(0, 1, 2, 4, 3, 5)
        return x.reshape(b, c, self.n_blocks, bh * bw)

    def _from_blocks(self, v: Tensor) -> Tensor:
        b = v.shape[0]
        c, h, w = self.in_shape
        bh, bw = self.block
        v = v.reshape(b, c, h // bh, w // bw, bh, bw).permute(0, 1, 2, 4, 3, 5)
        return v.reshape(b, c, h, w)

    def _phi(self, dtype) -> Tensor:
        return self.matrix.to(dtype).unsqueeze(1)        # (B or 1, 1, m, n) broadcasts over channels

    def gram_factors(self, dtype) -> tuple[Tensor, Tensor]:
        """(λ, U) of ΦΦᵀ = U diag(λ) Uᵀ, shapes (B or 1, m) and (B or 1, m, m), in `dtype`: computed in
        float64 from the matrix as stored, then cast, once per (dtype, device, stored dtype)."""
        key = (dtype, str(self.matrix.device), self.matrix.dtype)
        if key not in self._factors:
            phi = self.matrix.double()
            lam, vecs = torch.linalg.eigh(phi @ phi.transpose(-1, -2))
            self._factors[key] = (lam.to(dtype), vecs.to(dtype))
        return self._factors[key]

    def _gram_apply(self, v: Tensor, spectrum: Tensor) -> Tensor:
        """U diag(spectrum) Uᵀ applied to measurement blocks v (…, m); spectrum (B or 1, m)."""
        u = self.gram_factors(v.dtype)[1].unsqueeze(1)
        coeff = torch.einsum("bcnm,bcmk->bcnk", v, u) * spectrum.unsqueeze(1).unsqueeze(1)
        return torch.einsum("bcnk,bcmk->bcnm", coeff, u)

    # ---- operator ------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bcnd,bcmd->bcnm", self._to_blocks(x), self._phi(x.dtype))

    def _blocks_adjoint(self, v: Tensor) -> Tensor:
        return torch.einsum("bcnm,bcmd->bcnd", v, self._phi(v.dtype))

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return self._from_blocks(self._blocks_adjoint(y))

    def prox_l2(self, z, y, rho, iters=100, lr=None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        rho_t = as_rho(rho, z)
        r = self._blocks_adjoint(y) + rho_t * self._to_blocks(z)                # Aᵀy + ρz, blockwise
        lam = self.gram_factors(z.dtype)[0]
        inner = self._gram_apply(self(self._from_blocks(r)), 1.0 / (lam + rho_t.flatten(1)))
        return self._from_blocks((r - self._blocks_adjoint(inner)) / rho_t)

    def pinv(self, y: Tensor, iters: int = 100, eps: float = 1e-4) -> Tensor:
        """Φᵀ(ΦΦᵀ + eps·I)⁻¹ y (the CG fallback's solution); eps = 0: the min-norm solution Φ⁺y, with
        eigenvalues of ΦΦᵀ below rounding (a rank-deficient Φ) treated as zero."""
        self.check_measurement(y)
        lam = self.gram_factors(y.dtype)[0]
        if eps > 0:
            inv = 1.0 / (lam + eps)
        else:
            cut = lam.amax(-1, keepdim=True) * lam.shape[-1] * torch.finfo(lam.dtype).eps
            inv = torch.where(lam > cut, 1.0 / lam.clamp_min(torch.finfo(lam.dtype).tiny), torch.zeros_like(lam))
        return self._from_blocks(self._blocks_adjoint(self._gram_apply(y, inv)))
