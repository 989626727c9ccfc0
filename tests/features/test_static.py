"""Static files on a real server: ``serve_directory``'s three modes and its fall-through to the
routes, ``serve_file``/``serve_html``/``FileResponse`` from handlers, validators and 304s both
ways, ranges (single, suffix, open-ended, unsatisfiable, several), HEAD, content types; every
path-traversal form sent over a raw socket (httpx would normalise the path first); a 1 GiB
sparse file downloaded while the server's RSS stays flat."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from conftest import rss_kib

APP = """
import os
from stonechat import Robyn, Response, SubRouter, serve_file, serve_html, FileResponse

ROOT = {root!r}
app = Robyn(__file__)
app.set_response_header("x-app", "1")
app.serve_directory("/static", os.path.join(ROOT, "public"))
app.serve_directory("/site", os.path.join(ROOT, "build"), index_file="index.html")
app.serve_directory("/files", os.path.join(ROOT, "listed"), show_files_listing=True)
sub = SubRouter(__file__, prefix="/sub")
sub.serve_directory("/assets", os.path.join(ROOT, "public"))  # Robyn ignores this one
app.include_router(sub)

@app.get("/static/sub")
def sub_route():
    return "route: /static/sub"

@app.post("/static/a.txt")
def post_file():
    return "route: POST"

@app.get("/static/nothing-here")
def nothing():
    return "route: nothing-here"

@app.get("/site/api")
def site_api():
    return "route: /site/api"

@app.options("/site/preflight")
def preflight():
    return "options-under-static"

@app.get("/download")
def download():
    return serve_file(os.path.join(ROOT, "public", "big.bin"))

@app.get("/download-named")
async def download_named():
    return serve_file(os.path.join(ROOT, "public", "a.txt"), file_name="report.csv")

@app.get("/page")
def page():
    return serve_html(os.path.join(ROOT, "public", "page.html"))

@app.get("/bare")
def bare():
    return FileResponse(os.path.join(ROOT, "public", "a.txt"))

@app.get("/response-file")
def response_file():
    r = Response(200, {{"content-type": "text/plain"}}, "")
    r.file_path = os.path.join(ROOT, "public", "a.txt")
    return r

@app.get("/hooked")
def hooked():
    return serve_file(os.path.join(ROOT, "public", "big.bin"))

@app.after_request("/hooked")
def stamp(response):
    response.headers.set("x-hooked", "yes")
    return response

@app.get("/random")
async def random_file():
    return serve_file(os.path.join(ROOT, "public", "random.bin"))

@app.get("/huge")
def huge():
    return serve_file(os.path.join(ROOT, "public", "huge.bin"))

@app.get("/gone")
def gone():
    return serve_file(os.path.join(ROOT, "public", "does-not-exist.txt"))

