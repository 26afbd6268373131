"""The core's contract: app.tenancy never imports flask or the HTTP layer."""

import ast
import subprocess
import sys
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


def test_the_core_and_the_fanout_import_without_flask():
    """The core is usable from any Python program (a worker, a script) without the web stack."""
    probe = (
        "import sys, app.tenancy, app.tenancy.fanout, app.tenancy.fanout_worker, app.tenancy.provisioning;"
        "loaded = sorted(m for m in ('flask', 'flask_smorest', 'marshmallow', 'werkzeug') if m in sys.modules);"
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
