"""`rover-safety serve --simulate --web 0.0.0.0:PORT`: the operator page on a phone in one step. Off loopback the
page needs a key and TLS, so --simulate makes both for the run and prints them; without --simulate the open-door
rule refuses."""

from __future__ import annotations

import re
import select
import ssl
import subprocess
from pathlib import Path

from tests.support.browser import WebClient
from tests.support.daemons import example_config
from tests.support.hil import RUN_CLI, cli_env, served
from tests.support.net import free_port


def test_simulate_with_a_web_address_off_loopback_makes_a_key_and_a_certificate_for_the_run(tmp_path: Path) -> None:
    config = tmp_path / "rover.yaml"
    config.write_text(example_config())
    port = free_port()
    simulate = ["--simulate", "--web", f"0.0.0.0:{port}"]
    with served(config, wrap=lambda argv: [*argv, *simulate]) as daemon:  # killed at the end whatever happens
        stdout = daemon.proc.stdout
        assert stdout is not None
        assert select.select([stdout], [], [], 20)[0], f"nothing on stdout within 20 s:\n{daemon.text}"
        first = stdout.readline()
        match = re.search(r"API key id `phone`, key (\S+); certificate ([0-9A-F:]+)", first)
        assert match, first
        key = match.group(1)
        _, page_line = daemon.wait_line("operator page on")
        assert "https://" in page_line.string and match.group(2) in page_line.string, page_line.string
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # a phone: compare the fingerprint
        page = WebClient(port, tls=context)
        assert page.request("GET", "/").status == 200
        page.state()
        assert page.login("phone", "not the key").status == 401
        assert page.login("phone", key).status == 200


def test_without_simulate_the_open_door_rule_refuses(tmp_path: Path) -> None:
    config = tmp_path / "rover.yaml"
    config.write_text(example_config())
    result = subprocess.run([*RUN_CLI, "serve", "--config", str(config), "--web", f"0.0.0.0:{free_port()}"],
                            capture_output=True, text=True, timeout=30, env=cli_env(), check=False)
    assert result.returncode == 1
    assert "refusing to serve" in result.stderr and "gen-key" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
