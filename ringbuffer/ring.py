"""Lock-free single-producer rings over named POSIX shared memory.

One layout (see :mod:`ringex.ringbuffer.descriptor`) serves both shapes:

* ``consumers=1``: the SPSC ring;
* ``consumers=N``: one-to-many: every consumer sees every message, the producer gates on the
  slowest consumer's cursor (the Disruptor's gating sequences).

Many-to-one is N single-producer rings polled by one consumer (:mod:`.merge`).

Roles::

    with Ring.create("/orders", slot_size=64, capacity=1024, consumers=1) as ring:
        producer = ring.producer()
        producer.offer(payload)                   # Offer.OK or Offer.BACK_PRESSURED
        head, tail = producer.claim(64)           # zero-copy (k, slot_size) uint8 views
        ...fill head and tail...
        producer.publish(len(head) + len(tail))   # one cursor store for the batch

    with Ring.attach("/orders", slot_size=64) as ring:
        consumer = ring.consumer(0)
        head, tail = consumer.read(limit=256)     # zero-copy read-only views up to the cursor
        ...process head then tail...
        consumer.commit(len(head) + len(tail))    # one cursor store for the batch

    with Ring.observe("/orders") as ring:         # read-only: supervisors, ``ringex stat``
        ring.consumer_state(0, stale_after_ns=1_000_000_000)

Memory ordering: slots are written with plain copies, then the cursor is published with ONE
aligned 8-byte store through ``memoryview.cast('q')``; readers load the cursor, then the
slots.  That is sufficient under x86-64 TSO only, which :mod:`.platform` enforces.

A consumer must be finished with the views of a batch before it commits it: once committed,
the producer may overwrite those slots.
"""

from __future__ import annotations

import enum
import mmap
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import posix_ipc
import psutil

from . import descriptor as d
from .errors import (
    RingBusyError,
    RingClosedError,
    RingError,
    RingExistsError,
    RingFormatError,
    RingLayoutError,
    RingNotFoundError,
    RingReadOnlyError,
    RingVersionError,
    StaleRingError,
)
from .idle import BackoffIdleStrategy
from .platform import check_lock_free

__all__ = [
    "Offer",
    "ConsumerState",
    "ConsumerInfo",
    "Sequence",
    "Ring",
    "Producer",
    "Consumer",
    "pid_alive",
    "ring_exists",
    "unlink_ring",
]

_monotonic_ns = time.monotonic_ns

#: Slack when comparing a process's start time with the ring's creation time (pid reuse).
_PID_REUSE_SLACK_NS = 2_000_000_000


class Offer(enum.IntEnum):
    """Result of :meth:`Producer.offer`: truthy when the message went in."""

    BACK_PRESSURED = 0
    OK = 1


_OK = Offer.OK
_BACK_PRESSURED = Offer.BACK_PRESSURED


class ConsumerState(enum.Enum):
    ALIVE = "alive"  # heartbeat fresh, keeping up
    SLOW = "slow"  # heartbeat fresh (or cursor moving) but lagging by slow_lag or more
    DEAD = "dead"  # pid gone, or heartbeat stale and cursor not moving
    ABSENT = "absent"  # no process has attached as this consumer (or it detached cleanly)


@dataclass(frozen=True)
class ConsumerInfo:
    index: int
    pid: int
    pid_alive: bool
    cursor: int
    lag: int  # producer cursor - consumer cursor
    heartbeat_ns: int  # time.monotonic_ns() of its last read/commit/heartbeat; 0 = never
    heartbeat_age_ns: int


def canonical_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip("/"):
        raise ValueError(f"ring name must be a non-empty string, got {name!r}")
    if "/" in name.lstrip("/"):
        raise ValueError(f"ring name {name!r} must not contain '/' after the first character")
    return name if name.startswith("/") else "/" + name


