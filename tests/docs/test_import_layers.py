"""Every import points down: the walls of docs/architecture.md, checked by reading the source (lazy imports
inside functions included). ``uad_edge`` (packages/uad-edge, a distribution of its own) lies below every floor: it
imports nothing of uad_plugins, nor torch, lightning or anomalib."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "uad_plugins"
EDGE_DISTRIBUTION = REPO / "packages" / "uad-edge"
EDGE_PACKAGE = EDGE_DISTRIBUTION / "uad_edge"

#: floors, lowest first; a module may import its own floor and the ones below, never one above
FLOORS: list[tuple[str, ...]] = [
    ("errors", "version", "imports", "protocols", "edge", "serving"),
    ("specs", "hookspecs", "scale"),
    ("manager",),
    ("registry",),
    ("trust", "provenance"),
    ("synth", "components"),
    ("data",),
    ("factory", "__init__", "synth.run"),
    ("engine",),
    ("export",),
    ("bench", "testing"),
    ("cli", "__main__"),
    ("plugins",),
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_part(module: str) -> str:
    """The floor key of a module: ``uad_plugins.engine.run`` -> ``engine`` (``synth.run``, which has a floor of its
    own, -> ``synth.run``); the package root -> ``__init__``."""
    parts = module.split(".")
    if len(parts) > 2 and ".".join(parts[1:3]) in FLOOR:
        return ".".join(parts[1:3])
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``uad_plugins`` import in a file, wherever it stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "uad_plugins"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "uad_plugins":
                continue
            for alias in node.names:  # `from pkg import module` imports that module
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in KNOWN else target))
    return found


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


KNOWN = {module_name(p) for p in all_modules()}


def test_every_module_has_a_floor() -> None:
    unknown = sorted({top_part(module_name(p)) for p in all_modules()} - set(FLOOR))
    assert not unknown, f"modules with no floor in this test (add them to FLOORS and docs/architecture.md): {unknown}"


def test_no_import_points_up() -> None:
    upward = []
    for path in all_modules():
        here = module_name(path)
        mine = FLOOR[top_part(here)]
        for line, target in imports_of(path):
            theirs = FLOOR.get(top_part(target))
            if theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} {here} -> {target}")
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_plugins_import_no_other_plugin_and_no_cli() -> None:
    bad = []
    for path in sorted((PACKAGE / "plugins").rglob("*.py")):
        here = module_name(path).split(".")
        for line, target in imports_of(path):
            parts = target.split(".")
            other_plugin = parts[:2] == ["uad_plugins", "plugins"] and len(parts) > 2 and len(here) > 2 \
                and parts[2] != here[2]
            if other_plugin or top_part(target) == "cli":
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} -> {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    """No circle among the modules, counting every import."""
    graph: dict[str, set[str]] = {}
    for path in all_modules():
        here = module_name(path)
        targets = set()
        for _, target in imports_of(path):
            while target not in KNOWN and "." in target:  # `from pkg.mod import name`: the module is pkg.mod
                target = target.rpartition(".")[0]
            if target != here:
                targets.add(target)
        graph[here] = targets
    cycles = _strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


@pytest.mark.parametrize("name", ["uad_plugins.engine.run", "uad_plugins"])
def test_module_names(name: str) -> None:
    path = PACKAGE.parent.joinpath(*name.split(".")).with_suffix(".py")
    path = path if path.is_file() else path.with_suffix("") / "__init__.py"
    assert module_name(path) == name


def test_architecture_page_lists_these_floors() -> None:
    """docs/architecture.md's floor table is the one this test enforces."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows[int(cells[0])] = tuple(name.strip().strip("`") for name in cells[1].split(","))
    assert rows == dict(enumerate(FLOORS))


# ------------------------------------------------------------------------------- uad_edge: below every floor

#: never imported by uad_edge, anywhere (the slim install has none of them)
FORBIDDEN_IN_EDGE = {"uad_plugins", "torch", "torchvision", "lightning", "anomalib"}
#: what uad_edge may import besides the standard library and itself (serving/ and the serve command add the server)
EDGE_RUNTIME_IMPORTS = {"openvino", "numpy", "PIL"}
EDGE_SERVER_IMPORTS = {"fastapi", "starlette", "uvicorn", "multipart", "python_multipart"}


