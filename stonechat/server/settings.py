"""Server limits and timeouts: one table, each value settable by ``app.start(...)`` keyword,
by environment variable ``STONECHAT_<NAME>`` (upper case), or left at its default.

A value that cannot be parsed or is out of range stops startup with an error naming the option.
The README lists every field here; tests/test_docs.py fails when one is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

MiB = 1024 * 1024


class SettingsError(ValueError):
    """A setting has a bad value; the message names the option."""


def _parse_bool(raw: Any) -> bool:
    """``True``/``False`` as given, or the usual spellings in an environment variable."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)


_CHOICES = {"access_log_format": ("combined", "json")}


@dataclass
class ServerSettings:
    # HTTP
    max_head_size: int = 64 * 1024          # request line + headers, bytes (431 / 414)
    max_header_count: int = 100             # headers per request (431)
    max_body_size: int = 16 * MiB           # request body, bytes (413), enforced while reading
    header_timeout: float = 15.0            # seconds to receive a full request head (slowloris)
    keep_alive_timeout: float = 20.0        # seconds an idle keep-alive connection is kept
    body_timeout: float = 60.0              # seconds without body progress before giving up (408)
    body_deadline: float = 300.0            # seconds for a whole body, however it trickles (408)
    max_connections: int = 10000            # open connections per process; excess get 503 + close
    max_pipelined: int = 32                 # queued pipelined requests before reading pauses
    write_buffer_high: int = 256 * 1024     # bytes buffered per connection before reading pauses
    backlog: int = 2048                     # listen() backlog
    blocking_warn_ms: float = 100.0         # warn when a sync handler blocks the loop this long
    thread_pool_size: int = 40              # threads for routes with threaded=True
    send_timeout: float = 60.0              # seconds a file body waits on a client that reads nothing (cut)
    drain_timeout: float = 10.0             # seconds in-flight requests get after a stop signal
    shutdown_handler_timeout: float = 10.0  # seconds each shutdown handler may take
    # WebSocket
    ws_max_message_size: int = 16 * MiB     # bytes per message (close 1009)
    ws_ping_interval: float = 20.0          # seconds between server pings (0 = off)
    ws_ping_timeout: float = 20.0           # seconds to wait for the pong before closing 1011
    ws_idle_timeout: float = 0.0            # seconds without any message before closing 1001 (0 = off)
    ws_close_timeout: float = 5.0           # seconds to wait for the peer's close frame
    ws_max_connections: int = 10000         # WebSockets per process (503 before the upgrade)
    ws_max_connections_per_ip: int = 256    # WebSockets per client IP (503 before the upgrade)
    ws_write_limit: int = 1 * MiB           # bytes queued for a client before send() waits
    ws_send_timeout: float = 30.0           # seconds send() may wait on a stuck client (close 1013)
    ws_max_write_buffer: int = 16 * MiB     # bytes queued for a client by non-waiting sends (broadcast)
                                            # before it is dropped with 1013
    ws_per_message_deflate: bool = False    # negotiate permessage-deflate compression (RFC 7692)
    # Observation (docs/production.md)
    access_log: str = ""                    # "" off, "-" stdout, else a file path (--access-log)
    access_log_format: str = "combined"     # "combined" (Apache's, plus duration, request id) or "json"
    request_id: bool = False                # X-Request-ID on every request and response (--request-id)

    @classmethod
    def from_sources(cls, overrides: Optional[Mapping[str, Any]] = None,
                     environ: Optional[Mapping[str, str]] = None) -> "ServerSettings":
        """Defaults, then ``STONECHAT_*`` environment variables, then explicit keywords."""
        environ = os.environ if environ is None else environ
        overrides = dict(overrides or {})
        known = {f.name: f for f in fields(cls)}
        unknown = set(overrides) - set(known)
        if unknown:
            raise SettingsError(f"unknown server setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, f in known.items():
            kind: type[Any] = type(f.default)
            env_name = "STONECHAT_" + name.upper()
            if name in overrides:
                raw, source = overrides[name], name
            elif env_name in environ:
                raw, source = environ[env_name], env_name
            else:
                continue
            try:
                value = _parse_bool(raw) if kind is bool else kind(raw)
            except (TypeError, ValueError):
                raise SettingsError(f"{source}: expected {kind.__name__}, got {raw!r}") from None
            if name in _CHOICES and value not in _CHOICES[name]:
                raise SettingsError(f"{source}: expected one of {', '.join(_CHOICES[name])}, got {raw!r}")
            if kind is not str and value < 0:
                raise SettingsError(f"{source}: must not be negative, got {raw!r}")
            values[name] = value
        return cls(**values)
