"""What a process that writes beside the engine does first: die with it, and yield to it.

Used by the forked snapshot writer (``snapshot_fork``) and the shadow engine
(``snapshot_shadow``). Both write hundreds of MB while the engine matches on a host that may
have two cores and one disk: a slower snapshot is harmless, a slower duty cycle or journal
fdatasync is not.
"""

from __future__ import annotations

import ctypes
import os

_PR_SET_PDEATHSIG = 1
_SIGKILL = 9
_SYS_IOPRIO_SET = 251  # x86-64 (the platform ringex supports: ringbuffer/platform.py)
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux), so that no orphan writes a
    snapshot under an engine that was restarted meanwhile."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: an orphan finishes its file, harmlessly
        pass


def yield_to_the_engine() -> None:
    """Lowest CPU priority and the idle I/O class: take only what the engine leaves. Not
    ``SCHED_IDLE``: beside the bench's spinning producer and consumer on 2 cores a shadow
    engine in it never caught up with a flood, and wrote no snapshot at all."""
    try:
        os.nice(19)
    except OSError:
        pass
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(_SYS_IOPRIO_SET, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT)
    except (OSError, AttributeError):
        pass
