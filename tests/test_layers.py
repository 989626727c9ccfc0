"""The layering rule of the codebase, checked on every run: ``stonechat/server`` (sockets,
bytes, processes) imports nothing from the framework, and the framework modules never touch
sockets or asyncio protocols. A failure names the file and the import that broke the rule."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stonechat"
SERVER = PACKAGE / "server"


def imports(path: Path) -> list[tuple[int, str, int]]:
    """(line, module, relative level) of every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
    return found


def absolute(path: Path, module: str, level: int) -> str:
    """The absolute name of ``module`` imported with ``level`` dots from the file ``path``."""
    if not level:
        return module
    package = list(path.relative_to(PACKAGE.parent).parent.parts)
    base = package[:len(package) - level + 1]
    return ".".join(base + ([module] if module else []))


def test_server_layer_imports_no_framework_module():
    bad = []
    for path in SERVER.rglob("*.py"):
        for line, module, level in imports(path):
            name = absolute(path, module, level)
            if name == "stonechat" or (name.startswith("stonechat.") and not name.startswith("stonechat.server")):
                bad.append(f"{path.relative_to(SERVER)}:{line} imports {'.' * level}{module}")
    assert not bad, bad


def test_framework_layer_touches_no_socket():
    bad = []
    for path in PACKAGE.glob("*.py"):
        for line, module, level in imports(path):
            if level == 0 and module.split(".")[0] in ("socket", "selectors", "ssl"):
                bad.append(f"{path.name}:{line} imports {module}")
        if "asyncio.Protocol" in path.read_text():
            bad.append(f"{path.name} uses asyncio.Protocol")
    assert not bad, bad
