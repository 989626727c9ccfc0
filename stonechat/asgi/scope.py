"""What a mounted app's call is made of, shared by its HTTP and WebSocket halves
(``mount.py``, ``mount_websocket.py``): the ``asgi`` entry of every scope, the paths of a scope
(``path`` with the mount's prefix in it, ``root_path`` the prefix, as the ASGI spec and Starlette
>= 0.33 read them), the error ``send`` raises once the client left, and the origin marker of a
request that came in through an ASGI server (``app.py``), whose ``root_path`` a mount adds to.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from ..core.conversion import TEXT
from ..server.interface import HTTPRequest, HTTPResponse

# Shared by every scope: ASGI 3, HTTP/WebSocket spec 2.5 (send raises OSError once the client is
# gone: 2.4; close and disconnect reasons: 2.3/2.5).
ASGI = {"version": "3.0", "spec_version": "2.5"}


class ClientDisconnected(OSError):
    """What ``send`` raises once the client went away (ASGI spec 2.4)."""


class ASGIRequest(HTTPRequest):
    """A request that reached stonechat through an ASGI server (``asgi/app.py``): it also
    carries the outer ``root_path``, which a mount inside adds its prefix to. A subclass, so
    the native server's requests pay nothing for it."""

    __slots__ = ("root_path",)

    def __init__(self, root_path: str = "") -> None:
        super().__init__()
        self.root_path = root_path


def internal_error() -> HTTPResponse:
    return HTTPResponse(500, TEXT, b"Internal Server Error\n")


def scope_paths(prefix: str, raw: HTTPRequest) -> tuple[str, bytes, str]:
    """``path``, ``raw_path`` and ``root_path`` of the scope for a mount at ``prefix``."""
    raw_path = raw.path
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        path = raw_path.decode("utf-8", "replace")
    if "%" in path:
        path = unquote(path)
    if raw.__class__ is ASGIRequest and raw.root_path:  # type: ignore[attr-defined]
        outer = raw.root_path  # type: ignore[attr-defined]
        return outer + path, outer.encode() + raw_path, outer + prefix
    return path, raw_path, prefix


def address(value: Any) -> Any:
    """(host, port): IPv6 peer names have four items."""
    if value is not None and len(value) != 2:
        return value[:2]
    return value


__all__ = ["ASGI", "ASGIRequest", "ClientDisconnected", "address", "internal_error", "scope_paths"]
