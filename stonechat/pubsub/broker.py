"""The Broker protocol: how rooms, endpoint broadcasts and send-to-id leave this process and
come back, whatever carries them (nothing, the ``--processes`` worker mesh, or Redis).

The framework side (``websocket/rooms.py``) talks to a broker only through :class:`Broker`
and hears from it only through :class:`Sink`. A broker carries opaque payloads (``str`` or
``bytes``) on three kinds of channel: a *room* (numbered, ordered, with history when the
engine keeps one), an *endpoint* (every client of one WebSocket route: best effort, as
today's cross-worker broadcast) and a *connection* (one client id, anywhere). It knows
nothing of WebSocket connections, envelopes or handlers.

Numbering: a broker with ``numbered = True`` (Redis) gives every room message its position
(:class:`Position`: epoch + offset) and keeps the history; the rooms layer then only checks
the sequence. Otherwise (in-process, worker mesh) the rooms layer numbers the messages it
delivers itself, per process, and keeps a bounded local history.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any, Awaitable, Generator, Mapping, Optional, Protocol, Union

import orjson

Payload = Union[str, bytes]


def as_payload(message: Any) -> Payload:
    """What a room or broadcast carries: str or bytes as given; dict/list as JSON text."""
    cls = message.__class__
    if cls is str or cls is bytes:
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, str):
        return str(message)
    if isinstance(message, (dict, list, tuple)):
        return orjson.dumps(message).decode()
    raise TypeError(f"cannot send {cls.__name__}: use str, bytes, or a dict/list (sent as JSON)")



class BrokerError(Exception):
    """The broker could not do what was asked (unreachable, overloaded, misconfigured)."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached (the message names the URL)."""


class BrokerOverloaded(BrokerError):
    """The bounded queue of messages waiting for the broker is full: the message was not sent."""


@dataclass(frozen=True)
class Position:
    """Where a room message sits in its room's stream: ``epoch`` names one life of the stream
    (it changes when the history is lost: broker restart, expiry, another process), ``offset``
    counts messages in it from 1."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, value: Any) -> Optional["Position"]:
        """``"epoch:offset"``, ``(epoch, offset)``, ``{"epoch": .., "offset": ..}`` or a Position;
        None for None/empty. ValueError for anything else."""
        if value is None or value == "":
            return None
        if isinstance(value, Position):
            return value
        try:
            if isinstance(value, str):
                epoch, _, offset = value.rpartition(":")
                if not epoch:
                    raise ValueError
                return cls(epoch, int(offset))
            if isinstance(value, Mapping):
                return cls(str(value["epoch"]), int(value["offset"]))
            epoch, offset = value
            return cls(str(epoch), int(offset))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"not a room position: {value!r} (expected 'epoch:offset')") from None


@dataclass
class HistoryRange:
    """What a numbered broker answers for "the messages of ``room`` after offset N, at most
    ``limit``": the stream's current ``epoch`` (None: no stream) and ``top`` offset, and the
    entries ``(offset, payload)`` after N. ``complete``: they start right after N with none
    missing (False when the first ones are gone: trimmed, expired); they may stop before
    ``top`` when ``limit`` was reached."""

    epoch: Optional[str]
    top: int
    entries: list
    complete: bool


@dataclass
class BrokerStatus:
    """What a health check reads (``app.broker_status()``); updated in place by the engine."""

    engine: str = "local"
    url: str = ""                      # without the password
    connected: bool = True             # the publishing side is connected
    listener: str = "running"          # running | reconnecting | stopped | failed
    last_error: str = ""
    last_error_at: float = 0.0
    reconnects: int = 0
    queued: int = 0                    # messages waiting for the broker
    rooms: int = 0                     # rooms this process is subscribed to
    published: int = 0
    received: int = 0
    rejected: int = 0                  # publishes refused (queue full, broker gone for good)
    gaps: int = 0                      # sequence gaps seen on room streams
    repaired: int = 0                  # gaps filled from the stream's history
    not_recovered: int = 0             # clients told "not recovered" (gap, epoch change, overflow)
    parser: str = ""                   # redis: "hiredis" or "python"

    def error(self, text: str) -> None:
        self.last_error = text
        self.last_error_at = time.time()

    @property
    def healthy(self) -> bool:
        return self.connected and self.listener == "running"

    def as_dict(self) -> dict:
        out = asdict(self)
        out["healthy"] = self.healthy
        return out


class Sink(Protocol):
    """What a broker calls when a message arrives for this process (``websocket/rooms.py``)."""

    def room_message(self, room: str, payload: Payload, position: Optional[Position]) -> None: ...
    def endpoint_message(self, endpoint: str, payload: Payload) -> None: ...
    def direct_message(self, connection_id: str, payload: Payload) -> bool: ...
    def resync(self) -> None: ...
        # a numbered broker lost messages it cannot name (its subscription dropped): check
        # every room's sequence again (``Broker.history``)


class Broker(Protocol):
    """One engine. Every method returns at once; the awaitables are for callers that want to
    know the outcome. A broker never blocks the event loop and holds bounded memory."""

    name: str
    numbered: bool
    status: BrokerStatus
    node: str  # this process's id in the broker (origin of what it publishes)

    async def start(self, sink: Sink) -> None: ...
    async def close(self) -> None: ...

    def subscribe(self, room: str) -> Awaitable[None]: ...
        # deliver ``room``'s messages to this process from now on; resolves once that holds
    def unsubscribe(self, room: str) -> None: ...
    def publish(self, room: str, payload: Payload) -> Awaitable[Optional[Position]]: ...
        # BrokerOverloaded (raised at once) when the queue is full
    def publish_endpoint(self, endpoint: str, payload: Payload) -> None: ...
    def subscribe_endpoint(self, endpoint: str) -> None: ...
    def watch(self, connection_id: str) -> None: ...
    def unwatch(self, connection_id: str) -> None: ...
    def send_to(self, connection_id: str, payload: Payload) -> Awaitable[bool]: ...
        # to a client of another process; True once some process took it
    async def history(self, room: str, after: int, limit: int) -> HistoryRange: ...

    def presence_add(self, room: str, connection_id: str, info: Optional[dict]) -> None: ...
    def presence_remove(self, room: str, connection_id: str) -> None: ...
    async def members(self, room: str) -> dict: ...
    async def count(self, room: str) -> int: ...


class Outcome:
    """What a queued broker operation returns: awaiting it gives the result (or raises the
    error). Nobody has to await it: a failure nobody awaited is logged by the engine
    (``awaited`` tells it), so a fire-and-forget publish costs no future."""

    __slots__ = ("done", "value", "error", "future", "awaited")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.future: Optional[asyncio.Future] = None
        self.awaited = False

    def set(self, value: Any) -> None:
        self.done, self.value = True, value
        if self.future is not None and not self.future.done():
            self.future.set_result(value)

    def fail(self, error: BaseException) -> None:
        self.done, self.error = True, error
        if self.future is not None and not self.future.done():
            self.future.set_exception(error)

    def __await__(self) -> Generator[Any, None, Any]:
        self.awaited = True
        if not self.done:
            if self.future is None:
                self.future = asyncio.get_running_loop().create_future()
            return (yield from self.future.__await__())
        if self.error is not None:
            raise self.error
        return self.value


def new_node_id() -> str:
    """A process's id in the broker: unique across machines and restarts."""
    return f"{uuid.uuid4().hex[:12]}.{os.getpid()}"


