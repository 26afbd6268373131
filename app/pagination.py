"""Keyset pagination: opaque cursors over a unique, ordered key.

Keyset (``WHERE id > :after ORDER BY id LIMIT n``) rather than OFFSET: stable while
rows are inserted, and as fast on page 1,000 as on page 1.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

T = TypeVar("T")


class InvalidCursor(ValueError):
    """A pagination cursor that this API did not issue."""

    field_errors = {"cursor": ["Invalid cursor."]}

    def __init__(self) -> None:
        super().__init__("Invalid cursor.")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(key: str | int) -> str:
    return base64.urlsafe_b64encode(f"{type(key).__name__}:{key}".encode()).decode().rstrip("=")


@overload
def decode_cursor(cursor: str | None, kind: type[int]) -> int | None: ...
@overload
def decode_cursor(cursor: str | None, kind: type[str]) -> str | None: ...
def decode_cursor(cursor: str | None, kind: type[int] | type[str]) -> int | str | None:
    """The key a cursor stands for, or None; :class:`InvalidCursor` if it was not ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        name, _, value = raw.partition(":")
        if name != kind.__name__ or not value or "\x00" in value:  # keys are PostgreSQL text: never NUL
            raise ValueError(raw)
        if kind is int:
            key = int(value)
            if not -(2**63) <= key < 2**63:  # keys are bigint: anything else was forged
                raise ValueError(raw)
            return key
        return value
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor() from None


def make_page(rows: Sequence[T], limit: int, key_of: Callable[[T], str | int]) -> Page[T]:
    """Build a page from ``limit + 1`` fetched rows: the extra row says there is more."""
    if len(rows) > limit:
        items = rows[:limit]
        return Page(items=items, next_cursor=encode_cursor(key_of(items[-1])))
    return Page(items=rows, next_cursor=None)


def every_item(fetch: Callable[[str | None], Page[T]]) -> list[T]:
    """Every item, page after page: ``fetch(cursor)`` returns one page (CLI listings)."""
    items: list[T] = []
    cursor = None
    while True:
        page = fetch(cursor)
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor
