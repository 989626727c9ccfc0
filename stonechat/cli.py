"""The ``stonechat`` command (also ``python -m stonechat``), shaped like Robyn's CLI.

    stonechat app.py [--processes N] [--workers N] [--log-level L] ...   run the app file
    stonechat app.py --dev                                               run it, restart on .py changes
    stonechat --create [--dir D --docker y|n --type T]                    a new project (scaffold/)
    stonechat --version

The app file runs in this process as ``__main__`` (so its ``app.start()`` sees the same flags
and receives signals directly); nothing is re-spawned except in ``--dev``, where the reloader
starts the app as a child and never imports it itself, so even an app that does not import
(a syntax error) is watched until it is fixed. Stop signals are held before the app file runs
(``server/signals.py``): a SIGTERM while it is still importing stops it cleanly once it reaches
``app.start()`` (its shutdown handlers run); if it never does, the signal is delivered again
with its usual meaning when the file has run.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Optional, Sequence

from .browser import drop_once_token, make_once_token
from .scaffold import run_create
from .server.reloader import run_dev
from .serving import setup_logging
from .version import __version__
from .server.signals import hold_stop_signals, release_stop_signals

USAGE = """usage: stonechat APP.py [--dev] [--processes N] [--workers N] [--log-level LEVEL] [...]
       stonechat --create [--dir PATH] [--docker y|n] [--type no-db|sqlite|postgres]
       stonechat --version

  --dev            restart the app when a .py file in its directory changes
  --processes N    N worker processes sharing the port, under a supervisor
  --workers N      threads per process for threaded handlers (threaded=True)
  --log-level L    DEBUG, INFO (default), WARNING, ERROR
  --open-browser   open the app in a browser once it serves (also ROBYN_BROWSER_OPEN=1)
  --create         a new project from a template; asks for what the flags do not give
Other flags are passed to the app (see docs/lifecycle.md)."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args:
        print(f"stonechat {__version__}")
        return 0
    if "--create" in args:
        return run_create(args)
    if not args or "-h" in args or "--help" in args:
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 0 if args else 2
    app_file = next((a for a in args if a.endswith(".py") and not a.startswith("-")), None)
    if app_file is None:
        print(f"stonechat: no app file given\n{USAGE}", file=sys.stderr)
        return 2
    rest = [a for a in args if a is not app_file]
    app_path = os.path.abspath(app_file)
    if "--dev" in rest and not os.environ.get("STONECHAT_DEV_CHILD"):
        setup_logging("INFO")
        # Whether the app opens a browser is known in the child (robyn.env, flags): the token
        # makes sure only its first start does (browser.py).
        token = make_once_token()
        try:
            return run_dev(None, None, argv=[app_path, *rest])
        finally:
            drop_once_token(token)
    if not os.path.isfile(app_path):
        print(f"stonechat: {app_file}: no such file", file=sys.stderr)
        return 2
    sys.argv = [app_path, *rest]
    sys.path.insert(0, os.path.dirname(app_path))
    hold_stop_signals()
    try:
        runpy.run_path(app_path, run_name="__main__")
    finally:
        release_stop_signals()  # a no-op when app.start() ran (it releases them itself)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
