"""Configuration: YAML in, a validated `Config` out. Knows nothing of gRPC or GPIO."""

from .load import ConfigError, load, parse, parse_duration
from .model import BaseConfig, Config, MotorConfig, MotorPins, format_duration

__all__ = [
    "BaseConfig",
    "Config",
    "ConfigError",
    "MotorConfig",
    "MotorPins",
    "format_duration",
    "load",
    "parse",
    "parse_duration",
]
