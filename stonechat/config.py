"""Command-line flags and environment variables (Robyn's ``Config``), read when the app starts.

Unlike Robyn, nothing is parsed at import time (``import stonechat`` never exits on ``-h``),
unknown flags are ignored, and both ``ROBYN_*`` and ``STONECHAT_*`` variables are honoured.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence


class Config:
    def __init__(self, argv: Optional[Sequence[str]] = None) -> None:
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--processes", type=int, default=None)
        parser.add_argument("--workers", type=int, default=None)
        parser.add_argument("--dev", action="store_true", default=False)
        parser.add_argument("--log-level", default=None)
        parser.add_argument("--fast", action="store_true", default=False)
        parser.add_argument("--disable-openapi", action="store_true", default=False)
        parser.add_argument("--open-browser", action="store_true", default=False)
        parser.add_argument("--version", action="store_true", default=False)
        parser.add_argument("--debug", action="store_true", default=False)
        parser.add_argument("--broker", default=None)
        parser.add_argument("--access-log", nargs="?", const="-", default=None)
        parser.add_argument("--access-log-format", default=None)
        parser.add_argument("--request-id", action="store_true", default=False)
        args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
        env = os.environ
        self.processes: int = args.processes or _env_int("STONECHAT_PROCESSES", "ROBYN_PROCESSES") or 1
        self.workers: int = args.workers or 1
        # Given explicitly: the per-process thread pool for threaded handlers (see docs/lifecycle.md).
        self.workers_given: bool = args.workers is not None
        self.dev: bool = (args.dev or env.get("STONECHAT_DEV", "").lower() in ("1", "true")
                          or env.get("ROBYN_DEV_MODE", "").lower() == "true")
        self.fast: bool = args.fast
        if self.fast:
            self.processes = args.processes or (os.cpu_count() or 1)
        self.log_level: str = (args.log_level or env.get("STONECHAT_LOG_LEVEL")
                               or ("DEBUG" if self.dev else ("WARNING" if self.fast else "INFO"))).upper()
        self.disable_openapi: bool = args.disable_openapi
        # Robyn: any non-empty ROBYN_BROWSER_OPEN turns it on; "0"/"false"/"no"/"off" do not here.
        self.open_browser: bool = args.open_browser or any(
            env.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")
            for name in ("STONECHAT_OPEN_BROWSER", "ROBYN_BROWSER_OPEN"))
        self.version: bool = args.version
        # Where rooms and broadcasts go beyond this process: "local" or redis://host:port/db
        # (STONECHAT_BROKER is read with the other broker settings, docs/scaling.md).
        self.broker: Optional[str] = args.broker
        # The access log (docs/production.md): --access-log [FILE] (stdout without FILE) and
        # --access-log-format win over the settings (keyword, STONECHAT_ACCESS_LOG...).
        self.access_log: Optional[str] = args.access_log
        self.access_log_format: Optional[str] = args.access_log_format
        self.request_id: bool = args.request_id
        self.debug: bool = args.debug or env.get("STONECHAT_DEBUG", "").lower() in ("1", "true")
        if self.processes < 1:
            raise ValueError(f"--processes must be at least 1, got {self.processes}")
        if self.dev and self.processes > 1:
            raise ValueError("--dev cannot be combined with --processes > 1")


def _env_int(*names: str) -> Optional[int]:
    for name in names:
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name}: expected an integer, got {value!r}") from None
    return None
