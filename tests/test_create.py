"""``stonechat --create`` (scaffold/): every project type is scaffolded into a temp directory
by the real command, started with ``python app.py`` as its user would, and answers ``GET /``;
the questions are answered on stdin as in a terminal, or given as flags. The postgres project
runs against the local PostgreSQL (database ``test``, in a schema of its own)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from stonechat.scaffold import PROJECT_TYPES, create_project, template_files

DSN = "postgresql://postgres@127.0.0.1:5432/test"
FILES = {"app.py", "requirements.txt"}
DOCKER = {"Dockerfile", ".dockerignore"}


def create(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stonechat", "--create", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=60)


def start(serve, project: Path, env: dict | None = None):
    return serve(str(project / "app.py"), env={"STONECHAT_HOST": "127.0.0.1", **(env or {})})


@pytest.mark.parametrize("docker", ["y", "n"])
def test_no_db_project_runs(serve, tmp_path, docker):
    proc = create(["--dir", "blog", "--docker", docker, "--type", "no-db"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    project = tmp_path / "blog"
    assert {p.name for p in project.iterdir()} == FILES | (DOCKER if docker == "y" else set())
    assert "from stonechat import Robyn" in (project / "app.py").read_text()
    assert f"cd {project}" in proc.stdout
    server = start(serve, project)
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.text == "Hello World!"


def test_sqlite_project_runs_and_keeps_its_data(serve, tmp_path):
    assert create(["--dir", str(tmp_path / "notes"), "--docker", "n", "--type", "sqlite"], tmp_path).returncode == 0
    project = tmp_path / "notes"
    server = start(serve, project)
    assert httpx.get(server.url + "/").text == "Hello World! 0 notes in app.db"
    assert httpx.post(server.url + "/notes", json={"text": "first"}).json() == {"id": 1, "text": "first"}
    assert httpx.get(server.url + "/notes").json() == {"notes": [{"id": 1, "text": "first"}]}
    assert httpx.get(server.url + "/").text == "Hello World! 1 notes in app.db"
    assert (project / "app.db").exists()


def test_postgres_project_runs_against_a_real_database(serve, tmp_path):
    assert create(["--dir", "shop", "--docker", "y", "--type", "postgres"], tmp_path).returncode == 0
    project = tmp_path / "shop"
    assert {p.name for p in project.iterdir()} == FILES | DOCKER | {"compose.yaml", "robyn.env"}
    assert "DATABASE_URL=" in (project / "robyn.env").read_text()
    schema = f"scaffold_{os.getpid()}"

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(DSN)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
    try:
        # the environment wins over the project's robyn.env (which names a password-protected db)
        server = start(serve, project, env={"DATABASE_URL": f"{DSN}?search_path={schema}"})
        assert httpx.get(server.url + "/").text == "Hello World! 0 users"
        assert httpx.post(server.url + "/users", json={"name": "ann"}).json() == {"id": 1, "name": "ann"}
        assert httpx.get(server.url + "/users").json() == {"users": [{"id": 1, "name": "ann"}]}
        server.stop()
    finally:
        asyncio.run(sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def test_the_questions_answered_on_stdin(serve, tmp_path):
    proc = create([], tmp_path, stdin="site\nmaybe\ny\nmongo\n7\n2\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Directory Path:" in out and "Need Docker? (Y/N) [N]:" in out
    assert "Project type: 1) no-db  2) sqlite  3) postgres [no-db]:" in out
    assert "Docker: answer Y or N, not 'maybe'" in out  # asked again
    assert "'mongo' is one of Robyn's that stonechat has no template for" in out
    assert "unknown project type '7'" in out
    assert "(sqlite, with Docker)" in out
    project = tmp_path / "site"
    assert {p.name for p in project.iterdir()} == FILES | DOCKER
    assert "sqlite3" in (project / "app.py").read_text()
    server = start(serve, project)
    assert httpx.get(server.url + "/").status_code == 200


def test_enter_takes_the_defaults_and_flags_skip_their_questions(tmp_path):
    proc = create(["--docker", "n"], tmp_path, stdin="plain\n\n")
    assert proc.returncode == 0, proc.stderr
    assert "Need Docker?" not in proc.stdout and "Project type:" in proc.stdout
    assert {p.name for p in (tmp_path / "plain").iterdir()} == FILES
    assert "sqlite3" not in (tmp_path / "plain" / "app.py").read_text()  # no-db, the default


def test_end_of_input_names_the_flag_to_use(tmp_path):
    proc = create(["--dir", "x"], tmp_path, stdin="")
    assert proc.returncode == 2
    assert "no answer for 'Need Docker? (Y/N) [N]:' (end of input); give --docker" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_a_bad_flag_fails_before_any_question(tmp_path):
    proc = create(["--dir", "x", "--type", "prisma"], tmp_path, stdin="y\n")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "project type 'prisma' is one of Robyn's" in proc.stderr
    proc = create(["--dir", "x", "--docker", "perhaps", "--type", "sqlite"], tmp_path)
    assert proc.returncode == 2 and "answer Y or N, not 'perhaps'" in proc.stderr


def test_existing_files_are_never_overwritten(tmp_path):
    project = tmp_path / "mine"
    project.mkdir()
    (project / "app.py").write_text("my own app\n")
    proc = create(["--dir", "mine", "--docker", "n", "--type", "no-db"], tmp_path)
    assert proc.returncode == 1
    assert "already has app.py; nothing was written" in proc.stderr
    assert (project / "app.py").read_text() == "my own app\n"
    assert not (project / "requirements.txt").exists()
    (tmp_path / "file").write_text("")
    proc = create(["--dir", "file", "--docker", "n", "--type", "no-db"], tmp_path)
    assert proc.returncode == 1 and "is not a directory" in proc.stderr


def test_every_template_compiles_and_names_stonechat(tmp_path):
    for project_type in PROJECT_TYPES:
        files = template_files(project_type, docker=True)
        compile(files["app.py"], f"{project_type}/app.py", "exec")
        assert "stonechat" in files["requirements.txt"].split()
        assert 'CMD ["python", "app.py"]' in files["Dockerfile"]
        written = create_project(tmp_path / project_type, project_type, docker=False)
        assert {p.name for p in written} >= FILES and not {p.name for p in written} & DOCKER
