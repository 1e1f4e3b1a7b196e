"""One mapping of the config, read key by key; every error and warning names the key's path and line."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import ConfigError, locate, plain
from .yamltree import Unreadable, describe

T = TypeVar("T")


class Section:
    """A mapping consumed key by key; `finish()` reports the keys nothing asked for as unknown."""

    def __init__(self, source: str, path: str, data: Any, line: int, warnings: list[str] | None = None) -> None:
        if isinstance(data, Unreadable):
            raise ConfigError(source, line, path, data.problem)
        if not isinstance(data, dict):
            raise ConfigError(source, line, path, f"must be a mapping of keys, not {describe(data)}")
        self.source, self.path, self.data = source, path, data
        self.line: int = getattr(data, "line", line)
        self.seen: set[str] = set()
        self.warnings: list[str] = [] if warnings is None else warnings

    def key(self, name: str) -> str:
        return f"{self.path}.{plain(name)}" if self.path else plain(name)

    def line_of(self, name: str) -> int:
        lines: dict[str, int] = getattr(self.data, "key_lines", {})
        return lines.get(name, self.line)

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.line_of(name), self.key(name), problem)

    def warn(self, name: str, text: str) -> None:
        self.warnings.append(locate(self.source, self.line_of(name), self.key(name), text))

    def has(self, name: str) -> bool:
        """Whether `name` is set to something other than nothing (`name:` or `name: ~` count as not set)."""
        return self.data.get(name) is not None

    def get(self, name: str, convert: Callable[[Any], T], default: T) -> T:
        self.seen.add(name)
        if self.data.get(name) is None:
            return default
        return self._convert(name, convert)

    def require(self, name: str, convert: Callable[[Any], T]) -> T:
        self.seen.add(name)
        if self.data.get(name) is None:
            raise ConfigError(self.source, self.line, self.key(name), "is required")
        return self._convert(name, convert)

    def _convert(self, name: str, convert: Callable[[Any], T]) -> T:
        try:
            return convert(self.data[name])
        except ConfigError:
            raise
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def section(self, name: str) -> Section:
        """The mapping at `name`, empty if it is not set."""
        self.seen.add(name)
        value = self.data.get(name)
        return Section(self.source, self.key(name), {} if value is None else value, self.line_of(name), self.warnings)

    def optional_section(self, name: str) -> Section | None:
        """The mapping at `name`, or None if it is not set."""
        self.seen.add(name)
        return self.section(name) if self.has(name) else None

    def entries(self, name: str, what: str) -> list[Section]:
        """The list of mappings at `name` (`what` names one, for the error), as sections `name[0]`, `name[1]`..."""
        self.seen.add(name)
        items = self.data.get(name)
        if items is None:
            return []
        if isinstance(items, Unreadable):
            raise self.error(name, items.problem)
        if not isinstance(items, list):
            raise self.error(name, f"must be a list of {what}, not {describe(items)}")
        lines: list[int] = getattr(items, "item_lines", [self.line_of(name)] * len(items))
        return [
            Section(self.source, f"{self.key(name)}[{i}]", item, line, self.warnings)
            for i, (item, line) in enumerate(zip(items, lines, strict=True))
        ]

    def finish(self) -> None:
        for name in self.data:
            if name not in self.seen:
                close = difflib.get_close_matches(name, sorted(self.seen), n=1) if len(name) <= 64 else []
                hint = f"did you mean {close[0]}? " if close else ""
                raise self.error(name, f"unknown key ({hint}known here: {', '.join(sorted(self.seen))})")
