"""A fake of the ``lgpio`` Python module (lg 0.2.2) at the edge: gpiozero's real ``LGPIOFactory`` runs on it unchanged.

On a Raspberry Pi 5 gpiozero reaches the pins only through lgpio (gpiochip character devices). This fake is that
module, for tests without a Pi, the way ``pigpiod_emulator.py`` is pigpiod: same functions, signatures, return
values and errors as lg's Python binding, and the chip's state kept *outside* the process that drives it, in a
file every process using the fake maps, so it survives that process being killed. ``_impl.py`` says exactly
what is reproduced from lg's source and where the fake stands in for the kernel.

Making a chip and reading it (any process)::

    create(tmp_path / "chip.state")                  # 54 free lines and an event ring; mode 0666
    chip = FakeChip(tmp_path / "chip.state")
    chip.line(22)            # LineState(mode, direction, level, duty, frequency, owner_pid, owner_alive, frozen, ...)
    chip.effective_level(22) # the level on the pin, a dead PWM owner's line frozen (worst case: high if duty > 0)
    chip.events_since(t_ns)  # every claim/write/PWM call with time.monotonic_ns(), pid and result, in order
    chip.set_input(5, 1)     # drive an input from outside
    chip.simulate_dead_owner(22, duty=60)   # "the process died mid-PWM with the line high"

In the test process (``sys.modules["lgpio"]`` for the duration; gpiozero's lgpio module is re-imported on it)::

    with installed(tmp_path / "chip.state", device=tmp_path / "gpiochip0") as lgpio, pi_revision(PI5_REVISION):
        factory = LGPIOFactory()        # gpiozero's, unchanged

Leaving ``installed()`` is that process's lgpio going away as when the process dies: the kernel (the fake)
releases its lines as they stand, PWM frozen; the working directory is restored.

In a child process (the daemon, ``rover-safety safe-stop``): ``child_env()`` gives the environment (the fake on
``PYTHONPATH``, which chip file and device node, ``LG_WD``)::

    subprocess.Popen(argv, env=child_env(chip_path, device=dev_path, workdir=tmp_path))
    subprocess.Popen(pi_command(argv, tmp_path), env=...)   # + a Pi 5 /proc/cpuinfo, for gpiozero's LGPIOFactory

The environment:

- ``ROVER_SAFETY_FAKE_LGPIO_CHIP``: the chip state file (required when the chip is opened; a clear
  ``FakeLgpioConfigError`` otherwise). Every process using it needs read-write access (it is mapped shared).
- ``ROVER_SAFETY_FAKE_LGPIO_DEV``: the device node ``gpiochip_open(N)`` really opens (``O_RDWR``), ``{chip}``
  standing for N; default ``/dev/gpiochip{chip}``, as lg. A missing node or no read-write access fails the open as
  on a Pi; any node that opens is taken for the chip (a regular file, a bind mount, a ``mknod``ed char device
  under a systemd ``DeviceAllow=``), since the chip state lives in the state file.
- ``LG_WD`` (lg's own): lgpio's working directory, where ``import lgpio`` makes its notification pipe
  ``.lgd-nfy0`` (and ``chdir``s to); default the current directory. Not writable: the import fails
  (``FileNotFoundError: [Errno 2] No such file or directory: '.lgd-nfy-3'``, after a ``Can't set permissions``
  line on stderr), exactly as the real module.
- ``ROVER_SAFETY_FAKE_LGPIO_FORCE=1``: use the fake even on a Raspberry Pi (otherwise the site module hands over
  to the real lgpio there, and ``installed``/``child_env`` refuse).

gpiozero 2.0.1 needs a Pi's board revision for ``LGPIOFactory`` (``PiFactory.pin()`` and, with ``chip=None``, the
Pi 5 check): ``gpiozero.pins.local.get_pi_revision`` reads ``/proc/device-tree/system/linux,revision``, else the
``Revision`` line of ``/proc/cpuinfo``, else raises ``PinUnknownPi``. It has no environment variable for it
(``GPIOZERO_MOCK_REVISION`` is the MockFactory's only). So: ``pi_command()`` runs a child in a private mount
namespace with a ``/proc/cpuinfo`` that has a Pi 5's ``Revision`` bound over the real one (nothing of gpiozero
touched; needs root, or unprivileged user namespaces), and a systemd unit can do the same with
``BindReadOnlyPaths=<file>:/proc/cpuinfo``; in the test process ``pi_revision()`` replaces that one function for
the duration. With a Pi 5 revision, ``LGPIOFactory()`` opens chip 4 if ``/dev/gpiochip4`` exists, else chip 0.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType

from ._impl import (
    CLOSE_SETTLE_S,
    DEAD_PID,
    ENV_CHIP,
    ENV_DEV,
    ENV_FORCE,
    ENV_WD,
    Config,
    FakeLgpioConfigError,
    create,
    make_module,
    on_raspberry_pi,
)
from .reader import Event, FakeChip, LineState

__all__ = [
    "CLOSE_SETTLE_S",
    "DEAD_PID",
    "ENV_CHIP",
    "ENV_DEV",
    "ENV_FORCE",
    "ENV_WD",
    "PI5_REVISION",
    "SITE_DIR",
    "Event",
    "FakeChip",
    "FakeLgpioConfigError",
    "LineState",
    "child_env",
    "create",
    "installed",
    "on_raspberry_pi",
    "pi_command",
    "pi_namespace_unavailable",
    "pi_revision",
]

SITE_DIR = Path(__file__).resolve().parent / "site"  # put on PYTHONPATH: ``import lgpio`` gets the fake
PI5_REVISION = 0xD04170  # Raspberry Pi 5 Model B rev 1.0, 8 GB (board type 0x17, BCM2712)

_GPIOZERO_LGPIO = "gpiozero.pins.lgpio"


def _refuse_on_a_pi(force: bool) -> None:
    if on_raspberry_pi() and not force:
        raise RuntimeError(
            "this is a Raspberry Pi: the fake lgpio would shadow the real one; pass force=True to use it anyway"
        )


def child_env(
    chip: str | os.PathLike[str],
    *,
    device: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    base: Mapping[str, str] | None = None,
    force: bool = False,
) -> dict[str, str]:
    """The environment for a child process whose ``import lgpio`` must get the fake on ``chip``.

    ``base`` (default ``os.environ``) plus: ``PYTHONPATH`` with ``SITE_DIR`` first, ``ROVER_SAFETY_FAKE_LGPIO_CHIP``,
    and when given ``ROVER_SAFETY_FAKE_LGPIO_DEV`` (the device node; ``{chip}`` = the chip number) and ``LG_WD``
    (where lgpio makes its notification pipe). Any of these already in ``base`` and not given is kept.
    """
    _refuse_on_a_pi(force)
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), env.get("PYTHONPATH", "")) if p)
    env[ENV_CHIP] = os.fspath(chip)
    if device is not None:
        env[ENV_DEV] = os.fspath(device)
    if workdir is not None:
        env[ENV_WD] = os.fspath(workdir)
    if force:
        env[ENV_FORCE] = "1"
    return env


def pi_namespace_unavailable() -> str | None:
    """Why ``pi_command()`` cannot work here (None: it can): it needs util-linux ``unshare`` and ``mount``, and root
    or unprivileged user namespaces."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "util-linux unshare and mount are needed"
    probe = subprocess.run(
        [*_unshare(), "true"], capture_output=True, text=True, timeout=10, check=False,
    )
    if probe.returncode != 0:
        return f"cannot make a private mount namespace: {probe.stderr.strip() or probe.returncode}"
    return None


