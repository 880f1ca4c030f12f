"""Reclaiming a ring's name from a stale ring: one whose creator process is gone.

A ring outlives a creator that crashed (nobody unlinked it).  Creating a ring under a name
that is taken asks :func:`make_way`: a live ring's name, or an object that is not a ringex
ring, is never touched (:class:`RingExistsError`); a stale ring is unlinked only when the
caller said ``reclaim=True``, and otherwise refused with :class:`StaleRingError` naming the
dead creator.  The creator's liveness is judged by :func:`.liveness.pid_alive` with the
ring's creation time, so a pid reused since does not keep a stale ring alive.
"""

from __future__ import annotations

from . import descriptor as d
from .errors import RingError, RingExistsError, RingNotFoundError, StaleRingError
from .header import read_header
from .liveness import pid_alive
from .mapping import SharedMapping, unlink_ring

__all__ = ["make_way"]


def make_way(name: str, *, reclaim: bool) -> None:
    """Called when creating ring ``name`` (canonical) found the name taken: returns after
    unlinking a stale ring when ``reclaim`` (the caller then creates it again), and raises
    :class:`StaleRingError` or :class:`RingExistsError` otherwise."""
    problem = _existing_problem(name)
    if problem is None:
        raise RingExistsError(f"ring {name!r} already exists and is in use", name)
    kind, message, pid = problem
    if kind == "stale" and reclaim:
        unlink_ring(name)
        return
    if kind == "stale":
        raise StaleRingError(
            f"ring {name!r} already exists but is stale: {message}; "
            "pass reclaim=True to unlink and recreate it",
            name,
            pid,
        )
    raise RingExistsError(f"ring {name!r} cannot be created: {message}", name)


def _existing_problem(name: str) -> tuple[str, str, int] | None:
    """Why an existing object blocks creation: None (a live ring) or (kind, message, pid)."""
    try:
        mapping = SharedMapping.open(name, read_only=True)
    except RingNotFoundError:
        return ("gone", "it vanished while being inspected; retry", 0)
    except RingError as exc:
        return ("foreign", str(exc), 0)
    try:
        h = read_header(mapping.q)
    finally:
        mapping.close()
    if h["magic"] != d.MAGIC:
        return ("foreign", f"the object is not a ringex ring (magic {h['magic']:#x})", 0)
    pid = h["creator_pid"]
    if pid_alive(pid, h["created_time_ns"]):
        return None
    return ("stale", f"its creator pid {pid} is no longer running", pid)
