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
    user_error = None
    try:
        obj = instantiate(container, **runtime, _convert_="all")
    except Exception as err:  # Hydra wraps constructor errors; surface the user-facing one unchanged
        user_error = invlab_cause(err)
        if user_error is None:
            raise
    if user_error is not None:
        # raised outside the except block so no new link is made: `raise e from err` would point e back
        # at the wrapper whose cause is e, a cycle that loops anything walking the cause chain
        raise user_error
    if name is not None:
        try:
            obj.name = name
        except AttributeError:  # objects with __slots__ or read-only properties keep their own name
            pass
    return obj


def invlab_cause(err: BaseException):
    """The first InvlabError in err's cause/context chain (cycle-safe), or None."""
    from invlab.errors import InvlabError

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, InvlabError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def load_option(group: str, name: str, overrides: list[str] | None = None):
    """conf/<group>/<name>.yaml as a DictConfig (with `key=value` overrides), for a config that names another
    group's option by value (e.g. `measure.task=inpaint_blocks`); a clear error lists the choices."""
    from pathlib import Path

    from invlab.errors import ConfigError

    conf = Path(__file__).resolve().parents[2] / "conf" / group
    path = conf / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in conf.glob("*.yaml"))
        raise ConfigError(f"no {group} config {name!r}; choose one of {', '.join(names)}.")
    return OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides or [])))


def whole_number(value: Any, key: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """`value` as an int, or a ConfigError naming `key` when it is not a whole number (text, a fraction,
    a bool) or is below `minimum`. An integral float (`5.0`) counts as whole; None passes when allowed."""
    from invlab.errors import ConfigError

    if value is None and allow_none:
        return None
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())
    bound = "" if minimum is None else f" >= {minimum}"
    if not whole:
        raise ConfigError(f"{key} must be a whole number{bound}, got {value!r}.")
    if minimum is not None and int(value) < minimum:
        raise ConfigError(f"{key} must be a whole number{bound}, got {int(value)}.")
    return int(value)
