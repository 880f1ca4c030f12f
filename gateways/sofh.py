"""FIX Simple Open Framing Header (SOFH 1.0): how the binary gateway cuts a TCP stream into messages.

Every message on the stream is preceded by a six-byte header, both fields unsigned integers
in network byte order (big-endian), whatever the byte order of the message itself::

    0   Message_Length   uint32  the whole message, header included, in bytes
    4   Encoding_Type    uint16  what the payload is (0xEB50: SBE 1.0 little-endian)
    6   payload          Message_Length - 6 bytes

(FIX Trading Community, "Simple Open Framing Header", v1.0 Draft Standard.) A message is
1..n bytes, so the smallest legal Message_Length is 7. A length that is below that or above
what the receiver accepts, or an encoding the receiver does not speak, leaves the stream
without a trustworthy boundary: nothing after it can be framed, so the scan stops there and
says why, and the session layer ends the connection (FIXP Terminate).

The scan is one compiled call per received buffer (``scan``): it walks the length prefixes of
every complete frame and returns their offsets, so the per-message work in Python is none;
``FrameReader`` keeps the bytes of a partial frame for the next receive. Encoding a frame is
``header`` (for building one by hand) or ``write_header`` (into a send buffer).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

# --- the header -------------------------------------------------------------------------------
MESSAGE_LENGTH_OFFSET = 0
MESSAGE_LENGTH_SIZE = 4
ENCODING_TYPE_OFFSET = MESSAGE_LENGTH_OFFSET + MESSAGE_LENGTH_SIZE
ENCODING_TYPE_SIZE = 2
HEADER_LENGTH = ENCODING_TYPE_OFFSET + ENCODING_TYPE_SIZE
#: A message is at least one byte after its header.
MIN_MESSAGE_LENGTH = HEADER_LENGTH + 1
MAX_MESSAGE_LENGTH = (1 << 32) - 1

# --- encoding types (the specification's table) ---------------------------------------------
SBE_1_0_BIG_ENDIAN = 0x5BE0
SBE_1_0_LITTLE_ENDIAN = 0xEB50
FIX_GPB_1_0 = 0x4700
FIX_TAG_VALUE = 0xF000
FIX_JSON = 0xF500

# --- what a scan found ------------------------------------------------------------------------
#: Every complete frame was taken (or ``frames`` filled up); the bytes from ``stop`` on are the
#: beginning of a frame still to come.
SCAN_OK = 0
#: The frame at ``stop`` declares a Message_Length below ``MIN_MESSAGE_LENGTH``.
SCAN_TOO_SHORT = 1
#: The frame at ``stop`` declares a Message_Length above the receiver's limit.
SCAN_TOO_LONG = 2
#: The frame at ``stop`` has an Encoding_Type other than the one the receiver expects.
SCAN_WRONG_ENCODING = 3

SCAN_REASONS = {
    SCAN_TOO_SHORT: "MessageTooShort",
    SCAN_TOO_LONG: "MessageTooLong",
    SCAN_WRONG_ENCODING: "WrongEncodingType",
}

# Columns of the frames array a scan fills: where each payload starts, and its length.
FRAME_PAYLOAD = 0
FRAME_LENGTH = 1


@njit(cache=True, nogil=True)
def scan(buf: np.ndarray, start: int, end: int, max_length: int, encoding: int,
         frames: np.ndarray) -> tuple[int, int, int]:
    """Frame ``buf[start:end]`` (uint8). Each complete frame's payload offset and length go
    into the next row of ``frames`` ((k, 2) int64). Returns ``(count, stop, status)``: the
    frames found, where scanning stopped (the first byte not yet framed) and a ``SCAN_*``
    status; on an error ``stop`` is the offset of the offending header."""
    count = 0
    at = start
    while count < frames.shape[0] and end - at >= HEADER_LENGTH:
        length = ((np.int64(buf[at]) << 24) | (np.int64(buf[at + 1]) << 16)
                  | (np.int64(buf[at + 2]) << 8) | np.int64(buf[at + 3]))
        if length < MIN_MESSAGE_LENGTH:
            return count, at, SCAN_TOO_SHORT
        if length > max_length:
            return count, at, SCAN_TOO_LONG
        if ((np.int64(buf[at + 4]) << 8) | np.int64(buf[at + 5])) != encoding:
            return count, at, SCAN_WRONG_ENCODING
        if end - at < length:
            break  # the rest of this frame has not arrived
        frames[count, FRAME_PAYLOAD] = at + HEADER_LENGTH
        frames[count, FRAME_LENGTH] = length - HEADER_LENGTH
        count += 1
        at += length
    return count, at, SCAN_OK


def header(payload_length: int, encoding: int = SBE_1_0_LITTLE_ENDIAN) -> bytes:
    """The six header bytes for a payload of ``payload_length`` bytes."""
    length = payload_length + HEADER_LENGTH
    if not MIN_MESSAGE_LENGTH <= length <= MAX_MESSAGE_LENGTH:
        raise ValueError(f"a SOFH payload is 1..{MAX_MESSAGE_LENGTH - HEADER_LENGTH} bytes, got {payload_length}")
    if not 0 <= encoding <= 0xFFFF:
        raise ValueError(f"an encoding type is 16 bits, got {encoding:#x}")
    return length.to_bytes(MESSAGE_LENGTH_SIZE, "big") + encoding.to_bytes(ENCODING_TYPE_SIZE, "big")


def write_header(buf: np.ndarray | bytearray | memoryview, at: int, payload_length: int,
                 encoding: int = SBE_1_0_LITTLE_ENDIAN) -> int:
    """Write the header of a ``payload_length``-byte payload at ``buf[at:]``; returns where
    the payload goes."""
    buf[at: at + HEADER_LENGTH] = np.frombuffer(header(payload_length, encoding), np.uint8)
    return at + HEADER_LENGTH


class FramingError(Exception):
    """The stream has no trustworthy boundary from ``at`` (its offset in the stream) on."""

    def __init__(self, status: int, at: int, declared_length: int, encoding: int) -> None:
        self.status = status
        self.reason = SCAN_REASONS[status]
        self.at = at
        self.declared_length = declared_length
        self.encoding = encoding
        super().__init__(f"{self.reason} at stream offset {at}: Message_Length {declared_length}, "
                         f"Encoding_Type {encoding:#06x}")


class ConnectionClosed(Exception):
    """The peer closed its side of the stream."""


@dataclass(frozen=True)
class Frames:
    """The complete frames of one receive: ``payload(i)`` is the bytes of the ``i``-th.

    Valid until the reader's next ``receive``/``feed``."""

    buf: np.ndarray
    rows: np.ndarray  # (count, 2): FRAME_PAYLOAD, FRAME_LENGTH

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def payload(self, i: int) -> np.ndarray:
        at, n = self.rows[i]
        return self.buf[at: at + n]