# -- settings ----------------------------------------------------------------------------------


class BrokerSettingsError(ValueError):
    """A broker setting has a bad value; the message names it."""


@dataclass
class BrokerSettings:
    """Where rooms and broadcasts go beyond this process. Set with ``Robyn(broker=...)`` /
    ``app.start(broker=...)`` keywords, ``STONECHAT_<NAME>`` environment variables or the
    ``--broker URL`` flag (which wins)."""

    broker: str = ""                       # "" / "local": in-process, or the worker mesh under
                                           # --processes; "redis://host:6379/0" for Redis
    broker_history_size: int = 1000        # messages kept per room for recovery (0: none)
    broker_history_ttl: float = 300.0      # seconds a room's history outlives its last message
    broker_presence_ttl: float = 30.0      # seconds a process's members stay listed after it died
    broker_queue_size: int = 10000         # messages waiting for the broker before publishes fail
    broker_local_fallback: bool = False    # Redis unreachable at startup: serve local-only instead
                                           # of failing

    @classmethod
    def from_sources(cls, overrides: Optional[Mapping[str, Any]] = None,
                     environ: Optional[Mapping[str, str]] = None) -> "BrokerSettings":
        environ = os.environ if environ is None else environ
        overrides = dict(overrides or {})
        values: dict[str, Any] = {}
        for f in fields(cls):
            env_name = "STONECHAT_" + f.name.upper()
            if overrides.get(f.name) is not None:
                raw, source = overrides[f.name], f.name
            elif environ.get(env_name):
                raw, source = environ[env_name], env_name
            else:
                continue
            kind: Any = type(f.default)
            try:
                if kind is bool:
                    text = str(raw).strip().lower()
                    if isinstance(raw, bool):
                        value: Any = raw
                    elif text in ("1", "true", "yes", "on"):
                        value = True
                    elif text in ("0", "false", "no", "off"):
                        value = False
                    else:
                        raise ValueError
                else:
                    value = kind(raw)
            except (TypeError, ValueError):
                raise BrokerSettingsError(f"{source}: expected {kind.__name__}, got {raw!r}") from None
            if kind in (int, float) and value < 0:
                raise BrokerSettingsError(f"{source}: must not be negative, got {raw!r}")
            values[f.name] = value
        settings = cls(**values)
        url = settings.broker.strip()
        settings.broker = "" if url in ("", "local") else url
        if settings.broker and not settings.broker.startswith(("redis://", "rediss://", "unix://")):
            raise BrokerSettingsError(
                f"broker: {settings.broker!r} is not a broker URL (use 'local' or redis://host:port/db)")
        if settings.broker_presence_ttl <= 0:
            raise BrokerSettingsError("broker_presence_ttl: must be above 0")
        return settings



BROKER_SETTING_NAMES = frozenset(f.name for f in fields(BrokerSettings))


def safe_url(url: str) -> str:
    """``url`` without its password, for logs and status."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}"


__all__ = ["BROKER_SETTING_NAMES", "as_payload", "Broker", "BrokerError", "BrokerOverloaded", "BrokerSettings",
           "BrokerSettingsError", "BrokerStatus", "BrokerUnavailable", "HistoryRange", "Outcome", "Payload", "Position",
           "Sink", "new_node_id", "safe_url"]
