"""`rover-safety`: one command line for the daemon (serve, check-config, safe-stop, gen-key, gen-cert) and the
operator (sessions, watch, stop-all, drive: clients of the daemon's API, in rover_safety.client.commands)."""

from __future__ import annotations

import argparse
import atexit
import faulthandler
import logging
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from rover_safety.config import Config, ConfigError, load

from . import journal
from .safe_stop import safe_stop_command

DEFAULT_CONFIG = "/etc/rover-safety/config.yaml"
DEFAULT_TLS_DIR = "/etc/rover-safety/tls"
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
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
    from .realtime import raise_process_priority

    raise_process_priority()  # before any thread starts: they all inherit it
    # Every thread started from here on inherits these blocked; only the main thread takes them, in sigwait().
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    from .app import Daemon  # imports grpc: only once the config is known to be good
    from .errors import StartupError

    if args.web:
        config = _with_page(config, args.web, args.simulate)
        if config is None:
            return 1
    for warning in config.warnings:
        log.warning("%s", warning)
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


def _with_page(config: Config, address: str, simulate: bool) -> Config | None:
    """The config with the operator page on `address` (`serve --web`).

    Off loopback the page needs API keys and TLS, like the gRPC port. With --simulate and neither configured, this
    makes both for this run only (a key called `phone` and a certificate in a temporary folder, gone with the
    process), so that a person gets the page on their phone in one step; without --simulate the config must have
    them (the open-door rule explains how).
    """
    from rover_safety.config import ApiKey, TlsFiles

    from . import exposure

    config = replace(config, web_bind_address=address)
    if not simulate or exposure.is_loopback(address) or exposure.protected(config):
        return config
    from . import tls
    from .auth import key_hash

    folder = Path(tempfile.mkdtemp(prefix="rover-safety-demo-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    names, addresses = tls.local_names()
    cert, key_file = tls.generate(folder, names, addresses, days=2)
    key = secrets.token_urlsafe(16)
    print(f"--simulate --web {address}: for this run only, API key id `phone`, key {key}; certificate "
          f"{tls.fingerprint(cert.read_bytes())}", flush=True)
    return replace(config, tls=TlsFiles(str(cert), str(key_file)),
                   api_keys=(*config.api_keys, ApiKey("phone", key_hash(key))))


def _pin_printer(config: Config) -> Callable[[int, float], None]:
    """With --simulate, print each pin change by name so a person can see what the motors would do."""
    roles = {pin: f"{m.name}.{role}" for m in config.motors for role, pin in m.pins.used().items()}
    start = time.monotonic()

    def show(bcm: int, state: float) -> None:
        value = "high" if state == 1 else "low" if state == 0 else f"{state:.0%}"
        print(f"[sim {time.monotonic() - start:9.3f}s] GPIO{bcm:<2} {roles.get(bcm, '?'):<14} {value}", flush=True)

    return show


def check_config(args: argparse.Namespace) -> int:
    """Validate the config, print the effective settings and every warning; exit 1 on an error."""
    config = _load(args.config)
    if config is None:
        return 1
    print(config.summary())
    for warning in config.warnings:
        print(f"warning: {warning}")
    print("config OK")
    return 0


def gen_key(args: argparse.Namespace) -> int:
    """Print a new random API key and the config line that lets it in (the daemon keeps only its hash)."""
    from .auth import key_hash

    if not KEY_ID.fullmatch(args.name):
        log.error("gen-key: %r is not a key id: use letters, digits, _ . - (e.g. laptop, ops-phone)", args.name)
        return 1
    key = secrets.token_urlsafe(32)
    print(f"key id:  {args.name}")
    print(f"api key: {key}")
    print("  (shown once: put it in the client's profile, e.g. ~/.config/rover-safety/client.yaml; the daemon")
    print("   keeps only its SHA-256)")
    print("add under auth.api_keys in the daemon's config, then `sudo systemctl reload rover-safety`:")
    print(f"  - {{id: {args.name}, key_sha256: {key_hash(key)}}}")
    return 0


def gen_cert(args: argparse.Namespace) -> int:
    """Make a self-signed TLS certificate for this machine's names and addresses; print its fingerprint."""
    from . import tls

    directory = Path(args.dir)
    if args.show:
        try:
            print(f"SHA-256 fingerprint: {tls.fingerprint((directory / 'cert.pem').read_bytes())}")
        except (OSError, ValueError) as exc:
            log.error("gen-cert --show: cannot read %s: %s", directory / "cert.pem", exc)
            return 1
        return 0
    existing = [p for p in (directory / "cert.pem", directory / "key.pem") if p.exists()]
    if existing and not args.force:
        log.error("gen-cert: not overwriting %s (use --force to replace)", " and ".join(map(str, existing)))
        return 1
    for path in existing:
        path.unlink()
    names, addresses = tls.local_names()
    names = list(dict.fromkeys([*args.name, *names]))
    addresses = list(dict.fromkeys([*args.address, *addresses]))
    try:
        cert, key = tls.generate(directory, names, addresses, args.days, group=args.group)
    except (OSError, ValueError, KeyError) as exc:
        log.error("gen-cert: cannot write the certificate into %s: %s", directory, exc)
        return 1
    print(f"certificate: {cert}")
    print(f"key:         {key} (mode {key.stat().st_mode & 0o777:04o}, group {args.group or 'of the user'})")
    print(f"names:       {', '.join(names)}")
    print(f"addresses:   {', '.join(addresses)}")
    print(f"SHA-256 fingerprint: {tls.fingerprint(cert.read_bytes())}")
    print("in the daemon's config:")
    print(f"  network:\n    tls: {{cert_file: {cert}, key_file: {key}}}")
    return 0


DAEMON_COMMANDS = ("serve", "check-config", "safe-stop", "gen-key", "gen-cert")


def parser(operator: bool = True) -> argparse.ArgumentParser:
    """The command line; without `operator`, only the daemon's commands (safe-stop then never imports gRPC)."""
    p = argparse.ArgumentParser(prog="rover-safety", description="Safety daemon for Raspberry Pi rovers.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
        return c

    s = command("serve", "run the daemon in the foreground")
    s.add_argument("--simulate", action="store_true", help="use simulated pins and print what they do")
    s.add_argument("--web", metavar="ADDRESS", help="serve the operator page on host:port (network.web.bind_address); "
                                                    "with --simulate off loopback, a key and a certificate are made "
                                                    "for this run")
    s.set_defaults(func=serve)
    command("check-config", "validate the config and print the effective settings").set_defaults(func=check_config)
    ss = command("safe-stop", "drive every configured output off, without the daemon, and exit")
    ss.add_argument("--simulate", action="store_true", help="use simulated pins")
    ss.set_defaults(func=safe_stop_command)
    gk = sub.add_parser("gen-key", help="make a new API key and print the config line for it",
                        description="Make a new random API key; print it once, and the line (with only its "
                                    "SHA-256) to paste under auth.api_keys.")
    gk.add_argument("name", help="the key's id, e.g. laptop (clients authenticate as it; sessions belong to it)")
    gk.set_defaults(func=gen_key)
    gc = sub.add_parser("gen-cert", help="make a self-signed TLS certificate for this machine",
                        description="Make a self-signed certificate (and key) for this machine's host name, "
                                    "NAME.local and addresses; print its SHA-256 fingerprint for clients to pin.")
    gc.add_argument("--dir", default=DEFAULT_TLS_DIR, help=f"where to write cert.pem and key.pem "
                                                            f"(default {DEFAULT_TLS_DIR})")
    gc.add_argument("--name", action="append", default=[], help="another DNS name for the certificate")
    gc.add_argument("--address", action="append", default=[], help="another IP address for the certificate")
    gc.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    gc.add_argument("--force", action="store_true", help="replace an existing certificate and key")
    gc.add_argument("--show", action="store_true", help="only print the existing certificate's fingerprint")
    gc.add_argument("--group", help="let this group read the key (the daemon's, e.g. rover-safety): mode 0640")
    gc.set_defaults(func=gen_cert)
    if operator:
        from rover_safety.client.commands import register  # the operator's commands: clients of the wire

        register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser(operator=not any(word in DAEMON_COMMANDS for word in words)).parse_args(words)
    journal.setup(args.verbose)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
