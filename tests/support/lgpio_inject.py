"""Run `rover-safety` on lgpio with one fault injected, for the lgpio exit-path tests.

    python tests/support/lgpio_inject.py FAULT serve --config X

Each fault wraps one function of the lgpio module the process imports (the fake, in these tests), then runs the
real CLI (no test hooks in product code):

- ``write``: the first ``gpio_write`` of GPIO17 (the example's left.a) to 0 after it was driven to 1 fails as a write
  to the chip can (``lgpio.error('bad GPIO write')``); every other call, that one's retry included, goes through.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

FAULT_GPIO = 17


def _write() -> None:
    cwd = os.getcwd()
    lgpio: Any = importlib.import_module("lgpio")
    os.chdir(cwd)  # importing lgpio moves to its working directory, as the product's import_lgpio() undoes
    real = lgpio.gpio_write
    state = {"driven": False, "failed": False}

    def gpio_write(handle: int, gpio: int, level: int) -> int:
        if gpio == FAULT_GPIO:
            if level:
                state["driven"] = True
            elif state["driven"] and not state["failed"]:
                state["failed"] = True
                raise lgpio.error("bad GPIO write")
        return int(real(handle, gpio, level))

    lgpio.gpio_write = gpio_write


FAULTS = {"write": _write}

if __name__ == "__main__":
    FAULTS[sys.argv[1]]()
    from rover_safety.daemon import cli

    sys.exit(cli.main(sys.argv[2:]))
