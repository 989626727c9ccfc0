"""Robyn's ``robyn.responses`` module: the response helpers under their Robyn import path.

``from robyn.responses import serve_file`` becomes ``from stonechat.responses import serve_file``.
The objects themselves live in ``response.py``; this module only re-exports them.
"""

from .core.response import (
    Cookie, Cookies, FileResponse, Response, SSEMessage, SSEResponse, StreamingResponse, html,
    jsonify, serve_file, serve_html,
)

__all__ = [
    "Cookie", "Cookies", "FileResponse", "Response", "SSEMessage", "SSEResponse", "StreamingResponse",
    "html", "jsonify", "serve_file", "serve_html",
]
