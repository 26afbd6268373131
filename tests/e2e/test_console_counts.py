"""The overview's tenant counts are kept for ``CONSOLE_COUNTS_TTL_SECONDS``, and the page says since when.

The rest of the suite runs with the bound at 0 (app.testing.make_test_app): counted on
every request. Here an app of its own keeps them.
"""

from __future__ import annotations

import re
import uuid

from tests.e2e.test_console import sign_in

COUNT = re.compile(r'<td class="num" id="tenant-count">(\d+)<')
COUNTED_AT = re.compile(r'<p id="counted-at">Tenant counts as of <time datetime="([^"]+)">')


def overview(client) -> tuple[int, str, str]:
    html = client.get("/console/").get_data(as_text=True)
    count, counted_at = COUNT.search(html), COUNTED_AT.search(html)
    assert count and counted_at, html
    return int(count.group(1)), counted_at.group(1), html


def signed_in(app):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.9"
    assert sign_in(client).status_code == 303
    return client


def test_within_the_bound_the_overview_shows_the_counts_it_took_and_when(make_app, make_tenant):
    client = signed_in(make_app(CONSOLE_COUNTS_TTL_SECONDS=3600))
    before, counted_at, html = overview(client)
    assert "(counted at most every 3600 s)" in html
    make_tenant(f"cnt{uuid.uuid4().hex[:10]}")
    assert overview(client)[:2] == (before, counted_at)  # the cached counts, and the time they are from


def test_at_zero_every_overview_counts_afresh(make_app, make_tenant):
    client = signed_in(make_app(CONSOLE_COUNTS_TTL_SECONDS=0))
    before, _, html = overview(client)
    assert "counted at most every" not in html
    make_tenant(f"cnt{uuid.uuid4().hex[:10]}")
    assert overview(client)[0] == before + 1
