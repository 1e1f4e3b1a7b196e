"""Client profiles: where and how to connect, from the environment or a small YAML file, so that no program (nor the
operator CLI) needs a key on its command line.

The file is `$ROVER_SAFETY_PROFILE`, else `~/.config/rover-safety/client.yaml` (`$XDG_CONFIG_HOME` is honoured):

    address: rover.local:8080
    key_id: 4f1c…                # the API key's id
    api_key: s3cr3t…             # only in a file nobody else can read (chmod 600)
    tls_fingerprint: "AB:CD:…"   # or ca_file: rover-ca.pem (relative to the profile's folder)
    # insecure: true             # plain text (loopback only with a key)

The variables ROVER_SAFETY_ADDRESS, ROVER_SAFETY_KEY_ID, ROVER_SAFETY_API_KEY, ROVER_SAFETY_CA_FILE,
ROVER_SAFETY_TLS_FINGERPRINT and ROVER_SAFETY_INSECURE override the file, key by key.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from .connection import parse_address
from .errors import ProfileError
from .tls import normalize_fingerprint

ENV = {
    "address": "ROVER_SAFETY_ADDRESS",
    "key_id": "ROVER_SAFETY_KEY_ID",
    "api_key": "ROVER_SAFETY_API_KEY",
    "ca_file": "ROVER_SAFETY_CA_FILE",
    "tls_fingerprint": "ROVER_SAFETY_TLS_FINGERPRINT",
    "insecure": "ROVER_SAFETY_INSECURE",
}
# The settings a profile hands to `connect()` as they are (address and insecure/tls are handled on their own).
CONNECTION_FIELDS = ("key_id", "api_key", "ca_file", "tls_fingerprint", "server_name")
PROFILE_VARIABLE = "ROVER_SAFETY_PROFILE"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the profile file is looked for."""
    env = os.environ if environ is None else environ
    if env.get(PROFILE_VARIABLE):
        return Path(env[PROFILE_VARIABLE]).expanduser()
    if env.get("XDG_CONFIG_HOME"):
        base = Path(env["XDG_CONFIG_HOME"])
    else:
        base = (Path(env["HOME"]) if env.get("HOME") else Path.home()) / ".config"
    return base / "rover-safety" / "client.yaml"


