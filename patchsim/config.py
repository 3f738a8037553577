"""Typed configuration: dataclasses with defaults and units, loaded from YAML.

Every config in patchsim is a dataclass whose fields are declared with :func:`param`, which
records the unit, the allowed range and a one-line help. :func:`load_yaml` turns a YAML file
into such a dataclass and reports any problem with the file, the dotted key and the line::

    scenarios/bad.yaml:12: key 'road.lane_width_m': 12.0 is out of range [2.0, 6.0] (m)

The same conversion serves plain dicts (:func:`from_dict`) and the reverse (:func:`to_dict`),
so a run directory can store the exact config it ran with.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from patchsim.errors import ConfigError

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def param(
    default: Any = _MISSING,
    *,
    unit: str | None = None,
    range: tuple[float | None, float | None] | None = None,  # noqa: A002 - reads well at call sites
    help: str = "",  # noqa: A002
    default_factory: Any = _MISSING,
) -> Any:
    """Declare a config field with its unit, inclusive range and help text.

    >>> @dataclasses.dataclass
    ... class Lane:
    ...     width_m: float = param(3.5, unit="m", range=(2.0, 6.0), help="lane width")
    >>> from_dict(Lane, {"width_m": 3.0}).width_m
    3.0
    """
    metadata = {"unit": unit, "range": range, "help": help}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# --------------------------------------------------------------------------- YAML with lines


class _Located:
    """Plain Python data parsed from YAML plus the 1-based line of every dotted key."""

    def __init__(self, data: Any, lines: dict[tuple, int]):
        self.data = data
        self.lines = lines


def _node_to_python(node: yaml.Node, path: tuple, lines: dict[tuple, int], source: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError("a key must be a plain value", source, _dotted(path), key_node.start_mark.line + 1)
            key = _scalar(key_node)
            if key in out:
                raise ConfigError("duplicate key", source, _dotted(path + (key,)), key_node.start_mark.line + 1)
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _node_to_python(value_node, path + (key,), lines, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_python(child, path + (i,), lines, source) for i, child in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    """Resolve a scalar node's tag the way ``yaml.safe_load`` would (int, float, bool, null, str)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a missing file or bad JSON is a ConfigError naming the file (and line)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", path, line=exc.lineno) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", path) from exc


def read_yaml(path: str | Path) -> _Located:
    """Parse a YAML file into plain data, remembering the line of every key.

    Raises:
        ConfigError: the file is missing, unreadable or not valid YAML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", path) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path, line=line) from exc
    if node is None:  # an empty file is a mistake (a wrong path, a file not yet written), not "all defaults"
        raise ConfigError("the file is empty (no keys); give at least one key, or leave the option out for "
                          "the defaults", path)
    lines: dict[tuple, int] = {}
    data = _node_to_python(node, (), lines, str(path))
    return _Located(data, lines)


# --------------------------------------------------------------------------- conversion


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


class _Ctx:
    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source = source
        self.lines = lines

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, message: str, path: tuple) -> ConfigError:
        return ConfigError(message, self.source, _dotted(path), self.line(path))


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: tuple, ctx: _Ctx) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ctx.error("must not be empty (null)", path)
        arms = [a for a in args if a is not type(None)]
        errors = []
        for arm in arms:
            try:
                return _convert(arm, value, path, ctx)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ctx.error(f"{value!r} is not any of {', '.join(_type_name(a) for a in arms)}", path)
    if origin is Literal:
        if value not in args:
            raise ctx.error(f"{value!r} is not one of {', '.join(repr(a) for a in args)}", path)
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, ctx)
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, (list, tuple)):
            raise ctx.error(f"expected a list, got {type(value).__name__}", path)
        return [_convert(args[0] if args else Any, v, path + (i,), ctx) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ctx.error(f"expected a list of {len(args)} values, got {type(value).__name__}", path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, path + (i,), ctx) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ctx.error(f"expected {len(args)} values, got {len(value)}", path)
        return tuple(_convert(a, v, path + (i,), ctx) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ctx.error(f"expected a mapping, got {type(value).__name__}", path)
        key_tp, val_tp = args if args else (Any, Any)
        return {
            _convert(key_tp, k, path + (k,), ctx): _convert(val_tp, v, path + (k,), ctx) for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.error(f"expected true or false, got {value!r}", path)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(f"expected a whole number, got {value!r}", path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.error(f"expected a number, got {value!r}", path)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ctx.error(f"expected a string, got {value!r}", path)
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ctx.error(f"expected a path, got {value!r}", path)
        return Path(value)
    raise ctx.error(f"unsupported config type {_type_name(tp)}", path)  # pragma: no cover - programming error


def _check_range(f: dataclasses.Field, value: Any, path: tuple, ctx: _Ctx) -> None:
    bounds = f.metadata.get("range")
    if bounds is None or value is None:
        return
    lo, hi = bounds
    values = value if isinstance(value, (list, tuple)) else [value]
    unit = f.metadata.get("unit")
    for v in values:
        if not isinstance(v, (int, float)):
            continue
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise ctx.error(f"{v!r} is out of range {rng}" + (f" ({unit})" if unit else ""), path)


def _build(cls: type[T], value: Any, path: tuple, ctx: _Ctx) -> T:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ctx.error(f"expected a mapping for {cls.__name__}, got {type(value).__name__}", path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k not in fields]
    if unknown:
        key = unknown[0]
        raise ctx.error(f"unknown key (expected one of: {', '.join(sorted(fields))})", path + (key,))
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            converted = _convert(hints[name], value[name], path + (name,), ctx)
            _check_range(f, converted, path + (name,), ctx)
            kwargs[name] = converted
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise ctx.error("missing required key", path + (name,))
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        # __post_init__ validation: point at the key it names when it names one
        sub = getattr(exc, "key", None)
        where = path + tuple(int(p) if p.isdigit() else p for p in sub.split(".")) if sub else path
        raise ctx.error(str(exc), where) from exc


def from_dict(cls: type[T], data: Any, source: str | Path = "<dict>") -> T:
    """Build the dataclass ``cls`` from plain data, validating types, keys and ranges."""
    return _build(cls, data, (), _Ctx(str(source), {}))


def load_yaml(path: str | Path, cls: type[T]) -> T:
    """Load the YAML file ``path`` into the dataclass ``cls``.

    Raises:
        ConfigError: names the file, the dotted key and the line of the first problem.
    """
    located = read_yaml(path)
    return _build(cls, located.data, (), _Ctx(str(path), located.lines))


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config (dataclass, list, tuple, dict, Path, scalar)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


class FieldError(ValueError):
    """A ``__post_init__`` check that names the offending key, so the loader can point at its line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def check_device(device: str, key: str = "device") -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` that this machine has; else a FieldError naming ``key``."""
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return
    import torch

    if kind != "cuda" or (index and not index.isdigit()):
        raise FieldError(key, f"device must be cpu, cuda or cuda:N, not {device!r}")
    if not torch.cuda.is_available():
        raise FieldError(key, f"device {device!r}: this machine has no CUDA GPU that torch can use (use cpu)")
    if index and int(index) >= torch.cuda.device_count():
        raise FieldError(key, f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """Rows (key, unit, default, help) for documenting a config class."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not _MISSING else ("(required)" if f.default_factory is _MISSING else "...")
        rows.append((f.name, f.metadata.get("unit") or "", default, f.metadata.get("help", "")))
    return rows
