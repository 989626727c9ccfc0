"""Robyn's ``robyn.authentication`` module path (``core/auth.py``)."""

from .core.auth import (  # noqa: F401
    AuthenticationHandler, AuthenticationNotConfiguredError, BearerGetter, Identity, TokenGetter,
)

__all__ = ['AuthenticationHandler', 'AuthenticationNotConfiguredError', 'BearerGetter', 'Identity', 'TokenGetter']
