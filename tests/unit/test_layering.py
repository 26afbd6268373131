"""The core's contract: app.tenancy never imports flask or the HTTP layer."""

import ast
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import app.tenancy

CORE = sorted(Path(app.tenancy.__file__).parent.glob("*.py"))
FORBIDDEN = ("flask", "flask_sqlalchemy", "flask_smorest", "werkzeug", "app.api", "app.extensions", "app.cli")


@pytest.mark.parametrize("module", CORE, ids=lambda p: p.name)
def test_core_module_imports_nothing_from_the_http_layer(module):
    imported = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
    bad = {name for name in imported if name.startswith(FORBIDDEN)}
    assert not bad, f"{module.name} imports {sorted(bad)}"


def test_the_fixtures_are_registered_as_a_pytest_plugin():
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("tenantry") == "app.testing"
