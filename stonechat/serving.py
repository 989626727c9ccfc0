"""``app.start()``: read flags and environment, set up logging, then hand the built app to the
server layer — one worker in this process, or a supervisor for ``--processes``/``--dev``.

Robyn's ``start()`` prompts on stdin when the port is taken; here a taken port is a startup
error that names the address (exit 1), since servers run without a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from . import __version__
from .config import Config
from .server.runner import EXIT_OK, bind_socket, serve
from .server.settings import ServerSettings, SettingsError

logger = logging.getLogger("stonechat")

EXIT_BAD_CONFIG = 2


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


def start_app(app: Any, host: str, port: Any, keep_alive_timeout: Any, overrides: dict) -> None:
    try:
        config = app.config or Config()
    except ValueError as exc:
        print(f"stonechat: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    setup_logging(config.log_level)
    if config.version:
        print(f"stonechat {__version__}")
        return
    try:
        host, port = resolve_address(host, port)
        merged = dict(app.settings_overrides)
        env_keep_alive = os.environ.get("ROBYN_KEEP_ALIVE_TIMEOUT")
        if env_keep_alive and "keep_alive_timeout" not in merged:
            merged["keep_alive_timeout"] = env_keep_alive
        elif keep_alive_timeout != 20:
            merged["keep_alive_timeout"] = keep_alive_timeout
        merged.update(overrides)
        settings = ServerSettings.from_sources(merged)
    except SettingsError as exc:
        logger.error("bad setting: %s", exc)
        sys.exit(EXIT_BAD_CONFIG)

    if config.dev and not os.environ.get("STONECHAT_DEV_CHILD"):
        from .server.supervisor import run_dev
        sys.exit(run_dev(host, port))

    try:
        sock = bind_socket(host, port, reuse_port=config.processes > 1, backlog=settings.backlog)
    except OSError as exc:
        logger.error("%s (set another port with app.start(port=...) or STONECHAT_PORT)", exc.strerror or exc)
        sys.exit(1)
    actual_port = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else '[' + host + ']'}:{actual_port}"

    if config.processes > 1:
        from .server.supervisor import run_supervisor
        banner = f"stonechat {__version__} serving {url} ({config.processes} processes)"
        code = run_supervisor(lambda: app.served(settings, config.debug), sock, settings,
                              config.processes, banner)
    else:
        banner = f"stonechat {__version__} serving {url} (pid {os.getpid()})"
        code = serve(app.served(settings, config.debug), sock, settings, banner)
    if code != EXIT_OK:
        sys.exit(code)
