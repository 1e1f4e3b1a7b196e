"""Property-based: whatever a client puts in any request field or metadata of any RPC, the daemon neither crashes
(no INTERNAL or UNKNOWN status) nor moves anything without a session and a valid command, and keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rover_safety.api import auth_pb2, base_pb2, motor_pb2, robot_pb2, safety_pb2  # noqa: F401  (registers them)
from rover_safety.daemon.app import Daemon

from tests.support.daemons import DaemonFactory
from tests.support.keys import Key, bearer, new_certificate, new_key, secured, tls_channel, token_for
from tests.support.process import rss_mb

SERVICES = ("viam.robot.v1.RobotService", "viam.component.motor.v1.MotorService",
            "viam.component.base.v1.BaseService", "rover_safety.v1.SafetyService", "proto.rpc.v1.AuthService")
PINS = (17, 27, 22, 26, 19)
NAMES = st.sampled_from(["left", "right", "base", "", "nope", "left\x00", "x" * 5000, "\u202eesab"])
STRINGS = st.one_of(NAMES, st.text(max_size=64), st.binary(max_size=32).map(lambda b: b.decode("latin-1")))
DOUBLES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, -0.5, 1e308, -1e-308]))
INTS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, -1, 100]))
METHODS = [m for s in SERVICES for m in descriptor_pool.Default().FindServiceByName(s).methods]
MAX_RSS_GROWTH_MB = 80


def value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """A strategy for one field of any type the API uses."""
    kinds: dict[int, st.SearchStrategy[Any]] = {
        FieldDescriptor.TYPE_STRING: STRINGS if field.name != "name" else NAMES,
        FieldDescriptor.TYPE_DOUBLE: DOUBLES,
        FieldDescriptor.TYPE_FLOAT: DOUBLES.filter(lambda x: x != x or abs(x) < 3e38),
        FieldDescriptor.TYPE_INT64: INTS,
        FieldDescriptor.TYPE_BOOL: st.booleans(),
    }
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        return message(field.message_type, depth + 1) if depth < 3 else st.none()
    return kinds.get(field.type, st.none())


@st.composite
def message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Any:
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Struct":
        return struct_pb2.Struct(fields={k: struct_pb2.Value(string_value=v) for k, v in
                                         draw(st.dictionaries(st.text(max_size=8), st.text(max_size=16),
                                                              max_size=3)).items()})
    out = cls()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        strategy = value(field, depth)
        if field.is_repeated:
            items = [v for v in draw(st.lists(strategy, max_size=3)) if v is not None]
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in items:
                    getattr(out, field.name).add().CopyFrom(item)
            else:
                getattr(out, field.name).extend(items)
            continue
        item = draw(strategy)
        if item is None:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(out, field.name).CopyFrom(item)
        else:
            setattr(out, field.name, item)
    return out


METADATA_KEYS = st.sampled_from(["viam-sid", "authorization", "x-rover-safety-proxy", "x-rover-safety-peer",
                                 "grpc-timeout-ish", "viam_client"])
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
METADATA_VALUES = st.one_of(st.text(alphabet=PRINTABLE, max_size=80), st.sampled_from(
    ["Bearer ", "Bearer x.y.z", "bearer", "00000000-0000-0000-0000-000000000000"]))


class Served:
    def __init__(self, factory: DaemonFactory, tmp: Any) -> None:
        self.key: Key = new_key("fuzzer")
        self.certificate = new_certificate(tmp / "tls")
        from tests.support.daemons import example_config

        self.daemon: Daemon = factory(secured(example_config(heartbeat_window="10s"), self.certificate, (self.key,)))
        self.channel = tls_channel(self.daemon.port, self.certificate)
        self.token = token_for(self.channel, self.key)
        self.rss = rss_mb()

    def pins(self) -> dict[int, float]:
        assert self.daemon.rig is not None
        return {p: float(self.daemon.rig.factory.pin(p).state) for p in PINS}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    factory = DaemonFactory(tmp_path_factory.mktemp("fuzz"))
    target = Served(factory, tmp_path_factory.mktemp("fuzz-tls"))
    yield target
    target.channel.close()
    factory.close()


def invoke(channel: grpc.Channel, method: MethodDescriptor, request: Any, metadata: tuple[tuple[str, str], ...]
           ) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            responses = channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                             response_deserializer=None)(request, metadata=metadata, timeout=3)
            try:
                next(iter(responses))
            finally:
                responses.cancel()  # type: ignore[no-untyped-call]
        else:
            channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                response_deserializer=None)(request, metadata=metadata, timeout=3)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_any_request_to_any_rpc(served: Served, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(METHODS), label="method")
    request = data.draw(message(method.input_type), label="request")
    junk = data.draw(st.lists(st.tuples(METADATA_KEYS, METADATA_VALUES), max_size=3), label="metadata")
    authenticated = data.draw(st.booleans(), label="with a token")
    metadata = (*(bearer(served.token) if authenticated else ()), *junk)
    served.daemon.stop_all()
    before = served.pins()
    code = invoke(served.channel, method, request, tuple(metadata))
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (method.full_name, request, metadata)
    after = served.pins()
    if code != grpc.StatusCode.OK:
        assert after == before, f"{method.full_name} was refused ({code}) but the pins changed"
    # nothing moves without a live session: the fuzzer never has one (a made-up viam-sid is refused)
    assert all(v == 0 for v in after.values()), f"{method.full_name} moved something without a session: {after}"
    assert rss_mb() - served.rss < MAX_RSS_GROWTH_MB


def test_still_serving_after_the_fuzz(served: Served) -> None:
    from rover_safety.api import robot_pb2_grpc

    robot = robot_pb2_grpc.RobotServiceStub(served.channel)
    assert robot.ResourceNames(robot_pb2.ResourceNamesRequest(), metadata=bearer(served.token), timeout=5).resources
    sid = robot.StartSession(robot_pb2.StartSessionRequest(), metadata=bearer(served.token), timeout=5).id
    assert sid
