"""The one way an exception raised while answering becomes a response, for HTTP routes and for
WebSocket handshakes alike (Starlette's single exception path is the model).

In order: a ``ParamError`` (the request could not fill the handler's parameters) → its status,
400 or 422, with its JSON body when it has one; the app's exception handler (``app.exception``),
sync or async, when one is set; an ``HTTPException`` → its status, detail and headers; anything
else → 500 with a short body (the traceback is logged, and in the body with ``--debug``). An
exception handler that itself raises is logged and answered 500. Nothing escapes to the server.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Awaitable, Callable, Optional, Union

from ..server.interface import BodyError, HTTPResponse
from .conversion import Converter, encode_headers, json_bytes
from .errors import HTTPException, ParamError

logger = logging.getLogger("stonechat")


class ErrorResponder:
    """Built once per app (``App._build``) with its exception handler; called per failure."""

    __slots__ = ("handler", "handler_is_async", "debug")

    def __init__(self, handler: Optional[Callable[[Exception], Any]], handler_is_async: bool,
                 debug: bool) -> None:
        self.handler = handler
        self.handler_is_async = handler_is_async
        self.debug = debug

    def __call__(self, exc: Exception, convert: Converter,
                 where: str) -> Union[HTTPResponse, Awaitable[HTTPResponse]]:
        """The answer to ``exc``, raised in ``where`` (a route or handler name, for the log);
        an awaitable only when an async exception handler must run."""
        if isinstance(exc, ParamError):
            if exc.body is not None:
                return HTTPResponse(exc.status, convert.json_block, json_bytes(exc.body))
            return HTTPResponse(exc.status, convert.text_block, (str(exc) + "\n").encode())
        if isinstance(exc, BodyError):  # a streamed body too large or too slow (request.stream())
            return HTTPResponse(exc.status, convert.text_block, (exc.message + "\n").encode())
        handler = self.handler
        if handler is not None:
            if self.handler_is_async:
                return self._async_handler(exc, convert, where)
            try:
                return convert(handler(exc))
            except Exception as inner:
                logger.exception("the exception handler raised while handling %r in %s", exc, where)
                return self.internal_error(inner, convert, where)
        if isinstance(exc, HTTPException) and 200 <= exc.status_code <= 599:
            headers = encode_headers((str(k).lower(), str(v)) for k, v in (exc.headers or {}).items())
            return HTTPResponse(exc.status_code, convert.text_block + headers, str(exc.detail).encode())
        return self.internal_error(exc, convert, where)

    async def _async_handler(self, exc: Exception, convert: Converter, where: str) -> HTTPResponse:
        assert self.handler is not None
        try:
            return convert(await self.handler(exc))
        except Exception as inner:
            logger.exception("the exception handler raised while handling %r in %s", exc, where)
            return self.internal_error(inner, convert, where)

    def internal_error(self, exc: BaseException, convert: Converter, where: str) -> HTTPResponse:
        logger.error("error in %s", where, exc_info=exc)
        body = "Internal server error"  # Robyn's body, byte for byte
        if self.debug:
            body += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return HTTPResponse(500, convert.text_block, body.encode())


__all__ = ["ErrorResponder"]
