"""Opening files the config names, or the config itself, without blocking on a FIFO or a device."""

from __future__ import annotations

import os
import stat

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFile(OSError):
    """The path names something other than a regular file; `kind` says what ("a directory")."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"it is {kind}, not a regular file")
        self.kind = kind


class TooLarge(Exception):
    """A file holds more than the bytes allowed; `size` is its size if known."""

    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the regular file at `path`; anything else is refused without being opened.

    The `stat` first means a device whose opening does something (a watchdog, a tape) is never opened; the
    non-blocking open and the `fstat` after it mean a path swapped for a FIFO in between cannot hang the caller.
    """
    _check_regular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        _check_regular(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_limited(path: str | os.PathLike[str], limit: int) -> bytes:
    """The contents of the regular file at `path`, reading at most `limit` + 1 bytes; TooLarge beyond `limit`."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise TooLarge(size)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # it grew since the fstat
            raise TooLarge(None)
        return b"".join(chunks)
    finally:
        os.close(fd)


def unreadable_reason(path: str) -> str | None:
    """Why the regular file at `path` cannot be read ("No such file or directory"), or None if it can be."""
    try:
        os.close(open_regular(path))
    except NotRegularFile as exc:
        return str(exc)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotRegularFile(next((kind for test, kind in _KINDS if test(mode)), "something else"))
