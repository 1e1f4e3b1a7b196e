"""Quoting what a client sent, briefly: an error message never grows with the request."""

from __future__ import annotations

LIMIT = 40  # characters of a client's string shown in a message


def brief(text: str, limit: int = LIMIT) -> str:
    """`text` as a quoted, escaped literal of at most `limit` characters of it, saying how long it really was."""
    if len(text) <= limit:
        return ascii(text)
    return f"{text[:limit]!a}… ({len(text)} characters)"
