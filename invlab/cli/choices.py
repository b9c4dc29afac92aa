"""Config-group choices Hydra would skip without a word: `experiment=<name>` is an `optional` entry of
the defaults lists (conf/config.yaml, conf/train.yaml), so a name that matches no file composed the defaults
and ran them. `check_experiment()` turns that into one sentence listing the experiments there are.
"""
from __future__ import annotations

from invlab.errors import ConfigError

GROUP = "experiment"


def group_options(group: str = GROUP) -> list[str]:
    """Every config under `group` in this job's config search path (conf/ and any `hydra.searchpath`
    folder; sub-folders included), e.g. `train/dncnn_gray`."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    found = set()
    for source in HydraConfig.get().runtime.config_sources:
        if source.schema != "file":   # hydra's own pkg:// and structured configs hold no experiments
            continue
        root = Path(source.path) / group
        found.update(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))
    return sorted(found)


def check_experiment() -> None:
    """Raise ConfigError when this Hydra job's `experiment=` names no config (inside a Hydra app only)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    choice = HydraConfig.get().runtime.choices.get(GROUP)
    if choice is None:
        return
    options = group_options()
    if str(choice) in options:
        return
    stem = str(choice).rsplit("/", 1)[-1]
    near = [o for o in options if o.rsplit("/", 1)[-1] == stem]
    hint = f"; did you mean {GROUP}={near[0]}?" if near else "."
    raise ConfigError(f"{GROUP}={choice} matches no config in conf/{GROUP}/ (choices: {', '.join(options)}){hint}")


def plus_experiment(argv: list[str] | None = None) -> list[str]:
    """`+experiment=<name>` (Hydra's "append a default", what most Hydra templates document) means
    `experiment=<name>` here: the defaults lists already hold an optional experiment slot, so Hydra itself
    would refuse the `+` with "Multiple values for experiment". Edits sys.argv when argv is None."""
    import sys

    args = sys.argv if argv is None else argv
    args[1:] = [a[1:] if a.startswith(f"+{GROUP}=") else a for a in args[1:]]
    return args
