"""The session a request acts for, carried in its context (Viam's `session.ToContext` / `FromContext`)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from .session import Session

_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("rover_safety_session", default=None)


def to_context(session: Session | None) -> contextvars.Token[Session | None]:
    """Attach a session to the current request's context; reset with the returned token."""
    return _current.set(session)


def from_context() -> Session | None:
    """The session attached to the current context, if any."""
    return _current.get()


@contextmanager
def session_context(session: Session | None) -> Iterator[None]:
    """Run the body on behalf of `session` (None: on behalf of nobody)."""
    token = to_context(session)
    try:
        yield
    finally:
        _current.reset(token)
