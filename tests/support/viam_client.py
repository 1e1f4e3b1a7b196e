"""A tiny driver for the official Viam Python SDK, run by tests/test_viam_sdk.py in the SDK's own venv.

    viam_client.py HOST:PORT [--no-sessions] [--key-id ID --api-key KEY]

It connects (sessions on, unless --no-sessions; with an API key over TLS, as the SDK sends keys only over TLS:
it verifies the certificate against SSL_CERT_FILE except for localhost and 127.*), then answers one JSON line
on stdout per command line on stdin:

    motor.set_power NAME POWER      motor.stop NAME      motor.state NAME
    base.set_power NAME LINEAR_Y ANGULAR_Z                base.stop NAME      base.state NAME
    quit

Replies are {"ok": true, ...} or {"ok": false, "status": "FAILED_PRECONDITION", "message": "..."}. The first line is
{"ok": true, "resources": [...]} once connected. Stdout carries nothing else: the SDK's own logging goes to stderr.
This file must never be imported by pytest (the SDK pins its own protobuf).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

# Keep stdout for replies only: everything else written to fd 1 (the SDK logs to stdout) lands on stderr.
replies = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)

from grpclib.exceptions import GRPCError  # noqa: E402
from viam.components.base import Base, Vector3  # noqa: E402  (import before connecting, so from_robot resolves)
from viam.components.motor import Motor  # noqa: E402
from viam.robot.client import RobotClient  # noqa: E402
from viam.rpc.dial import DialOptions  # noqa: E402


async def close(robot: RobotClient) -> None:
    """The SDK's RobotClient.close() is unannotated: called through Any, so that the rest stays checked."""
    untyped: Any = robot
    await untyped.close()


def reply(**fields: object) -> None:
    replies.write(json.dumps(fields) + "\n")


async def run(robot: RobotClient, words: list[str]) -> dict[str, object]:
    command, name, *args = words
    if command.startswith("motor."):
        motor = Motor.from_robot(robot, name)
        if command == "motor.set_power":
            await motor.set_power(float(args[0]))
        elif command == "motor.stop":
            await motor.stop()
        elif command == "motor.state":
            is_on, power_pct = await motor.is_powered()
            return {"is_powered": is_on, "power_pct": power_pct, "is_moving": await motor.is_moving()}
        else:
            raise ValueError(f"unknown command {command!r}")
    else:
        base = Base.from_robot(robot, name)
        if command == "base.set_power":
            await base.set_power(Vector3(y=float(args[0])), Vector3(z=float(args[1])))
        elif command == "base.stop":
            await base.stop()
        elif command == "base.state":
            return {"is_moving": await base.is_moving()}
        else:
            raise ValueError(f"unknown command {command!r}")
    return {}


async def main() -> None:
    address, flags = sys.argv[1], sys.argv[2:]
    if "--api-key" in flags:
        from viam.rpc.dial import Credentials

        key, key_id = flags[flags.index("--api-key") + 1], flags[flags.index("--key-id") + 1]
        dial = DialOptions(credentials=Credentials(type="api-key", payload=key), auth_entity=key_id,
                           disable_webrtc=True)
    else:
        dial = DialOptions(insecure=True, disable_webrtc=True)
    options = RobotClient.Options(dial_options=dial, disable_sessions="--no-sessions" in flags)
    robot = await RobotClient.at_address(address, options)
    try:
        reply(ok=True, resources=sorted(f"{r.subtype}/{r.name}" for r in robot.resource_names))
        while line := await asyncio.to_thread(sys.stdin.readline):
            words = line.split()
            if words == ["quit"]:
                break
            try:
                reply(ok=True, **await run(robot, words))
            except GRPCError as exc:
                reply(ok=False, status=exc.status.name, message=exc.message)
            except Exception as exc:
                reply(ok=False, status=type(exc).__name__, message=str(exc))
    finally:
        await close(robot)


if __name__ == "__main__":
    asyncio.run(main())
