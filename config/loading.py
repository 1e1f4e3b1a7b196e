"""Read and validate the YAML config; whatever the input, the only error is a ConfigError naming file, line and key."""

from __future__ import annotations

import os
from pathlib import Path

from .components import components
from .errors import ConfigError
from .files import NotRegularFile, TooLarge, read_limited
from .model import Config
from .schema import auth, gpio, network, remotes
from .section import Section
from .yamltree import MAX_BYTES, read_tree

__all__ = ["load", "parse"]


def parse(text: str, source: str = "<config>") -> Config:
    """Validate YAML text into a Config, raising ConfigError for the first problem found."""
    data = read_tree(text, source)
    root = Section(source, "", {} if data is None else data, 1)
    settings = {**network(root), **gpio(root)}
    motors, bases = components(root)
    settings.update(auth(root))
    settings["remotes"] = remotes(root, {m.name for m in motors} | {b.name for b in bases})
    root.finish()
    return Config(source=source, **settings, motors=motors, bases=bases, warnings=tuple(root.warnings))


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at `path`: a regular file of at most 256 KiB of UTF-8 text."""
    source = str(path)
    try:
        data = read_limited(Path(path), MAX_BYTES)
    except NotRegularFile as exc:
        raise ConfigError(source, None, "", f"cannot read config: {exc}; give the path of a YAML file") from None
    except TooLarge as exc:
        size = f"{exc.size} bytes" if exc.size is not None else "more than that"
        raise ConfigError(source, None, "", f"is too large ({size}): a config file may be at most "
                          f"{MAX_BYTES // 1024} KiB") from None
    except OSError as exc:
        raise ConfigError(source, None, "", f"cannot read config: {exc.strerror or exc}") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(source, None, "", "cannot read config: the path has a NUL character in it") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(source, line, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as "
                          "UTF-8") from None
    return parse(text, source)
