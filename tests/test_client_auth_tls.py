"""API keys and TLS: the bearer token on every call (per-call metadata never drops it), re-authentication, plain
text refused for a key off loopback, TLS verified by a CA file or pinned by a fingerprint, and a mismatch refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rover_safety.client import (
    ClientError,
    InsecureCredentials,
    TlsError,
    TlsMismatch,
    Unauthenticated,
    Unavailable,
    connect,
)
from rover_safety.client.calls import MONITORED

from tests.support.client_certs import Cert, make_cert
from tests.support.fake_server import FakeServer
from tests.support.waiting import wait_until

KEYS = {"key-1": "s3cret"}


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(window=0.2, api_keys=KEYS) as srv:
        yield srv


@pytest.fixture(scope="module")
def ca() -> Cert:
    return make_cert("rover test CA", ca=True)


def is_monitored(method: str) -> bool:
    return any(path.endswith(f".{method}") for path in MONITORED)


def test_every_call_carries_the_bearer_token(server: FakeServer) -> None:
    with connect(server.address, key_id="key-1", api_key="s3cret", tls=False) as client:
        left = client.motor("left")
        left.set_power(0.5)  # per-call metadata (viam-sid) and the token together
        left.is_moving()
        left.stop()
        client.base("base").set_velocity(100, 0)
        client.status()
        events = client.watch()
        next(events)
        events.close()
        sid = client.session_id
        wait_until(lambda: len(server.heartbeats(sid)) >= 3, what="heartbeats")
    calls = [r for r in server.calls() if r.method != "AuthService/Authenticate"]
    assert {"MotorService/SetPower", "RobotService/SendSessionHeartbeat", "SafetyService/CloseSession",
            "SafetyService/WatchEvents", "BaseService/SetVelocity"} <= {r.method for r in calls}
    for record in calls:
        assert len(record.authorization) == 1 and record.authorization[0].startswith("Bearer token-"), record
        assert (record.sid == sid) == is_monitored(record.method), record.method
    auths = server.calls("AuthService/Authenticate")
    assert len(auths) == 2  # the main channel and the heartbeat channel, each its own token
    assert all(r.authorization == [] for r in auths)
    tokens = {r.authorization[0] for r in calls}
    beat_tokens = {r.authorization[0] for r in server.heartbeats()}
    assert len(tokens) == 2 and len(beat_tokens) == 1 and beat_tokens < tokens


def test_unauthenticated_calls_reauthenticate_once_and_retry(server: FakeServer) -> None:
    with connect(server.address, key_id="key-1", api_key="s3cret", tls=False) as client:
        left = client.motor("left")
        left.set_power(0.5)
        sid = client.session_id
        assert sid
        wait_until(lambda: len(server.heartbeats(sid)) >= 2, what="the heartbeat channel to be authenticated")
        server.revoke_tokens()  # as a restarted daemon would
        revoked = len(server.calls())
        assert left.is_moving() is True
        left.set_power(0.4)
        wait_until(lambda: len(server.calls("AuthService/Authenticate")) == 4, what="both channels to re-auth")
        later = [r for r in server.calls()[revoked:] if r.method == "RobotService/SendSessionHeartbeat"]
        wait_until(lambda: len(server.heartbeats(sid)) > len(later) + 3, what="heartbeats to go on")
        assert server.live(sid, "key-1") is not None
        assert client.session_id == sid


def test_a_wrong_key_is_unauthenticated(server: FakeServer) -> None:
    with pytest.raises(Unauthenticated, match="key-1") as info:
        connect(server.address, key_id="key-1", api_key="wrong", tls=False)
    assert isinstance(info.value, PermissionError) and isinstance(info.value, ClientError)


def test_calls_without_a_key_are_unauthenticated(server: FakeServer) -> None:
    with pytest.raises(Unauthenticated):
        connect(server.address, tls=False)


def test_a_key_is_never_sent_in_plain_text_off_loopback() -> None:
    with pytest.raises(InsecureCredentials, match="plain text") as info:
        connect("192.0.2.10:8080", key_id="key-1", api_key="s3cret", tls=False)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="both"):
        connect("127.0.0.1:8080", api_key="s3cret", tls=False)


def test_tls_verified_by_a_ca_file(ca: Cert, tmp_path: Path) -> None:
    leaf = make_cert("rover", dns=("localhost",), ips=("127.0.0.1",), issuer=ca)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    with FakeServer(api_keys=KEYS, tls=leaf.pair) as server:
        for host in ("127.0.0.1", "localhost"):
            with connect(f"{host}:{server.port}", key_id="key-1", api_key="s3cret", ca_file=str(ca_file)) as c:
                c.motor("left").set_power(0.5)
        assert len(server.calls("SafetyService/CloseSession")) == 2
        other = make_cert("another CA", ca=True)
        (tmp_path / "other.pem").write_bytes(other.cert_pem)
        with pytest.raises(Unavailable, match="TLS verified by"):
            connect(server.address, ca_file=str(tmp_path / "other.pem"), connect_timeout=0.5,
                    key_id="key-1", api_key="s3cret")
    with pytest.raises(TlsError, match="cannot read"):
        connect("127.0.0.1:1", ca_file=str(tmp_path / "missing.pem"))


def test_tls_pinned_by_fingerprint_with_a_name_override() -> None:
    cert = make_cert("rover.test", dns=("rover.test",))  # self-signed, not valid for 127.0.0.1
    with FakeServer(api_keys=KEYS, tls=cert.pair) as server:
        colons = ":".join(cert.fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
        for pin in (colons, cert.fingerprint, f"sha256:{cert.fingerprint.upper()}"):
            with connect(server.address, key_id="key-1", api_key="s3cret", tls_fingerprint=pin) as client:
                client.motor("left").set_power(0.5)
                sid = client.session_id
                assert sid
                beats = server.heartbeats
                wait_until(lambda: len(beats(sid)) >= 2, what="heartbeats over TLS")  # noqa: B023
        with pytest.raises(Unavailable):  # the same certificate without the pin: not trusted
            connect(server.address, key_id="key-1", api_key="s3cret", connect_timeout=0.5)
    by_ip = make_cert("rover", ips=("127.0.0.1",))  # the address is a name it carries: no override needed
    with FakeServer(tls=by_ip.pair) as server, connect(server.address, tls_fingerprint=by_ip.fingerprint) as client:
        assert client.motor("left").is_moving() is False


def test_a_fingerprint_mismatch_is_refused() -> None:
    cert, impostor = make_cert("rover", dns=("rover",)), make_cert("rover", dns=("rover",))
    with FakeServer(api_keys=KEYS, tls=impostor.pair) as server:
        with pytest.raises(TlsMismatch) as info:
            connect(server.address, key_id="key-1", api_key="s3cret", tls_fingerprint=cert.fingerprint)
        assert isinstance(info.value, ConnectionError)
        message = str(info.value)
        assert cert.fingerprint[:2].upper() in message and impostor.fingerprint[-2:].upper() in message
        assert server.calls() == []  # refused before any call: the key never left
    with pytest.raises(ValueError, match="64 hex"):
        connect("127.0.0.1:1", tls_fingerprint="abcd")


def test_tls_against_a_plain_text_server_says_what_to_do() -> None:
    with FakeServer() as server:
        with pytest.raises(TlsError, match="TLS certificate"):
            connect(server.address, tls_fingerprint="ab" * 32, connect_timeout=1)
        with pytest.raises(Unavailable, match="tls=False"):
            connect(server.address, connect_timeout=0.5)
