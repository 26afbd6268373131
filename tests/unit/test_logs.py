"""Log lines: credentials scrubbed whatever wrote them, fields rendered in both formats."""

from __future__ import annotations

import json
import logging

import pytest

from app.logs import ContextFilter, formatter, redact

KEY = "tnt_0123456789ab_" + "S" * 43
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.mark.parametrize("text", [
    f"key {KEY} in a message",
    f"cut short {KEY[:20]}",
    "Authorization: Bearer opaque-token.value/x=",
    f"a jwt {JWT}!",
    f"bearer {JWT}",
])
def test_credential_shapes_are_redacted(text):
    scrubbed = redact(text)
    assert "[redacted]" in scrubbed
    for secret in (KEY[:20], "opaque-token", JWT[:20]):
        assert secret not in scrubbed


def test_literal_secrets_are_redacted_and_ordinary_text_is_kept():
    assert redact("admin token hunter2-long here", ["hunter2-long"]) == "admin token [redacted] here"
    assert redact("GET /v1/repositories 200 tenant=acme key_id=4") == "GET /v1/repositories 200 tenant=acme key_id=4"


def record(msg: str, *args, **extra) -> logging.LogRecord:
    made = logging.LogRecord("app.test", logging.INFO, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    ContextFilter().filter(made)
    return made


def test_json_lines_carry_the_fields_and_no_secret():
    line = formatter("json", ['adm"in\\secret']).format(
        record("got %s and %s", KEY, 'adm"in\\secret', tenant="acme", request_id="r-1", status=200)
    )
    parsed = json.loads(line)
    assert "\n" not in line
    assert parsed["tenant"] == "acme" and parsed["request_id"] == "r-1" and parsed["status"] == 200
    assert parsed["level"] == "INFO" and parsed["logger"] == "app.test"
    assert parsed["message"] == "got [redacted] and [redacted]"


def test_a_traceback_stays_inside_its_json_line_and_is_scrubbed():
    try:
        raise ValueError(f"bad {KEY}")
    except ValueError:
        import sys

        made = logging.LogRecord("app.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = formatter("json").format(made)
    assert len(line.splitlines()) == 1
    assert KEY not in line and "ValueError" in json.loads(line)["exc_info"]


def test_console_lines_append_the_fields_that_are_set():
    line = formatter("console").format(record("GET /x 200", tenant="acme", request_id="r-2", key_id=None))
    assert line.endswith("app.test: GET /x 200 request_id=r-2 tenant=acme")


def test_outside_a_request_the_context_gives_none():
    made = record("plain")
    assert made.request_id is None and made.tenant is None
