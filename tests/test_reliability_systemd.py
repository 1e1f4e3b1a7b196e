"""Issue 9 under the shipped unit in a real (throwaway) systemd: CPU starvation with the unit's Nice=-10,
CPUWeight= and LimitRTPRIO=, and journald frozen (SIGSTOP) while the daemon logs. The daemon's own death (SIGKILL ->
ExecStopPost safe-stop) and hang (watchdog) are proved by tests/test_systemd.py, linked from docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import signal
import time

import grpc
import pytest
from rover_safety.api import robot_pb2, safety_pb2

from tests.support.faults import (
    ClientProc,
    Finding,
    busy_cpus,
    deadline_of,
    first_off,
    ms_stats,
    pwm_pin,
    rover_yaml,
    run_sessions,
    sessions_summary,
    show,
)
from tests.support.grpc_client import Client
from tests.support.systemd_rover import Rover, shipped_unit, systemd_test

pytestmark = [pytest.mark.timeout(180), systemd_test]

UNIT = "rover-safety.service"


def start_rover(rover: Rover, window: str, **limits: int) -> None:
    """The shipped unit on a config of two dir+pwm motors (m0, m1) on the rover's emulator and port."""
    rover.write_config(rover_yaml(rover.emulator.port, window=window, bind=f"127.0.0.1:{rover.port}", motors=2,
                                  limits=limits or None))
    rover.systemd.install_unit(UNIT, shipped_unit(rover.code.executable))
    rover.systemd.start(UNIT)


def test_unit_under_cpu_starvation(request: pytest.FixtureRequest, rover: Rover) -> None:
    """4 spinning processes at nice 0 on the host, the daemon under its unit (Nice=-10, CPUWeight=1000, real-time
    deadline threads): 20 sessions at 200 ms see no false expiry; clients killed mid-drive stop on time."""
    finding = Finding(request, "cpu-starvation-unit", "CPU starvation at nice 0, daemon under the shipped unit")
    window, seconds = 0.2, 6.0
    start_rover(rover, "200ms")
    address = f"127.0.0.1:{rover.port}"
    late: list[float] = []
    margin: list[float] = []
    live = run_sessions(address, 20, seconds, window / 5, nice=-15)
    drivers = [ClientProc(address, "m0", interval=window / 5) for _ in range(3)]
    try:
        for d in drivers:
            d.ready()
        time.sleep(2.5)
        with busy_cpus(4, seconds + 30):
            for d in drivers:
                d.go()
                d.wait_count(lambda e: e["ev"] == "ok" and e["what"] == "hb", 3, 10, "heartbeats")
                time.sleep(0.013)
                killed = d.signal(signal.SIGKILL)
                d.proc.wait(5)
                drive = d.wait_for(lambda e: e["ev"] == "ok" and e["what"] == "drive", 1, "drive")
                off = first_off(rover.emulator, pwm_pin("m0"), drive["a"], window + 3)
                if finding.check(off is not None, "m0 did not stop after its client was killed"):
                    assert off is not None
                    bounds = deadline_of(d.calls(), killed, window)
                    late.append(off - bounds.hi)
                    margin.append(off - bounds.lo)
            summary = sessions_summary(live, seconds + 40)
    finally:
        for d in drivers:
            d.close()
        if live.poll() is None:
            live.kill()
            live.wait(10)
    nice = rover.show("Nice")
    not_realtime = [m for e in rover.journal(None) if "without real-time priority" in (m := str(e.get("MESSAGE")))]
    finding.check(summary["false_expiries"] == 0, f"{summary['false_expiries']} false expiries: {summary}")
    finding.check(all(m >= 0 for m in margin), f"a stop came before its deadline: {margin}")
    finding.check(len(late) == 3 and max(late, default=0) <= 0.1, f"late stops: {late}")
    rtt = summary["rtt_ms"]
    finding.finish(
        2, f"{summary['false_expiries']} false expiries of 20 live sessions at 200 ms; {len(late)}/3 stops in time "
           f"(unit Nice={nice}; deadline threads {'NOT ' if not_realtime else ''}SCHED_FIFO)",
        f"live heartbeat round trip p50 {rtt['p50']:.1f} / p99 {rtt['p99']:.1f} / max {rtt['max']:.1f} ms; stop "
        f"off - (send + W) {show(ms_stats(margin))} ms",
        live=summary, stop_late_ms=ms_stats(late), stop_after_earliest_deadline_ms=ms_stats(margin),
        realtime_refused=not_realtime[:1],
    )


