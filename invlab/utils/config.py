"""Building runtime objects from config groups.

Every group option (`conf/<group>/<option>.yaml`) carries a `name:` key used in run directories and
tables. It is not a constructor argument: `build` strips it (and an option's own `defaults:` list,
present when a file is loaded raw rather than composed), instantiates the `_target_`, and attaches
the name to the object as `.name`.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def build(node: DictConfig | dict, **runtime: Any) -> Any:
    """Instantiate a config node (minus its `name`), passing runtime objects as extra kwargs."""
    from hydra.utils import instantiate

    container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    name = container.pop("name", None)
    container.pop("defaults", None)  # a raw-loaded option file's own defaults list is Hydra's business
    try:
        obj = instantiate(container, **runtime, _convert_="all")
    except Exception as err:  # Hydra wraps constructor errors; surface the user-facing one unchanged
        from invlab.errors import InvlabError

        cause = err
        while cause is not None and not isinstance(cause, InvlabError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from err
    if name is not None:
        try:
            obj.name = name
        except AttributeError:  # objects with __slots__ or read-only properties keep their own name
            pass
    return obj
