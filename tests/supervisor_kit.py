"""Helpers for the supervisor tests: an agent whose start-up the test holds open, and an
exchange that wraps its engine in one.

Importable by spawned children (the gated agent is pickled into the engine's process), so
no test here.
"""

from __future__ import annotations

import time
from pathlib import Path

from ringex.engine.pipeline.warm_start import warm_up_engine
from ringex.ringbuffer.agent import Agent
from ringex.ringbuffer.counters import CountersManager
from ringex.tools.launcher import Exchange

GATE_LIMIT_S = 120.0  # a gate nobody opens fails the start rather than hanging the test


class GatedStart(Agent):
    """Runs ``inner``, but its ``on_start`` first "compiles" until the file ``gate`` exists:
    through ``warm_up_engine`` with a cold cache, so the compile is announced and flagged in
    the counters exactly as a real first start's is. The test decides when it ends, so no
    test depends on how long anything takes."""

    def __init__(self, inner: Agent, gate: str) -> None:
        self.inner = inner
        self.gate = gate
        self.role_name = inner.role_name

    def on_counters(self, counters: CountersManager | None) -> None:
        self.counters = counters
        self.inner.on_counters(counters)

    def _wait_for_gate(self) -> float:
        deadline = time.monotonic() + GATE_LIMIT_S
        while not Path(self.gate).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {self.gate} was never opened")
            time.sleep(0.02)
        return 0.0

    def on_start(self) -> None:
        warm_up_engine(self.counters, cache_warm=lambda: False, compile_engine=self._wait_for_gate)
        self.inner.on_start()

    def do_work(self) -> int:
        return self.inner.do_work()

    def on_close(self) -> None:
        self.inner.on_close()


class GatedExchange(Exchange):
    """An exchange whose engine agent, while ``gate`` is set, starts through ``GatedStart``."""

    gate: Path | None = None

    def _agent(self, name):  # type: ignore[override]
        agent = super()._agent(name)
        if name == "engine" and self.gate is not None:
            return GatedStart(agent, str(self.gate))
        return agent
