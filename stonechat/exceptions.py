"""Exceptions a handler may raise to answer with a status (``HTTPException``) or a WebSocket
may raise to close with a code (``WebSocketException``)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Optional


class HTTPException(Exception):
    """Raise to answer with ``status_code``; the body is ``detail`` (default: the reason phrase).

    Unlike Robyn, dispatch maps it to its status without a custom exception handler.
    """

    def __init__(self, status_code: int, detail: Optional[str] = None, headers: Optional[dict] = None) -> None:
        if detail is None:
            try:
                detail = HTTPStatus(status_code).phrase
            except ValueError:
                detail = ""
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"

    def __repr__(self) -> str:
        return f"HTTPException(status_code={self.status_code!r}, detail={self.detail!r})"


class WebSocketException(Exception):
    """Raise inside a WebSocket handler to close the connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: Optional[str] = None) -> None:
        super().__init__(reason or "")
        self.code = code
        self.reason = reason or ""

    def __repr__(self) -> str:
        return f"WebSocketException(code={self.code!r}, reason={self.reason!r})"


__all__ = ["HTTPException", "WebSocketException"]
