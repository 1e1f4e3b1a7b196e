"""Errors of the daemon itself (the wire's own errors map to gRPC statuses in wire/status.py)."""

from __future__ import annotations


class DaemonError(Exception):
    """Base of the daemon's own errors."""


class StartupError(DaemonError, RuntimeError):
    """Raised when the daemon cannot start; the message says why and what to do."""
