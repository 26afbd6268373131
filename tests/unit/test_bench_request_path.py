"""bench/request_path.py names and times every round trip of a libpq trace; a wrong name would go unnoticed."""

from __future__ import annotations

import pytest

from bench.request_path import parse_trace, step_of

TRACE = "\n".join("\t".join(fields) for fields in [
    ("2026-12-04 14:32:05.000000", "F", "10", "Query", ' "BEGIN"'),
    ("2026-12-04 14:32:05.000100", "B", "10", "CommandComplete", ' "BEGIN"'),
    ("2026-12-04 14:32:05.000150", "B", "5", "ReadyForQuery", " T"),
    ("2026-12-04 14:32:05.001000", "F", "6", "Query", ' ";"'),
    ("2026-12-04 14:32:05.001200", "B", "5", "ReadyForQuery", " T"),
    # psycopg preparing a statement (its 5th use): a round trip of its own, SQL on two lines
    ("2026-12-04 14:32:05.002000", "F", "90", "Parse", ' "_pg3_0" "SELECT repositories.id \nFROM repositories" 0'),
    ("2026-12-04 14:32:05.002010", "F", "4", "Sync"),
    ("2026-12-04 14:32:05.002300", "B", "4", "ParseComplete"),
    ("2026-12-04 14:32:05.002400", "B", "5", "ReadyForQuery", " T"),
    # ... then executed by name
    ("2026-12-04 14:32:05.003000", "F", "22", "Bind", ' "" "_pg3_0" 0 0 1 1'),
    ("2026-12-04 14:32:05.003010", "F", "9", "Execute", ' "" 0'),
    ("2026-12-04 14:32:05.003020", "F", "4", "Sync"),
    ("2026-12-04 14:32:05.003500", "B", "5", "ReadyForQuery", " T"),
    ("2026-12-04 14:32:05.004000", "F", "21", "Parse", ' "" "SELECT set_config(\'search_path\', $1, true)" 1 NNNN'),
    ("2026-12-04 14:32:05.004010", "F", "22", "Bind", ' "" "" 1 0 1 11 \'"t_b000001"\' 1 0'),
    ("2026-12-04 14:32:05.004020", "F", "4", "Sync"),
    ("2026-12-04 14:32:05.004200", "B", "5", "ReadyForQuery", " T"),
    ("2026-12-04 14:32:05.005000", "F", "11", "Query", ' "COMMIT"'),
    ("2026-12-04 14:32:05.005400", "B", "5", "ReadyForQuery", " I"),
])


def test_a_trace_becomes_named_timed_round_trips_per_transaction():
    [transaction] = parse_trace(TRACE)
    assert [name for name, _ in transaction] == [
        "BEGIN", "pool pre-ping", "prepare: SELECT repositories", "SELECT repositories",
        "binding: set_config(search_path)", "COMMIT",
    ]
    assert [round(us) for _, us in transaction] == [150, 200, 400, 500, 200, 400]


@pytest.mark.parametrize(("sql", "step"), [
    ("SELECT public.api_keys.id, public.tenants.id FROM public.api_keys JOIN public.tenants ON x",
     "API key lookup (multi: + tenant, plan, bind)"),
    ("UPDATE public.api_keys SET last_used_at=%(x)s WHERE public.api_keys.id = %(y)s",
     "touch api_keys.last_used_at"),
    ("SELECT pg_advisory_xact_lock(%(ns)s, hashtext(%(slug)s))", "quota lock (advisory)"),
    ("INSERT INTO repositories (github_repo_id) VALUES (%(g)s) ON CONFLICT DO NOTHING", "INSERT repositories"),
    ("INSERT INTO audit_events (action) VALUES (%(a)s) RETURNING audit_events.id", "INSERT audit_events"),
])
def test_the_request_path_statements_are_named(sql, step):
    assert step_of(sql) == step