app.start()
"""

BIG = bytes(range(256)) * 1200  # 307,200 bytes: over the size read in one go (64 KiB)
RANDOM = os.urandom(6 * 1024 * 1024 + 123)  # every position different: a byte out of order shows


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("static")
    public = root / "public"
    (public / "sub").mkdir(parents=True)
    (public / "a.txt").write_text("hello")
    (public / "page.html").write_text("<html><body>page</body></html>")
    (public / "data.json").write_text('{"a": 1}')
    (public / "style.css").write_text("body {}")
    (public / "blob.zzqx").write_bytes(b"\x00\x01")
    (public / "big.bin").write_bytes(BIG)
    (public / "sub" / "b.txt").write_text("bee")
    (public / "sp ace é.txt").write_text("spaced")
    (public / "%2e%2e").mkdir()
    (root / "secret.txt").write_text("TOP SECRET")
    (root / "outside").mkdir()
    (root / "outside" / "s.txt").write_text("TOP SECRET 2")
    os.symlink(public / "a.txt", public / "link-in.txt")
    os.symlink(root / "secret.txt", public / "link-out.txt")
    os.symlink(root / "outside", public / "linkdir-out")
    os.symlink("../secret.txt", public / "rel-out.txt")
    (public / "random.bin").write_bytes(RANDOM)
    with open(public / "huge.bin", "wb") as f:
        f.truncate(1 << 30)  # sparse: no disk used
    build = root / "build"
    (build / "docs").mkdir(parents=True)
    (build / "noindex").mkdir()
    (build / "index.html").write_text("<html>spa</html>")
    (build / "docs" / "index.html").write_text("<html>docs</html>")
    (build / "app.js").write_text("console.log(1)")
    listed = root / "listed"
    (listed / "d").mkdir(parents=True)
    (listed / "x<y>.txt").write_text("x")
    (listed / "d" / "inner.txt").write_text("inner")
    os.symlink(root / "secret.txt", listed / "out.txt")
    return root


@pytest.fixture(scope="module")
def server(serve_module, tree):
    return serve_module(APP.format(root=str(tree)), name="static_app.py")


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def raw_get(server, target: bytes, method: bytes = b"GET", headers: bytes = b"") -> tuple[int, dict, bytes]:
    """One request over a raw socket, the target exactly as given; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
        s.sendall(b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % (method, target, headers))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower().decode()] = value.strip().decode("latin-1")
    return status, fields, body


# -- the three modes and the fall-through -------------------------------------------------

def test_plain_files(http):
    r = http.get("/static/a.txt")
    assert r.status_code == 200 and r.text == "hello"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == "5"
    assert "x-app" not in r.headers  # as Robyn: no default headers on static files
    assert r.headers["content-disposition"] == 'inline; filename="a.txt"'  # as Robyn (actix-files)
    assert http.get("/static/blob.zzqx").headers["content-disposition"] == 'attachment; filename="blob.zzqx"'
    assert http.get("/static/sp%20ace%20%C3%A9.txt").headers["content-disposition"] == (
        "inline; filename=\"sp ace ?.txt\"; filename*=UTF-8''sp%20ace%20%C3%A9.txt")
    assert http.get("/static/sub/b.txt").text == "bee"
    assert http.get("/static/sp%20ace%20%C3%A9.txt").text == "spaced"
    assert http.get("/static/link-in.txt").text == "hello"  # a link inside the root is followed


def test_content_types(http):
    expect = {"/static/page.html": "text/html; charset=utf-8", "/static/data.json": "application/json; charset=utf-8",
              "/static/style.css": "text/css; charset=utf-8", "/static/blob.zzqx": "application/octet-stream",
              "/static/big.bin": "application/octet-stream", "/site/app.js": "text/javascript; charset=utf-8"}
    for path, kind in expect.items():
        r = http.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"] in (kind, kind.replace("text/javascript", "application/javascript")), path


def test_a_subrouters_directory_is_under_its_prefix(http):
    assert http.get("/sub/assets/a.txt").text == "hello"
    assert http.get("/assets/a.txt").status_code == 404


def test_plain_mode_falls_through_to_routes(http):
    assert http.get("/static/sub").text == "route: /static/sub"  # a directory: no listing, no index
    assert http.get("/static/nothing-here").text == "route: nothing-here"  # no such file
    assert http.post("/static/a.txt").text == "route: POST"  # only GET and HEAD are the files'
    r = http.get("/static/nope.txt")
    assert r.status_code == 404 and r.text == "Not found"
    assert http.get("/staticx/a.txt").status_code == 404  # not under the prefix


