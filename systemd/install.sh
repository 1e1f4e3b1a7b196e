#!/usr/bin/env bash
# Install or uninstall rover-safety as a systemd service on a rover (Raspberry Pi OS / Debian). Run as root:
#   sudo systemd/install.sh               install (or upgrade): package, unit, catalog, user, default config; enable
#                                         and (re)start the service
#   sudo systemd/install.sh --no-start    the same, but only enable it (it starts at the next boot)
#   sudo systemd/install.sh --uninstall   remove the service, the catalog and the venv; keep the config and the user
#   sudo systemd/install.sh --user-only   only create the rover-safety user and the gpio group
#   systemd/install.sh --detect-board     say which pin factory a new config gets on this board, and why; change
#                                         nothing (no root needed)
#
# A new config gets the pin factory that fits the board: lgpio on a Raspberry Pi 5 (pigpiod does not run there),
# pigpio on older Pis (whose pigpiod must run), and pigpio also off a Pi, saying so (only a pigpiod elsewhere can
# drive a rover's pins from here; mock, simulated pins, would have the service report ready while guarding
# nothing). The board is read from /proc/device-tree/model, else from /proc/cpuinfo's Revision.
#
# An existing $ROVER_SAFETY_CONF_DIR/config.yaml is never overwritten. The locations can be moved with these
# environment variables (deliberately not plain PREFIX etc., which a build environment may export):
#   ROVER_SAFETY_PREFIX   (/opt/rover-safety)        the README, and the venv unless ROVER_SAFETY_VENV is given
#   ROVER_SAFETY_VENV     ($PREFIX/venv)             an existing venv with rover-safety installed is used as is
#                                                     (no pip); otherwise one is made from ROVER_SAFETY_PYTHON
#   ROVER_SAFETY_PYTHON   (/usr/bin/python3)         the system's Python: a venv made from a Python under /root or
#                                                     /home cannot be run by the service user (nor under ProtectHome=)
#   ROVER_SAFETY_CONF_DIR (/etc/rover-safety)
#   ROVER_SAFETY_UNIT_DIR (/etc/systemd/system)      under /run the unit is enabled with --runtime
#   ROVER_SAFETY_CATALOG_DIR (/usr/lib/systemd/catalog)  journalctl --update-catalog reads only this directory
#   ROVER_SAFETY_PIN_FACTORY (from the board)  a new config's gpio.pin_factory: pigpio, lgpio, rpigpio or mock
#   ROVER_SAFETY_BOARD_MODEL (/proc/device-tree/model) and ROVER_SAFETY_CPUINFO (/proc/cpuinfo): where the board
#                                                     is read from
# The unit's ExecStart=/ExecStopPost= paths and --config are rewritten to match.
set -euo pipefail

PREFIX=${ROVER_SAFETY_PREFIX:-/opt/rover-safety}
VENV=${ROVER_SAFETY_VENV:-$PREFIX/venv}
PYTHON=${ROVER_SAFETY_PYTHON:-/usr/bin/python3}
CONF_DIR=${ROVER_SAFETY_CONF_DIR:-/etc/rover-safety}
UNIT_DIR=${ROVER_SAFETY_UNIT_DIR:-/etc/systemd/system}
CATALOG_DIR=${ROVER_SAFETY_CATALOG_DIR:-/usr/lib/systemd/catalog}
BOARD_MODEL=${ROVER_SAFETY_BOARD_MODEL:-/proc/device-tree/model}
CPUINFO=${ROVER_SAFETY_CPUINFO:-/proc/cpuinfo}
UNIT=rover-safety.service
SRC=$(cd "$(dirname "$0")/.." && pwd)

say() { printf 'rover-safety install: %s\n' "$*"; }
die() { printf 'rover-safety install: %s\n' "$*" >&2; exit 1; }

mode=install
start=yes
for arg in "$@"; do
    case $arg in
        --uninstall) mode=uninstall ;;
        --user-only) mode=user ;;
        --no-start) start=no ;;
        --detect-board) mode=detect ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (see $0 --help)" ;;
    esac
done

