"""Python types → JSON Schema, as Robyn's generated spec writes them.

The mapping follows Robyn's (``robyn/openapi.py`` at 0.88.0) so that a spec looks the same to
the tools and tests that read it: every schema made from an annotation starts with a ``title``
(the field name, capitalised); primitives, the stdlib leaf types (datetime, UUID, Decimal,
bytes ...), ``Literal``, ``Enum``, sequences, ``dict[K, V]``, unions/``Optional``, classes with
annotations (TypedDict, ``Body``/``JsonBody`` subclasses) and Pydantic models (whose nested
models land under ``#/components/schemas``). One ``SchemaBuilder`` per generated document
collects those components.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import inspect
import logging
import types
import typing
import uuid
from typing import Any, Literal, Union, get_args, get_origin

from ...core.models import is_model_class

logger = logging.getLogger("stonechat")

COMPONENT_REF = "#/components/schemas/{model}"

LEAF_SCHEMAS: dict[type, dict[str, str]] = {
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    datetime.timedelta: {"type": "string", "format": "duration"},
    uuid.UUID: {"type": "string", "format": "uuid"},
    decimal.Decimal: {"type": "number"},
    bytes: {"type": "string", "format": "binary"},
}

# The body of the 422 answer to a Pydantic body that fails validation (Robyn's shape).
VALIDATION_ERROR = "ValidationErrorBody"
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "title": "Validation Error",
    "type": "object",
    "properties": {
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "input": {},
                    "ctx": {"type": "object"},
                    "url": {"type": "string"},
                },
                "required": ["type", "loc", "msg"],
            },
        },
        "error": {"type": "string"},
    },
    "required": ["detail", "error"],
}

PRIMITIVE_TYPES: dict[type, str] = {
    int: "integer",
    str: "string",
    bool: "boolean",
    float: "number",
    dict: "object",
    list: "array",
}


def is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def without_none(annotation: Any) -> Any:
    """``Optional[X]`` → ``X`` (other annotations unchanged)."""
    if is_union(annotation):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def own_annotations(cls: type, stop: type | None = None) -> dict[str, Any]:
    """The annotated fields of ``cls`` and its bases up to (not including) ``stop``, resolved
    where possible (PEP 563 strings), else as written."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        if stop is not None and (klass is stop or not issubclass(klass, stop)):
            continue
        for name in klass.__dict__.get("__annotations__", {}):
            if name not in names:
                names.append(name)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    raw: dict[str, Any] = {}
    for klass in cls.__mro__:
        for name, value in klass.__dict__.get("__annotations__", {}).items():
            raw.setdefault(name, value)
    return {name: hints.get(name, raw.get(name)) for name in names}


