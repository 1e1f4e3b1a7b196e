"""The generated API modules are fresh and wire-compatible with Viam's official Python SDK."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tests.support.viam_sdk import VIAM_PYTHON, sdk_env

REPO = Path(__file__).resolve().parent.parent

# The Viam methods we declare, per service (docs: /work/shared/reference/viam-wire-api.md).
# RobotService is a subset of Viam's; MotorService and BaseService omit only GetStatus and GetGeometries.
SERVICES: dict[str, list[str]] = {
    "viam.robot.v1.RobotService": ["ResourceNames", "StartSession", "SendSessionHeartbeat", "GetSessions", "StopAll"],
    "viam.component.motor.v1.MotorService": [
        "SetPower", "GoFor", "GoTo", "SetRPM", "ResetZeroPosition", "GetPosition",
        "GetProperties", "Stop", "IsPowered", "IsMoving", "DoCommand",
    ],
    "viam.component.base.v1.BaseService": [
        "MoveStraight", "Spin", "SetPower", "SetVelocity", "Stop", "IsMoving", "GetProperties", "DoCommand",
    ],
}  # fmt: skip

VIAM_MODULES = [
    "common.v1.common_pb2",
    "robot.v1.robot_pb2",
    "component.motor.v1.motor_pb2",
    "component.base.v1.base_pb2",
]
OUR_MODULES = ["common_pb2", "robot_pb2", "motor_pb2", "base_pb2", "safety_pb2"]


def describe(
    pool: Any, monitored: Any, services: dict[str, list[str]]
) -> dict[str, Any]:
    """Wire-relevant facts about `services` and every message and enum they reach, as JSON-able data.

    Runs both here and, via its source text, in the viam-sdk interpreter, so it only uses the protobuf runtime.
    `monitored` is the `safety_heartbeat_monitored` extension descriptor of the same pool.
    """
    from google.protobuf import descriptor_pb2

    facts: dict[str, Any] = {
        "extension": {
            "full_name": monitored.full_name,
            "number": monitored.number,
            "type": monitored.type,
            "extendee": monitored.containing_type.full_name,
            "has_presence": monitored.has_presence,
        },
        "methods": {},
        "messages": {},
        "enums": {},
    }
    todo = []
    for service_name, method_names in services.items():
        service = pool.FindServiceByName(service_name)
        for name in method_names:
            method = service.methods_by_name[name]
            options = method.GetOptions()
            facts["methods"][f"{service_name}/{name}"] = {
                "input": method.input_type.full_name,
                "output": method.output_type.full_name,
                "streaming": [method.client_streaming, method.server_streaming],
                "monitored": (
                    options.HasExtension(monitored) and options.Extensions[monitored]
                ),
            }
            todo += [method.input_type, method.output_type]
    while todo:
        message = todo.pop()
        name = message.full_name
        if name in facts["messages"] or name.startswith("google.protobuf."):
            continue
        proto = descriptor_pb2.DescriptorProto()
        message.CopyToProto(proto)
        facts["messages"][name] = {
            field.name: {
                "number": field.number,
                "type": descriptor_pb2.FieldDescriptorProto.Type.Name(field.type),
                "label": descriptor_pb2.FieldDescriptorProto.Label.Name(field.label),
                "type_name": field.type_name,
                "proto3_optional": field.proto3_optional,
                "oneof": (
                    proto.oneof_decl[field.oneof_index].name
                    if field.HasField("oneof_index")
                    else None
                ),
            }
            for field in proto.field
        }
        for field in message.fields:
            if field.message_type is not None:
                todo.append(field.message_type)
            if field.enum_type is not None:
                values = field.enum_type.values
                facts["enums"][field.enum_type.full_name] = {
                    v.name: v.number for v in values
                }
    return facts


VIAM_SCRIPT = f"""
from __future__ import annotations
import importlib, json, sys
from typing import Any
from google.protobuf import descriptor_pool
for module in {VIAM_MODULES!r}:
    importlib.import_module("viam.gen." + module)
from viam.gen.common.v1.common_pb2 import safety_heartbeat_monitored

{inspect.getsource(describe)}
print(json.dumps(describe(descriptor_pool.Default(), safety_heartbeat_monitored, json.loads(sys.argv[1]))))
"""


def import_api(name: str) -> types.ModuleType:
    """Import rover_safety.api.<name>.

    If rover-safety is not installed, map the package onto the repo root the way setup.cfg's package_dir does.
    """
    try:
        importlib.import_module("rover_safety")
    except ModuleNotFoundError:
        # rover_safety.api -> api/, rover_safety.daemon -> daemon/, ...
        package = types.ModuleType("rover_safety")
        package.__path__ = [str(REPO)]
        sys.modules["rover_safety"] = package
    return importlib.import_module(f"rover_safety.api.{name}")


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_declare_exactly_the_listed_methods() -> None:
    from google.protobuf import descriptor_pool

    for module in OUR_MODULES:
        import_api(module)
    pool = descriptor_pool.Default()
    for service_name, method_names in SERVICES.items():
        assert sorted(pool.FindServiceByName(service_name).methods_by_name) == sorted(
            method_names
        ), service_name
    safety = pool.FindServiceByName("rover_safety.v1.SafetyService").methods_by_name[
        "CloseSession"
    ]
    assert safety.input_type.full_name == "rover_safety.v1.CloseSessionRequest"
    assert safety.output_type.full_name == "rover_safety.v1.CloseSessionResponse"


def test_wire_compatible_with_viam_sdk() -> None:
    if not VIAM_PYTHON.exists():
        pytest.skip(
            f"no viam-sdk interpreter at {VIAM_PYTHON}; create it with `python3 -m venv .venv-viam && "
            ".venv-viam/bin/pip install viam-sdk==0.85.1` or set ROVER_SAFETY_VIAM_PYTHON"
        )
    result = subprocess.run(
        [str(VIAM_PYTHON), "-c", VIAM_SCRIPT, json.dumps(SERVICES)],
        env=sdk_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    viam = json.loads(result.stdout)

    from google.protobuf import descriptor_pool

    common = import_api("common_pb2")
    for module in OUR_MODULES:
        import_api(module)
    ours = describe(
        descriptor_pool.Default(), common.safety_heartbeat_monitored, SERVICES
    )

    assert ours["extension"] == viam["extension"]
    assert ours["methods"] == viam["methods"]
    assert ours["enums"] == viam["enums"]
    assert sorted(ours["messages"]) == sorted(viam["messages"])
    for name, fields in viam["messages"].items():
        assert ours["messages"][name] == fields, name
    # The comparison did see the option at all.
    assert any(method["monitored"] for method in viam["methods"].values())
