"""The metrics endpoint: Prometheus' text format on a port of its own, fed from the event hub and the front door,
named by Prometheus' conventions, with nothing in it that grows with the number of sessions."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rover_safety.api import auth_pb2, auth_pb2_grpc, motor_pb2, robot_pb2, robot_pb2_grpc, safety_pb2
from rover_safety.daemon.app import Daemon
from rover_safety.daemon.errors import StartupError
from rover_safety.daemon.events import Event
from rover_safety.daemon.metrics import STOP_LATENCY_BUCKETS, Metrics

from tests.support.daemons import DaemonFactory, example_config
from tests.support.grpc_client import Client, Heartbeats
from tests.support.keys import bearer, new_certificate, new_key, secured, tls_channel
from tests.support.pigpiod_emulator import EmulatorClient
from tests.support.waiting import wait_until

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def with_metrics(config: str, address: str = "127.0.0.1:0") -> str:
    return config.replace("network:\n", f'network:\n  metrics: {{bind_address: "{address}"}}\n', 1)


def port(daemon: Daemon) -> int:
    server = daemon._metrics_server
    assert server is not None
    return server.port


def scrape(daemon: Daemon) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port(daemon)}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        return str(reply.read().decode())


def value(text: str, sample: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {sample}{labels}")


def test_off_unless_configured(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon()
    assert daemon.metrics is None and daemon.front_door.observer is None


def test_names_follow_prometheus_conventions(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(with_metrics(example_config("300ms")))
    client = Client(daemon.port)
    client.start()
    client.set_power("left", 0.5)
    wait_until(lambda: "moving=\"true\"} 1.0" in scrape(daemon), timeout=3, what="the expiry counted")
    text = scrape(daemon)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ours = {n: f for n, f in families.items() if n.startswith("rover_safety_")}
    assert set(families) - set(ours) <= {n for n in families if n.startswith(("process_", "python_"))}
    assert {"rover_safety_sessions_live", "rover_safety_sessions_started", "rover_safety_sessions_expired",
            "rover_safety_sessions_closed", "rover_safety_stops", "rover_safety_stop_latency_seconds",
            "rover_safety_heartbeat_duration_seconds", "rover_safety_rpcs", "rover_safety_auth_failures",
            "rover_safety_gpio_up", "rover_safety_reloads", "rover_safety_build_info"} <= set(ours)
    for name, family in ours.items():
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name
    buckets = sorted(float(s.labels["le"]) for s in families["rover_safety_stop_latency_seconds"].samples
                     if s.name.endswith("_bucket") and s.labels["reason"] == "expired")
    assert buckets[0] == 0.0001 and buckets[-2] == 1.0 and tuple(buckets[:-1]) == STOP_LATENCY_BUCKETS
    assert not UUID.search(text), "a session id in the metrics"
    (expired,) = daemon.events.expiries()
    assert expired.session_tag not in text and "session" not in {k for f in ours.values() for s in f.samples
                                                                 for k in s.labels}
    assert value(text, "rover_safety_build_info") == 1
    client.close()


def test_sessions_stops_heartbeats_and_calls_are_counted(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(with_metrics(example_config("300ms")))
    moving, idle, closing, alive = (Client(daemon.port) for _ in range(4))
    moving.start()
    moving.set_power("left", 0.5)  # lapses while moving
    idle.start()  # lapses with nothing moving
    closing.start()
    closing.set_power("right", 0.3)
    assert closing.safety.CloseSession(safety_pb2.CloseSessionRequest(id=closing.sid), timeout=5).success
    alive.start()
    beats = Heartbeats(alive, 0.05)

    def counted() -> bool:
        """The metrics listener counts each event after the hub records it: wait on the scraped counters."""
        try:
            text = scrape(daemon)
            return (value(text, "rover_safety_sessions_expired_total", moving="true") == 1
                    and value(text, "rover_safety_sessions_expired_total", moving="false") == 1
                    and value(text, "rover_safety_sessions_closed_total") == 1
                    and value(text, "rover_safety_resource_moving", resource="left") == 0)
        except AssertionError:  # a sample not there yet
            return False

    wait_until(counted, timeout=3, what="two expiries and a close counted", interval=0.02)
    alive.robot.StopAll(robot_pb2.StopAllRequest(), timeout=5)
    alive.motor.Stop(motor_pb2.StopRequest(name="left"), timeout=5)
    with pytest.raises(grpc.RpcError):
        moving.heartbeat()  # SESSION_EXPIRED
    text = scrape(daemon)
    beats.stop()
    assert not beats.errors
    assert value(text, "rover_safety_sessions_live") == 1
    assert value(text, "rover_safety_sessions_started_total") == 4
    assert value(text, "rover_safety_sessions_expired_total", moving="true") == 1
    assert value(text, "rover_safety_sessions_expired_total", moving="false") == 1
    assert value(text, "rover_safety_sessions_closed_total") == 1
    assert value(text, "rover_safety_stops_total", reason="expired") == 1  # the idle one stopped nothing
    assert value(text, "rover_safety_stops_total", reason="closed") == 1
    assert value(text, "rover_safety_stops_total", reason="stop_all") == 1
    assert value(text, "rover_safety_stops_total", reason="stop") == 1
    assert value(text, "rover_safety_stop_latency_seconds_count", reason="expired") == 1  # nothing stopped: no latency
    assert value(text, "rover_safety_stop_latency_seconds_count", reason="closed") == 1
    assert 0 < value(text, "rover_safety_stop_latency_seconds_sum", reason="expired") < 0.5
    heartbeats = value(text, "rover_safety_heartbeat_duration_seconds_count")
    assert heartbeats >= 2  # the alive client's (as many as its thread got to send) and the one refused
    assert value(text, "rover_safety_heartbeat_duration_seconds_bucket", le="0.1") == heartbeats
    assert value(text, "rover_safety_rpcs_total", service="viam.robot.v1.RobotService", method="StartSession",
                 code="OK") == 4
    assert value(text, "rover_safety_rpcs_total", method="SendSessionHeartbeat", code="INVALID_ARGUMENT") == 1
    assert value(text, "rover_safety_rpcs_total", service="viam.component.motor.v1.MotorService",
                 method="SetPower", code="OK") == 2
    assert value(text, "rover_safety_resource_moving", resource="left") == 0
    assert value(text, "rover_safety_gpio_up", backend="mock") == 1
    for client in (moving, idle, closing, alive):
        client.close()


def test_auth_failures_and_reloads_are_counted(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    certificate, key = new_certificate(tmp_path / "tls"), new_key("laptop")
    daemon = make_daemon(with_metrics(secured(example_config(), certificate, (key,))))
    with tls_channel(daemon.port, certificate) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            auth.Authenticate(auth_pb2.AuthenticateRequest(
                entity="laptop", credentials=auth_pb2.Credentials(type="api-key", payload="wrong")), timeout=5)
        robot = robot_pb2_grpc.RobotServiceStub(channel)
        for metadata in ((), bearer("not-a-token")):
            with pytest.raises(grpc.RpcError):
                robot.StartSession(robot_pb2.StartSessionRequest(), metadata=metadata, timeout=5)
    assert daemon.reload()
    assert daemon.config_path is not None
    Path(daemon.config_path).write_text("network: [not, a, mapping]\n")
    assert not daemon.reload()
    text = scrape(daemon)
    assert value(text, "rover_safety_auth_failures_total", kind="key") == 1
    assert value(text, "rover_safety_auth_failures_total", kind="token") == 2
    assert value(text, "rover_safety_rpcs_total", method="Authenticate", code="UNAUTHENTICATED") == 1
    assert value(text, "rover_safety_reloads_total", result="ok") == 1
    assert value(text, "rover_safety_reloads_total", result="refused") == 1
    assert value(text, "rover_safety_reloads_total", result="failed") == 0


def test_a_lost_backend_shows(make_daemon: DaemonFactory) -> None:
    with EmulatorClient.spawn() as emulator:
        daemon = make_daemon(with_metrics(example_config("300ms", "pigpio", host="127.0.0.1", port=emulator.port)))
        assert value(scrape(daemon), "rover_safety_gpio_up", backend="pigpio") == 1
        emulator.stop_pigpiod()
        wait_until(lambda: value(scrape(daemon), "rover_safety_gpio_up", backend="pigpio") == 0, timeout=3,
                   what="gpio_up 0")


def test_a_taken_port_is_a_startup_error(make_daemon: DaemonFactory) -> None:
    first = make_daemon(with_metrics(example_config()))
    with pytest.raises(StartupError, match=r"network\.metrics\.bind_address: cannot listen on"):
        make_daemon(with_metrics(example_config(), f"127.0.0.1:{port(first)}"))


def test_the_listener_never_raises_into_the_stop_path() -> None:
    metrics = Metrics(gpio_backend="mock", live_sessions=lambda: 0)
    metrics.on_event(Event("expired", resources=("left",), moving=("left",), latency_ms=0.8))
    metrics.on_event(Event("expired", resources=(), latency_ms=None))
    metrics.on_event(Event("no such kind"))
    metrics.latency["expired"] = None  # type: ignore[assignment]  # a bug in a handler
    metrics.on_event(Event("expired", resources=("left",), moving=("left",), latency_ms=0.8))
    text = metrics.exposition().decode()
    assert value(text, "rover_safety_sessions_expired_total", moving="true") == 2
    assert value(text, "rover_safety_stop_latency_seconds_bucket", reason="expired", le="0.001") == 1
    started = time.perf_counter()
    for _ in range(1000):
        metrics.on_event(Event("started"))
    assert (time.perf_counter() - started) / 1000 < 200e-6  # the benchmark measures it properly
