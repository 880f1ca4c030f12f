"""Whether a process is alive, and whether a ring's consumer is alive, slow, dead or absent.

One rule for processes, used wherever ringex asks "is pid N still running?" (stale rings,
role claims, consumer health, the supervisor, ``ringex stat``, snapshot temporaries):
:func:`pid_alive` is false for a pid with no process, for a zombie (it has exited and
only waits for its parent to reap it), and, when the caller knows a time the original
process had already started by (``started_before_ns``), for a process that started clearly
after that time: the pid has been reused.  A process we may not inspect counts as alive.

Consumers: a :class:`~ringex.ringbuffer.consumer.Consumer` stamps a heartbeat
(``time.monotonic_ns()``, the same clock on every process of the host) in its own cell of
the ring on every read and commit, and writes its pid into its pid cell while it holds the
index.  :func:`read_consumer_info` reads those cells and :func:`consumer_state` tells a
dead consumer from a slow one.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import psutil

from . import descriptor as d

__all__ = ["ConsumerInfo", "ConsumerState", "consumer_state", "pid_alive", "read_consumer_info"]

#: Slack when comparing a process's start time with ``started_before_ns``: Linux gives
#: psutil the boot time to the second and the start time to the clock tick.
_PID_REUSE_SLACK_NS = 2_000_000_000


def pid_alive(pid: int, started_before_ns: int = 0) -> bool:
    """Whether ``pid`` is a live (not zombie) process.

    With ``started_before_ns`` (a ``time.time_ns()`` value by which the process we mean had
    started), a process that started clearly after it is a reuse of the pid, hence the
    original is dead.
    """
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_before_ns and proc.create_time() * 1e9 > started_before_ns + _PID_REUSE_SLACK_NS:
            return False
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


class ConsumerState(enum.Enum):
    ALIVE = "alive"  # heartbeat fresh, keeping up
    SLOW = "slow"  # heartbeat fresh (or cursor moving) but lagging by slow_lag or more
    DEAD = "dead"  # pid gone, or heartbeat stale and cursor not moving
    ABSENT = "absent"  # no process has attached as this consumer (or it detached cleanly)
    UNTETHERED = "untethered"  # taken out of the producer's gating (Ring.untether)


@dataclass(frozen=True)
class ConsumerInfo:
    index: int
    pid: int
    pid_alive: bool
    cursor: int
    lag: int  # producer cursor - consumer cursor
    heartbeat_ns: int  # time.monotonic_ns() of its last read/commit/heartbeat; 0 = never
    heartbeat_age_ns: int


def read_consumer_info(q: memoryview, index: int) -> ConsumerInfo:
    """Consumer ``index``'s cells, from a ring's int64 view (the index is not checked)."""
    producer = q[d.word(d.PRODUCER_CURSOR_OFFSET)]
    cursor = q[d.word(d.consumer_cursor_offset(index))]
    heartbeat = q[d.word(d.consumer_heartbeat_offset(index))]
    pid = q[d.word(d.consumer_pid_offset(index))]
    now = time.monotonic_ns()
    return ConsumerInfo(
        index=index,
        pid=pid,
        pid_alive=pid_alive(pid),
        cursor=cursor,
        lag=producer - cursor,
        heartbeat_ns=heartbeat,
        heartbeat_age_ns=now - heartbeat if heartbeat else -1,
    )


def consumer_state(info: ConsumerInfo, previous_cursor: int | None, stale_after_ns: int,
                   slow_lag: int) -> ConsumerState:
    """Tell a dead consumer from a slow one.

    ``previous_cursor`` is the cursor the same observer saw last time (``None`` the first
    time).

    * ABSENT: nobody has attached as this consumer (or it closed cleanly);
    * DEAD: its pid is gone (or a zombie), or its heartbeat is older than
      ``stale_after_ns`` and its cursor has not moved since ``previous_cursor`` (a consumer
      stamps its heartbeat on every read and commit, so a stale heartbeat seen for the
      first time means it has not polled since);
    * SLOW: heartbeat fresh but lagging the producer by ``slow_lag`` or more, or heartbeat
      stale while the cursor still moves;
    * ALIVE: otherwise;
    * UNTETHERED, before any of those: its cursor gates nothing (``Ring.untether``), whatever
      became of its process.
    """
    if info.cursor == d.UNTETHERED:
        return ConsumerState.UNTETHERED
    if info.pid == 0:
        return ConsumerState.ABSENT
    if not info.pid_alive:
        return ConsumerState.DEAD
    if info.heartbeat_ns == 0 or info.heartbeat_age_ns > stale_after_ns:
        moved = previous_cursor is not None and previous_cursor != info.cursor
        return ConsumerState.SLOW if moved else ConsumerState.DEAD
    return ConsumerState.SLOW if info.lag >= slow_lag else ConsumerState.ALIVE
