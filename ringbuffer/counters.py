"""Counters in shared memory, Agrona style.

One POSIX shared-memory object per owner (normally one agent process) holds a fixed array
of counter records.  The owner (``CountersManager``) is the only writer; any number of
other processes attach a ``CountersReader`` read-only (``ringex stat``, the supervisor,
tests) and see the values live, without any call into the owner.

Layout (little-endian, x86-64)::

    header, 128 bytes
      0  magic          8 bytes  b"RGXCNTRS" (written last: a reader that sees it sees the rest)
      8  version        u32
     12  record_length  u32      128
     16  capacity       u32      number of records
     20  label_length   u32      112
     24  owner_pid      i64
     32  created_ns     i64      time.time_ns() at creation
     40  high_water     i64      records ever allocated: readers scan ids [0, high_water)
    records, capacity x 128 bytes, record i at 128 + 128 * i
      0  value          i64      the hot word; one aligned 8-byte store per update
      8  state          i32      0 unused, 1 allocated, -1 freed
     12  type_id        i32
     16  label          112 bytes UTF-8, NUL padded

Each record is 128 bytes (two cache lines, the adjacent-line prefetcher's pair), so two
counters updated by different threads or processes never share a line.  The label shares
its record with the value but is written only at allocation, so it costs nothing later.

Why one object per owner rather than one system-wide file: Python cannot do an atomic
compare-and-swap on shared memory, so a single allocator per object is what keeps
allocation race-free.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import time
from collections.abc import Iterator
from typing import NamedTuple

import posix_ipc

__all__ = [
    "COUNTERS_PREFIX",
    "MAGIC",
    "VERSION",
    "HEADER_LENGTH",
    "RECORD_LENGTH",
    "LABEL_LENGTH",
    "TYPE_DUTY_CYCLES",
    "TYPE_WORK_COUNT",
    "TYPE_IDLE_CYCLES",
    "TYPE_ERRORS",
    "TYPE_BACK_PRESSURE",
    "TYPE_USER",
    "CountersError",
    "CountersNotFoundError",
    "KeyedCounters",
    "CountersFormatError",
    "Counter",
    "CounterRecord",
    "CountersManager",
    "CountersReader",
    "counters_name",
    "discover_counters",
    "unlink_counters",
]

# Every ringex counters object carries this prefix so `ringex stat` can find them in /dev/shm.
COUNTERS_PREFIX = "ringex-counters-"
SHM_DIR = "/dev/shm"

MAGIC = b"RGXCNTRS"
VERSION = 1
HEADER_LENGTH = 128
RECORD_LENGTH = 128
LABEL_OFFSET = 16
LABEL_LENGTH = RECORD_LENGTH - LABEL_OFFSET  # 112

_HEADER = struct.Struct("<8sIIIIqqq")  # magic, version, record_len, capacity, label_len, pid, ns, hw
_HIGH_WATER_OFFSET = 40

RECORD_UNUSED = 0
RECORD_ALLOCATED = 1
RECORD_FREED = -1

# Type ids of the standard counters; agents' own counters use TYPE_USER and up.
TYPE_DUTY_CYCLES = 1
TYPE_WORK_COUNT = 2
TYPE_IDLE_CYCLES = 3
TYPE_ERRORS = 4
TYPE_BACK_PRESSURE = 5
TYPE_USER = 1000

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]")


class CountersError(Exception):
    """A counters object cannot be used: missing, not ours, or an unknown layout."""


class CountersNotFoundError(CountersError, FileNotFoundError):
    """No shared-memory object of that name exists."""


class CountersFormatError(CountersError):
    """The object exists but is not a ringex counters object of a layout we understand."""


def counters_name(tag: str) -> str:
    """A discoverable object name for ``tag``: the prefix plus ``tag`` made name-safe."""
    return COUNTERS_PREFIX + _NAME_OK.sub("_", tag)


def _shm_name(name: str) -> str:
    """Normalise ``x``, ``/x`` or ``/dev/shm/x`` to the POSIX name ``/x``."""
    if name.startswith(SHM_DIR + "/"):
        name = name[len(SHM_DIR) + 1 :]
    name = name.lstrip("/")
    if not name or "/" in name:
        raise ValueError(f"invalid shared-memory name {name!r}")
    return "/" + name


def discover_counters(prefix: str = COUNTERS_PREFIX) -> list[str]:
    """Names (without the leading slash) of every counters object in /dev/shm, sorted."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if e.startswith(prefix))


