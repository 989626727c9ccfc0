"""Robyn's ``robyn.openapi``: the OpenAPI object model (re-exports; the feature lives in
``stonechat/features/openapi/``)."""

from .features.openapi import (
    Components, Contact, ExternalDocumentation, License, OpenAPI, OpenAPIInfo, RouteOpenAPIMeta, Server,
)

__all__ = ["Components", "Contact", "ExternalDocumentation", "License", "OpenAPI", "OpenAPIInfo", "RouteOpenAPIMeta",
           "Server"]
