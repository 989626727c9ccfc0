"""The WebSocket protocol (RFC 6455) after the HTTP upgrade: ``handshake.py`` (validate the
upgrade, the 101 answer, refusals), ``frames.py`` (the Sans-I/O frame reader and the frame
writers), ``protocol.py`` (the asyncio protocol: close handshake, keepalive, backpressure,
the connection the session gets) and ``deflate.py`` (permessage-deflate, RFC 7692)."""
