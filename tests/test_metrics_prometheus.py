"""The metrics as a real Prometheus sees them (Debian's prometheus and promtool): scraped every second, an expiry
and its stop latency answer PromQL; the exposition passes promtool's lint; the fleet files in docs/fleet are valid
and their dashboard asks only for metrics the daemon has."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from rover_safety.daemon.app import Daemon
from rover_safety.daemon.metrics import STOP_LATENCY_BUCKETS

from tests.support import prometheus
from tests.support.daemons import DaemonFactory, example_config
from tests.support.grpc_client import Client

pytestmark = pytest.mark.skipif(prometheus.missing() is not None, reason=prometheus.missing() or "")

FLEET = Path(__file__).resolve().parent.parent / "docs" / "fleet"
PROMTOOL = "/usr/bin/promtool"


def metrics_port(daemon: Daemon) -> int:
    assert daemon._metrics_server is not None
    return daemon._metrics_server.port


@pytest.fixture
def daemon(make_daemon: DaemonFactory) -> Daemon:
    config = example_config("300ms").replace("network:\n", 'network:\n  metrics: {bind_address: "127.0.0.1:0"}\n', 1)
    return make_daemon(config)


def exposition(daemon: Daemon) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(daemon)}/metrics", timeout=5) as reply:
        return bytes(reply.read())


def only(result: list[dict[str, object]]) -> float:
    assert len(result) == 1, result
    sample = result[0]["value"]
    assert isinstance(sample, list)
    return float(sample[1])


def bucket_of(seconds: float) -> tuple[float, float]:
    """The stop-latency histogram's bucket (low, high] that holds `seconds`."""
    low = 0.0
    for high in STOP_LATENCY_BUCKETS:
        if seconds <= high:
            return low, high
        low = high
    raise AssertionError(f"a stop latency of {seconds} s is past the histogram's last bucket")


def test_prometheus_sees_an_expiry_and_its_stop_latency(daemon: Daemon, tmp_path: Path) -> None:
    with prometheus.prometheus(tmp_path / "prometheus", [f"127.0.0.1:{metrics_port(daemon)}"]) as server:
        server.wait_for('up{job="rover-safety"}', lambda r: bool(r) and only(r) == 1)
        server.wait_for("rover_safety_sessions_started_total", lambda r: bool(r))  # one scrape before the expiry
        client = Client(daemon.port)
        client.start()
        client.set_power("left", 0.5)
        expired = 'rover_safety_sessions_expired_total{moving="true"}'
        assert only(server.wait_for(expired, lambda r: bool(r) and only(r) == 1)) == 1
        assert only(server.query('rover_safety_sessions_expired_total{moving="false"}')) == 0
        p99 = only(server.wait_for(
            'histogram_quantile(0.99, sum by (le) (rover_safety_stop_latency_seconds_bucket{reason="expired"}))',
            lambda r: bool(r) and r[0]["value"][1] != "NaN"))
        (report,) = daemon.events.expiries()
        assert report.latency_ms is not None
        # The metric reports the measured figure: both quantiles fall in the bucket that holds the stop's latency.
        low, high = bucket_of(report.latency_ms / 1000)
        assert low < p99 <= high, f"p99 {p99} s, the stop took {report.latency_ms / 1000} s"
        rate = server.wait_for(
            'histogram_quantile(0.5, sum by (le) (rate(rover_safety_stop_latency_seconds_bucket[1m])))',
            lambda r: bool(r) and r[0]["value"][1] != "NaN")
        assert low < only(rate) <= high, f"median {only(rate)} s, the stop took {report.latency_ms / 1000} s"
        assert only(server.query("sum(rover_safety_stops_total)")) == 1
        client.close()


def test_promtool_finds_nothing_to_lint(daemon: Daemon) -> None:
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition(daemon), capture_output=True, timeout=30)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()


def test_the_fleet_files_are_valid(daemon: Daemon) -> None:
    for config, extra in (("prometheus.yml", []), ("rover-agent.yml", ["--agent"])):
        check = subprocess.run([PROMTOOL, "check", "config", *extra, str(FLEET / config)], capture_output=True,
                               text=True, timeout=30, cwd=FLEET)
        assert check.returncode == 0, check.stdout + check.stderr
    rules = subprocess.run([PROMTOOL, "check", "rules", str(FLEET / "rover-safety.rules.yml")], capture_output=True,
                           text=True, timeout=30)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    client = Client(daemon.port)
    client.start()  # one call, so that the per-call series exist
    client.close()
    known = set(re.findall(r"^(rover_safety_\w+)", exposition(daemon).decode(), re.MULTILINE))
    dashboard = json.loads((FLEET / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    expressions += [(FLEET / "rover-safety.rules.yml").read_text()]
    asked = {name for expr in expressions for name in re.findall(r"rover_safety_\w+", expr)}
    assert asked and asked <= known, f"not exported: {asked - known}"
