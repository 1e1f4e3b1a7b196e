"""The client's sessions against a fake server: fixed-rate heartbeats on their own path, expiry, resume, retry,
the liveness timeout, one heartbeat loop per client, and sessions off when the server has none."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from rover_safety.client import SessionExpired, SessionsUnsupported, connect
from rover_safety.client.connection import DEFAULT_WINDOW
from rover_safety.client.heartbeats import THREAD_NAME

from tests.support.fake_server import PERMISSIVE_KEEPALIVE, FakeServer
from tests.support.waiting import wait_until

WINDOW = 0.2
INTERVAL = WINDOW / 5


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(window=WINDOW) as srv:
        yield srv


def heartbeat_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == THREAD_NAME)


def beat_times(server: FakeServer, sid: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
    return [r.at for r in server.heartbeats(sid) if since <= r.at <= until]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_heartbeats_run_at_a_fixed_rate_of_window_over_five(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client:
        client.motor("left").set_power(0.5)
        sid = client.session_id
        assert sid
        wait_until(lambda: len(server.heartbeats(sid)) >= 51, timeout=10, what="51 heartbeats")
        times = beat_times(server, sid)[:51]
    intervals = gaps(times)
    mean = statistics.fmean(intervals)
    # Deviation of each beat from the ideal fixed-rate schedule anchored at the first beat: each beat belongs to the
    # slot nearest it (a beat the machine delayed past its slot's successor is skipped, never sent in a burst).
    slots = [round((t - times[0]) / INTERVAL) for t in times]
    assert len(set(slots)) == len(slots), f"two beats in one slot (a burst): {slots}"
    assert slots[-1] - (len(slots) - 1) <= 2, f"{slots[-1] - len(slots) + 1} slots skipped: {slots}"
    deviation = [t - (times[0] + k * INTERVAL) for k, t in zip(slots, times, strict=True)]
    offset = statistics.median(deviation)
    jitter = sorted(abs(d - offset) for d in deviation)
    p99 = jitter[int(0.99 * (len(jitter) - 1))]
    drift = statistics.median(deviation[-10:]) - statistics.median(deviation[:10])
    print(f"\nheartbeats over {len(times)} beats: mean interval {mean * 1000:.3f} ms "
          f"(min {min(intervals) * 1000:.2f}, max {max(intervals) * 1000:.2f}), drift over the run "
          f"{drift * 1000:+.3f} ms, jitter p50 {statistics.median(jitter) * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms")
    assert max(intervals) < WINDOW, f"a gap of {max(intervals) * 1000:.1f} ms: the session would have lapsed"
    assert abs(mean * (len(times) - 1) / slots[-1] - INTERVAL) < 0.002, f"mean interval {mean * 1000:.2f} ms"
    # The figures (printed above) are typically well under a millisecond; the bounds only catch a broken schedule:
    # a drift of half a slot over the run, or beats a whole interval off their slots.
    assert abs(drift) < INTERVAL / 2, f"the schedule drifted {drift * 1000:.2f} ms over 50 beats"
    assert p99 < INTERVAL, f"p99 jitter {p99 * 1000:.2f} ms"


def test_a_blocked_command_does_not_delay_heartbeats(server: FakeServer) -> None:
    server.delay("MotorService/IsMoving", 0.6)  # a command that hangs on the daemon's side
    with connect(server.address, tls=False) as client:
        left = client.motor("left")
        left.set_power(0.2)
        sid = client.session_id
        assert sid
        slow = threading.Thread(target=lambda: [left.is_moving() for _ in range(2)])
        start = time.monotonic()
        slow.start()
        left.go_for(rpm=60, revolutions=0.6)  # a timed move blocking this thread for 0.6 s
        slow.join()
        end = time.monotonic()
    times = beat_times(server, sid, start, end)
    worst = max(gaps(times))
    print(f"\nduring {end - start:.2f} s of blocked calls: {len(times)} heartbeats, largest gap {worst * 1000:.1f} ms")
    assert end - start > 0.55
    assert len(times) >= (end - start) / INTERVAL - 3
    assert worst < INTERVAL + 0.06  # generous: what matters is staying far inside the 200 ms window


def test_heartbeats_have_a_connection_of_their_own_so_long_calls_cannot_queue_them() -> None:
    """The daemon allows 4 streams per connection (daemon/wire STREAMS_PER_CONNECTION): six calls that hang must
    not leave the heartbeats waiting for a free stream behind them: the heartbeat thread's channel has a subchannel
    pool of its own, so it never shares the command channel's connection, whatever the two channels' options."""
    streams = [*PERMISSIVE_KEEPALIVE, ("grpc.max_concurrent_streams", 4)]
    with FakeServer(window=DEFAULT_WINDOW, options=streams) as server:
        server.delay("MotorService/IsMoving", 1.0)
        with connect(server.address, tls=False) as client:
            left = client.motor("left")
            left.set_power(0.2)
            sid = client.session_id
            assert sid
            slow = [threading.Thread(target=left.is_moving) for _ in range(6)]
            start = time.monotonic()
            for t in slow:
                t.start()
            for t in slow:
                t.join()
            end = time.monotonic()
        times = beat_times(server, sid, start, end)
    worst = max(gaps(times))
    print(f"\nsix hung calls on 4 streams for {end - start:.2f} s: {len(times)} heartbeats, largest gap "
          f"{worst * 1000:.1f} ms")
    assert end - start > 1.9  # the calls did queue for streams: two rounds of 1 s
    assert worst < DEFAULT_WINDOW / 5 + 0.06


def test_slow_heartbeats_skip_missed_slots_instead_of_bursting(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client:
        client.motor("left").set_power(0.2)
        sid = client.session_id
        assert sid
        time.sleep(0.1)
        server.delay("RobotService/SendSessionHeartbeat", 0.1)  # each beat outlives its 40 ms deadline
        slow_from = time.monotonic()
        time.sleep(0.4)
        server.delay("RobotService/SendSessionHeartbeat", 0.0)
        fast_from = time.monotonic()
        time.sleep(0.4)
        fast_to = time.monotonic()
    slow = beat_times(server, sid, slow_from, fast_from)
    fast = beat_times(server, sid, fast_from, fast_to)
    print(f"\nslow daemon: {len(slow)} beats in 0.4 s; then {len(fast)} in 0.4 s, gaps (ms) "
          f"{[round(g * 1000) for g in gaps(fast)]}")
    assert len(slow) <= 0.4 / INTERVAL + 2  # never more than one beat in flight, one per slot
    assert len(fast) <= 0.4 / INTERVAL + 2  # no burst to catch up
    assert sum(g < INTERVAL / 2 for g in gaps(fast)) <= 2  # a burst to catch up would show many short gaps


def test_expiry_raises_then_the_next_call_starts_one_new_session(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client:
        left = client.motor("left")
        left.set_power(0.3)
        first = client.session_id
        assert first and heartbeat_threads() == 1
        server.expire(first)
        with pytest.raises(SessionExpired) as info:
            left.set_power(0.3)
        assert "stopped" in str(info.value) and isinstance(info.value, SessionExpired)
        assert client.session_id is None
        left.set_power(0.4)
        second = client.session_id
        assert second and second != first
        starts = server.calls("RobotService/StartSession")
        assert [r.request.resume for r in starts] == ["", ""]
        time.sleep(0.5)
        t0 = time.monotonic()
        time.sleep(0.4)
        t1 = time.monotonic()
        assert heartbeat_threads() == 1
        new = beat_times(server, second, t0, t1)
        old_after = beat_times(server, first, t0 - 0.3, t1)
    print(f"\nafter expiry: {len(new)} heartbeats in {t1 - t0:.2f} s for the new session, {len(old_after)} for the old")
    assert old_after == []
    assert len(new) <= 12  # one loop at 40 ms: 10; two loops would send about 20
    # ... and that one loop keeps the new session alive: no gap (nor the span before the first beat or after the
    # last) as long as the window
    assert len(new) >= 2 and max(gaps([t0, *new, t1])) < WINDOW, f"heartbeats of the new session: {new}"
    assert heartbeat_threads() == 0


def test_expiry_found_by_a_heartbeat_is_raised_by_the_next_call(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client:
        left = client.motor("left")
        left.set_power(0.3)
        first = client.session_id
        assert first
        server.expire(first)
        wait_until(lambda: client.session_id is None, timeout=2, what="the heartbeat loop to find the expiry")
        sent = len(server.calls("MotorService/SetPower"))
        with pytest.raises(SessionExpired, match="heartbeat"):
            left.set_power(0.3)
        assert len(server.calls("MotorService/SetPower")) == sent  # raised at once: the program must know
        left.set_power(0.3)
        assert client.session_id not in (None, first)
        assert heartbeat_threads() == 1


def test_a_transient_failure_resumes_the_same_session(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client:
        left = client.motor("left")
        left.set_power(0.3)
        sid = client.session_id
        assert sid
        server.fail("RobotService/SendSessionHeartbeat", grpc.StatusCode.UNAVAILABLE, times=2)
        wait_until(lambda: any(r.request.resume == sid  # type: ignore[attr-defined]
                               for r in server.calls("RobotService/StartSession")),
                   timeout=2, what="StartSession(resume=<old id>)")
        resumed_at = max(r.at for r in server.calls("RobotService/StartSession"))
        wait_until(lambda: len(beat_times(server, sid, resumed_at)) >= 3, timeout=2, what="heartbeats to go on")
        assert client.session_id == sid
        left.set_power(0.1)
        assert server.calls("MotorService/SetPower")[-1].sid == sid
        assert len(server.session_ids()) == 1


def test_a_resume_that_finds_the_session_gone_is_reported(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client:
        left = client.motor("left")
        left.set_power(0.3)
        first = client.session_id
        assert first
        server.fail("RobotService/SendSessionHeartbeat", grpc.StatusCode.UNAVAILABLE, times=1)
        server.expire(first)  # the daemon lost it meanwhile (a restart)
        wait_until(lambda: client.session_id not in (None, first), timeout=2, what="the resume to give a new id")
        with pytest.raises(SessionExpired, match="transient"):
            left.set_power(0.3)
        left.set_power(0.3)
        assert server.calls("MotorService/SetPower")[-1].sid == client.session_id != first


def test_retry_on_expiry_retries_once_with_a_new_session(server: FakeServer) -> None:
    with connect(server.address, tls=False, retry_on_expiry=True) as client:
        left = client.motor("left")
        left.set_power(0.3)
        first = client.session_id
        assert first
        server.expire(first)
        left.set_power(0.6)  # no SessionExpired: retried with a new session
        second = client.session_id
        assert second and second != first
        last = server.calls("MotorService/SetPower")[-1]
        assert last.sid == second and last.request.power_pct == 0.6  # type: ignore[attr-defined]
        assert server.motors["left"] == 0.6
        assert heartbeat_threads() == 1


def test_the_liveness_timeout_stops_heartbeats_of_a_hung_program(server: FakeServer) -> None:
    with connect(server.address, tls=False, liveness_timeout=0.3) as client:
        left = client.motor("left")
        left.set_power(0.5)
        last_call = time.monotonic()
        sid = client.session_id
        assert sid
        time.sleep(1.0)  # the "control loop" hangs; the process lives on
        beats = beat_times(server, sid)
        print(f"\nlast heartbeat {(beats[-1] - last_call) * 1000:.0f} ms after the last call (liveness 300 ms)")
        # Heartbeats go on until the liveness timeout (one slot skipped by a stall allowed) and stop after it: the
        # last one comes less than a window after it, so the robot stops within liveness + 2 windows at worst.
        assert last_call + 0.3 - 2 * INTERVAL < beats[-1] < last_call + 0.3 + WINDOW
        assert server.live(sid, "127.0.0.1") is None  # the daemon's window lapsed: the robot stopped
        assert client.session_id is None
        with pytest.raises(SessionExpired, match="liveness_timeout"):
            left.set_power(0.5)
        left.set_power(0.5)
        assert client.session_id not in (None, sid)


def test_keepalive_and_a_call_in_progress_count_as_alive(server: FakeServer) -> None:
    with connect(server.address, tls=False, liveness_timeout=0.15) as client:
        left = client.motor("left")
        left.set_power(0.5)
        sid = client.session_id
        assert sid
        start = time.monotonic()
        for _ in range(8):
            time.sleep(0.05)
            client.keepalive()
        left.go_for(rpm=60, revolutions=0.5)  # 0.5 s in progress, longer than the liveness timeout
        end = time.monotonic()
        times = beat_times(server, sid, start, end)
        assert max(gaps([start, *times])) < WINDOW  # the bound that matters: the session never came near lapsing
        assert times[-1] > end - WINDOW  # and it was alive when the move ended
        time.sleep(0.5)
        assert client.session_id is None  # idle after the move: the session lapsed


def test_sessions_off_when_the_server_does_not_implement_them() -> None:
    with FakeServer(sessions=False) as server, connect(server.address, tls=False) as client:
        left = client.motor("left")
        with pytest.warns(SessionsUnsupported):
            left.set_power(0.5)
        left.set_power(0.2)
        assert [r.sid for r in server.calls("MotorService/SetPower")] == [None, None]
        assert len(server.calls("RobotService/StartSession")) == 1
        assert heartbeat_threads() == 0
