"""The route table: paths compiled at registration, matched per request.

* A static path is one dict lookup (keyed by the raw path bytes, so no decoding happens).
* Paths with ``:param`` segments or a ``*wildcard`` tail live in a segment trie; a lookup walks
  one node per path segment, so its cost grows with the path's depth, never with the number
  of routes. Priority at each segment: static, then ``:param``, then ``*wildcard``.
* Two registrations for the same method and the same path shape (``/u/:id`` and ``/u/:name``
  are the same shape) raise ``RouteConflict`` at once, where Robyn silently drops one.

A match is ``(methods, params)``: the route per method at that path and the captured values
(percent-decoded). Parameter *names* belong to each route, so ``GET /u/:id`` and
``DELETE /u/:user`` may coexist.
"""

from __future__ import annotations

from typing import Any, Generic, Optional, TypeVar
from urllib.parse import unquote

T = TypeVar("T")


class RouteConflict(ValueError):
    """Two routes would answer the same method and path."""


def normalize_endpoint(endpoint: str) -> str:
    """Robyn's normalisation: strip spaces, add a leading ``/``, drop a trailing ``/``."""
    endpoint = endpoint.strip()
    if not endpoint:
        raise ValueError("Endpoint cannot be blank; use '/' for the root")
    if not endpoint.startswith("/"):
        endpoint = "/" + endpoint
    if len(endpoint) > 1 and endpoint.endswith("/"):
        endpoint = endpoint.rstrip("/") or "/"
    return endpoint


def param_names(endpoint: str) -> list[str]:
    return [seg[1:] for seg in endpoint.split("/") if seg[:1] in (":", "*") and len(seg) > 1]


def is_dynamic(endpoint: str) -> bool:
    return any(seg[:1] in (":", "*") for seg in endpoint.split("/"))


class _Node:
    __slots__ = ("static", "param", "wildcard", "methods")

    def __init__(self) -> None:
        self.static: dict[bytes, _Node] = {}
        self.param: Optional[_Node] = None
        self.wildcard: Optional[dict[str, Any]] = None
        self.methods: Optional[dict[str, Any]] = None


class Router(Generic[T]):
    """Maps (method, path) to a route object of any type."""

    def __init__(self) -> None:
        self.static: dict[bytes, dict[str, T]] = {}
        self.root = _Node()
        self.shapes: dict[tuple[str, str], str] = {}

    def add(self, method: str, endpoint: str, route: T) -> None:
        endpoint = normalize_endpoint(endpoint)
        segments = endpoint.strip("/").split("/") if endpoint != "/" else []
        shape = "/" + "/".join(
            ":" if s.startswith(":") else "*" if s.startswith("*") else s for s in segments)
        for i, seg in enumerate(segments):
            if seg.startswith("*") and i != len(segments) - 1:
                raise ValueError(f"{endpoint!r}: a *wildcard must be the last segment")
            if seg in (":", "*"):
                raise ValueError(f"{endpoint!r}: a parameter needs a name")
        previous = self.shapes.get((method, shape))
        if previous is not None:
            raise RouteConflict(
                f"{method} {endpoint} conflicts with {method} {previous}: both would answer the same paths")
        self.shapes[(method, shape)] = endpoint
        if not is_dynamic(endpoint):
            self.static.setdefault(endpoint.encode(), {})[method] = route
            return
        node = self.root
        for seg in segments:
            if seg.startswith(":"):
                if node.param is None:
                    node.param = _Node()
                node = node.param
            elif seg.startswith("*"):
                if node.wildcard is None:
                    node.wildcard = {}
                node.wildcard[method] = route
                return
            else:
                node = node.static.setdefault(seg.encode(), _Node())
        if node.methods is None:
            node.methods = {}
        node.methods[method] = route

    def match(self, path: bytes) -> tuple[Optional[dict[str, T]], list[str]]:
        """The routes at ``path`` by method, and the captured values in order."""
        methods = self.static.get(path)
        if methods is not None:
            return methods, []
        if len(path) > 1 and path.endswith(b"/"):
            path = path.rstrip(b"/") or b"/"
            methods = self.static.get(path)
            if methods is not None:
                return methods, []
        if 37 in path:  # "%" by its byte value: ``b"%" in path`` pays for a TypeError first
            decoded = unquote(path.decode("latin-1")).encode("utf-8", "surrogateescape")
            methods = self.static.get(decoded)
            if methods is not None:
                return methods, []
        segments = path[1:].split(b"/") if path != b"/" else []
        values: list[str] = []
        found = self._walk(self.root, segments, 0, values)
        if found is None:
            return None, []
        return found, values

    def _walk(self, node: _Node, segments: list[bytes], i: int, values: list[str]) -> Optional[dict]:
        if i == len(segments):
            if node.methods is not None:
                return node.methods
            return None
        seg = segments[i]
        child = node.static.get(seg)
        if child is None and 37 in seg:  # a "%": /users/m%65 is /users/me
            child = node.static.get(_decode(seg).encode())
        if child is not None:
            found = self._walk(child, segments, i + 1, values)
            if found is not None:
                return found
        if node.param is not None and seg:
            values.append(_decode(seg))
            found = self._walk(node.param, segments, i + 1, values)
            if found is not None:
                return found
            values.pop()
        if node.wildcard is not None:
            values.append(_decode(b"/".join(segments[i:])))
            return node.wildcard
        return None


def _decode(segment: bytes) -> str:
    text = segment.decode("utf-8", "replace")
    return unquote(text) if "%" in text else text
