"""rover_safety.client against the real daemon: API key over pinned TLS, a session that closes on exit (the motor
stops at once), the operator's status and event stream, and typed errors with the daemon's words."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from rover_safety.client import NotFound, Refused, SessionExpired, TlsMismatch, Unauthenticated, connect
from rover_safety.daemon.app import Daemon

from tests.support.daemons import DaemonFactory, changed_at, duty, example_config
from tests.support.keys import Certificate, Key, new_certificate, new_key, secured
from tests.support.waiting import wait_until

LEFT_PWM = 22


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return new_certificate(tmp_path / "tls")


@pytest.fixture
def key() -> Key:
    return new_key("laptop")


@pytest.fixture
def daemon(make_daemon: DaemonFactory, certificate: Certificate, key: Key) -> Daemon:
    return make_daemon(secured(example_config(heartbeat_window="500ms"), certificate, (key,)))


def test_drive_over_pinned_tls_and_leaving_stops_at_once(daemon: Daemon, certificate: Certificate, key: Key) -> None:
    with connect(f"127.0.0.1:{daemon.port}", key_id=key.id, api_key=key.key,
                 tls_fingerprint=certificate.fingerprint) as rover:
        rover.motor("left").set_power(0.5)
        assert duty(daemon, LEFT_PWM) == pytest.approx(0.5)
        time.sleep(1.2)  # well past the window: the client's heartbeats keep it going
        assert duty(daemon, LEFT_PWM) == pytest.approx(0.5)
        (mine,) = rover.sessions()
        assert mine.mine and mine.id == rover.session_id and mine.owner == "key:laptop"
        left = time.monotonic()
    wait_until(lambda: duty(daemon, LEFT_PWM) == 0, what="the motor off as the client closed")
    assert changed_at(daemon, LEFT_PWM) - left < 0.3  # when the pin went off: at once, not at the window's end
    assert daemon.sessions.all() == []


def test_status_and_events_from_the_daemon(daemon: Daemon, certificate: Certificate, key: Key) -> None:
    with connect(f"127.0.0.1:{daemon.port}", key_id=key.id, api_key=key.key,
                 tls_fingerprint=certificate.fingerprint) as operator:
        status = operator.status()
        assert {r.name for r in status.resources} == {"left", "right", "base"} and status.gpio_up
        stream = operator.watch()
        seen: list[str] = []

        def read() -> None:
            for event in stream:
                seen.append(event.kind)
                if event.kind == "closed":  # what sessions.end() below produces
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # the daemon subscribes the stream to events before it sends the snapshot: nothing after it is missed
        wait_until(lambda: seen[:1] == ["snapshot"], what="the stream's snapshot")
        with connect(f"127.0.0.1:{daemon.port}", key_id=key.id, api_key=key.key,
                     tls_fingerprint=certificate.fingerprint, handle_sigterm=False) as driver:
            driver.motor("right").set_power(-0.3)
            assert daemon.sessions.all()
            daemon.sessions.end(daemon.sessions.all()[0].id, "key:laptop")  # as if it lapsed: closed, stopped
        reader.join(5)
        assert not reader.is_alive(), f"the stream never showed the close: {seen}"
        stream.close()
        assert seen[0] == "snapshot" and "started" in seen and "moving" in seen and "closed" in seen, seen


def test_typed_errors(daemon: Daemon, certificate: Certificate, key: Key) -> None:
    with pytest.raises(TlsMismatch):
        connect(f"127.0.0.1:{daemon.port}", key_id=key.id, api_key=key.key, tls_fingerprint="00" * 32)
    with pytest.raises(Unauthenticated):
        connect(f"127.0.0.1:{daemon.port}", key_id=key.id, api_key="wrong",
                tls_fingerprint=certificate.fingerprint).resource_names()
    with connect(f"127.0.0.1:{daemon.port}", key_id=key.id, api_key=key.key,
                 tls_fingerprint=certificate.fingerprint) as rover:
        with pytest.raises(NotFound):
            rover.motor("nope")
        with pytest.raises(Refused, match="between -1 and 1"):
            rover.motor("left").set_power(3.0)


def test_an_expiry_is_raised_then_the_next_call_starts_afresh(daemon: Daemon, certificate: Certificate,
                                                              key: Key) -> None:
    with connect(f"127.0.0.1:{daemon.port}", key_id=key.id, api_key=key.key,
                 tls_fingerprint=certificate.fingerprint) as rover:
        left = rover.motor("left")
        left.set_power(0.4)
        first = rover.session_id
        assert first is not None
        daemon.sessions.end(first, "key:laptop")  # the daemon ended it (as an expiry would)
        with pytest.raises(SessionExpired):
            left.set_power(0.4)
        left.set_power(0.4)
        assert rover.session_id not in (None, first)
        assert duty(daemon, LEFT_PWM) == pytest.approx(0.4)
