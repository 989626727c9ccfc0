"""Robyn's OpenAPI object model (``robyn.openapi``): ``OpenAPI`` and the ``info`` it is made of.

``OpenAPI(info=OpenAPIInfo(...))`` holds ``openapi_spec``, the base document every generated
spec starts from (info, servers, components, externalDocs; ``paths`` empty), or, with a custom
spec file, that file (``override_openapi``), then served as it is. Users may read and change
``openapi_spec`` before the app starts, as in Robyn.

Unlike Robyn's, the base document is valid OpenAPI 3.1: ``None`` fields are left out instead of
written as ``null``, ``info`` holds only Info Object fields (Robyn copies servers, components
and externalDocs into it), and ``externalDocs`` points at the docs page when none is given
(Robyn writes ``null``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import orjson


@dataclass
class Contact:
    """The API's contact (OpenAPI Contact Object)."""

    name: Optional[str] = None
    url: Optional[str] = None
    email: Optional[str] = None


@dataclass
class License:
    """The API's licence (OpenAPI License Object; written only when it has a ``name``)."""

    name: Optional[str] = None
    url: Optional[str] = None


@dataclass
class Server:
    """A server the API is reached at (OpenAPI Server Object); ``url`` may be relative."""

    url: str
    description: Optional[str] = None


@dataclass
class ExternalDocumentation:
    """More documentation elsewhere (OpenAPI External Documentation Object)."""

    description: Optional[str] = None
    url: Optional[str] = None


@dataclass
class Components:
    """Reusable objects of the document (OpenAPI Components Object); empty buckets are left out
    of the served spec."""

    schemas: Optional[dict[str, dict]] = field(default_factory=dict)
    responses: Optional[dict[str, dict]] = field(default_factory=dict)
    parameters: Optional[dict[str, dict]] = field(default_factory=dict)
    examples: Optional[dict[str, dict]] = field(default_factory=dict)
    requestBodies: Optional[dict[str, dict]] = field(default_factory=dict)
    securitySchemes: Optional[dict[str, dict]] = field(default_factory=dict)
    links: Optional[dict[str, dict]] = field(default_factory=dict)
    callbacks: Optional[dict[str, dict]] = field(default_factory=dict)
    pathItems: Optional[dict[str, dict]] = field(default_factory=dict)


@dataclass
class OpenAPIInfo:
    """What the document says about the API (Robyn keeps servers, externalDocs and components
    here too; they end up at the document's top level)."""

    title: str = "Robyn API"
    version: str = "1.0.0"
    description: Optional[str] = None
    termsOfService: Optional[str] = None
    contact: Contact = field(default_factory=Contact)
    license: License = field(default_factory=License)
    servers: list[Server] = field(default_factory=list)
    externalDocs: Optional[ExternalDocumentation] = field(default_factory=ExternalDocumentation)
    components: Components = field(default_factory=Components)


@dataclass
class RouteOpenAPIMeta:
    """Robyn's per-route OpenAPI options (stonechat keeps them on the route's ``RouteSpec``;
    this class exists so that code importing it keeps working)."""

    status_code: Optional[int] = None
    deprecated: bool = False
    include_in_schema: bool = True
    response_model: Any = None
    responses: Optional[dict[Union[int, str], Any]] = None
    summary: Optional[str] = None
    description: Optional[str] = None
    operation_id: Optional[str] = None


DOCS_PAGE = "/docs"


def _present(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def info_object(info: OpenAPIInfo) -> dict[str, Any]:
    found = _present(title=info.title, version=info.version, description=info.description,
                     termsOfService=info.termsOfService)
    contact = _present(name=info.contact.name, url=info.contact.url, email=info.contact.email) if info.contact else {}
    if contact:
        found["contact"] = contact
    if info.license is not None and info.license.name:
        found["license"] = _present(name=info.license.name, url=info.license.url)
    return found


def base_document(info: OpenAPIInfo) -> dict[str, Any]:
    components = info.components or Components()
    docs = info.externalDocs
    external = (_present(description=docs.description, url=docs.url) if docs is not None and docs.url
                else {"description": "Interactive documentation (Swagger UI)", "url": DOCS_PAGE})
    return {
        "openapi": "3.1.0",
        "info": info_object(info),
        "paths": {},
        "components": {name: copy.deepcopy(getattr(components, name) or {})
                       for name in Components.__dataclass_fields__},
        "servers": [_present(url=s.url, description=s.description) for s in info.servers],
        "externalDocs": external,
    }


@dataclass
class OpenAPI:
    """The root of the OpenAPI document: ``Robyn(__file__, openapi=OpenAPI(info=OpenAPIInfo(...)))``."""

    info: OpenAPIInfo = field(default_factory=OpenAPIInfo)
    openapi_spec: dict = field(init=False)
    openapi_file_override: bool = False  # a custom spec file is served instead of the generated one
    file_bytes: Optional[bytes] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.openapi_spec = {} if self.openapi_file_override else base_document(self.info)

    def add_security_scheme(self, name: str, scheme: dict) -> None:
        """Add a reusable security scheme (``components.securitySchemes[name]``), e.g.
        ``{"type": "http", "scheme": "bearer"}``; routes with ``auth_required=True`` list every
        scheme. (``configure_authentication`` adds ``BearerAuth`` or ``ApiKeyAuth`` by itself.)"""
        if self.openapi_file_override:
            return
        self.openapi_spec.setdefault("components", {}).setdefault("securitySchemes", {})[name] = scheme

    def override_openapi(self, openapi_json_spec_path: Union[str, Path]) -> None:
        """Serve this JSON file as the spec, byte for byte, instead of generating one."""
        path = Path(openapi_json_spec_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FileNotFoundError(f"openapi_file_path: cannot read the OpenAPI spec file {str(path)!r}: "
                                    f"{exc.strerror or exc}") from None
        try:
            spec = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"openapi_file_path: {str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise ValueError(f"openapi_file_path: {str(path)!r} must hold a JSON object, not {type(spec).__name__}")
        self.openapi_spec = spec
        self.file_bytes = data
        self.openapi_file_override = True

    def get_openapi_config(self) -> dict:
        """The spec as a dict: the custom file, or the base document (the served spec, with
        paths, is generated when the app starts)."""
        return self.openapi_spec


__all__ = ["Components", "Contact", "DOCS_PAGE", "ExternalDocumentation", "License", "OpenAPI", "OpenAPIInfo",
           "RouteOpenAPIMeta", "Server", "base_document", "info_object"]
