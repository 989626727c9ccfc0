"""Template and session benchmark app, written against Robyn's public API (bench/template.py runs
it under Robyn and, with ``robyn`` renamed, under stonechat).

/template renders templates/bench_page.html (20 rows, autoescaped values) with JinjaTemplate;
/session (with BENCH_SESSIONS=1) loads the signed session cookie, bumps a counter and writes the cookie back.
Port: env BENCH_PORT (also ROBYN_PORT/STONECHAT_PORT, set by the harness).
"""

import os
import pathlib

from robyn import Robyn
from robyn.templating import JinjaTemplate

app = Robyn(__file__)
pages = JinjaTemplate(os.path.join(pathlib.Path(__file__).parent.resolve(), "templates"))
ITEMS = [{"name": f"item <{i}>", "price": i * 1.5} for i in range(20)]
if os.environ.get("BENCH_SESSIONS"):  # only for the session scenario: the hooks run on every route
    app.configure_sessions("bench-secret", cookie_name="bench_session")


@app.get("/template")
async def template():
    return pages.render_template("bench_page.html", title="Bench & Co", user="<ada>", items=ITEMS)


@app.get("/session")
async def session(request):
    request.session["n"] = request.session.get("n", 0) + 1
    return str(request.session["n"])


if __name__ == "__main__":
    app.start(host="127.0.0.1", port=int(os.environ.get("BENCH_PORT", "8080")), _check_port=False)
