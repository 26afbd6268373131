"""When to try a shared store that failed again, and when an outage starts or ends.

The rate limiter's storage and the usage counters' Redis both keep serving from memory
while their store is away, and try it again after 1 s, then 2, 4 … at most ``longest``
seconds, so an outage costs one timeout now and then, not one per request.
"""

from __future__ import annotations

import threading
import time


class Backoff:
    """Thread-safe. :meth:`failed` and :meth:`answered` say whether this call started or
    ended an outage, so a caller logs once per outage however many threads saw it."""

    def __init__(self, longest: float = 60.0) -> None:
        self.longest = longest
        self._lock = threading.Lock()
        self._retry_at = 0.0  # monotonic time from which the store is tried again
        self._wait = 1.0  # the wait after the next failure

    @property
    def failing(self) -> bool:
        """Whether the last call to the store failed (no call has answered since)."""
        return self._wait != 1.0

    def due(self) -> bool:
        """Whether to try the store now: it is not failing, or the wait since its last failure is over."""
        return not self.failing or time.monotonic() >= self._retry_at

    def failed(self) -> tuple[bool, float]:
        """Note a failure: (whether an outage starts with it, the seconds until the store is tried again)."""
        with self._lock:
            started = not self.failing
            self._retry_at = time.monotonic() + self._wait
            waited, self._wait = self._wait, min(self._wait * 2, self.longest)
        return started, waited

    def answered(self) -> bool:
        """Note an answer: whether it ends an outage (True once, however many threads answer)."""
        if not self.failing:
            return False
        with self._lock:
            recovered, self._wait = self.failing, 1.0
        return recovered
