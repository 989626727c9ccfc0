"""Robyn's ``robyn.dependency_injection`` module path (``core/dependencies.py``)."""

from .core.dependencies import (  # noqa: F401
    DependencyMap,
)

__all__ = ['DependencyMap']