# --- which pin factory fits this board ---------------------------------------------------------------------------
# Sets $factory (pigpio | lgpio) and $board (what the board is, and how that was found).
detect_board() {
    local model="" revision="" rev processor
    if [ -r "$BOARD_MODEL" ]; then
        model=$(tr -d '\0' < "$BOARD_MODEL")
    fi
    if [ -n "$model" ]; then
        board="$model (from $BOARD_MODEL)"
        case $model in
            "Raspberry Pi 5"* | "Raspberry Pi Compute Module 5"*) factory=lgpio; return ;;  # also the Pi 500
            "Raspberry Pi"*) factory=pigpio; return ;;
        esac
        factory=pigpio; board="not a Raspberry Pi: $board"; return
    fi
    if [ -r "$CPUINFO" ]; then
        revision=$(sed -n 's/^Revision[[:space:]]*:[[:space:]]*\([0-9a-fA-F]\{1,8\}\)[[:space:]]*$/\1/p' "$CPUINFO" | head -n 1)
        model=$(sed -n 's/^Model[[:space:]]*:[[:space:]]*//p' "$CPUINFO" | head -n 1)
    fi
    if [ -n "$revision" ]; then
        rev=$((16#$revision))
        board="${model:-a board} with Revision $revision (from $CPUINFO)"
        if (( rev & 0x800000 )); then  # new-style code: the processor is bits 12-15 (4: BCM2712, the Pi 5's)
            processor=$(( (rev >> 12) & 0xF ))
            if (( processor == 4 )); then factory=lgpio; else factory=pigpio; fi
            return
        fi
        if (( (rev & 0xFFFFFF) >= 0x2 && (rev & 0xFFFFFF) <= 0x15 )); then  # an old-style code: a first Pi
            factory=pigpio; return
        fi
    fi
    factory=pigpio
    board="not a Raspberry Pi: no board model in $BOARD_MODEL and no Raspberry Pi revision in $CPUINFO"
}

# The pin factory for a new config, said out loud (never a silent choice); sets $factory.
choose_factory() {
    detect_board
    if [ -n "${ROVER_SAFETY_PIN_FACTORY:-}" ]; then
        case $ROVER_SAFETY_PIN_FACTORY in
            pigpio | lgpio | rpigpio | mock) ;;
            *) die "ROVER_SAFETY_PIN_FACTORY=$ROVER_SAFETY_PIN_FACTORY: use pigpio, lgpio, rpigpio or mock" ;;
        esac
        say "board: $board; pin_factory: $ROVER_SAFETY_PIN_FACTORY, as ROVER_SAFETY_PIN_FACTORY says"
        if [ "$factory" = lgpio ] && [ "$ROVER_SAFETY_PIN_FACTORY" != lgpio ]; then
            say "warning: this is a Raspberry Pi 5, which only lgpio drives (pigpiod and RPi.GPIO do not run on it)"
        fi
        factory=$ROVER_SAFETY_PIN_FACTORY
        return
    fi
    case $board in
        "not a Raspberry Pi"*)
            say "board: $board; pin_factory: pigpio, which needs a pigpiod: point gpio.pigpio.host at a Pi's" \
                "(pigpiod with remote access), or set pin_factory: mock to try it on simulated pins (nothing driven)" ;;
        *)
            if [ "$factory" = lgpio ]; then
                say "board: $board; pin_factory: lgpio (a Raspberry Pi 5 has only lgpio: pigpiod does not run on it)"
            else
                say "board: $board; pin_factory: pigpio (lgpio works too); pigpiod must run:" \
                    "sudo apt install pigpiod && sudo systemctl enable --now pigpiod"
            fi ;;
    esac
}

if [ "$mode" = detect ]; then
    choose_factory
    printf 'pin_factory: %s\n' "$factory"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"

