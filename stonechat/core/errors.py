"""Every exception the framework raises or lets handlers raise, in one leaf module.

``HTTPException`` and ``WebSocketException`` are for handlers (Robyn's ``robyn.exceptions``);
``ParamError`` (and its ``FormError``) is what a request that cannot fill a handler's
parameters raises. Turning any of them into an answer is ``error_response.py``'s job; this
module imports nothing from stonechat, so every other module may use it without a cycle.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Optional


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


class ParamError(Exception):
    """A parameter could not be filled from the request (answered with ``status``, 400 unless
    said otherwise; ``body`` is a JSON body to answer with instead of the message)."""

    def __init__(self, message: str, status: int = 400, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class FormError(ParamError, ValueError):
    """A form body that cannot be parsed (answered with 400)."""


__all__ = ["FormError", "HTTPException", "ParamError", "WebSocketException"]
