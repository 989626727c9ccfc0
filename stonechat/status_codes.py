"""Robyn's ``robyn.status_codes`` module path (``core/status_codes.py``)."""

from .core.status_codes import *  # noqa: F401,F403
