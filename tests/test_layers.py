"""The shape of the codebase, checked on every run. A failure names the file and the import that
broke the rule.

* ``stonechat/server`` (sockets, bytes, processes) imports nothing from the framework, and the
  framework modules never touch sockets or asyncio protocols;
* no import cycle between stonechat's modules, counting imports inside functions;
* imports inside functions only for optional dependencies (a module that may be missing).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stonechat"
SERVER = PACKAGE / "server"

# Third-party modules that may be absent, so importing them inside a function is legitimate.
OPTIONAL = frozenset({"uvloop", "websockets", "jinja2", "pydantic", "redis", "hiredis",
                      "prometheus_client", "atheris", "swagger_ui_bundle"})


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> list[tuple[int, str, int, list[str], bool]]:
    """(line, module, relative level, imported names, inside a function) of every import."""
    found = []
    tree = ast.parse(path.read_text())
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    nested.add(id(inner))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0, [], id(node) in nested) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level,
                          [a.name for a in node.names], id(node) in nested))
    return found


def resolve(importer: str, is_package: bool, module: str, level: int) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside ``importer``."""
    if level == 0:
        return module
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return ".".join(base + ([module] if module else []))


def edges() -> dict[str, set[str]]:
    """Module → the stonechat modules it imports (anywhere in the file)."""
    modules = all_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for _, module, level, names, _ in imports(path):
            target = resolve(name, is_package, module, level)
            if target != "stonechat" and not target.startswith("stonechat."):
                continue
            found = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if not found:
                found = [target]
            for dep in found:
                # A package is initialised before its modules run: an edge to an ancestor is none.
                if dep in modules and not name.startswith(dep + ".") and dep != name:
                    graph[name].add(dep)
    return graph


def test_server_layer_imports_no_framework_module():
    bad = []
    for path in SERVER.rglob("*.py"):
        name = module_name(path)
        for line, module, level, _, _ in imports(path):
            target = resolve(name, path.name == "__init__.py", module, level)
            if (target == "stonechat" or target.startswith("stonechat.")) and not target.startswith("stonechat.server"):
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not bad, bad


def test_framework_layer_touches_no_socket():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        if SERVER in path.parents:
            continue
        for line, module, level, _, _ in imports(path):
            if level == 0 and module.split(".")[0] in ("socket", "selectors", "ssl"):
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
        if "asyncio.Protocol" in path.read_text():
            bad.append(f"{path.relative_to(PACKAGE)} uses asyncio.Protocol")
    assert not bad, bad


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    cycles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles_counting_imports_inside_functions():
    cycles = find_cycles(edges())
    assert not cycles, cycles


def test_imports_inside_functions_only_for_optional_dependencies():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for line, module, level, _, inside in imports(path):
            if inside and (level > 0 or module.split(".")[0] not in OPTIONAL):
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {'.' * level}{module} inside a function")
    assert not bad, bad


def test_the_checks_see_what_they_look_for(tmp_path):
    """The checkers themselves: relative imports resolve, a function-level import is seen as one,
    and a cycle through it is found."""
    assert resolve("stonechat.a", False, "b", 1) == "stonechat.b"
    assert resolve("stonechat.core", True, "request", 1) == "stonechat.core.request"
    assert resolve("stonechat.core.x", False, "server.interface", 2) == "stonechat.server.interface"
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from .b import x\n")
    found = imports(sample)
    assert [(m, level, inside) for _, m, level, _, inside in found] == [("os", 0, False), ("b", 1, True)]


# Robyn's import paths at the top level: each only re-exports names defined elsewhere.
ROBYN_PATHS = ("authentication", "dependency_injection", "env_populator", "events", "exceptions", "jsonify",
               "mcp", "openapi", "responses", "robyn", "session", "status_codes", "templating", "testing", "types",
               "ws")
# What each layer of the framework may import from stonechat (besides itself).
ALLOWED = {
    "core": ("stonechat.core", "stonechat.server.interface"),
    "websocket": ("stonechat.core", "stonechat.websocket", "stonechat.pubsub", "stonechat.server.interface"),
    "pubsub": ("stonechat.core", "stonechat.websocket", "stonechat.pubsub", "stonechat.server.interface"),
    "features": ("stonechat.core", "stonechat.websocket", "stonechat.pubsub", "stonechat.server.interface"),
    # asgi/eager.py relays a call that waited with the server's own relay (server/eager.py,
    # standard library only): one copy of that protocol with asyncio's Task, not two
    "asgi": ("stonechat.core", "stonechat.websocket", "stonechat.asgi", "stonechat.server.interface",
             "stonechat.server.eager"),
}


def stonechat_imports(path: Path) -> list[tuple[int, str]]:
    name = module_name(path)
    found = []
    for line, module, level, names, _ in imports(path):
        target = resolve(name, path.name == "__init__.py", module, level)
        if target == "stonechat" or target.startswith("stonechat."):
            found.append((line, target))
    return found


def test_each_layer_imports_only_what_the_tree_allows():
    bad = []
    for layer, allowed in ALLOWED.items():
        for path in (PACKAGE / layer).rglob("*.py") if (PACKAGE / layer).exists() else ():
            own = module_name(path)
            for line, target in stonechat_imports(path):
                ok = any(target == a or target.startswith(a + ".") for a in allowed)
                if layer == "features" and target.startswith("stonechat.features."):
                    # a feature never imports another feature (its own package's modules are fine)
                    ok = target.split(".")[2] == own.split(".")[2] if len(own.split(".")) > 2 else False
                if not ok:
                    bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not bad, bad


def test_robyn_import_paths_only_re_export():
    bad = []
    for name in ROBYN_PATHS:
        path = PACKAGE / f"{name}.py"
        assert path.exists(), f"Robyn's module path stonechat.{name} is missing"
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # the docstring
            if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == ["__all__"]:
                continue
            bad.append(f"{name}.py:{node.lineno} defines something (re-exports only)")
    assert not bad, bad


def test_nothing_inside_the_package_imports_robyn_paths():
    paths = {f"stonechat.{n}" for n in ROBYN_PATHS}
    bad = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue  # the public face: ``stonechat.status_codes`` is an attribute of the package
        for line, target in stonechat_imports(path):
            if target in paths:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not bad, bad
