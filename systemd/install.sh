#!/usr/bin/env bash
# Install or uninstall rover-safety as a systemd service on a rover (Raspberry Pi OS / Debian). Run as root:
#   sudo systemd/install.sh            install (or upgrade) and enable --now
#   sudo systemd/install.sh --uninstall  remove the service and the venv; keep /etc/rover-safety and the user
set -euo pipefail

PREFIX=/opt/rover-safety
CONF_DIR=/etc/rover-safety
UNIT_DIR=/etc/systemd/system
CATALOG_DIR=/usr/lib/systemd/catalog
SRC=$(cd "$(dirname "$0")/.." && pwd)

say() { printf 'rover-safety install: %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0 $*)" >&2; exit 1; }

if [ "${1:-}" = "--uninstall" ]; then
    systemctl disable --now rover-safety.service 2>/dev/null || true
    rm -f "$UNIT_DIR/rover-safety.service" "$CATALOG_DIR/rover-safety.catalog"
    rm -rf "$UNIT_DIR/rover-safety.service.d" "$PREFIX"
    systemctl daemon-reload
    journalctl --update-catalog || true
    say "removed; $CONF_DIR and the rover-safety user are kept"
    exit 0
fi

# A system user with no login and no home, in the gpio group (which owns /dev/gpiochip* on Raspberry Pi OS).
getent group gpio >/dev/null || groupadd --system gpio
getent group rover-safety >/dev/null || groupadd --system rover-safety
id rover-safety >/dev/null 2>&1 || useradd --system --gid rover-safety --groups gpio --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin rover-safety
usermod -a -G gpio rover-safety

say "installing the package into $PREFIX/venv"
python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
"$PREFIX/venv/bin/pip" install -q "$SRC[systemd]"
install -m 644 "$SRC/README.md" "$PREFIX/README.md"

install -d -m 755 "$CONF_DIR"
if [ ! -e "$CONF_DIR/config.yaml" ]; then
    sed -e 's/^  pin_factory: mock .*/  pin_factory: pigpio                   # pigpio | lgpio | rpigpio | mock/' \
        "$SRC/config/example.yaml" > "$CONF_DIR/config.yaml"
    chmod 644 "$CONF_DIR/config.yaml"
    say "wrote a default $CONF_DIR/config.yaml (pin_factory: pigpio): edit it for your wiring"
else
    say "keeping the existing $CONF_DIR/config.yaml"
fi
"$PREFIX/venv/bin/rover-safety" check-config --config "$CONF_DIR/config.yaml" >/dev/null

install -m 644 "$SRC/systemd/rover-safety.service" "$UNIT_DIR/rover-safety.service"
rm -f "$UNIT_DIR/rover-safety.service.d/pigpio.conf"
if grep -Eq '^\s*pin_factory:\s*pigpio' "$CONF_DIR/config.yaml"; then
    install -d "$UNIT_DIR/rover-safety.service.d"
    printf '[Unit]\nWants=pigpiod.service\nAfter=pigpiod.service\n' > "$UNIT_DIR/rover-safety.service.d/pigpio.conf"
fi
install -d "$CATALOG_DIR"
install -m 644 "$SRC/systemd/rover-safety.catalog" "$CATALOG_DIR/rover-safety.catalog"
journalctl --update-catalog || true

systemctl daemon-reload
if [ "${1:-}" = "--no-start" ]; then
    systemctl enable rover-safety.service
else
    systemctl enable --now rover-safety.service
    say "running: systemctl status rover-safety; expiries: journalctl -u rover-safety -f"
fi