@dataclass(frozen=True)
class ClientProfile:
    """Connection settings for `connect()`; `source` says where they came from."""

    address: str | None = None
    key_id: str | None = None
    api_key: str | None = None
    ca_file: str | None = None
    tls_fingerprint: str | None = None
    server_name: str | None = None
    insecure: bool = False
    source: str = "defaults"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *,
             environ: Mapping[str, str] | None = None) -> ClientProfile:
        """The file (`path`, `$ROVER_SAFETY_PROFILE` or the default; the default may be absent), then the
        environment on top."""
        env = os.environ if environ is None else environ
        explicit = path is not None or bool(env.get(PROFILE_VARIABLE))
        file = Path(path).expanduser() if path is not None else default_path(env)
        profile = cls.from_file(file) if explicit or file.exists() else cls()
        return profile.with_environment(env)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ClientProfile:
        """Read a profile file; errors read `file:line: key: problem`."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
            info = file.stat()
        except OSError as exc:
            raise ProfileError(f"{file}: cannot read the client profile: {exc.strerror}") from exc
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return cls(source=str(file))
            if not isinstance(node, yaml.MappingNode):
                raise ProfileError(f"{file}:{node.start_mark.line + 1}: a profile is a mapping of key: value")
            values: dict[str, Any] = {}
            lines: dict[str, int] = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str) or (key not in ENV and key != "server_name"):
                    allowed = ", ".join([*ENV, "server_name"])
                    raise ProfileError(f"{file}:{line}: {key}: unknown key (allowed: {allowed})")
                if key in values:
                    raise ProfileError(f"{file}:{line}: {key}: given twice")
                values[key] = loader.construct_object(value_node, deep=True)
                lines[key] = line
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            at = f"{file}:{mark.line + 1}" if mark else str(file)
            raise ProfileError(f"{at}: not valid YAML: {exc.problem or exc}") from None
        finally:
            loader.dispose()

        def where(key: str) -> str:
            return f"{file}:{lines[key]}: {key}"

        clean: dict[str, Any] = {}
        for key, value in values.items():
            if key == "insecure":
                if not isinstance(value, bool):
                    raise ProfileError(f"{where(key)}: {value!r} is not true or false")
                clean[key] = value
                continue
            if value is None:
                continue
            if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
                raise ProfileError(f"{where(key)}: {value!r} is not a non-empty string")
            clean[key] = str(value).strip()
        if "ca_file" in clean:
            ca = Path(clean["ca_file"]).expanduser()
            clean["ca_file"] = str(ca if ca.is_absolute() else file.parent / ca)
        if "api_key" in clean and info.st_mode & 0o077:
            raise ProfileError(
                f"{where('api_key')}: the file holds an API key but is open to others "
                f"(mode {stat.filemode(info.st_mode)}): run `chmod 600 {file}`")
        profile = cls(**clean, source=str(file))
        return profile._checked(where)

    def with_environment(self, environ: Mapping[str, str]) -> ClientProfile:
        """This profile with the ROVER_SAFETY_* variables on top."""
        changes: dict[str, Any] = {}
        for key, variable in ENV.items():
            raw = environ.get(variable)
            if raw is None:
                continue
            if key == "insecure":
                text = raw.strip().lower()
                if text not in _TRUE | _FALSE:
                    raise ProfileError(f"{variable}: {raw!r} is not a boolean (1/0, true/false)")
                changes[key] = text in _TRUE
            elif raw.strip():
                changes[key] = raw.strip()
        if not changes:
            return self
        source = f"{self.source} + environment" if self.source != "defaults" else "environment"
        profile = replace(self, **changes, source=source)
        return profile._checked(lambda key: ENV.get(key, key) if key in changes else f"{self.source}: {key}")

    def _checked(self, where: Any) -> ClientProfile:
        if self.address is not None:
            try:
                parse_address(self.address)
            except ValueError as exc:
                raise ProfileError(f"{where('address')}: {exc}") from None
        if self.tls_fingerprint is not None:
            try:
                normalize_fingerprint(self.tls_fingerprint)
            except ValueError as exc:
                raise ProfileError(f"{where('tls_fingerprint')}: {exc}") from None
        if (self.api_key is None) != (self.key_id is None):
            missing = "key_id" if self.key_id is None else "api_key"
            present = "api_key" if missing == "key_id" else "key_id"
            raise ProfileError(f"{where(present)}: given without {missing} (an API key needs its id)")
        if self.ca_file is not None and self.tls_fingerprint is not None:
            raise ProfileError(f"{where('tls_fingerprint')}: give ca_file or tls_fingerprint, not both")
        if self.insecure and (self.ca_file or self.tls_fingerprint):
            raise ProfileError(f"{where('insecure')}: insecure (plain text) contradicts ca_file/tls_fingerprint")
        return self

    def connect_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `connect()` this profile gives (address included)."""
        if not self.address:
            raise ProfileError(f"{self.source}: no address: set ROVER_SAFETY_ADDRESS or `address:` in "
                               f"{default_path()}")
        kwargs: dict[str, Any] = {"address": self.address, "tls": not self.insecure}
        for name in CONNECTION_FIELDS:
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs

    def __repr__(self) -> str:
        key = "***" if self.api_key else None
        return (f"ClientProfile(address={self.address!r}, key_id={self.key_id!r}, api_key={key}, "
                f"ca_file={self.ca_file!r}, tls_fingerprint={self.tls_fingerprint!r}, insecure={self.insecure}, "
                f"source={self.source!r})")
