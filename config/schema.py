"""The `network:`, `gpio:`, `auth:` and `remotes:` sections, each read into Config's fields."""

from __future__ import annotations

from typing import Any

from .errors import quote
from .fields import (
    boolean,
    choice,
    duration,
    fingerprint,
    host,
    host_port,
    integer,
    name,
    readable_file,
    secret,
    sha256_hex,
)
from .model import (
    DEFAULT_HEARTBEAT_WINDOW,
    MAX_HEARTBEAT_WINDOW,
    MAX_TOKEN_TTL,
    MIN_HEARTBEAT_WINDOW,
    MIN_TOKEN_TTL,
    PIN_FACTORIES,
    ApiKey,
    ClientLimits,
    RemoteAuth,
    RemoteConfig,
    RemoteTls,
    TlsFiles,
)
from .section import Section

_DEFAULT_LIMITS = ClientLimits()


def network(root: Section) -> dict[str, Any]:
    """Config's fields from `network:` (listeners, sessions, TLS files, client limits)."""
    net = root.section("network")
    sessions = net.section("sessions")
    bind_address = net.get("bind_address", host_port(0), "127.0.0.1:8080")  # port 0: any free port (tests)
    settings: dict[str, Any] = dict(
        bind_address=bind_address,
        heartbeat_window=sessions.get("heartbeat_window", duration(MIN_HEARTBEAT_WINDOW, MAX_HEARTBEAT_WINDOW,
                                                                   "30ms..1m"), DEFAULT_HEARTBEAT_WINDOW),
        allow_unmonitored_motion=sessions.get("allow_unmonitored_motion", boolean, False),
        insecure=net.get("insecure", boolean, False),
        tls=_tls(net),
        limits=_limits(net),
    )
    taken = {bind_address: "network.bind_address"}
    for part, default in (("web", "127.0.0.1:8081"), ("metrics", "127.0.0.1:9464")):
        settings[f"{part}_bind_address"] = _listener(net, part, default, taken)
    sessions.finish()
    net.finish()
    return settings


def _tls(net: Section) -> TlsFiles | None:
    tls = net.optional_section("tls")
    if tls is None:
        return None
    files = TlsFiles(
        cert_file=tls.require("cert_file", readable_file),
        key_file=tls.require("key_file", readable_file),
        client_ca_file=tls.get("client_ca_file", readable_file, None),
    )
    tls.finish()
    return files


def _limits(net: Section) -> ClientLimits:
    limits = net.section("limits")
    d = _DEFAULT_LIMITS
    max_sessions = limits.get("max_sessions", integer(1, 1024), d.max_sessions)
    max_connections = limits.get("max_connections", integer(1, 65535), d.max_connections)
    result = ClientLimits(
        max_sessions=max_sessions,
        sessions_per_owner=limits.get("sessions_per_owner", integer(1, max_sessions),
                                      min(d.sessions_per_owner, max_sessions)),
        session_starts_per_second=limits.get("session_starts_per_second", integer(1, 10_000),
                                             d.session_starts_per_second),
        connections_per_peer=limits.get("connections_per_peer", integer(1, max_connections),
                                        min(d.connections_per_peer, max_connections)),
        max_connections=max_connections,
        calls_in_flight_per_owner=limits.get("calls_in_flight_per_owner", integer(1, 65535),
                                             d.calls_in_flight_per_owner),
        calls_per_second_per_owner=limits.get("calls_per_second_per_owner", integer(1, 1_000_000),
                                              d.calls_per_second_per_owner),
        log_lines_per_second=limits.get("log_lines_per_second", integer(1, 10_000), d.log_lines_per_second),
    )
    limits.finish()
    return result


def _listener(net: Section, part: str, default: str, taken: dict[str, str]) -> str | None:
    """The bind address of an optional extra listener (`web`, `metrics`), or None if it is off."""
    section = net.optional_section(part)
    if section is None:
        return None
    address = section.get("bind_address", host_port(0), default)
    section.finish()
    if address in taken and not address.endswith(":0"):
        raise section.error("bind_address", f"{address} is {taken[address]} already; give it a port of its own")
    taken[address] = section.key("bind_address")
    return address


