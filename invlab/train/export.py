"""Where `python train.py` writes its exported weights, and the guard that keeps the shipped ones.

By default the export goes into the run directory (`export: ${run_dir}/${recipe}.safetensors` in
conf/train.yaml). Only `export_to_package=true` writes into the package's checkpoints
(`invlab/checkpoints/<recipe>.safetensors`, what `prior=<recipe>` loads), and a shipped file there is
replaced only by a run at least as long as the shorter of its recipe's `trainer.max_steps` and the
shipped card's `steps` (a 3-step try-out never replaces a trained prior), unless `force=true`.
An explicit `export=` path inside the package's checkpoints needs `export_to_package=true` as well.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from invlab.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parents[2] / "conf" / "experiment" / "train"


def package_dir() -> Path:
    """The package's checkpoints folder (read at call time, so tests can point it at a copy)."""
    from invlab.priors import checkpoint

    return Path(checkpoint.PACKAGE_DIR).resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def destination(cfg: DictConfig) -> Path:
    """The .safetensors path this run exports to; refuses an `export=` into the package without the flag."""
    package = package_dir()
    if cfg.get("export_to_package"):
        return package / f"{cfg.recipe}.safetensors"
    path = Path(str(cfg.export)).expanduser()
    if _inside(path, package):
        raise ConfigError(f"export={cfg.export} is inside the package's checkpoints ({package}), which hold the "
                          f"shipped weights; add export_to_package=true to write {cfg.recipe}.safetensors there, "
                          f"or export elsewhere.")
    return path


def recipe_steps(recipe: str) -> int | None:
    """`trainer.max_steps` as the recipe file conf/experiment/train/<recipe>.yaml sets it (None: no such file
    or key)."""
    path = RECIPES_DIR / f"{recipe}.yaml"
    if not path.is_file():
        return None
    steps = OmegaConf.select(OmegaConf.load(path), "trainer.max_steps", default=None)
    return int(steps) if steps is not None else None


def shipped_steps(path: Path) -> int | None:
    """The `steps` of the model card of the checkpoint at `path` (None when it has none)."""
    from invlab.priors.checkpoint import read_metadata

    try:
        steps = read_metadata(path).get("card", {}).get("steps")
    except Exception:  # an unreadable file is no trained prior worth keeping: the steps rule does not apply
        return None
    return int(steps) if steps is not None else None


def check_replace(path: Path, steps: int, cfg: DictConfig, planned: bool = False) -> None:
    """Raise ConfigError when writing a `steps`-step run to `path` would replace a shipped prior with a
    shorter training than its recipe's (see the module docstring); `planned` words it for the check before
    training (trainer.max_steps) rather than after it (the steps run)."""
    if not cfg.get("export_to_package") or cfg.get("force") or not path.is_file():
        return
    bounds = {f"its recipe's trainer.max_steps={n}": n for n in [recipe_steps(str(cfg.recipe))] if n}
    bounds.update({f"the shipped card's steps={n}": n for n in [shipped_steps(path)] if n})
    if not bounds:
        return
    needed = min(bounds.values())
    if steps < needed:
        what = f"trainer.max_steps={steps}" if planned else f"a {steps}-step run"
        raise ConfigError(f"refusing to replace the shipped {path} with {what}, shorter than "
                          f"{' and '.join(bounds)}; add force=true to replace it anyway, or drop "
                          f"export_to_package to export into the run directory.")
