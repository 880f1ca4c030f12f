"""The agent model: one duty cycle per stage, composable into one process.

Modelled on Agrona's ``Agent`` and ``CompositeAgent``.  An agent does a bounded amount of
work per ``do_work`` call and returns how much (0 when it found nothing), so that a runner
can hand the count to an idle strategy.  Which agents share a process is configuration:
the same agents run one per pinned process, or composed into one.

Agents started in their own process are pickled into the child, so acquire shared
resources (rings, sockets, counters) in ``on_start``, not in ``__init__``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ringex.ringbuffer.counters import CountersManager

__all__ = ["Agent", "AgentTermination", "CompositeAgent"]


class AgentTermination(Exception):
    """Raised from ``do_work`` to stop the runner cleanly (not counted as an error)."""


class Agent(abc.ABC):
    """Base class of every agent; only ``do_work`` is mandatory."""

    role_name: str = "agent"
    # Set by the runner before ``on_start``: where the agent registers its own counters
    # (e.g. back-pressure events).  None when the runner runs without counters.
    counters: CountersManager | None = None

    def on_counters(self, counters: CountersManager | None) -> None:
        """Called by the runner before ``on_start`` with the counters it owns."""
        self.counters = counters

    def on_start(self) -> None:
        """Acquire resources; runs in the process (and on the core) that runs the agent."""

    @abc.abstractmethod
    def do_work(self) -> int:
        """Do one bounded slice of work; return the work done (0 when idle)."""

    def on_close(self) -> None:
        """Release resources; always runs, also after ``on_start`` or ``do_work`` raised."""

    def doorbell_sources(self) -> Sequence[object]:
        """What ends this agent's park when it parks (asked at every park): the consumers it
        reads (their bells ring at each publish) and objects with a ``fileno`` that turn
        readable when it has work (its sockets). None: it parks for the park's length."""
        return ()


def _raise_collected(errors: list[BaseException], what: str) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        if all(isinstance(e, Exception) for e in errors):
            raise ExceptionGroup(what, errors)  # type: ignore[arg-type]
        raise BaseExceptionGroup(what, errors)


class CompositeAgent(Agent):
    """Several agents in one duty cycle: the work is the sum of theirs.

    Every agent gets its turn in every cycle even when an earlier one raises, so one
    failing stage cannot starve the others sharing its process; the error (an
    ``ExceptionGroup`` when several raised) is re-raised after the cycle for the runner
    to count.  ``on_close`` runs for every agent whose ``on_start`` was attempted (all of
    them when ``on_start`` never ran), even when some raise.
    """

    def __init__(self, agents: Sequence[Agent], role_name: str | None = None) -> None:
        if not agents:
            raise ValueError("a composite agent needs at least one agent")
        self.agents: tuple[Agent, ...] = tuple(agents)
        self.role_name = role_name or "[" + ",".join(a.role_name for a in self.agents) + "]"
        self._attempted: int | None = None

    def on_counters(self, counters: CountersManager | None) -> None:
        self.counters = counters
        for agent in self.agents:
            hook = getattr(agent, "on_counters", None)
            if hook is not None:
                hook(counters)

    def on_start(self) -> None:
        self._attempted = 0
        for agent in self.agents:
            self._attempted += 1
            # Stop at the first failure: the runner will close what was started and exit.
            agent.on_start()

    def do_work(self) -> int:
        work = 0
        errors: list[BaseException] | None = None
        for agent in self.agents:
            try:
                work += agent.do_work()
            except Exception as e:  # noqa: BLE001 - collected and re-raised below
                if errors is None:
                    errors = []
                errors.append(e)
        if errors is not None:
            _raise_collected(errors, f"{self.role_name}: do_work failed")
        return work

    def doorbell_sources(self) -> Sequence[object]:
        found: list[object] = []
        for agent in self.agents:
            found.extend(agent.doorbell_sources())
        return found

    def on_close(self) -> None:
        count = len(self.agents) if self._attempted is None else self._attempted
        errors: list[BaseException] = []
        for agent in self.agents[:count]:
            try:
                agent.on_close()
            except BaseException as e:  # noqa: BLE001 - every agent must get its on_close
                errors.append(e)
        self._attempted = 0  # a second close closes nothing twice
        _raise_collected(errors, f"{self.role_name}: on_close failed")
