"""stonechat: a fast async web framework with Robyn's API, on uvloop, httptools and orjson.

``from stonechat import Robyn`` (or ``App``, the same class) is all a Robyn app needs to move.
Only public names live here; where each is defined is in the README's "Where things happen".
"""

from . import status_codes
from .app import App, Robyn, SubRouter
from .config import Config
from .core.auth import AuthenticationHandler
from .core.background import BackgroundTasks
from .core.datastructures import Headers, Identity, QueryParams, Url
from .core.dependencies import DependencyMap
from .core.errors import HTTPException, WebSocketException
from .core.lifecycle import Events
from .core.markers import Directory, JsonBody, RequestBody, RequestMethod, RequestURL
from .core.registry import FunctionInfo, HttpMethod, MiddlewareType
from .core.request import Request
from .core.uploads import FormField, UploadFile
from .core.response import (
    Cookie, Cookies, FileResponse, Response, SSEMessage, SSEResponse, StreamingResponse, html,
    jsonify, serve_file, serve_html,
)
from .features.cors import ALLOW_CORS
from .features.openapi import OpenAPI
from .features.sessions import Session, SessionManager
from .pubsub.broker import BrokerError, BrokerOverloaded, BrokerUnavailable, Position
from .pubsub.redis import Publisher
from .testclient import TestClient
from .version import __version__
from .websocket.api import WebSocket, WebSocketAdapter, WebSocketConnector, WebSocketDisconnect
from .websocket.rooms import Room

__all__ = [
    "ALLOW_CORS", "App", "AuthenticationHandler", "BackgroundTasks", "FormField", "UploadFile", "BrokerError", "BrokerOverloaded", "BrokerUnavailable", "Config", "Cookie", "Cookies", "DependencyMap", "Directory",
    "Events", "FileResponse", "FunctionInfo", "HTTPException", "Headers", "HttpMethod", "Identity", "JsonBody",
    "MiddlewareType", "OpenAPI", "Position", "Publisher", "QueryParams", "Request", "RequestBody", "RequestMethod", "RequestURL", "Response",
    "Robyn", "Room", "SSEMessage", "SSEResponse", "Session", "SessionManager", "StreamingResponse", "SubRouter", "TestClient", "Url", "WebSocket",
    "WebSocketAdapter", "WebSocketConnector", "WebSocketDisconnect", "WebSocketException", "__version__",
    "html", "jsonify", "serve_file", "serve_html", "status_codes",
]
