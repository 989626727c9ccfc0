"""Robyn's ``robyn.events`` module path: ``Events`` (``core/lifecycle.py``)."""

from .core.lifecycle import Events

__all__ = ["Events"]
