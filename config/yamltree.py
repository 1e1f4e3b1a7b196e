"""YAML text -> a tree of `Map`, `Seq` and plain scalars, read within fixed bounds of size, values and depth.

PyYAML reads the text and composes it into nodes (an alias is the anchored node itself, not a copy). Before anything
is built, the node graph is measured as if every alias were expanded, so an alias bomb is refused in time linear in
the text. The tree is then built here rather than by a PyYAML constructor: only text, decimal numbers, true/false,
null, mappings and lists become values; anything else (a date, `!!binary`, `!!set`, `021`, `0x1f`, `yes`) becomes an
`Unreadable` that says what is wrong when a setting meets it, so the error names the setting.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from .errors import ConfigError, plain, quote

MAX_BYTES = 256 * 1024  # of a config file (and characters of a config text)
MAX_VALUES = 10_000  # nodes of the document with every alias expanded: keys, values, items, mappings, lists
MAX_DEPTH = 32  # mappings and lists inside each other, aliases followed
_MAX_INT_CHARS = 21  # 20 digits and a sign
_MAX_FLOAT_CHARS = 64

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE, _VALUE, _TIMESTAMP = (_TAG + t for t in ("map", "seq", "merge", "value", "timestamp"))
_KEY_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, _VALUE, _TIMESTAMP}  # a plain key is its text, whatever it looks like
_DECIMAL_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)", re.ASCII)
_DECIMAL_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?", re.ASCII)
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+", re.ASCII)  # 08, 09: not octal, so YAML 1.1 reads them as text
_OCTAL_12 = re.compile(r"[-+]?0o[0-7_]+", re.ASCII)  # YAML 1.2's octal, which YAML 1.1 reads as text
_SPECIAL_FLOATS = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
_NULLS = {"", "~", "null", "Null", "NULL"}
_AMBIGUOUS_BOOLS = {"yes", "no", "on", "off", "y", "n"}
_OR_QUOTE = "or quote it, if it is text"


class Map(dict[str, Any]):
    """A YAML mapping that remembers the line it starts on and the line of each key."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}


class Seq(list[Any]):
    """A YAML list that remembers the line it starts on and the line of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


@dataclass(frozen=True)
class Unreadable:
    """A value no setting takes; `what` describes it ("the date '2024-01-01'"), `problem` says what to write."""

    what: str
    problem: str


def read_tree(text: str, source: str) -> Any:
    """The YAML document in `text` as a tree of Map, Seq, str, int, float, bool, None and Unreadable."""
    if len(text) > MAX_BYTES:
        raise ConfigError(source, None, "", f"is longer than {MAX_BYTES // 1024} KiB, the most a config may be")
    try:
        reader = _Reader(text)
        try:
            root = reader.get_single_node()
        finally:
            reader.dispose()
    except _LimitReached as exc:
        raise ConfigError(source, exc.line, exc.key, exc.problem) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = ", ".join(str(part) for part in (exc.context, exc.problem) if part) or "malformed"
        raise ConfigError(source, mark.line + 1 if mark else None, "", f"not valid YAML: {_short(problem)}") from None
    except ReaderError as exc:  # a control character: PyYAML gives a position but no mark
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else "?"
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "a character"
        raise ConfigError(source, None, "", f"not valid YAML: {char} on line {line} is not allowed (only printable "
                          "characters, tabs and line breaks are)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, None, "", f"not valid YAML: {_short(str(exc))}") from None
    if root is None:
        return None
    _measure(root, source)
    return _Builder(source, reader.explicit).build(root)


def describe(value: Any) -> str:
    """A short description of a tree value for an error message ("text 'fast'", "a list of 3 items")."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"text {quote(value)}"
    if isinstance(value, Unreadable):
        return value.what
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} key{'' if len(value) == 1 else 's'}"
    return type(value).__name__


# --- Composing, within bounds -------------------------------------------------------------------


class _LimitReached(Exception):
    def __init__(self, line: int, key: str, problem: str) -> None:
        super().__init__(problem)
        self.line, self.key, self.problem = line, key, problem


