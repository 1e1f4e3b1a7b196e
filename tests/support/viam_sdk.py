"""Where the official Viam Python SDK is: a venv of its own (it pins its own protobuf), so it never runs in this
process; tests run its interpreter in a child process (tests/support/viam_client.py, or a script of their own)."""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
# `make test` creates .venv-viam; ROVER_SAFETY_VIAM_PYTHON names any other python that has viam-sdk installed.
VIAM_PYTHON = Path(os.environ.get("ROVER_SAFETY_VIAM_PYTHON", CHECKOUT / ".venv-viam" / "bin" / "python"))


def sdk_env() -> dict[str, str]:
    """This process's environment without what would make the SDK's interpreter import this venv's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