def test_frozen_journald_never_delays_a_stop(request: pytest.FixtureRequest, rover: Rover) -> None:
    """journald frozen with SIGSTOP while the daemon logs (session starts and closes, each a journal entry): a
    motor whose session lapses still stops at its deadline; a live session keeps being answered."""
    finding = Finding(request, "journald-frozen", "journald frozen (SIGSTOP) under the unit")
    window = 2.0
    start_rover(rover, "2s", log_lines_per_second=10000)
    systemd = rover.systemd
    journald = int(systemd.show("systemd-journald.service", "MainPID"))
    assert journald > 0
    live, mover, filler = Client(rover.port), Client(rover.port), Client(rover.port)
    rtts: list[float] = []
    failures: list[str] = []
    lines = 0
    try:
        live.start()
        mover.start()
        systemd.run("kill", "-STOP", str(journald))
        try:
            sent = time.monotonic()
            mover.set_power("m0", 0.5)
            answered = time.monotonic()
            while time.monotonic() < answered + 1.0:  # log as fast as the daemon lets us
                try:
                    sid = filler.robot.StartSession(robot_pb2.StartSessionRequest(), timeout=0.3).id
                    filler.safety.CloseSession(safety_pb2.CloseSessionRequest(id=sid), timeout=0.3)
                    lines += 2
                except grpc.RpcError:
                    break
            while time.monotonic() < answered + window + 0.5:
                t = time.monotonic()
                try:
                    live.robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=live.sid), timeout=1)
                    rtts.append(time.monotonic() - t)
                except grpc.RpcError as exc:
                    failures.append(str(exc.code()))
                time.sleep(max(0.0, t + window / 5 - time.monotonic()))
            off = first_off(rover.emulator, pwm_pin("m0"), answered, 3)
        finally:
            systemd.run("kill", "-CONT", str(journald))
    finally:
        for c in (live, mover, filler):
            with contextlib.suppress(Exception):
                c.close()
    late = (off or 0) - (answered + window)
    deadline = time.monotonic() + 5  # a watchdog kill shows as a restart a moment later
    while (restarts := rover.show("NRestarts")) == "0" and rover.show("Result") == "success" \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    result = rover.show("Result")
    watchdog = restarts != "0" or result == "watchdog"
    finding.check(not watchdog, f"the daemon was restarted {restarts} times (last result: {result}): frozen "
                                   "with journald, killed by the watchdog, outputs turned off by safe-stop")
    finding.check(off is not None and (off >= sent + window or watchdog), f"m0 stopped early or never: {off}")
    finding.check(late <= 0.1, f"m0 stopped {1000 * late:.1f} ms after its deadline")
    finding.check(not failures, f"the live session was not answered while journald was frozen: {failures[:4]} "
                                f"({len(failures)} of {len(failures) + len(rtts)}; {lines} lines logged before)")
    finding.finish(
        1, f"stop {'in bounds' if -0.01 < late <= 0.005 else 'late' if late > 0 else 'before the deadline'}"
           f"{' (by the watchdog: the whole daemon froze; safe-stop, restart)' if watchdog else ''}; live "
           f"session: {len(rtts)} heartbeats answered, {len(failures)} failed; {lines} log lines sent before",
        f"off - (answer + W) {1000 * late:.1f} ms; live round trip {show(ms_stats(rtts))} ms",
        late_ms=round(1000 * late, 2), live_rtt_ms=ms_stats(rtts), live_failures=len(failures), lines=lines,
        restarts=restarts, result=result,
    )
