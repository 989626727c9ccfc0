"""``stonechat --create``: a new project from a template, as Robyn's ``robyn --create``.

Robyn asks three questions (target directory, Docker Y/N, project type) and copies its
template. Here the same questions are asked on the terminal — plain prompts, answered by
typing or from a pipe — and each can be given as a flag instead (``--dir``, ``--docker``,
``--type``), so scripts and tests need no terminal at all:

    stonechat --create                                     # asks
    stonechat --create --dir blog --docker n --type sqlite # asks nothing

The templates are stonechat's own (``templates/<type>/``, files named ``*.tmpl`` so no tool
takes them for package modules): ``no-db``, ``sqlite`` and ``postgres`` (asyncpg, its URL in
``robyn.env``); ``Dockerfile`` and ``.dockerignore`` (and for postgres a ``compose.yaml``) only
when Docker is wanted. Unlike Robyn, an existing file is never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence, TextIO, TypeVar

T = TypeVar("T")

PROJECT_TYPES = ("no-db", "sqlite", "postgres")
# Robyn's other types: named so the answer says they are not offered, rather than unknown.
ROBYN_ONLY_TYPES = ("mongo", "sqlalchemy", "prisma", "sqlmodel")
DOCKER_FILES = frozenset({"Dockerfile", ".dockerignore", "compose.yaml"})
_HIDDEN = {"dockerignore": ".dockerignore"}  # dot files are stored without their dot

EXIT_USAGE = 2
EXIT_EXISTS = 1


class CreateError(Exception):
    """An answer or a target that cannot work; the message says which and why."""


def template_files(project_type: str, docker: bool) -> dict[str, str]:
    """``{file name in the new project: its text}`` for one project type."""
    if project_type not in PROJECT_TYPES:
        raise CreateError(_unknown_type(project_type))
    folder = resources.files(__name__).joinpath("templates").joinpath(project_type)
    files = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".tmpl"):
            continue
        name = entry.name[: -len(".tmpl")]
        name = _HIDDEN.get(name, name)
        if name in DOCKER_FILES and not docker:
            continue
        files[name] = entry.read_text(encoding="utf-8")
    return files


def create_project(directory: Path, project_type: str, docker: bool) -> list[Path]:
    """Write the template into ``directory`` (made if missing); refuses, writing nothing, if
    any of its files already exists there."""
    files = template_files(project_type, docker)
    directory = directory.expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise CreateError(f"{directory} exists and is not a directory")
    taken = [name for name in files if (directory / name).exists()]
    if taken:
        raise CreateError(f"{directory} already has {', '.join(taken)}; nothing was written "
                          "(choose a new or empty directory)")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _unknown_type(value: str) -> str:
    if value in ROBYN_ONLY_TYPES:
        return f"project type {value!r} is one of Robyn's that stonechat has no template for; " \
               f"choose one of {', '.join(PROJECT_TYPES)}"
    return f"unknown project type {value!r}; choose one of {', '.join(PROJECT_TYPES)}"


# -- answers: from flags, else asked ------------------------------------------------------------

def _yes_no(value: str) -> bool:
    text = value.strip().lower()
    if text in ("y", "yes"):
        return True
    if text in ("n", "no"):
        return False
    raise CreateError(f"Docker: answer Y or N, not {value!r}")


def _project_type(value: str) -> str:
    text = value.strip().lower()
    if text.isdigit() and 1 <= int(text) <= len(PROJECT_TYPES):
        return PROJECT_TYPES[int(text) - 1]
    text = text.replace("_", "-").replace(" ", "-")
    if text in ("nodb", "none"):
        text = "no-db"
    if text not in PROJECT_TYPES:
        raise CreateError(_unknown_type(value.strip()))
    return text


def _directory(value: str) -> Path:
    if not value.strip():
        raise CreateError("the directory path is empty")
    return Path(value.strip())


class _Asker:
    """Asks one question until the answer parses; end of input is an error naming the flag."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin = stdin
        self.stdout = stdout

    def ask(self, prompt: str, flag: str, parse: Callable[[str], T], default: Optional[str] = None) -> T:
        while True:
            self.stdout.write(prompt)
            self.stdout.flush()
            line = self.stdin.readline()
            if not line:
                self.stdout.write("\n")
                raise CreateError(f"no answer for {prompt.strip()!r} (end of input); give {flag} "
                                  "to create a project without questions")
            answer = line.rstrip("\r\n")
            if not answer.strip() and default is not None:
                answer = default
            try:
                return parse(answer)
            except CreateError as exc:
                self.stdout.write(f"  {exc}\n")


def run_create(argv: Sequence[str], stdin: Optional[TextIO] = None, stdout: Optional[TextIO] = None,
               stderr: Optional[TextIO] = None) -> int:
    """``stonechat --create [--dir PATH] [--docker y|n] [--type TYPE]``; asks for what is missing."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="stonechat --create", add_help=False)
    parser.add_argument("--dir", "--directory", dest="directory")
    parser.add_argument("--docker")
    parser.add_argument("--type", "--project-type", dest="project_type")
    args, _ = parser.parse_known_args([a for a in argv if a != "--create"])
    asker = _Asker(stdin, stdout)
    choices = "  ".join(f"{i}) {t}" for i, t in enumerate(PROJECT_TYPES, 1))
    try:
        # Flags first, so a bad one fails before any question is asked.
        directory = _directory(args.directory) if args.directory is not None else None
        docker = _yes_no(args.docker) if args.docker is not None else None
        project_type = _project_type(args.project_type) if args.project_type is not None else None
        if directory is None:
            directory = asker.ask("Directory Path: ", "--dir", _directory)
        if docker is None:
            docker = asker.ask("Need Docker? (Y/N) [N]: ", "--docker", _yes_no, default="N")
        if project_type is None:
            project_type = asker.ask(f"Project type: {choices} [no-db]: ", "--type", _project_type,
                                     default="no-db")
    except CreateError as exc:
        print(f"stonechat --create: {exc}", file=stderr)
        return EXIT_USAGE
    target = directory if directory.is_absolute() else Path.cwd() / directory
    print(f"Creating a new stonechat project ({project_type}{', with Docker' if docker else ''}) "
          f"in {target.resolve()} ...", file=stdout)
    try:
        written = create_project(target, project_type, docker)
    except (CreateError, OSError) as exc:
        print(f"stonechat --create: {exc}", file=stderr)
        return EXIT_EXISTS
    for path in written:
        print(f"  {path.name}", file=stdout)
    print(f"Done. Start it with: cd {target.resolve()} && pip install -r requirements.txt "
          "&& python app.py", file=stdout)
    return 0


__all__ = ["PROJECT_TYPES", "CreateError", "create_project", "run_create", "template_files"]
