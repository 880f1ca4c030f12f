"""The one process-liveness rule (ringbuffer.liveness.pid_alive): zombies and reused pids
are dead, a process we may not inspect is alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from ringex.ringbuffer.liveness import pid_alive
from test_ring_support import wait_until


def test_a_running_process_is_alive():
    assert pid_alive(os.getpid())
    assert pid_alive(os.getpid(), started_before_ns=time.time_ns())


def test_no_process_is_dead():
    assert not pid_alive(0)
    assert not pid_alive(-1)
    assert not pid_alive(2**22 + 12345)  # beyond pid_max: never a process


def test_a_zombie_is_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Not reaped yet: the pid still names a process, a zombie.
        wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 30,
                   "the child to exit")
        assert psutil.pid_exists(child.pid)
        assert not pid_alive(child.pid)
    finally:
        child.kill()
        child.wait(timeout=30)


def test_a_pid_reused_by_a_younger_process_is_dead():
    started_ns = int(psutil.Process().create_time() * 1e9)
    # This process started a minute after the one we meant had started: a reuse of its pid.
    assert not pid_alive(os.getpid(), started_before_ns=started_ns - 60_000_000_000)
    # Started before (or at) the time we know: the same process.
    assert pid_alive(os.getpid(), started_before_ns=started_ns)
    # No start time known: the pid alone decides.
    assert pid_alive(os.getpid(), started_before_ns=0)
