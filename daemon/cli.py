"""`rover-safety`: the command line (serve, check-config, safe-stop)."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

from rover_safety.config import Config, ConfigError, load

from . import journal
from .safe_stop import safe_stop_command

DEFAULT_CONFIG = "/etc/rover-safety/config.yaml"
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}

log = logging.getLogger("rover-safety")


def _load(path: str) -> Config | None:
    try:
        return load(path)
    except ConfigError as exc:
        log.error("%s", exc)
        return None


def serve(args: argparse.Namespace) -> int:
    """Run in the foreground until SIGTERM/SIGINT (exit 0) or a failure (exit 1); SIGHUP reloads the config."""
    config = _load(args.config)
    if config is None:
        return 1
    faulthandler.enable(all_threads=True)  # a watchdog SIGABRT leaves every thread's stack in the journal
    # Every thread started from here on inherits these blocked; only the main thread takes them, in sigwait().
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    from .app import Daemon  # imports grpc: only once the config is known to be good
    from .errors import StartupError

    printer = _pin_printer(config) if args.simulate else None
    main_thread = threading.get_ident()
    daemon = Daemon(
        config,
        config_path=args.config,
        simulate=args.simulate,
        on_pin_change=printer,
        on_fatal=lambda: signal.pthread_kill(main_thread, signal.SIGUSR1),
    )
    try:
        daemon.start()
    except StartupError as exc:
        log.critical("cannot start: %s", exc)
        return 1
    try:
        while True:
            received = signal.sigwait(SIGNALS)
            if received == signal.SIGHUP:
                daemon.reload()
                continue
            if received != signal.SIGUSR1:
                log.info("%s: stopping every output and exiting", signal.Signals(received).name)
            break
    finally:  # whatever happens in here, the outputs go off before the process ends
        try:
            daemon.shutdown()
        except Exception as exc:  # a bug: say so on one line and exit non-zero, so systemd runs safe-stop
            log.critical("shutdown failed: %r", exc)
            return 1
    return 1 if daemon.failure else 0


def _pin_printer(config: Config) -> Callable[[int, float], None]:
    """With --simulate, print each pin change by name so a person can see what the motors would do."""
    roles = {pin: f"{m.name}.{role}" for m in config.motors for role, pin in m.pins.used().items()}
    start = time.monotonic()

    def show(bcm: int, state: float) -> None:
        value = "high" if state == 1 else "low" if state == 0 else f"{state:.0%}"
        print(f"[sim {time.monotonic() - start:9.3f}s] GPIO{bcm:<2} {roles.get(bcm, '?'):<14} {value}", flush=True)

    return show


def check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    print(config.summary())
    print("config OK")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rover-safety", description="Safety daemon for Raspberry Pi rovers.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
        return c

    s = command("serve", "run the daemon in the foreground")
    s.add_argument("--simulate", action="store_true", help="use simulated pins and print what they do")
    s.set_defaults(func=serve)
    command("check-config", "validate the config and print the effective settings").set_defaults(func=check_config)
    ss = command("safe-stop", "drive every configured output off, without the daemon, and exit")
    ss.add_argument("--simulate", action="store_true", help="use simulated pins")
    ss.set_defaults(func=safe_stop_command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    journal.setup(args.verbose)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
