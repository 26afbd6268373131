"""The ``flask tenants`` plugin module: the commands, imported with the collector paused, and it back on."""

import subprocess
import sys

PROBE = """
import gc
import app.cli.plugin as plugin
print(plugin.tenants_cli.name, gc.isenabled(), gc.get_freeze_count())
"""


def test_the_plugin_is_the_tenants_group_and_leaves_the_collector_on_with_the_imports_frozen():
    # A fresh interpreter: the import under test must be the first import of the commands.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    name, enabled, frozen = out[0], out[1], int(out[2])
    assert name == "tenants"
    assert enabled == "True"
    assert frozen > 10_000  # SQLAlchemy, Alembic, psycopg and the app: what no collection needs to scan


def test_a_collector_turned_off_by_the_caller_stays_off():
    probe = "import gc; gc.disable(); import app.cli.plugin; print(gc.isenabled())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