# A unit in /run disappears at reboot, and so must its enablement (systemctl refuses anything else there).
runtime=()
case $UNIT_DIR in /run/*) runtime=(--runtime) ;; esac

update_catalog() {
    # journalctl -x explains each rover-safety event from this database; it only ever reads the standard directory.
    if [ "$CATALOG_DIR" = /usr/lib/systemd/catalog ]; then
        journalctl --update-catalog || say "warning: journalctl --update-catalog failed"
    else
        say "catalog left in $CATALOG_DIR: journalctl -x reads only /usr/lib/systemd/catalog"
    fi
}

create_user() {
    # A system user with no login and no home, in the gpio group (which owns /dev/gpiochip* on Raspberry Pi OS).
    getent group gpio >/dev/null || groupadd --system gpio
    getent group rover-safety >/dev/null || groupadd --system rover-safety
    id rover-safety >/dev/null 2>&1 || useradd --system --gid rover-safety --groups gpio --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin rover-safety
    id -nG rover-safety | tr ' ' '\n' | grep -qx gpio || usermod -a -G gpio rover-safety
}

if [ "$mode" = user ]; then
    create_user
    say "user rover-safety (groups: $(id -nG rover-safety)) is ready"
    exit 0
fi

if [ "$mode" = uninstall ]; then
    systemctl disable "${runtime[@]}" --now "$UNIT" 2>/dev/null || true  # ExecStopPost drives every output off
    rm -f "$UNIT_DIR/$UNIT" "$CATALOG_DIR/rover-safety.catalog"
    rm -rf "$UNIT_DIR/$UNIT.d"
    # Only what this script put there: never `rm -rf $PREFIX`, and never a venv it did not make.
    [ "$VENV" != "$PREFIX/venv" ] || rm -rf "$PREFIX/venv"
    rm -f "$PREFIX/README.md"
    rmdir "$PREFIX" 2>/dev/null || true
    systemctl daemon-reload
    update_catalog
    say "removed; $CONF_DIR and the rover-safety user are kept"
    exit 0
fi

create_user

if [ -n "${ROVER_SAFETY_VENV:-}" ]; then
    [ -x "$VENV/bin/rover-safety" ] || die "ROVER_SAFETY_VENV=$VENV has no bin/rover-safety"
    say "using the existing venv $VENV"
else
    say "installing the package into $VENV (from $PYTHON)"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "${SRC}[systemd]"
fi
install -d -m 755 "$PREFIX"
install -m 644 "$SRC/README.md" "$PREFIX/README.md"
# The service user must be able to run what the unit runs (a venv from a Python under /root cannot be).
(cd / && runuser -u rover-safety -- "$VENV/bin/python" -c 'import rover_safety.daemon.cli, systemd.daemon') \
    || die "the rover-safety user cannot run $VENV/bin/python with rover_safety and systemd-python: make the venv \
from the system's Python (ROVER_SAFETY_PYTHON=/usr/bin/python3) in a directory every user can traverse"

install -d -m 755 "$CONF_DIR"
if [ ! -e "$CONF_DIR/config.yaml" ]; then
    choose_factory
    line=$(printf '  pin_factory: %-25s# pigpio | lgpio | rpigpio | mock' "$factory")
    sed -e "s/^  pin_factory: mock .*/$line/" "$SRC/config/example.yaml" > "$CONF_DIR/config.yaml.new"
    grep -qx "$line" "$CONF_DIR/config.yaml.new" || die "config/example.yaml has no '  pin_factory: mock' line to set"
    chmod 644 "$CONF_DIR/config.yaml.new"
    mv -n "$CONF_DIR/config.yaml.new" "$CONF_DIR/config.yaml"
    say "wrote a default $CONF_DIR/config.yaml (pin_factory: $factory): edit it for your wiring"
else
    say "keeping the existing $CONF_DIR/config.yaml"
fi
# A TLS certificate for this rover's names and addresses, made once (never overwritten): serving a laptop or a
# phone off loopback needs it (and API keys: rover-safety gen-key NAME). Its key is readable by the service's group.
if [ ! -e "$CONF_DIR/tls/cert.pem" ] && [ ! -e "$CONF_DIR/tls/key.pem" ]; then
    "$VENV/bin/rover-safety" gen-cert --dir "$CONF_DIR/tls" --group rover-safety | sed 's/^/rover-safety install:   /'
    say "made a TLS certificate in $CONF_DIR/tls (clients pin the fingerprint above); see README: On the rover"
