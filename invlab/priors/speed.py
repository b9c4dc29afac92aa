"""Speed switches of a prior's network: torch.compile, autocast precision, channels_last memory layout.

One place for every network prior (LearnedDenoiser, DiffusionPrior, the zoo priors): a prior calls its network
through `Prior.net_call(...)`, which runs it under the prior's `Speed` settings. Solvers never cast, compile or
sync (DESIGN.md): everything here happens inside the prior, and the network's output comes back in the input's
dtype and in the default (contiguous) memory layout, so the solver's arithmetic (schedules in float64, Langevin
steps, CG) is untouched.

- `compile=true` compiles the network (`torch.compile`, `compile_mode` default | reduce-overhead |
  max-autotune, with inductor's weight freezing) lazily at its first call, after the prior has been moved to
  its device. The batch dimension of every tensor argument is marked dynamic (`maybe_mark_dynamic`), so a batch of another size (the last, smaller
  batch of a data set) reuses the graph instead of compiling a new one; a batch of 1 first is specialised by
  dynamo and the first larger batch compiles once more, dynamically. `reduce-overhead` leaves shapes static:
  on CUDA it records CUDA graphs (one per shape), which pays where the network is small and launches dominate
  (the MNIST UNet in a fixed-shape sampler loop); its outputs are copied out of the graph's static buffers.
- The inductor cache is persistent: `TORCHINDUCTOR_CACHE_DIR` if set, else `~/.cache/invlab/inductor`, with
  the FX graph cache and the AOT autograd cache on, so a second run of the same command skips most of the
  first run's compile (docs/PERFORMANCE.md has both times).
- `precision=bf16|fp16` runs the network under `torch.autocast` on the input's device type; `fp32` (default)
  runs it as it is.
- `channels_last=true` stores the network's 4-D weights and feeds its input in channels_last layout.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from invlab.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
SPEED_KEYS = ("compile", "compile_mode", "precision", "channels_last")
# torch.compile's modes as inductor options (it takes one or the other), plus `freezing`: a prior's weights are
# frozen, so inference graphs fold them in as constants (and prepack conv weights on CPU; measured 1.8× eager
# for dncnn_gray at 256² against 1.3× without it, docs/PERFORMANCE.md). Graphs that need gradients (DPS) are
# compiled without freezing by inductor itself.
COMPILE_OPTIONS = {"default": {"freezing": True},
                   "reduce-overhead": {"freezing": True, "triton.cudagraphs": True},
                   "max-autotune": {"freezing": True, "max_autotune": True, "triton.cudagraphs": True}}


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def default_cache_dir() -> Path:
    """The user's TORCHINDUCTOR_CACHE_DIR, else ~/.cache/invlab/inductor. Importing lightning makes inductor
    write its own temp-dir default (/tmp/torchinductor_<user>) into that variable, so that value counts as
    unset: a cache under /tmp does not survive a reboot."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as torch_default

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and os.path.abspath(chosen) != os.path.abspath(torch_default()):
        return Path(chosen)
    return Path.home() / ".cache" / "invlab" / "inductor"


def enable_compile_cache() -> Path:
    """Point inductor at the persistent cache (unless the user chose one) and switch its caches on."""
    path = default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    # Every prior instance and precision gets its own graph of the same `forward` (frozen weights are constants
    # of it): with dynamo's default limit of 8 per code object, the ninth DnCNN prior of one process (a bench,
    # the tests) silently ran eager.
    import torch._dynamo.config as dynamo_config

    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))
    return path


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"prior.{key} must be true or false, got {value!r}.")


@dataclass
class Speed:
    """How a prior runs its network. Validated on construction: a bad value is one ConfigError sentence."""

    compile: bool = False
    compile_mode: str = "default"
    precision: str = "fp32"
    channels_last: bool = False
    _compiled: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    compile_seconds: float = field(default=0.0, init=False, compare=False)  # calls that compiled, summed

    def __post_init__(self):
        self.compile = _as_bool(self.compile, "compile")
        self.channels_last = _as_bool(self.channels_last, "channels_last")
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"prior.compile_mode must be one of {', '.join(COMPILE_MODES)}, "
                              f"got {self.compile_mode!r}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"prior.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")

    @property
    def dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    @property
    def eager_fp32(self) -> bool:
        return not (self.compile or self.channels_last or self.dtype is not None)

    def prepare(self, net: nn.Module) -> None:
        """One-time changes to the network itself (its weights' memory layout)."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)

    def function(self, net: nn.Module, method: str) -> Callable:
        fn = net if method == "forward" else getattr(net, method)
        if not self.compile:
            return fn
        key = (id(net), method)
        if key not in self._compiled:
            enable_compile_cache()
            dynamic = False if self.compile_mode == "reduce-overhead" else None
            self._compiled[key] = torch.compile(fn, dynamic=dynamic, options=COMPILE_OPTIONS[self.compile_mode])
        return self._compiled[key]

    def __call__(self, net: nn.Module, x: Tensor, *args, method: str = "forward", **kwargs) -> Tensor:
        """net.<method>(x, *args, **kwargs) under these settings; the result in x's dtype, contiguous."""
        if self.eager_fp32:
            fn = net if method == "forward" else getattr(net, method)
            return fn(x, *args, **kwargs)
        fn = self.function(net, method)
        if self.channels_last and x.dim() == 4:
            x_in = x.contiguous(memory_format=torch.channels_last)
        else:
            x_in = x
        cudagraphs = self.compile and self.compile_mode == "reduce-overhead" and x.is_cuda
        if self.compile and not cudagraphs and x.shape[0] > 1:
            for a in (x_in, *args):  # the batch dimension of every batched argument (x, σ or t) may vary
                if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == x.shape[0]:
                    torch._dynamo.maybe_mark_dynamic(a, 0)
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        cast = torch.autocast(x.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        graphs, t0 = (_graph_count(), time.perf_counter()) if self.compile else (0, 0.0)
        with cast:
            out = fn(x_in, *args, **kwargs)
        if self.compile and _graph_count() > graphs:  # this call compiled (or loaded from the cache) a graph
            seconds = time.perf_counter() - t0
            self.compile_seconds += seconds
            log.info("compiled the prior's network for input %s in %.1f s (with its first forward; cache %s)",
                     tuple(x.shape), seconds, default_cache_dir())
        if cudagraphs:
            out = out.clone()  # the graph's output buffer is overwritten by its next replay
        return out.to(x.dtype).contiguous()

    def describe(self) -> str:
        if self.eager_fp32:
            return ""
        parts = [f"compiled ({self.compile_mode})"] if self.compile else []
        parts += [self.precision] if self.dtype is not None else []
        parts += ["channels_last"] if self.channels_last else []
        return ", ".join(parts)
