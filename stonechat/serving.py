"""``app.start()``: read flags and environment, set up logging, then hand the built app to the
server layer — one worker in this process, or a supervisor for ``--processes``/``--dev``.

This is the only place that maps user-facing flags onto the server layer: ``--processes N``
(a supervisor forks N workers sharing one inherited socket), ``--dev`` (a reloader parent runs
the app as a child with ``STONECHAT_DEV_CHILD=1``), ``--workers N`` (threads per process for
threaded handlers). The app is built (``app.served``) in the process that serves it, after any
fork, so no thread pool or event loop crosses a fork.

Robyn's ``start()`` prompts on stdin when the port is taken; here a taken port is a startup
error that names the address (exit 1), since servers run without a terminal. A bad line in
``robyn.env`` (read by the constructor, ``envfile.py``) stops here too (exit 2).
``--open-browser`` wraps the served app's startup so the URL opens once it has run, once per
run (``browser.py``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Awaitable, Callable

from .version import __version__
from .browser import browser_url, drop_once_token, make_once_token, open_browser_once
from .config import Config
from .server.runner import EXIT_OK, bind_socket, guard_exit, inherited_control_channel, serve
from .server.reloader import run_dev
from .server.supervisor import run_supervisor
from .server.settings import ServerSettings, SettingsError
from .server.signals import hold_stop_signals, release_stop_signals

logger = logging.getLogger("stonechat")

EXIT_BAD_CONFIG = 2
DEV_CHILD_ENV = "STONECHAT_DEV_CHILD"


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))


def _env(names: tuple[str, ...], default: Any) -> tuple[Any, str]:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value, name
    return default, ""


def resolve_address(host: str, port: Any) -> tuple[str, int]:
    host, _ = _env(("STONECHAT_HOST", "ROBYN_HOST"), host)
    raw_port, source = _env(("STONECHAT_PORT", "ROBYN_PORT"), port)
    try:
        port = int(raw_port)
        if not 0 <= port <= 65535:
            raise ValueError
    except (TypeError, ValueError):
        raise SettingsError(f"{source or 'port'}: expected a port number 0-65535, got {raw_port!r}") from None
    return host, port


def start_app(app: Any, host: str, port: Any, keep_alive_timeout: Any, overrides: dict[str, Any]) -> None:
    hold_stop_signals()  # app.start() already did: from its first line no stop signal is lost
    try:
        _start_app(app, host, port, keep_alive_timeout, overrides)
    finally:
        release_stop_signals(logger.info)


def _start_app(app: Any, host: str, port: Any, keep_alive_timeout: Any, overrides: dict[str, Any]) -> None:
    try:
        config = app.config or Config()
    except ValueError as exc:
        print(f"stonechat: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    setup_logging(config.log_level)
    if config.version:
        print(f"stonechat {__version__}")
        return
    env_file = getattr(app, "env_file", None)
    if env_file is not None and env_file.problems:
        for problem in env_file.problems:
            logger.error("bad line in robyn.env: %s", problem)
        sys.exit(EXIT_BAD_CONFIG)
    try:
        host, port = resolve_address(host, port)
        merged = dict(app.settings_overrides)
        env_keep_alive = os.environ.get("ROBYN_KEEP_ALIVE_TIMEOUT")
        if env_keep_alive and "keep_alive_timeout" not in merged:
            merged["keep_alive_timeout"] = env_keep_alive
        elif keep_alive_timeout != 20:
            merged["keep_alive_timeout"] = keep_alive_timeout
        merged.update(overrides)
        if config.access_log is not None:
            merged["access_log"] = config.access_log
        if config.access_log_format is not None:
            merged["access_log_format"] = config.access_log_format
        if config.request_id:
            merged["request_id"] = True
        if config.workers_given:
            # Robyn's --workers is "threads per process that run handlers"; here that is the
            # pool for threaded handlers (async and plain sync handlers run on the loop).
            merged["thread_pool_size"] = config.workers
        settings = ServerSettings.from_sources(merged)
        check_settings = getattr(app, "check_settings", None)
        if check_settings is not None:
            check_settings(settings)
    except SettingsError as exc:
        logger.error("bad setting: %s", exc)
        sys.exit(EXIT_BAD_CONFIG)
    if settings.thread_pool_size < 1:
        logger.error("bad setting: thread_pool_size/--workers must be at least 1")
        sys.exit(EXIT_BAD_CONFIG)
    try:
        app.static_directory_table()
    except ValueError as exc:
        logger.error("%s", exc)
        sys.exit(EXIT_BAD_CONFIG)

    if config.dev and not os.environ.get(DEV_CHILD_ENV):
        token = make_once_token() if config.open_browser else None  # the first child opens it
        try:
            code = run_dev(host, port)
        finally:
            if token is not None:
                drop_once_token(token)
        sys.exit(code)

    try:
        # --processes N: one socket, inherited by every worker (one accept queue, so a worker
        # that dies loses no queued connection, and a second copy of the server cannot bind).
        sock = bind_socket(host, port, reuse_port=False, backlog=settings.backlog)
    except OSError as exc:
        logger.error("%s (set another port with app.start(port=...) or STONECHAT_PORT)", exc.strerror or exc)
        sys.exit(1)
    actual_port = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else '[' + host + ']'}:{actual_port}"

    def make_served() -> Any:  # in the process that serves (after the fork, under a supervisor)
        served = app.served(settings, config.debug)
        if config.open_browser:
            served.startup = _then_open_browser(served.startup, browser_url(host, actual_port))
        return served

    if config.processes > 1:
        before_fork = getattr(app, "before_fork", None)  # e.g. metrics: one directory for all workers
        if before_fork is not None:
            before_fork(config.processes)
        banner = f"stonechat {__version__} serving {url} ({config.processes} processes)"
        token = make_once_token() if config.open_browser else None  # the first ready worker opens it
        try:
            code = run_supervisor(make_served, sock, settings, config.processes, banner,
                                  stop_timeout=stop_timeout(app, settings),
                                  on_worker_exit=getattr(app, "worker_exited", None))
        finally:
            if token is not None:
                drop_once_token(token)
            after_workers = getattr(app, "after_workers", None)
            if after_workers is not None:
                after_workers()
    else:
        banner = f"stonechat {__version__} serving {url} (pid {os.getpid()})"
        code = serve(make_served(), sock, settings, banner, control=inherited_control_channel())
    guard_exit(code)
    if code != EXIT_OK:
        sys.exit(code)


def _then_open_browser(startup: Callable[[], Awaitable[None]], url: str) -> Callable[[], Awaitable[None]]:
    """``--open-browser``: the served app's startup, then the browser (once per run, browser.py)."""
    async def startup_then_open_browser() -> None:
        await startup()
        open_browser_once(url)
    return startup_then_open_browser


def stop_timeout(app: Any, settings: ServerSettings) -> float:
    """The longest a worker's stop sequence can take when every deadline runs out; past it
    (plus a margin) the supervisor kills the worker."""
    lifecycle = app.lifecycle
    steps = len(lifecycle.shutdown_handlers) + len(lifecycle.lifespans)
    return (settings.drain_timeout + 1.0 + settings.ws_close_timeout + 1.0
            + steps * settings.shutdown_handler_timeout + 5.0)
