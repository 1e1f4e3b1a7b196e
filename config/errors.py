"""ConfigError, and the bounded rendering of the values and keys an error message quotes."""

from __future__ import annotations

QUOTE_CHARS = 40  # the most of any value an error message shows
_MAX_KEY_CHARS = 160  # a safety net: keys and problems are built short, this keeps them so
_MAX_PROBLEM_CHARS = 300
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class ConfigError(ValueError):
    """A config problem, located at `source:line` and naming the key at fault."""

    def __init__(self, source: str, line: int | None, key: str, problem: str) -> None:
        key, problem = _clip(key, _MAX_KEY_CHARS), _clip(problem, _MAX_PROBLEM_CHARS)
        self.source, self.line, self.key, self.problem = source, line, key, problem
        super().__init__(locate(source, line, key, problem))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, int | None, str, str]]:
        return type(self), (self.source, self.line, self.key, self.problem)


def locate(source: str, line: int | None, key: str, text: str) -> str:
    """`source:line: key: text`, the form of every error and warning (the parts that are unknown left out)."""
    where = f"{source}:{line}" if line else source
    return f"{where}: {key}: {text}" if key else f"{where}: {text}"


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` in single quotes with control characters escaped, cut after `limit` characters with `…`."""
    shown: list[str] = []
    length = 0
    for char in text:
        piece = _ESCAPES.get(char) or (char if char.isprintable() else _escape(char))
        if length + len(piece) > limit:
            return "'" + "".join(shown) + "'…"
        shown.append(piece)
        length += len(piece)
    return "'" + "".join(shown) + "'"


def plain(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` as it is if it is a short run of printable non-space characters, else `quote(text, limit)`."""
    if text and len(text) <= limit and text.isprintable() and not any(c.isspace() for c in text) and "'" not in text:
        return text
    return quote(text, limit)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