class SchemaBuilder:
    """Builds the schemas of one document and collects the component schemas they refer to."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components  # the document's components.schemas, filled in place
        self._expanding: list[type] = []  # classes being expanded (a class may refer to itself)

    # -- Pydantic --------------------------------------------------------------------------

    def model(self, model: Any) -> dict[str, Any]:
        """A model's own JSON Schema, its nested models moved to the components."""
        schema = dict(model.model_json_schema(ref_template=COMPONENT_REF))
        for name, nested in schema.pop("$defs", {}).items():
            known = self.components.get(name)
            if known is not None and known != nested:
                logger.warning("OpenAPI component schema %r is defined by several models with different "
                               "shapes; the last one registered is used", name)
            self.components[name] = nested
        return schema

    def validation_error(self) -> dict[str, Any]:
        """A ``$ref`` to the body of a 422 for a Pydantic body (``features/validation.py``)."""
        if self.components.get(VALIDATION_ERROR) not in (None, VALIDATION_ERROR_SCHEMA):
            return dict(VALIDATION_ERROR_SCHEMA)  # the app has a schema of that name: inline ours
        self.components[VALIDATION_ERROR] = VALIDATION_ERROR_SCHEMA
        return {"$ref": COMPONENT_REF.format(model=VALIDATION_ERROR)}

    # -- annotations (Robyn's get_schema_object) -------------------------------------------

    def field(self, name: str, annotation: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"title": name.capitalize()}
        if annotation in PRIMITIVE_TYPES:
            schema["type"] = PRIMITIVE_TYPES[annotation]
            return schema
        if isinstance(annotation, type) and annotation in LEAF_SCHEMAS:
            schema.update(LEAF_SCHEMAS[annotation])
            return schema
        if annotation is Any or annotation is None or annotation is inspect.Parameter.empty:
            return schema
        if annotation is type(None):
            schema["type"] = "null"
            return schema
        origin, args = get_origin(annotation), get_args(annotation)
        if origin is Literal:
            schema["enum"] = list(args)
            schema["type"] = PRIMITIVE_TYPES.get(type(args[0]) if args else str, "string")
            return schema
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            members = list(annotation)
            schema["enum"] = [member.value for member in members]
            if members:
                schema["type"] = PRIMITIVE_TYPES.get(type(members[0].value), "string")
            return schema
        if origin in (list, tuple, set, frozenset):
            schema["type"] = "array"
            if args:
                schema["items"] = self.field(f"{name}_item", args[0])
            return schema
        if origin is dict:
            schema["type"] = "object"
            if len(args) == 2:
                schema["additionalProperties"] = self.field(f"{name}_value", args[1])
            return schema
        if is_union(annotation) and args:
            choices = []
            for arg in args:
                if arg is type(None):
                    continue
                if arg in PRIMITIVE_TYPES:
                    choices.append({"type": PRIMITIVE_TYPES[arg]})
                elif isinstance(arg, type) and arg in LEAF_SCHEMAS:
                    choices.append(dict(LEAF_SCHEMAS[arg]))
                else:
                    choices.append(self.field(name, arg))
            if type(None) in args:
                choices.append({"type": "null"})
            schema["anyOf"] = choices
            return schema
        if is_model_class(annotation):
            return self.model(annotation)
        if inspect.isclass(annotation):
            schema["type"] = "object"
            schema["properties"] = self.properties(annotation)
            return schema
        schema["type"] = "object"
        return schema

    def properties(self, cls: type, stop: type | None = None) -> dict[str, Any]:
        """``{field: schema}`` for a class's annotations (TypedDict, ``Body`` subclasses ...)."""
        if cls in self._expanding:  # a class that refers to itself: stop at an open object
            return {}
        self._expanding.append(cls)
        try:
            return {field: self.field(field, annotation)
                    for field, annotation in own_annotations(cls, stop).items()}
        finally:
            self._expanding.pop()

    # -- query and path parameters -----------------------------------------------------------

    @staticmethod
    def query_type(annotation: Any) -> str:
        """Robyn's ``get_openapi_type``: the bare JSON type of a ``QueryParams`` class field."""
        if annotation in PRIMITIVE_TYPES:
            return PRIMITIVE_TYPES[annotation]
        if isinstance(annotation, type) and annotation in LEAF_SCHEMAS:
            return LEAF_SCHEMAS[annotation]["type"]
        return "string"

    def parameter(self, annotation: Any, is_list: bool) -> dict[str, Any]:
        """The schema of an individual path or query parameter as stonechat converts it
        (``core/params.py``): ``int``, ``float``, ``bool``, ``str``, an ``Enum``, ``list[T]``..."""
        annotation = without_none(annotation)
        if is_list:
            args = get_args(annotation)
            return {"type": "array", "items": self.parameter(args[0] if args else str, False)}
        if annotation in (int, float, bool, str):
            return {"type": PRIMITIVE_TYPES[annotation]}
        if isinstance(annotation, type) and annotation in LEAF_SCHEMAS and annotation is not bytes:
            return dict(LEAF_SCHEMAS[annotation])
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            values = [member.value for member in annotation]
            if all(isinstance(v, str) for v in values):
                return {"type": "string", "enum": values}
        return {"type": "string"}


__all__ = ["COMPONENT_REF", "LEAF_SCHEMAS", "PRIMITIVE_TYPES", "SchemaBuilder", "is_union", "own_annotations",
           "without_none"]