def _unshare() -> list[str]:
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", *user, "--mount", "--propagation", "private", "--"]


def pi_command(
    argv: Sequence[str], directory: str | os.PathLike[str], revision: int = PI5_REVISION
) -> list[str]:
    """``argv`` wrapped to run in a private mount namespace whose ``/proc/cpuinfo`` says it is a Raspberry Pi.

    The file (this machine's cpuinfo plus ``Revision`` and ``Model`` lines) is written as ``directory/cpuinfo``
    and bind-mounted over ``/proc/cpuinfo`` for that process and its children only; gpiozero then reads the
    revision the supported way. As root the process keeps its credentials; otherwise it runs in a user namespace
    (uid 0 there, file access as the real user). See ``pi_namespace_unavailable()``.
    """
    cpuinfo = Path(directory) / "cpuinfo"
    try:
        real = Path("/proc/cpuinfo").read_text()
    except OSError:
        real = ""
    lines = [line for line in real.splitlines() if not line.startswith(("Revision", "Model"))]
    model = "Raspberry Pi 5 Model B Rev 1.0" if (revision & 0xFF0) >> 4 == 0x17 else "Raspberry Pi"
    cpuinfo.write_text("\n".join([*lines, f"Revision\t: {revision:06x}", f"Model\t\t: {model}", ""]))
    cpuinfo.chmod(0o644)
    return [*_unshare(), "sh", "-c", 'mount --bind "$0" /proc/cpuinfo && exec "$@"', str(cpuinfo), *argv]


