"""The dependency direction of ``app/``, read from the source.

Every ``import`` counts, including the ones inside functions (deferred for start-up
time, they are dependencies all the same) and under ``TYPE_CHECKING``. ``app/`` is
layered (LAYERS, bottom first): a module imports from its own package or from a layer
below, never from a sibling package of its layer (``app.api`` and ``app.cli`` know
nothing of each other, nor does either of ``app.console``) and never upward. The core, ``app.tenancy``, imports neither
flask nor the layers above it. No module imports one that imports it back.
"""

import ast
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import app
import app.tenancy

APP = Path(app.__file__).parent

#: Bottom first. A name is a top-level module or package of app/ ("app" is app/__init__.py).
LAYERS = (
    # No import of app/ at all: settings, plain helpers, the models, the two Alembic runners.
    ("app.config", "app.pagination", "app.backoff", "app.models", "app.embedded", "app.public_migrations"),
    # The core: plain values and a session in, domain objects and TenancyError out.
    ("app.tenancy",),
    # What sits on the core: extension objects, logging and metrics, tenant-data services, schemas.
    ("app.extensions", "app.logs", "app.metrics", "app.services", "app.schemas"),
    # An app without its interfaces (settings, database), and what gunicorn answers by itself.
    ("app.bootstrap", "app.http_server"),
    # The interfaces, side by side: the JSON API, the operator console, the CLI.
    ("app.api", "app.console", "app.cli"),
    # The composition root: wires both interfaces into one app.
    ("app.factory",),
    # The package re-exports create_app; the pytest plugin builds apps for tests.
    ("app",),
    ("app.testing",),
)
LAYER_OF = {package: rank for rank, names in enumerate(LAYERS) for package in names}

#: What the core never imports: the web stack and everything above it.
CORE_FORBIDDEN = (
    "flask", "flask_sqlalchemy", "flask_smorest", "werkzeug", "marshmallow",
    *(name for names in LAYERS[LAYER_OF["app.tenancy"] + 1:] for name in names if name != "app"),
)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _imported_names(path: Path) -> set[str]:
    """Every name an ``import`` in the file brings in, relative imports made absolute.

    ``from x import y`` counts as ``x.y``: the module y when it is one, else a name in x.
    """
    name, is_package = _module_name(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names |= {f"{source}.{alias.name}" for alias in node.names}
    return names


FILES = {_module_name(path)[0]: path for path in sorted(APP.rglob("*.py"))}
IMPORTS = {module: _imported_names(path) for module, path in FILES.items()}


def _own_module(name: str) -> str | None:
    """The module of app/ that ``name`` is, or is in (``app.tenancy.naming.quote_ident`` -> ``app.tenancy.naming``)."""
    while name and name not in FILES:
        name = name.rpartition(".")[0]
    return name or None


def _graph(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module -> the modules of app/ it imports, itself left out."""
    return {module: {_own_module(name) for name in names} - {None, module} for module, names in imports.items()}


def _package(module: str) -> str:
    """The entry of LAYERS a module belongs to: app/<top>, or "app" for the package itself."""
    return ".".join(module.split(".")[:2])


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            source, dest = _package(module), _package(target)
            if source not in LAYER_OF or dest not in LAYER_OF:
                continue  # test_every_package_of_app_has_a_layer says so
            if source != dest and LAYER_OF[dest] >= LAYER_OF[source]:
                where = "up" if LAYER_OF[dest] > LAYER_OF[source] else "sideways"
                found.append(f"{module} -> {target} ({where})")
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_within(graph, component) for component in components]


def _path_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node] & component):
            if succ == start:
                return [*paths[node], start]
            if succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    raise AssertionError("a strongly connected component has a cycle through each member")


GRAPH = _graph(IMPORTS)


# --- the checks -------------------------------------------------------------


def test_every_package_of_app_has_a_layer():
    unplaced = sorted({_package(m) for m in FILES} - set(LAYER_OF))
    assert not unplaced, f"add {unplaced} to LAYERS in {Path(__file__).name}"


def test_nothing_imports_upward_or_sideways():
    bad = _upward_imports(GRAPH)
    assert not bad, "imports against the layering (LAYERS, bottom first):\n" + "\n".join(bad)


def test_the_api_and_the_cli_never_import_each_other():
    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if {_package(module), _package(target)} == {"app.api", "app.cli"}
    )
    assert not crossing, crossing


def test_no_module_of_app_imports_one_that_imports_it_back():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


CORE = sorted(m for m in FILES if m == "app.tenancy" or m.startswith("app.tenancy."))


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_nothing_from_flask_or_the_layers_above(module):
    bad = {name for name in IMPORTS[module] if name.split(".")[0] != "app" and name.startswith(CORE_FORBIDDEN)}
    bad |= {target for target in GRAPH[module] if _package(target) in CORE_FORBIDDEN}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_the_core_docstring_lists_every_module_of_the_core():
    listed = set(re.findall(r"^- ``(\w+)``", app.tenancy.__doc__ or "", re.MULTILINE))
    files = {path.stem for path in Path(app.tenancy.__file__).parent.glob("*.py")} - {"__init__"}
    assert listed == files, f"not listed: {sorted(files - listed)}; listed, no such module: {sorted(listed - files)}"


# --- the checks check what they say -----------------------------------------


def test_the_graph_sees_relative_deferred_and_aliased_imports():
    imports = {
        "app.tenancy.naming": {"app.tenancy.context"},  # from .context import x
        "app.tenancy.context": {"app.tenancy.binding"},  # import inside a function
        "app.tenancy.binding": {"app.tenancy.naming.quote_ident"},  # a name, not a module
        "app.cli.fanout": {"app.api.errors", "flask"},
        "app.api.errors": {"app.tenancy"},
        "app.tenancy": set(),
    }
    graph = _graph(imports)
    assert graph["app.tenancy.binding"] == {"app.tenancy.naming"}
    assert _cycles(graph) == [["app.tenancy.binding", "app.tenancy.naming", "app.tenancy.context",
                               "app.tenancy.binding"]]
    assert _upward_imports(graph) == ["app.cli.fanout -> app.api.errors (sideways)"]


# --- how the package is wired ------------------------------------------------


def test_the_fixtures_are_registered_as_a_pytest_plugin():
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("tenantry") == "app.testing"


def test_flask_tenants_is_the_cli_plugin_entry_point():
    """pip install -e . (python3 dev.py does it when pyproject.toml changes) refreshes a stale entry."""
    commands = {ep.name: ep.value for ep in entry_points(group="flask.commands")}
    assert commands.get("tenants") == "app.cli.plugin:tenants_cli"


def test_the_core_and_the_fanout_import_without_flask():
    """The core is usable from any Python program (a worker, a script) without the web stack."""
    probe = (
        "import sys, app.tenancy, app.tenancy.fanout, app.tenancy.fanout_worker, app.tenancy.provisioning;"
        "loaded = sorted(m for m in ('flask', 'flask_smorest', 'marshmallow', 'werkzeug') if m in sys.modules);"
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