def pid_alive(pid: int, started_before_ns: int = 0) -> bool:
    """Whether ``pid`` is a live (not zombie) process.

    With ``started_before_ns`` (a ``time.time_ns()`` value), a process that started clearly
    after it is taken to be a reuse of the pid, hence the original is dead.
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


def ring_exists(name: str) -> bool:
    try:
        shm = posix_ipc.SharedMemory(canonical_name(name), read_only=True)
    except posix_ipc.ExistentialError:
        return False
    shm.close_fd()
    return True


def unlink_ring(name: str) -> bool:
    """Remove the name (mappings already open stay valid).  False when it did not exist."""
    try:
        posix_ipc.unlink_shared_memory(canonical_name(name))
        return True
    except posix_ipc.ExistentialError:
        return False


class Sequence:
    """One int64 cell of a ring, read and written with single aligned 8-byte accesses."""

    __slots__ = ("_q", "_word")

    def __init__(self, words: memoryview, offset: int) -> None:
        self._q = words
        self._word = d.word(offset)

    def get(self) -> int:
        return self._q[self._word]

    def set(self, value: int) -> None:
        self._q[self._word] = value


def _read_header(q: memoryview) -> dict[str, int]:
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


class _Mapping:
    """An open mapping of a shared-memory object: the mmap and its int64 view."""

    def __init__(self, name: str, *, read_only: bool) -> None:
        try:
            shm = posix_ipc.SharedMemory(name, read_only=read_only)
        except posix_ipc.ExistentialError:
            raise RingNotFoundError(
                f"ring {name!r} does not exist (no shared-memory object /dev/shm{name})", name
            ) from None
        except posix_ipc.PermissionsError as exc:
            raise RingError(f"ring {name!r}: permission denied opening it: {exc}", name) from None
        try:
            size = shm.size
            if size < d.HEADER_LENGTH:
                raise RingFormatError(
                    f"ring {name!r} is not a ringex ring: the object is {size} bytes, "
                    f"smaller than the {d.HEADER_LENGTH}-byte header",
                    name,
                )
            prot = mmap.PROT_READ if read_only else mmap.PROT_READ | mmap.PROT_WRITE
            self.mm = mmap.mmap(shm.fd, size, flags=mmap.MAP_SHARED, prot=prot)
        finally:
            shm.close_fd()
        self.size = size
        # Whole words only: a garbage object of odd length still gets a header check.
        self.q = memoryview(self.mm)[: size - size % d.WORD_SIZE].cast("q")

    def close(self) -> None:
        q, self.q = self.q, None
        if q is not None:
            q.release()
        try:
            self.mm.close()
        except BufferError:
            # Someone still holds a zero-copy view of the slots; the mapping goes away
            # when the last view does.
            pass


class Ring:
    """A mapped ring.  Build one with :meth:`create`, :meth:`attach` or :meth:`observe`."""

    def __init__(self, name: str, mapping: _Mapping, layout: d.RingLayout, header: dict,
                 *, read_only: bool, owner: bool) -> None:
        self._name = name
        self._map = mapping
        self._q = mapping.q
        self._layout = layout
        self._header = header
        self._read_only = read_only
        self._owner = owner
        self._closed = False
        self._handles: list[Any] = []
        self._observed: dict[int, int] = {}
        slots = np.frombuffer(
            mapping.mm, dtype=np.uint8, count=layout.data_length, offset=layout.data_offset
        ).reshape(layout.capacity, layout.slot_size)
        self._slots = slots
        ro = slots.view()
        ro.flags.writeable = False
        self._slots_ro = ro

    # --- construction ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        *,
        slot_size: int = 64,
        capacity: int = 1024,
        consumers: int = 1,
        reclaim: bool = False,
        unlink_on_close: bool = True,
        mode: int = 0o600,
    ) -> "Ring":
        """Create and initialise a new ring; the caller owns it (unlinked on close).

        If the name is taken by a ring whose creator process is dead, raises
        :class:`StaleRingError` unless ``reclaim=True``, which unlinks it and starts afresh.
        A name held by a live ring, or by an object that is not a ring, raises
        :class:`RingExistsError`.
        """
        name = canonical_name(name)
        check_lock_free(name)
        try:
            layout = d.RingLayout(slot_size, capacity, consumers)
        except ValueError as exc:
            raise RingLayoutError(f"ring {name!r}: {exc}", name) from None
        shm = None
        for attempt in range(2):
            try:
                shm = posix_ipc.SharedMemory(
                    name, posix_ipc.O_CREX, mode=mode, size=layout.total_length
                )
                break
            except posix_ipc.ExistentialError:
                stale = cls._existing_problem(name)
                if stale is None:
                    raise RingExistsError(f"ring {name!r} already exists and is in use", name)
                kind, message, pid = stale
                if kind == "stale" and reclaim and attempt == 0:
                    unlink_ring(name)
                    continue
                if kind == "stale":
                    raise StaleRingError(
                        f"ring {name!r} already exists but is stale: {message}; "
                        "pass reclaim=True to unlink and recreate it",
                        name,
                        pid,
                    ) from None
                raise RingExistsError(f"ring {name!r} cannot be created: {message}", name)
        assert shm is not None
        try:
            mm = mmap.mmap(shm.fd, layout.total_length, flags=mmap.MAP_SHARED,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            shm.close_fd()
            unlink_ring(name)
            raise
        shm.close_fd()
        mapping = _Mapping.__new__(_Mapping)
        mapping.mm = mm
        mapping.size = layout.total_length
        mapping.q = memoryview(mm).cast("q")
        q = mapping.q
        w = d.word
        q[w(d.VERSION_OFFSET)] = d.VERSION
        q[w(d.SLOT_SIZE_OFFSET)] = layout.slot_size
        q[w(d.CAPACITY_OFFSET)] = layout.capacity
        q[w(d.CONSUMER_COUNT_OFFSET)] = layout.consumers
        q[w(d.CREATOR_PID_OFFSET)] = os.getpid()
        q[w(d.CREATED_TIME_NS_OFFSET)] = time.time_ns()
        q[w(d.DATA_OFFSET_OFFSET)] = layout.data_offset
        q[w(d.TOTAL_LENGTH_OFFSET)] = layout.total_length
        q[w(d.MAGIC_OFFSET)] = d.MAGIC  # last: a ring with a magic is fully initialised
        return cls(name, mapping, layout, _read_header(q), read_only=False,
                   owner=unlink_on_close)

    @classmethod
    def _existing_problem(cls, name: str) -> tuple[str, str, int] | None:
        """Why an existing object blocks creation: None (a live ring) or (kind, message, pid)."""
        try:
            mapping = _Mapping(name, read_only=True)
        except RingNotFoundError:
            return ("gone", "it vanished while being inspected; retry", 0)
        except RingError as exc:
            return ("foreign", str(exc), 0)
        try:
            h = _read_header(mapping.q)
        finally:
            mapping.close()
        if h["magic"] != d.MAGIC:
            return ("foreign", f"the object is not a ringex ring (magic {h['magic']:#x})", 0)
        pid = h["creator_pid"]
        if pid_alive(pid, h["created_time_ns"]):
            return None
        return ("stale", f"its creator pid {pid} is no longer running", pid)

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        slot_size: int | None = None,
        capacity: int | None = None,
        consumers: int | None = None,
        wait_s: float = 0.0,
    ) -> "Ring":
        """Map an existing ring read-write (for a producer or consumer role).

        Stated expectations (slot size, capacity, consumers) are checked against the header
        and a mismatch raises :class:`RingLayoutError`.  ``wait_s`` waits (with backoff) for
        a ring that does not exist yet or is still being initialised.
        """
        return cls._open(name, read_only=False, expect=(slot_size, capacity, consumers),
                         wait_s=wait_s)

    @classmethod
    def observe(cls, name: str, *, wait_s: float = 0.0, **expect: int | None) -> "Ring":
        """Map an existing ring read-only (supervisors, stat tools)."""
        return cls._open(name, read_only=True,
                         expect=(expect.get("slot_size"), expect.get("capacity"),
                                 expect.get("consumers")),
                         wait_s=wait_s)

    @classmethod
    def _open(cls, name: str, *, read_only: bool, expect: tuple, wait_s: float) -> "Ring":
        name = canonical_name(name)
        check_lock_free(name)
        deadline = time.monotonic() + wait_s
        idle = BackoffIdleStrategy(max_spins=0, max_yields=10, max_park_ns=10_000_000)
        while True:
            try:
                return cls._open_once(name, read_only=read_only, expect=expect)
            except (RingNotFoundError, _Uninitialised) as exc:
                if time.monotonic() >= deadline:
                    if isinstance(exc, _Uninitialised):
                        raise RingFormatError(str(exc), name) from None
                    raise
                idle.idle(0)

    @classmethod
    def _open_once(cls, name: str, *, read_only: bool, expect: tuple) -> "Ring":
        mapping = _Mapping(name, read_only=read_only)
        try:
            h = _read_header(mapping.q)
            if h["magic"] == 0 and h["version"] == 0:
                raise _Uninitialised(
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
            if mapping.size < layout.total_length:
                raise RingFormatError(
                    f"ring {name!r} is truncated: {mapping.size} bytes, its header says "
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
        except BaseException:
            mapping.close()
            raise
        return cls(name, mapping, layout, h, read_only=read_only, owner=False)

    # --- properties ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def layout(self) -> d.RingLayout:
        return self._layout

    @property
    def slot_size(self) -> int:
        return self._layout.slot_size

    @property
    def capacity(self) -> int:
        return self._layout.capacity

    @property
    def consumers(self) -> int:
        return self._layout.consumers

    @property
    def creator_pid(self) -> int:
        return self._header["creator_pid"]

    @property
    def created_time_ns(self) -> int:
        """``time.time_ns()`` when the ring was created: tells one incarnation of a name
        from the next (the engine keys its output bookkeeping on it)."""
        return self._header["created_time_ns"]

    @property
    def producer_pid(self) -> int:
        """Pid of the process holding the producer role (0 when none)."""
        self._check_open()
        return self._q[d.word(d.PRODUCER_PID_OFFSET)]

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def owner(self) -> bool:
        """Whether :meth:`close` unlinks the name."""
        return self._owner

    def _check_open(self) -> None:
        if self._closed:
            raise RingClosedError(f"ring {self._name!r} is closed", self._name)

    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or not 0 <= index < self._layout.consumers:
            raise IndexError(
                f"ring {self._name!r} has consumers 0..{self._layout.consumers - 1}, "
                f"not {index!r}"
            )

    # --- cursors and cells ----------------------------------------------------------------
    @property
    def producer_cursor(self) -> Sequence:
        self._check_open()
        return Sequence(self._q, d.PRODUCER_CURSOR_OFFSET)

    def consumer_cursor(self, index: int) -> Sequence:
        self._check_open()
        self._check_index(index)
        return Sequence(self._q, d.consumer_cursor_offset(index))

    @property
    def producer_position(self) -> int:
        self._check_open()
        return self._q[d.word(d.PRODUCER_CURSOR_OFFSET)]

    def consumer_position(self, index: int) -> int:
        self._check_open()
        self._check_index(index)
        return self._q[d.word(d.consumer_cursor_offset(index))]

    def min_consumer_position(self) -> int:
        self._check_open()
        q = self._q
        return min(q[d.word(d.consumer_cursor_offset(i))] for i in range(self._layout.consumers))

    def slots(self) -> np.ndarray:
        """Read-only ``(capacity, slot_size)`` view of every slot (tests, diagnostics)."""
        self._check_open()
        return self._slots_ro

    # --- roles --------------------------------------------------------------------------
    def producer(self, *, takeover: bool = False) -> "Producer":
        """The single producer.  It resumes from the published cursor."""
        self._check_open()
        self._check_writable("a producer")
        pid_word = d.word(d.PRODUCER_PID_OFFSET)
        self._claim_role(pid_word, "the producer role", takeover)
        handle = Producer(self)
        self._handles.append(handle)
        return handle

    def consumer(self, index: int = 0, *, takeover: bool = False) -> "Consumer":
        """Consumer ``index``.  It resumes from its own cursor (restart after a crash)."""
        self._check_open()
        self._check_writable(f"consumer {index}")
        self._check_index(index)
        self._claim_role(d.word(d.consumer_pid_offset(index)), f"consumer {index}", takeover)
        handle = Consumer(self, index)
        self._handles.append(handle)
        return handle

    def _check_writable(self, what: str) -> None:
        if self._read_only:
            raise RingReadOnlyError(
                f"ring {self._name!r} was attached read-only (observe); it cannot act as {what}",
                self._name,
            )

    def _claim_role(self, pid_word: int, what: str, takeover: bool) -> None:
        me = os.getpid()
        holder = self._q[pid_word]
        if holder and holder != me and not takeover and pid_alive(holder):
            raise RingBusyError(
                f"ring {self._name!r}: {what} is held by live process {holder}; "
                "pass takeover=True to take it anyway",
                self._name,
            )
        self._q[pid_word] = me

    # --- liveness -------------------------------------------------------------------------
    def consumer_info(self, index: int) -> ConsumerInfo:
        self._check_open()
        self._check_index(index)
        q = self._q
        producer = q[d.word(d.PRODUCER_CURSOR_OFFSET)]
        cursor = q[d.word(d.consumer_cursor_offset(index))]
        heartbeat = q[d.word(d.consumer_heartbeat_offset(index))]
        pid = q[d.word(d.consumer_pid_offset(index))]
        now = _monotonic_ns()
        return ConsumerInfo(
            index=index,
            pid=pid,
            pid_alive=pid_alive(pid),
            cursor=cursor,
            lag=producer - cursor,
            heartbeat_ns=heartbeat,
            heartbeat_age_ns=now - heartbeat if heartbeat else -1,
        )

    def consumer_state(
        self, index: int, stale_after_ns: int = 1_000_000_000, slow_lag: int | None = None
    ) -> ConsumerState:
        """Tell a dead consumer from a slow one.

        * ABSENT: nobody has attached as this consumer (or it closed cleanly);
        * DEAD: its pid is gone (or a zombie), or its heartbeat is older than
          ``stale_after_ns`` and its cursor has not moved since this handle last looked (a
          consumer stamps its heartbeat on every read and commit, so a stale heartbeat seen
          for the first time means it has not polled since);
        * SLOW: heartbeat fresh but lagging the producer by ``slow_lag`` or more (default:
          half the capacity), or heartbeat stale while the cursor still moves;
        * ALIVE: otherwise.
        """
        info = self.consumer_info(index)
        previous = self._observed.get(index)
        self._observed[index] = info.cursor
        if info.pid == 0:
            return ConsumerState.ABSENT
        if not info.pid_alive:
            return ConsumerState.DEAD
        if info.heartbeat_ns == 0 or info.heartbeat_age_ns > stale_after_ns:
            moved = previous is not None and previous != info.cursor
            return ConsumerState.SLOW if moved else ConsumerState.DEAD
        threshold = max(1, self._layout.capacity // 2) if slow_lag is None else slow_lag
        return ConsumerState.SLOW if info.lag >= threshold else ConsumerState.ALIVE

    # --- shutdown -------------------------------------------------------------------------
    def unlink(self) -> bool:
        """Remove the ring's name now; False when it was already gone."""
        self._owner = False
        return unlink_ring(self._name)

    def close(self) -> None:
        """Release every handle and the mapping; the creator also unlinks the name."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle._release()
        self._handles.clear()
        self._slots = self._slots_ro = None
        self._q = None
        self._map.close()
        if self._owner:
            self._owner = False
            unlink_ring(self._name)

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self._read_only else "open")
        lay = self._layout
        return (
            f"Ring({self._name!r}, slot_size={lay.slot_size}, capacity={lay.capacity}, "
            f"consumers={lay.consumers}, {state})"
        )


class _Uninitialised(RingFormatError):
    pass


class Producer:
    """The single writer of a ring.  Never blocks: a full ring answers BACK_PRESSURED."""

    __slots__ = (
        "_ring", "_mm", "_q", "_slots", "_cursor", "_gates", "_gate0", "_seq", "_gate",
        "_cap", "_mask", "_slot", "_data_off", "_claimed", "_empty", "_zeros", "_name",
    )

    def __init__(self, ring: Ring) -> None:
        lay = ring._layout
        self._ring = ring
        self._name = ring._name
        self._mm = ring._map.mm
        self._q = ring._q
        self._slots = ring._slots
        self._cursor = d.word(d.PRODUCER_CURSOR_OFFSET)
        self._gates = tuple(d.word(d.consumer_cursor_offset(i)) for i in range(lay.consumers))
        self._gate0 = self._gates[0] if len(self._gates) == 1 else -1
        self._cap = lay.capacity
        self._mask = lay.mask
        self._slot = lay.slot_size
        self._data_off = lay.data_offset
        self._seq = self._q[self._cursor]
        self._gate = 0
        self._refresh_gate()
        self._claimed = 0
        self._empty = self._slots[:0]
        self._zeros = bytes(lay.slot_size)

    @property
    def position(self) -> int:
        """Sequence of the next message this producer will publish."""
        return self._seq

    @property
    def ring(self) -> Ring:
        return self._ring

    def _refresh_gate(self) -> int:
        q = self._q
        if self._gate0 >= 0:
            g = q[self._gate0]
        else:
            gates = self._gates
            g = q[gates[0]]
            for i in gates:
                v = q[i]
                if v < g:
                    g = v
        self._gate = g
        return g

    def remaining(self) -> int:
        """Free slots right now (reads every consumer cursor)."""
        return self._cap - (self._seq - self._refresh_gate())

    def offer(self, payload) -> Offer:
        """Copy one message (bytes-like, at most slot_size bytes) into the next slot and
        publish it.  Shorter payloads are zero-padded.  Returns Offer.OK, or
        Offer.BACK_PRESSURED when the slowest consumer is a full ring behind (nothing is
        written then).  Abandons an outstanding :meth:`claim`."""
        seq = self._seq
        cap = self._cap
        if seq - self._gate >= cap and seq - self._refresh_gate() >= cap:
            return _BACK_PRESSURED
        slot = self._slot
        off = self._data_off + (seq & self._mask) * slot
        n = len(payload)
        if n == slot:
            self._mm[off:off + slot] = payload
        else:
            self._write_short(off, payload, n)
        seq += 1
        self._seq = seq
        self._claimed = 0
        self._q[self._cursor] = seq
        return _OK

    def _write_short(self, off: int, payload, n: int) -> None:
        slot = self._slot
        if n > slot:
            raise ValueError(
                f"ring {self._name!r}: message of {n} bytes does not fit a {slot}-byte slot"
            )
        mm = self._mm
        mm[off:off + n] = payload
        mm[off + n:off + slot] = self._zeros[n:]

    def claim(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Claim up to ``n`` free slots as zero-copy writable ``(k, slot_size)`` uint8 views.

        Returns ``(head, tail)``: ``tail`` is empty unless the claim wraps around the end of
        the ring.  ``len(head) + len(tail)`` may be less than ``n`` (or 0 when the ring is
        full).  Nothing is visible to consumers until :meth:`publish`.
        """
        seq = self._seq
        cap = self._cap
        free = cap - (seq - self._gate)
        if free < n:
            free = cap - (seq - self._refresh_gate())
        k = n if n < free else free
        if k <= 0:
            self._claimed = 0
            empty = self._empty
            return empty, empty
        self._claimed = k
        start = seq & self._mask
        end = start + k
        slots = self._slots
        if end <= cap:
            return slots[start:end], self._empty
        return slots[start:], slots[:end - cap]

    def publish(self, count: int) -> None:
        """Publish the first ``count`` slots of the last claim with one cursor store."""
        if count > self._claimed or count < 0:
            raise ValueError(
                f"ring {self._name!r}: cannot publish {count} slots, {self._claimed} claimed"
            )
        seq = self._seq + count
        self._seq = seq
        self._claimed = 0
        self._q[self._cursor] = seq

    def offer_batch(self, messages) -> int:
        """Offer many messages, as many as fit now; returns how many were published.

        ``messages`` is a 2-D uint8 array ``(m, w)`` with ``w <= slot_size`` (rows are
        zero-padded), a 1-D structured array (each record one message), or an iterable of
        bytes-like objects.  Arrays go in with one claim and one cursor store.
        """
        if isinstance(messages, np.ndarray):
            arr = messages
            if arr.ndim == 1:
                arr = np.ascontiguousarray(arr).view(np.uint8).reshape(len(messages), -1)
            elif arr.ndim != 2 or arr.dtype != np.uint8:
                raise ValueError(
                    f"ring {self._name!r}: offer_batch needs (m, w) uint8 rows or a 1-D "
                    f"structured array, got shape {arr.shape} dtype {arr.dtype}"
                )
            m, w = arr.shape
            if w > self._slot:
                raise ValueError(
                    f"ring {self._name!r}: messages of {w} bytes do not fit a "
                    f"{self._slot}-byte slot"
                )
            head, tail = self.claim(m)
            kh = len(head)
            kt = len(tail)
            if kh:
                head[:, :w] = arr[:kh]
                if w < self._slot:
                    head[:, w:] = 0
            if kt:
                tail[:, :w] = arr[kh:kh + kt]
                if w < self._slot:
                    tail[:, w:] = 0
            self.publish(kh + kt)
            return kh + kt
        done = 0
        offer = self.offer
        for message in messages:
            if not offer(message):
                break
            done += 1
        return done

    def _release(self) -> None:
        self._mm = self._q = self._slots = self._empty = None
        q = self._ring._q
        if q is not None:
            pid_word = d.word(d.PRODUCER_PID_OFFSET)
            if q[pid_word] == os.getpid():
                q[pid_word] = 0

    def close(self) -> None:
        """Give up the producer role (the ring stays mapped)."""
        if self._mm is not None:
            self._release()