def unlink_counters(name: str) -> bool:
    """Remove a counters object by name; False when it was already gone."""
    try:
        posix_ipc.unlink_shared_memory(_shm_name(name))
    except posix_ipc.ExistentialError:
        return False
    return True


def _left_by_the_dead(name: str) -> bool:
    """Is counters object ``name`` a ringex one whose owner process is gone (so that nobody
    will unlink it: a crash of its owner and of whatever would have reaped it)?"""
    from .liveness import pid_alive  # (psutil, only when a name is taken)

    try:
        mm, size = _map(name, read_only=True)
    except CountersError:
        return False
    try:
        _, pid, created_ns = _check_header(name, mm, size)
    except CountersError:
        return False  # not ours, or still being created: never touched
    finally:
        mm.close()
    return not pid_alive(pid, created_ns)


def _encode_label(label: str) -> bytes:
    if "\x00" in label:
        raise ValueError("a counter label must not contain NUL characters")
    raw = label.encode("utf-8")
    if len(raw) > LABEL_LENGTH:
        # Truncate on a character boundary so readers never see a broken code point.
        raw = raw[:LABEL_LENGTH].decode("utf-8", "ignore").encode("utf-8")
    return raw.ljust(LABEL_LENGTH, b"\x00")


def _decode_label(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


class Counter:
    """A handle on one counter; only its owner process updates it."""

    __slots__ = ("_manager", "_longs", "_index", "id", "label", "type_id")

    def __init__(self, manager: CountersManager, counter_id: int, label: str, type_id: int):
        self._manager = manager
        self._longs = manager._longs
        self._index = (HEADER_LENGTH + counter_id * RECORD_LENGTH) // 8
        self.id = counter_id
        self.label = label
        self.type_id = type_id

    def increment(self, n: int = 1) -> None:
        # Read-modify-write by the single owner; the store is one aligned 8-byte write.
        self._longs[self._index] += n

    def set(self, value: int) -> None:
        self._longs[self._index] = value

    def get(self) -> int:
        return self._longs[self._index]

    def free(self) -> None:
        """Give the slot back; the handle must not be used afterwards."""
        self._manager.free(self)

    def __repr__(self) -> str:
        return f"Counter(id={self.id}, label={self.label!r}, type_id={self.type_id})"


class CounterRecord(NamedTuple):
    id: int
    label: str
    value: int
    type_id: int


def _map(name: str, read_only: bool) -> tuple[mmap.mmap, int]:
    """Open and map an existing object; the fd is closed once mapped."""
    try:
        shm = posix_ipc.SharedMemory(_shm_name(name), read_only=read_only)
    except posix_ipc.ExistentialError:
        raise CountersNotFoundError(
            f"no counters object {name!r} in {SHM_DIR} (has its owner started, or exited?)"
        ) from None
    try:
        size = shm.size
        if size < HEADER_LENGTH:
            raise CountersFormatError(
                f"{name!r} is not a ringex counters object: {size} bytes, "
                f"smaller than the {HEADER_LENGTH}-byte header"
            )
        prot = mmap.PROT_READ if read_only else mmap.PROT_READ | mmap.PROT_WRITE
        return mmap.mmap(shm.fd, size, flags=mmap.MAP_SHARED, prot=prot), size
    finally:
        shm.close_fd()


def _check_header(name: str, buf: bytes | mmap.mmap, size: int) -> tuple[int, int, int]:
    """Validate the header; returns (capacity, owner_pid, created_ns)."""
    magic, version, record_len, capacity, label_len, pid, created_ns, _ = _HEADER.unpack_from(
        buf, 0
    )
    if magic != MAGIC:
        raise CountersFormatError(
            f"{name!r} is not a ringex counters object (magic {magic!r}, expected {MAGIC!r});"
            " it may still be being created"
        )
    if version != VERSION:
        raise CountersFormatError(
            f"{name!r} has counters layout version {version}; this ringex reads version {VERSION}"
        )
    if record_len != RECORD_LENGTH or label_len != LABEL_LENGTH:
        raise CountersFormatError(
            f"{name!r} has record/label length {record_len}/{label_len}, "
            f"expected {RECORD_LENGTH}/{LABEL_LENGTH}"
        )
    if HEADER_LENGTH + capacity * RECORD_LENGTH > size:
        raise CountersFormatError(
            f"{name!r} is truncated: capacity {capacity} needs "
            f"{HEADER_LENGTH + capacity * RECORD_LENGTH} bytes, object has {size}"
        )
    return capacity, pid, created_ns


class CountersManager:
    """Owns a counters object: creates it, allocates counters, unlinks it on close."""

    def __init__(self, name: str, capacity: int = 256) -> None:
        if not 0 < capacity <= 1 << 20:
            raise ValueError(f"capacity must be in 1..{1 << 20}, got {capacity}")
        self.name = _shm_name(name)[1:]
        self.capacity = capacity
        self._size = HEADER_LENGTH + capacity * RECORD_LENGTH
        shm = None
        for attempt in range(2):
            try:
                shm = posix_ipc.SharedMemory(
                    "/" + self.name, posix_ipc.O_CREX, mode=0o600, size=self._size
                )
                break
            except posix_ipc.ExistentialError:
                if attempt or not _left_by_the_dead(self.name):
                    raise CountersError(
                        f"counters object {self.name!r} already exists; another owner is using it "
                        f"(remove {SHM_DIR}/{self.name} if it is not)"
                    ) from None
                unlink_counters(self.name)  # its owner died without unlinking it: a crash
        assert shm is not None
        try:
            self._mm = mmap.mmap(shm.fd, self._size, flags=mmap.MAP_SHARED)
        except BaseException:
            shm.unlink()
            raise
        finally:
            shm.close_fd()
        self._buf = memoryview(self._mm)
        self._longs = self._buf.cast("q")
        self._ints = self._buf.cast("i")
        self._high_water = 0
        self._free: list[int] = []
        self._counters: dict[int, Counter] = {}
        self._closed = False
        # The object arrives zero-filled; magic goes last so readers never see a half header.
        _HEADER.pack_into(
            self._mm, 0, b"\x00" * 8, VERSION, RECORD_LENGTH, capacity, LABEL_LENGTH,
            os.getpid(), time.time_ns(), 0,
        )
        self._buf[0:8] = MAGIC

    def allocate(self, label: str, type_id: int = TYPE_USER) -> Counter:
        """A new counter starting at 0; reuses freed slots first."""
        if self._closed:
            raise CountersError(f"counters object {self.name!r} is closed")
        raw = _encode_label(label)
        if self._free:
            counter_id = self._free.pop()
        elif self._high_water < self.capacity:
            counter_id = self._high_water
        else:
            raise CountersError(
                f"counters object {self.name!r} is full ({self.capacity} counters)"
            )
        base = HEADER_LENGTH + counter_id * RECORD_LENGTH
        self._longs[base // 8] = 0
        self._ints[(base + 12) // 4] = type_id
        self._buf[base + LABEL_OFFSET : base + RECORD_LENGTH] = raw
        # State last: a reader that sees ALLOCATED sees the label and the zeroed value (TSO).
        self._ints[(base + 8) // 4] = RECORD_ALLOCATED
        if counter_id == self._high_water:
            self._high_water += 1
            self._longs[_HIGH_WATER_OFFSET // 8] = self._high_water
        counter = Counter(self, counter_id, _decode_label(raw), type_id)
        self._counters[counter_id] = counter
        return counter

    def free(self, counter: Counter) -> None:
        if self._closed or self._counters.get(counter.id) is not counter:
            return
        del self._counters[counter.id]
        base = HEADER_LENGTH + counter.id * RECORD_LENGTH
        self._ints[(base + 8) // 4] = RECORD_FREED
        self._free.append(counter.id)

    def counters(self) -> list[Counter]:
        """The live counters in id order."""
        return [self._counters[i] for i in sorted(self._counters)]

    def close(self, unlink: bool = True) -> None:
        """Unmap and (by default) unlink; counter handles raise ValueError afterwards."""
        if self._closed:
            return
        self._closed = True
        for view in (self._longs, self._ints, self._buf):
            view.release()
        self._mm.close()
        if unlink:
            unlink_counters(self.name)

    def __enter__(self) -> CountersManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CountersManager({self.name!r}, capacity={self.capacity})"


class CountersReader:
    """Attaches to a counters object read-only (PROT_READ): it cannot write, by construction.

    Reading a counter is one aligned 8-byte load.  The mapping stays valid after the owner
    unlinks the object (the final values remain readable until ``close``).
    """

    def __init__(self, name: str) -> None:
        self.name = _shm_name(name)[1:]
        self._mm, size = _map(self.name, read_only=True)
        try:
            self.capacity, self.owner_pid, self.created_ns = _check_header(
                self.name, self._mm, size
            )
        except BaseException:
            self._mm.close()
            raise
        self._buf = memoryview(self._mm)  # read-only: assignments raise TypeError
        self._longs = self._buf.cast("q")
        self._ints = self._buf.cast("i")
        self._closed = False

    @property
    def buffer(self) -> memoryview:
        """The read-only view of the whole object (for tools and tests)."""
        return self._buf

    def _high_water(self) -> int:
        return min(self._longs[_HIGH_WATER_OFFSET // 8], self.capacity)

    def _state(self, counter_id: int) -> int:
        return self._ints[(HEADER_LENGTH + counter_id * RECORD_LENGTH + 8) // 4]

    def get(self, counter_id: int) -> int:
        if not 0 <= counter_id < self.capacity:
            raise IndexError(f"counter id {counter_id} outside 0..{self.capacity - 1}")
        return self._longs[(HEADER_LENGTH + counter_id * RECORD_LENGTH) // 8]

    def label(self, counter_id: int) -> str:
        base = HEADER_LENGTH + counter_id * RECORD_LENGTH
        return _decode_label(bytes(self._buf[base + LABEL_OFFSET : base + RECORD_LENGTH]))

    def records(self) -> list[CounterRecord]:
        """A snapshot of every allocated counter, in id order."""
        out = []
        for i in range(self._high_water()):
            if self._state(i) != RECORD_ALLOCATED:
                continue
            base = HEADER_LENGTH + i * RECORD_LENGTH
            type_id = self._ints[(base + 12) // 4]
            out.append(CounterRecord(i, self.label(i), self._longs[base // 8], type_id))
        return out

    def __iter__(self) -> Iterator[tuple[int, str, int]]:
        for r in self.records():
            yield r.id, r.label, r.value

    def find(self, label: str) -> int | None:
        """The id of the first allocated counter with this exact label."""
        for r in self.records():
            if r.label == label:
                return r.id
        return None

    def value(self, label: str) -> int:
        counter_id = self.find(label)
        if counter_id is None:
            raise KeyError(f"no counter labelled {label!r} in {self.name!r}")
        return self.get(counter_id)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for view in (self._longs, self._ints, self._buf):
            view.release()
        self._mm.close()

    def __enter__(self) -> CountersReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KeyedCounters:
    """An agent's own counters by key, allocated from ``labels`` (key -> label) in the
    ``CountersManager`` its runner gave it; with none (a runner without counters), counting
    does nothing."""

    def __init__(self, manager: CountersManager | None, labels: dict[str, str]) -> None:
        self._c = {} if manager is None else {k: manager.allocate(v, TYPE_USER) for k, v in labels.items()}

    def add(self, key: str, n: int = 1) -> None:
        c = self._c.get(key)
        if c is not None:
            c.increment(n)