class _Reader(Reader, Scanner, Parser, Composer, Resolver):
    """PyYAML's reader, scanner, parser and composer, counting nodes and depth as it composes."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        Resolver.__init__(self)
        self.depth = 0
        self.composed = 0
        self.explicit: set[int] = set()  # ids of scalar nodes that carry a tag written in the text
        self.top = ""  # the top-level key being composed, for the error

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # (untyped in types-PyYAML)
        line = event.start_mark.line + 1 if event.start_mark else 0
        if self.depth == 1 and index is None and isinstance(parent, MappingNode) and isinstance(event, ScalarEvent):
            self.top = plain(str(event.value))
        self.composed += 1  # an alias too: each use is at least one value
        if self.composed > MAX_VALUES:
            raise _LimitReached(line, self.top, f"has more than {MAX_VALUES} values; a config needs far fewer")
        if self.depth >= MAX_DEPTH:
            raise _LimitReached(line, self.top, f"is nested more than {MAX_DEPTH} levels deep")
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if isinstance(event, ScalarEvent) and event.tag not in (None, "!"):
            self.explicit.add(id(node))
        return node


def _line(node: Node) -> int:
    return node.start_mark.line + 1 if node.start_mark else 0


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, SequenceNode) else []


def _measure(root: Node, source: str) -> None:
    """Refuse a document whose expansion (each alias counted at each use) is too big, too deep or circular."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values with aliases expanded, height)
    open_nodes: set[int] = set()

    def visit(node: Node, depth: int, top: str) -> tuple[int, int]:
        known = measured.get(id(node))
        if known is not None:
            if depth + known[1] - 1 > MAX_DEPTH:
                raise ConfigError(source, _line(node), top, f"is nested more than {MAX_DEPTH} levels deep "
                                  "(counting what aliases refer to)")
            return known
        if id(node) in open_nodes:
            raise ConfigError(source, _line(node), top, "an alias refers to a value that contains it")
        if depth > MAX_DEPTH:
            raise ConfigError(source, _line(node), top, f"is nested more than {MAX_DEPTH} levels deep "
                              "(counting what aliases refer to)")
        open_nodes.add(id(node))
        values, height = 1, 1
        for child in _children(node):
            child_values, child_height = visit(child, depth + 1, top)
            values, height = values + child_values, max(height, child_height + 1)
            if values > MAX_VALUES:
                raise ConfigError(source, _line(node), top, f"expands to more than {MAX_VALUES} values (an alias "
                                  "counts its value each time it is used); a config needs far fewer")
        open_nodes.discard(id(node))
        measured[id(node)] = (values, height)
        return values, height

    if isinstance(root, MappingNode):
        total = 1
        for key, value in root.value:
            top = plain(str(key.value)) if isinstance(key, ScalarNode) else ""
            total += visit(key, 2, top)[0] + visit(value, 2, top)[0]
            if total > MAX_VALUES:
                raise ConfigError(source, _line(key), top, f"expands to more than {MAX_VALUES} values (an alias "
                                  "counts its value each time it is used); a config needs far fewer")
    else:
        visit(root, 1, "")


# --- Building the tree --------------------------------------------------------------------------


