"""The one way a published `.pt`/`.pth`/`.safetensors` state dict enters invlab: safely, strictly, once.

- Safety: pickles load with `torch.load(weights_only=True)` only, so a file that needs code to unpickle is
  refused (one sentence), never executed. `mmap=True` maps the file instead of reading it, and
  `load_state_dict(..., assign=True)` adopts the mapped tensors: a 2.2 GB file needs no second full copy.
- Wrappers: `{"state_dict": ...}`, `{"params": ...}`, `{"params_ema": ...}`, `{"ema": ...}`, `{"model": ...}`
  and a `module.` prefix (DataParallel/DDP) are unwrapped.
- Strictness: a file whose keys or shapes do not match the declared architecture fails with one sentence naming
  the first missing / unexpected / wrong-shape keys. Several reference repositories fall back to a random
  initialisation on a load error; invlab never does.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from invlab.errors import CheckpointError

WRAPPER_KEYS = ("state_dict", "params_ema", "params", "ema", "model", "net")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def checkpoint_file(path: str | os.PathLike | None, family: str, reads: str = "published files") -> Path:
    """The checkpoint path as a Path, or one sentence saying what to pass. invlab's own `.safetensors`
    checkpoints (written by train.py, with their architecture in the metadata) are pointed to their loader."""
    if path is None or str(path) in ("", "???", "None"):
        raise CheckpointError(f"the {family} prior needs a checkpoint file: pass prior.checkpoint=/path/to/file.")
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{family} checkpoint {str(p)!r} not found (prior.checkpoint must be an existing file).")
    if p.suffix == ".safetensors" and is_invlab_checkpoint(p):
        raise CheckpointError(f"{p} is an invlab checkpoint written by train.py; load it with prior=learned (or its "
                              f"own prior config) prior.checkpoint={p} (prior={family} reads {reads}).")
    return p


def is_invlab_checkpoint(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return "arch" in (f.metadata() or {})
    except Exception:  # unreadable: read_state_dict says so in its own sentence
        return False


def read_state_dict(path: str | os.PathLike, mmap: bool = True) -> dict[str, Tensor]:
    """The tensors of a `.safetensors` or pickled torch file, unwrapped, without running any pickled code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return unwrap(load_file(str(path), device="cpu"), path)
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable .safetensors file ({e}).") from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap and _is_zip(path))
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is refused: it is a pickle that needs code to load (torch.load with "
                              f"weights_only=True said: {first[:200]}); only plain state dicts are loaded.") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({str(e).splitlines()[0][:200]}).") from e
    return unwrap(obj, path)


def _is_zip(path: Path) -> bool:
    """torch's mmap needs the zip format (torch >= 1.6 files); legacy files load without it."""
    return zipfile.is_zipfile(path)


def unwrap(obj, path: Path | str = "the checkpoint") -> dict[str, Tensor]:
    """Strip the usual training wrappers and a DataParallel `module.` prefix; insist on a tensor dict."""
    for _ in range(3):  # e.g. {"state_dict": {"model": ...}}
        if isinstance(obj, Mapping) and not _all_tensors(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj or not _all_tensors(obj):
        kind = type(obj).__name__ if not isinstance(obj, Mapping) else f"a dict with keys {list(obj)[:5]}"
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {kind}); wrappers "
                              f"{', '.join(WRAPPER_KEYS)} are unwrapped automatically.")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _all_tensors(d: Mapping) -> bool:
    return all(isinstance(v, Tensor) for v in d.values())


def mismatch(expected: Mapping[str, tuple], got: Mapping[str, tuple]) -> str:
    """'' if key sets and shapes agree, else a clause naming the first offending keys of each kind."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} {tuple(got[k])} vs {tuple(expected[k])}" for k in expected
             if k in got and tuple(got[k]) != tuple(expected[k])]
    parts = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong-shape", wrong)) if keys]
    return "; ".join(parts)


def load_strict(net: nn.Module, state: Mapping[str, Tensor], path: Path | str, arch: str,
                ignore: Callable[[str], bool] | None = None) -> nn.Module:
    """Load `state` into `net` exactly (keys and shapes), adopting the file's tensors (`assign=True`, so a
    memory-mapped file is not copied); `ignore(key)` drops known extra buffers (e.g. deepinv's schedules).
    Returns the net in eval mode, float32."""
    state = {k: v for k, v in state.items() if not (ignore and ignore(k))}
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    problem = mismatch(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problem:
        raise CheckpointError(f"{path} does not match the declared architecture {arch}: {problem}.")
    state = {k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v) for k, v in state.items()}
    net.load_state_dict(state, strict=True, assign=True)
    left = [k for k, v in (*net.named_parameters(), *net.named_buffers()) if v.is_meta]
    if left:  # a net built on the meta device must get every tensor from the file
        raise CheckpointError(f"{path} leaves {', '.join(left[:3])} of {arch} unset.")
    return net.eval()
