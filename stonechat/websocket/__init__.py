"""WebSockets in the framework: the API handlers use (``api.py``) and one handshake and session
(``session.py``)."""
