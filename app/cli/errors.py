"""A known domain error as one line on stderr and exit status 1; anything else keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from ..tenancy.errors import TenancyError, TenantContextError


def domain_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a known TenancyError into one line on stderr and exit status 1.

    TenantContextError is a programming error, not a domain outcome: it keeps its traceback.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TenantContextError:
            raise
        except TenancyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper
