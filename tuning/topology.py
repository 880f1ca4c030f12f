"""The process topology that ``ringex tune check`` judges: which process runs which agents,
pinned to which CPUs, with which idle strategy.

Its processes are the exchange configuration's own ``[[process]]`` tables
(:class:`ringex.ringbuffer.process_spec.ProcessSpec`), so a topology file can be judged
before it is run, and an exchange configuration can be judged as it is
(:func:`load_config_topology`). A topology file adds where the rings live. In TOML::

    # the NUMA node whose memory holds the rings (/dev/shm pages); omit if unknown
    rings_numa_node = 0

    [[process]]
    name   = "sequencer"
    cpus   = [2]                 # CPU affinity; [] = not pinned
    agents = ["sequencer"]       # sequencer | engine | a [[gateway]] name
    idle   = "busy-spin"         # busy-spin | yield | backoff | sleep

    [[process]]
    name   = "engine"
    cpus   = [3]
    agents = ["engine"]
    idle   = "busy-spin"

Agents listed in one process are composed onto that process's one thread, so a busy-spin
process is one spinning thread, whatever the number of its agents.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import msgspec

from ringex.ringbuffer.process_spec import AGENT_NAMES, ProcessSpec, composed

__all__ = ["Topology", "TopologyError", "load_config_topology", "load_topology", "parse_topology"]


class GatewayName(msgspec.Struct):
    """A ``[[gateway]]`` table, of which only the name (an agent name) matters here."""

    name: str


class Topology(msgspec.Struct, forbid_unknown_fields=True):
    """The processes of one deployment. In TOML the process list is the ``[[process]]`` array;
    ``[[gateway]]`` tables name the gateway agents the processes may place."""

    processes: list[ProcessSpec] = msgspec.field(default_factory=list, name="process")
    rings_numa_node: Annotated[int, msgspec.Meta(ge=0)] | None = None
    gateways: list[GatewayName] = msgspec.field(default_factory=list, name="gateway")

    def agent_names(self) -> set[str]:
        """The agents a process may name: the pipeline's and the gateways'."""
        return {*AGENT_NAMES, *(g.name for g in self.gateways)}


class TopologyError(ValueError):
    """The topology file is missing, not TOML, or not a valid topology."""


def parse_topology(data: dict | str) -> Topology:
    """Build a :class:`Topology` from TOML text or an already parsed mapping."""
    if isinstance(data, str):
        try:
            data = tomllib.loads(data)
        except tomllib.TOMLDecodeError as exc:
            raise TopologyError(f"not valid TOML: {exc}") from None
    try:
        topology = msgspec.convert(data, Topology)
    except msgspec.ValidationError as exc:
        raise TopologyError(f"not a valid topology: {exc}") from None
    known = topology.agent_names()
    for i, p in enumerate(topology.processes):
        for j, agent in enumerate(p.agents):
            if agent not in known:
                raise TopologyError(f"not a valid topology: unknown agent {agent!r} (neither a pipeline agent, "
                                    f"{', '.join(AGENT_NAMES)}, nor a [[gateway]] name) - at "
                                    f"`$.process[{i}].agents[{j}]`")
    return topology


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise TopologyError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_topology(path: str | Path) -> Topology:
    """Load a topology TOML file; raises :class:`TopologyError` with a readable message."""
    path = Path(path)
    try:
        return parse_topology(_read(path))
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None


def load_config_topology(path: str | Path) -> Topology:
    """The processes an exchange configuration (``ringex run --config``) runs: its
    ``[[process]]`` tables, or the composed default when it has none. Only those tables are
    read and checked here; the rest of the file is ``ringex run``'s to check."""
    path = Path(path)
    try:
        data = tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{path}: not valid TOML: {exc}") from None
    try:
        gateways = [{"name": g.get("name", "")} for g in data.get("gateway", []) if isinstance(g, dict)]
        topology = parse_topology({"process": data.get("process", []), "gateway": gateways})
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None
    if topology.processes:
        return topology
    return Topology(processes=composed([g.name for g in topology.gateways]), gateways=topology.gateways)