else
    say "keeping the existing TLS certificate in $CONF_DIR/tls"
fi

# As the service user: a config only root can read would pass here and fail at every start.
runuser -u rover-safety -- "$VENV/bin/rover-safety" check-config --config "$CONF_DIR/config.yaml" >/dev/null \
    || die "$CONF_DIR/config.yaml is not valid, or not readable by the rover-safety user (see above); fix it and run this again"

install -d -m 755 "$UNIT_DIR"
sed -e "s#/opt/rover-safety/venv/bin/rover-safety#$VENV/bin/rover-safety#g" \
    -e "s#/opt/rover-safety/README.md#$PREFIX/README.md#g" \
    -e "s#/etc/rover-safety/config.yaml#$CONF_DIR/config.yaml#g" \
    "$SRC/systemd/$UNIT" > "$UNIT_DIR/$UNIT.new"
chmod 644 "$UNIT_DIR/$UNIT.new"
mv "$UNIT_DIR/$UNIT.new" "$UNIT_DIR/$UNIT"

# The unit is ordered After=pigpiod.service in any case (so that at shutdown it stops, and safe-stop runs, while
# pigpiod still runs); it pulls pigpiod in only when the config uses a pigpiod on this machine, so that a Pi 5 on
# lgpio, or a rover whose pigpiod runs elsewhere, does not start one. Re-run this script after changing gpio:.
rm -f "$UNIT_DIR/$UNIT.d/pigpio.conf"
rmdir "$UNIT_DIR/$UNIT.d" 2>/dev/null || true
backend=$("$VENV/bin/python" -c 'import sys; from rover_safety.config import load; c = load(sys.argv[1]); print(c.pin_factory, c.pigpio_host)' "$CONF_DIR/config.yaml")
case $backend in
    "lgpio "*)
        # lgpio is not among the package's requirements (pip cannot build it everywhere): a Pi 5 needs it in the venv
        # (Raspberry Pi OS's python3-lgpio serves only the system's own Python). PyPI has wheels for Python 3.9-3.12.
        if ! "$VENV/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("lgpio") is None)'; then
            if [ -n "${ROVER_SAFETY_VENV:-}" ]; then
                say "warning: pin factory lgpio, but $VENV has no lgpio module: the service will refuse to start" \
                    "until it does ($VENV/bin/pip install lgpio)"
            else
                say "pin factory lgpio: installing lgpio into $VENV"
                "$VENV/bin/pip" install -q lgpio || die "cannot install lgpio into $VENV (pip install lgpio): the" \
                    "service needs it on a Raspberry Pi 5"
            fi
        fi ;;
    "pigpio localhost" | "pigpio 127."* | "pigpio ::1" | "pigpio $HOSTNAME")
        detect_board
        if [ "$factory" = lgpio ]; then
            say "warning: $CONF_DIR/config.yaml uses pigpio on this machine, a Raspberry Pi 5 ($board), where" \
                "pigpiod does not run: set gpio.pin_factory: lgpio and run this again"
        fi
        install -d -m 755 "$UNIT_DIR/$UNIT.d"
        printf '# Written by install.sh: the config uses pigpiod on this machine.\n[Unit]\nWants=pigpiod.service\nAfter=pigpiod.service\n' \
            > "$UNIT_DIR/$UNIT.d/pigpio.conf"
        say "pin factory pigpio on this machine: the service wants pigpiod.service" ;;
esac

install -d -m 755 "$CATALOG_DIR"
install -m 644 "$SRC/systemd/rover-safety.catalog" "$CATALOG_DIR/rover-safety.catalog"
update_catalog

systemctl daemon-reload
systemctl enable "${runtime[@]}" "$UNIT"
if [ "$start" = yes ]; then
    systemctl restart "$UNIT"  # an upgrade takes effect now (the restart stops every output first)
    say "running: systemctl status rover-safety; expiries: journalctl -u rover-safety -f"
else
    say "enabled; start it with: systemctl start rover-safety"
fi
