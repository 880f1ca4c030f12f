"""The process topology that ``ringex tune check`` judges: which process runs which agents,
pinned to which CPUs, with which idle strategy.

This is deliberately small; the launcher's configuration is meant to produce the same
structure. In TOML::

    # the NUMA node whose memory holds the rings (/dev/shm pages); omit if unknown
    rings_numa_node = 0

    [[process]]
    name   = "sequencer"
    cpus   = [2]                 # CPU affinity; [] = not pinned
    agents = ["fix-gw", "sequencer"]
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
from typing import Annotated, Literal

import msgspec

__all__ = ["IdleName", "ProcessSpec", "Topology", "TopologyError", "load_topology", "parse_topology"]

IdleName = Literal["busy-spin", "yield", "backoff", "sleep"]
Cpu = Annotated[int, msgspec.Meta(ge=0)]


class ProcessSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One OS process: its agents share one thread and one idle strategy."""

    name: str
    cpus: list[Cpu] = msgspec.field(default_factory=list)
    agents: list[str] = msgspec.field(default_factory=list)
    idle: IdleName = "backoff"

    @property
    def busy_spin(self) -> bool:
        return self.idle == "busy-spin"


class Topology(msgspec.Struct, forbid_unknown_fields=True):
    """The processes of one deployment. In TOML the process list is the ``[[process]]`` array."""

    processes: list[ProcessSpec] = msgspec.field(default_factory=list, name="process")
    rings_numa_node: Annotated[int, msgspec.Meta(ge=0)] | None = None


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
        return msgspec.convert(data, Topology)
    except msgspec.ValidationError as exc:
        raise TopologyError(f"not a valid topology: {exc}") from None


def load_topology(path: str | Path) -> Topology:
    """Load a topology TOML file; raises :class:`TopologyError` with a readable message."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return parse_topology(text)
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None