def gpio(root: Section) -> dict[str, Any]:
    """Config's fields from `gpio:` (the pin factory and its backend's settings)."""
    section = root.section("gpio")
    pigpio = section.section("pigpio")
    settings: dict[str, Any] = dict(
        pin_factory=section.get("pin_factory", choice(*PIN_FACTORIES), "pigpio"),
        pigpio_host=pigpio.get("host", host, "localhost"),
        pigpio_port=pigpio.get("port", integer(1, 65535), 8888),
    )
    lgpio = section.optional_section("lgpio")
    if lgpio is not None:
        settings["lgpio_chip"] = lgpio.get("chip", integer(0, 255), None)
        lgpio.finish()
    pigpio.finish()
    section.finish()
    return settings


def auth(root: Section) -> dict[str, Any]:
    """Config's fields from `auth:` (API keys by hash, token lifetime, public stop)."""
    section = root.section("auth")
    keys: list[ApiKey] = []
    ids: dict[str, int] = {}
    owners: dict[str, str] = {}
    for entry in section.entries("api_keys", "keys ({id: ..., key_sha256: ...})"):
        key_id = entry.require("id", name)
        if key_id in ids:
            raise entry.error("id", f"duplicate key id {quote(key_id)} (also on line {ids[key_id]})")
        ids[key_id] = entry.line_of("id")
        entry.path = f"auth.api_keys[{key_id}]"
        digest = entry.require("key_sha256", sha256_hex)
        if digest in owners:
            raise entry.error("key_sha256", f"is the same key as auth.api_keys[{owners[digest]}]; give each "
                              "client a key of its own")
        owners[digest] = key_id
        keys.append(ApiKey(id=key_id, key_sha256=digest))
        entry.finish()
    settings: dict[str, Any] = dict(
        api_keys=tuple(keys),
        token_ttl=section.get("token_ttl", duration(MIN_TOKEN_TTL, MAX_TOKEN_TTL, "1m..720h (30 days)"), None),
        public_stop=section.get("public_stop", boolean, False),
    )
    section.finish()
    return settings


def remotes(root: Section, component_names: set[str]) -> tuple[RemoteConfig, ...]:
    """The `remotes:` list; a remote's name is unique and no component's."""
    result: list[RemoteConfig] = []
    lines: dict[str, int] = {}
    for entry in root.entries("remotes", "remotes ({name: ..., address: host:port})"):
        remote = entry.require("name", name)
        if remote in lines:
            raise entry.error("name", f"duplicate remote name {quote(remote)} (also on line {lines[remote]})")
        if remote in component_names:
            raise entry.error("name", f"{quote(remote)} is the name of a component too; give the remote another")
        lines[remote] = entry.line_of("name")
        entry.path = f"remotes[{remote}]"
        result.append(RemoteConfig(
            name=remote,
            address=entry.require("address", host_port(1)),
            tls=_remote_tls(entry),
            auth=_remote_auth(entry),
        ))
        entry.finish()
    return tuple(result)


def _remote_tls(remote: Section) -> RemoteTls | None:
    tls = remote.optional_section("tls")
    if tls is None:
        return None
    result = RemoteTls(
        ca_file=tls.get("ca_file", readable_file, None),
        fingerprint=tls.get("fingerprint", fingerprint, None),
        insecure=tls.get("insecure", boolean, False),
    )
    tls.finish()
    if result.ca_file and result.fingerprint:
        raise tls.error("fingerprint", "give ca_file or fingerprint, not both")
    if result.insecure and (result.ca_file or result.fingerprint):
        raise tls.error("insecure", "true skips checking the remote's certificate, so it cannot go with "
                        f"{'ca_file' if result.ca_file else 'fingerprint'}")
    return result


def _remote_auth(remote: Section) -> RemoteAuth | None:
    section = remote.optional_section("auth")
    if section is None:
        return None
    result = RemoteAuth(key_id=section.require("key_id", name), key=section.require("key", secret))
    section.finish()
    return result
