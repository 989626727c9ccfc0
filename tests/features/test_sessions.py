"""Sessions (reference §18) on a real server: Robyn's suite (integration_tests/test_sessions.py:
empty by default, persistence, per-client counter, HttpOnly, tampering, clear), plus expired,
foreign-key and oversized cookies read as an empty session, an emptied session expiring the
cookie (``Max-Age=0``), nested changes saved, the options Robyn refuses refused the same way,
and no session machinery at all for an app that does not configure it."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from stonechat import Robyn, Session, SessionManager
from stonechat.session import Session as RobynPathSession

COOKIE = "robyn_session"
SECRET = "integration-test-secret"

APP = """
from stonechat import Robyn

app = Robyn(__file__)

@app.get("/sessions/get")
def session_get(request):
    return {"value": request.session.get("value")}

@app.post("/sessions/set")
def session_set(request):
    request.session["value"] = request.json().get("value")
    return {"stored": request.session["value"]}

@app.get("/sessions/counter")
async def session_counter(request):
    request.session["count"] = request.session.get("count", 0) + 1
    return {"count": request.session["count"]}

@app.get("/sessions/clear")
def session_clear(request):
    request.session.clear()
    return {"cleared": True}

@app.get("/sessions/append")
def session_append(request):
    if "items" not in request.session:
        request.session["items"] = []
    request.session["items"].append(len(request.session["items"]))  # a nested change
    return {"items": request.session["items"]}

@app.get("/sessions/big")
def session_big(request):
    request.session["blob"] = "x" * 5000
    return "big"

@app.get("/sessions/dump")
def session_dump(request):
    return {"data": dict(request.session), "type": type(request.session).__name__}

