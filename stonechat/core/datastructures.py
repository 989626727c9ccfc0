"""The data structures requests and responses are made of: ``Headers`` and ``QueryParams``
(multimaps with Robyn's API), ``Url``, ``Identity``, and the form/query string decoder.

A leaf module: it imports nothing from stonechat, so anything may use it without a cycle.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Union
from urllib.parse import unquote_plus


def _decode_form_component(value: str) -> str:
    if "%" in value or "+" in value:
        return unquote_plus(value)
    return value


def parse_query(raw: Union[bytes, str]) -> dict[str, list[str]]:
    """Percent-decode an ``application/x-www-form-urlencoded`` string (``+`` is a space)."""
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
        if any(ord(c) > 127 for c in raw):
            raw = raw.encode("latin-1").decode("utf-8", "replace")
    result: dict[str, list[str]] = {}
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        key = _decode_form_component(key)
        value = _decode_form_component(value)
        values = result.get(key)
        if values is None:
            result[key] = [value]
        else:
            values.append(value)
    return result


class _MultiMap:
    """Names mapped to lists of values, in insertion order; the read API both multimaps share.

    Single-value accessors return the *last* value, as Robyn's do.
    """

    __slots__ = ("_map",)

    _map: dict[str, list[str]]

    def keys(self) -> list[str]:
        return list(self._map)

    def values(self) -> list[str]:
        return [v[-1] for v in self._map.values()]

    def items(self) -> list[tuple[str, str]]:
        return [(k, v[-1]) for k, v in self._map.items()]

    def multi_items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, vs in self._map.items() for v in vs]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._map == self._map  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._map!r})"


class QueryParams(_MultiMap):
    """A multimap of query parameters. ``get(key, default=None)`` returns the last value."""

    __slots__ = ()

    def __init__(self, values: Optional[dict] = None) -> None:
        self._map: dict[str, list[str]] = {}
        if values:
            for key, value in values.items():
                self._map[key] = [str(v) for v in value] if isinstance(value, list) else [str(value)]

    @classmethod
    def _parsed(cls, raw: Union[bytes, str]) -> "QueryParams":
        qp = cls.__new__(cls)
        qp._map = parse_query(raw)
        return qp

    def set(self, key: str, value: str) -> None:
        self._map.setdefault(key, []).append(value)

    def get(self, key: str, default: Any = None) -> Any:
        values = self._map.get(key)
        return values[-1] if values else default

    def get_first(self, key: str) -> Optional[str]:
        values = self._map.get(key)
        return values[0] if values else None

    def get_all(self, key: str) -> Optional[list[str]]:
        values = self._map.get(key)
        return list(values) if values else None

    def contains(self, key: str) -> bool:
        return key in self._map

    def empty(self) -> bool:
        return not self._map

    def extend(self, other: "QueryParams") -> None:
        for key, values in other._map.items():
            self._map.setdefault(key, []).extend(values)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._map.items()}

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __getitem__(self, key: str) -> str:
        values = self._map.get(key)
        if not values:
            raise KeyError(key)
        return values[-1]



class Headers(_MultiMap):
    """Case-insensitive, multi-valued headers. Names are stored lower-case.

    Unlike Robyn, ``get(name, default)`` accepts a default and ``Headers(Headers(...))`` works.
    """

    __slots__ = ()

    def __init__(self, default: Union[dict, "Headers", None] = None) -> None:
        self._map: dict[str, list[str]] = {}
        if default:
            self.populate_from_dict(default)

    @classmethod
    def _from_raw(cls, raw: list[tuple[bytes, bytes]]) -> "Headers":
        headers = cls.__new__(cls)
        mapping: dict[str, list[str]] = {}
        for name, value in raw:
            key = name.decode("latin-1")
            values = mapping.get(key)
            if values is None:
                mapping[key] = [value.decode("latin-1")]
            else:
                values.append(value.decode("latin-1"))
        headers._map = mapping
        return headers

    def populate_from_dict(self, values: Union[dict, "Headers"]) -> None:
        items: Iterable[tuple[str, Any]]
        if isinstance(values, Headers):
            items = values.multi_items()
        else:
            items = values.items()
        for key, value in items:
            if isinstance(value, (list, tuple)):
                for v in value:
                    self.append(key, v)
            else:
                self.append(key, value)

    def set(self, key: str, value: Any) -> None:
        self._map[key.lower()] = [str(value)]

    def append(self, key: str, value: Any) -> None:
        self._map.setdefault(key.lower(), []).append(str(value))

    def get(self, key: str, default: Any = None) -> Any:
        values = self._map.get(key.lower())
        return values[-1] if values else default

    def get_all(self, key: str) -> list[str]:
        return list(self._map.get(key.lower(), ()))

    def get_headers(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._map.items()}

    def to_dict(self) -> dict[str, str]:
        return {k: ", ".join(v) for k, v in self._map.items()}

    def remove(self, key: str) -> None:
        self._map.pop(key.lower(), None)

    def contains(self, key: str) -> bool:
        return key.lower() in self._map

    def is_empty(self) -> bool:
        return not self._map

    def copy(self) -> "Headers":
        headers = Headers()
        headers._map = {k: list(v) for k, v in self._map.items()}
        return headers

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def __getitem__(self, key: str) -> Optional[str]:
        return self.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        self.remove(key)



class Url:
    __slots__ = ("scheme", "host", "path")

    def __init__(self, scheme: str, host: str, path: str) -> None:
        self.scheme = scheme
        self.host = host
        self.path = path

    def __repr__(self) -> str:
        return f"Url(scheme={self.scheme!r}, host={self.host!r}, path={self.path!r})"


class Identity:
    __slots__ = ("claims",)

    def __init__(self, claims: dict[str, str]) -> None:
        self.claims = claims

    def __repr__(self) -> str:
        return f"Identity(claims={self.claims!r})"


__all__ = ["Headers", "Identity", "QueryParams", "Url", "parse_query"]
