"""stonechat's server as the home of an ASGI app: the Starlette bench app (starlette_app.py)
mounted at "/", nothing else. Port from env BENCH_PORT (see http_app.py).

    python mount_app.py --log-level WARNING
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from starlette_app import app as starlette_app  # noqa: E402

from stonechat import Robyn  # noqa: E402

app = Robyn(__file__)
app.mount("/", starlette_app)

if __name__ == "__main__":
    app.start(host="127.0.0.1", port=int(os.environ.get("BENCH_PORT", "8080")))