app.configure_sessions(secret_key="integration-test-secret", cookie_name="robyn_session")
app.start()
"""


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP, name="sessions_app.py")


def set_cookie_of(r: httpx.Response) -> str:
    values = [v for v in r.headers.get_list("set-cookie") if v.startswith(COOKIE + "=")]
    assert len(values) == 1, r.headers
    return values[0]


def cookie_value(r: httpx.Response) -> str:
    return set_cookie_of(r).split(";", 1)[0].split("=", 1)[1]


def get(server, path: str, cookie: str | None = None) -> httpx.Response:
    headers = {"cookie": f"{COOKIE}={cookie}".encode()} if cookie is not None else {}
    return httpx.get(server.url + path, headers=headers, timeout=10)


def test_session_is_empty_by_default(server):
    r = get(server, "/sessions/get")
    assert r.status_code == 200 and r.json() == {"value": None}
    assert "set-cookie" not in r.headers  # nothing stored, nothing written


def test_session_persists_across_requests(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post("/sessions/set", json={"value": "hello"})
        assert r.json() == {"stored": "hello"}
        assert COOKIE in r.cookies
        assert client.get("/sessions/get").json() == {"value": "hello"}
        r = client.get("/sessions/get")
        assert "set-cookie" not in r.headers  # read, not changed: no cookie rewritten


def test_counter_per_client(server):
    with httpx.Client(base_url=server.url, timeout=10) as one, httpx.Client(base_url=server.url, timeout=10) as two:
        assert [one.get("/sessions/counter").json()["count"] for _ in range(3)] == [1, 2, 3]
        assert two.get("/sessions/counter").json()["count"] == 1


def test_cookie_attributes(server):
    r = httpx.post(server.url + "/sessions/set", json={"value": "x"})
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in set_cookie_of(r).split(";")[1:]}
    assert attrs["httponly"] == "HttpOnly"
    assert attrs["samesite"] == "SameSite=Lax"
    assert attrs["path"] == "Path=/"
    assert attrs["max-age"] == f"Max-Age={14 * 24 * 60 * 60}"
    assert "secure" not in attrs


def test_cookie_format_is_robyns(server):
    r = httpx.post(server.url + "/sessions/set", json={"value": "hé"})
    value = cookie_value(r)
    payload, signature = value.split(".")
    envelope = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert envelope["d"] == {"value": "hé"} and isinstance(envelope["exp"], int)
    # the same secret in the manager (in this process) reads it, and signs it the same way
    manager = SessionManager(SECRET, cookie_name=COOKIE)
    assert dict(manager.loads(value)) == {"value": "hé"}
    assert manager._signer.sign(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))) == value


def test_tampered_cookie_is_an_empty_session(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.get("/sessions/counter")
        original = client.cookies[COOKIE]
    tampered = original[:-3] + ("aaa" if not original.endswith("aaa") else "bbb")
    assert get(server, "/sessions/counter", tampered).json() == {"count": 1}
    payload, signature = original.split(".")
    forged = base64.urlsafe_b64encode(b'{"d":{"count":100}}').rstrip(b"=").decode() + "." + signature
    assert get(server, "/sessions/counter", forged).json() == {"count": 1}


@pytest.mark.parametrize("value", ["", "garbage", ".", "a.b.c", "%%%.%%%", "é.é", "x" * 6000,
                                   "A" * 3000 + "." + "B" * 3000])
def test_damaged_or_oversized_cookie_is_an_empty_session(server, value):
    r = get(server, "/sessions/counter", value)
    assert r.status_code == 200 and r.json() == {"count": 1}


def test_expired_and_foreign_cookies_are_empty_sessions(server):
    expired = SessionManager(SECRET, max_age=-1).dumps(Session({"count": 41}))
    assert get(server, "/sessions/counter", expired).json() == {"count": 1}
    foreign = SessionManager("another-secret").dumps(Session({"count": 41}))
    assert get(server, "/sessions/counter", foreign).json() == {"count": 1}
    valid = SessionManager(SECRET).dumps(Session({"count": 41}))
    assert get(server, "/sessions/counter", valid).json() == {"count": 42}
    forever = SessionManager(SECRET, max_age=None).dumps(Session({"count": 9}))
    assert get(server, "/sessions/counter", forever).json() == {"count": 10}


def test_bad_expiry_values_are_refused(server):
    signer = SessionManager(SECRET)._signer
    for exp in ("NaN", "Infinity", "true", '"9999999999"'):
        cookie = signer.sign(b'{"d":{"count":5},"exp":' + exp.encode() + b"}")
        assert get(server, "/sessions/counter", cookie).json() == {"count": 1}, exp
    not_a_dict = signer.sign(b'{"d":[1,2]}')
    assert get(server, "/sessions/counter", not_a_dict).json() == {"count": 1}


def test_clear_expires_the_cookie(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.post("/sessions/set", json={"value": "to-be-cleared"})
        assert client.get("/sessions/get").json()["value"] == "to-be-cleared"
        r = client.get("/sessions/clear")
        header = set_cookie_of(r)
        assert header.startswith(f"{COOKIE}=;") and "Max-Age=0" in header
        assert client.get("/sessions/get").json()["value"] is None
    # clearing an already empty session changes nothing: no cookie
    assert "set-cookie" not in get(server, "/sessions/clear").headers


def test_nested_change_is_saved(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/sessions/append").json() == {"items": [0]}
        r = client.get("/sessions/append")
        assert r.json() == {"items": [0, 1]} and COOKIE in r.cookies
        assert client.get("/sessions/dump").json() == {"data": {"items": [0, 1]}, "type": "Session"}


def test_oversized_session_warns_and_is_still_written(server):
    r = get(server, "/sessions/big")
    assert r.text == "big"
    assert len(cookie_value(r)) > 4093
    server.wait_for_output("larger than the ~4 KB most browsers store")


# -- options: the errors Robyn raises -----------------------------------------------------------

def test_configure_returns_the_manager_and_sets_request_session_type():
    app = Robyn(__file__)
    manager = app.configure_sessions("k", cookie_name="c", max_age=60, same_site="strict")
    assert isinstance(manager, SessionManager) and app.session_manager is manager
    assert (manager.cookie_name, manager.max_age, manager.same_site) == ("c", 60, "Strict")
    assert Session is RobynPathSession


def test_second_configure_is_a_runtime_error():
    app = Robyn(__file__)
    app.configure_sessions("k")
    with pytest.raises(RuntimeError, match="already configured"):
        app.configure_sessions("k")


@pytest.mark.parametrize("kwargs,error,match", [
    ({"secret_key": ""}, ValueError, "non-empty secret_key"),
    ({"secret_key": "k", "same_site": "bogus"}, ValueError, "same_site must be one of"),
    ({"secret_key": "k", "same_site": "None"}, ValueError, "requires secure=True"),
    ({"secret_key": "k", "same_site": "none"}, ValueError, "requires secure=True"),
    ({"secret_key": b"bytes"}, TypeError, "secret_key must be a str"),
    ({"secret_key": "k", "max_age": "3600"}, TypeError, "max_age must be an int"),
    ({"secret_key": "k", "cookie_name": "a b"}, ValueError, "cookie_name"),
])
def test_bad_options(kwargs, error, match):
    app = Robyn(__file__)
    with pytest.raises(error, match=match):
        app.configure_sessions(**kwargs)
    assert app.session_manager is None


def test_same_site_none_with_secure_is_accepted():
    assert SessionManager("k", same_site="None", secure=True).same_site == "None"


def test_no_sessions_no_hooks_and_no_session():
    app = Robyn(__file__)

    @app.get("/")
    def index(request):
        return repr(request.session)

    dispatcher = app._build(app_settings())
    assert dispatcher.global_before == [] and dispatcher.global_after == []
    assert all(route.fast for route in dispatcher.routes if route.spec.endpoint == "/")


def app_settings():
    from stonechat.server.settings import ServerSettings
    return ServerSettings.from_sources({}, environ={})


def test_no_sessions_request_session_is_none(serve):
    server = serve("""
from stonechat import Robyn
app = Robyn(__file__)

@app.get("/")
def index(request):
    return repr(request.session)

app.start()
""")
    assert httpx.get(server.url + "/").text == "None"

