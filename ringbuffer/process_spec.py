"""One ``[[process]]`` table: an OS process, the agents it runs, its CPUs and idle strategy.

The one schema for a process of a deployment: the exchange configuration
(``ringex.tools.config``, whose processes the launcher starts as agent runners) and the
topology that ``ringex tune check`` judges (``ringex.tuning.topology``) both read their
``[[process]]`` tables into :class:`ProcessSpec`. In TOML::

    [[process]]
    name   = "core"
    agents = ["sequencer", "engine"]  # AGENT_NAMES, or a configured gateway's name
    cpus   = [2]                      # CPU affinity; [] or left out = not pinned
    idle   = "busy-spin"              # an IdleName; backoff when left out

The agents listed in one process are composed onto that process's one thread, so a
busy-spin process is one spinning thread however many agents it runs. An agent is one of
:data:`AGENT_NAMES`, the pipeline stages, or a gateway the configuration defines
(``[[gateway]] name``); which names exist, whether every agent is placed, and placed once,
are properties of the whole configuration, judged by its reader.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec

from ringex.ringbuffer.idle import IdleName

__all__ = ["AGENT_NAMES", "AgentLabel", "AgentName", "Cpu", "ProcessSpec", "composed"]

#: The pipeline stages every exchange runs: the sequencer and the journaling engine agent
#: (``ringex.engine.pipeline``), built by the launcher. Gateways are agents too, named by
#: their configuration.
AgentName = Literal["sequencer", "engine"]
AGENT_NAMES: tuple[AgentName, ...] = get_args(AgentName)

Cpu = Annotated[int, msgspec.Meta(ge=0)]
AgentLabel = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")]


class ProcessSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One OS process: its agents share one thread and one idle strategy."""

    name: str
    cpus: list[Cpu] = msgspec.field(default_factory=list)
    agents: list[AgentLabel] = msgspec.field(default_factory=list)
    idle: IdleName = "backoff"

    @property
    def busy_spin(self) -> bool:
        return self.idle == "busy-spin"


def composed(gateways: tuple[str, ...] | list[str] = ()) -> list[ProcessSpec]:
    """What a configuration without ``[[process]]`` tables runs: one process composing the
    pipeline's agents, and one composing the ``gateways`` when there are any, backoff idle,
    not pinned (fit for a 2-core host)."""
    out = [ProcessSpec(name="core", agents=list(AGENT_NAMES))]
    if gateways:
        out.append(ProcessSpec(name="gateways", agents=list(gateways)))
    return out
