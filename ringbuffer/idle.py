"""Idle strategies: what an agent does with a duty cycle that found no work.

Modelled on Agrona's IdleStrategy: the runner calls ``idle(work_count)`` after every duty
cycle; a positive count resets the strategy, zero advances it.  Busy-spinning burns a
whole core and belongs only on hosts with cores to spare; the backoff strategy (spin,
then yield, then park with growing sleeps up to a bound) is the default on small hosts.

A strategy that parks can be given a :class:`~ringex.ringbuffer.doorbell.Doorbell`
(``attach``): it then parks on the agent's bells and descriptors, woken by the next publish
or socket input instead of sleeping out the park, and so parks for its longest at once.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Literal, Protocol, get_args

if TYPE_CHECKING:
    from .doorbell import Doorbell

#: The configuration names of the strategies below (``[[process]] idle``, ``RunnerConfig``).
IdleName = Literal["busy-spin", "yield", "sleep", "backoff"]
IDLE_NAMES: tuple[IdleName, ...] = get_args(IdleName)


class IdleStrategy(Protocol):
    name: str  # an IdleName for the strategies below; a test's own strategy may name itself
    # The sleep the last ``idle`` call asked for, in ns (0: it did not sleep). The runner's
    # hiccup meter counts only what a gap between duty cycles lasts beyond it.
    parked_ns: int

    def idle(self, work_count: int) -> None: ...

    def reset(self) -> None: ...


class BusySpinIdleStrategy:
    """Never gives up the core: lowest latency, one core per agent."""

    name: IdleName = "busy-spin"
    parked_ns = 0

    def idle(self, work_count: int) -> None:
        pass

    def reset(self) -> None:
        pass


class YieldingIdleStrategy:
    """Yields the core to the scheduler when idle (``sched_yield``)."""

    name: IdleName = "yield"
    parked_ns = 0

    def idle(self, work_count: int) -> None:
        if work_count <= 0:
            os.sched_yield()

    def reset(self) -> None:
        pass


class SleepingIdleStrategy:
    """Sleeps a fixed period when idle: for agents nobody waits on."""

    name: IdleName = "sleep"

    def __init__(self, period_ns: int = 1_000_000) -> None:
        if period_ns <= 0:
            raise ValueError(f"sleep period must be positive, got {period_ns} ns")
        self._period_s = period_ns / 1e9
        self._period_ns = period_ns
        self.parked_ns = 0
        self._park = time.sleep

    def attach(self, doorbell: Doorbell) -> None:
        """Park on ``doorbell`` from now on."""
        self._park = doorbell.park

    def idle(self, work_count: int) -> None:
        if work_count <= 0:
            self.parked_ns = self._period_ns
            self._park(self._period_s)
        else:
            self.parked_ns = 0

    def reset(self) -> None:
        pass


class BackoffIdleStrategy:
    """Spin, then yield, then park with sleeps that double up to ``max_park_ns``.

    The spin phase keeps latency low right after a burst; the park phase is what lets
    several agents share a 2-core host without starving each other.
    """

    name: IdleName = "backoff"

    def __init__(
        self,
        max_spins: int = 100,
        max_yields: int = 50,
        min_park_ns: int = 1_000,
        max_park_ns: int = 1_000_000,
    ) -> None:
        if max_spins < 0 or max_yields < 0:
            raise ValueError("spin and yield counts must not be negative")
        if not 0 < min_park_ns <= max_park_ns:
            raise ValueError(
                f"need 0 < min_park_ns <= max_park_ns, got {min_park_ns} and {max_park_ns}"
            )
        self.max_spins = max_spins
        self.max_yields = max_yields
        self.min_park_ns = min_park_ns
        self.max_park_ns = max_park_ns
        self._doorbell: Doorbell | None = None
        self.reset()

    def attach(self, doorbell: Doorbell) -> None:
        """Park on ``doorbell`` from now on: at once when idle, each park the longest (a bell
        cuts it short)."""
        self._doorbell = doorbell
        # A duty cycle that spins costs what a park does, and a bell ends the park as soon
        # as there is work: so park at once (on 2 cores a spinning agent starves the others).
        self.max_spins = 0
        self.max_yields = 0
        self.reset()

    def reset(self) -> None:
        self._spins = 0
        self._yields = 0
        self._park_ns = self.max_park_ns if self._doorbell is not None else self.min_park_ns
        self.parked_ns = 0

    def idle(self, work_count: int) -> None:
        if work_count > 0:
            if self._spins or self._yields or self.parked_ns:
                self.reset()
            return
        if self._spins < self.max_spins:
            self._spins += 1
        elif self._yields < self.max_yields:
            self._yields += 1
            os.sched_yield()
        else:
            self.parked_ns = park = self._park_ns
            if self._doorbell is not None:
                self._doorbell.park(park / 1e9)
                return
            time.sleep(park / 1e9)
            self._park_ns = min(park * 2, self.max_park_ns)

    @property
    def park_ns(self) -> int:
        """The sleep the next park will take (for tests and ``ringex stat``)."""
        return self._park_ns


_BY_NAME: dict[str, type[IdleStrategy]] = {
    cls.name: cls
    for cls in (BusySpinIdleStrategy, YieldingIdleStrategy, SleepingIdleStrategy, BackoffIdleStrategy)
}


def idle_strategy(spec: str) -> IdleStrategy:
    """Build an idle strategy from its configuration name, one of :data:`IDLE_NAMES`."""
    try:
        return _BY_NAME[spec]()
    except KeyError:
        raise ValueError(
            f"unknown idle strategy {spec!r}; expected one of {', '.join(sorted(IDLE_NAMES))}"
        ) from None
