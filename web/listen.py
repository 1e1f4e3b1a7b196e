"""Listening sockets for the daemon's extra ports (the operator page, the metrics endpoint)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence


def split(address: str) -> tuple[str, int]:
    """`127.0.0.1:8081` -> ("127.0.0.1", 8081); `[::]:8081` -> ("::", 8081)."""
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def listening_socket(address: str) -> socket.socket:
    """A TCP socket bound to `host:port` and listening (port 0: any free port); OSError if it cannot be.

    `[::]` listens on IPv4 too, as `0.0.0.0` does on IPv4 alone; a name listens on its first IPv4 address
    (else its first).
    """
    host, port = split(address)
    if host == "::":
        return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=128)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    if not infos:
        raise OSError(f"{host} has no address")
    family, _, _, _, sockaddr = min(infos, key=lambda info: info[0] != socket.AF_INET)  # localhost: 127.0.0.1
    return socket.create_server(sockaddr[:2], family=family, backlog=128)


def page_urls(scheme: str, address: str, port: int, names: Sequence[str] = (),
              addresses: Sequence[str] = ()) -> list[str]:
    """The URLs a listener on `address` (its port now `port`) answers at: for a wildcard address, this machine's
    `.local` names and its addresses off loopback (from `names` and `addresses`), else the configured host."""
    host = split(address)[0]
    if host in ("0.0.0.0", "::", ""):
        hosts = [n for n in names if n.endswith(".local")]
        hosts += [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
        hosts = hosts or [socket.gethostname()]
    else:
        hosts = [host]
    return [f"{scheme}://{f'[{h}]' if ':' in h else h}:{port}/" for h in hosts]
