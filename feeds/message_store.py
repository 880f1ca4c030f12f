"""The publisher's message store: every ITCH message of the session, by MoldUDP64 sequence number.

It serves retransmission requests and is how a restarted publisher knows what it already
published (so no message is sent twice under two numbers, and none is skipped) and what its
book was. Files, in the feed's directory::

    store-<first seq, 12 digits>.log     segments, oldest first; each one opens with
                                         a header and a checkpoint of the book

    record   0  kind    u8    'H' 'O' 'M' 'P' 'Z'
             1  length  u16   payload bytes (little-endian, as every integer of ours)
             3  payload

    H  session (10 ASCII bytes), first sequence number u64     the segment's first record
    O  reference u64, locate u16, side u8, shares u32,         one resting order of the book
       price u32                                              as the segment began
                                                              (checkpoint, in time priority)
    M  one ITCH message                                        sequence number: the segment's
                                                              first + the M records before it
    P  ring id u64, ring position u64, crc32 u32 of the        the end of one append (a batch
       batch's bytes since the previous P (or the checkpoint), of engine events): where the
       the stamp seq u64 of the last event, then n u16 and     publisher resumes, and the
       n pairs (order id u64, generation u32)                 translator's open group
    T  locate u16, trading state (1 ASCII byte)               a stock's trading state as the
                                                              segment began (checkpoint)
    Z  (empty)                                                 the session ended (End of Session
                                                              sent); the next run is a new one

Crash semantics. Each append (M records and their P) is one ``write``, not fsynced: a process
crash loses nothing the kernel has; a host crash loses a tail, and the subscribers, who may
have seen those messages, see the numbers reused (as with any feed whose publisher lost its
disk). On open, a segment is read up to its last P whose CRC matches (a torn or corrupt tail
is cut away: ``cut_bytes``); a segment without a valid H is removed. The newest segment's
checkpoint plus its M records are the book; every retained segment is indexed for
retransmission.

Retention: when the messages retained exceed ``retain_messages``, whole segments go, oldest
first, at the roll to a new segment; a request for them is answered as no longer retained.
"""

from __future__ import annotations

import os
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.feeds.feed_book import FeedBook

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["MessageStore", "Recovered", "StoreError", "SESSION_LEN", "warm_up"]

SESSION_LEN = 10
RECORD = struct.Struct("<cH")  # kind, payload length
HEADER = struct.Struct(f"<{SESSION_LEN}sQ")
ORDER = struct.Struct("<QHBII")
POSITION = struct.Struct("<QQIQH")
EMPTIED = struct.Struct("<QI")
K_HEADER, K_ORDER, K_STATE, K_MESSAGE, K_POSITION, K_END = b"H", b"O", b"T", b"M", b"P", b"Z"
STATE = struct.Struct("<Hc")
SEGMENT_MESSAGES = 1 << 20


class StoreError(RuntimeError):
    """The store cannot be used (a segment that is not ours)."""


@dataclass
class Segment:
    path: Path
    first_seq: int
    session: str
    offsets: array = field(default_factory=lambda: array("q"))  # of each M record's payload
    lengths: array = field(default_factory=lambda: array("H"))
    fd: int = -1

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.offsets)


@dataclass
class Recovered:
    """What the store held at open: where to resume and the book to resume with."""

    session: str = ""  # "" = an empty store
    next_seq: int = 1
    ended: bool = False
    ring_id: int = 0
    position: int = -1  # ring position the last append covered (exclusive); -1 = none
    emptied: dict[int, int] = field(default_factory=dict)
    emptied_seq: int = 0
    cut_bytes: int = 0
    book: FeedBook = field(default_factory=FeedBook)
    book_messages: list[bytes] = field(default_factory=list)  # the newest segment's M records


@njit(cache=True)
def _records(buf, offsets, n, out):
    """Messages 0 .. n-1 of ``buf`` as M records into ``out`` (3 + length bytes each)."""
    at = 0
    for i in range(n):
        length = offsets[i + 1] - offsets[i]
        out[at] = 77  # 'M'
        out[at + 1] = length & 0xFF
        out[at + 2] = (length >> 8) & 0xFF
        for k in range(length):
            out[at + 3 + k] = buf[offsets[i] + k]
        at += 3 + length
    return at


def warm_up() -> None:
    """Compile (or load from the cache) the record builder."""
    _records(np.zeros(1, np.uint8), np.array([0, 1], np.int64), 1, np.zeros(4, np.uint8))


if RECORD.size != 3:
    raise RuntimeError("the M record's header is not the 3 bytes _records writes")


def _name(first_seq: int) -> str:
    return f"store-{first_seq:012d}.log"


def _record(kind: bytes, payload: bytes) -> bytes:
    return RECORD.pack(kind, len(payload)) + payload


