"""A ring's header: writing it once at creation, reading it, and checking it before use.

The header's fields and offsets are defined in :mod:`.descriptor`.  The creator writes every
field and the magic last (:func:`write_header`), so a ring whose magic is set is fully
initialised; a reader takes the header as a snapshot (:func:`read_header`) and refuses a
ring that is not what it says it is (:func:`checked_layout`): every refusal is a
:class:`RingFormatError` (or :class:`RingVersionError`, :class:`RingLayoutError`) that names
the ring and the problem.
"""

from __future__ import annotations

import os
import time

from . import descriptor as d
from .errors import RingFormatError, RingLayoutError, RingVersionError

__all__ = ["Uninitialised", "checked_layout", "read_header", "write_header"]


class Uninitialised(RingFormatError):
    """The header is all zero: not initialised yet, or its creator died while initialising
    it.  A reader that may wait (``wait_s``) retries on it."""


def read_header(q: memoryview) -> dict[str, int]:
    """The header fields, by name, from a ring's int64 view."""
    return {
        "magic": q[d.word(d.MAGIC_OFFSET)],
        "version": q[d.word(d.VERSION_OFFSET)],
        "slot_size": q[d.word(d.SLOT_SIZE_OFFSET)],
        "capacity": q[d.word(d.CAPACITY_OFFSET)],
        "consumers": q[d.word(d.CONSUMER_COUNT_OFFSET)],
        "creator_pid": q[d.word(d.CREATOR_PID_OFFSET)],
        "created_time_ns": q[d.word(d.CREATED_TIME_NS_OFFSET)],
        "data_offset": q[d.word(d.DATA_OFFSET_OFFSET)],
        "total_length": q[d.word(d.TOTAL_LENGTH_OFFSET)],
    }


def write_header(q: memoryview, layout: d.RingLayout) -> None:
    """Initialise a freshly created (all zero) ring as this process's, magic last."""
    w = d.word
    q[w(d.VERSION_OFFSET)] = d.VERSION
    q[w(d.SLOT_SIZE_OFFSET)] = layout.slot_size
    q[w(d.CAPACITY_OFFSET)] = layout.capacity
    q[w(d.CONSUMER_COUNT_OFFSET)] = layout.consumers
    q[w(d.CREATOR_PID_OFFSET)] = os.getpid()
    q[w(d.CREATED_TIME_NS_OFFSET)] = time.time_ns()
    q[w(d.DATA_OFFSET_OFFSET)] = layout.data_offset
    q[w(d.TOTAL_LENGTH_OFFSET)] = layout.total_length
    q[w(d.PROVENANCE_UPTO_OFFSET)] = d.NO_PROVENANCE
    q[w(d.MAGIC_OFFSET)] = d.MAGIC  # last: a ring with a magic is fully initialised


def checked_layout(name: str, h: dict[str, int], size: int,
                   expect: tuple[int | None, int | None, int | None]) -> d.RingLayout:
    """The layout of ring ``name`` whose header is ``h`` and whose object is ``size`` bytes.

    ``expect`` is the caller's (slot size, capacity, consumers), ``None`` for "any".
    Raises :class:`Uninitialised` for an all-zero header, :class:`RingFormatError` for
    anything that is not a complete ring, :class:`RingVersionError` for another layout
    version and :class:`RingLayoutError` when it differs from ``expect``.
    """
    if h["magic"] == 0 and h["version"] == 0:
        raise Uninitialised(
            f"ring {name!r} is not a ringex ring: magic is 0 (all zero header; "
            "not initialised, or a creator died while initialising it)",
            name,
        )
    if h["magic"] != d.MAGIC:
        raise RingFormatError(
            f"ring {name!r} is not a ringex ring: bad magic {h['magic'] & (2**64 - 1):#018x}, "
            f"expected {d.MAGIC:#018x}",
            name,
        )
    if h["version"] != d.VERSION:
        raise RingVersionError(
            f"ring {name!r} has layout version {h['version']}, this code reads version "
            f"{d.VERSION}",
            name,
        )
    try:
        layout = d.RingLayout(h["slot_size"], h["capacity"], h["consumers"])
    except ValueError as exc:
        raise RingFormatError(f"ring {name!r} has a corrupt header: {exc}", name) from None
    if h["data_offset"] != layout.data_offset or h["total_length"] != layout.total_length:
        raise RingFormatError(
            f"ring {name!r} has a corrupt header: data offset {h['data_offset']} and "
            f"length {h['total_length']} do not match slot size {layout.slot_size}, "
            f"capacity {layout.capacity} and {layout.consumers} consumer(s)",
            name,
        )
    if size < layout.total_length:
        raise RingFormatError(
            f"ring {name!r} is truncated: {size} bytes, its header says "
            f"{layout.total_length}",
            name,
        )
    for label, want, have in zip(
        ("slot size", "capacity", "number of consumers"),
        expect,
        (layout.slot_size, layout.capacity, layout.consumers),
    ):
        if want is not None and want != have:
            raise RingLayoutError(
                f"ring {name!r} layout mismatch: {label} is {have}, expected {want}", name
            )
    return layout
