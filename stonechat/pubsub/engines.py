"""Which engine a broker URL means: nothing (in-process; the worker mesh takes over under
``--processes``, see ``websocket/session.py connect_peers``) or Redis."""

from __future__ import annotations

from .broker import Broker, BrokerSettings
from .local import LocalBroker
from .redis import RedisBroker


def make_broker(settings: BrokerSettings) -> Broker:
    if not settings.broker:
        return LocalBroker()
    return RedisBroker(settings)


__all__ = ["make_broker"]
