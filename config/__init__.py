"""Configuration: YAML in, a validated `Config` out. Knows nothing of gRPC or GPIO."""

from .errors import ConfigError
from .fields import parse_duration
from .files import read_limited
from .isolated import load_isolated
from .loading import load, parse
from .model import (
    ApiKey,
    BaseConfig,
    ClientLimits,
    Config,
    MotorConfig,
    MotorPins,
    RemoteAuth,
    RemoteConfig,
    RemoteTls,
    TlsFiles,
    format_duration,
)
from .yamltree import MAX_BYTES, MAX_DEPTH, MAX_VALUES

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_VALUES",
    "ApiKey",
    "BaseConfig",
    "ClientLimits",
    "Config",
    "ConfigError",
    "MotorConfig",
    "MotorPins",
    "RemoteAuth",
    "RemoteConfig",
    "RemoteTls",
    "TlsFiles",
    "format_duration",
    "load",
    "load_isolated",
    "parse",
    "parse_duration",
    "read_limited",
]
