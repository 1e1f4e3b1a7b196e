"""The open-door rule: off loopback, the daemon serves only with API keys (or client certificates) and TLS,
unless the config says `network.insecure: true` in so many words."""

from __future__ import annotations

import ipaddress
import socket

from rover_safety.config import Config

from .errors import StartupError


def host_of(address: str) -> str:
    """`127.0.0.1:8080` -> `127.0.0.1`; `[::1]:8080` -> `::1`."""
    host = address.rpartition(":")[0]
    return host.removeprefix("[").removesuffix("]")


def is_loopback(address: str) -> bool:
    """True if every address `host:port` can mean is a loopback one (a name is resolved; unresolvable: False)."""
    host = host_of(address)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def protected(config: Config) -> bool:
    """Whether a client must prove who it is (API keys, or client certificates) and talks over TLS."""
    identities = bool(config.api_keys) or (config.tls is not None and config.tls.client_ca_file is not None)
    return config.tls is not None and identities


def check(config: Config, address: str, what: str = "network.bind_address") -> str | None:
    """Refuse to serve `address` off loopback without auth and TLS; a warning to log when `insecure` allows it."""
    if is_loopback(address) or protected(config):
        return None
    missing = " and ".join(m for m, ok in (("API keys (auth.api_keys)", bool(config.api_keys)),
                                           ("TLS (network.tls)", config.tls is not None)) if not ok)
    if config.insecure:
        return (f"{what} {address} is off loopback without {missing}, as network.insecure: true allows: anyone "
                "who can reach this port can drive the rover")
    raise StartupError(
        f"{what}: refusing to serve {address} off loopback without {missing}: anyone on the network could drive "
        "the rover. Make a key with `rover-safety gen-key NAME` (paste its line under auth.api_keys) and a "
        "certificate with `rover-safety gen-cert` (set network.tls.cert_file and key_file), or serve "
        '127.0.0.1 only; to accept the risk anyway, set network.insecure: true.'
    )
