"""Sessions: Robyn's signed-cookie ``Session`` and ``SessionManager``, cookie for cookie.

Owns the cookie format (JSON ``{"d": data, "exp": epoch}`` → base64url → ``.`` → base64url
HMAC-SHA256 under ``sha256(b"robyn.session" + secret)``, Robyn's exact bytes, so a cookie
written by Robyn reads here with the same secret and the other way round) and the two
hooks that load and save it. It does not know the app: ``app.configure_sessions`` asks it
for the hooks. Nothing here runs unless sessions are configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import MutableMapping
from typing import Any, Callable, Iterator, Optional

logger = logging.getLogger("stonechat.sessions")

# Browsers keep cookies up to about 4 KB, name and attributes included (Robyn's figure).
MAX_COOKIE_SIZE = 4093
SALT = b"robyn.session"
DEFAULT_MAX_AGE = 14 * 24 * 60 * 60
_SAME_SITE = ("Strict", "Lax", "None")
# Values that cannot change in place: a session holding only these needs no snapshot.
_IMMUTABLE = (str, int, float, bool, type(None))
_NO_SNAPSHOT = ""  # never the JSON of a dict


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class _Signer:
    """``value.signature``: HMAC-SHA256 over the base64url value, with a key derived from the
    salt and the secret (so any length of secret gives a full-length key)."""

    __slots__ = ("_key",)

    def __init__(self, secret_key: str, salt: bytes = SALT) -> None:
        self._key = hashlib.sha256(salt + secret_key.encode("utf-8")).digest()

    def _signature(self, value: bytes) -> str:
        return _b64encode(hmac.new(self._key, value, hashlib.sha256).digest())

    def sign(self, payload: bytes) -> str:
        value = _b64encode(payload)
        return f"{value}.{self._signature(value.encode('ascii'))}"

    def unsign(self, signed: str) -> Optional[bytes]:
        """The payload, or None when the cookie was not signed with this key."""
        value, dot, signature = signed.rpartition(".")
        if not dot:
            return None
        try:
            expected = self._signature(value.encode("ascii"))
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return None
        try:
            return _b64decode(value)
        except (ValueError, binascii.Error):
            return None


class Session(MutableMapping):
    """The session as a dict (``session["k"] = v``, ``get``, ``pop``, ``in``, ``clear()``...).

    The cookie is rewritten only when the session changed: a top-level change sets
    ``modified``; ``is_modified()`` also sees a change inside a list or dict it holds (it
    compares against the JSON taken at load time). Set ``modified = True`` to force a write."""

    __slots__ = ("_data", "modified", "_snapshot")

    def __init__(self, data: Optional[dict] = None) -> None:
        self._data: dict = dict(data) if data else {}
        self.modified: bool = False
        # Only values that can change in place need the snapshot (its cost is one dumps).
        self._snapshot: Optional[str] = (
            _NO_SNAPSHOT if all(v.__class__ in _IMMUTABLE for v in self._data.values()) else self._canonical())

    def _canonical(self) -> Optional[str]:
        try:
            return json.dumps(self._data, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            return None  # not JSON: counts as changed, so saving says why it cannot be stored

    def is_modified(self) -> bool:
        if self.modified:
            return True
        snapshot = self._snapshot
        if snapshot == _NO_SNAPSHOT:
            return False  # nothing it held could change in place; new values set ``modified``
        current = self._canonical()
        return current is None or current != snapshot

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def clear(self) -> None:
        """Empty the session (a change only if it held something): the cookie is expired."""
        if self._data:
            self.modified = True
        self._data.clear()

    def __repr__(self) -> str:
        return f"Session({self._data!r})"


def _normalize_same_site(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"same_site must be one of 'Strict', 'Lax', 'None' (got {value!r})")
    normalized = value.strip().capitalize()
    if normalized not in _SAME_SITE:
        raise ValueError(f"same_site must be one of 'Strict', 'Lax', 'None' (got {value!r})")
    return normalized


def read_cookie(request: Any, name: str) -> Optional[str]:
    """The value of cookie ``name`` in the request's ``Cookie`` header (the first one named so)."""
    header = request.headers.get("cookie")
    if not header:
        return None
    for part in header.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == name:
            return value.strip()
    return None


