"""Features built on the core (CORS, ...): each imports ``core``/``websocket``/``pubsub`` and its own
optional dependency, never another feature or ``app.py``."""
