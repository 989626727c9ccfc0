"""Robyn's ``robyn.jsonify`` module path: ``jsonify`` (``core/response.py``)."""

from .core.response import jsonify

__all__ = ["jsonify"]
