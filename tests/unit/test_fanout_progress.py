"""What `flask tenants migrate` shows while it runs: a bar on a terminal, lines in a log."""

from __future__ import annotations

import io

from app.cli.fanout import BarProgress, LogProgress
from app.tenancy.fanout import Counts, TenantOutcome


def outcome(slug: str, status: str, error: str | None = None) -> TenantOutcome:
    return TenantOutcome(slug, 1, status, "t0001", "t0002" if status != "failed" else None, 1, 2.0, error)


def test_the_bar_shows_done_failed_left_rate_and_eta_and_prints_failures_above_it():
    stream = io.StringIO()
    progress = BarProgress(stream)
    counts = Counts(total=4)
    progress.started(7, counts)
    counts.processed, counts.migrated = 1, 1
    progress.outcome(outcome("acme", "migrated"), counts)
    counts.processed, counts.failed = 2, 1
    progress.outcome(outcome("globex", "failed", "lock timeout"), counts)
    counts.processed, counts.migrated = 4, 3
    progress.outcome(outcome("initech", "migrated"), counts)
    progress.finish()

    text = stream.getvalue()
    assert "run 7: 4 schemas to migrate" in text
    assert "FAILED globex (t0001 -> target): lock timeout\n" in text
    last = text.rstrip("\n").split("\r")[-1]
    assert "[" + "#" * 30 + "] 4/4" in last and "failed 1" in last and "left 0" in last
    assert "/s" in last and "ETA 0s" in last


def test_log_lines_have_no_terminal_codes_and_report_every_tenth():
    stream = io.StringIO()
    progress = LogProgress(stream)
    counts = Counts(total=20)
    progress.started(3, counts)
    for done in range(1, 21):
        counts.processed = counts.migrated = done
        progress.outcome(outcome(f"t{done}", "migrated"), counts)
    progress.retrying("acme", 1, 0.5, "canceling statement due to lock timeout")

    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "\033" not in stream.getvalue()
    progress_lines = [line for line in lines if line.startswith("progress:")]
    assert 10 <= len(progress_lines) <= 12  # one per 10%, not one per schema
    assert progress_lines[-1].startswith("progress: 20/20 done, 0 failed, 0 left")
    assert lines[-1] == "retrying acme in 0.5s (attempt 1 failed: canceling statement due to lock timeout)"
