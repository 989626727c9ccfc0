"""Robyn's ``robyn.ws`` module path: a re-export of the WebSocket API in ``websocket.py``."""

from .websocket import (  # noqa: F401
    WebSocket, WebSocketAdapter, WebSocketConnector, WebSocketDisconnect, create_websocket_decorator,
)

__all__ = ["WebSocket", "WebSocketAdapter", "WebSocketConnector", "WebSocketDisconnect",
           "create_websocket_decorator"]
