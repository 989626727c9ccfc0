"""Robyn's ``robyn.session`` module path (re-exports; the feature is ``features/sessions.py``)."""

from .features.sessions import Session, SessionManager, _read_cookie, _Signer  # noqa: F401

__all__ = ["Session", "SessionManager"]
