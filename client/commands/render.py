"""Plain text for a terminal: durations, tables and one line per event."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..status import Event, SessionInfo, Status


def seconds(value: float) -> str:
    """0.04 -> `40ms`, 75 -> `1m15s`, 4000 -> `1h06m`."""
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *rows]]


def sessions_table(sessions: Sequence[SessionInfo]) -> list[str]:
    if not sessions:
        return ["no live sessions"]
    rows = [(s.tag, s.owner, s.peer, seconds(s.age_seconds), seconds(s.since_heartbeat_seconds),
             seconds(s.window_seconds), ",".join(s.resources) or "-", s.id if s.mine else "(not yours)")
            for s in sessions]
    return table(("TAG", "OWNER", "PEER", "AGE", "HEARD", "WINDOW", "DRIVES", "ID"), rows)


def resources_table(status: Status) -> list[str]:
    rows = [(r.name + (f" ({r.part})" if r.part else ""), r.kind,
             "unavailable" if not r.available else "MOVING" if r.moving else "stopped",
             f"{r.power:+.0%}" if r.moving else "", r.session_tag or "-") for r in status.resources]
    return table(("RESOURCE", "KIND", "STATE", "POWER", "SESSION"), rows)


def parts_table(status: Status) -> list[str]:
    rows = [(p.name, p.address, p.state, p.detail) for p in status.parts]
    return table(("PART", "ADDRESS", "LINK", "DETAIL"), rows)


def event_line(event: Event) -> str:
    """`12:03:04.123 expired  5f3a… from ipv4:…: stopped left (moving: left), 0.84 ms late`."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.unix_time)) + f".{int(event.unix_time * 1000) % 1000:03d}"
    parts = [stamp, f"{event.kind:<13}"]
    if event.session_tag:
        parts.append(f"session {event.session_tag}")
    if event.peer:
        parts.append(f"from {event.peer}")
    if event.resources:
        parts.append(("stopped " if event.kind in ("expired", "closed") else "") + ", ".join(event.resources))
    if event.moving:
        parts.append(f"(moving: {', '.join(event.moving)})")
    if event.latency_ms is not None:
        parts.append(f"off {event.latency_ms:.2f} ms after the deadline" if event.kind == "expired"
                     else f"off in {event.latency_ms:.2f} ms")
    if event.detail:
        parts.append(f"- {event.detail}")
    return " ".join(parts)
