"""stonechat: a fast async web framework with Robyn's API, on uvloop, httptools and orjson.

``from stonechat import Robyn`` (or ``App``, the same class) is all a Robyn app needs to move.
"""

from . import status_codes
from .app import App, HttpMethod, Robyn, SubRouter
from .authentication import AuthenticationHandler
from .config import Config
from .cors import ALLOW_CORS
from .dependency_injection import DependencyMap
from .datastructures import Headers, Identity, QueryParams, Url
from .errors import HTTPException, WebSocketException
from .request import Request
from .response import (
    Cookie, Cookies, FileResponse, Response, SSEMessage, SSEResponse, StreamingResponse, html,
    jsonify, serve_file, serve_html,
)
from .testing import TestClient
from .types import Directory, JsonBody, RequestBody, RequestMethod, RequestURL
from .version import __version__
from .websocket import WebSocket, WebSocketAdapter, WebSocketConnector, WebSocketDisconnect

__all__ = [
    "ALLOW_CORS", "App", "AuthenticationHandler", "Config", "Cookie", "Cookies", "DependencyMap", "Directory",
    "FileResponse", "HTTPException", "Headers", "HttpMethod", "Identity", "JsonBody", "QueryParams",
    "Request", "RequestBody", "RequestMethod", "RequestURL", "Response", "Robyn", "SSEMessage",
    "SSEResponse", "StreamingResponse", "SubRouter", "TestClient", "Url", "WebSocket",
    "WebSocketAdapter", "WebSocketConnector", "WebSocketDisconnect", "WebSocketException", "__version__",
    "html", "jsonify", "serve_file", "serve_html", "status_codes",
]
