"""ES-WMV: early stopping by windowed moving variance (Wang, Li, Zhuang, Chen, Sun, "Early stopping for deep
image prior", TMLR 2023; the rule DMPlug uses, methods.md L).

An optimisation whose iterates first approach a clean image and later start fitting noise shows a dip in how
much its iterates move: while it is still improving the image changes a lot, near the best image it settles,
and when it starts to overfit it moves again. ES-WMV watches that motion without any ground truth:

    VAR_t = (1/W) Σ_{i<W} mean_px (x_{t−i} − x̄_t)²,   x̄_t = (1/W) Σ_{i<W} x_{t−i}   (from t = W − 1 on)

and stops a sample once VAR has not reached a new (strict) minimum for P iterations; the answer is the iterate
x_{t*} at the iteration t* of the minimum VAR. Here VAR is the per-pixel mean of the squared deviations
(methods.md writes the sum ‖·‖²; the factor 1/#pixels changes no minimum). Every sample of a batch has its own
window, minimum and patience counter, so samples stop independently.

If the iterations run out before a sample stops, `result` gives its minimum-VAR iterate so far (the detector's
current answer), or the last iterate when fewer than W iterates were seen.
"""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.errors import ConfigError


class WindowedVarianceStop:
    """Per-sample ES-WMV state for a batch; call `update(k, x)` with the iterate x_k of every iteration."""

    def __init__(self, window: int, patience: int):
        if int(window) < 2 or int(patience) < 1:
            raise ConfigError(f"ES-WMV needs window >= 2 and patience >= 1, got window={window}, "
                              f"patience={patience}.")
        self.window, self.patience = int(window), int(patience)
        self.buffer: Tensor | None = None      # (W, B, D) ring buffer of the last W iterates
        self.seen = 0                          # iterates pushed so far
        self.var: Tensor | None = None         # (B,) VAR at the last update (NaN before the window fills)
        self.best_var = self.best_iter = self.best_x = self.last_x = None
        self.wait = self.stopped = self.stop_iter = None

    def _init(self, x: Tensor) -> None:
        b = x.shape[0]
        self.buffer = torch.zeros((self.window, b, x[0].numel()), dtype=x.dtype, device=x.device)
        self.best_var = torch.full((b,), float("inf"), dtype=torch.float64, device=x.device)
        self.best_iter = torch.full((b,), -1, dtype=torch.long, device=x.device)
        self.stop_iter = torch.full((b,), -1, dtype=torch.long, device=x.device)
        self.wait = torch.zeros(b, dtype=torch.long, device=x.device)
        self.stopped = torch.zeros(b, dtype=torch.bool, device=x.device)
        self.best_x, self.last_x = x.detach().clone(), x.detach().clone()

    @property
    def active(self) -> Tensor:
        """(B,) True for samples still running."""
        return ~self.stopped

    @torch.no_grad()
    def update(self, k: int, x: Tensor) -> Tensor:
        """Push iterate x_k (B, ...) of iteration k; returns the (B,) mask of samples stopped so far.

        Stopped samples are frozen: their rows of x are ignored from then on.
        """
        x = x.detach()
        if self.buffer is None:
            self._init(x)
        run = self.active
        row = self.buffer[self.seen % self.window]
        row[run] = x.flatten(1)[run]          # a stopped sample's window stays as it was
        self.last_x[run] = x[run]
        self.seen += 1
        if self.seen < self.window:
            self.var = torch.full_like(self.best_var, float("nan"))
            return self.stopped.clone()
        self.var = self.buffer.var(dim=0, unbiased=False).mean(dim=1).double()    # (B,)
        better = run & (self.var < self.best_var)
        self.best_var = torch.where(better, self.var, self.best_var)
        self.best_iter[better] = k
        self.best_x[better] = x[better]
        self.wait = torch.where(better, torch.zeros_like(self.wait), self.wait + run.long())
        newly = run & (self.wait >= self.patience)
        self.stop_iter[newly] = k
        self.stopped |= newly
        return self.stopped.clone()

    def result(self) -> Tensor:
        """Each sample's answer: its minimum-VAR iterate, or its last iterate if its window never filled."""
        if self.buffer is None:
            raise RuntimeError("WindowedVarianceStop.result() before any update().")
        have = (self.best_iter >= 0).view(-1, *[1] * (self.best_x.dim() - 1))
        return torch.where(have, self.best_x, self.last_x)

    def answer_iter(self, last: int) -> Tensor:
        """(B,) iteration of each sample's answer (the min-VAR iteration, or `last` where none)."""
        return torch.where(self.best_iter >= 0, self.best_iter, torch.full_like(self.best_iter, last))
