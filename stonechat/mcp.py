"""Robyn's ``robyn.mcp`` module path: the MCP endpoint behind ``app.mcp`` (``features/mcp.py``)."""

from .features.mcp import (  # noqa: F401
    LATEST_PROTOCOL_VERSION, PROTOCOL_VERSIONS, MCPApp, MCPError, MCPHandler, MCPPrompt, MCPResource, MCPTool,
)

__all__ = ["LATEST_PROTOCOL_VERSION", "MCPApp", "MCPError", "MCPHandler", "MCPPrompt", "MCPResource", "MCPTool",
           "PROTOCOL_VERSIONS"]
