"""``python -m stonechat app.py [--dev] ...``: the same as the ``stonechat`` command."""

import sys

from .cli import main

sys.exit(main())