class MessageStore:
    """Append-only, segmented, bounded store of one publisher's sequenced messages."""

    def __init__(self, directory: str | os.PathLike[str], retain_messages: int,
                 segment_messages: int = SEGMENT_MESSAGES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.retain_messages = retain_messages
        self.segment_messages = segment_messages
        self.segments: list[Segment] = []
        self._batch_crc = 0
        self.recovered = self._open()

    # -- reading back ----------------------------------------------------------------------

    def _open(self) -> Recovered:
        rec = Recovered()
        for path in sorted(self.directory.glob("store-*.log")):
            seg = self._scan(path, rec, newest=False)
            if seg is not None:
                self.segments.append(seg)
        if self.segments:
            # A new session always starts at sequence number 1 and removes the previous one's
            # segments after writing its first: segments of another session than the lowest
            # one's are what a crash in between left
            current = self.segments[0].session
            for seg in [s for s in self.segments if s.session != current]:
                seg.path.unlink(missing_ok=True)
            self.segments = [s for s in self.segments if s.session == current]
            last = self.segments[-1]
            # the book, and where the last append left off, from the newest good segment
            fresh = Recovered(cut_bytes=rec.cut_bytes)
            self._scan(last.path, fresh, newest=True)
            rec = fresh
            rec.session = last.session
            rec.next_seq = last.next_seq
            last.fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
        return rec

    def _scan(self, path: Path, rec: Recovered, newest: bool) -> Segment | None:
        data = path.read_bytes()
        at, n = 0, len(data)
        seg: Segment | None = None
        good = 0  # bytes up to the last valid P (or the checkpoint's end)
        batch_from = 0
        book_msgs: list[bytes] = []
        book_msgs_good = 0
        checkpoint: list[tuple[int, int, int, int, int]] = []
        valid = 0  # M records up to the last valid P
        states: dict[int, bytes] = {}
        while at + RECORD.size <= n:
            kind, length = RECORD.unpack_from(data, at)
            start, end = at + RECORD.size, at + RECORD.size + length
            if end > n:
                break
            payload = data[start:end]
            if seg is None:
                if kind != K_HEADER or length != HEADER.size:
                    break
                session, first = HEADER.unpack(payload)
                seg = Segment(path, first, session.decode("ascii", "replace"))
                good = batch_from = end
            elif kind == K_ORDER and length == ORDER.size and not seg.offsets:
                checkpoint.append(ORDER.unpack(payload))
                good = batch_from = end
            elif kind == K_STATE and length == STATE.size and not seg.offsets:
                locate, state = STATE.unpack(payload)
                states[locate] = state
                good = batch_from = end
            elif kind == K_MESSAGE:
                seg.offsets.append(start)
                seg.lengths.append(length)
                if newest:
                    book_msgs.append(payload)
            elif kind == K_POSITION and length >= POSITION.size:
                ring_id, position, crc, emptied_seq, count = POSITION.unpack_from(payload)
                if length != POSITION.size + count * EMPTIED.size or zlib.crc32(data[batch_from:at]) != crc:
                    break
                rec.ring_id, rec.position = ring_id, position
                rec.emptied = dict(EMPTIED.iter_unpack(payload[POSITION.size:]))
                rec.emptied_seq = emptied_seq
                good = batch_from = end
                book_msgs_good = len(book_msgs)
                valid = len(seg.offsets)
            elif kind == K_END and length == 0:
                rec.ended = True
                good = batch_from = end
                book_msgs_good = len(book_msgs)
                valid = len(seg.offsets)
            else:
                break
            at = end
        if seg is None:
            path.unlink()
            return None
        del seg.offsets[valid:]
        del seg.lengths[valid:]
        if good < n:
            rec.cut_bytes += n - good
            with open(path, "r+b") as f:
                f.truncate(good)
        if newest:
            book = rec.book
            book.clear()
            for ref, locate, side, shares, price in checkpoint:
                book.add(ref, locate, side, shares, price)
            book.states.update(states)
            rec.book_messages = book_msgs[:book_msgs_good]
        return seg

    @property
    def first_seq(self) -> int:
        """The oldest sequence number still retained (== ``next_seq`` when none is)."""
        return self.segments[0].first_seq if self.segments else 1

    @property
    def next_seq(self) -> int:
        return self.segments[-1].next_seq if self.segments else 1

    @property
    def session(self) -> str:
        return self.segments[-1].session if self.segments else ""

    def read(self, seq: int, count: int, max_bytes: int) -> list[bytes]:
        """Messages ``seq`` .. as many as ``count`` allows whose sizes (2-byte length each
        included) add up to at most ``max_bytes``; [] when ``seq`` is not retained."""
        out: list[bytes] = []
        used = 0
        for seg in self.segments:
            if not seg.first_seq <= seq < seg.next_seq:
                continue
            fd = os.open(seg.path, os.O_RDONLY)
            try:
                while count > 0 and seq < seg.next_seq:
                    i = seq - seg.first_seq
                    length = seg.lengths[i]
                    if used + 2 + length > max_bytes:
                        return out
                    out.append(os.pread(fd, length, seg.offsets[i]))
                    used += 2 + length
                    seq += 1
                    count -= 1
            finally:
                os.close(fd)
        return out

    # -- writing ---------------------------------------------------------------------------

    def start_session(self, session: str, book: FeedBook) -> None:
        """A new session from sequence number 1, its segment checkpointing ``book``; the
        previous sessions' segments go (their messages can no longer be asked for). The new
        segment replaces the old one of the same name atomically, then the rest go: a crash
        in between leaves segments of two sessions, and opening keeps the new one's."""
        old = self.segments
        self.segments = []
        for seg in old:
            self._close_segment(seg)
        seg = self._new_segment(session.encode("ascii"), 1, book)
        for o in old:
            if o.path != seg.path:
                o.path.unlink(missing_ok=True)

    def append(self, messages: list[bytes], ring_id: int, position: int, emptied: dict[int, int],
               emptied_seq: int, book: FeedBook | Callable[[], FeedBook]) -> int:
        """Store ``messages`` (the next sequence numbers, in order) and where they came from,
        in one write; returns the first one's sequence number. ``book`` is the book with
        ``messages`` applied: when the segment is full, the next one starts with it."""
        seg = self.segments[-1]
        first = seg.next_seq
        parts: list[bytes] = []
        at = os.lseek(seg.fd, 0, os.SEEK_END)
        for msg in messages:
            seg.offsets.append(at + RECORD.size)
            seg.lengths.append(len(msg))
            rec = _record(K_MESSAGE, msg)
            parts.append(rec)
            at += len(rec)
        batch = b"".join(parts)
        tail = POSITION.pack(ring_id, position, zlib.crc32(batch), emptied_seq, len(emptied)) + b"".join(
            EMPTIED.pack(oid, gen) for oid, gen in emptied.items())
        os.write(seg.fd, batch + _record(K_POSITION, tail))
        if len(seg.offsets) >= self.segment_messages:
            self._roll(book() if callable(book) else book, ring_id, position, emptied, emptied_seq)
        return first

    def append_packed(self, buf: np.ndarray, offsets: np.ndarray, ring_id: int, position: int,
                      emptied: dict[int, int], emptied_seq: int, book: Callable[[], FeedBook]) -> int:
        """``append`` for messages back to back in ``buf`` (message ``i`` at ``offsets[i]`` ..
        ``offsets[i + 1]``): the records built in one compiled pass, the index in two array
        operations; ``book`` (called only when the segment rolls) gives the book."""
        seg = self.segments[-1]
        first = seg.next_seq
        n = len(offsets) - 1
        lengths = np.diff(offsets)
        records = np.empty(int(lengths.sum()) + RECORD.size * n, np.uint8)
        size = _records(buf, offsets, n, records)
        at = os.lseek(seg.fd, 0, os.SEEK_END)
        starts = at + RECORD.size + np.concatenate(([0], np.cumsum(lengths[:-1] + RECORD.size)))
        seg.offsets.frombytes(starts.astype(np.int64).tobytes())
        seg.lengths.frombytes(lengths.astype(np.uint16).tobytes())
        batch = records[:size].tobytes()
        tail = POSITION.pack(ring_id, position, zlib.crc32(batch), emptied_seq, len(emptied)) + b"".join(
            EMPTIED.pack(oid, gen) for oid, gen in emptied.items())
        os.write(seg.fd, batch + _record(K_POSITION, tail))
        if len(seg.offsets) >= self.segment_messages:
            self._roll(book(), ring_id, position, emptied, emptied_seq)
        return first

    def end_session(self) -> None:
        if self.segments:
            os.write(self.segments[-1].fd, _record(K_END, b""))

    def _roll(self, book: FeedBook, ring_id: int, position: int, emptied: dict[int, int], emptied_seq: int) -> None:
        """A new segment that opens with ``book`` (everything stored so far applied) and where
        the last append left off, so that it is a whole recovery point on its own."""
        last = self.segments[-1]
        self._close_segment(last)
        seg = self._new_segment(last.session.encode("ascii"), last.next_seq, book)
        tail = POSITION.pack(ring_id, position, zlib.crc32(b""), emptied_seq, len(emptied)) + b"".join(
            EMPTIED.pack(oid, gen) for oid, gen in emptied.items())
        os.write(seg.fd, _record(K_POSITION, tail))
        while len(self.segments) > 1 and seg.next_seq - self.segments[1].first_seq >= self.retain_messages:
            old = self.segments.pop(0)
            old.path.unlink(missing_ok=True)

    def _new_segment(self, session: bytes, first_seq: int, book: FeedBook) -> Segment:
        if len(session) != SESSION_LEN:
            raise ValueError(f"a MoldUDP64 session is {SESSION_LEN} bytes, got {session!r}")
        path = self.directory / _name(first_seq)
        parts = [_record(K_HEADER, HEADER.pack(session, first_seq))]
        parts += [_record(K_STATE, STATE.pack(locate, state)) for locate, state in sorted(book.states.items())]
        parts += [_record(K_ORDER, ORDER.pack(ref, o.locate, o.side, o.shares, o.price))
                  for ref, o in book.in_priority()]
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(parts))
        os.replace(tmp, path)
        seg = Segment(path, first_seq, session.decode("ascii"))
        seg.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.segments.append(seg)
        return seg

    @staticmethod
    def _close_segment(seg: Segment) -> None:
        if seg.fd >= 0:
            os.close(seg.fd)
            seg.fd = -1

    def close(self) -> None:
        for seg in self.segments:
            self._close_segment(seg)
