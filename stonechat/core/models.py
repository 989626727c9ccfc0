"""Recognising Pydantic models without importing Pydantic.

Pydantic is optional. A class can only be a Pydantic model if ``pydantic`` has already been
imported (the class's own module imported it), so looking it up in ``sys.modules`` answers
"is this a model?" exactly, and an app that uses no model never loads Pydantic. Used at
registration (parameter injection, OpenAPI), never per request.
"""

from __future__ import annotations

import sys
from typing import Any


def is_model_class(annotation: Any) -> bool:
    """``annotation`` is a subclass of ``pydantic.BaseModel``."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None or not isinstance(annotation, type):
        return False
    try:
        return issubclass(annotation, pydantic.BaseModel)
    except TypeError:  # some typing constructs look like classes but refuse issubclass
        return False


def is_model(value: Any) -> bool:
    """``value`` is an instance of a Pydantic model."""
    return is_model_class(value.__class__)


__all__ = ["is_model", "is_model_class"]
