"""Everything configured, built on one pin factory: the resources by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpiozero.pins import Factory
from rover_safety.config import BaseConfig, Config

from .base import WheeledBase
from .errors import StopFailed
from .failures import Failures
from .motor import Motor

Resource = Motor | WheeledBase


@dataclass
class Rig:
    """The configured motors and bases; resources by name."""

    factory: Factory
    motors: dict[str, Motor] = field(default_factory=dict)
    bases: dict[str, WheeledBase] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, Resource]:
        return {**self.motors, **self.bases}

    def get(self, name: str) -> Resource | None:
        """The resource called `name` (without building the `resources` table: this is on every command's path)."""
        return self.motors.get(name) or self.bases.get(name)

    def add_base(self, config: BaseConfig) -> WheeledBase:
        """Put a base together from this rig's motors (which must be built already)."""
        missing = [n for n in config.left + config.right if n not in self.motors]
        if missing:
            raise ValueError(f"base {config.name!r} needs motors {missing} built too")
        base = WheeledBase(config, [self.motors[n] for n in config.left], [self.motors[n] for n in config.right])
        self.bases[config.name] = base
        return base

    @property
    def parts(self) -> dict[str, tuple[str, ...]]:
        """Each base's motors by name: driving a base drives them."""
        return {name: tuple(m.name for m in base.motors) for name, base in self.bases.items()}

    def stop_all(self) -> list[str]:
        """Stop every base, then every motor; the names of those that were moving.

        A resource whose stop fails does not keep the others from being stopped: every one is tried, then StopFailed
        names those that failed.
        """
        moving: list[str] = []
        failures = Failures()
        resources: list[Resource] = [*self.bases.values(), *self.motors.values()]
        for resource in resources:
            with failures.step(resource.name):
                if resource.stop():
                    moving.append(resource.name)
        failures.raise_all()
        return moving

    def close(self, *, close_factory: bool = True) -> None:
        """Stop everything, then release the pins; every step is tried even if one fails (StopFailed after)."""
        failures = Failures()
        try:
            self.stop_all()
        except StopFailed as exc:
            failures.errors.update({n: e for n, e in exc.failures.items() if isinstance(e, Exception)})
        for motor in self.motors.values():
            with failures.step(motor.name):
                motor.close()
        if close_factory:
            with failures.step("pin factory"):
                self.factory.close()
        failures.raise_all()


def build(config: Config, factory: Factory, only: set[str] | None = None) -> Rig:
    """Build the configured resources (or just those named in `only`) on `factory`; all outputs start off."""
    rig = Rig(factory)
    try:
        for motor_config in config.motors:
            if only is None or motor_config.name in only:
                rig.motors[motor_config.name] = Motor(motor_config, factory)
        for base_config in config.bases:
            if only is None or base_config.name in only:
                rig.add_base(base_config)
    except BaseException:
        rig.close(close_factory=False)
        raise
    return rig
