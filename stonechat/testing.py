"""Robyn's ``robyn.testing`` module path: ``TestClient`` (``testclient.py``) and, for its
WebSockets, ``WebSocketTestSession``/``WebSocketRefused`` (``testclient_websocket.py``)."""

from .testclient import (  # noqa: F401
    TestClient, TestResponse, WebSocketRefused, WebSocketTestSession,
)
from .websocket.api import WebSocketDisconnect  # noqa: F401

__all__ = ['TestClient', 'TestResponse', 'WebSocketDisconnect', 'WebSocketRefused', 'WebSocketTestSession']
