"""The client's API against a fake server: motor and base methods, viam-sid only on monitored calls, typed errors,
status and sessions, the event stream across a server restart, manual sessions, CloseSession on exit, asyncio."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from rover_safety.client import (
    RECONNECTED,
    RECONNECTING,
    BaseProperties,
    ClientError,
    Closed,
    Event,
    MotorProperties,
    NotFound,
    PowerState,
    Refused,
    ResourceName,
    Session,
    SessionExpired,
    Status,
    Timeout,
    Unavailable,
    Unsupported,
    aio,
    connect,
)
from rover_safety.client.calls import MONITORED

from tests.support.fake_server import FakeServer
from tests.support.net import free_port
from tests.support.waiting import wait_until


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(window=0.2) as srv:
        yield srv


def test_the_monitored_set_comes_from_the_descriptors() -> None:
    names = sorted(path.rsplit(".", 1)[-1] for path in MONITORED)
    assert names == ["BaseService/MoveStraight", "BaseService/SetPower", "BaseService/SetVelocity",
                     "BaseService/Spin", "MotorService/GoFor", "MotorService/GoTo", "MotorService/SetPower",
                     "MotorService/SetRPM"]


def test_motor_and_base_methods_mirror_the_wire_api(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client:
        assert ResourceName("rdk", "component", "base", "base") in client.resource_names()
        left, base = client.motor("left"), client.base("base")
        left.set_power(0.5)
        assert left.is_powered() == PowerState(True, 0.5)
        assert left.is_moving() is True
        left.set_rpm(60)
        left.go_for(rpm=600, revolutions=0.5)  # 50 ms
        assert left.get_properties() == MotorProperties(position_reporting=False)
        assert left.get_position() == 1.25
        left.stop(extra={"why": "test"})
        base.set_power(0.5, -0.25)
        base.set_velocity(200, 30)
        base.move_straight(10, 200)
        base.spin(9, 180)
        assert base.get_properties() == BaseProperties(0.26, 0.0, 0.22)
        base.stop()
        assert base.is_moving() is False
        client.stop_all()
        sid = client.session_id
    sent = {r.method: r for r in server.calls()}
    set_power = sent["BaseService/SetPower"].request
    assert (set_power.linear.y, set_power.angular.z) == (0.5, -0.25)  # type: ignore[attr-defined]
    velocity = sent["BaseService/SetVelocity"].request
    assert (velocity.linear.y, velocity.angular.z) == (200, 30)  # type: ignore[attr-defined]
    assert dict(sent["MotorService/Stop"].request.extra) == {"why": "test"}  # type: ignore[attr-defined]
    for record in server.calls():
        monitored = f"/viam.component.{record.method.split('Service')[0].lower()}.v1.{record.method}" in MONITORED
        assert record.sid == (sid if monitored else None), record.method
        assert len(record.values("viam-sid")) <= 1


def test_errors_are_typed(server: FakeServer) -> None:
    with connect(server.address, tls=False, call_timeout=0.3) as client:
        with pytest.raises(NotFound) as missing:
            client.motor("nope")
        assert isinstance(missing.value, LookupError) and "left, right" in str(missing.value)
        left = client.motor("left")
        with pytest.raises(Refused) as refused:
            left.set_power(2.0)
        assert isinstance(refused.value, ValueError)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "out of range" in refused.value.details
        with pytest.raises(Refused, match="encoder"):
            left.go_to(60, 3)
        server.fail("MotorService/IsMoving", grpc.StatusCode.UNAVAILABLE, "connection reset")
        with pytest.raises(Unavailable) as unavailable:
            left.is_moving()
        assert isinstance(unavailable.value, ConnectionError) and "daemon runs" in str(unavailable.value)
        server.delay("MotorService/IsPowered", 1.0)
        with pytest.raises(Timeout) as slow:
            left.is_powered()
        assert isinstance(slow.value, TimeoutError)
        server.delay("MotorService/IsPowered", 0.0)
        server.fail("MotorService/GetPosition", grpc.StatusCode.UNIMPLEMENTED)
        with pytest.raises(Unsupported):
            left.get_position()
        assert all(isinstance(e, ClientError) for e in (missing.value, refused.value, unavailable.value))
    with pytest.raises(Closed):
        left.is_moving()


def test_connecting_to_nothing_is_unavailable() -> None:
    start = time.monotonic()
    with pytest.raises(Unavailable, match="could not connect"):
        connect(f"127.0.0.1:{free_port()}", tls=False, connect_timeout=0.5)
    assert time.monotonic() - start < 2


def test_status_and_sessions_are_typed(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client, connect(server.address, tls=False) as other:
        client.motor("left").set_power(0.5)
        other.motor("right").set_power(0.5)
        status = client.status()
        assert isinstance(status, Status) and status.gpio_backend == "mock"
        assert status.recent_expiries[0].latency_ms == 0.5 and status.recent_expiries[0].stopped == ("left",)
        assert {r.name for r in status.resources} == {"left", "right", "base"}
        sessions = client.sessions()
        assert len(sessions) == 2
        # Both clients are the same host here, so the fake calls both "mine"; the daemon keys on the owner too.
        assert {s.id for s in sessions} == {client.session_id, other.session_id}
        assert {s.resources for s in sessions} == {("left",), ("right",)}


def test_leaving_the_context_closes_the_session(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client:
        client.motor("left").set_power(0.5)
        sid = client.session_id
    closes = server.calls("SafetyService/CloseSession")
    assert [r.request.id for r in closes] == [sid]  # type: ignore[attr-defined]
    assert server.sessions[str(sid)].ended == "closed"
    client.close()  # idempotent
    assert len(server.calls("SafetyService/CloseSession")) == 1


def test_closing_during_a_timed_move_ends_the_session_and_the_call(server: FakeServer) -> None:
    client = connect(server.address, tls=False)
    left = client.motor("left")
    errors: list[BaseException] = []

    def move() -> None:
        try:
            left.go_for(rpm=60, revolutions=5)  # 5 s
        except BaseException as exc:
            errors.append(exc)

    mover = threading.Thread(target=move)
    mover.start()
    wait_until(lambda: client.session_id is not None and server.motors["left"] != 0, what="the move to start")
    sid = client.session_id
    start = time.monotonic()
    client.close()
    mover.join(5)
    print(f"\nclose() during a 5 s move: {(time.monotonic() - start) * 1000:.0f} ms")
    assert [type(e) for e in errors] == [Closed]
    assert server.sessions[str(sid)].ended == "closed"
    wait_until(lambda: server.motors["left"] == 0.0, timeout=1, what="the move to be cut short")


def test_a_client_without_a_session_closes_nothing(server: FakeServer) -> None:
    with connect(server.address, tls=False) as client:
        client.motor("left").stop()
    assert server.calls("SafetyService/CloseSession") == []
    assert server.calls("RobotService/StartSession") == []


def test_manual_sessions_with_contexts() -> None:
    # A 1 s window: `one` must outlive a dozen calls and a pause before its first heartbeat.
    with FakeServer(window=1.0) as server, connect(server.address, tls=False, disable_sessions=True) as client:
        left, right = client.motor("left"), client.motor("right")
        with pytest.raises(Refused, match="session"):
            left.set_power(0.5)  # no session attached: the daemon refuses motion
        manager = client.session_manager
        one, two = manager.start(), manager.start(window=1.0)
        assert isinstance(one, Session) and one.window == 1.0
        with pytest.raises(Refused, match="window"):
            manager.start(window=5)
        assert manager.all() == [one, two]
        seen: dict[str, str | None] = {}

        def drive_right() -> None:
            with client.session(two):
                right.set_power(0.1)
                seen["right"] = server.calls("MotorService/SetPower")[-1].sid

        with client.session(one):
            left.set_power(0.5)
            worker = threading.Thread(target=drive_right)  # its own context: its own session
            worker.start()
            worker.join()
            left.stop()
        assert server.calls("MotorService/SetPower")[-2].sid == one.id
        assert seen["right"] == two.id
        assert server.calls("MotorService/Stop")[-1].sid is None  # only monitored calls carry viam-sid
        assert client.session_id is None
        time.sleep(0.3)  # past window/5, when an automatic session would have heartbeated
        assert server.heartbeats() == []  # nothing heartbeats manual sessions
        manager.heartbeat(one)
        assert [r.heartbeat_id for r in server.heartbeats()] == [one.id]
        assert manager.close(one) is True
        assert manager.all() == [two]
        with pytest.raises(SessionExpired), client.session(one):
            left.set_power(0.5)
        with pytest.raises(SessionExpired):
            manager.heartbeat(one.id)
        time.sleep(1.1)  # two lapses
        with pytest.raises(SessionExpired):
            manager.heartbeat(two)
        assert manager.all() == []
        three = manager.start()
    closes = [r.request.id for r in server.calls("SafetyService/CloseSession")]  # type: ignore[attr-defined]
    # The refused window's session, `one`, then `three`: close() ends the manual sessions still held too.
    assert len(closes) == 3 and closes[1:] == [one.id, three.id]


def test_the_event_stream_survives_a_server_restart() -> None:
    port = free_port()
    first = FakeServer(port=port).start()
    with connect(first.address, tls=False) as client:
        events = client.watch()
        snapshot = next(events)
        assert snapshot.kind == "snapshot" and isinstance(snapshot.status, Status)
        wait_until(lambda: first.watchers() == 1, what="the stream to be open")
        first.push_event("started", session_tag="abcd1234", resources=["left"])
        started = next(events)
        assert (started.kind, started.session_tag, started.resources) == ("started", "abcd1234", ("left",))
        first.push_event("shutting_down", detail="bye")
        assert next(events).kind == "shutting_down"
        first.stop()
        lost = next(events)
        assert lost.kind == RECONNECTING and lost.synthetic
        second = FakeServer(port=port).start()
        try:
            back = next(events)
            assert back.kind == RECONNECTED and isinstance(back, Event)
            assert next(events).kind == "snapshot"
            events.close()
            assert list(events) == []
        finally:
            second.stop()


def test_watch_ends_when_the_client_closes(server: FakeServer) -> None:
    client = connect(server.address, tls=False)
    events = client.watch()
    assert next(events).kind == "snapshot"
    got: list[Event] = []
    reader = threading.Thread(target=lambda: got.extend(events))
    reader.start()
    time.sleep(0.1)
    client.close()
    reader.join(5)
    assert not reader.is_alive() and got == []


def test_the_asyncio_flavour(server: FakeServer) -> None:
    async def main() -> tuple[str | None, float, list[str]]:
        async with aio.connect(server.address, tls=False) as client:
            left = await client.motor("left")
            await left.set_power(0.5)
            assert (await left.is_powered()).power_pct == 0.5
            sid = client.session_id
            assert sid
            start = time.monotonic()
            time.sleep(0.4)  # the program blocks its own event loop: heartbeats do not care
            blocked = [r.at for r in server.heartbeats(sid) if r.at >= start]
            assert len(blocked) >= 8
            await asyncio.gather(left.set_power(0.1), (await client.base("base")).set_power(0.2, 0))
            status = await client.status()
            assert len(await client.sessions()) == len(status.sessions) == 1
            events = client.watch()
            assert (await events.__anext__()).kind == "snapshot"
            await events.aclose()
            manager = client.session_manager
            mine = await manager.start()

            async def task_with(session: Session | None) -> str | None:
                if session is None:
                    await left.stop()
                    return server.calls("MotorService/Stop")[-1].sid
                with client.session(session):
                    await left.set_power(0.3)
                    return server.calls("MotorService/SetPower")[-1].sid

            ctx = contextvars.copy_context()
            attached = await asyncio.create_task(task_with(mine), context=ctx)
            assert await manager.close(mine) is True
            return sid, max(b - a for a, b in itertools.pairwise(blocked)), [str(attached)]

    sid, worst_gap, attached = asyncio.run(main())
    print(f"\nasyncio: largest heartbeat gap while the program's loop was blocked: {worst_gap * 1000:.1f} ms")
    assert worst_gap < server.window  # the bound that matters: every gap inside the window the heartbeats must beat
    assert attached != [sid]
    assert [r.request.id for r in server.calls("SafetyService/CloseSession")][-1] == sid  # type: ignore[attr-defined]


def test_cancelling_a_timed_move_cancels_it_on_the_daemon(server: FakeServer) -> None:
    async def main() -> None:
        async with aio.connect(server.address, tls=False) as client:
            left = await client.motor("left")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(left.go_for(rpm=60, revolutions=5), 0.2)  # a 5 s move, given up on
            deadline = time.monotonic() + 2
            while server.motors["left"] != 0.0:  # the fake's move ends when the call is cancelled
                assert time.monotonic() < deadline, "the move went on after its call was cancelled"
                await asyncio.sleep(0.01)
            with pytest.raises(Timeout):
                await left.go_for(rpm=60, revolutions=5, timeout=0.1)

    asyncio.run(main())


def test_channel_options_fit_for_control() -> None:
    from rover_safety.client.connection import ConnectOptions, channel_options, parse_address
    from rover_safety.client.tls import TlsSetup

    opts = ConnectOptions(parse_address("127.0.0.1"), tls=False)
    got = dict(channel_options(opts, 0.4, TlsSetup(None)))
    assert got["grpc.max_send_message_length"] == 64 * 1024
    assert got["grpc.keepalive_time_ms"] == 200 and got["grpc.keepalive_timeout_ms"] == 100
    assert got["grpc.keepalive_permit_without_calls"] == 1 and got["grpc.http2.max_pings_without_data"] == 0
    off = dict(channel_options(ConnectOptions(parse_address("[::1]:9"), tls=False, keepalive_time=0), 2,
                               TlsSetup(None)))
    assert "grpc.keepalive_time_ms" not in off
    assert parse_address("rover.local").target == "rover.local:8080"
    assert parse_address("[::1]:9").loopback and not parse_address("10.0.0.2:1").loopback


def test_asyncio_await_connect_and_close(server: FakeServer) -> None:
    async def main() -> None:
        client = await aio.connect(server.address, tls=False)
        await (await client.motor("left")).set_power(0.5)
        assert client.session_id
        await client.close()
        assert client.closed

    asyncio.run(main())
    assert len(server.calls("SafetyService/CloseSession")) == 1