def _top_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level name)`` of every absolute import in a file, lazy ones included (relative: ``uad_edge``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "uad_edge" if node.level else (node.module or "").split(".")[0]))
    return found


def _edge_files() -> list[Path]:
    files = sorted(EDGE_PACKAGE.rglob("*.py"))
    assert len(files) > 20, f"uad_edge not found under {EDGE_PACKAGE}"
    return files


def test_uad_edge_imports_no_uad_plugins_and_no_torch() -> None:
    bad = [f"{path.relative_to(REPO)}:{line} imports {name}" for path in _edge_files()
           for line, name in _top_imports(path) if name in FORBIDDEN_IN_EDGE]
    assert not bad, "uad_edge must stand alone (openvino, numpy, pillow):\n" + "\n".join(bad)


def test_uad_edge_imports_only_its_dependencies() -> None:
    bad = []
    for path in _edge_files():
        server = "serving" in path.relative_to(EDGE_PACKAGE).parts or path.name == "serve.py"
        allowed = {"uad_edge", "__future__", *EDGE_RUNTIME_IMPORTS, *(EDGE_SERVER_IMPORTS if server else ())}
        bad += [f"{path.relative_to(REPO)}:{line} imports {name}" for line, name in _top_imports(path)
                if name not in allowed and name not in sys.stdlib_module_names]
    assert not bad, "imports outside uad-edge's dependencies:\n" + "\n".join(bad)


def _pyproject(path: Path) -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_uad_edge_distribution_depends_on_openvino_numpy_pillow_only() -> None:
    project = _pyproject(EDGE_DISTRIBUTION / "pyproject.toml")["project"]
    assert project["name"] == "uad-edge"
    assert _names(project["dependencies"]) == {"openvino", "numpy", "pillow"}
    assert _names(project["optional-dependencies"]["serve"]) == {"fastapi", "uvicorn", "python-multipart"}
    assert project["scripts"] == {"uad-edge": "uad_edge.cli:main"}


def test_uad_plugins_pins_this_uad_edge() -> None:
    """The main package pins the uad-edge in this repository (its version.py), in its dependencies and extras."""
    version = re.search(r'__version__ = "([^"]+)"', (EDGE_PACKAGE / "version.py").read_text()).group(1)
    project = _pyproject(REPO / "pyproject.toml")["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    pins = [r for r in requirements if r.startswith("uad-edge")]
    assert "uad-edge==" + version in project["dependencies"]
    assert pins and all(r.endswith("==" + version) for r in pins), pins


def test_uad_plugins_edge_and_serving_re_export_uad_edge() -> None:
    import uad_edge
    import uad_edge.serving
    import uad_plugins.edge
    import uad_plugins.errors
    import uad_plugins.serving

    assert {name: getattr(uad_plugins.edge, name) for name in uad_plugins.edge.__all__} == \
        {name: getattr(uad_edge, name) for name in uad_plugins.edge.__all__}
    assert uad_plugins.serving.serve is uad_edge.serving.serve
    assert uad_plugins.serving.load_app is uad_edge.serving.load_app
    # the edge runtime's errors are the package's user errors: every `except UadError` catches them
    assert uad_plugins.errors.UadError is uad_edge.UadError
    assert issubclass(uad_edge.EdgeError, uad_plugins.errors.UadError)


def test_uad_edge_errors_and_cli_stay_light() -> None:
    """`uad_plugins.errors` stands on `uad_edge.errors`: importing it (and `uad_edge.cli`) loads no numpy or openvino,
    so `uad plugins list` stays fast; the runtime's names load on first use."""
    import subprocess

    code = ("import sys, uad_plugins.errors, uad_edge.cli; heavy = [m for m in ('numpy', 'openvino', 'PIL') "
            "if m in sys.modules]; assert not heavy, heavy; from uad_edge import load_bundle; "
            "assert 'numpy' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
