"""Robyn's ``robyn.ws`` module path: a re-export of the WebSocket API in ``websocket/api.py``."""

from .websocket.api import (  # noqa: F401
    WebSocket, WebSocketAdapter, WebSocketConnector, WebSocketDisconnect, create_websocket_decorator,
)

__all__ = ["WebSocket", "WebSocketAdapter", "WebSocketConnector", "WebSocketDisconnect",
           "create_websocket_decorator"]
