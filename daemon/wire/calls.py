"""Who is calling: the peer as gRPC reports it, the client host, and the owner of the sessions it may use."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from urllib.parse import unquote

SESSION_METADATA_KEY = "viam-sid"


def peer_host(peer: str) -> str:
    """`ipv4:10.0.0.5:41234` -> `10.0.0.5`; `ipv6:%5B::1%5D:5` (as gRPC spells it) -> `::1`; others unchanged."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = unquote(rest).rpartition(":")[0]
        return host.removeprefix("[").removesuffix("]")
    return peer


@dataclass(frozen=True)
class Caller:
    """One call's client: its peer (`ipv4:host:port`), its host, and who owns its sessions.

    The owner is the authenticated identity (the API key's id) when the call carried a valid token, else the
    client's host: a session id is useless from another machine, or to another key.
    """

    peer: str
    host: str
    entity: str | None = None
    arrived: float = 0.0  # time.monotonic() when the call reached the daemon's front door

    @property
    def owner(self) -> str:
        return f"key:{self.entity}" if self.entity is not None else self.host


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("rover_safety_caller", default=None)


def set_caller(caller: Caller) -> contextvars.Token[Caller | None]:
    return _caller.set(caller)


def current_caller() -> Caller | None:
    """The caller of the call being handled, as the front door recorded it (None outside a call)."""
    return _caller.get()