@contextlib.contextmanager
def pi_revision(revision: int = PI5_REVISION) -> Iterator[None]:
    """For the duration, gpiozero (in this process) reads ``revision`` as the Pi's board revision.

    The one thing replaced is ``gpiozero.pins.local.get_pi_revision``, the function that reads it from
    ``/proc/device-tree`` or ``/proc/cpuinfo`` (gpiozero 2.0.1 has no setting for it); everything else of
    gpiozero runs as it is. For a child process use ``pi_command()``, which replaces nothing.
    """
    import gpiozero.pins.local as local

    original = local.get_pi_revision
    local.get_pi_revision = lambda: revision
    try:
        yield
    finally:
        local.get_pi_revision = original


@contextlib.contextmanager
def installed(
    chip: str | os.PathLike[str],
    *,
    device: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Iterator[ModuleType]:
    """``import lgpio`` in this process gets a fresh fake on ``chip`` for the duration; yields that module.

    Entering is lgpio's import (the notification pipe made in ``workdir``, default the chip file's directory, and
    the current directory changed to it, as lg does); ``device`` is the node ``gpiochip_open`` opens (default
    ``$ROVER_SAFETY_FAKE_LGPIO_DEV``, else ``/dev/gpiochip{chip}``). gpiozero's ``gpiozero.pins.lgpio`` is
    re-imported on the fake, and both are put back as they were on exit. Leaving is the process's lgpio going
    away as at its death: every line still held is released by the kernel as it stands (close gpiozero's
    factory first for an orderly end). Refuses on a Raspberry Pi unless ``force``.
    """
    _refuse_on_a_pi(force)
    names = ("lgpio", _GPIOZERO_LGPIO)
    saved = {name: sys.modules.pop(name, None) for name in names}
    pins = sys.modules.get("gpiozero.pins")
    saved_attr = pins.__dict__.get("lgpio") if pins is not None else None
    cwd = os.getcwd()
    config = Config(
        chip=os.fspath(chip),
        device=None if device is None else os.fspath(device),
        workdir=os.fspath(workdir) if workdir is not None else str(Path(chip).resolve().parent),
    )
    module: ModuleType | None = None
    try:
        module = make_module(config)
        sys.modules["lgpio"] = module
        yield module
    finally:
        if module is not None:
            module._fake.exit()
        os.chdir(cwd)
        for name in names:
            sys.modules.pop(name, None)
            previous = saved[name]
            if previous is not None:
                sys.modules[name] = previous
        pins = sys.modules.get("gpiozero.pins")
        if pins is not None:
            if saved_attr is None:
                pins.__dict__.pop("lgpio", None)
            else:
                pins.__dict__["lgpio"] = saved_attr
