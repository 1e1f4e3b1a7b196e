"""A rover of two boards for tests: a sub-part daemon ("arm", one motor "shoulder" and one "elbow") and a primary
whose config lists it under remotes, each on its own pigpiod emulator, with a key and a pinned certificate between
them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .daemons import example_config
from .keys import Certificate, Key, new_certificate, new_key, secured
from .pigpiod_emulator import EmulatorClient

SHOULDER_PWM = 20
ARM_MOTORS = """components:
  - name: shoulder
    type: motor
    model: gpio
    attributes: {pins: {dir: 21, pwm: 20}, max_rpm: 60}
  - name: elbow
    type: motor
    model: gpio
    attributes: {pins: {a: 23, b: 24}, max_rpm: 60}
"""


def arm_config(emulator: EmulatorClient, port: int, window: str, certificate: Certificate, primary: Key) -> str:
    """The sub-part: its own emulator, a fixed port, TLS, and the primary's key."""
    text = f"""network:
  bind_address: "127.0.0.1:{port}"
  sessions: {{heartbeat_window: {window}}}
gpio:
  pin_factory: pigpio
  pigpio: {{host: 127.0.0.1, port: {emulator.port}}}
{ARM_MOTORS}"""
    return secured(text, certificate, (primary,))


def primary_config(emulator: EmulatorClient, port: int, window: str, arm_port: int, certificate: Certificate,
                   primary: Key) -> str:
    """The primary: the example's motors and base on its own emulator, and the arm under remotes."""
    text = example_config(heartbeat_window=window, pin_factory="pigpio", host="127.0.0.1", port=emulator.port)
    text = text.replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"')
    return text + f"""remotes:
  - name: arm
    address: "localhost:{arm_port}"
    tls: {{fingerprint: "{certificate.fingerprint}"}}
    auth: {{key_id: {primary.id}, key: {primary.key}}}
"""


@dataclass
class TwoBoards:
    """Where everything of a two-board rover is."""

    directory: Path
    certificate: Certificate
    primary_key: Key

    @classmethod
    def make(cls, directory: Path) -> TwoBoards:
        return cls(directory, new_certificate(directory / "arm-tls"), new_key("primary"))

    def write(self, name: str, text: str) -> Path:
        path = self.directory / name
        path.write_text(text)
        return path