def test_index_mode(http):
    r = http.get("/site/", follow_redirects=False)
    assert r.status_code == 200 and r.text == "<html>spa</html>"
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    r = http.get("/site", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/site/"
    r = http.get("/site/docs", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/site/docs/"
    assert http.get("/site/docs/").text == "<html>docs</html>"
    assert http.get("/site/api").text == "route: /site/api"  # no file: the route answers
    assert http.get("/site/noindex/").status_code == 404  # a directory without the index file
    assert http.get("/site/missing.js").status_code == 404
    r = http.request("OPTIONS", "/site/preflight")
    assert r.status_code == 200 and r.text == "options-under-static"


def test_listing_mode(http):
    r = http.get("/files/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<a href="d/">d/</a>' in r.text
    assert '<a href="x%3Cy%3E.txt">x&lt;y&gt;.txt</a>' in r.text  # escaped, quoted
    assert "out.txt" not in r.text  # a link out of the root is not listed
    assert "../" not in r.text  # at the mount's root
    inner = http.get("/files/d/")
    assert '<a href="inner.txt">inner.txt</a>' in inner.text and '<a href="../">../</a>' in inner.text
    assert http.get("/files/d/inner.txt").text == "inner"
    r = http.get("/files", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/files/"
    assert http.get("/files/out.txt").status_code == 404


# -- path traversal, each form on its own over a raw socket -----------------------------

TRAVERSALS = [
    b"/static/../secret.txt",
    b"/static/sub/../../secret.txt",
    b"/static/%2e%2e/secret.txt",
    b"/static/%2E%2E/secret.txt",
    b"/static/.%2e/secret.txt",
    b"/static/%2e%2e%2fsecret.txt",
    b"/static/sub%2f..%2f..%2fsecret.txt",
    b"/static/%252e%252e/secret.txt",
    b"/static/%252e%252e%252fsecret.txt",
    b"/static/..%5csecret.txt",
    b"/static/..\\secret.txt",
    b"/static/%5c..%5csecret.txt",
    b"/static/a.txt%00.html",
    b"/static/%00",
    b"/static//" + str(Path("/etc/passwd")).encode().lstrip(b"/"),
    b"/static/%2fetc%2fpasswd",
    b"//etc/passwd",
    b"/static/link-out.txt",
    b"/static/rel-out.txt",
    b"/static/linkdir-out/s.txt",
    b"/files/out.txt",
    b"/files/../secret.txt",
    b"/site/../secret.txt",
    b"/site/%2e%2e/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode("latin-1") for t in TRAVERSALS])
def test_nothing_outside_the_root(server, target):
    status, _, body = raw_get(server, target)
    assert status in (400, 404), (target, status, body)
    assert b"SECRET" not in body and b"root:" not in body


def test_traversal_absolute_form_target(server):
    status, _, body = raw_get(server, b"http://x/static/%2e%2e/secret.txt")
    assert status in (400, 404) and b"SECRET" not in body


def test_double_encoding_names_a_literal_file(server, tree):
    # decoded once only: "%2e%2e" is a directory's real name here, not a parent reference
    (tree / "public" / "%2e%2e" / "ok.txt").write_text("literal")
    status, _, body = raw_get(server, b"/static/%252e%252e/ok.txt")
    assert (status, body) == (200, b"literal")


# -- validators, 304 ----------------------------------------------------------------------

def test_not_modified_by_etag_and_by_date(http):
    r = http.get("/static/a.txt")
    etag, modified = r.headers["etag"], r.headers["last-modified"]
    assert etag.startswith('"') and modified.endswith("GMT")
    r = http.get("/static/a.txt", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert "content-length" not in r.headers
    assert http.get("/static/a.txt", headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert http.get("/static/a.txt", headers={"If-None-Match": "*"}).status_code == 304
    assert http.get("/static/a.txt", headers={"If-None-Match": '"other"'}).status_code == 200
    r = http.get("/static/a.txt", headers={"If-Modified-Since": modified})
    assert r.status_code == 304
    assert http.get("/static/a.txt", headers={"If-Modified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"}).status_code == 200
    assert http.get("/static/a.txt", headers={"If-Modified-Since": "garbage"}).status_code == 200
    future = "Fri, 01 Jan 2100 00:00:00 GMT"  # not a date the client had from us: ignored
    assert http.get("/static/a.txt", headers={"If-Modified-Since": future}).status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    r = http.get("/static/a.txt", headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
    assert r.status_code == 200 and r.text == "hello"


def test_etag_changes_with_the_file(http, tree):
    path = tree / "public" / "changing.txt"
    path.write_text("one")
    first = http.get("/static/changing.txt").headers["etag"]
    path.write_text("two!")
    r = http.get("/static/changing.txt", headers={"If-None-Match": first})
    assert r.status_code == 200 and r.text == "two!" and r.headers["etag"] != first


def test_handler_files_get_validators_and_304(http):
    r = http.get("/download")
    assert r.status_code == 200 and r.content == BIG
    assert r.headers["content-disposition"] == "attachment; filename=big.bin"
    assert r.headers["content-length"] == str(len(BIG))
    assert "x-app" in r.headers  # a handler's answer keeps the default headers
    r2 = http.get("/download", headers={"If-None-Match": r.headers["etag"]})
    assert r2.status_code == 304 and r2.content == b""
    r = http.get("/download-named")
    assert r.headers["content-disposition"] == "attachment; filename=report.csv"
    assert r.headers["content-type"] == "text/csv" and r.text == "hello"
    r = http.get("/page")
    assert r.headers["content-type"] == "text/html; charset=utf-8" and "page" in r.text
    assert "content-disposition" not in r.headers
    r = http.get("/bare")
    assert r.headers["content-disposition"] == "attachment" and r.text == "hello"
    r = http.get("/response-file")
    assert r.text == "hello" and r.headers["content-type"] == "text/plain" and "etag" in r.headers
    assert http.get("/gone").status_code == 500


def test_after_hook_sees_a_file_response(http):
    r = http.get("/hooked", headers={"Range": "bytes=10-19"})
    assert r.headers["x-hooked"] == "yes"
    assert r.status_code == 206 and r.content == BIG[10:20]


# -- ranges -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/static/big.bin", "/download"])
def test_ranges(http, path):
    size = len(BIG)

    def get(value, **extra):
        return http.get(path, headers={"Range": value, **extra})

    r = get("bytes=0-99")
    assert r.status_code == 206 and r.content == BIG[:100]
    assert r.headers["content-range"] == f"bytes 0-99/{size}" and r.headers["content-length"] == "100"
    r = get("bytes=-500")  # suffix
    assert r.status_code == 206 and r.content == BIG[-500:]
    assert r.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
    r = get("bytes=1000-")  # open-ended, past the one-read size: streamed
    assert r.status_code == 206 and r.content == BIG[1000:]
    r = get(f"bytes=100-{size * 2}")  # the end is clamped
    assert r.status_code == 206 and r.content == BIG[100:]
    r = get(f"bytes=-{size * 2}")  # a suffix longer than the file: all of it
    assert r.status_code == 206 and r.content == BIG
    for bad in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        r = get(bad)
        assert r.status_code == 416, bad
        assert r.headers["content-range"] == f"bytes */{size}"
    r = get("bytes=0-9, 20-29")  # several ranges: the whole file (stated in the README)
    assert r.status_code == 200 and r.content == BIG
    for ignored in ("bytes=9-3", "bytes=abc", "items=0-5", "bytes=", "bytes=--5"):
        r = get(ignored)
        assert r.status_code == 200 and r.content == BIG, ignored
    etag, modified = http.get(path).headers["etag"], http.get(path).headers["last-modified"]
    assert get("bytes=0-4", **{"If-Range": etag}).status_code == 206
    assert get("bytes=0-4", **{"If-Range": modified}).status_code == 206
    r = get("bytes=0-4", **{"If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == BIG
    assert get("bytes=0-4", **{"If-Range": "Mon, 01 Jan 1990 00:00:00 GMT"}).status_code == 200
    assert get("bytes=0-4", **{"If-Range": "W/" + etag}).status_code == 200  # weak never matches


def test_range_on_a_small_file(http):
    r = http.get("/static/a.txt", headers={"Range": "bytes=1-3"})
    assert r.status_code == 206 and r.text == "ell" and r.headers["content-range"] == "bytes 1-3/5"
    r = http.get("/static/a.txt", headers={"Range": "bytes=-2"})
    assert r.text == "lo"


def test_head(server, http):
    for path, length in (("/static/a.txt", 5), ("/static/big.bin", len(BIG)), ("/download", len(BIG)),
                         ("/static/huge.bin", 1 << 30)):
        status, fields, body = raw_get(server, path.encode(), method=b"HEAD")
        assert status == 200 and body == b"", path
        assert fields["content-length"] == str(length) and "etag" in fields, path
    status, fields, body = raw_get(server, b"/static/big.bin", method=b"HEAD", headers=b"Range: bytes=0-9\r\n")
    assert status == 200 and body == b""  # Range is defined for GET only
    # keep-alive after HEAD of a streamed-size file: the next answer on the connection is intact
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
        s.sendall(b"HEAD /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /static/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2 and data.endswith(b"\r\n\r\nhello")


def test_keep_alive_after_a_streamed_file(http):
    for _ in range(3):  # the same connection: each body exactly its length
        assert http.get("/static/big.bin").content == BIG
        assert http.get("/static/a.txt").text == "hello"


# -- a 1 GiB file with flat memory -------------------------------------------------------



@pytest.mark.parametrize("path", ["/static/huge.bin", "/huge"])
def test_one_gib_file_memory_stays_flat(server, path):
    http = httpx.Client(base_url=server.url, timeout=60)
    http.get("/static/big.bin")  # warm up the code paths
    before = rss_kib(server.pid)
    peak = before
    received = 0
    started = time.monotonic()
    with http.stream("GET", path) as r:
        assert r.status_code == 200 and r.headers["content-length"] == str(1 << 30)
        for n, chunk in enumerate(r.iter_raw(1 << 20)):
            received += len(chunk)
            if n % 64 == 0:
                peak = max(peak, rss_kib(server.pid))
    after = rss_kib(server.pid)
    http.close()
    assert received == 1 << 30
    growth_mib = (max(peak, after) - before) / 1024
    assert growth_mib < 50, f"RSS grew {growth_mib:.1f} MiB (before {before} KiB, peak {peak}, after {after})"
    print(f"1 GiB in {time.monotonic() - started:.1f} s, RSS {before} KiB -> peak {peak} KiB, after {after} KiB")


def test_client_leaving_mid_file_frees_the_connection(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
        s.sendall(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    # the server is still fine and answers others at once
    status, _, body = raw_get(server, b"/static/a.txt")
    assert (status, body) == (200, b"hello")


def test_no_file_descriptor_left_open(server):
    """Every way a file answer can end closes the file: sent, 304, 416, HEAD, a client gone
    mid-body."""
    def fds() -> int:
        return len(os.listdir(f"/proc/{server.pid}/fd"))

    raw_get(server, b"/static/a.txt")
    baseline = fds()
    for headers in (b"", b"If-None-Match: *\r\n", b"Range: bytes=99999999-\r\n", b"Range: bytes=0-1,4-5\r\n",
                    b"Range: bytes=70000-\r\n"):
        for target in (b"/static/big.bin", b"/download"):
            for method in (b"GET", b"HEAD"):
                raw_get(server, target, method=method, headers=headers)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
            s.sendall(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 10
    while fds() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fds() <= baseline, os.listdir(f"/proc/{server.pid}/fd")


def _read_responses(sock: socket.socket, slow_until: int = 0) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(16384 if len(data) < slow_until else 1 << 20)
        if not chunk:
            return data
        data += chunk
        if len(data) < slow_until:
            time.sleep(0.002)


@pytest.mark.parametrize("slow", [False, True], ids=["fast-reader", "slow-reader"])
def test_file_bytes_exact_and_in_order_with_pipelining(server, slow):
    """The kernel sends what fits straight from the file; the rest goes through the
    transport's buffer when the client lags. Byte for byte, and the pipelined answer after it
    comes after it, however the two paths alternate."""
    with socket.socket() as s:
        if slow:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.settimeout(30)
        s.connect(("127.0.0.1", server.port))
        s.sendall(b"GET /static/random.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /static/random.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-\r\n\r\n"
                  b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = _read_responses(s, slow_until=2 * 1024 * 1024 if slow else 0)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: %d" % len(RANDOM) in head
    assert rest[:len(RANDOM)] == RANDOM
    rest = rest[len(RANDOM):]
    head, _, rest = rest.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206") and b"content-range: bytes 1000-%d/%d" % (len(RANDOM) - 1, len(RANDOM)) in head
    assert rest[:len(RANDOM) - 1000] == RANDOM[1000:]
    rest = rest[len(RANDOM) - 1000:]
    head, _, rest = rest.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and rest == b"hello"


def test_handler_file_bytes_exact(server, http):
    r = http.get("/random")
    assert r.status_code == 200 and r.content == RANDOM


# -- the same answers in-process (TestClient) and under an ASGI server (app.asgi) ----------

ASGI_APP = """
import os
from stonechat import Robyn, serve_file

ROOT = {root!r}
app = Robyn(__file__)
app.serve_directory("/static", os.path.join(ROOT, "public"))

@app.get("/random")
def random_file():
    return serve_file(os.path.join(ROOT, "public", "random.bin"))

@app.get("/hooked-read")
def hooked_read():
    return serve_file(os.path.join(ROOT, "public", "a.txt"))

@app.after_request("/hooked-read")
def read_body(response):
    response.headers.set("x-body", response.description)  # Robyn's body is the file's bytes
    return response

if __name__ == "__main__":
    app.start()
"""


def test_test_client(tree):
    import importlib.util
    import sys
    path = tree / "asgi_static_tc.py"
    path.write_text(ASGI_APP.format(root=str(tree)))
    spec = importlib.util.spec_from_file_location("asgi_static_tc", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["asgi_static_tc"] = module
    spec.loader.exec_module(module)
    from stonechat.testing import TestClient
    with TestClient(module.app) as client:
        r = client.get("/static/random.bin")
        assert r.status_code == 200 and r.content == RANDOM
        assert r.headers.get("content-length") == str(len(RANDOM))
        r = client.get("/random", headers={"Range": "bytes=-10"})
        assert r.status_code == 206 and r.content == RANDOM[-10:]
        etag = client.get("/static/a.txt").headers.get("etag")
        assert client.get("/static/a.txt", headers={"If-None-Match": etag}).status_code == 304
        r = client.get("/hooked-read")
        assert r.headers.get("x-body") == "hello" and r.content == b"hello"


def test_under_uvicorn(serve, tree):
    pytest.importorskip("uvicorn")
    import sys
    from conftest import free_port
    path = tree / "asgi_static_uv.py"
    path.write_text(ASGI_APP.format(root=str(tree)))
    port = free_port()
    proc = serve(str(path), port=port, command=[sys.executable, "-m", "uvicorn", "asgi_static_uv:app.asgi",
                                                "--host", "127.0.0.1", "--port", str(port), "--no-access-log"])
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        r = http.get("/static/random.bin")
        assert r.status_code == 200 and r.content == RANDOM
        assert r.headers["content-length"] == str(len(RANDOM))
        r = http.get("/random", headers={"Range": "bytes=5-9"})
        assert r.status_code == 206 and r.content == RANDOM[5:10]
        r = http.head("/static/random.bin")
        assert r.status_code == 200 and r.headers["content-length"] == str(len(RANDOM)) and r.content == b""
        assert http.get("/static/../secret.txt").status_code == 404
        assert http.get("/hooked-read").headers["x-body"] == "hello"


ROOT_MOUNT = """
import os
from stonechat import Robyn

app = Robyn(__file__)
app.serve_directory("/", {build!r}, index_file="index.html")

@app.get("/api/items/:id")
def item(request):
    return {{"id": request.path_params["id"]}}

@app.post("/")
def post_root():
    return "posted"

app.start()
"""


def test_a_build_folder_at_the_root_beside_routes(serve, tree):
    server = serve(ROOT_MOUNT.format(build=str(tree / "build")))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.get("/")
        assert r.status_code == 200 and r.text == "<html>spa</html>"
        assert http.get("/app.js").text == "console.log(1)"
        assert http.get("/docs/").text == "<html>docs</html>"
        assert http.get("/api/items/7").json() == {"id": "7"}
        assert http.post("/").text == "posted"
        r = http.get("/nothing")
        assert r.status_code == 404 and r.text == "Not found"
    status, _, body = raw_get(server, b"/%2e%2e/secret.txt")
    assert status == 404 and b"SECRET" not in body


def test_a_missing_directory_is_named_at_startup(serve, tmp_path):
    server = serve("""
from stonechat import Robyn
app = Robyn(__file__)
app.serve_directory("/static", "no-such-dir")
app.start()
""", wait=False)
    assert server.wait(30) == 2
    assert "directory_path 'no-such-dir' is not a directory" in server.output()
    assert "Traceback" not in server.output()


def test_a_client_that_reads_nothing_is_cut_after_send_timeout(serve, tree):
    server = serve(f"""
from stonechat import Robyn
app = Robyn(__file__)
app.serve_directory("/static", {str(tree / "public")!r})
app.start()
""", env={"STONECHAT_SEND_TIMEOUT": "1"})

    def fds() -> int:
        return len(os.listdir(f"/proc/{server.pid}/fd"))

    raw_get(server, b"/static/a.txt")
    baseline = fds()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        s.sendall(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 5
        while fds() <= baseline and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fds() > baseline  # the file is open while its answer waits for the client
        deadline = time.monotonic() + 15
        while fds() > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fds() <= baseline, "the stalled answer still holds its file and connection"
        server.wait_for_output("it read nothing of a file for 1 s")
    assert raw_get(server, b"/static/a.txt")[2] == b"hello"  # and the server serves on


# -- small files kept in memory while they are the same file ---------------------------------

def test_a_kept_small_file_follows_the_disk(http, tree):
    """Plain GETs of a small file are answered from memory while the file is unchanged (one
    stat() a request); a rewrite, a swap for a link out of the root, or a removal is seen at once."""
    target = tree / "public" / "changing.txt"
    target.write_text("first")
    for _ in range(3):  # the second and third come from memory
        assert http.get("/static/changing.txt").text == "first"
    target.write_text("other")  # same size, new content (mtime and ctime change)
    assert http.get("/static/changing.txt").text == "other"
    staged = tree / "public" / "changing.new"
    staged.write_text("third")
    os.replace(staged, target)  # a rename over it: another inode
    assert http.get("/static/changing.txt").text == "third"
    assert http.get("/static/changing.txt").text == "third"
    target.unlink()
    os.symlink(tree / "secret.txt", target)  # now a link out of the root: never served
    r = http.get("/static/changing.txt")
    assert r.status_code == 404 and "SECRET" not in r.text
    target.unlink()
    assert http.get("/static/changing.txt").status_code == 404
    # a conditional request after a kept answer still gets its 304
    target.write_text("again")
    first = http.get("/static/changing.txt")
    assert first.text == "again"
    again = http.get("/static/changing.txt", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304
    assert http.get("/static/changing.txt", headers={"range": "bytes=1-2"}).text == "ga"
