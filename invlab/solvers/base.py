"""The solver contract.

A solver is a dataclass whose fields are its typed configuration (Hydra instantiates it from
`conf/solver/<name>.yaml`) and whose call solves a batch:

    result = solver(y, A, prior, x_init=None, generator=None, callback=None)

`A` is the measured operator built by the Task (it carries its noise model: `A.sigma_y`). Solvers never
see ground truth; `callback(k, x, info)` is called after every iteration with the iterate and a dict of
per-iteration values (the engine uses it for PSNR curves against a reference it holds).
Subclasses implement `solve(...) -> (x, trace)`; the base class times the call and counts NFE, and where
the operator solved by conjugate gradients (a CG prox or pinv fallback) it reports each sample's worst
final relative CG residual as the per-sample value `cg_residual` (a results.csv column).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

Callback = Callable[[int, Tensor, dict], None]


@dataclass
class Result:
    x: Tensor                                            # (B, C, H, W) reconstruction
    trace: dict[str, list[float]] = field(default_factory=dict)  # per-iteration values (batch means)
    nfe: int = 0                                         # network (prior) evaluations
    seconds: float = 0.0                                 # wall time of the solve
    net_seconds: float = 0.0                             # time spent inside the prior's calls
    estimates: dict[str, Tensor] = field(default_factory=dict)  # per-sample estimated operator parameters
                                                         # (BC-PnP: "kernel"), named like A's buffers
    per_sample: dict[str, Tensor] = field(default_factory=dict)  # (B,) values the engine writes as results.csv
                                                         # columns (DMPlug's ES-WMV: "iter_stop")


class Trace:
    """Collects per-iteration scalars and forwards each iteration to the user callback."""

    def __init__(self, callback: Callback | None = None):
        self.values: dict[str, list[float]] = {}
        self.estimates: dict[str, Tensor] = {}  # a solver that estimates operator parameters puts them here
        self.per_sample: dict[str, Tensor] = {}  # (B,) per-sample values (e.g. a stop iteration) for results.csv
        self.callback = callback

    def __call__(self, k: int, x: Tensor, **info: Any) -> None:
        for key, val in info.items():
            self.values.setdefault(key, []).append(float(val.mean()) if isinstance(val, Tensor) else float(val))
        if self.callback is not None:
            self.callback(k, x, info)


@dataclass
class Solver:
    """Base class; subclasses are dataclasses and implement `solve`."""

    needs: ClassVar[tuple[str, ...]] = ()  # requirements: "adjoint" (a linear operator), "image_measurements"
    # integer settings that must be >= 1: with 0 or fewer iterations a solver returns its start point
    at_least_one: ClassVar[tuple[str, ...]] = ("iters", "steps", "power_iters", "cg_iters", "ddim_steps",
                                               "dds_steps", "ttt_iters")

    def __post_init__(self) -> None:
        """Every field annotated `int` holds a whole number (>= 1 for `at_least_one`, >= 0 otherwise), so
        `solver.iters=abc`, `=1.5` or `=-3` fail in one sentence at build time, naming the key."""
        from dataclasses import fields

        from invlab.utils.config import whole_number

        for f in fields(self):
            kinds = {"int"} if f.type is int else {part.strip() for part in str(f.type).split("|")}
            if "int" not in kinds or "float" in kinds:  # `float | int` fields (a fraction or a count) are free
                continue
            value = whole_number(getattr(self, f.name), f"solver.{f.name}",
                                 minimum=1 if f.name in self.at_least_one else 0, allow_none="None" in kinds)
            object.__setattr__(self, f.name, value)

    def __call__(self, y: Tensor, A, prior, *, x_init: Tensor | None = None,
                 generator: torch.Generator | None = None, callback: Callback | None = None) -> Result:
        from invlab.errors import ConfigError

        for method in self.needs:
            if method == "adjoint" and not A.is_linear:
                raise ConfigError(f"solver {type(self).__name__} needs a linear operator, but "
                                  f"{type(A).__name__} is nonlinear.")
            if method == "image_measurements" and (y.is_complex() or tuple(y.shape[1:]) != tuple(A.in_shape)):
                raise ConfigError(f"solver {type(self).__name__} needs real image-shaped measurements (a deblurring "
                                  f"task), but the task measures {'complex ' if y.is_complex() else ''}"
                                  f"{tuple(y.shape[1:])} from {tuple(A.in_shape)} images.")
        if prior is not None:
            prior.stats.reset()
        if callable(getattr(A, "reset_cg_record", None)):
            A.reset_cg_record()   # the CG fallbacks' worst final residual in this solve -> cg_residual
        trace = Trace(callback)
        t0 = time.perf_counter()
        x = self.solve(y, A, prior, x_init=x_init, generator=generator, trace=trace)
        cg = getattr(A, "cg_record", None)
        if isinstance(cg, Tensor) and cg.shape == (x.shape[0],):
            trace.per_sample.setdefault("cg_residual", cg)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        seconds = time.perf_counter() - t0
        stats = prior.stats if prior is not None else None
        return Result(x=x.detach(), trace=trace.values, nfe=stats.nfe if stats else 0, seconds=seconds,
                      net_seconds=stats.seconds if stats else 0.0,
                      estimates={k: v.detach() for k, v in trace.estimates.items()},
                      per_sample={k: v.detach() for k, v in trace.per_sample.items()})

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
