"""app.tenancy.pipeline: one message or pipelined, the same results and the same failure."""

from __future__ import annotations

import psycopg
import pytest

from app.tenancy import pipeline


@pytest.fixture
def conn(tenantry_database_url):
    with psycopg.connect(tenantry_database_url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-message", "pipelined"])
def test_rows_come_back_by_index_and_percent_signs_stay(conn, pipelined):
    statements = ["BEGIN", "CREATE TEMP TABLE p (v text) ON COMMIT DROP", "INSERT INTO p VALUES ('50%')",
                  "SELECT v, 1 FROM p", "SELECT 2", "COMMIT"]
    rows = pipeline.execute(conn, statements, rows=(0, 3, -2), pipelined=pipelined)
    assert rows == {0: None, 3: ("50%", 1), -2: (2,)}
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-message", "pipelined"])
def test_an_error_skips_the_rest_commit_included_and_is_raised(conn, pipelined):
    conn.execute("CREATE TEMP TABLE q (v int)")
    statements = ["BEGIN", "INSERT INTO q VALUES (1)", "SELECT 1 / 0", "INSERT INTO q VALUES (2)", "COMMIT"]
    with pytest.raises(psycopg.errors.DivisionByZero):
        pipeline.execute(conn, statements, pipelined=pipelined)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM q").fetchone() == (0,)
