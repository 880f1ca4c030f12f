"""A session's message-rate throttle: a token bucket in integer nanoseconds.

``rate`` tokens a second refill a bucket of ``burst`` tokens; each order-entry message takes
one, and a message that finds the bucket empty is refused (the gateway answers it with reason
``Throttled``; it is never sequenced). A rate of 0 is no throttle. Integer arithmetic in
token-nanoseconds keeps a long run exact: no float drift lets a client creep above its rate.
The clock is the gateway's (wall time is fine here: the gateway is not the deterministic part).
"""

from __future__ import annotations

__all__ = ["Throttle"]

_NS = 1_000_000_000


class Throttle:
    def __init__(self, rate: int, burst: int, now_ns: int) -> None:
        if rate < 0 or burst < 0 or (rate and not burst):
            raise ValueError(f"a throttle needs rate >= 0 and, when rate > 0, burst > 0 (got {rate}, {burst})")
        self.rate = rate
        self._cap = burst * _NS  # in token-nanoseconds: one token is _NS of them
        self._level = self._cap
        self._at = now_ns
        self.refused = 0

    def take(self, now_ns: int) -> bool:
        """One message: True if the bucket had a token for it."""
        if not self.rate:
            return True
        if now_ns > self._at:
            self._level = min(self._cap, self._level + (now_ns - self._at) * self.rate)
            self._at = now_ns
        if self._level >= _NS:
            self._level -= _NS
            return True
        self.refused += 1
        return False
