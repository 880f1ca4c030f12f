"""A session's message-rate throttle: a token bucket in integer nanoseconds.

``rate`` tokens a second refill a bucket of ``burst`` tokens; each order-entry message takes
one, and a message that finds the bucket empty is refused (the gateway answers it with reason
``Throttled``; it is never sequenced). A rate of 0 is no throttle. Integer arithmetic in
token-nanoseconds keeps a long run exact: no float drift lets a client creep above its rate.
The clock is the gateway's monotonic one (the gateway is not the deterministic part).

The bucket is four int64 words (``words``), so that the gateway's compiled order path
(``inbound.take_orders``) takes tokens from the same bucket as this class does.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEVEL", "AT", "RATE", "CAP", "NS", "Throttle"]

NS = 1_000_000_000  # token-nanoseconds in one token
LEVEL, AT, RATE, CAP = range(4)  # the words: tokens held (token-ns), last refill, rate, bucket size (token-ns)


class Throttle:
    def __init__(self, rate: int, burst: int, now_ns: int) -> None:
        if rate < 0 or burst < 0 or (rate and not burst):
            raise ValueError(f"a throttle needs rate >= 0 and, when rate > 0, burst > 0 (got {rate}, {burst})")
        self.words = np.array([burst * NS, now_ns, rate, burst * NS], np.int64)

    @property
    def rate(self) -> int:
        return int(self.words[RATE])

    def take(self, now_ns: int) -> bool:
        """One message: True if the bucket had a token for it."""
        w = self.words
        if not w[RATE]:
            return True
        if now_ns > w[AT]:
            # a bounded wait: a day idle at a high rate would overflow int64 token-ns
            elapsed = min(now_ns - w[AT], w[CAP] // w[RATE] + 1)
            w[LEVEL] = min(w[CAP], w[LEVEL] + elapsed * w[RATE])
            w[AT] = now_ns
        if w[LEVEL] >= NS:
            w[LEVEL] -= NS
            return True
        return False
