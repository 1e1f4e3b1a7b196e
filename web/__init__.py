"""The operator page: a client of the daemon's gRPC API, served by the daemon on its own port.

Plain HTML, CSS and JavaScript in `static/` (no framework, no build step, nothing from a CDN); the server side
(server.py, aiohttp on the daemon's serving loop) turns each browser request into one gRPC call to the daemon's own
port with that browser's token and address, and relays `SafetyService/WatchEvents` as server-sent events.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from rover_safety.config import Config

from .listen import listening_socket, page_urls
from .server import OperatorPage, PageSettings
from .upstream import UpstreamSettings, certificate_name, upstream_target

__all__ = ["OperatorPage", "PageError", "PageSettings", "UpstreamSettings", "listening_socket", "page_settings",
           "page_urls"]


class PageError(ValueError):
    """The config asks for a page this daemon cannot serve (the message names the setting)."""


def page_settings(config: Config, *, grpc_port: int, proxy_secret: str, secret_key: str, peer_key: str,
                  loopback_only: bool, auth_enabled: Callable[[], bool],
                  public_stop: Callable[[], bool]) -> PageSettings:
    """The page's settings for a daemon with this config, whose gRPC port is `grpc_port`.

    With `network.tls` the page serves HTTPS with the daemon's certificate and key, and reaches the gRPC port over
    TLS trusting that certificate alone, checked by a name it carries.
    """
    root: bytes | None = None
    name: str | None = None
    context: ssl.SSLContext | None = None
    if config.tls is not None:
        if config.tls.client_ca_file is not None:
            raise PageError("network.web: the operator page cannot show the daemon a client certificate, and "
                            "network.tls.client_ca_file requires one; use API keys (auth.api_keys) instead, or "
                            "turn the page off")
        try:
            root = Path(config.tls.cert_file).read_bytes()
            name = certificate_name(root)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(config.tls.cert_file, config.tls.key_file)
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise PageError(f"network.tls: cannot serve the operator page with {config.tls.cert_file}: "
                            f"{exc}") from None
    upstream = UpstreamSettings(upstream_target(config.bind_address, grpc_port), proxy_secret, secret_key,
                                peer_key, root, name)
    return PageSettings(upstream, context, loopback_only, auth_enabled, public_stop)
