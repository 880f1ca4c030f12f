"""Agents and helpers shared by the agent, counters and stat tests (no tests here).

Spawned children unpickle these classes by module name, so they live in an importable
module rather than inside a test function.  None of them busy-spins: they idle through
SleepingIdleStrategy or sleep inside do_work.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ringex.ringbuffer.agent import Agent, AgentTermination
from ringex.ringbuffer.counters import counters_name, unlink_counters
from ringex.ringbuffer.idle import SleepingIdleStrategy

WAIT_S = 15.0  # upper bound on any wait; failures should come much sooner


def unique_name(tag: str) -> str:
    """A counters object name no concurrent test run can collide with."""
    return counters_name(f"t-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def sleeping(ms: float = 1.0) -> SleepingIdleStrategy:
    return SleepingIdleStrategy(period_ns=int(ms * 1_000_000))


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT_S, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)


def cleanup_shm(*names: str | None) -> None:
    for name in names:
        if name:
            unlink_counters(name)


class FileAgent(Agent):
    """Logs each duty cycle to a file as 'begin N' ... 'end N', and 'closed' in on_close.

    ``work_sleep`` makes a duty cycle long enough for a signal to land inside it;
    ``hold_until`` (a path) holds every cycle open until that file exists, so a test knows
    which cycle a signal landed in without counting on how long a sleep lasts.
    ``fail_when`` (a path) makes do_work raise once that file exists; ``fail_every``
    makes every n-th cycle raise.  ``max_cycles`` bounds the agent whatever happens.
    """

    def __init__(
        self,
        path: str | Path,
        role_name: str = "file-agent",
        work_sleep: float = 0.0,
        fail_when: str | Path | None = None,
        fail_every: int = 0,
        max_cycles: int = 1_000_000,
        hold_until: str | Path | None = None,
    ) -> None:
        self.path = str(path)
        self.hold_until = None if hold_until is None else str(hold_until)
        self.role_name = role_name
        self.work_sleep = work_sleep
        self.fail_when = None if fail_when is None else str(fail_when)
        self.fail_every = fail_every
        self.max_cycles = max_cycles
        self.cycle = 0
        self._f = None

    def _log(self, line: str) -> None:
        assert self._f is not None
        self._f.write(line + "\n")
        self._f.flush()

    def on_start(self) -> None:
        self._f = open(self.path, "a", encoding="utf-8")
        self._log(f"started {os.getpid()}")

    def do_work(self) -> int:
        self.cycle += 1
        if self.cycle > self.max_cycles:
            raise AgentTermination()
        if self.work_sleep or self.hold_until:
            self._log(f"begin {self.cycle}")
            time.sleep(self.work_sleep)
            deadline = time.monotonic() + WAIT_S
            while self.hold_until and not os.path.exists(self.hold_until) and time.monotonic() < deadline:
                time.sleep(0.005)
            self._log(f"end {self.cycle}")
        if self.fail_when is not None and os.path.exists(self.fail_when):
            raise RuntimeError(f"{self.role_name}: told to fail")
        if self.fail_every and self.cycle % self.fail_every == 0:
            raise RuntimeError(f"{self.role_name}: cycle {self.cycle} fails")
        return 1 if self.cycle % 4 == 0 else 0

    def on_close(self) -> None:
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")
        self._log("closed")
        self._f.close()
        self._f = None


class CountingAgent(Agent):
    """Registers its own counter in on_start (as ring agents do for back-pressure)."""

    def __init__(self, role_name: str = "counting", max_cycles: int = 1_000_000) -> None:
        self.role_name = role_name
        self.max_cycles = max_cycles
        self.cycle = 0
        self.events = None

    def on_start(self) -> None:
        assert self.counters is not None, "runner must hand counters over before on_start"
        self.events = self.counters.allocate(f"{self.role_name}: events")

    def do_work(self) -> int:
        self.cycle += 1
        if self.cycle > self.max_cycles:
            raise AgentTermination()
        if self.cycle % 2 == 0:
            self.events.increment()
            return 1
        return 0


def read_lines(path: str | Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
