"""Robyn's ``robyn.testing`` module path: ``TestClient`` (``testclient.py``)."""

from .testclient import (  # noqa: F401
    TestClient, TestResponse,
)

__all__ = ['TestClient', 'TestResponse']