class Consumer:
    """Consumer ``index`` of a ring: reads every message in order, zero-copy, in batches."""

    __slots__ = (
        "_ring", "_index", "_name", "_mm", "_mv", "_q", "_slots", "_prod", "_cur", "_hb",
        "_pos", "_pending", "_cap", "_mask", "_slot", "_data_off", "_empty", "_limit",
    )

    def __init__(self, ring: Ring, index: int) -> None:
        lay = ring._layout
        self._ring = ring
        self._index = index
        self._name = ring._name
        self._mm = ring._map.mm
        self._mv = memoryview(ring._map.mm).toreadonly()
        self._q = ring._q
        self._slots = ring._slots_ro
        self._prod = d.word(d.PRODUCER_CURSOR_OFFSET)
        self._cur = d.word(d.consumer_cursor_offset(index))
        self._hb = d.word(d.consumer_heartbeat_offset(index))
        self._cap = lay.capacity
        self._mask = lay.mask
        self._slot = lay.slot_size
        self._data_off = lay.data_offset
        self._limit = lay.capacity
        self._empty = self._slots[:0]
        self._pos = self._q[self._cur]
        self._pending = 0
        self._q[self._hb] = _monotonic_ns()

    @property
    def index(self) -> int:
        return self._index

    @property
    def position(self) -> int:
        """Sequence of the next message this consumer will read (its committed cursor)."""
        return self._pos

    @property
    def ring(self) -> Ring:
        return self._ring

    def heartbeat(self) -> None:
        """Stamp the heartbeat (reads and commits do it too)."""
        self._q[self._hb] = _monotonic_ns()

    def available(self) -> int:
        return self._q[self._prod] - self._pos

    def read(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Zero-copy read-only views of up to ``limit`` published, unread messages.

        Returns ``(head, tail)`` ``(k, slot_size)`` uint8 arrays; ``tail`` is non-empty only
        when the batch wraps.  The first message is sequence :attr:`position`.  The cursor
        does not move until :meth:`commit`; views must not be used after committing.
        """
        q = self._q
        q[self._hb] = _monotonic_ns()
        pos = self._pos
        k = q[self._prod] - pos
        lim = self._limit if limit is None else limit
        if k > lim:
            k = lim
        if k <= 0:
            self._pending = 0
            empty = self._empty
            return empty, empty
        self._pending = k
        start = pos & self._mask
        end = start + k
        slots = self._slots
        cap = self._cap
        if end <= cap:
            return slots[start:end], self._empty
        return slots[start:], slots[:end - cap]

    def commit(self, count: int) -> None:
        """Advance the cursor over ``count`` messages of the last read (one store)."""
        if count > self._pending or count < 0:
            raise ValueError(
                f"ring {self._name!r} consumer {self._index}: cannot commit {count} "
                f"messages, {self._pending} read"
            )
        pos = self._pos + count
        self._pos = pos
        self._pending -= count
        q = self._q
        q[self._cur] = pos
        q[self._hb] = _monotonic_ns()

    def poll(self, handler: Callable[[memoryview], Any], limit: int | None = None) -> int:
        """Call ``handler(slot)`` with a read-only memoryview of each message, in order,
        then commit the batch once.  If the handler raises, the messages it finished are
        committed and the rest are read again next time."""
        head, tail = self.read(limit)
        k = self._pending
        if not k:
            return 0
        mv = self._mv
        slot = self._slot
        mask = self._mask
        data_off = self._data_off
        pos = self._pos
        done = 0
        try:
            for seq in range(pos, pos + k):
                off = data_off + (seq & mask) * slot
                handler(mv[off:off + slot])
                done += 1
        finally:
            self.commit(done)
        return done

    def poll_batch(self, handler: Callable[[np.ndarray, int], Any],
                   limit: int | None = None) -> int:
        """Call ``handler(block, first_sequence)`` once per contiguous region (one, or two on
        wrap-around) with a ``(k, slot_size)`` read-only view, then commit once.  This is the
        shape a numba kernel consumes."""
        head, tail = self.read(limit)
        k = self._pending
        if not k:
            return 0
        pos = self._pos
        done = 0
        try:
            handler(head, pos)
            done = len(head)
            if len(tail):
                handler(tail, pos + done)
                done = k
        finally:
            self.commit(done)
        return done

    def _release(self) -> None:
        mv = self._mv
        self._mm = self._mv = self._q = self._slots = self._empty = None
        if mv is not None:
            mv.release()
        q = self._ring._q
        if q is not None:
            pid_word = d.word(d.consumer_pid_offset(self._index))
            if q[pid_word] == os.getpid():
                q[pid_word] = 0

    def close(self) -> None:
        """Detach cleanly: the cursor stays (the producer still gates on it), the pid
        cell is cleared so supervisors see ABSENT rather than DEAD."""
        if self._q is not None:
            self._release()
