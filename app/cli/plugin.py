"""The ``flask tenants`` plugin: the module the ``flask.commands`` entry point names.

``flask`` imports every plugin before it runs any command, so this import is on the
path of every ``flask …`` start, and ``flask tenants migrate`` starts a fan-out that
may have only a second of work to do. Importing the commands (SQLAlchemy, Alembic,
psycopg, the app) creates about 100,000 objects that live as long as the process.
With CPython's cyclic garbage collector on, it scans them again and again while they
are being created, and once more at exit, for nothing: they are never garbage. So the
collector is paused while they are imported, then they are frozen (``gc.freeze()``:
moved to a generation that no collection scans) and the collector resumes for what
the command itself allocates. A ``flask tenants migrate`` with nothing to do went from
0.8-1.0 s to 0.65-0.7 s on the benchmark machine (docs/benchmarks.md, fan-out).

The web app never comes through here: ``create_app`` imports the command groups itself.
For the same reason ``app/cli/__init__.py`` imports nothing: importing this module
imports its package first, before the collector is paused.
"""

from __future__ import annotations

import gc

from click import Group


def _import_commands() -> Group:
    collecting = gc.isenabled()
    gc.disable()
    try:
        from .tenants import tenants_cli
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    return tenants_cli


tenants_cli = _import_commands()
