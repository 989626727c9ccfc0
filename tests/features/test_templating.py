"""Templating (reference §14): ``JinjaTemplate.render_template`` and ``render`` on a real server —
Robyn's page and headers, autoescaping as in Robyn, relative directories found beside the file
that names them, a missing template named with where it was looked for, and Jinja2 optional
(stonechat imports without it; making an engine says how to install it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from stonechat import Response
from stonechat.templating import JinjaTemplate, TemplateInterface, render

# Robyn's own integration template (integration_tests/templates/test.html)
ROBYN_PAGE = """{# templates/test.html #}

<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Results</title>
</head>

<body>
  <h1>{{framework}} \U0001F91D {{templating_engine}}</h1>
</body>
</html>
"""

APP = """
import os
import pathlib
from stonechat import Robyn
from stonechat.templating import JinjaTemplate
from pages.views import relative_engine, render_beside, render_custom

app = Robyn(__file__)
current = pathlib.Path(__file__).parent.resolve()
jinja_template = JinjaTemplate(os.path.join(current, "templates"))

@app.get("/sync/template")
def sync_template_render():
    context = {"framework": "Robyn", "templating_engine": "Jinja2"}
    return jinja_template.render_template(template_name="test.html", **context)

@app.get("/async/template")
async def async_template_render():
    context = {"framework": "Robyn", "templating_engine": "Jinja2"}
    return jinja_template.render_template(template_name="test.html", **context)

@app.get("/escape/:kind")
def escape(kind, v: str = ""):
    return jinja_template.render_template("value." + kind, value=v)

@app.get("/safe")
def safe():
    return jinja_template.render_template("safe.html", value="<b>bold</b>")

@app.get("/missing")
def missing():
    return jinja_template.render_template("nope.html")

@app.get("/relative")
def relative():
    return relative_engine.render_template("beside.html", who="views")

@app.get("/render")
def render_route():
    return render_beside()

@app.get("/custom")
def custom():
    return render_custom()

app.start()
"""

VIEWS = """
from stonechat.templating import JinjaTemplate, TemplateInterface, render
from stonechat import Response

# relative: not under the server's working directory, but beside this file
relative_engine = JinjaTemplate("tpl")

def render_beside():
    return render("index.html", name="<Batman>")

class EchoEngine(TemplateInterface):
    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def render_template(self, template_name, **kwargs):
        return Response(201, {"content-type": "text/plain"}, f"{template_name}|{kwargs['who']}")

def render_custom():
    return render("x.html", templates_dir="/nowhere", template_engine=EchoEngine, who="Batman")
"""


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("templating")
    (root / "templates").mkdir()
    (root / "templates" / "test.html").write_text(ROBYN_PAGE, encoding="utf-8")
    for ext in ("html", "htm", "xml", "txt"):
        (root / "templates" / f"value.{ext}").write_text("[{{ value }}]")
    (root / "templates" / "safe.html").write_text("{{ value|safe }}|{% autoescape false %}{{ value }}{% endautoescape %}")
    pages = root / "pages"
    (pages / "tpl").mkdir(parents=True)
    (pages / "templates").mkdir()
    (pages / "__init__.py").write_text("")
    (pages / "views.py").write_text(textwrap.dedent(VIEWS))
    (pages / "tpl" / "beside.html").write_text("beside {{ who }}")
    (pages / "templates" / "index.html").write_text("Hello {{ name }}")
    app = root / "app.py"
    app.write_text(textwrap.dedent(APP))
    return serve_module(str(app))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_robyn_template_route(server, kind):
    # what Robyn's test_get_requests.py::test_template checks, plus the status and type
    r = httpx.get(f"{server.url}/{kind}/template")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.text.startswith("\n\n<!DOCTYPE html>")
    assert "<h1>Robyn \U0001F91D Jinja2</h1>" in r.text


@pytest.mark.parametrize("ext", ["html", "htm", "xml", "txt"])
def test_values_are_escaped(server, ext):
    # Robyn: select_autoescape(("html", "htm", "xml"), default=True) — so every name escapes
    r = httpx.get(f"{server.url}/escape/{ext}", params={"v": "<script>alert('x')</script>&"})
    assert r.status_code == 200
    assert r.text == "[&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;]"


def test_safe_and_autoescape_false_are_not_escaped(server):
    r = httpx.get(server.url + "/safe")
    assert r.text == "<b>bold</b>|<b>bold</b>"


def test_missing_template_is_a_500_naming_the_template_and_directory(server):
    r = httpx.get(server.url + "/missing")
    assert r.status_code == 500 and r.text == "Internal server error"
    log = server.wait_for_output("TemplateNotFound")
    assert "template 'nope.html' not found in " in log
    assert os.path.join(str(Path(server.app_path).parent), "templates") in log


def test_relative_directory_found_beside_the_file_that_names_it(server):
    # the server's working directory has no tpl/; pages/views.py has one beside it
    r = httpx.get(server.url + "/relative")
    assert r.status_code == 200 and r.text == "beside views"


def test_render_resolves_templates_beside_the_caller_and_escapes(server):
    r = httpx.get(server.url + "/render")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.text == "Hello &lt;Batman&gt;"


def test_render_with_a_custom_engine(server):
    r = httpx.get(server.url + "/custom")
    assert r.status_code == 201 and r.text == "x.html|Batman"


def test_in_process_render_template_response(tmp_path):
    (tmp_path / "page.html").write_text("<h1>{{ title }}</h1>")
    response = JinjaTemplate(tmp_path).render_template("page.html", title="Hello")
    assert isinstance(response, Response)
    assert response.status_code == 200
    assert response.description == "<h1>Hello</h1>"
    assert response.headers.get("Content-Type") == "text/html; charset=utf-8"
    same = render("page.html", templates_dir=str(tmp_path), title="<x>")
    assert same.description == "<h1>&lt;x&gt;</h1>"


def test_missing_directory_is_named_in_the_error(tmp_path):
    import jinja2
    engine = JinjaTemplate(tmp_path / "absent")
    with pytest.raises(jinja2.TemplateNotFound, match="no such directory"):
        engine.render_template("a.html")


def test_template_interface_is_abstract():
    with pytest.raises(TypeError):
        TemplateInterface()  # type: ignore[abstract]


BLOCK_JINJA = """
import sys

class _NoJinja:
    def find_spec(self, name, path=None, target=None):
        if name == "jinja2" or name.startswith("jinja2."):
            raise ImportError("No module named 'jinja2' (blocked by the test)")
        return None

sys.meta_path.insert(0, _NoJinja())
"""

WITHOUT_JINJA = """
import sys
import stonechat
from stonechat import Robyn
from stonechat.templating import JinjaTemplate, render
assert "jinja2" not in sys.modules, "importing stonechat imported jinja2"
app = Robyn(__file__)
try:
    JinjaTemplate("templates")
except ImportError as exc:
    print("ERROR:", exc)
else:
    print("NO ERROR")
"""


def test_without_jinja2_import_works_and_the_engine_says_how_to_install(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_JINJA)
    script = tmp_path / "nojinja.py"
    script.write_text(WITHOUT_JINJA)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERROR: templating needs Jinja2, which is not installed: pip install 'stonechat[templating]'" \
        in out.stdout, out.stdout + out.stderr