class _Builder:
    """Builds the tree from measured nodes; an alias is built afresh at each use (its size was counted)."""

    def __init__(self, source: str, explicit: set[int]) -> None:
        self.source, self.explicit = source, explicit

    def build(self, node: Node) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if node.tag not in (_MAP, _SEQ) or isinstance(node, MappingNode) != (node.tag == _MAP):
            tag = _tag_name(node.tag)
            return Unreadable(f"a value tagged {tag}", f"a value tagged {tag} is not accepted; write it untagged")
        if isinstance(node, MappingNode):
            return self.mapping(node)
        out = Seq(_line(node))
        for item in node.value:
            out.append(self.build(item))
            out.item_lines.append(_line(item))
        return out

    def mapping(self, node: MappingNode) -> Map:
        out = Map(_line(node))
        merged: list[Map] = []
        merge_line = 0
        for key_node, value_node in node.value:
            line = _line(key_node)
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE and id(key_node) not in self.explicit:
                if merge_line:
                    raise ConfigError(self.source, line, "<<", f"duplicate key (first set on line {merge_line})")
                merge_line = line
                merged.extend(self.merged(value_node, line))
                continue
            key = self.key(key_node)
            if key in out:
                first = out.key_lines[key]
                raise ConfigError(self.source, line, plain(key), f"duplicate key (first set on line {first})")
            out[key] = self.build(value_node)
            out.key_lines[key] = line
        for other in merged:  # keys written here win; among merged mappings, the earlier wins (as YAML says)
            for key, value in other.items():
                if key not in out:
                    out[key] = value
                    out.key_lines[key] = other.key_lines[key]
        return out

    def merged(self, node: Node, line: int) -> list[Map]:
        nodes = node.value if isinstance(node, SequenceNode) and node.tag == _SEQ else [node]
        maps: list[Map] = []
        for other in nodes:
            if not isinstance(other, MappingNode) or other.tag != _MAP:
                raise ConfigError(self.source, line, "<<", "a merge key takes a mapping or a list of mappings, such "
                                  "as *defaults or [*a, *b]")
            maps.append(self.mapping(other))
        return maps

    def key(self, node: Node) -> str:
        line = _line(node)
        if not isinstance(node, ScalarNode):
            kind = "a mapping" if isinstance(node, MappingNode) else "a list"
            raise ConfigError(self.source, line, "", f"a key must be a plain word, not {kind}")
        if node.tag not in _KEY_TAGS or (id(node) in self.explicit and node.tag != _STR):
            raise ConfigError(self.source, line, "", f"a key must be a plain word, not a value tagged "
                              f"{_tag_name(node.tag)}")
        text = str(node.value)
        if not text:
            raise ConfigError(self.source, line, "", "a key must be a plain word, not empty")
        return text

    def scalar(self, node: ScalarNode) -> Any:
        text, tag, explicit = str(node.value), node.tag, id(node) in self.explicit
        if tag == _STR:
            if node.style is None and not explicit:
                kind = "has a leading zero" if _LEADING_ZERO.fullmatch(text) else (
                    "is octal" if _OCTAL_12.fullmatch(text) else "")
                if kind:
                    return Unreadable(f"the number {quote(text)}", f"{quote(text)} {kind}, which YAML does not read "
                                      f"as a number; write the plain decimal number, {_OR_QUOTE}")
            return text
        if tag == _INT:
            return _integer(text, explicit)
        if tag == _FLOAT:
            return _float(text, explicit)
        if tag == _BOOL:
            low = text.lower()
            if low in ("true", "false"):
                return low == "true"
            if low in _AMBIGUOUS_BOOLS:
                return Unreadable(quote(text), f"{quote(text)} is ambiguous: write true or false, {_OR_QUOTE}")
            return Unreadable(f"{quote(text)} tagged !!bool", f"{quote(text)} is not true or false")
        if tag == _NULL:
            if text in _NULLS:
                return None
            return Unreadable(f"{quote(text)} tagged !!null", f"{quote(text)} is not null (write ~ or nothing)")
        if tag in (_MERGE, _VALUE):  # `<<` or `=` as a value rather than a key is just text
            return text
        if tag == _TIMESTAMP:
            shown = quote(text)
            return Unreadable(f"the date {shown}", f"{shown} is a date, which no setting takes; {_OR_QUOTE}")
        name = _tag_name(tag)
        return Unreadable(f"a value tagged {name}", f"a value tagged {name} is not accepted; write it untagged")


def _integer(text: str, explicit: bool) -> int | Unreadable:
    shown = quote(text)
    if len(text) > _MAX_INT_CHARS:
        return Unreadable(f"the number {shown}", f"{shown} is too long a number (at most 20 digits)")
    if _DECIMAL_INT.fullmatch(text):
        return int(text)
    digits = text.lstrip("+-")
    if explicit or not digits:
        return Unreadable(f"{shown} tagged !!int", f"{shown} is not a whole number in plain decimal digits")
    kind = (
        "is hexadecimal" if digits.startswith("0x")
        else "is binary" if digits.startswith("0b")
        else "is in base 60" if ":" in digits
        else "has a leading zero" if digits.startswith("0")
        else "has digit separators"
    )
    try:
        value: object = SafeConstructor().construct_yaml_int(ScalarNode(_INT, text))
    except (ValueError, IndexError):
        value = "something else"
    return Unreadable(f"the number {shown}", f"{shown} {kind}, which YAML reads as {value}; write the plain decimal "
                      f"number, {_OR_QUOTE}")


def _float(text: str, explicit: bool) -> float | Unreadable:
    shown = quote(text)
    if len(text) > _MAX_FLOAT_CHARS:
        return Unreadable(f"the number {shown}", f"{shown} is too long a number")
    special = _SPECIAL_FLOATS.get(text.lower())
    if special is not None:
        return special
    if _DECIMAL_FLOAT.fullmatch(text):
        value = float(text)
        if math.isinf(value):
            return Unreadable(f"the number {shown}", f"{shown} is too large a number")
        return value
    if explicit:
        return Unreadable(f"{shown} tagged !!float", f"{shown} is not a number in plain decimal digits")
    kind = "is in base 60" if ":" in text else "has digit separators"
    return Unreadable(f"the number {shown}", f"{shown} {kind}; write the plain decimal number, {_OR_QUOTE}")


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else plain(tag)


def _short(text: str, limit: int = 120) -> str:
    """One line of PyYAML's message, cut short (it can quote an anchor or a character of any length)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