class FrameReader:
    """Frames one connection's byte stream: each ``receive`` (or ``feed``) adds what arrived
    and returns the frames now complete; the bytes of an unfinished frame stay for the next.

    The buffer is fixed: room for ``max_length`` more than a read's worth, so a frame of the
    largest accepted size always fits and memory never grows with what a peer sends. A
    framing error is raised once, as ``FramingError``; the reader is unusable after it
    (``failed``), as the stream is."""

    def __init__(self, max_length: int, encoding: int = SBE_1_0_LITTLE_ENDIAN, batch: int = 256,
                 read_size: int = 1 << 16) -> None:
        if not MIN_MESSAGE_LENGTH <= max_length <= MAX_MESSAGE_LENGTH:
            raise ValueError(f"max_length must be {MIN_MESSAGE_LENGTH}..{MAX_MESSAGE_LENGTH}, got {max_length}")
        if batch < 1 or read_size < 1:
            raise ValueError("batch and read_size must be positive")
        self.max_length = max_length
        self.encoding = encoding
        self.read_size = read_size
        self._buf = np.zeros(max_length + read_size, np.uint8)
        self._frames = np.zeros((batch, 2), np.int64)
        self._start = 0  # first byte not yet framed
        self._end = 0  # one past the last byte received
        self._base = 0  # stream offset of buf[0]
        self.failed: FramingError | None = None
        self.bytes_received = 0
        self.frames_received = 0

    @property
    def pending(self) -> int:
        """Bytes received that belong to a frame not yet complete."""
        return self._end - self._start

    def receive(self, sock: socket.socket) -> Frames:
        """One ``recv_into`` from the non-blocking ``sock``, then the frames complete so far.
        Raises ``ConnectionClosed`` at end of stream, ``FramingError`` on a bad header."""
        self._check()
        self._make_room()
        view = memoryview(self._buf)[self._end:]
        try:
            n = sock.recv_into(view, min(len(view), self.read_size))
        except (BlockingIOError, InterruptedError):
            n = -1
        finally:
            view.release()
        if n == 0:
            raise ConnectionClosed("peer closed the connection" +
                                   (f" inside a frame ({self.pending} bytes pending)" if self.pending else ""))
        if n > 0:
            self._end += n
            self.bytes_received += n
        return self._frames_now()

    def feed(self, data: bytes | bytearray | memoryview) -> Frames:
        """Add ``data`` (any length) as if received; returns the frames complete so far.
        Frames of an earlier call must have been used: their bytes may move."""
        self._check()
        data = memoryview(data).cast("B")
        if len(data) == 0:
            return self._frames_now()
        found_rows: list[np.ndarray] = []
        while len(data):
            self._make_room()
            room = min(len(self._buf) - self._end, len(data))
            self._buf[self._end: self._end + room] = np.frombuffer(data[:room], np.uint8)
            self._end += room
            self.bytes_received += room
            data = data[room:]
            if len(data):  # more to come: take what is complete now, so the buffer frees up
                batch = self._frames_now()
                found_rows.append(np.array([bytes(batch.payload(i)) for i in range(len(batch))], object))
        last = self._frames_now()
        if not found_rows:
            return last
        # Rare (a feed larger than the buffer): hand back copies in one contiguous buffer.
        payloads = [p for rows in found_rows for p in rows] + [bytes(last.payload(i)) for i in range(len(last))]
        return _frames_of(payloads)

    def _check(self) -> None:
        if self.failed is not None:
            raise self.failed

    def _make_room(self) -> None:
        """Move the unfinished frame to the front when less than a read (or less than the
        rest of that frame) fits behind it."""
        if len(self._buf) - self._end >= self.read_size and self._start < len(self._buf) // 2:
            return
        pending = self._end - self._start
        if self._start:
            self._buf[:pending] = self._buf[self._start: self._end]
            self._base += self._start
            self._start, self._end = 0, pending

    def _frames_now(self) -> Frames:
        count, stop, status = scan(self._buf, self._start, self._end, self.max_length, self.encoding,
                                   self._frames)
        rows = self._frames[:count].copy()
        self._start = stop
        self.frames_received += count
        if status != SCAN_OK:
            b = self._buf[stop: stop + HEADER_LENGTH]
            self.failed = FramingError(status, self._base + stop, int.from_bytes(bytes(b[:4]), "big"),
                                       int.from_bytes(bytes(b[4:6]), "big"))
            if count == 0:
                raise self.failed
        elif count == self._frames.shape[0] and self._end - self._start >= HEADER_LENGTH:
            more = self._frames_now()  # a full batch: the rest too, so nothing waits for a read
            if len(more):
                rows = np.concatenate([rows, more.rows])
        return Frames(self._buf, rows)


def _frames_of(payloads: list[bytes]) -> Frames:
    buf = np.frombuffer(b"".join(payloads), np.uint8)
    rows = np.zeros((len(payloads), 2), np.int64)
    at = 0
    for i, p in enumerate(payloads):
        rows[i] = at, len(p)
        at += len(p)
    return Frames(buf, rows)
