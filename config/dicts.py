"""Frozen dataclasses <-> JSON-safe dicts, lists and scalars, checking every field's type on the way back."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Dataclasses as dicts of their fields, tuples as lists; str, int, float, bool and None as they are."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_jsonable(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot turn {type(value).__name__} into JSON")


def from_jsonable(kind: Any, data: Any, where: str) -> Any:
    """`data` as a value of the type `kind` (a dataclass, `tuple[X, ...]`, `X | None`, str, int, float, bool)."""
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _dataclass(kind, data, where)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if data is None and type(None) in args:
            return None
        others = [arg for arg in args if arg is not type(None)]
        if len(others) != 1:
            raise TypeError(f"{where}: cannot read a {kind}")
        return from_jsonable(others[0], data, where)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(data, list):
            raise ValueError(f"{where}: expected a list, got {type(data).__name__}")
        return tuple(from_jsonable(args[0], item, f"{where}[{i}]") for i, item in enumerate(data))
    if kind is bool:
        if not isinstance(data, bool):
            raise ValueError(f"{where}: expected true or false, got {type(data).__name__}")
        return data
    if kind is int or kind is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)) or (kind is int and not isinstance(data, int)):
            raise ValueError(f"{where}: expected {kind.__name__}, got {type(data).__name__}")
        return kind(data)
    if kind is str:
        if not isinstance(data, str):
            raise ValueError(f"{where}: expected a string, got {type(data).__name__}")
        return data
    raise TypeError(f"{where}: cannot read a {kind}")


def _dataclass(kind: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(kind)
    known = {f.name for f in dataclasses.fields(kind) if f.init}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}")
    try:
        return kind(**{name: from_jsonable(hints[name], value, f"{where}.{name}") for name, value in data.items()})
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"{where}: {exc}") from None
