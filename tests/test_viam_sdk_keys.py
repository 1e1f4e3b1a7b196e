"""The official Viam Python SDK with an API key over TLS, as a laptop user runs it: accepted with the key (verifying
the rover's self-signed certificate through SSL_CERT_FILE when it dials a name), refused without, and its session
survives the second connection on which it authenticates again to heartbeat."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rover_safety.daemon.app import Daemon

from tests.support.daemons import DaemonFactory, duty, example_config
from tests.support.keys import Certificate, Key, new_certificate, new_key, secured
from tests.support.viam_sdk import CLIENT, SdkClient, sdk_env

WINDOW = 0.5
LEFT_PWM = 22


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return new_certificate(tmp_path / "tls", names=("localhost", "rover.test"))


@pytest.fixture
def key() -> Key:
    return new_key("laptop")


@pytest.fixture
def daemon(make_daemon: DaemonFactory, certificate: Certificate, key: Key) -> Daemon:
    return make_daemon(secured(example_config(heartbeat_window="500ms"), certificate, (key,)))


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[list[SdkClient]]:
    started: list[SdkClient] = []
    yield started
    for client in started:
        client.close()


def test_the_sdk_drives_with_a_key_over_tls_and_its_session_survives_its_second_connection(
        viam_python: str, daemon: Daemon, key: Key, tmp_path: Path, clients: list[SdkClient]) -> None:
    sdk = SdkClient(viam_python, f"127.0.0.1:{daemon.port}", ("--key-id", key.id, "--api-key", key.key),
                    tmp_path / "sdk.log")
    clients.append(sdk)
    assert "motor/left" in sdk.resources
    sdk.ok("motor.set_power", "left", 0.5)
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.5)
    time.sleep(WINDOW * 4)  # heartbeats on the SDK's second connection, with its second token, keep it alive
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.5), "the session died with the SDK's second connection"
    (session,) = daemon.sessions.all()
    assert session.owner == "key:laptop"


def test_the_sdk_verifies_the_rovers_certificate_through_ssl_cert_file(
        viam_python: str, make_daemon: DaemonFactory, key: Key, tmp_path: Path, clients: list[SdkClient]) -> None:
    # By the machine's name, as a laptop dials a rover: the SDK then verifies the certificate against the system's
    # trust store, which SSL_CERT_FILE replaces (for localhost and 127.* it verifies nothing). Off loopback: TLS+keys.
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None)
    except OSError:
        pytest.fail(f"this machine's name {name!r} does not resolve; the test needs it to (as on any rover)")
    rover_cert = new_certificate(tmp_path / "rover", names=(name, "localhost"))
    other_cert = new_certificate(tmp_path / "other", names=(name, "localhost"))
    text = example_config(heartbeat_window="500ms").replace('"127.0.0.1:0"', '"0.0.0.0:0"')
    daemon = make_daemon(secured(text, rover_cert, (key,)))
    flags = ("--key-id", key.id, "--api-key", key.key)
    sdk = SdkClient(viam_python, f"{name}:{daemon.port}", flags, tmp_path / "sdk.log",
                    env={"SSL_CERT_FILE": str(rover_cert.cert)})
    clients.append(sdk)
    sdk.ok("motor.set_power", "left", 0.3)
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.3)
    result = subprocess.run([viam_python, str(CLIENT), f"{name}:{daemon.port}", *flags], input="quit\n",
                            capture_output=True, text=True, timeout=60,
                            env={**sdk_env(), "SSL_CERT_FILE": str(other_cert.cert)})
    assert '"ok": true' not in result.stdout, "the SDK accepted a certificate it was not told to trust"
    # refused for that reason: the certificate's verification, not any other failure of the client
    assert result.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in result.stderr, result.stderr[-3000:]


def test_the_sdk_without_a_key_is_refused(viam_python: str, daemon: Daemon, tmp_path: Path) -> None:
    result = subprocess.run([viam_python, str(CLIENT), f"127.0.0.1:{daemon.port}"], input="quit\n",
                            capture_output=True, text=True, timeout=60, env=sdk_env())
    assert '"ok": true' not in result.stdout, result.stdout
    # Without a key the SDK dials in plaintext, which the daemon's TLS-only port drops at the handshake: the SDK sees
    # the connection lost on its first call, not any other failure.
    assert result.returncode != 0, result.stdout
    assert "StreamTerminatedError: Connection lost" in result.stderr, result.stderr[-3000:]
    assert "Unable to establish a connection to the machine" in result.stderr, result.stderr[-3000:]
    assert duty(daemon, LEFT_PWM) == 0
    assert daemon.sessions.all() == []
