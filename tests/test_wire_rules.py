"""The wire's rules, each from one source of truth: which methods are monitored (the proto option), how errors map
to statuses (one isinstance table), and who a peer is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from rover_safety.api import base_pb2, common_pb2, motor_pb2, robot_pb2, safety_pb2  # noqa: F401  (registers them)
from rover_safety.daemon.app import Daemon
from rover_safety.daemon.wire import STATUSES, peer_host, status_of
from rover_safety.drivers import InvalidCommand, Unsupported
from rover_safety.sessions import SessionExpired, TooManySessions

from tests.support.daemons import DaemonFactory, rig

SERVICES = (
    "viam.robot.v1.RobotService",
    "viam.component.motor.v1.MotorService",
    "viam.component.base.v1.BaseService",
    "rover_safety.v1.SafetyService",
)


def methods() -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    return [m for s in SERVICES for m in pool.FindServiceByName(s).methods]


def is_monitored(method: MethodDescriptor) -> bool:
    return bool(method.GetOptions().Extensions[common_pb2.safety_heartbeat_monitored])


def request_for(method: MethodDescriptor) -> Any:
    """A harmless request: the example config's resource of the service's kind, every other field at its default."""
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(method.input_type)
    request: Any = cls()  # a generated message class: its fields are attributes mypy cannot know
    if "name" in cls.DESCRIPTOR.fields_by_name:
        request.name = "base" if "BaseService" in method.containing_service.full_name else "left"
    return request


NO_SESSION = "refused: no session"
Served = tuple[Daemon, grpc.Channel]


def cancel(call: grpc.Call) -> None:
    """Cancel a call (grpc-stubs leaves RpcContext.cancel() unannotated, so it is called through Any)."""
    untyped: Any = call
    untyped.cancel()


def call(channel: grpc.Channel, method: MethodDescriptor, sid: str = "") -> str:
    """Call `method` on the daemon: the name of the status it answered, or NO_SESSION for a refusal for want of a
    session (FAILED_PRECONDITION saying so)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request = request_for(method)
    metadata = (("viam-sid", sid),) if sid else ()
    if method.server_streaming:
        stream = channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                      response_deserializer=None)
        responses = stream(request, metadata=metadata, timeout=5)
        try:
            next(iter(responses))
        except grpc.RpcError as exc:
            return str(exc.code().name)
        finally:
            cancel(responses)
        return "OK"
    unary = channel.unary_unary(path, request_serializer=type(request).SerializeToString, response_deserializer=None)
    try:
        unary(request, metadata=metadata, timeout=5)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "without a session" in (exc.details() or ""):
            return NO_SESSION
        return str(exc.code().name)
    return "OK"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    factory = DaemonFactory(tmp_path_factory.mktemp("wire"))
    daemon = factory(heartbeat_window="5s")
    channel = grpc.insecure_channel(f"127.0.0.1:{daemon.port}")
    yield daemon, channel
    channel.close()
    factory.close()


def test_the_monitored_methods_are_those_the_protos_mark() -> None:
    marked = {f"{m.containing_service.name}.{m.name}" for m in methods() if is_monitored(m)}
    assert marked == {
        "MotorService.SetPower", "MotorService.GoFor", "MotorService.GoTo", "MotorService.SetRPM",
        "BaseService.MoveStraight", "BaseService.Spin", "BaseService.SetPower", "BaseService.SetVelocity",
    }


@pytest.mark.parametrize("method", methods(), ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_exactly_the_marked_methods_need_a_session_and_count_as_heartbeats(method: MethodDescriptor,
                                                                          served: Served) -> None:
    daemon, channel = served
    assert isinstance(daemon, Daemon)
    refused_without = call(channel, method) == NO_SESSION
    assert refused_without == is_monitored(method), f"{method.full_name}: refused without a session"

    session = daemon.sessions.start(owner="127.0.0.1", peer="test")
    heard = session.heard
    time.sleep(0.01)
    assert call(channel, method, session.id) != NO_SESSION
    assert (session.heard > heard) == is_monitored(method), f"{method.full_name}: counted as a heartbeat"
    daemon.sessions.end(session.id, "127.0.0.1")
    daemon.stop_all()


def test_a_subclass_of_a_mapped_error_maps_like_its_base() -> None:
    class TooFast(InvalidCommand):
        pass

    class Exotic(SessionExpired):
        pass

    too_fast, exotic = status_of(TooFast("too fast")), status_of(Exotic())
    assert too_fast is not None and too_fast.code == grpc.StatusCode.INVALID_ARGUMENT
    assert too_fast.message == "too fast"
    assert exotic is not None and (exotic.code, exotic.message) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                    "SESSION_EXPIRED")
    assert status_of(RuntimeError("a bug")) is None  # not mapped: the daemon fails safe
    assert status_of(TooManySessions(3)) is not None
    for error in (Unsupported, InvalidCommand, SessionExpired):
        assert any(issubclass(error, kind) for kind, _ in STATUSES)


def test_a_subclass_reaches_the_client_with_its_base_status(served: Served) -> None:
    daemon, channel = served
    motor = rig(daemon).motors["left"]

    class Custom(Unsupported):
        pass

    def refuse(power: float) -> None:
        raise Custom("this motor is shy")

    session = daemon.sessions.start(owner="127.0.0.1", peer="test")
    patch = pytest.MonkeyPatch()
    patch.setattr(motor, "set_power", refuse)
    try:
        stub = channel.unary_unary("/viam.component.motor.v1.MotorService/SetPower",
                                   request_serializer=motor_pb2.SetPowerRequest.SerializeToString,
                                   response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            stub(motor_pb2.SetPowerRequest(name="left", power_pct=0.5), metadata=(("viam-sid", session.id),),
                 timeout=5)
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "this motor is shy")
    finally:
        patch.undo()
        daemon.sessions.end(session.id, "127.0.0.1")


@pytest.mark.parametrize(("peer", "host"), [
    ("ipv4:10.0.0.5:41234", "10.0.0.5"),
    ("ipv6:%5B::1%5D:5", "::1"),
    ("ipv6:[fe80::1%25eth0]:8080", "fe80::1%eth0"),
    ("ipv6:%5B2001:db8::7%5D:443", "2001:db8::7"),
    ("unix:/run/x.sock", "unix:/run/x.sock"),
])
def test_peer_host(peer: str, host: str) -> None:
    assert peer_host(peer) == host
