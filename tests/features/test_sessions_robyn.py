"""Session cookies move between the real Robyn 0.88.0 and stonechat both ways (same secret):
a user logged in on a Robyn deployment stays logged in after the move, and back.

Robyn is installed by this test into ``tests/.robyn-venv`` (gitignored; once, ~20 s, reused
after), never skipped: if pip cannot install it the test fails with pip's output.
"""

from __future__ import annotations

import base64
import fcntl
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

ROBYN_VERSION = "0.88.0"
VENV = Path(__file__).resolve().parent.parent / ".robyn-venv"
SECRET = "shared-secret-between-both"
COOKIE = "robyn_session"
DATA = {"user": "alice", "roles": ["admin", "ops"], "n": 3, "nested": {"k": "h\u00e9 \u2603"}, "ok": True}

APP = """
import os
from {framework} import Robyn

app = Robyn(__file__)
app.configure_sessions("{secret}", cookie_name="{cookie}")

@app.get("/set")
def set_session(request):
    data = {data!r}
    for key, value in data.items():
        request.session[key] = value
    return "set"

@app.get("/get")
def get_session(request):
    return {{"data": dict(request.session)}}

@app.get("/bump")
def bump(request):
    request.session["n"] = request.session.get("n", 0) + 1
    return {{"n": request.session["n"]}}

@app.get("/clear")
def clear(request):
    request.session.clear()
    return "cleared"

app.start(host="127.0.0.1", port=int(os.environ["STONECHAT_PORT"]), _check_port=False)
"""


def robyn_python() -> Path:
    """The venv's python with robyn==0.88.0, built on first use (under a lock)."""
    python = VENV / "bin" / "python"
    VENV.parent.mkdir(exist_ok=True)
    with open(str(VENV) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        check = [str(python), "-c", "import importlib.metadata as m, robyn; print(m.version('robyn'))"]
        if python.exists():
            done = subprocess.run(check, capture_output=True, text=True, timeout=60)
            if done.returncode == 0 and done.stdout.strip() == ROBYN_VERSION:
                return python
        steps = [[sys.executable, "-m", "venv", "--clear", str(VENV)],
                 [str(python), "-m", "pip", "install", "-q", f"robyn=={ROBYN_VERSION}"]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                pytest.fail(f"could not install Robyn {ROBYN_VERSION} for the compatibility test: "
                            f"{' '.join(step)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        done = subprocess.run(check, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == ROBYN_VERSION, done.stdout + done.stderr
        return python


@pytest.fixture(scope="module")
def servers(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("robyn_compat")
    started = {}
    for framework, python in (("robyn", robyn_python()), ("stonechat", Path(sys.executable))):
        path = root / f"{framework}_app.py"
        path.write_text(textwrap.dedent(APP.format(framework=framework, secret=SECRET, cookie=COOKIE, data=DATA)))
        server = serve_module(str(path), command=[str(python), str(path)], wait=False)
        server.wait_ready(timeout=60)
        started[framework] = server
    return started


def set_cookie(r: httpx.Response) -> str:
    values = [v for v in r.headers.get_list("set-cookie") if v.startswith(COOKIE + "=")]
    assert len(values) == 1, dict(r.headers)
    return values[0]


def value_of(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


def attributes(header: str) -> dict[str, str]:
    found = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        found[name.lower()] = value
    return found


def envelope(cookie: str) -> dict:
    payload = cookie.rsplit(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def get(server, path: str, cookie: str | None = None) -> httpx.Response:
    headers = {"cookie": f"{COOKIE}={cookie}"} if cookie else {}
    r = httpx.get(server.url + path, headers=headers, timeout=15)
    assert r.status_code == 200, (r.status_code, r.text, server.output()[-2000:])
    return r


@pytest.mark.timeout(900)
def test_robyn_cookie_reads_in_stonechat(servers):
    robyn, stonechat = servers["robyn"], servers["stonechat"]
    assert get(robyn, "/get").json() == {"data": {}}  # it is Robyn's app, answering
    cookie = value_of(set_cookie(get(robyn, "/set")))
    assert envelope(cookie)["d"] == DATA
    assert get(stonechat, "/get", cookie).json() == {"data": DATA}
    # changed by stonechat, read by Robyn again
    bumped = value_of(set_cookie(get(stonechat, "/bump", cookie)))
    assert get(robyn, "/get", bumped).json() == {"data": {**DATA, "n": 4}}


@pytest.mark.timeout(900)
def test_stonechat_cookie_reads_in_robyn(servers):
    robyn, stonechat = servers["robyn"], servers["stonechat"]
    cookie = value_of(set_cookie(get(stonechat, "/set")))
    assert get(robyn, "/get", cookie).json() == {"data": DATA}
    bumped = value_of(set_cookie(get(robyn, "/bump", cookie)))
    assert get(stonechat, "/get", bumped).json() == {"data": {**DATA, "n": 4}}


@pytest.mark.timeout(900)
def test_same_cookie_bytes_and_attributes(servers):
    robyn, stonechat = servers["robyn"], servers["stonechat"]
    theirs, ours = set_cookie(get(robyn, "/set")), set_cookie(get(stonechat, "/set"))
    # the same JSON bytes (Robyn's separators and escaping); only the expiry second may differ
    a, b = envelope(value_of(theirs)), envelope(value_of(ours))
    assert abs(a.pop("exp") - b.pop("exp")) <= 5 and a == b
    assert base64.urlsafe_b64decode(value_of(theirs).split(".")[0] + "==").split(b',"exp"')[0] \
        == base64.urlsafe_b64decode(value_of(ours).split(".")[0] + "==").split(b',"exp"')[0]
    assert attributes(theirs) == attributes(ours)
    # a cookie signed with another secret: an empty session on both
    foreign = value_of(ours).rsplit(".", 1)[0] + ".AAAA"
    assert get(robyn, "/get", foreign).json() == get(stonechat, "/get", foreign).json() == {"data": {}}


@pytest.mark.timeout(900)
def test_cleared_session_expires_the_cookie_alike(servers):
    robyn, stonechat = servers["robyn"], servers["stonechat"]
    cookie = value_of(set_cookie(get(robyn, "/set")))
    theirs, ours = set_cookie(get(robyn, "/clear", cookie)), set_cookie(get(stonechat, "/clear", cookie))
    assert value_of(theirs) == value_of(ours) == ""
    assert attributes(theirs) == attributes(ours)
    assert attributes(ours)["max-age"] == "0"
