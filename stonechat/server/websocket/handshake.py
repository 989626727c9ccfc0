"""The WebSocket opening handshake (RFC 6455 section 4): is an upgrade request valid and is
there room for it (``check_handshake``), and the ``101 Switching Protocols`` answer once the
application accepted it (``switching_protocols``), with the subprotocol and the
permessage-deflate parameters (``deflate.py``) agreed on.

A refusal is an ordinary text/plain HTTP response: 400 for a malformed handshake, 426 with
``Sec-WebSocket-Version: 13`` for another version, 503 with ``Retry-After`` when the worker is
at ``ws_max_connections`` or the client's IP at ``ws_max_connections_per_ip``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from typing import Optional

from ..interface import HTTPRequest, HTTPResponse, WebSocketAccept, plain_response
from ..state import ServerState
from .deflate import Negotiated, negotiate

logger = logging.getLogger("stonechat.server.ws")  # the name log lines and filters know

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_RETRY = b"retry-after: 5\r\n"


def check_handshake(request: HTTPRequest, state: ServerState) -> Optional[HTTPResponse]:
    """``None`` if ``request`` is a valid RFC 6455 opening handshake we have room for, else the
    refusal: 400 (malformed), 426 + ``Sec-WebSocket-Version: 13`` (other version), 503 (limits)."""
    if request.method != "GET":
        return plain_response(400, "Bad WebSocket handshake: the method must be GET\n")
    if request.http_version not in ("1.1", "2.0"):
        return plain_response(400, "Bad WebSocket handshake: HTTP/1.1 required\n")
    connection_upgrade = False
    keys = []
    version = None
    for name, value in request.headers:
        if name == b"connection":
            if any(t.strip().lower() == b"upgrade" for t in value.split(b",")):
                connection_upgrade = True
        elif name == b"sec-websocket-key":
            keys.append(value.strip())
        elif name == b"sec-websocket-version":
            version = value.strip() if version is None else b"duplicate"
    if not connection_upgrade:
        return plain_response(400, "Bad WebSocket handshake: missing 'Connection: Upgrade'\n")
    if version != b"13":
        return plain_response(426, "Upgrade Required: only WebSocket version 13 is supported\n",
                              b"upgrade: websocket\r\nsec-websocket-version: 13\r\n")
    if len(keys) != 1:
        return plain_response(400, "Bad WebSocket handshake: exactly one Sec-WebSocket-Key required\n")
    try:
        if len(base64.b64decode(keys[0], validate=True)) != 16:
            raise ValueError
    except (binascii.Error, ValueError):
        return plain_response(400, "Bad WebSocket handshake: Sec-WebSocket-Key must be 16 bytes, base64\n")
    settings = state.settings
    if len(state.websockets) >= settings.ws_max_connections:
        logger.warning("refusing WebSocket from %s: ws_max_connections (%d) reached",
                       request.client, settings.ws_max_connections)
        return plain_response(503, "Too many WebSocket connections, try again later\n", _RETRY)
    ip = request.client[0] if request.client else None
    if ip is not None and state.websockets_from(ip) >= settings.ws_max_connections_per_ip:
        logger.warning("refusing WebSocket from %s: ws_max_connections_per_ip (%d) reached",
                       ip, settings.ws_max_connections_per_ip)
        return plain_response(503, "Too many WebSocket connections from this address\n", _RETRY)
    return None


def accept_key(request: HTTPRequest) -> bytes:
    """``Sec-WebSocket-Accept`` for the request's key (``check_handshake`` made sure of one)."""
    for name, value in request.headers:
        if name == b"sec-websocket-key":
            return base64.b64encode(hashlib.sha1(value.strip() + _GUID).digest())
    raise ValueError("no Sec-WebSocket-Key")


def switching_protocols(request: HTTPRequest, accept: WebSocketAccept,
                        per_message_deflate: bool) -> tuple[bytes, Optional[Negotiated]]:
    """The 101 answer to an accepted handshake, and the permessage-deflate parameters agreed
    on (None: uncompressed; only offered when ``per_message_deflate`` is on)."""
    head = [b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: ", accept_key(request), b"\r\n"]
    if accept.subprotocol:
        head.append(b"sec-websocket-protocol: %s\r\n" % accept.subprotocol.encode("latin-1"))
    negotiated = None
    if per_message_deflate:
        offers = [value for name, value in request.headers if name == b"sec-websocket-extensions"]
        negotiated = negotiate(offers) if offers else None
        if negotiated is not None:
            head.append(b"sec-websocket-extensions: %s\r\n" % negotiated.response.encode())
    head.append(accept.headers)
    head.append(b"\r\n")
    return b"".join(head), negotiated
