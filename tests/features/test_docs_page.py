"""The /docs page works offline: Swagger UI 5 from the swagger-ui-bundle-v2 package through the
app's own routes, nothing fetched from elsewhere — checked in a real browser (Debian's Chromium
driven by Playwright) with every request not to 127.0.0.1 blocked and recorded."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Set to a path to keep the screenshot (docs/openapi-docs.png was made this way).
SCREENSHOT_ENV = "STONECHAT_DOCS_SCREENSHOT"


@pytest.fixture(scope="module")
def demo(serve_module):
    return serve_module(str(ROOT / "examples" / "demo.py"))


def test_the_page_loads_only_the_apps_own_files(demo):
    response = httpx.get(demo.url + "/docs")
    assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert "<title>Robyn API - API docs</title>" in page
    assert not re.search(r"(?:src|href)=\"(?!/docs/static/)", page), page  # nothing from elsewhere
    assert "<script>" not in page  # no inline script: the CSP forbids it
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", page)
    assert {"/docs/static/swagger-ui.css?v=5.31.0", "/docs/static/swagger-ui-bundle.js?v=5.31.0",
            "/docs/static/docs.js?v=5.31.0"} <= set(assets)
    for asset in assets:
        served = httpx.get(demo.url + asset)
        assert served.status_code == 200 and served.content, asset
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp


def test_the_init_script_turns_off_the_online_validator(demo):
    script = httpx.get(demo.url + "/docs/static/docs.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "validatorUrl: null" in script.text and 'url: "/openapi.json"' in script.text
    assert "http" not in script.text


@pytest.mark.parametrize("name,media_type", [("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
                                             ("swagger-ui.css", "text/css; charset=utf-8"),
                                             ("favicon-32x32.png", "image/png"),
                                             ("oauth2-redirect.html", "text/html; charset=utf-8")])
def test_swagger_ui_files_come_from_the_package(demo, name, media_type):
    from swagger_ui_bundle import swagger_ui_path
    response = httpx.get(demo.url + "/docs/static/" + name)
    assert response.status_code == 200 and response.headers["content-type"] == media_type
    assert response.content == (Path(str(swagger_ui_path)) / name).read_bytes()
    assert response.headers["cache-control"] == "public, max-age=86400"
    head = httpx.head(demo.url + "/docs/static/" + name)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(response.content)


def test_an_unknown_static_file_is_404(demo):
    assert httpx.get(demo.url + "/docs/static/swagger-ui-bundle.js.map").status_code == 404
    assert httpx.get(demo.url + "/docs/static/..%2Fopenapi.json").status_code == 404


APP = "from stonechat import Robyn\napp = Robyn(__file__)\n@app.get('/x')\ndef x() -> str:\n    return 'x'\napp.start()\n"


def test_without_the_package_docs_says_which_extra_to_install(serve, tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "swagger_ui_bundle.py").write_text("raise ImportError('not installed here')\n")
    server = serve(APP, env={"PYTHONPATH": str(shadow)})
    response = httpx.get(server.url + "/docs")
    assert response.status_code == 501
    assert "pip install 'stonechat[openapi]'" in response.text and "/openapi.json" in response.text
    assert httpx.get(server.url + "/openapi.json").status_code == 200  # the spec needs nothing
    assert httpx.get(server.url + "/docs/static/swagger-ui-bundle.js").status_code == 404
    assert "the /docs page needs Swagger UI: pip install 'stonechat[openapi]'" in server.output()


def test_the_old_swagger_ui_4_package_is_recognised(serve, tmp_path):
    # swagger-ui-bundle (Swagger UI 4) installs under the same import name as swagger-ui-bundle-v2.
    package = tmp_path / "shadow" / "swagger_ui_bundle"
    (package / "vendor" / "swagger-ui-4.15.5").mkdir(parents=True)
    (package / "vendor" / "swagger-ui-4.15.5" / "swagger-ui-bundle.js").write_text("// 4")
    (package / "__init__.py").write_text(textwrap.dedent("""
        from pathlib import Path
        swagger_ui_path = Path(__file__).parent / "vendor" / "swagger-ui-4.15.5"
    """))
    server = serve(APP, env={"PYTHONPATH": str(tmp_path / "shadow")})
    response = httpx.get(server.url + "/docs")
    assert response.status_code == 501 and "found swagger-ui-4.15.5" in response.text


def test_swagger_ui_renders_the_operations_and_try_it_out_answers_200_offline(demo, tmp_path):
    """A real browser: every request not to 127.0.0.1 is blocked and recorded; none may happen."""
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it)"
    requested: list[str] = []
    blocked: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})

            def only_this_machine(route):
                url = route.request.url
                requested.append(url)
                if url.startswith("http://127.0.0.1:"):
                    route.continue_()
                else:
                    blocked.append(url)
                    route.abort()

            page.route("**/*", only_this_machine)
            page.on("console", lambda message: problems.append(f"{message.type}: {message.text}")
                    if message.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.goto(demo.url + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=20000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert {"/", "/json", "/user/{id}", "/greet", "/health"} <= set(paths), paths

            operation = page.locator(".opblock-get", has=page.locator(".opblock-summary-path",
                                                                     has_text=re.compile(r"^/json$")))
            operation.locator(".opblock-summary").click()
            operation.get_by_role("button", name="Try it out").click()
            operation.get_by_role("button", name="Execute").click()
            status = operation.locator(".live-responses-table tbody .response-col_status")
            status.first.wait_for(timeout=20000)
            assert status.first.inner_text().strip() == "200"
            assert '"message": "Hello, world!"' in operation.locator(".live-responses-table").inner_text()
            shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "docs.png")
            page.screenshot(path=str(shot))
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            browser.close()
    assert blocked == [], f"requests that would have left the machine: {blocked}"
    assert any(url.endswith("/openapi.json") for url in requested)
    assert any(url.endswith("/json") for url in requested)  # the "Try it out" call itself
    assert problems == [], problems  # a Content-Security-Policy violation would show here
