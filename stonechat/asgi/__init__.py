"""ASGI both ways: a stonechat app served by any ASGI server (``app.asgi``: ``app.py``,
``connection.py``) and ASGI apps inside stonechat (``app.mount(prefix, asgi_app)``: ``mount.py``,
``lifespan.py``; ``app.add_asgi_middleware``: ``middleware.py``). See docs/asgi.md."""
