"""One ``[[process]]`` table: an OS process, the agents it runs, its CPUs and idle strategy.

The one schema for a process of a deployment: the exchange configuration
(``ringex.tools.config``, whose processes the launcher starts as agent runners) and the
topology that ``ringex tune check`` judges (``ringex.tuning.topology``) both read their
``[[process]]`` tables into :class:`ProcessSpec`. In TOML::

    [[process]]
    name   = "core"
    agents = ["sequencer", "engine"]  # from AGENT_NAMES
    cpus   = [2]                      # CPU affinity; [] or left out = not pinned
    idle   = "busy-spin"              # an IdleName; backoff when left out

The agents listed in one process are composed onto that process's one thread, so a
busy-spin process is one spinning thread however many agents it runs. An agent is named
from :data:`AGENT_NAMES`, the pipeline stages the launcher knows how to build; any other
name is an error when the table is read. Whether every agent is placed, and placed once,
is a property of the whole table list, judged by its reader.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec

from ringex.ringbuffer.idle import IdleName

__all__ = ["AGENT_NAMES", "AgentName", "Cpu", "ProcessSpec", "composed"]

#: The agents a process may run: the sequencer and the journaling engine agent
#: (``ringex.engine.pipeline``), built by the launcher.
AgentName = Literal["sequencer", "engine"]
AGENT_NAMES: tuple[AgentName, ...] = get_args(AgentName)

Cpu = Annotated[int, msgspec.Meta(ge=0)]


class ProcessSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One OS process: its agents share one thread and one idle strategy."""

    name: str
    cpus: list[Cpu] = msgspec.field(default_factory=list)
    agents: list[AgentName] = msgspec.field(default_factory=list)
    idle: IdleName = "backoff"

    @property
    def busy_spin(self) -> bool:
        return self.idle == "busy-spin"


def composed() -> list[ProcessSpec]:
    """What a configuration without ``[[process]]`` tables runs: one process composing every
    agent, backoff idle, not pinned (fit for a 2-core host)."""
    return [ProcessSpec(name="core", agents=list(AGENT_NAMES))]
