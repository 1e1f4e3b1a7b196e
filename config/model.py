"""The validated, immutable configuration the rest of the daemon is built from."""

from __future__ import annotations

from dataclasses import dataclass, field

PIN_FACTORIES = ("pigpio", "lgpio", "rpigpio", "mock")

DEFAULT_HEARTBEAT_WINDOW = 2.0
MIN_HEARTBEAT_WINDOW = 0.030
MAX_HEARTBEAT_WINDOW = 60.0


@dataclass(frozen=True)
class MotorPins:
    """BCM pin numbers of one motor's bridge; which are set decides the wiring."""

    a: int | None = None
    b: int | None = None
    pwm: int | None = None
    dir: int | None = None
    en_high: int | None = None
    en_low: int | None = None

    @property
    def wiring(self) -> str:
        """`a+b+pwm`, `dir+pwm` or `a+b`."""
        if self.dir is not None:
            return "dir+pwm"
        return "a+b+pwm" if self.pwm is not None else "a+b"

    def used(self) -> dict[str, int]:
        """Role -> pin for every pin this motor drives."""
        return {role: pin for role, pin in vars(self).items() if pin is not None}


@dataclass(frozen=True)
class MotorConfig:
    name: str
    pins: MotorPins
    pwm_freq: int = 800
    max_rpm: float | None = None
    max_power_pct: float = 1.0
    min_power_pct: float = 0.0
    dir_flip: bool = False


@dataclass(frozen=True)
class BaseConfig:
    name: str
    left: tuple[str, ...]
    right: tuple[str, ...]
    width_mm: float
    wheel_circumference_mm: float


@dataclass(frozen=True)
class Config:
    """Everything `rover-safety serve` needs, with every default applied."""

    source: str = "<defaults>"
    bind_address: str = "127.0.0.1:8080"
    heartbeat_window: float = DEFAULT_HEARTBEAT_WINDOW
    allow_unmonitored_motion: bool = False
    pin_factory: str = "pigpio"
    pigpio_host: str = "localhost"
    pigpio_port: int = 8888
    motors: tuple[MotorConfig, ...] = field(default_factory=tuple)
    bases: tuple[BaseConfig, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """The effective config as readable lines, for `check-config`."""
        lines = [
            f"config: {self.source}",
            f"network.bind_address: {self.bind_address}",
            f"network.sessions.heartbeat_window: {format_duration(self.heartbeat_window)}",
            f"network.sessions.allow_unmonitored_motion: {str(self.allow_unmonitored_motion).lower()}",
            f"gpio.pin_factory: {self.pin_factory}",
        ]
        if self.pin_factory == "pigpio":
            lines.append(f"gpio.pigpio: {self.pigpio_host}:{self.pigpio_port}")
        for m in self.motors:
            pins = ", ".join(f"{role}={pin}" for role, pin in m.pins.used().items())
            rpm = f"{m.max_rpm:g}" if m.max_rpm is not None else "none"
            lines.append(
                f"motor {m.name}: {m.pins.wiring} ({pins}), pwm_freq {m.pwm_freq} Hz, max_rpm {rpm}, "
                f"power {m.min_power_pct:g}..{m.max_power_pct:g}, dir_flip {str(m.dir_flip).lower()}"
            )
        for b in self.bases:
            lines.append(
                f"base {b.name}: left {list(b.left)}, right {list(b.right)}, width {b.width_mm:g} mm, "
                f"wheel circumference {b.wheel_circumference_mm:g} mm"
            )
        return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """Render seconds the way the config spells durations (`2s`, `500ms`)."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds * 1000:g}ms"
