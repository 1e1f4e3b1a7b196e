"""What the metrics cost where the daemon works: per expiry event, per heartbeat, per scrape.

    python -m benchmarks.bench_metrics [--calls 200000] [--scrapes 2000] [--heartbeats 3000]

- the event hub's listener (`Metrics.on_event`), which runs on the publishing thread: for an expiry that is the
  stop-watch thread, after the outputs are off (the latency it reports was measured before), so it cannot delay a
  stop; it delays only the journal line and the event stream by its own cost. Measured alone and as part of
  `EventHub.publish` (with and without the listener);
- the front door's observer (`Metrics.on_rpc`) for SendSessionHeartbeat, on the serving loop once per call;
- a whole heartbeat over gRPC (loopback, a sync client) to a daemon on mock pins without and with metrics, the
  figure a client sees (this one is noisy on a busy machine: compare the medians);
- one scrape (`generate_latest` of the daemon's registry with every label in use), which runs on the serving loop.

Per-call figures are means over batches of 1000 calls (a scrape, ~1 ms each: batches of 10, so that --scrapes 2000
makes 200 batches), the p50 and p99 (nearest rank) of those batch means, and the p99 of single calls (including the
~50 ns of reading the clock). The report says how many batches each p99 is taken over: with fewer than 100 it is
simply the largest. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from rover_safety.config import load
from rover_safety.daemon.app import Daemon
from rover_safety.daemon.events import Event, EventHub
from rover_safety.daemon.metrics import HEARTBEAT, Metrics

from benchmarks.stats import pct
from tests.support.daemons import example_config
from tests.support.grpc_client import Client

BATCH = 1000
SCRAPE_BATCH = 10  # a scrape takes ~1 ms: 2000 scrapes in batches of 1000 would give only two batch means


def batches(calls: int, batch: int) -> int:
    return max(1, calls // batch)


def per_call(call: Callable[[], object], calls: int, batch: int = BATCH) -> tuple[float, float, float]:
    """(p50 of batch means, p99 of batch means, p99 of single calls), in nanoseconds."""
    for _ in range(batch):  # warm up
        call()
    means: list[float] = []
    for _ in range(batches(calls, batch)):
        started = time.perf_counter_ns()
        for _ in range(batch):
            call()
        means.append((time.perf_counter_ns() - started) / batch)
    singles: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(min(calls, 100_000)):
        started = clock()
        call()
        singles.append(clock() - started)
    return pct(means, 0.5), pct(means, 0.99), pct([float(s) for s in singles], 0.99)


def metrics() -> Metrics:
    m = Metrics(gpio_backend="pigpio", live_sessions=lambda: 3)
    m.resources(["base", "left", "right"])
    for method in ("/viam.robot.v1.RobotService/StartSession", HEARTBEAT,
                   "/viam.component.base.v1.BaseService/SetPower", "/viam.component.motor.v1.MotorService/SetPower",
                   "/rover_safety.v1.SafetyService/WatchEvents"):
        for code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED):
            m.on_rpc(method, code, 0.0001)
    for kind in ("started", "expired", "closed", "moving", "stopped", "forced_off", "reloaded"):
        m.on_event(Event(kind, resources=("base", "left", "right"), moving=("base",), latency_ms=0.9))
    return m


def grpc_heartbeats(count: int, with_metrics: bool) -> tuple[float, float]:
    """Median and p99 of a heartbeat's round trip (µs) to an in-process daemon on mock pins."""
    with tempfile.TemporaryDirectory() as directory:
        text = example_config("5s")
        if with_metrics:
            text = text.replace("network:\n", 'network:\n  metrics: {bind_address: "127.0.0.1:0"}\n', 1)
        path = Path(directory) / "config.yaml"
        path.write_text(text)
        daemon = Daemon(load(path), config_path=str(path))
        daemon.start()
        try:
            client = Client(daemon.port)
            client.start()
            for _ in range(200):
                client.heartbeat()
            times: list[float] = []
            for _ in range(count):
                started = time.perf_counter()
                client.heartbeat()
                times.append((time.perf_counter() - started) * 1e6)
            client.close()
        finally:
            daemon.shutdown()
    return statistics.median(times), pct(times, 0.99)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help=f"calls per row, in batches of {BATCH}")
    parser.add_argument("--scrapes", type=int, default=2000, help=f"scrapes, in batches of {SCRAPE_BATCH}")
    parser.add_argument("--heartbeats", type=int, default=3000, help="heartbeats per round-trip row")
    args = parser.parse_args()
    m = metrics()
    expiry = Event("expired", session_tag="0badcafe", peer="ipv4:10.0.0.7:5000", resources=("base", "left", "right"),
                   moving=("base",), latency_ms=0.93)
    bare, listened = EventHub(), EventHub()
    listened.listen(m.on_event)
    rows = [
        ("listener, one expiry event (`on_event`)", per_call(lambda: m.on_event(expiry), args.calls)),
        ("listener, one session start (`on_event`)", per_call(lambda: m.on_event(Event("started")), args.calls)),
        ("`EventHub.publish(expiry)`, no listener", per_call(lambda: bare.publish(expiry), args.calls)),
        ("`EventHub.publish(expiry)`, metrics listening", per_call(lambda: listened.publish(expiry), args.calls)),
        ("observer, one heartbeat (`on_rpc`)",
         per_call(lambda: m.on_rpc(HEARTBEAT, grpc.StatusCode.OK, 0.00004), args.calls)),
        ("observer, another call (`on_rpc`)",
         per_call(lambda: m.on_rpc("/viam.component.base.v1.BaseService/SetPower", grpc.StatusCode.OK, 0.0002),
                  args.calls)),
    ]
    print(f"rover-safety metrics cost on {platform.machine()}, Python {platform.python_version()}, "
          f"{platform.processor() or platform.platform()}\n")
    print(f"Batch means: {batches(args.calls, BATCH)} batches of {BATCH} calls per row; the scrape: "
          f"{batches(args.scrapes, SCRAPE_BATCH)} batches of {SCRAPE_BATCH}. Single calls: "
          f"{min(args.calls, 100_000)} per row; the scrape: {min(args.scrapes, 100_000)}.\n")
    print("| what | p50 (batch mean) | p99 (batch mean) | p99 (single call) |")
    print("|---|---:|---:|---:|")
    for name, (p50, p99, single) in rows:
        print(f"| {name} | {p50 / 1000:.2f} µs | {p99 / 1000:.2f} µs | {single / 1000:.2f} µs |")
    scrape = per_call(m.exposition, args.scrapes, SCRAPE_BATCH)
    print(f"| one scrape (`generate_latest`, {len(m.exposition())} bytes) | {scrape[0] / 1e6:.3f} ms | "
          f"{scrape[1] / 1e6:.3f} ms | {scrape[2] / 1e6:.3f} ms |")
    print("\n| heartbeat round trip over gRPC (loopback) | median | p99 |")
    print("|---|---:|---:|")
    for label, on in (("without metrics", False), ("with metrics", True), ("without metrics, again", False)):
        median, p99 = grpc_heartbeats(args.heartbeats, on)
        print(f"| {label} | {median:.0f} µs | {p99:.0f} µs |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
