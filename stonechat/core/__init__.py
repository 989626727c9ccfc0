"""HTTPRequest → handler → HTTPResponse: the framework's core. No sockets, no optional dependency;
it imports only itself and ``server/interface.py``."""
