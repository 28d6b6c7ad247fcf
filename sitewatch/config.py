"""Typed configuration: defaults in dataclasses, overridden by a YAML file, then by flags.

Each stage owns the dataclass for its own settings (``tiles.config.TilesConfig``,
``models.config.ModelConfig``, ...). A *job* config groups the sections one command needs, e.g.
``DetectJob(tiles=TilesConfig(), detect=DetectConfig())``, and matches the layout of the YAML
files in ``configs/``::

    tiles:
      chip_px: 128
    detect:
      batch_size: 64

Precedence: dataclass defaults < YAML file < command-line flags (``--set tiles.chip_px=256`` or a
command's own flags). Unknown keys are an error that lists the valid keys. The effective config
is written beside every output with :func:`write_config`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin, get_type_hints

import yaml

from sitewatch.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "build_config",
    "config_to_dict",
    "load_config",
    "parse_set_overrides",
    "write_config",
    "dump_config",
]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (parsed from YAML) to the annotated type ``tp`` or raise ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
        return build_config(tp, value, where=where)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {
            _coerce(k, kt, f"{where}.{k}"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(str(value))
    return value


def build_config(cls: type[T], data: Mapping[str, Any] | None = None, *, where: str = "config") -> T:
    """Build the frozen dataclass ``cls`` from a (nested) mapping, checking keys and types.

    Args:
        cls: a dataclass type whose fields have defaults.
        data: settings to override; missing keys keep their defaults.
        where: where the data came from, used in error messages (a file name or a section).

    Raises:
        ConfigError: an unknown key (the message lists the valid keys) or a value of the wrong type.
    """
    data = dict(data or {})
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        hints_ = [f"{c} for {u}" for u in map(str, unknown) if (c := closest_key(u, names))]
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}"
            + (f" (did you mean {', '.join(hints_)}?)" if hints_ else "")
            + f"; valid keys are: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe nested dict of a config dataclass (tuples become lists, Paths strings)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass ``tp`` is (or ``Optional`` of), else None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return _dataclass_of(inner[0])
    return None


def closest_key(name: str, names: list[str]) -> str | None:
    """The valid key ``name`` most likely misspells, or None."""
    import difflib

    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return close[0] if close else None


def check_set_key(cls: type, key: str) -> None:
    """Refuse a ``--set`` key that names no setting of ``cls``, naming the flag (not a config file).

    Walks the dotted key through nested config dataclasses; a part below a setting that is not
    itself a section (a mapping such as ``train.synth_profiles``) is left to :func:`build_config`.

    Raises:
        ConfigError: ``--set KEY: unknown key 'x' in SECTION (did you mean 'y'?); valid keys are ...``.
    """
    node: type | None = cls
    done: list[str] = []
    for part in key.split("."):
        if node is None:
            return
        names = [f.name for f in dataclasses.fields(node) if f.init]
        if part not in names:
            where = ".".join(done) or "the config"
            close = closest_key(part, names)
            hint = f" (did you mean {'.'.join([*done, close])}?)" if close else ""
            raise ConfigError(
                f"--set {key}: unknown key {part!r} in {where}{hint}; valid keys are: {', '.join(names)}"
            )
        done.append(part)
        node = _dataclass_of(get_type_hints(node)[part])


def parse_set_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse ``--set section.key=value`` flags; values are read as YAML scalars or lists."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set tiles.chip_px=256")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: the key before '=' is empty")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        overrides[key] = value
    return overrides


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    explicit: Mapping[str, Any] | None = None,
) -> T:
    """Defaults of ``cls``, overridden by the YAML file at ``path``, then by dotted ``overrides``.

    Args:
        cls: the job config dataclass.
        path: a YAML file (optional). Its top level holds the job's sections.
        overrides: ``{"tiles.chip_px": 256, ...}`` from flags; ``None`` values are ignored so a
            flag that was not given never overrides the file.
        explicit: dotted settings applied before ``overrides`` as given, ``None`` included
            (``--set train.threads=null`` resets a setting to "unset").

    Raises:
        ConfigError: the file is missing or not valid YAML, or a key or value is wrong.
    """
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file; see configs/ for examples")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded
    for key, value in (explicit or {}).items():
        # a typo in --set is the flag's, not the config file's: say so before merging
        check_set_key(cls, key)
        _set_dotted(data, key, value)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(data, key, value)
    return build_config(cls, data, where=where)


def dump_config(cfg: Any) -> str:
    """The config as YAML text, keys in declaration order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def write_config(cfg: Any, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the effective config beside an output; returns the file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("# effective sitewatch config (defaults < --config file < flags)\n" + dump_config(cfg), encoding="utf-8")
    return path
