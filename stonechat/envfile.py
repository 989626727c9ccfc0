"""``robyn.env``: environment variables from a file in the app's directory (Robyn's rules).

``Robyn(__file__)`` reads ``robyn.env`` next to the app file, so ``ROBYN_PORT``,
``STONECHAT_MAX_BODY_SIZE``, ``DATABASE_URL``... set there take effect as if they had been
exported; a variable already in the environment wins over the file. Since the ``stonechat``
command runs the app file in its own process, that covers the CLI too.

Format: one ``KEY=VALUE`` per line; lines starting with ``#`` and blank lines are skipped;
the value is everything after the first ``=`` (kept as written, quotes included, as in
Robyn); whitespace around key and value is dropped; an ``export`` prefix is allowed. A line
that is none of these is a *problem* reported with the file and line number (``start()``
refuses to serve with it), never a traceback: Robyn crashes on a blank line and cuts values
at a second ``=``.

``parser`` and ``load_vars`` keep the names of Robyn's ``robyn.env_populator``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, MutableMapping, Optional, Union

logger = logging.getLogger("stonechat")

ENV_FILE_NAME = "robyn.env"


@dataclass
class EnvFile:
    """What reading one env file gave: the variables in order, and the lines it refused."""

    path: Path
    variables: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "path:line: what is wrong"


def read_env_file(path: Union[str, Path]) -> EnvFile:
    """Parse ``path`` (which must exist); bad lines go to ``problems``, not exceptions."""
    path = Path(path)
    result = EnvFile(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        result.problems.append(f"{path}: cannot read it ({exc})")
        return result
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            result.problems.append(f"{path}:{number}: expected KEY=VALUE, got {raw.strip()!r}")
        elif not key or any(c.isspace() for c in key) or "\0" in key:
            result.problems.append(f"{path}:{number}: {key!r} is not a variable name (in {raw.strip()!r})")
        elif "\0" in value:
            result.problems.append(f"{path}:{number}: the value of {key} contains a NUL byte")
        else:
            result.variables.append((key, value.strip()))
    return result


def load_env_file(directory: Union[str, Path],
                  environ: Optional[MutableMapping[str, str]] = None) -> Optional[EnvFile]:
    """Read ``directory/robyn.env`` into ``environ`` (default ``os.environ``) without
    overwriting what is there. ``None`` when there is no such file."""
    path = Path(directory) / ENV_FILE_NAME
    if not path.is_file():
        return None
    env = os.environ if environ is None else environ
    found = read_env_file(path)
    for key, value in found.variables:
        if key in env:
            logger.debug("%s: %s is already set; keeping the environment's value", path, key)
        else:
            env[key] = value
    return found


# -- Robyn's robyn.env_populator names -------------------------------------------------------

def parser(config_path: Optional[Union[str, Path]] = None, project_root: str = "") -> Iterator[list[str]]:
    """Robyn's ``parser``: ``[key, value]`` per good line of ``robyn.env`` (bad lines are
    logged with their line number and skipped)."""
    path = Path(config_path) if config_path is not None else Path(project_root) / ENV_FILE_NAME
    if not path.exists():
        return
    found = read_env_file(path)
    for problem in found.problems:
        logger.error("%s", problem)
    for key, value in found.variables:
        yield [key, value]


def load_vars(variables: Optional[Iterable[Iterable[str]]] = None, project_root: str = "") -> None:
    """Robyn's ``load_vars``: set each ``(key, value)`` not already in the environment."""
    for key, value in (parser(project_root=project_root) if variables is None else variables):
        if key not in os.environ:
            os.environ[key] = value


__all__ = ["ENV_FILE_NAME", "EnvFile", "load_env_file", "load_vars", "parser", "read_env_file"]
