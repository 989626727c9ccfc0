"""Authentication (Robyn's ``robyn.authentication``): a handler decides who is calling, and
routes registered with ``auth_required=True`` refuse callers it does not recognise (401)."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, Optional

from .datastructures import Headers, Identity
from .request import Request
from .response import Response


class AuthenticationNotConfiguredError(Exception):
    """``auth_required=True`` was used but ``app.configure_authentication`` was never called."""


class TokenGetter(ABC):
    @property
    def scheme(self) -> str:
        return self.__class__.__name__

    @classmethod
    @abstractmethod
    def get_token(cls, request: Request) -> Optional[str]:
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def set_token(cls, request: Request, token: str) -> None:
        raise NotImplementedError


class BearerGetter(TokenGetter):
    @classmethod
    def get_token(cls, request: Request) -> Optional[str]:
        value = request.headers.get("authorization")
        if value and value.startswith("Bearer "):
            return value[len("Bearer "):]
        return None

    @classmethod
    def set_token(cls, request: Request, token: str) -> None:
        request.headers.set("authorization", f"Bearer {token}")


class AuthenticationHandler(ABC):
    def __init__(self, token_getter: TokenGetter) -> None:
        self.token_getter = token_getter

    @property
    def unauthorized_response(self) -> Response:
        return Response(401, Headers({"www-authenticate": self.token_getter.scheme}), "Unauthorized")

    @abstractmethod
    def authenticate(self, request: Request) -> Optional[Identity]:
        raise NotImplementedError


async def authenticate(handler: Optional[AuthenticationHandler], request: Request) -> Optional[Response]:
    """Who is calling, for a route or WebSocket with ``auth_required=True``: ``None`` when the
    handler knows the caller (``request.identity`` is set), else the refusal to answer with.
    No handler configured is a server error (raised), never a silent pass."""
    if handler is None:
        raise AuthenticationNotConfiguredError(
            "auth_required=True needs app.configure_authentication(...) first")
    identity = handler.authenticate(request)
    if inspect.isawaitable(identity):
        identity = await identity
    if identity is None:
        return handler.unauthorized_response
    request.identity = identity
    return None


def make_auth_hook(handler: Optional[AuthenticationHandler]) -> Any:
    """The before-request hook that ``auth_required=True`` adds to a route (``handler``: its
    router's, else the app's)."""

    async def authenticate_request(request: Request) -> Any:
        refusal = await authenticate(handler, request)
        return request if refusal is None else refusal

    return authenticate_request


__all__ = ["AuthenticationHandler", "AuthenticationNotConfiguredError", "BearerGetter", "Identity",
           "TokenGetter"]
