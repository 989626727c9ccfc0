"""Robyn's ``robyn.robyn`` module path (its compiled core): the same names, from stonechat.

``from robyn.robyn import Request, QueryParams`` becomes ``from stonechat.robyn import ...``.
"""

from .core.datastructures import Headers, Identity, QueryParams, Url
from .core.registry import FunctionInfo, HttpMethod, MiddlewareType
from .core.request import Request
from .core.response import Cookie, Cookies, Response, StreamingResponse
from .version import get_version
from .websocket.api import WebSocketConnector

__all__ = ["Cookie", "Cookies", "FunctionInfo", "Headers", "HttpMethod", "Identity", "MiddlewareType",
           "QueryParams", "Request", "Response", "StreamingResponse", "Url", "WebSocketConnector",
           "get_version"]
