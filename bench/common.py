"""What several benchmarks share: real tenants provisioned in a few processes.

The benches are scripts (``python bench/x.py``); each puts the repository root on
``sys.path`` and imports this as ``bench.common``, which spawned processes find the
same way.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from typing import Any

from app.extensions import db
from app.testing import make_test_app

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
            made.append((slug, provision_tenant(db.session(), slug=slug, name=slug, plan=plan).admin_key.token))
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
