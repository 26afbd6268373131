"""Cursors are opaque, round-trip, and refuse what the API did not issue."""

import pytest

from app.pagination import InvalidCursor, decode_cursor, encode_cursor, make_page


@pytest.mark.parametrize("key", [1, 987654321, "acme", "a_b"])
def test_cursor_round_trip(key):
    assert decode_cursor(encode_cursor(key), type(key)) == key


@pytest.mark.parametrize("cursor", ["", "!!!", "aW50Og", encode_cursor("acme"), "bm9wZQ"])
def test_foreign_cursors_are_refused(cursor):
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, int)


def test_a_page_has_a_cursor_only_when_more_rows_exist():
    assert make_page([1, 2, 3], 3, lambda x: x).next_cursor is None
    page = make_page([1, 2, 3, 4], 3, lambda x: x)
    assert list(page.items) == [1, 2, 3] and decode_cursor(page.next_cursor, int) == 3
