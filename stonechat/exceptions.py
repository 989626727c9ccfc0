"""Robyn's ``robyn.exceptions`` module path: the exceptions handlers raise (``errors.py``)."""

from .core.errors import HTTPException, WebSocketException

__all__ = ["HTTPException", "WebSocketException"]
