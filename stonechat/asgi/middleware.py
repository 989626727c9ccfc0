"""ASGI middleware around a whole stonechat app (``app.add_asgi_middleware(cls, **options)``), and
stonechat's own server as the ASGI host of that chain.

The chain is ``cls(app, **options)`` for each registration, the last added outermost (as
Starlette's ``add_middleware``), around the app's ASGI face (``asgi/app.py``). Under an ASGI
server ``app.asgi`` is that chain. Under stonechat's server, ``served()`` returns a
``MiddlewareHost``: every request goes through the chain like a request to an app mounted at
the root (``asgi/mount.py``), and startup/shutdown travel through the chain as lifespan events,
so middleware that hooks the lifespan sees it; the app's own startup runs at the end of the
chain. Middleware that does not pass lifespan events on cannot stop the app from starting: its
startup then runs directly (logged). With no middleware added none of this exists and native
routes keep their own path.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from .app import ASGIApp
from .lifespan import ASGILifespan, LifespanFailed
from .mount import Mount

logger = logging.getLogger("stonechat.asgi")

Middleware = tuple[Any, dict]


def check_middleware(cls: Any, options: dict) -> None:
    """Refuse at registration what could never be built: not callable, or options it does not take."""
    if not callable(cls):
        raise TypeError(f"add_asgi_middleware expects a middleware class or factory, got {cls!r}")
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, **options)
    except TypeError as exc:
        name = getattr(cls, "__qualname__", repr(cls))
        raise TypeError(f"add_asgi_middleware({name}, ...): {exc}") from None


def wrap(app: Any, middlewares: list[Middleware]) -> Any:
    """``app`` inside every middleware, the first registered innermost."""
    for cls, options in middlewares:
        app = cls(app, **options)
    return app


class MiddlewareHost:
    """What stonechat's server runs when ASGI middleware wraps the app: ``handle`` feeds the
    chain, ``startup``/``shutdown`` go through it as lifespan events. Everything else (``app``,
    ``dispatcher``, ``settings``...) is the app's own ``ServedApp``'s."""

    def __init__(self, core: Any, middlewares: list[Middleware]) -> None:
        self.core = core
        self.inner = ASGIApp(lambda: core)
        self.chain = wrap(self.inner.serve, middlewares)
        names = ", ".join(getattr(cls, "__qualname__", repr(cls)) for cls, _ in middlewares)
        self.mount = Mount("", self.chain, f"the ASGI middleware chain ({names})", core.settings)
        self.handle = self.mount.handle
        self.lifespan: ASGILifespan = self.mount.lifespan()
        self.entered = False
        # Bodies reach the chain whole (ASGI's receive); request.stream() then yields them at once.
        self.streams_body = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    def connect_peers(self, publish: Callable[[bytes], None]) -> Callable[[bytes], None]:
        return self.core.connect_peers(publish)

    async def startup(self) -> None:
        try:
            await self.lifespan.__aenter__()
        except LifespanFailed:
            if self.inner.startup_error is not None:
                raise self.inner.startup_error from None  # names the failing handler
            raise
        self.entered = True
        if not self.inner.started:
            if self.inner.startup_error is not None:
                raise self.inner.startup_error
            logger.warning("%s did not pass the lifespan startup on; running the app's startup directly",
                           self.mount.name)
            await self.inner.startup()

    async def shutdown(self) -> None:
        if self.entered:
            self.entered = False
            try:
                await self.lifespan.__aexit__(None, None, None)
            except Exception as exc:
                logger.error("lifespan shutdown through %s failed", self.mount.name, exc_info=exc)
        await self.inner.shutdown()  # does nothing if the chain already ran it


__all__ = ["MiddlewareHost", "check_middleware", "wrap"]
