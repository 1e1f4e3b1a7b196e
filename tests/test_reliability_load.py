"""Issue 9, "one client cannot stall the rest": stalled HTTP/2 streams, idle connections up to and past the daemon's
cap, a heartbeat flood from one host, and CPU starvation, each while 20 other sessions heartbeat at a 200 ms window.
The daemon runs as a real process on a standalone pigpiod emulator; live clients run in a process of their own
(tests/support/fault_sessions.py) and count false expiries: heartbeats refused as expired although they were sent
within one window of the previous answered one. Figures go to build/reliability.json (see tests/support/faults.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from rover_safety.daemon.wire import STREAMS_PER_CONNECTION

from tests.support.fault_h2 import HostilePeers
from tests.support.faults import (
    CHECKOUT,
    PYTHON,
    ClientProc,
    Finding,
    busy_cpus,
    daemon,
    deadline_of,
    emulator,
    first_off,
    ms_stats,
    pwm_pin,
    rover_yaml,
    run_sessions,
    sessions_summary,
    show,
)
from tests.support.grpc_client import Client

pytestmark = pytest.mark.timeout(180)

LIVE = 20  # other clients' sessions
LATE_LIMIT = 0.1


def live_figure(summary: dict[str, Any]) -> str:
    rtt = summary["rtt_ms"]
    return (f"live heartbeat round trip p50 {rtt['p50']:.1f} / p99 {rtt['p99']:.1f} / max {rtt['max']:.1f} ms "
            f"({summary['heartbeats']} answered)")


def live_outcome(summary: dict[str, Any]) -> str:
    return (f"{summary['false_expiries']} false expiries of {summary['sessions']} live sessions"
            + (f" ({summary['late_sends']} heartbeats the starved client itself sent late)"
               if summary["late_sends"] else ""))


def check_live(finding: Finding, summary: dict[str, Any], what: str) -> None:
    finding.check(summary["false_expiries"] == 0,
                  f"{what}: {summary['false_expiries']} false expiries (gaps {summary['expiry_gaps_ms'][:10]} ms, "
                  f"errors {summary['errors']})")
    finding.check(summary["heartbeats"] > 0, f"{what}: no live heartbeat was answered")


# ---- stalled streams and idle connections ----------------------------------------------------------------------


def test_stalled_streams_and_idle_connections_do_not_stall_live_clients(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Phase 1: 8 connections, each opening 32 gRPC streams (HEADERS, never a body), while 20 live sessions
    heartbeat at a 200 ms window. Phase 2: 1,000 idle connections (preface + SETTINGS, nothing else), past the
    daemon's max_connections (512): what the cap does to them, to the live sessions, and to a new client."""
    finding = Finding(request, "stalled-streams-idle-connections",
                      "32 stalled streams per connection (x8); 1,000 idle connections")
    window = 0.2
    seconds = 4.0
    cap = 512
    with emulator() as emu, daemon(tmp_path, rover_yaml(emu.port, window="200ms", motors=2)) as rover:
        host, port = "127.0.0.1", rover.port
        # Phase 1: stalled streams.
        live = run_sessions(f"{host}:{port}", LIVE, seconds, window / 5)
        time.sleep(2.5)  # the live clients connect, then start at their start_by (3 s after they began)
        peers = HostilePeers(host, port)
        try:
            stalled = [peers.connect(streams=32) for _ in range(8)]
            summary1 = sessions_summary(live, seconds + 30)
            time.sleep(0.2)
            refused_streams = [len(p.reset) for p in stalled]
            still_open = sum(1 for p in stalled if not p.closed)
            # Phase 2: idle connections, then a new client while they hold the cap.
            live = run_sessions(f"{host}:{port}", LIVE, seconds, window / 5)
            time.sleep(2.5)
            idle = []
            refused_connect = 0
            for _ in range(1000):
                try:
                    idle.append(peers.connect(streams=0))
                except OSError:
                    refused_connect += 1
            time.sleep(1.0)
            idle_open = sum(1 for p in idle if not p.closed)
            newcomer = Client(port)
            t = time.monotonic()
            try:
                newcomer.start()
                newcomer_result = f"a new client started a session in {1000 * (time.monotonic() - t):.0f} ms"
                newcomer_ok = True
            except grpc.RpcError as exc:
                newcomer_result = f"a new client could not start a session: {exc.code()} {exc.details()}"
                newcomer_ok = False
            finally:
                newcomer.close()
            summary2 = sessions_summary(live, seconds + 30)
        finally:
            peers.close()
        time.sleep(0.5)
        after = Client(port)
        try:
            after.start()
            after_ok = True
        except grpc.RpcError:
            after_ok = False
        finally:
            after.close()
        alive = rover.alive()
    check_live(finding, summary1, "stalled streams")
    check_live(finding, summary2, "idle connections")
    finding.check(alive, "the daemon died")
    finding.check(after_ok, "no new session could be started after the idle connections closed")
    outcome = (f"stalled: {live_outcome(summary1)}; {still_open}/8 stalled connections kept, "
               f"{sum(refused_streams)} of 256 streams refused ({STREAMS_PER_CONNECTION} streams/connection); "
               f"idle: {live_outcome(summary2)}; "
               f"{idle_open}/1000 idle connections kept open (cap {cap}); {newcomer_result}")
    del newcomer_ok  # what the cap does to a new client is the next test's (a known defect)
    finding.finish(
        2, outcome, f"stalled: {live_figure(summary1)}; idle: {live_figure(summary2)}",
        stalled_live=summary1, idle_live=summary2, refused_streams=refused_streams, idle_open=idle_open,
        connect_refused=refused_connect, newcomer=newcomer_result,
    )


