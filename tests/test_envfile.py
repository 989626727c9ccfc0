"""``robyn.env`` (envfile.py): variables from the file next to the app, read by ``Robyn(__file__)``
(so by ``python app.py`` and the ``stonechat`` command alike); the environment wins; a bad
line stops startup with the file and line number, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from conftest import free_port
from stonechat import Robyn
from stonechat.env_populator import load_vars, parser
from stonechat.envfile import load_env_file, read_env_file

APP = '''
import os
from stonechat import Robyn

app = Robyn(__file__)

@app.get("/")
def index():
    return {"RANDOM_ENV": os.environ.get("RANDOM_ENV"), "EQUALS": os.environ.get("EQUALS")}

@app.post("/upload")
def upload(request):
    return str(len(request.body_bytes))

if __name__ == "__main__":
    app.start(port=8080)
'''


def test_the_file_format(tmp_path):
    path = tmp_path / "robyn.env"
    path.write_text("# a comment\n"
                    "\n"
                    "ROBYN_PORT=8081\n"
                    "  SPACED  =  some value  \n"
                    "EQUALS=a=b==c\n"
                    'QUOTED="kept as written"\n'
                    "export EXPORTED=yes\n"
                    "EMPTY=\n"
                    "   # indented comment\n")
    found = read_env_file(path)
    assert found.problems == []
    assert found.variables == [("ROBYN_PORT", "8081"), ("SPACED", "some value"), ("EQUALS", "a=b==c"),
                               ("QUOTED", '"kept as written"'), ("EXPORTED", "yes"), ("EMPTY", "")]


def test_bad_lines_are_problems_with_their_line_numbers(tmp_path):
    path = tmp_path / "robyn.env"
    path.write_text("GOOD=1\njust words\n=nothing\nTWO WORDS=x\nALSO_GOOD=2\n")
    found = read_env_file(path)
    assert found.variables == [("GOOD", "1"), ("ALSO_GOOD", "2")]
    assert found.problems == [
        f"{path}:2: expected KEY=VALUE, got 'just words'",
        f"{path}:3: '' is not a variable name (in '=nothing')",
        f"{path}:4: 'TWO WORDS' is not a variable name (in 'TWO WORDS=x')",
    ]


def test_values_already_in_the_environment_win(tmp_path):
    (tmp_path / "robyn.env").write_text("A=from-file\nB=from-file\n")
    env = {"A": "from-env"}
    found = load_env_file(tmp_path, env)
    assert found is not None and env == {"A": "from-env", "B": "from-file"}
    assert load_env_file(tmp_path / "nowhere", env) is None


def test_the_constructor_reads_the_file_next_to_the_app_file(tmp_path, monkeypatch):
    (tmp_path / "robyn.env").write_text("STONECHAT_TEST_ENVFILE_VAR=42\n")
    monkeypatch.delenv("STONECHAT_TEST_ENVFILE_VAR", raising=False)
    app = Robyn(str(tmp_path / "app.py"))
    import os
    assert os.environ["STONECHAT_TEST_ENVFILE_VAR"] == "42"
    assert app.env_file is not None and app.env_file.problems == []
    monkeypatch.delenv("STONECHAT_TEST_ENVFILE_VAR")
    assert Robyn().env_file is None  # no app file, no robyn.env


def test_robyns_env_populator_names(tmp_path, monkeypatch):
    (tmp_path / "robyn.env").write_text("STONECHAT_TEST_POPULATOR=x=y\n")
    assert list(parser(project_root=str(tmp_path))) == [["STONECHAT_TEST_POPULATOR", "x=y"]]
    monkeypatch.delenv("STONECHAT_TEST_POPULATOR", raising=False)
    load_vars(project_root=str(tmp_path))
    import os
    assert os.environ["STONECHAT_TEST_POPULATOR"] == "x=y"


def test_robyn_port_and_host_from_the_file_take_effect(serve, tmp_path):
    port = free_port()
    (tmp_path / "robyn.env").write_text(f"ROBYN_PORT={port}\nROBYN_HOST=127.0.0.1\nRANDOM_ENV=123\n"
                                        "EQUALS=a=b\n")
    server = serve(APP, port=port, env={"STONECHAT_PORT": ""})  # nothing else names a port
    assert httpx.get(f"http://127.0.0.1:{port}/").json() == {"RANDOM_ENV": "123", "EQUALS": "a=b"}
    assert f"serving http://127.0.0.1:{port}" in server.output()


def test_the_environment_wins_over_the_file(serve, tmp_path):
    file_port, env_port = free_port(), free_port()
    (tmp_path / "robyn.env").write_text(f"ROBYN_PORT={file_port}\nRANDOM_ENV=from-file\n")
    serve(APP, port=env_port, env={"STONECHAT_PORT": "", "ROBYN_PORT": str(env_port), "RANDOM_ENV": "from-env"})
    assert httpx.get(f"http://127.0.0.1:{env_port}/").json()["RANDOM_ENV"] == "from-env"


def test_stonechat_settings_from_the_file_take_effect(serve, tmp_path):
    (tmp_path / "robyn.env").write_text("STONECHAT_MAX_BODY_SIZE=10\n")
    server = serve(APP)
    assert httpx.post(f"{server.url}/upload", content=b"x" * 5).text == "5"
    assert httpx.post(f"{server.url}/upload", content=b"x" * 100).status_code == 413


def test_the_stonechat_command_reads_the_file_of_the_app_not_of_the_cwd(serve, tmp_path):
    app_dir = tmp_path / "project"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP)
    (app_dir / "robyn.env").write_text("RANDOM_ENV=next-to-app\n")
    (tmp_path / "robyn.env").write_text("RANDOM_ENV=in-cwd\n")
    server = serve(str(app_dir / "app.py"), command=[sys.executable, "-m", "stonechat", str(app_dir / "app.py")])
    assert httpx.get(f"{server.url}/").json()["RANDOM_ENV"] == "next-to-app"


def test_a_bad_line_stops_startup_naming_file_and_line_without_a_traceback(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "robyn.env").write_text("GOOD=1\n\nROBYN_PORT 8080\n")
    proc = subprocess.run([sys.executable, str(tmp_path / "app.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "STONECHAT_PORT": str(free_port())})
    assert proc.returncode == 2, proc.stderr
    assert "robyn.env:3: expected KEY=VALUE, got 'ROBYN_PORT 8080'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", [b"\xff\xfe\x00bad", b"A=1\x00\n"])
def test_an_unreadable_file_is_a_problem_too(tmp_path, content):
    (tmp_path / "robyn.env").write_bytes(content)
    found = read_env_file(tmp_path / "robyn.env")
    assert found.variables == [] and len(found.problems) == 1 and str(tmp_path) in found.problems[0]
