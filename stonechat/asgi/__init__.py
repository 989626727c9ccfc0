"""ASGI both ways (see docs/asgi.md).

* a stonechat app served by any ASGI server, ``app.asgi``: ``app.py`` (HTTP, WebSocket handshake,
  lifespan), ``connection.py`` (the server contract's WebSocketConnection over ASGI);
* ASGI apps inside stonechat, ``app.mount(prefix, asgi_app)``: ``mount.py`` (the prefix table, HTTP),
  ``mount_websocket.py``, ``scope.py`` (what both halves share), ``eager.py`` (the app's first
  step inside ``handle()``), ``lifespan.py`` (its lifespan in stonechat's lifecycle),
  ``headers.py`` (header lists and blocks);
* ASGI middleware around the whole app, ``app.add_asgi_middleware``: ``middleware.py``.
"""