def test_idle_connections_past_the_cap_cost_live_clients_nothing_and_free_up_when_closed(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """One host opens 600 idle connections (preface + SETTINGS), past max_connections (512). What the daemon
    guarantees: it holds at most 512, a client that was connected before keeps its session alive and drives, and once
    the idle connections close a new client of another host ([::1], dual-stack daemon) starts a session at once.

    What it cannot do (the known limitation in docs/RELIABILITY.md): while they are open, a *new* client may find no
    slot, because grpcio counts connections only globally and has no hook to refuse one per source before it is
    accepted. That is recorded, not asserted; the firewall rule in docs/SECURITY.md is the rover's answer."""
    finding = Finding(request, "idle-connections-lockout", "idle connections from one host up to the cap "
                      "(max_connections 512): clients already connected, a new client of another host")
    config = rover_yaml(0, window="2s", bind="[::]:0", motors=1, insecure=True)
    with emulator() as emu:
        config = config.replace("port: 0}", f"port: {emu.port}}}")
        with daemon(tmp_path, config) as rover:
            resident = Client(rover.port, host="[::1]")
            resident.start()
            resident.set_power("m0", 0.4)
            peers = HostilePeers("127.0.0.1", rover.port)
            try:
                for _ in range(600):
                    peers.connect(streams=0)
                time.sleep(1.0)
                held = peers.open_count()
                resident_ok = True
                try:
                    resident.beat(10, 0.2)  # 2 s of heartbeats, a whole window, on its existing connection
                    resident.set_power("m0", 0.5)
                except grpc.RpcError as exc:
                    resident_ok, resident_error = False, f"{exc.code().name} {exc.details()}"
                newcomer = Client(rover.port, host="[::1]", own_connection=True)
                try:
                    newcomer.start()
                    during = "a new client started a session"
                except grpc.RpcError as exc:
                    during = f"a new client was refused: {exc.code().name} {exc.details()}"
                finally:
                    newcomer.close()
            finally:
                peers.close()
            t = time.monotonic()
            after, after_ok = "", False
            while time.monotonic() - t < 5.0 and not after_ok:
                late = Client(rover.port, host="[::1]", own_connection=True)
                try:
                    late.start()
                    after, after_ok = f"a new client started a session {1000 * (time.monotonic() - t):.0f} ms " \
                                      "after they closed", True
                except grpc.RpcError as exc:
                    after = f"refused: {exc.code().name} {exc.details()}"
                    time.sleep(0.1)
                finally:
                    late.close()
            resident.close()
            alive = rover.alive()
    finding.check(held <= 512, f"the daemon held {held} connections, past max_connections 512")
    finding.check(resident_ok, f"the client connected before lost its session or its drive: "
                  f"{'' if resident_ok else resident_error}")
    finding.check(after_ok, f"once the idle connections closed, {after}")
    finding.check(alive, "the daemon died")
    finding.finish(1, f"{held}/600 idle connections held; the client connected before: heartbeats and drive "
                   f"answered; while they were open, {during} (the known limitation); {after}",
                   "n/a (availability)", held=held, during=during, after=after)


# ---- a heartbeat flood from one host ---------------------------------------------------------------------------


def flooders(target: str, seconds: float, motor: str = "", processes: int = 2,
             channels: int = 32) -> list[subprocess.Popen[str]]:
    """`processes` flood processes, 1024 calls in flight in all (channels x 16 streams each)."""
    procs = []
    for i in range(processes):
        argv = [PYTHON, "-m", "tests.support.fault_flood", "--target", target, "--channels", str(channels),
                "--per-channel", "16", "--seconds", str(seconds)]
        if motor and i == 0:
            argv += ["--motor", motor]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=CHECKOUT))
    return procs


