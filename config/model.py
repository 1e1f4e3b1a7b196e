"""The validated, immutable configuration the rest of the daemon is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .dicts import from_jsonable, to_jsonable

PIN_FACTORIES = ("pigpio", "lgpio", "rpigpio", "mock")

DEFAULT_HEARTBEAT_WINDOW = 2.0
MIN_HEARTBEAT_WINDOW = 0.030
MAX_HEARTBEAT_WINDOW = 60.0
MIN_TOKEN_TTL = 60.0
MAX_TOKEN_TTL = 30 * 24 * 3600.0


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
class TlsFiles:
    """The server's certificate and key (PEM files); with `client_ca_file`, clients must show a certificate too."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


@dataclass(frozen=True)
class ClientLimits:
    """How much of the daemon one client (an owner: a key id, or a peer host without one) or all may take."""

    max_sessions: int = 1024
    sessions_per_owner: int = 256
    session_starts_per_second: int = 100
    connections_per_peer: int = 16  # connections of one host with calls in flight at once
    max_connections: int = 512
    calls_in_flight_per_owner: int = 64
    calls_per_second_per_owner: int = 500  # plus what its live sessions' heartbeats need (twice over)
    log_lines_per_second: int = 20

    @property
    def session_start_burst(self) -> int:
        """The token bucket's size: twice the rate."""
        return 2 * self.session_starts_per_second

    @property
    def call_burst(self) -> int:
        """Calls an owner may save up: a second's worth."""
        return self.calls_per_second_per_owner


@dataclass(frozen=True)
class ApiKey:
    """A client's key, known by the SHA-256 of the key (64 lowercase hex digits), never the key itself."""

    id: str
    key_sha256: str


@dataclass(frozen=True)
class RemoteTls:
    """How the primary checks a remote's certificate: a CA file, a pinned fingerprint, the system's CAs, or not."""

    ca_file: str | None = None
    fingerprint: str | None = None  # SHA-256, 64 lowercase hex digits
    insecure: bool = False


@dataclass(frozen=True)
class RemoteAuth:
    key_id: str
    key: str = field(repr=False)  # a secret: kept out of repr(), and summary() prints "(set)"


@dataclass(frozen=True)
class RemoteConfig:
    """A sub-part (another rover-safety daemon) this daemon forwards to."""

    name: str
    address: str
    tls: RemoteTls | None = None
    auth: RemoteAuth | None = None


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
    insecure: bool = False  # literally true: serve off loopback without auth and TLS (the daemon checks)
    tls: TlsFiles | None = None
    limits: ClientLimits = field(default_factory=ClientLimits)
    web_bind_address: str | None = None  # None: the operator page is off
    metrics_bind_address: str | None = None  # None: no metrics endpoint
    api_keys: tuple[ApiKey, ...] = field(default_factory=tuple)
    token_ttl: float | None = None  # seconds; None: a token is valid until restart or its key's removal
    public_stop: bool = False
    lgpio_chip: int | None = None  # None: auto-detect
    remotes: tuple[RemoteConfig, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)  # each `file:line: key: text`

    def summary(self) -> str:
        """The effective config as readable lines, for `check-config`; secrets are never shown."""
        from .summary import summary_lines

        return "\n".join(summary_lines(self))

    def to_dict(self) -> dict[str, Any]:
        """The whole config as JSON-safe dicts, lists and scalars (secrets included: do not log it)."""
        data = to_jsonable(self)
        assert isinstance(data, dict)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The Config `to_dict()` gave; ValueError if `data` does not have its shape."""
        config = from_jsonable(cls, data, "config")
        assert isinstance(config, cls)
        return config


def format_duration(seconds: float) -> str:
    """Render seconds the way the config spells durations (`2s`, `500ms`)."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds * 1000:g}ms"
