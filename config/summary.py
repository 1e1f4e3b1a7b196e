"""The effective config as readable lines for `check-config`: every setting, never a secret."""

from __future__ import annotations

from .model import Config, RemoteConfig, format_duration


def summary_lines(config: Config) -> list[str]:
    limits = config.limits
    limit_notes = {  # what a bare number would not say
        "session_starts_per_second": f" (burst {limits.session_start_burst})",
        "calls_per_second_per_owner": f" (burst {limits.call_burst}; sessions' heartbeats and stops not counted)",
    }
    lines = [
        f"config: {config.source}",
        f"network.bind_address: {config.bind_address}",
        f"network.sessions.heartbeat_window: {format_duration(config.heartbeat_window)}",
        f"network.sessions.allow_unmonitored_motion: {_bool(config.allow_unmonitored_motion)}",
        f"network.insecure: {_bool(config.insecure)}",
        f"network.tls: {_tls(config)}",
        "network.limits: " + ", ".join(
            f"{name} {value}{limit_notes.get(name, '')}" for name, value in vars(limits).items()
        ),
        f"network.web.bind_address: {config.web_bind_address or 'off'}",
        f"network.metrics.bind_address: {config.metrics_bind_address or 'off'}",
        f"auth.api_keys: {', '.join(k.id for k in config.api_keys) or 'none'}",
        "auth.token_ttl: " + (_long_duration(config.token_ttl) if config.token_ttl is not None
                              else "none (a token lasts until a restart or its key's removal)"),
        f"auth.public_stop: {_bool(config.public_stop)}",
        f"gpio.pin_factory: {config.pin_factory}",
    ]
    if config.pin_factory == "pigpio":
        lines.append(f"gpio.pigpio: {config.pigpio_host}:{config.pigpio_port}")
    if config.pin_factory == "lgpio":
        lines.append(f"gpio.lgpio.chip: {'auto' if config.lgpio_chip is None else config.lgpio_chip}")
    for m in config.motors:
        pins = ", ".join(f"{role}={pin}" for role, pin in m.pins.used().items())
        rpm = f"{m.max_rpm:g}" if m.max_rpm is not None else "none"
        lines.append(
            f"motor {m.name}: {m.pins.wiring} ({pins}), pwm_freq {m.pwm_freq} Hz, max_rpm {rpm}, "
            f"power {m.min_power_pct:g}..{m.max_power_pct:g}, dir_flip {_bool(m.dir_flip)}"
        )
    for b in config.bases:
        lines.append(
            f"base {b.name}: left {list(b.left)}, right {list(b.right)}, width {b.width_mm:g} mm, "
            f"wheel circumference {b.wheel_circumference_mm:g} mm"
        )
    lines.extend(_remote(r) for r in config.remotes)
    return lines


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _tls(config: Config) -> str:
    if config.tls is None:
        return "off"
    text = f"cert {config.tls.cert_file}, key {config.tls.key_file}"
    if config.tls.client_ca_file:
        text += f", client CA {config.tls.client_ca_file} (clients must show a certificate)"
    return text


def _remote(remote: RemoteConfig) -> str:
    tls = remote.tls
    if tls is None:
        checked = "not configured"
    elif tls.insecure:
        checked = "insecure (the remote's certificate is not checked)"
    elif tls.ca_file:
        checked = f"CA {tls.ca_file}"
    elif tls.fingerprint:
        checked = f"fingerprint sha256 {tls.fingerprint}"
    else:
        checked = "the system's CAs"
    auth = f"key id {remote.auth.key_id}, key (set)" if remote.auth else "none"
    return f"remote {remote.name}: {remote.address}, tls {checked}, auth {auth}"


def _long_duration(seconds: float) -> str:
    """Seconds as a Go duration with hours and minutes (`1h`, `1m30s`, `720h`)."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    fraction = seconds - whole
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    if secs or fraction or not text:
        text += f"{secs + fraction:g}s"
    return text
