"""A child process that does not outlive its parent.

A process of the exchange left running after its launcher is gone is worse than a dead one:
it keeps the journal locked, keeps consuming and publishing on rings nobody supervises, and
the next ``ringex run`` reclaims those rings under it. Killing the launcher with SIGKILL gives
it no chance to stop its children, so each child asks the kernel instead (Linux
``prctl(PR_SET_PDEATHSIG)``): when its parent exits, however it exits, the child receives
SIGTERM and stops as the runner stops on any SIGTERM (its agents closed, its journal
flushed). A parent that died before the request was made is caught by comparing
``getppid()`` with the pid the parent passed down.

The kernel ties the signal to the parent *thread* that started the child: children must be
started from a thread that lives as long as the launcher (its main thread does).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ParentGoneError(RuntimeError):
    """The parent exited before the child could ask to be told."""


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> bool:
    """Have ``sig`` sent to this process when its parent exits. Returns whether the
    platform does it (Linux); raises ``ParentGoneError`` if the parent is already gone."""
    supported = sys.platform.startswith("linux")
    if supported:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent_pid:
        raise ParentGoneError(f"parent process {parent_pid} exited before child {os.getpid()} started")
    return supported
