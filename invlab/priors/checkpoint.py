"""Checkpoints of learned priors: one `.safetensors` file (weights only, loaded without pickle) whose
metadata holds the network architecture and a model card, plus a Markdown card `<name>.md` beside it.

metadata["arch"] = JSON {"_target_": "invlab.nets.dncnn.DnCNN", **kwargs}  (only invlab.nets targets load)
metadata["card"] = JSON {recipe, data, steps, wall_seconds, final_loss, metrics, channels, ...}
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
from pathlib import Path
from typing import Any

from invlab.errors import CheckpointError

FORMAT = "invlab-checkpoint-1"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"


def build_net(arch: dict):
    """Instantiate a network from an arch dict; only classes under `invlab.nets` are allowed (a
    checkpoint is data, and must not name arbitrary code to run)."""
    arch = dict(arch)
    target = str(arch.pop("_target_", ""))
    module_name, _, cls_name = target.rpartition(".")
    if not module_name.startswith("invlab.nets"):
        raise CheckpointError(f"the checkpoint's architecture {target!r} is not a network in invlab.nets.")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
        return cls(**arch)
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot build the checkpoint's architecture {target}: {e}.") from e


def card_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".md")


def save_checkpoint(path: str | os.PathLike, net, arch: dict, card: dict | None = None) -> Path:
    """Write the net's weights with arch and card as metadata, and the Markdown card next to it."""
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    card = dict(card or {})
    card.setdefault("date", _dt.datetime.now().isoformat(timespec="seconds"))
    card.setdefault("parameters", sum(p.numel() for p in net.parameters()))
    card.setdefault("channels", getattr(net, "in_channels", arch.get("in_channels", 1)))
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "arch": json.dumps(arch), "card": json.dumps(card, default=str)}
    save_file(tensors, str(path), metadata=metadata)
    card_path(path).write_text(model_card_markdown(path.stem, arch, card))
    return path


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """`dncnn_gray` -> invlab/checkpoints/dncnn_gray.safetensors if shipped, else the argument as a path."""
    name = str(name_or_path)
    shipped = PACKAGE_DIR / f"{name}.safetensors"
    if os.sep not in name and "/" not in name and shipped.is_file():
        return shipped
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.suffix != ".safetensors" and path.with_name(path.name + ".safetensors").is_file():
        return path.with_name(path.name + ".safetensors")
    stem = Path(name).name.removesuffix(".safetensors")
    if (CONF_DIR / "experiment" / "train" / f"{stem}.yaml").is_file():
        how = (f"train it with `python train.py experiment=train/{stem} export_to_package=true` (without the flag "
               f"the weights go to the run directory: prior.checkpoint=<run_dir>/{stem}.safetensors)")
    else:
        how = "give the path of a .safetensors file written by `python train.py` (prior.checkpoint=/path)"
    looked = f"{shipped} or {path.resolve()}" if "/" not in name and os.sep not in name else str(path.resolve())
    raise CheckpointError(f"checkpoint {name!r} not found (looked for {looked}); {how}.")


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """arch and card of a checkpoint without loading its tensors."""
    from safetensors import safe_open

    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return {"arch": json.loads(meta["arch"]), "card": json.loads(meta.get("card", "{}")), "path": path}
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not an invlab checkpoint (its metadata has no valid 'arch').") from e
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path} is not a readable .safetensors file ({e}).") from e


def load_checkpoint(path: str | os.PathLike, device: str | None = None):
    """Load (net, arch, card); the net is in eval mode on `device` (default cpu)."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    path, arch, card = meta["path"], meta["arch"], meta["card"]
    net = build_net(arch)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable .safetensors file ({e}).") from e
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        expected = net.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for what, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong)) if keys)
        raise CheckpointError(f"the tensors in {path} do not match its architecture {arch.get('_target_')} "
                              f"({detail or e}).") from e
    net.eval()
    if device is not None:
        net.to(device)
    return net, arch, card


def model_card_markdown(name: str, arch: dict, card: dict) -> str:
    """A human-readable model card built from the card dict."""
    kwargs = ", ".join(f"{k}={v}" for k, v in arch.items() if k != "_target_")
    kind = {"diffusion": "diffusion", "conditional_video_diffusion": "conditional video diffusion"}.get(
        str(card.get("kind")), "denoiser")
    lines = [f"# {name}", "", f"Learned {kind} prior for invlab: `{arch.get('_target_')}({kwargs})`.", ""]
    if card.get("recipe"):
        recipe = str(card["recipe"])  # recipes live in conf/experiment/train/; accept either spelling
        recipe = recipe if "/" in recipe else f"train/{recipe}"
        lines += [f"Trained with `python train.py experiment={recipe}`.", ""]
    metrics = card.get("metrics") or {}
    if metrics and card.get("kind") == "spectrum_denoiser":  # 1-D spectra (invlab/train/spectra.py)
        test = card.get("test_metrics") or {}
        lines += ["## Held-out metrics", "", f"Mean over spectra of `{card.get('val_data', '?')}` (validation split) "
                  f"and `{card.get('test_data', '-')}` (test split), each with its fixed seeded noise (SNR 5-100); "
                  "snr and psnr of the output in dB, snr_gain = output SNR - input SNR; no clamping:", "",
                  "| metric | validation | test |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v:.2f} | {test.get(k, float('nan')):.2f} |" for k, v in sorted(metrics.items())]
        lines.append("")
    elif metrics and card.get("kind") == "conditional_video_diffusion":  # FLAIR (invlab/train/video.py)
        lines += ["## Held-out metrics", "", f"On `{card.get('val_data', '?')}` (validation clips): PSNR (dB, mean over "
                  "clips, clamped to [0, 1]) of the one-step conditional estimate x̂0(x_t, t | condition) with fixed "
                  "seeded noise, per task; the sampler's numbers are in experiments/flair/:", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.2f} |" for k, v in sorted(metrics.items())]
        lines.append("")
    elif metrics:
        lines += ["## Held-out metrics", "", f"On `{card.get('val_data', '?')}` (noisy inputs with fixed seeded "
                  "noise, PSNR in dB, mean over images, outputs clamped to [0, 1]):", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.2f} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
                  for k, v in sorted(metrics.items())]
        lines.append("")
    lines += ["## Card", "", "| field | value |", "| --- | --- |"]
    lines += [f"| {k} | {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v} |"
              for k, v in card.items() if k != "metrics"]
    lines += ["", "Spectra are float32 (B, 1, L) scaled to maximum 1; noise levels are in the same units (σ = 1/SNR)."
              if card.get("kind") == "spectrum_denoiser" else
              "Clips are float32 (B, C, T, H, W) in [0, 1] (the net works on [-1, 1]); noise levels in [0, 1] units."
              if card.get("kind") == "conditional_video_diffusion" else
              "Images are float32 in [0, 1]; noise levels are in the same units (σ=25/255 ≈ 0.098).", ""]
    return "\n".join(lines)
