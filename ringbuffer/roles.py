"""Who holds a ring's producer role and each consumer index: the pid words.

A ring has one producer and ``consumers`` consumer indexes; each role has a pid cell (see
:mod:`.descriptor`) that holds the pid of the process acting in it, 0 when none.  A process
claims a role by writing its pid there (:func:`claim_role`), refused with
:class:`RingBusyError` while another live process holds it unless it takes over; it gives
the role up by clearing the cell (:func:`release_role`), so supervisors tell a consumer
that left cleanly (ABSENT) from one that died holding its index (DEAD).  The cell is a
claim, not a lock: Python cannot compare-and-swap on shared memory, so it catches a second
process started for a role by mistake, not two processes racing for it.
"""

from __future__ import annotations

import os

from .errors import RingBusyError
from .liveness import pid_alive

__all__ = ["claim_role", "release_role"]


def claim_role(q: memoryview, pid_word: int, ring_name: str, what: str, takeover: bool) -> None:
    """Write this process's pid into the role's cell ``pid_word`` of a ring's int64 view.

    ``what`` names the role in the error ("the producer role", "consumer 2").
    """
    me = os.getpid()
    holder = q[pid_word]
    if holder and holder != me and not takeover and pid_alive(holder):
        raise RingBusyError(
            f"ring {ring_name!r}: {what} is held by live process {holder}; "
            "pass takeover=True to take it anyway",
            ring_name,
        )
    q[pid_word] = me


def release_role(q: memoryview, pid_word: int) -> None:
    """Clear the role's cell if this process still holds it (a takeover may have won it)."""
    if q[pid_word] == os.getpid():
        q[pid_word] = 0
