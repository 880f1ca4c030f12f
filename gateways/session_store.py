"""A session's persistent state: the server's message flow, and how far the client's was applied.

FIXP's recoverable server flow means every application message the gateway sends a session
has a sequence number and can be sent again: a client that reconnects names the last one it
saw and gets exactly what it missed, even across a gateway restart. The idempotent client
flow means a client sequence number is applied once at most, also across a restart. Both
live here, one pair of files per session in the gateway's directory.

``session-<id>.flow``: the flow of the session's current FIXP identity (its UUID)::

    header   0  magic     u32  "RXSF"
             4  version   u32  1
             8  uuidHi    u64
            16  uuidLo    u64
            24  (reserved to 32)
    record   0  length    u32  payload bytes (one SBE message, header included)
             4  crc32     u32  of bytes 8.. of the record (zlib.crc32)
             8  seqNo     u64  the message's FIXP sequence number: 1, 2, 3, ...
            16  created   u64  creation time of the ring the message came from (0: the gateway's own)
            24  position  u64  its position in that ring
            32  source    u8   SOURCE_*; 7 bytes of padding
            40  payload

``session-<id>.state``: 48 bytes, written in place: magic "RXSS", version, the UUID the
numbers below belong to, ``nextIn``, the next client sequence number not yet applied, and
where this identity's messages begin in the gateway's inbound ring (the ring's creation
time and position at Negotiate), so that a restarted gateway can tell them from an earlier
identity's.

Crash semantics. Records are appended (one write per duty cycle, not fsynced: a process
crash loses nothing the kernel has, a host crash loses the tail, as the engine's journal
without durability does). On open the records are checked in order and the file is cut at
the first one that is torn (length past the end, CRC mismatch, sequence not the next), so
the flow is always a gap-free prefix. ``created``/``position`` say which ring message each
record is: a gateway restarted after appending but before committing its ring cursor sees
the same events again and skips those already stored (``stored_through``). A new identity
(Negotiate) replaces the flow file by rename, so a crash leaves the old flow or the new
empty one, never a mix; ``nextIn`` is kept with its UUID, so a stale one reads as 1.
``nextIn`` is stored after the messages it counts are published to the ring; the gateway
writes each message's client number into its stamp's ``seq`` word (the sequencer writes the
global one into its copy), so a gateway killed between the publish and the store finds, at
restart, the numbers its ring already holds (``SbeGatewayAgent``): exactly once.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from array import array
from pathlib import Path

import numpy as np

from ringex.engine.storage.fsync import fsync_directory

__all__ = ["SOURCE_GATEWAY", "SOURCE_OUTPUT", "SOURCE_REJECT", "SessionStore", "StoreError"]

FLOW_MAGIC = 0x46535852  # "RXSF" little-endian
STATE_MAGIC = 0x53535852  # "RXSS"
VERSION = 1
FLOW_HEADER = struct.Struct("<IIQQ8x")
RECORD = struct.Struct("<IIQQQB7x")
_RECORD_CHECK, _RECORD_META = struct.Struct("<II"), struct.Struct("<QQQB7x")  # RECORD's two parts
STATE = struct.Struct("<IIQQQQQ")
CRC_FROM = 8  # the CRC covers the record from seqNo on
MAX_PAYLOAD = 1 << 16

SOURCE_GATEWAY = 0  # made by the gateway itself (a throttle rejection, NotApplied)
SOURCE_OUTPUT = 1  # the engine's output ring
SOURCE_REJECT = 2  # the sequencer's reject ring
_SOURCES = 3


class StoreError(RuntimeError):
    """A store file is not a session store (wrong magic or version)."""


class SessionStore:
    """One session's flow and state. Not thread-safe; one gateway process owns it."""

    def __init__(self, directory: Path, session_id: int) -> None:
        self.directory = Path(directory)
        self.session_id = session_id
        self.directory.mkdir(parents=True, exist_ok=True)
        self.flow_path = self.directory / f"session-{session_id}.flow"
        self.state_path = self.directory / f"session-{session_id}.state"
        self._pending = bytearray()  # records not yet written
        self._pending_from = 0  # file offset of the first pending byte
        self._offsets = array("q")  # file offset of record seqNo i+1
        self._stored = [(0, 0)] * _SOURCES  # per source: (ring created, position) of the newest
        self.truncated_bytes = 0  # torn tail cut away at open
        self._open_flow()
        self._open_state()

    # ---------------------------------------------------------------- files

    def _open_flow(self) -> None:
        if not self.flow_path.exists():
            self._write_flow(0, 0)
        self._fd = os.open(self.flow_path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, FLOW_HEADER.size, 0)
        if len(head) < FLOW_HEADER.size:
            raise StoreError(f"{self.flow_path}: {len(head)} bytes, shorter than a flow header")
        magic, version, hi, lo = FLOW_HEADER.unpack(head)
        if magic != FLOW_MAGIC or version != VERSION:
            raise StoreError(f"{self.flow_path}: not a session flow file (magic {magic:#x}, version {version})")
        self.uuid = (hi, lo)
        at = FLOW_HEADER.size
        with open(self.flow_path, "rb") as fh:
            data = fh.read()
        while at + RECORD.size <= size:
            length, crc, seq, created, position, source = RECORD.unpack_from(data, at)
            end = at + RECORD.size + length
            if (length > MAX_PAYLOAD or end > size or seq != len(self._offsets) + 1 or source >= _SOURCES
                    or zlib.crc32(memoryview(data)[at + CRC_FROM:end]) != crc):
                break
            self._offsets.append(at)
            if source != SOURCE_GATEWAY:
                self._stored[source] = (created, position)
            at = end
        if at < size:
            self.truncated_bytes = size - at
            os.ftruncate(self._fd, at)
        self._end = at
        self._pending_from = at

    def _write_flow(self, hi: int, lo: int) -> None:
        """A new, empty flow for identity (hi, lo), in place of the old by rename."""
        tmp = self.flow_path.with_suffix(".flow.tmp")
        with open(tmp, "wb") as fh:
            fh.write(FLOW_HEADER.pack(FLOW_MAGIC, VERSION, hi, lo))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.flow_path)
        fsync_directory(self.directory)

    def _open_state(self) -> None:
        if not self.state_path.exists() or self.state_path.stat().st_size != STATE.size:
            self.state_path.write_bytes(STATE.pack(STATE_MAGIC, VERSION, 0, 0, 1, 0, 0))
        self._state_fd = os.open(self.state_path, os.O_RDWR)
        self._state = mmap.mmap(self._state_fd, STATE.size)
        magic, version, hi, lo, next_in, created, start = STATE.unpack_from(self._state)
        if magic != STATE_MAGIC or version != VERSION:
            raise StoreError(f"{self.state_path}: not a session state file (magic {magic:#x}, version {version})")
        if (hi, lo) != self.uuid:  # counts of another identity: this one has applied nothing
            STATE.pack_into(self._state, 0, STATE_MAGIC, VERSION, *self.uuid, 1, 0, 0)
        self._next_in_view = memoryview(self._state).cast("B")[24:32].cast("Q")
        self._held_at = 0  # the lowest client number staged, not yet published (``hold``)
        self._wanted = 0  # where the count was asked to go meanwhile

    # ---------------------------------------------------------------- identity

    def reset(self, hi: int, lo: int, in_created: int = 0, in_from: int = 0) -> None:
        """A new FIXP identity (Negotiate): an empty flow numbered from 1, nothing applied;
        its messages enter the inbound ring created at ``in_created`` from ``in_from`` on."""
        self.flush()
        os.close(self._fd)
        self._write_flow(hi, lo)
        self._offsets = array("q")
        self._stored = [(0, 0)] * _SOURCES
        self._open_flow()
        STATE.pack_into(self._state, 0, STATE_MAGIC, VERSION, hi, lo, 1, in_created, in_from)

    def set_inbound_start(self, in_created: int, in_from: int) -> None:
        """Say where this identity's messages begin in the inbound ring (nothing else of the
        state changes)."""
        hi, lo = self.uuid
        STATE.pack_into(self._state, 0, STATE_MAGIC, VERSION, hi, lo, self.next_in, in_created, in_from)

    @property
    def inbound_start(self) -> tuple[int, int]:
        """(ring creation time, position) where this identity's messages begin in the
        gateway's inbound ring; (0, 0) when unknown."""
        return STATE.unpack_from(self._state)[5:7]

    # ---------------------------------------------------------------- server flow

    @property
    def next_seq(self) -> int:
        """The sequence number the next stored message gets."""
        return len(self._offsets) + 1

    def stored_through(self, source: int, created: int) -> int:
        """The newest position of ring ``source`` (the incarnation created at ``created``)
        already in the flow; -1 when none."""
        c, p = self._stored[source]
        return p if c == created and c != 0 else -1

    def append(self, payload: bytes | memoryview, source: int = SOURCE_GATEWAY, created: int = 0,
               position: int = 0) -> int:
        """Store one message; returns its sequence number. Written at the next ``flush``."""
        length = len(payload)
        if length > MAX_PAYLOAD:
            raise ValueError(f"a stored message is at most {MAX_PAYLOAD} bytes, got {length}")
        seq = self.next_seq
        body = _RECORD_META.pack(seq, created, position, source) + bytes(payload)
        self._offsets.append(self._end)
        self._pending += _RECORD_CHECK.pack(length, zlib.crc32(body))
        self._pending += body
        self._end += RECORD.size + length
        if source != SOURCE_GATEWAY:
            self._stored[source] = (created, position)
        return seq

    def append_events(self, region: np.ndarray, rows: np.ndarray, sizes: np.ndarray, positions: np.ndarray,
                      source: int, created: int) -> np.ndarray:
        """Store the ring messages ``region[rows]`` (``sizes`` bytes each, at ring
        ``positions``, ascending) in one compiled pass; returns them as SOFH frames."""
        from ringex.gateways.outbound import packed_events  # compiled: imported when first used

        records, offsets, frames = packed_events(region, rows, sizes, positions, self.next_seq, created, source,
                                                 self._end)
        self.append_records(records, offsets, source, created, int(positions[-1]))
        return frames

    def append_records(self, records: np.ndarray, offsets: np.ndarray, source: int, created: int,
                       position: int) -> None:
        """Store records made in compiled code (``outbound``, ``fix_outbound``): numbered
        from ``next_seq`` on, ``offsets`` where each starts in the flow (from the store's end
        on), the last from ring ``source``'s ``position``. Written at the next ``flush``."""
        self._offsets.frombytes(offsets.tobytes())  # (native int64, as the array's "q")
        self._pending += memoryview(records)
        self._end += len(records)
        if source != SOURCE_GATEWAY:
            self._stored[source] = (created, position)

    @property
    def end(self) -> int:
        """Where the next record will start in the flow file."""
        return self._end

    def flush(self) -> None:
        """Write what was appended since the last flush (one write)."""
        if not self._pending:
            return
        view = memoryview(self._pending)
        at = self._pending_from
        while view:
            n = os.pwrite(self._fd, view, at)
            view, at = view[n:], at + n
        self._pending_from = self._end
        self._pending = bytearray()

    def read(self, from_seq: int, count: int) -> list[bytes]:
        """Messages ``from_seq`` .. ``from_seq + count - 1`` (which must exist)."""
        if from_seq < 1 or count < 0 or from_seq + count > self.next_seq:
            raise ValueError(f"messages {from_seq}..{from_seq + count - 1} are not all stored "
                             f"(the flow holds 1..{self.next_seq - 1})")
        if not count:
            return []
        self.flush()
        first = self._offsets[from_seq - 1]
        last = from_seq + count - 1
        end = self._offsets[last] if last < len(self._offsets) else self._end
        data = os.pread(self._fd, end - first, first)
        out: list[bytes] = []
        at = 0
        for _ in range(count):
            length = int.from_bytes(data[at:at + 4], "little")
            out.append(data[at + RECORD.size: at + RECORD.size + length])
            at += RECORD.size + length
        return out

    # ---------------------------------------------------------------- client flow

    @property
    def next_in(self) -> int:
        """The next client sequence number not yet applied."""
        return int(self._next_in_view[0])

    @next_in.setter
    def next_in(self, value: int) -> None:
        held = self._held_at
        if held and value > held:  # not past a message the engine has not been given
            if value > self._wanted:
                self._wanted = value
            value = held
        self._next_in_view[0] = value

    def hold(self, seq: int) -> None:
        """Client message ``seq`` is staged for the engine, not yet published: until
        ``release``, the count on disk stays at or below it, whatever moves it (a later
        message answered by the gateway itself, a session message), so that a kill before
        the publish never leaves it counted past a message the engine never saw. A hold
        already in place (an earlier message staged) stays."""
        if not self._held_at:
            self._held_at = max(seq, self.next_in)
            self._wanted = 0

    def release(self, still_staged: int = 0) -> None:
        """The staged messages are published (the caller counted them with ``applied``):
        the count goes where it was asked to go meanwhile, up to ``still_staged``, the
        lowest client number still staged (0: none), which it holds at from now on."""
        wanted = self._wanted
        self._held_at, self._wanted = still_staged, 0
        if wanted > self.next_in:
            self.next_in = wanted

    @property
    def holding_back(self) -> bool:
        """Whether the count on disk is held below where it was asked to go."""
        return self._wanted > self._held_at > 0

    def applied(self, seq: int) -> None:
        """Client message ``seq`` (and every one before it) is published or answered: the
        count only moves forward."""
        if seq >= self.next_in:
            self.next_in = seq + 1

    def close(self) -> None:
        if self._fd < 0:
            return
        self.flush()
        os.close(self._fd)
        self._fd = -1
        self._next_in_view.release()
        self._state.close()
        os.close(self._state_fd)
