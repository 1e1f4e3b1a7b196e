"""Converters from tree values to settings: each returns the setting or raises ValueError saying what is wrong."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any

from .errors import plain, quote
from .files import unreadable_reason
from .yamltree import Unreadable, describe

MAX_NAME_CHARS = 64
MAX_PATH_CHARS = 4096
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", re.ASCII)
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_DURATION_CHARS = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)  # RFC 1123
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
_HEX_PAIRS = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31}", re.ASCII)
_HOST_PORT_EXAMPLE = "e.g. 127.0.0.1:8080, [::1]:8080 or rover.local:8080"


def parse_duration(text: str) -> float:
    """Parse a Go duration (`500ms`, `2s`, `1m30s`) into seconds; raise ValueError if it is not one."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    total, pos = 0.0, 0
    if len(text) <= _MAX_DURATION_CHARS:
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
    if pos != len(text) or not math.isfinite(total):
        raise ValueError(f"{quote(text)} is not a duration like 500ms, 2s or 1m30s")
    return total


def scalar(value: Any) -> Any:
    """`value`, unless it is an Unreadable: then the ValueError that says what to write instead."""
    if isinstance(value, Unreadable):
        raise ValueError(value.problem)
    return value


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        value = scalar(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, not {describe(value)}")
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, not {value!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise ValueError(f"{value!r} is out of range: must be {'>' if low_open else '>='} {low:g}")
        if high is not None and value > high:
            raise ValueError(f"{value!r} is out of range: must be <= {high:g}")
        return float(value)

    return convert


def integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        value = scalar(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {describe(value)}")
        if not low <= value <= high:
            raise ValueError(f"{value!r} is out of range: must be {low}..{high}")
        return int(value)

    return convert


def boolean(value: Any) -> bool:
    value = scalar(value)
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {describe(value)}")
    return value


def text(value: Any, limit: int = 256) -> str:
    """A non-empty string of at most `limit` characters."""
    value = scalar(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, not {describe(value)}")
    if len(value) > limit:
        raise ValueError(f"{quote(value)} is too long: at most {limit} characters")
    return value


def choice(*allowed: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        value = scalar(value)
        if not isinstance(value, str) or value not in allowed:
            shown = quote(value) if isinstance(value, str) else describe(value)
            raise ValueError(f"{shown} is not one of: {', '.join(allowed)}")
        return value

    return convert


def duration(low: float, high: float, allowed: str) -> Callable[[Any], float]:
    """A Go duration string between `low` and `high` seconds (`allowed` says so, as in `30ms..1m`)."""

    def convert(value: Any) -> float:
        value = scalar(value)
        if not isinstance(value, str):
            raise ValueError(f"must be a duration with a unit such as 500ms or 2s, not {describe(value)}")
        seconds = parse_duration(value)
        if not low <= seconds <= high:
            raise ValueError(f"{quote(value)} is out of range: allowed {allowed}")
        return seconds

    return convert


def name(value: Any) -> str:
    """A component-like name: letters, digits, `_ . -`, starting with a letter or digit."""
    result = text(value, limit=MAX_NAME_CHARS)
    if not _NAME.fullmatch(result):
        raise ValueError(f"{quote(result)} is not a valid name (letters, digits, _ . -)")
    return result


def names(value: Any) -> tuple[str, ...]:
    value = scalar(value)
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of motor names, not {describe(value)}")
    return tuple(name(v) for v in value)


def host(value: Any) -> str:
    """A host name (RFC 1123) or an IP address, IPv6 without brackets."""
    result = _ascii_word(value, "a host name or IP address")
    problem = _host_problem(result)
    if problem:
        raise ValueError(f"{quote(result)} {problem}")
    return result


def host_port(lowest_port: int) -> Callable[[Any], str]:
    """`host:port` with a host name, an IPv4 address or a bracketed IPv6 address, and a port from `lowest_port`."""

    def convert(value: Any) -> str:
        result = _ascii_word(value, "host:port")
        shown = quote(result)
        if result.startswith("["):
            address, bracket, rest = result[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ValueError(f"{shown} is not host:port ({_HOST_PORT_EXAMPLE})")
            port = rest[1:]
            try:
                ipaddress.IPv6Address(address)
            except ValueError:
                raise ValueError(f"{shown} is not host:port: {quote(address)} is not an IPv6 address") from None
        else:
            address, colon, port = result.rpartition(":")
            if not colon or not address:
                raise ValueError(f"{shown} is not host:port ({_HOST_PORT_EXAMPLE})")
            if ":" in address:
                raise ValueError(f"{shown} is not host:port: an IPv6 address goes in brackets, as in [::1]:8080")
            problem = _host_problem(address)
            if problem:
                raise ValueError(f"{shown} is not host:port: {quote(address)} {problem}")
        if not _PORT.fullmatch(port) or not lowest_port <= int(port) <= 65535:
            raise ValueError(f"{shown} is not host:port: the port must be a number {lowest_port}..65535")
        return result

    return convert


def sha256_hex(value: Any) -> str:
    """Exactly 64 hex digits, lowercased; the message never quotes the value (it may be a pasted key)."""
    if not isinstance(value, str):
        raise ValueError(f"must be the key's SHA-256 as 64 hex digits in quotes, not {_kind(value)}")
    if not _HEX64.fullmatch(value):
        raise ValueError(f"must be the key's SHA-256 as 64 hex digits (this is {len(value)} characters"
                         f"{'' if len(value) != 64 else ', not all hex digits'}); never the key itself")
    return value.lower()


def fingerprint(value: Any) -> str:
    """A SHA-256 certificate fingerprint, 64 hex digits with or without colons, as 64 lowercase digits."""
    value = scalar(value)
    if not isinstance(value, str) or not (_HEX64.fullmatch(value) or _HEX_PAIRS.fullmatch(value)):
        shown = quote(value) if isinstance(value, str) else describe(value)
        raise ValueError(f"{shown} is not a SHA-256 fingerprint: 64 hex digits, optionally in pairs split by colons")
    return value.replace(":", "").lower()


def secret(value: Any) -> str:
    """A key in plain text; the message never shows the value."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be the key as non-empty text in quotes, not {_kind(value)}")
    if len(value) > 1024 or not value.isprintable():
        raise ValueError("must be the key as at most 1024 printable characters")
    return value


def readable_file(value: Any) -> str:
    """An absolute path to a regular file this process can open now."""
    path = text(value, limit=MAX_PATH_CHARS)
    if not path.isprintable():
        raise ValueError(f"{quote(path)} has a control character in it")
    shown = plain(path, 120)
    if not path.startswith("/"):
        raise ValueError(f"{shown} is not an absolute path (start it with /)")
    reason = unreadable_reason(path)
    if reason:
        raise ValueError(f"cannot read {shown}: {reason}")
    return path


def _ascii_word(value: Any, what: str) -> str:
    result = text(value, limit=300)
    if not result.isascii() or not result.isprintable() or any(c.isspace() for c in result):
        raise ValueError(f"{quote(result)} is not {what}: it has a space, control or non-ASCII character in it")
    return result


def _host_problem(address: str) -> str | None:
    try:
        ipaddress.ip_address(address)
        return None
    except ValueError:
        pass
    labels = address.split(".")
    if all(label.isdigit() for label in labels) or ":" in address:
        return "is not a valid IP address"
    if len(address) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "is not a valid host name (letters, digits and - in dot-separated labels)"
    if labels[-1].isdigit():
        return "is not a valid IP address or host name (its last label is a number)"
    return None


def _kind(value: Any) -> str:
    """What sort of value this is, without showing any of it."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else "something else"