def flood_lines(proc: subprocess.Popen[str], until: str, timeout: float) -> list[dict[str, Any]]:
    """Read a flooder's lines until one of kind `until` (or EOF)."""
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        lines.append(event)
        if event["ev"] == until:
            break
    return lines


def end_all(procs: Sequence[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        if p.stdout is not None:
            p.stdout.close()


def flood_run(tmp_path: Path, emu: Any, window: str, seconds: float, motor: str) -> dict[str, Any]:
    """A daemon on [::] (window `window`), 20 live sessions from [::1] and 1,024 heartbeat calls in flight from
    127.0.0.1; with `motor`, the flooder drives it with its own session and is killed after 3 s."""
    w = 0.2 if window == "200ms" else 2.0
    config = rover_yaml(emu.port, window=window, bind="[::]:0", motors=2, insecure=True)
    result: dict[str, Any] = {}
    with daemon(tmp_path, config, name=f"flood{window}.yaml") as rover:
        live = run_sessions(f"[::1]:{rover.port}", LIVE, seconds, w / 5)
        floods = flooders(f"127.0.0.1:{rover.port}", 60 if motor else seconds + 1, motor=motor)
        try:
            for p in floods:
                flood_lines(p, "ready", 30)
            if motor:
                driven = time.monotonic()
                time.sleep(3.0)
                killed = time.monotonic()
                for p in floods:
                    os.kill(p.pid, signal.SIGKILL)
                off = first_off(emu, pwm_pin(motor), driven, w + 3)
                result["late"] = None if off is None else off - (killed + w)
            else:
                ends = [flood_lines(p, "summary", seconds + 20) for p in floods]
                counts: dict[str, int] = {}
                for lines in ends:
                    for k, v in (lines[-1].get("counts", {}) if lines else {}).items():
                        counts[k] = counts.get(k, 0) + v
                result["counts"] = counts
                result["rate"] = sum(counts.values()) / (seconds + 1)
            result["live"] = sessions_summary(live, seconds + 40)
        finally:
            end_all(floods)
            if live.poll() is None:
                live.kill()
                live.wait(10)
        result["alive"] = rover.alive()
    return result


def test_a_heartbeat_flood_from_one_host_does_not_expire_others_at_200ms(request: pytest.FixtureRequest,
                                                                          tmp_path: Path) -> None:
    """One host (127.0.0.1) keeps 1,024 heartbeat calls in flight over 64 connections, while 20 sessions of
    another host ([::1], the same dual-stack daemon on [::]) heartbeat at a 200 ms window: none may expire."""
    finding = Finding(request, "heartbeat-flood-200ms", "heartbeat flood, 1,024 calls in flight from one host; "
                      "others at a 200 ms window")
    with emulator() as emu:
        r = flood_run(tmp_path, emu, "200ms", 5.0, "")
    summary, counts = r["live"], r["counts"]
    check_live(finding, summary, "200 ms window")
    finding.check(r["alive"], "the daemon died under the flood")
    finding.finish(
        1, live_outcome(summary),
        f"{live_figure(summary)}; flood {r['rate']:.0f} calls/s "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
        live=summary, flood_calls=counts, flood_calls_per_s=round(r["rate"]),
    )


def test_a_heartbeat_flood_at_2s_expires_nobody_and_the_flooder_stops_on_time(request: pytest.FixtureRequest,
                                                                               tmp_path: Path) -> None:
    """The same flood at a 2 s window, the flooder driving a motor with a session its flood keeps alive: the
    others see no false expiry, and once the flooder is killed its motor stops at most 250 ms after kill + 2 s
    (a heartbeat that waited in a queue must not stretch its session)."""
    finding = Finding(request, "heartbeat-flood-2s", "heartbeat flood, 1,024 calls in flight from one host; "
                      "2 s window: others, and the flooder's own stop")
    with emulator() as emu:
        r = flood_run(tmp_path, emu, "2s", 5.0, "m0")
    summary, late = r["live"], r["late"]
    check_live(finding, summary, "2 s window")
    finding.check(late is not None, "the flooder's motor never stopped")
    finding.check(late is not None and late <= 0.25, f"the flooder's motor stopped {late} s after kill + window")
    finding.check(r["alive"], "the daemon died under the flood")
    # Negative: the flooder's last heartbeat that was heard (not refused as over its share) came that long before
    # the kill, and the window ran from it.
    own = (f"flooder's motor off {1000 * (late or 0):.1f} ms after kill + 2 s" if (late or 0) >= 0 else
           f"flooder's motor off {-1000 * (late or 0):.1f} ms before kill + 2 s (its last heartbeat heard came "
           "that long before the kill)")
    finding.finish(
        1, f"{live_outcome(summary)}; {own}",
        f"{live_figure(summary)}; flooder: off - (kill + 2 s) {1000 * (late or 0):.1f} ms",
        live=summary, flooder_late_ms=None if late is None else round(1000 * late, 2),
    )


# ---- CPU starvation --------------------------------------------------------------------------------------------

NO_CAPS = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]


def starved_run(tmp_path: Path, emu: Any, window: str, seconds: float, prefix: Sequence[str],
                kills: int) -> tuple[dict[str, Any], list[float], list[float], str]:
    """The daemon (behind `prefix`) under 4 spinning processes at nice 0, 20 live sessions for `seconds`, and
    `kills` clients driving m0 killed in turn (each stop measured). Returns the live summary, each stop's lateness
    against (answer + window) and against (send + window), and the daemon's log."""
    w = float(window.removesuffix("ms")) / 1000 if window.endswith("ms") else float(window.removesuffix("s"))
    late: list[float] = []
    margin: list[float] = []
    with daemon(tmp_path, rover_yaml(emu.port, window=window, motors=2), name=f"starve{window}{len(prefix)}.yaml",
                prefix=prefix) as rover:
        address = f"127.0.0.1:{rover.port}"
        # The clients stand for programs on a laptop: they get the CPU first here, so that what is measured is
        # the daemon starving, not its clients.
        live = run_sessions(address, LIVE, seconds, w / 5, nice=-15)
        drivers = [ClientProc(address, "m0", interval=w / 5) for _ in range(kills)]
        for d in drivers:
            d.ready()
            os.setpriority(os.PRIO_PROCESS, d.proc.pid, -15)
        time.sleep(2.5)
        with busy_cpus(4, seconds + 30):
            for d in drivers:
                d.go()
                d.wait_count(lambda e: e["ev"] == "ok" and e["what"] == "hb", 3, 10, "heartbeats")
                time.sleep(0.013)
                killed = d.signal(signal.SIGKILL)
                d.proc.wait(5)
                drive = d.wait_for(lambda e: e["ev"] == "ok" and e["what"] == "drive", 1, "drive")
                off = first_off(emu, pwm_pin("m0"), drive["a"], w + 3)
                if off is not None:
                    bounds = deadline_of(d.calls(), killed, w)
                    late.append(off - bounds.hi)
                    margin.append(off - bounds.lo)
                d.close()
            summary = sessions_summary(live, seconds + 40)
        text = rover.text
    return summary, late, margin, text


@pytest.mark.parametrize("privileged", [True, False], ids=["root", "no-capabilities"])
def test_cpu_starvation_at_nice_0(request: pytest.FixtureRequest, tmp_path: Path, privileged: bool) -> None:
    """Both cores saturated by 4 ordinary processes at nice 0, 20 sessions at a 200 ms window and then at 2 s, and
    clients driving a motor killed meanwhile. As root the daemon raises its serving thread to nice -10 and runs its
    deadline and stop threads SCHED_FIFO; with no capabilities (setpriv --inh-caps=-all --bounding-set=-all) it may
    do neither and says so, and runs at nice 0 like the load."""
    if os.geteuid() != 0:
        pytest.skip("needs root (to give the daemon its priorities, or to take them away with setpriv)")
    key = "cpu-starvation-" + ("root" if privileged else "no-caps")
    finding = Finding(request, key, "CPU starvation at nice 0 (4 spinning processes, 2 cores), "
                      + ("as root: serving thread nice -10, deadline thread SCHED_FIFO" if privileged
                         else "no capabilities: nothing raised"))
    prefix = [] if privileged else NO_CAPS
    figures: dict[str, Any] = {}
    outcomes = []
    texts = []
    with emulator(realtime=True) as emu:
        for window, seconds in (("200ms", 6.0), ("2s", 6.0)):
            summary, late, margin, text = starved_run(tmp_path, emu, window, seconds, prefix, kills=3)
            texts.append(text)
            if privileged or window != "200ms":
                check_live(finding, summary, window)
            # Without its priorities a 200 ms window is not promised under CPU starvation (the daemon warns at
            # start): recorded, not asserted.
            finding.check(all(m >= 0 for m in margin), f"{window}: a stop came before its deadline: {margin}")
            finding.check(len(late) == 3 and max(late, default=0) <= LATE_LIMIT, f"{window}: late stops {late}")
            figures[window] = {"live": summary, "stop_late_ms": ms_stats(late),
                               "stop_after_earliest_deadline_ms": ms_stats(margin)}
            outcomes.append(f"{window}: {live_outcome(summary)}"
                            + (" (not asserted)" if not privileged and window == "200ms" else "")
                            + f", {len(late)}/3 stops in time")
    # the daemon's own words when it may not raise a priority (daemon/realtime.py)
    warned = "without real-time priority" in texts[0], re.search(r"\bkeeps?\b[^\n]*\bnice\b", texts[0]) is not None
    if privileged:
        finding.check(not any(warned), "the daemon could not raise its priorities as root")
    else:
        finding.check(all(warned), "the daemon did not say it runs without its priorities")
    finding.finish(
        2, "; ".join(outcomes),
        "; ".join(f"{w}: {live_figure(f['live'])}, stop off - (send + W) {show(f['stop_after_earliest_deadline_ms'])}"
                  " ms" for w, f in figures.items()),
        priorities_refused_warning=list(warned), **figures,
    )






def test_a_host_that_reconnects_often_is_not_locked_out(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """One host runs 100 short client programs in a row (each its own connection, one session, closed again): at
    most one of them is connected at any time, so each must be served."""
    finding = Finding(request, "connection-churn", "connection churn: 100 short-lived clients of one host in a row")
    refused: list[str] = []
    with emulator() as emu, daemon(tmp_path, rover_yaml(emu.port, window="2s", motors=1)) as rover:
        started = time.monotonic()
        for i in range(100):
            client = Client(rover.port)
            try:
                client.start()
            except grpc.RpcError as exc:
                refused.append(f"#{i}: {exc.code().name} {exc.details()}")
            finally:
                client.close()
        took = time.monotonic() - started
    finding.check(not refused, f"{len(refused)} of 100 refused, first {refused[:1]}")
    finding.finish(100, f"{100 - len(refused)}/100 served" + (f"; refused from #{refused[0].split(':')[0][1:]} on: "
                   f"{refused[0].split(': ', 1)[1]}" if refused else ""), f"100 clients in {1000 * took:.0f} ms",
                   refused=len(refused), first_refused=refused[:1])
