"""Static-file benchmark app, written against Robyn's public API (run unchanged under Robyn and,
with `robyn` renamed, under stonechat; see http_app.py).

serve_directory("/static", DIR) with DIR holding 1k.bin (1 KiB) and 1m.bin (1 MiB), written
here at import (env BENCH_STATIC_DIR, else a directory under the system's temp dir), so the
harness needs no extra step. GET / answers the harness's readiness probe.
"""

import os
import tempfile

from robyn import Robyn

DIR = os.environ.get("BENCH_STATIC_DIR") or os.path.join(tempfile.gettempdir(), "bench-static-files")
SIZES = {"1k.bin": 1024, "1m.bin": 1024 * 1024}

os.makedirs(DIR, exist_ok=True)
for name, size in SIZES.items():
    path = os.path.join(DIR, name)
    if not os.path.exists(path) or os.path.getsize(path) != size:
        with open(path + f".{os.getpid()}", "wb") as f:
            f.write(bytes(range(256)) * (size // 256))
        os.replace(path + f".{os.getpid()}", path)

app = Robyn(__file__)


@app.get("/")
def index():
    return "static bench"


app.serve_directory("/static", DIR)

if __name__ == "__main__":
    app.start(host="127.0.0.1", port=int(os.environ["BENCH_PORT"]))
