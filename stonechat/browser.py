"""``--open-browser`` (or ``ROBYN_BROWSER_OPEN``): open the served URL in a browser once the
server is ready — once per run, not once per process.

"Ready" is the end of the app's startup (handlers, lifespans, const routes) in the process
that serves: the socket already listens, so the browser's request is answered. Under
``--processes N`` every worker runs startup and under ``--dev`` every restart does, so the
process that starts them (supervisor, reloader) first makes a *once token* (an empty file
named by ``STONECHAT_BROWSER_ONCE``, inherited by the workers); the first serving process
that deletes it opens the browser, the others find it gone. A single plain process needs no
token. ``webbrowser`` honours ``BROWSER`` (a command; tests point it at a script); with no
browser at all it is a log line, never an error. The browser runs on a thread: a console
browser or a ``BROWSER`` command may block until it exits.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import webbrowser

logger = logging.getLogger("stonechat")

ONCE_ENV = "STONECHAT_BROWSER_ONCE"


def browser_url(host: str, port: int) -> str:
    """The URL a browser can open for a server bound to ``host``: a wildcard address
    (``0.0.0.0``, ``::``) is not one a browser can connect to, so it becomes loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def make_once_token() -> str:
    """Before starting the processes that serve: the token the first of them will take."""
    fd, path = tempfile.mkstemp(prefix="stonechat-browser-")
    os.close(fd)
    os.environ[ONCE_ENV] = path
    return path


def drop_once_token(path: str) -> None:
    """After the run: remove the token if no process took it (none got ready)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    if os.environ.get(ONCE_ENV) == path:
        del os.environ[ONCE_ENV]


def take_once_token() -> bool:
    """True for the one serving process that should open the browser."""
    path = os.environ.get(ONCE_ENV)
    if not path:
        return True  # a single plain process: startup runs once
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def open_browser_once(url: str) -> None:
    """Called when this process is ready to serve."""
    if take_once_token():
        logger.info("--open-browser: opening %s", url)
        threading.Thread(target=_open, args=(url,), name="stonechat-browser", daemon=True).start()


def _open(url: str) -> None:
    try:
        opened = webbrowser.open_new_tab(url)
    except Exception as exc:  # a broken BROWSER entry, a browser that crashed...
        logger.warning("--open-browser: could not open %s (%s)", url, exc)
        return
    if not opened:
        logger.info("--open-browser: no browser found to open %s (set BROWSER to one's command)", url)


__all__ = ["ONCE_ENV", "browser_url", "drop_once_token", "make_once_token", "open_browser_once"]
