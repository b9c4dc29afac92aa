"""Fourier phase retrieval: y = |F pad(x)| and the coded-diffraction variant y = |F pad(m ⊙ x)|.

F is the centred orthonormal 2-D FFT. Padding follows the DPS convention, which the papers' numbers
refer to: `oversample` o pads int(o/8 · N) zeros on each side, so o = 2 turns 256×256 into 384×384
and o = 4 (DPnP's coded setting) into 512×512. These operators are nonlinear: gradients and proxes use
the autograd / gradient-descent fallbacks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invlab.ops.base import register
from invlab.ops.common import ImageOperator, fft2c, ifft2c


@register("phase_retrieval")
class FourierPhaseRetrieval(ImageOperator):
    """y = |fft2c(pad(x))| per channel; measurements real, (B, C, H + 2p_h, W + 2p_w)."""

    def __init__(self, in_shape: tuple[int, ...], generator: torch.Generator | None = None,
                 oversample: float = 2.0):
        super().__init__(in_shape)   # `generator` is unused: the factory signature of every operator
        c, h, w = self.in_shape
        self.oversample = float(oversample)
        self.pad = (int(self.oversample / 8 * h), int(self.oversample / 8 * w))
        self.out_shape = (c, h + 2 * self.pad[0], w + 2 * self.pad[1])

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "FourierPhaseRetrieval":
        return cls(in_shape, oversample=2.0)

    def _pad(self, x: Tensor) -> Tensor:
        ph, pw = self.pad
        return F.pad(x, (pw, pw, ph, ph))

    def _crop(self, x: Tensor) -> Tensor:
        ph, pw = self.pad
        h, w = self.in_shape[-2:]
        return x[..., ph:ph + h, pw:pw + w]

    def _modulate(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        return fft2c(self._pad(self._modulate(x))).abs()

    def baseline(self, y: Tensor) -> Tensor:
        """The zero-phase inverse: Re F⁻¹(y) cropped to the image support. Phase retrieval has no
        linear inverse; this only shows the measured energy, centred, and is reported as the input."""
        self.check_measurement(y)
        return self._crop(ifft2c(y).real)

    def align(self, xhat: Tensor, x: Tensor) -> Tensor:
        """The member of x̂'s trivial-ambiguity orbit closest to x (least squares), cropped to the image.

        |F pad(x)| cannot tell x from its circular shifts in the padded frame or its 180° rotation
        (x(−n) has the conjugate spectrum), so a reconstruction is scored up to those: the evaluation's
        alignment-aware PSNR, not something a solver may use. Every shift and both orientations are tried
        at once: ‖crop(S_d P) − x‖² = Σ M·(S_d P)² − 2⟨S_d P, pad(x)⟩ + ‖x‖² with M the support mask, both
        sums circular cross-correlations computed by FFT."""
        self.check_input(xhat)
        self.check_input(x)
        work = torch.float64
        p0 = self._pad(xhat.detach().to(work))
        cand = torch.stack([p0, p0.flip(-2, -1)], 1)                      # (B, 2, C, H', W')
        target = self._pad(x.detach().to(work)).unsqueeze(1)
        support = self._pad(torch.ones_like(x[:1], dtype=work)).unsqueeze(1)
        spec = lambda t: torch.fft.fft2(t)  # noqa: E731
        corr = lambda a, b: torch.fft.ifft2(spec(a) * spec(b).conj()).real.sum(2)  # noqa: E731  Σ_c, per shift
        err = corr(support, cand ** 2) - 2 * corr(target, cand)          # (B, 2, H', W'), up to ‖x‖²
        best = err.flatten(1).argmin(1)
        h, w = err.shape[-2:]
        out = []
        for b, k in enumerate(best.tolist()):
            flip, dh, dw = k // (h * w), (k % (h * w)) // w, k % w
            out.append(self._crop(torch.roll(cand[b, flip], shifts=(dh, dw), dims=(-2, -1))))
        return torch.stack(out).to(xhat.dtype)


@register("coded_phase_retrieval")
class CodedPhaseRetrieval(FourierPhaseRetrieval):
    """y = |fft2c(pad(m ⊙ x))| with a random code m ∈ {−1, 0, +1} (probabilities 1/8, 6/8, 1/8, as in
    DPnP), a (B or 1, 1, H, W) buffer shared by all channels."""

    def __init__(self, in_shape: tuple[int, ...], code: Tensor, oversample: float = 4.0):
        super().__init__(in_shape, oversample=oversample)
        code = torch.as_tensor(code, dtype=torch.float32)
        while code.dim() < 4:
            code = code.unsqueeze(0)
        self.register_buffer("code", code)

    @classmethod
    def random(cls, in_shape, generator=None, oversample: float = 4.0) -> "CodedPhaseRetrieval":
        u = torch.rand(*in_shape[-2:], generator=generator)
        code = (u < 1 / 8).float() * -1.0 + (u >= 7 / 8).float()
        return cls(in_shape, code, oversample)

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "CodedPhaseRetrieval":
        return cls.random(in_shape, generator, oversample=4.0)

    align = None   # the random code breaks the shift and flip ambiguities: scored by plain PSNR

    def _modulate(self, x: Tensor) -> Tensor:
        return self.code.to(x.dtype) * x
