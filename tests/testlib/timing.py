"""Time in the tests: the moments they stand at, a clock they move by hand, and polling with a
deadline instead of fixed sleeps."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

MINUTE, HOUR, DAY = 60, 3600, 86400
#: Monday 2026-11-02 00:00:00 UTC: where the storage tests' clock starts.
T0 = 1_793_577_600
#: A whole bucket edge a little in the past: the "now" of the sample database, near the real
#: present because ``popcon top --db`` without a window counts back from the real clock.
NOW = (int(time.time()) // 600) * 600


class FakeClock:
    """A clock tests move by hand: calling it gives the time, ``advance(s)`` moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(
    predicate: Callable[[], T], timeout: float = 15, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something true, within ``timeout`` seconds; returns
    that value. An ``OSError`` or ``ValueError`` counts as "not yet" (a server still starting,
    an answer half written)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError) as error:
            last = error
        else:
            if value:
                return value
            last = value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")
