"""The exchange's control block: a few int64 cells in shared memory.

The supervisor owns it; agents in other processes attach to read (the sequencer checks
``accepting`` once per duty cycle) and the supervisor writes. One aligned 8-byte store per
cell, as for ring cursors.

Layout (every field little-endian int64)::

    0   magic            b"RGXCTRL\\0"
    8   version
    16  creator pid
    24  accepting        1 while the whole pipeline is up; 0 makes the sequencer reject orders
    32  reason           why not accepting (a REASON_* code)
    40  culprit pid      the process whose death or silence stopped acceptance
"""

from __future__ import annotations

import mmap
import os

import posix_ipc

MAGIC = int.from_bytes(b"RGXCTRL\0", "little")
VERSION = 1
MAGIC_OFFSET = 0
VERSION_OFFSET = 8
CREATOR_PID_OFFSET = 16
ACCEPTING_OFFSET = 24
REASON_OFFSET = 32
CULPRIT_PID_OFFSET = 40
LENGTH = 64

REASON_NONE = 0
REASON_PROCESS_DIED = 1
REASON_HEARTBEAT_LOST = 2
REASON_SHUTTING_DOWN = 3
REASON_STARTING = 4
REASON_GIVEN_UP = 5  # a process died more often than the restart budget allows; not restarted
REASON_TEXT = {
    REASON_NONE: "accepting",
    REASON_PROCESS_DIED: "a pipeline process died",
    REASON_HEARTBEAT_LOST: "a pipeline process stopped heartbeating",
    REASON_SHUTTING_DOWN: "the exchange is shutting down",
    REASON_STARTING: "a pipeline process is starting",
    REASON_GIVEN_UP: "a pipeline process was given up (restart budget spent)",
}


class ControlError(RuntimeError):
    """The control block is missing or is not one."""


def _name(name: str) -> str:
    return name if name.startswith("/") else "/" + name


class ControlBlock:
    """Create with ``ControlBlock.create(name)`` (the supervisor) or ``attach(name)``."""

    def __init__(self, name: str, mm: mmap.mmap, owner: bool) -> None:
        self.name = name
        self._mm = mm
        self._q = memoryview(mm).cast("q")
        self._owner = owner

    @classmethod
    def create(cls, name: str) -> "ControlBlock":
        name = _name(name)
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREAT, mode=0o600, size=LENGTH)
        except posix_ipc.Error as exc:
            raise ControlError(f"control block {name!r}: cannot create: {exc}") from None
        try:
            mm = mmap.mmap(shm.fd, LENGTH)
        finally:
            shm.close_fd()
        block = cls(name, mm, owner=True)
        q = block._q
        q[VERSION_OFFSET >> 3] = VERSION
        q[CREATOR_PID_OFFSET >> 3] = os.getpid()
        q[ACCEPTING_OFFSET >> 3] = 0
        q[REASON_OFFSET >> 3] = REASON_STARTING
        q[MAGIC_OFFSET >> 3] = MAGIC
        return block

    @classmethod
    def attach(cls, name: str) -> "ControlBlock":
        name = _name(name)
        try:
            shm = posix_ipc.SharedMemory(name)
        except posix_ipc.ExistentialError:
            raise ControlError(f"control block {name!r} does not exist") from None
        try:
            if shm.size < LENGTH:
                raise ControlError(f"control block {name!r} is {shm.size} bytes, not a control block")
            mm = mmap.mmap(shm.fd, LENGTH)
        finally:
            shm.close_fd()
        block = cls(name, mm, owner=False)
        if block._q[MAGIC_OFFSET >> 3] != MAGIC or block._q[VERSION_OFFSET >> 3] != VERSION:
            block.close()
            raise ControlError(f"control block {name!r} has a bad magic or version")
        return block

    @property
    def accepting(self) -> bool:
        return self._q[ACCEPTING_OFFSET >> 3] == 1

    @property
    def reason(self) -> int:
        return self._q[REASON_OFFSET >> 3]

    @property
    def culprit_pid(self) -> int:
        return self._q[CULPRIT_PID_OFFSET >> 3]

    def accept(self) -> None:
        self._q[REASON_OFFSET >> 3] = REASON_NONE
        self._q[CULPRIT_PID_OFFSET >> 3] = 0
        self._q[ACCEPTING_OFFSET >> 3] = 1

    def refuse(self, reason: int, culprit_pid: int = 0) -> None:
        # Flag first: from this store on, the sequencer turns orders into rejections.
        self._q[ACCEPTING_OFFSET >> 3] = 0
        self._q[REASON_OFFSET >> 3] = reason
        self._q[CULPRIT_PID_OFFSET >> 3] = culprit_pid

    def close(self) -> None:
        if self._mm is None:
            return
        self._q.release()
        self._mm.close()
        self._mm = None
        if self._owner:
            try:
                posix_ipc.unlink_shared_memory(self.name)
            except posix_ipc.ExistentialError:
                pass
