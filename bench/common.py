"""What several benchmarks share: a scratch database, real tenants provisioned in a few
processes, saving a plot.

The benches are scripts (``python bench/x.py``); each puts the repository root on
``sys.path`` and imports this as ``bench.common``, which spawned processes find the
same way.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from app.extensions import db
from app.testing import database_server, fresh_database, make_test_app

#: The repository root (docs/img holds the plots).
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scratch:
    url: str  #: SQLAlchemy URL (postgresql+psycopg://)
    dsn: str  #: the same for libpq / psycopg
    version: str  #: the server's ``server_version``


@contextmanager
def scratch_database(*, public_schema: bool = True) -> Iterator[Scratch]:
    """A fresh database, with the public schema at head unless told otherwise, dropped at the end.

    On ``DATABASE_URL``'s server, else where the tests would make one (``TEST_DATABASE_URL``,
    Docker, or an embedded server started for the run). The database goes also when the
    benchmark fails (:func:`app.testing.fresh_database`).
    """
    with ExitStack() as stack:
        server_url = os.environ.get("DATABASE_URL")
        if server_url is None:
            server_url = stack.enter_context(database_server())
        url = stack.enter_context(fresh_database(server_url))
        if public_schema:
            from app import public_migrations

            app = make_test_app(url)
            with app.app_context():
                public_migrations.upgrade(db.engine)
                db.engine.dispose()
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        yield Scratch(url=url, dsn=dsn, version=version)


def add_common_arguments(parser: argparse.ArgumentParser, png: str, *, provision_processes: bool = True) -> None:
    """The options every benchmark has: where its plot goes (``--plot``, ``--no-plot``) and,
    when it provisions tenants, in how many processes (``--provision-processes``)."""
    if provision_processes:
        parser.add_argument("--provision-processes", type=int, default=3,
                            help="processes provisioning the tenants (default 3)")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / png,
                        help=f"PNG to write (default docs/img/{png})")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend; None when matplotlib is not installed
    (it is no project dependency: the benchmarks then write no plot)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Lay out, write as PNG (110 dpi) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

_worker_app: Any = None


def _provision_chunk(args: tuple[str, list[str], str]) -> list[tuple[str, str]]:
    """In a provisioning process: provision these tenants (one app per process); (slug, admin key)."""
    global _worker_app
    from app.tenancy.provisioning import provision_tenant

    url, slugs, plan = args
    if _worker_app is None:
        _worker_app = make_test_app(url)
    made = []
    with _worker_app.app_context():
        for slug in slugs:
            try:
                made.append((slug, provision_tenant(db.session(), slug=slug, name=slug, plan=plan).admin_key.token))
            except Exception as exc:
                # Tenantry's errors take several arguments and do not unpickle in the parent,
                # which then waits forever: hand it a plain one with the message.
                raise RuntimeError(f"provisioning {slug}: {exc}") from None
            db.session.remove()
        db.engine.dispose()  # a backend caches every schema it touched: start afresh per chunk
    return made


def provision_tenants(url: str, slugs: list[str], processes: int, *, plan: str = "free") -> list[tuple[str, str]]:
    """Provision ``slugs`` through ``provision_tenant`` in ``processes`` spawned processes.

    Returns (slug, admin API key) in slug order; reports progress on stderr.
    """
    if not slugs:
        return []
    chunks = [(url, slugs[i : i + 200], plan) for i in range(0, len(slugs), 200)]
    made: list[tuple[str, str]] = []
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(min(processes, len(chunks))) as pool:
        for chunk in pool.imap_unordered(_provision_chunk, chunks):
            made += chunk
            if sys.stderr.isatty():
                print(f"\r  provisioned {len(made)}/{len(slugs)}", end="", file=sys.stderr, flush=True)
    print(f"\r  provisioned {len(slugs)} tenants ({slugs[0]}..{slugs[-1]}) in {time.perf_counter() - started:.1f}s"
          f" ({processes} processes)", file=sys.stderr)
    return sorted(made)


def report_plot(written: bool, path: Path) -> None:
    """Say where the plot went (relative to the repository when inside it), or why there is none."""
    if not written:
        print("plot: skipped (matplotlib is not importable; `.venv/bin/pip install matplotlib` for one)")
        return
    shown = path.resolve()
    print(f"plot: {shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown}")