_read_cookie = read_cookie  # Robyn's name


class SessionManager:
    """Signs, reads and writes session cookies: what ``app.configure_sessions`` installs, also
    usable by hand (``load(request)``, ``save(session, response)``, ``dumps``, ``loads``)."""

    def __init__(self, secret_key: str, *, cookie_name: str = "session",
                 max_age: Optional[int] = DEFAULT_MAX_AGE, path: str = "/", domain: Optional[str] = None,
                 secure: bool = False, http_only: bool = True, same_site: Optional[str] = "Lax") -> None:
        if not secret_key:
            raise ValueError("configure_sessions() requires a non-empty secret_key")
        if not isinstance(secret_key, str):
            raise TypeError(f"configure_sessions(): secret_key must be a str, not {type(secret_key).__name__}")
        if not isinstance(cookie_name, str) or not cookie_name or any(c in cookie_name for c in "=; \t\r\n,"):
            raise ValueError(f"configure_sessions(): cookie_name must be a cookie name (no '=', ';', "
                             f"spaces or commas), got {cookie_name!r}")
        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int)):
            raise TypeError(f"configure_sessions(): max_age must be an int (seconds) or None, got {max_age!r}")
        self._signer = _Signer(secret_key)
        self.cookie_name = cookie_name
        self.max_age = max_age
        self.path = path
        self.domain = domain
        self.secure = secure
        self.http_only = http_only
        self.same_site = _normalize_same_site(same_site)
        if self.same_site == "None" and not self.secure:
            raise ValueError("same_site='None' requires secure=True (browsers reject SameSite=None cookies "
                             "without the Secure attribute)")

    # -- the cookie value ------------------------------------------------------------------

    def dumps(self, session: Any) -> str:
        """The signed cookie value for ``session`` (its data and, with ``max_age``, an expiry)."""
        envelope: dict = {"d": dict(session)}
        if self.max_age is not None:
            envelope["exp"] = int(time.time()) + self.max_age
        try:
            payload = json.dumps(envelope, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Session data must be JSON-serializable to fit in a signed cookie: {exc}") from exc
        return self._signer.sign(payload)

    def loads(self, raw: str) -> Session:
        """The session in a cookie value; empty when the value is forged, damaged or expired."""
        payload = self._signer.unsign(raw)
        if payload is None:
            return Session()
        try:
            envelope = json.loads(payload)
        except ValueError:
            return Session()
        if not isinstance(envelope, dict) or not isinstance(envelope.get("d"), dict):
            return Session()
        exp = envelope.get("exp")
        # a bool, a string, NaN or infinity is no expiry: such a cookie is refused, not trusted forever
        if exp is not None and (not isinstance(exp, (int, float)) or isinstance(exp, bool)
                                or not math.isfinite(exp) or exp < time.time()):
            return Session()
        return Session(envelope["d"])

    # -- on a request and a response -------------------------------------------------------

    def load(self, request: Any) -> Session:
        raw = read_cookie(request, self.cookie_name)
        return Session() if raw is None else self.loads(raw)

    def save(self, session: Session, response: Any) -> None:
        """Set the cookie on ``response`` if the session changed; an emptied one expires it."""
        if not session.is_modified():
            return
        max_age: Optional[int]
        if len(session) == 0:
            value, max_age = "", 0
        else:
            value, max_age = self.dumps(session), self.max_age
            if len(value) > MAX_COOKIE_SIZE:
                logger.warning("session cookie is %d bytes, larger than the ~4 KB most browsers store; "
                               "it may be dropped. Store less data in the session.", len(value))
        response.set_cookie(key=self.cookie_name, value=value, path=self.path, domain=self.domain,
                            max_age=max_age, secure=self.secure, http_only=self.http_only,
                            same_site=self.same_site)

    def hooks(self) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
        """The global before hook (``request.session`` from the cookie) and after hook (the
        cookie from ``request.session``) that ``configure_sessions`` registers."""
        load, save = self.load, self.save

        def load_session(request: Any) -> Any:
            request.session = load(request)
            return request

        def save_session(request: Any, response: Any) -> Any:
            session = request.session
            if session is not None:
                save(session, response)
            return response

        return load_session, save_session


__all__ = ["Session", "SessionManager"]
