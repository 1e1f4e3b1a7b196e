"""Issue 9, measured from outside: clients that die, freeze or lose the network; the daemon's own exits; pigpiod and
the log going away; the wall clock jumping. Each test runs the daemon as a real process (`rover-safety serve`) on a
standalone pigpiod emulator, measures when the outputs went off in pigpiod's command log against the deadline the
client's own heartbeats set, records its figures (tests/support/faults.py -> build/reliability.json ->
docs/RELIABILITY.md) and asserts generous bounds.

Load faults (stalled streams, idle connections, floods, CPU starvation) are in test_reliability_load.py; the ones
under a real systemd in test_reliability_systemd.py.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from rover_safety.api import robot_pb2

from tests.support.faults import (
    EXPIRED,
    ClientProc,
    Finding,
    Netns,
    daemon,
    deadline_of,
    duty,
    emulator,
    first_off,
    ms_stats,
    netns_unavailable,
    off_times,
    pwm_pin,
    rover_yaml,
    show,
)
from tests.support.grpc_client import Client
from tests.support.pigpiod_emulator import Cmd, EmulatorClient

pytestmark = pytest.mark.timeout(150)

IN_BOUNDS = 0.005  # the bound: off within the window + 5 ms of the client's last heartbeat
LATE_LIMIT = 0.1  # what the tests assert (a shared, noisy 2-core machine); the figures say how close it really is
INTERVAL_OF = 5  # clients heartbeat every window / 5, as the Viam SDKs do


def target(port: int, host: str = "127.0.0.1") -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def stop_figure(late: list[float], margin: list[float]) -> str:
    """The figure of a set of stops: how long after the earliest possible deadline (the last answered heartbeat's
    send + window) each came, and the worst against the latest possible one (its answer + window)."""
    return (f"off - (last answered send + W): {show(ms_stats(margin))} ms; off - (its answer + W): max "
            f"{1000 * max(late, default=0):.1f} ms")


def stopped_at(emu: EmulatorClient, motor: str, since: float, timeout: float) -> float | None:
    return first_off(emu, pwm_pin(motor), since, timeout)


# ---- a client killed with SIGKILL ----------------------------------------------------------------------------------


def test_client_sigkill_stops_its_motor_at_the_deadline(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """50 clients (child processes) start a session, drive a motor, heartbeat every window/5 and are killed with
    SIGKILL at a random moment: each motor's PWM goes to 0 at the deadline, never before the last answered
    heartbeat's send + window, and within 5 ms of its answer + window."""
    finding = Finding(request, "client-sigkill", "client killed (SIGKILL) mid-drive")
    trials, window = 50, 0.2
    interval = window / INTERVAL_OF
    late: list[float] = []
    margin: list[float] = []
    problems: list[str] = []
    lock = threading.Lock()
    with emulator() as emu, daemon(tmp_path, rover_yaml(emu.port, window="200ms", motors=2)) as rover:
        address = target(rover.port)

        def worker(motor: str, count: int) -> None:
            rng = random.Random(motor)
            nxt = ClientProc(address, motor, interval=interval)
            for _ in range(count):
                client, nxt = nxt, ClientProc(address, motor, interval=interval)
                try:
                    client.ready().go()
                    heartbeats = rng.randint(2, 5)
                    client.wait_count(lambda e: e["ev"] == "ok" and e["what"] == "hb", heartbeats, 10, "heartbeats")
                    time.sleep(rng.uniform(0, interval))
                    killed = client.signal(signal.SIGKILL)
                    client.proc.wait(5)
                    bounds = deadline_of(client.calls(), killed, window)
                    driven = client.wait_for(lambda e: e["ev"] == "ok" and e["what"] == "drive", 1, "drive")
                    off = stopped_at(emu, motor, driven["a"], 3)
                    if off is None:
                        with lock:
                            problems.append(f"{motor}: no stop after the kill (off {off})")
                        continue
                    with lock:
                        late.append(off - bounds.hi)
                        margin.append(off - bounds.lo)
                finally:
                    client.close()
            nxt.close()

        def guarded(motor: str, count: int) -> None:
            try:
                worker(motor, count)
            except Exception as exc:  # a thread's failure is the test's
                with lock:
                    problems.append(f"{motor}: {exc!r}")

        threads = [threading.Thread(target=guarded, args=(m, trials // 2)) for m in ("m0", "m1")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        expiries = [m for line in rover.expiries() if (m := EXPIRED.search(line))]
        daemon_latency = [float(m.group(3)) / 1000 for m in expiries]
    early = sum(1 for m in margin if m < 0)
    in_bounds = sum(1 for la, m in zip(late, margin, strict=True) if la <= IN_BOUNDS and m >= 0)
    finding.check(not problems, "; ".join(problems))
    finding.check(len(late) == trials, f"only {len(late)} of {trials} trials measured")
    finding.check(early == 0, f"{early} stops came before the deadline")
    finding.check(max(late, default=0) <= LATE_LIMIT,
                  f"a stop came {1000 * max(late, default=0):.1f} ms after the deadline")
    stats = ms_stats(late)
    finding.finish(
        len(late), f"{in_bounds}/{trials} off within window + 5 ms, {early} early",
        stop_figure(late, margin),
        late_ms=stats, after_earliest_deadline_ms=ms_stats(margin), daemon_reported_ms=ms_stats(daemon_latency),
        window_ms=1000 * window,
    )


# ---- a network partition: the daemon and the client in network namespaces of their own ---------------------------


@pytest.fixture
def netns() -> Iterator[Netns]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    namespaces = Netns()
    try:
        yield namespaces
    finally:
        namespaces.close()


def recovered(client: ClientProc, after: float, old_sid: str, timeout: float) -> tuple[float, str]:
    """After `after`: the client's old id was refused (SESSION_EXPIRED), it started a new session and drove again.
    Returns when it drove again and the new id."""
    refused = client.wait_for(lambda e: e["ev"] == "err" and e["what"] == "hb" and e["a"] >= after
                              and e["code"] == "INVALID_ARGUMENT", timeout, "refusal of the old id")
    started = client.wait_for(lambda e: e["ev"] == "ok" and e["what"] == "start" and e["s"] >= refused["a"],
                              timeout, "new session")
    driven = client.wait_for(lambda e: e["ev"] == "ok" and e["what"] == "drive" and e["s"] >= started["a"],
                             timeout, "drive with the new session")
    assert started["sid"] != old_sid
    return float(driven["a"]), str(started["sid"])


def current_session(client: ClientProc) -> tuple[str, float]:
    """The client's live session id and when it last drove with it."""
    driven = [e for e in client.events if e["ev"] == "ok" and e["what"] == "drive"][-1]
    return str(driven["sid"]), float(driven["a"])


def test_network_partition_stops_at_the_deadline_and_the_old_id_is_refused(
        request: pytest.FixtureRequest, tmp_path: Path, netns: Netns) -> None:
    """The daemon in one network namespace, four clients in another (each driving its own motor), joined by a veth
    link that is set down mid-drive, five times: every motor stops at its session's deadline; when the link comes
    back each client's next heartbeat is refused (SESSION_EXPIRED), it starts a new session and drives again."""
    finding = Finding(request, "network-partition", "network partition (veth down between netns)")
    window, rounds, motors = 0.2, 5, 4
    interval = window / INTERVAL_OF
    late: list[float] = []
    margin: list[float] = []
    recovery: list[float] = []
    refused_ok = 0
    text = rover_yaml(0, window="200ms", bind=f"{netns.daemon_host}:0", motors=motors, insecure=True)
    with emulator(host=netns.gpio_host) as emu:
        text = text.replace("port: 0}", f"port: {emu.port}}}").replace("host: 127.0.0.1", f"host: {netns.gpio_host}")
        with daemon(tmp_path, text, prefix=netns.exec_in(netns.daemon_ns)) as rover:
            address = target(rover.port, netns.daemon_host)
            clients = [ClientProc(address, f"m{i}", prefix=netns.exec_in(netns.client_ns), interval=interval,
                                  timeout=window, recover=True) for i in range(motors)]
            try:
                for c in clients:
                    c.ready().go()
                rng = random.Random(9)
                for _ in range(rounds):
                    for c in clients:
                        c.wait_for(lambda e: e["ev"] == "ok" and e["what"] == "drive", 10, "drive")
                    sessions = {c.motor: current_session(c) for c in clients}
                    for c in clients:
                        since = sessions[c.motor][1]
                        c.wait_count(lambda e, since=since: e["ev"] == "ok" and e["what"] == "hb" and e["s"] > since,
                                     3, 10, "heartbeats")
                    time.sleep(rng.uniform(0, interval))
                    down = netns.link(up=False)
                    time.sleep(window + 0.3)
                    for c in clients:
                        off = stopped_at(emu, c.motor, sessions[c.motor][1], 2)
                        if not finding.check(off is not None, f"{c.motor} did not stop during the partition"):
                            continue
                        assert off is not None
                        bounds = deadline_of(c.calls(), down, window)
                        late.append(off - bounds.hi)
                        margin.append(off - bounds.lo)
                    up = netns.link(up=True)
                    for c in clients:
                        try:
                            again, _ = recovered(c, up, sessions[c.motor][0], 15)
                        except AssertionError as exc:
                            finding.check(False, str(exc))
                            continue
                        refused_ok += 1
                        recovery.append(again - up)
                        pin = pwm_pin(c.motor)
                        finding.check(emu.wait_for(lambda pin=pin: duty(emu, pin) > 0, 2),  # type: ignore[misc]
                                      f"{c.motor} did not drive again")
            finally:
                for c in clients:
                    c.close()
    trials = rounds * motors
    early = sum(1 for m in margin if m < 0)
    in_bounds = sum(1 for la, m in zip(late, margin, strict=True) if la <= IN_BOUNDS and m >= 0)
    finding.check(len(late) == trials, f"only {len(late)} of {trials} stops measured")
    finding.check(early == 0, f"{early} stops came before the deadline")
    finding.check(max(late, default=0) <= LATE_LIMIT, f"a stop came {1000 * max(late, default=0):.1f} ms late")
    finding.check(refused_ok == trials, f"the old id was refused and a new session driven in {refused_ok}/{trials}")
    stats = ms_stats(late)
    finding.finish(
        trials, f"{in_bounds}/{trials} off within window + 5 ms, {early} early; old id refused {refused_ok}/{trials}",
        stop_figure(late, margin) + f"; link up -> driving again {show(ms_stats(recovery))} ms",
        late_ms=stats, after_earliest_deadline_ms=ms_stats(margin), recovery_ms=ms_stats(recovery),
        window_ms=1000 * window,
    )


# ---- a client frozen with SIGSTOP, then continued -------------------------------------------------------------


def test_client_sigstop_stops_its_motor_and_after_sigcont_the_old_id_is_refused(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    finding = Finding(request, "client-sigstop", "client frozen (SIGSTOP, then SIGCONT)")
    window, trials = 0.2, 6
    interval = window / INTERVAL_OF
    late: list[float] = []
    margin: list[float] = []
    recovery: list[float] = []
    refused_ok = 0
    with emulator() as emu, daemon(tmp_path, rover_yaml(emu.port, window="200ms", motors=1)) as rover:
        client = ClientProc(target(rover.port), "m0", interval=interval, timeout=window, recover=True)
        try:
            client.ready().go()
            rng = random.Random(19)
            for _ in range(trials):
                client.wait_for(lambda e: e["ev"] == "ok" and e["what"] == "drive", 10, "drive")
                sid, since = current_session(client)
                client.wait_count(lambda e, since=since: e["ev"] == "ok" and e["what"] == "hb" and e["s"] > since,
                                  3, 10, "heartbeats")
                time.sleep(rng.uniform(0, interval))
                frozen = client.signal(signal.SIGSTOP)
                time.sleep(window + rng.uniform(0.1, 0.5))
                off = stopped_at(emu, "m0", since, 2)
                if finding.check(off is not None, "m0 did not stop while its client was frozen"):
                    assert off is not None
                    bounds = deadline_of(client.calls(), frozen, window)
                    late.append(off - bounds.hi)
                    margin.append(off - bounds.lo)
                resumed = client.signal(signal.SIGCONT)
                try:
                    again, _ = recovered(client, resumed, sid, 10)
                except AssertionError as exc:
                    finding.check(False, str(exc))
                    continue
                refused_ok += 1
                recovery.append(again - resumed)
        finally:
            client.close()
    early = sum(1 for m in margin if m < 0)
    in_bounds = sum(1 for la, m in zip(late, margin, strict=True) if la <= IN_BOUNDS and m >= 0)
    finding.check(early == 0, f"{early} stops came before the deadline")
    finding.check(len(late) == trials and max(late, default=0) <= LATE_LIMIT, f"late stops: {late}")
    finding.check(refused_ok == trials, f"old id refused and driving again in {refused_ok}/{trials}")
    stats = ms_stats(late)
    finding.finish(
        trials, f"{in_bounds}/{trials} off within window + 5 ms, {early} early; old id refused {refused_ok}/{trials}",
        stop_figure(late, margin) + f"; SIGCONT -> driving again {show(ms_stats(recovery))} ms",
        late_ms=stats, after_earliest_deadline_ms=ms_stats(margin), recovery_ms=ms_stats(recovery),
        window_ms=1000 * window,
    )


# ---- the daemon stopped (SIGTERM) and started again mid-drive ---------------------------------------------------


def test_daemon_sigterm_mid_drive_turns_outputs_off_before_exit_and_a_new_one_starts_off(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    finding = Finding(request, "daemon-sigterm-restart", "daemon SIGTERM mid-drive, then restart")
    trials = 5
    to_off: list[float] = []
    to_exit: list[float] = []
    off_before_exit = 0
    start_clean = 0
    with emulator() as emu:
        config = rover_yaml(emu.port, window="2s", motors=2)
        old_sid = ""
        for trial in range(trials):
            began = time.monotonic()
            with daemon(tmp_path, config, name=f"rover{trial}.yaml") as rover:
                log = emu.log(began)
                turned_on = [c for c in log if c.cmd == Cmd.PWM and c.p2 > 0]  # PWM above 0 before any client drove
                pins_off = all(duty(emu, pwm_pin(m)) == 0 for m in ("m0", "m1"))
                if finding.check(not turned_on and pins_off, f"trial {trial}: a new daemon started with outputs on "
                                                             f"({turned_on}, off now: {pins_off})"):
                    start_clean += 1
                client = Client(rover.port)
                try:
                    if old_sid:  # the previous daemon's session means nothing to this one
                        client.sid = old_sid
                        with pytest.raises(grpc.RpcError) as refused:
                            client.heartbeat()
                        finding.check(refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT,
                                      f"old id: {refused.value.code()}")
                    old_sid = client.start()
                    client.set_power("m0", 0.6)
                    client.set_power("m1", -0.4)
                    finding.check(duty(emu, pwm_pin("m0")) > 0 and duty(emu, pwm_pin("m1")) > 0, "not driving")
                    time.sleep(random.uniform(0.05, 0.3))
                    sent = rover.signal(signal.SIGTERM)
                    code = rover.wait(10)
                finally:
                    client.close()
                finding.check(code == 0, f"exit {code} after SIGTERM:\n{rover.text[-1500:]}")
                assert rover.ended_at is not None
                offs = [off_times(emu, pwm_pin(m), sent) for m in ("m0", "m1")]
                if finding.check(all(offs), f"trial {trial}: outputs not driven off after SIGTERM"):
                    last = max(o[0] for o in offs)
                    to_off.append(last - sent)
                    to_exit.append(rover.ended_at - sent)
                    closed = [c.t for c in emu.log(sent) if c.cmd == Cmd.NC]  # NC: the daemon's goodbye to pigpiod
                    if finding.check(last < rover.ended_at and (not closed or last < closed[0]),
                                     f"trial {trial}: off at {last}, NC {closed[:1]}, exit {rover.ended_at}"):
                        off_before_exit += 1
        finding.check(all(duty(emu, pwm_pin(m)) == 0 for m in ("m0", "m1")), "outputs on after the last exit")
    finding.finish(
        trials, f"{off_before_exit}/{trials} outputs off before exit; {start_clean}/{trials} restarts with outputs off;"
        " old id refused by the new daemon",
        f"SIGTERM -> outputs off {show(ms_stats(to_off))} ms; -> exit {show(ms_stats(to_exit))} ms",
        sigterm_to_off_ms=ms_stats(to_off), sigterm_to_exit_ms=ms_stats(to_exit),
    )


# ---- pigpiod stopping and coming back mid-drive ----------------------------------------------------------------


def test_pigpiod_dies_mid_drive_the_daemon_exits_and_a_new_one_starts_with_outputs_off(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """pigpiod dies while both motors run (the emulator keeps its pins, as a real pigpiod killed with SIGKILL keeps
    its DMA PWM running): the daemon notices at once, refuses motion and exits 1 (under the unit, systemd then runs
    safe-stop and restarts it); once pigpiod is back, a new daemon starts with every output off."""
    finding = Finding(request, "pigpiod-restart", "pigpiod dies and comes back mid-drive")
    trials = 3
    noticed: list[float] = []
    exited: list[float] = []
    back_off: list[float] = []
    with emulator() as emu:
        config = rover_yaml(emu.port, window="500ms", motors=2)
        for trial in range(trials):
            with daemon(tmp_path, config, name=f"rover{trial}.yaml") as rover:
                client = Client(rover.port)
                try:
                    client.start()
                    client.set_power("m0", 0.6)
                    client.set_power("m1", 0.4)
                    died = time.monotonic()
                    emu.stop_pigpiod()
                    seen, _ = rover.wait_line(r"CRITICAL .*lost the GPIO backend", timeout=5)
                    code = rover.wait(10)
                finally:
                    client.close()
                assert rover.ended_at is not None
                noticed.append(seen - died)
                exited.append(rover.ended_at - died)
                finding.check(code == 1, f"exit {code} after pigpiod died")
            time.sleep(0.2)
            emu.start_pigpiod()
            back = time.monotonic()
            with daemon(tmp_path, config, name=f"again{trial}.yaml") as again:
                offs = [off_times(emu, pwm_pin(m), back) for m in ("m0", "m1")]
                if finding.check(all(offs) and all(duty(emu, pwm_pin(m)) == 0 for m in ("m0", "m1")),
                                 f"trial {trial}: the new daemon did not turn the outputs off"):
                    back_off.append(max(o[0] for o in offs) - back)
                again.signal(signal.SIGTERM)
                again.wait(10)
    finding.check(max(noticed, default=9) < 0.5, f"noticed after {noticed}")
    finding.finish(
        trials, f"{len(back_off)}/{trials}: exit 1 at once, new daemon starts with outputs off",
        f"death -> noticed {show(ms_stats(noticed))} ms; -> exit {show(ms_stats(exited))} ms; pigpiod back -> "
        f"outputs off (new daemon) {show(ms_stats(back_off))} ms",
        noticed_ms=ms_stats(noticed), exit_ms=ms_stats(exited), back_to_off_ms=ms_stats(back_off),
        also="tests/test_hil.py::test_losing_pigpiod_is_noticed_at_once_and_refuses_motion, "
             "test_a_hung_pigpiod_is_noticed_within_one_window; "
             "tests/test_exit_paths.py::test_losing_pigpiod_exits_non_zero_without_burning_cpu",
    )


# ---- the log: a pipe nobody reads ----------------------------------------------------------------------------


def test_a_log_nobody_reads_never_delays_a_stop(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The daemon's stderr is a 4 KiB pipe that nobody reads after start-up (a stuck journald, a terminal paused
    with ^S): once it is full, every write to the log blocks. A session that drove a motor stops at its deadline
    regardless; and a live session on its own connection keeps being answered (0 false expiries)."""
    finding = Finding(request, "log-blocked", "log blocked (stderr a full pipe nobody reads)")
    window = 2.0
    limits = {"log_lines_per_second": 10000}
    with emulator() as emu, daemon(tmp_path, rover_yaml(emu.port, window="2s", motors=2, limits=limits),
                                   read_stderr=False, pipe_size=4096) as rover:
        live = Client(rover.port)
        mover = Client(rover.port)
        filler = Client(rover.port)
        try:
            live.start()
            mover.start()
            sent = time.monotonic()
            mover.set_power("m0", 0.5)
            answered = time.monotonic()
            # Fill the log: each session start is a line (well over 4 KiB in all).
            starts_ok = 0
            blocked = False
            for _ in range(200):
                try:
                    filler.robot.StartSession(robot_pb2.StartSessionRequest(), timeout=0.3)
                    starts_ok += 1
                except grpc.RpcError:
                    blocked = True
                    break
            # The live session heartbeats every window/5 on its own channel while the log is blocked.
            rtts: list[float] = []
            refused: list[str] = []
            while time.monotonic() < answered + window + 0.5:
                t = time.monotonic()
                try:
                    live.robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=live.sid), timeout=1)
                    rtts.append(time.monotonic() - t)
                except grpc.RpcError as exc:
                    refused.append(str(exc.code()))
                time.sleep(max(0.0, t + window / INTERVAL_OF - time.monotonic()))
            off = stopped_at(emu, "m0", answered, 3)
            alive = rover.alive()
        finally:
            for c in (live, mover, filler):
                c.close()
    finding.check(off is not None, "m0 never stopped while the log was blocked")
    late = (off or 0) - (answered + window)
    early = (off or 0) < sent + window
    finding.check(not early and late <= LATE_LIMIT, f"m0 went off {1000 * late:.1f} ms after its deadline")
    finding.check(alive, "the daemon died with its log blocked")
    finding.check(not refused, f"a live session was not answered while the log was blocked: {refused[:5]} "
                               f"({len(refused)} of {len(refused) + len(rtts)} heartbeats; log full after "
                               f"{starts_ok} session starts: {blocked})")
    finding.finish(
        1, f"stop {'in bounds' if not early and late <= IN_BOUNDS else 'LATE' if late > 0 else 'EARLY'}; "
           f"live session: {len(rtts)} heartbeats answered, {len(refused)} failed",
        f"off - (answer + W) {1000 * late:.1f} ms; live heartbeat round trip {show(ms_stats(rtts))} ms",
        late_ms=round(1000 * late, 2), live_rtt_ms=ms_stats(rtts), live_failures=len(refused),
        starts_before_blocked=starts_ok,
    )


# ---- the wall clock jumps (the daemon runs on the monotonic clock only) ------------------------------------------

LIBFAKETIME = next((p for p in (Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"),
                                Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"),
                                Path("/usr/lib/arm-linux-gnueabihf/faketime/libfaketimeMT.so.1")) if p.exists()),
                   None)


@pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime is not installed (Debian package faketime)")
def test_wall_clock_jumps_do_not_move_expiries(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The daemon under libfaketime with the monotonic clock left alone and a wall clock that jumps by hours,
    forwards and back, during each session: every stop lands at its deadline, a live session never expires."""
    finding = Finding(request, "wall-clock-jumps", "wall clock jumps by hours (libfaketime)")
    assert LIBFAKETIME is not None
    stamp = tmp_path / "faketime"
    stamp.write_text("+0\n")
    env = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           "FAKETIME_TIMESTAMP_FILE": str(stamp), "FAKETIME_CACHE_DURATION": "1"}
    window, trials = 0.3, 8
    jumps = ["+3h", "-7h", "+26h", "-30d", "+400d", "-2h", "+11h", "+0"]
    late: list[float] = []
    margin: list[float] = []
    with emulator() as emu, daemon(tmp_path, rover_yaml(emu.port, window="300ms", motors=2), env=env) as rover:
        live = Client(rover.port)
        live.start()
        from tests.support.grpc_client import Heartbeats

        beats = Heartbeats(live, window / INTERVAL_OF)
        seen_clock: list[str] = []
        try:
            client = Client(rover.port)
            try:
                for trial in range(trials):
                    client.start()
                    client.set_power("m0", 0.5)
                    since = time.monotonic()
                    for _ in range(3):
                        time.sleep(window / INTERVAL_OF)
                        sent = time.monotonic()
                        client.heartbeat()
                        answered = time.monotonic()
                    stamp.write_text(jumps[trial] + "\n")  # the wall clock jumps before the deadline
                    off = stopped_at(emu, "m0", since, 3)
                    if finding.check(off is not None, f"trial {trial}: no stop"):
                        assert off is not None
                        late.append(off - (answered + window))
                        margin.append(off - (sent + window))
                    seen_clock.append(rover.lines[-1][1][:8] if rover.lines else "")
            finally:
                client.close()
        finally:
            beats.stop()
            live.close()
        clocks = {line[:8] for _, line in rover.lines}
        expired = [line for line in rover.expiries() if live.sid in line]
    early = sum(1 for m in margin if m < 0)
    in_bounds = sum(1 for la, m in zip(late, margin, strict=True) if la <= IN_BOUNDS and m >= 0)
    finding.check(early == 0, f"{early} stops came before the deadline")
    finding.check(len(late) == trials and max(late, default=0) <= LATE_LIMIT, f"late: {late}")
    finding.check(not expired and not beats.errors, f"the live session expired: {expired} {beats.errors[:3]}")
    finding.check(len(clocks) > 3, f"the daemon's wall clock did not seem to jump: {sorted(clocks)}")
    finding.finish(
        trials, f"{in_bounds}/{trials} off within window + 5 ms, {early} early; live session: 0 false expiries"
        if not expired else f"live session expired {len(expired)} times",
        stop_figure(late, margin), late_ms=ms_stats(late), after_earliest_deadline_ms=ms_stats(margin),
        jumps=jumps, daemon_log_clock=seen_clock,
    )
