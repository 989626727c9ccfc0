"""Robyn's ``robyn.env_populator`` module path: ``robyn.env`` loading (``envfile.py``)."""

from .envfile import load_vars, parser  # noqa: F401

__all__ = ["load_vars", "parser"]
