"""The supervisor's two judgements of time, kept apart from processes so they can be tested
with a fake clock.

``RestartBudget``: how often a process may be restarted. A lifetime count would keep a
venue down after a few transient crashes spread over a month; no limit would let a process
that dies on every start spin forever. So the budget is a rate: at most ``max_restarts``
restarts of one process within any ``window_s`` seconds (a sliding window).

``StartDeadline``: how long a starting process may take before the supervisor calls it
hung. Compiling the matching engine (minutes on a cold numba cache) is not hanging, so the
time a process reports compiling does not count against ``ready_s``; it has its own, much
larger, bound.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

Clock = Callable[[], float]

# A compile that takes longer than this is not a slow host any more (about 3 minutes on an
# idle 2-core host, README): the supervisor stops waiting for it.
COMPILE_LIMIT_S = 3600.0


class RestartBudget:
    """At most ``max_restarts`` restarts within any ``window_s`` seconds."""

    def __init__(self, max_restarts: int, window_s: float, clock: Clock = time.monotonic) -> None:
        if max_restarts < 0 or window_s <= 0:
            raise ValueError(f"need max_restarts >= 0 and window_s > 0, got {max_restarts}, {window_s}")
        self.max_restarts = max_restarts
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()

    def in_window(self) -> int:
        """Restarts within the last ``window_s`` seconds."""
        self._expire(self._clock())
        return len(self._times)

    def try_restart(self) -> bool:
        """Take one restart from the budget: True (and counted) if the window has room."""
        now = self._clock()
        self._expire(now)
        if len(self._times) >= self.max_restarts:
            return False
        self._times.append(now)
        return True


class StartDeadline:
    """Whether a process still starting has taken too long; time spent compiling is apart.

    Call ``check(compiling)`` at each look at the process, with whether it reports
    compiling the engine right now; the compile time is summed between looks."""

    def __init__(self, ready_s: float, compile_limit_s: float = COMPILE_LIMIT_S,
                 clock: Clock = time.monotonic) -> None:
        self.ready_s = ready_s
        self.compile_limit_s = compile_limit_s
        self._clock = clock
        self._started = clock()
        self._compile_s = 0.0
        self._compile_since: float | None = None

    def _observe(self, compiling: bool, now: float) -> None:
        if compiling and self._compile_since is None:
            self._compile_since = now
        elif not compiling and self._compile_since is not None:
            self._compile_s += now - self._compile_since
            self._compile_since = None

    def compiling_s(self) -> float:
        """Seconds of compiling seen so far (up to the last ``check``)."""
        extra = 0.0 if self._compile_since is None else self._clock() - self._compile_since
        return self._compile_s + extra

    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def check(self, compiling: bool) -> str | None:
        """None while the process is within its time; otherwise why it is not."""
        now = self._clock()
        self._observe(compiling, now)
        compile_s = self.compiling_s()
        if compile_s > self.compile_limit_s:
            return f"still compiling the matching engine after {compile_s:.0f} s"
        other = now - self._started - compile_s
        if other > self.ready_s:
            spent = f" (besides {compile_s:.0f} s compiling)" if compile_s >= 1 else ""
            return f"did not start within {self.ready_s:.0f} s{spent}"
        return None
