"""MoldUDP64 1.00 packets: build, parse, and the retransmission request.  Pure: no sockets.

Downstream packet (multicast, and the unicast answer to a request)::

    0    Session           10  Alpha    the session the packet belongs to
    10   Sequence Number    8  uint64   sequence number of the packet's first message
    18   Message Count      2  uint16   number of message blocks that follow
    20   message blocks, back to back, each:
           +0   Message Length   2  uint16   bytes of message data, not counting itself
           +2   Message Data     Message Length bytes (here: one ITCH message)

A Message Count of 0 is a heartbeat and 0xFFFF (:data:`END_OF_SESSION`) is end of session;
neither carries message blocks, and both carry the *next expected* sequence number.  The
messages of a packet are numbered consecutively from its Sequence Number.

Request packet (a receiver asks a re-request server to send messages again)::

    0    Session                   10  Alpha
    10   Sequence Number            8  uint64   first message wanted
    18   Requested Message Count    2  uint16   how many
    20   (end: a request is always 20 bytes)

All numbers are big-endian.  The session is 10 ASCII characters; encoders take up to 10 and
pad them on the right with spaces, as ITCH pads its Alpha fields, and the parsers return the
10 raw bytes so that a request can echo the session exactly.

Parsing is strict: a packet whose Message Count promises more blocks than it holds, a block
length that runs past the end, bytes after the last block (or after a heartbeat / end of
session header), a Sequence Number of 0 (numbering starts at 1, and heartbeats carry the next
one), messages numbered past 2**64 - 1, a request that is not 20 bytes or asks for nothing:
all raise :class:`MoldError` (a ``ValueError``), never another error.  What the parsers accept
the encoders produce, byte for byte.

:class:`PacketBuilder` is the publisher's side: it packs messages into a preallocated buffer
under a byte limit (the whole UDP payload, header included: what has to fit the MTU), says
when the packet is full, and numbers packets consecutively.  ``claim`` hands out the space
of one message so that :func:`ringex.feeds.itch.pack_into` can write it in place.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, NamedTuple

__all__ = [
    "MoldError", "Field", "DOWNSTREAM_HEADER", "REQUEST", "MoldPacket", "MoldRequest",
    "PacketBuilder", "encode_session", "encode_packet", "encode_packets", "encode_heartbeat", "encode_end_of_session",
    "parse_packet", "encode_request", "parse_request", "HEADER_LENGTH", "REQUEST_LENGTH",
    "SESSION_LENGTH", "SESSION_OFFSET", "SEQUENCE_NUMBER_OFFSET", "MESSAGE_COUNT_OFFSET",
    "BLOCK_LENGTH_SIZE", "MAX_MESSAGE_LENGTH", "MAX_MESSAGE_COUNT", "HEARTBEAT", "END_OF_SESSION",
    "DEFAULT_MAX_PAYLOAD", "MAX_UDP_PAYLOAD",
]


class MoldError(ValueError):
    """Bytes that are not a well-formed MoldUDP64 packet, or a value that cannot be sent."""


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    length: int
    struct_code: str

    @property
    def end(self) -> int:
        return self.offset + self.length


def _checked(name: str, *fields: Field) -> tuple[Field, ...]:
    at = 0
    for f in fields:
        if f.offset != at or struct.calcsize(">" + f.struct_code) != f.length:
            raise ValueError(f"MoldUDP64 {name}: field {f.name!r} is misplaced or mis-sized")
        at = f.end
    return fields


DOWNSTREAM_HEADER = _checked(
    "downstream header",
    Field("session", 0, 10, "10s"),
    Field("sequence_number", 10, 8, "Q"),
    Field("message_count", 18, 2, "H"),
)
REQUEST = _checked(
    "request",
    Field("session", 0, 10, "10s"),
    Field("sequence_number", 10, 8, "Q"),
    Field("requested_message_count", 18, 2, "H"),
)

SESSION_OFFSET = DOWNSTREAM_HEADER[0].offset
SESSION_LENGTH = DOWNSTREAM_HEADER[0].length
SEQUENCE_NUMBER_OFFSET = DOWNSTREAM_HEADER[1].offset
MESSAGE_COUNT_OFFSET = DOWNSTREAM_HEADER[2].offset
HEADER_LENGTH = DOWNSTREAM_HEADER[-1].end
REQUEST_LENGTH = REQUEST[-1].end
#: Each message block opens with its length (uint16) ...
BLOCK_LENGTH_SIZE = 2
#: ... so no message is longer than this.
MAX_MESSAGE_LENGTH = 0xFFFF

HEARTBEAT = 0
END_OF_SESSION = 0xFFFF
#: 0xFFFF means end of session, so a packet carries at most this many messages.
MAX_MESSAGE_COUNT = END_OF_SESSION - 1
UINT64_MAX = (1 << 64) - 1
#: The largest UDP payload IPv4 can carry (65535 - 8 UDP - 20 IP header bytes).
MAX_UDP_PAYLOAD = 65_507
#: Ethernet's 1500-byte MTU less IP and UDP headers, with room to spare for tunnels.
DEFAULT_MAX_PAYLOAD = 1400

_HEADER = struct.Struct(">" + "".join(f.struct_code for f in DOWNSTREAM_HEADER))
_REQUEST = struct.Struct(">" + "".join(f.struct_code for f in REQUEST))
_BLOCK_LENGTH = struct.Struct(">H")
assert _HEADER.size == HEADER_LENGTH == 20 and _REQUEST.size == REQUEST_LENGTH == 20

_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


class MoldPacket(NamedTuple):
    """A parsed downstream packet; unpacks as ``(session, seq, count, messages)``."""

    session: bytes
    sequence_number: int
    message_count: int
    messages: list[bytes]

    @property
    def is_heartbeat(self) -> bool:
        return self.message_count == HEARTBEAT

    @property
    def is_end_of_session(self) -> bool:
        return self.message_count == END_OF_SESSION

    @property
    def next_sequence_number(self) -> int:
        """The sequence number of the message that follows this packet's."""
        return self.sequence_number + len(self.messages)


class MoldRequest(NamedTuple):
    session: bytes
    sequence_number: int
    requested_message_count: int


# --- validation -----------------------------------------------------------------------------
def encode_session(session: str | bytes) -> bytes:
    """The 10 wire bytes of a session: at most 10 printable ASCII characters, space-padded."""
    if isinstance(session, str):
        try:
            raw = session.encode("ascii")
        except UnicodeEncodeError:
            raise MoldError(f"session must be ASCII, got {session!r}") from None
    elif isinstance(session, (bytes, bytearray, memoryview)):
        raw = bytes(session)
    else:
        raise TypeError(f"session must be str or bytes, got {type(session).__name__}")
    if len(raw) > SESSION_LENGTH or raw.translate(None, _PRINTABLE_ASCII):
        raise MoldError(f"session must be at most {SESSION_LENGTH} printable ASCII characters, got {session!r}")
    return raw.ljust(SESSION_LENGTH, b" ")


def _sequence(value: int, name: str = "sequence number") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    # Sequence numbers start at 1; 0 names no message.
    if not 1 <= value <= UINT64_MAX:
        raise MoldError(f"{name} must be between 1 and {UINT64_MAX}, got {value}")
    return value


def _check_range(sequence: int, count: int) -> None:
    if sequence + max(count, 1) - 1 > UINT64_MAX:
        raise MoldError(f"{count} messages from sequence number {sequence} run past 2**64 - 1")


# --- downstream packets ---------------------------------------------------------------------
def encode_packet(session: str | bytes, sequence_number: int, messages: Iterable[bytes]) -> bytes:
    """One downstream packet carrying ``messages`` (no size limit but the format's own)."""
    messages = [bytes(m) for m in messages]
    if len(messages) > MAX_MESSAGE_COUNT:
        raise MoldError(f"a packet carries at most {MAX_MESSAGE_COUNT} messages, got {len(messages)}")
    _check_range(_sequence(sequence_number), len(messages))
    parts = [_HEADER.pack(encode_session(session), sequence_number, len(messages))]
    for m in messages:
        if len(m) > MAX_MESSAGE_LENGTH:
            raise MoldError(f"a message is at most {MAX_MESSAGE_LENGTH} bytes, got {len(m)}")
        parts.append(_BLOCK_LENGTH.pack(len(m)))
        parts.append(m)
    return b"".join(parts)


_PREFIX = [_BLOCK_LENGTH.pack(n) for n in range(MAX_UDP_PAYLOAD)]


def encode_packets(session: str | bytes, sequence_number: int, messages: list[bytes],
                   max_payload: int = DEFAULT_MAX_PAYLOAD) -> list[bytes]:
    """``messages`` (numbered from ``sequence_number``) as consecutive downstream packets of
    at most ``max_payload`` bytes each, as many messages per packet as fit: the publisher's
    hot path, one join per packet. A message that fits no packet raises :class:`MoldError`."""
    session = encode_session(session)
    _check_range(_sequence(sequence_number), len(messages))
    room = max_payload - HEADER_LENGTH
    packets: list[bytes] = []
    parts: list[bytes] = []
    size = count = 0
    first = sequence_number
    for msg in messages:
        n = len(msg) + BLOCK_LENGTH_SIZE
        if size + n > room or count == MAX_MESSAGE_COUNT:
            if not count:
                raise MoldError(f"a {len(msg)}-byte message never fits a {max_payload}-byte packet")
            packets.append(_HEADER.pack(session, first, count) + b"".join(parts))
            first += count
            parts, size, count = [], 0, 0
            if n > room:
                raise MoldError(f"a {len(msg)}-byte message never fits a {max_payload}-byte packet")
        parts.append(_PREFIX[len(msg)])
        parts.append(msg)
        size += n
        count += 1
    if count:
        packets.append(_HEADER.pack(session, first, count) + b"".join(parts))
    return packets


def encode_heartbeat(session: str | bytes, next_sequence_number: int) -> bytes:
    """A heartbeat: Message Count 0 and the next sequence number the server will send."""
    return _HEADER.pack(encode_session(session), _sequence(next_sequence_number), HEARTBEAT)


def encode_end_of_session(session: str | bytes, next_sequence_number: int) -> bytes:
    """End of session: Message Count 0xFFFF and, like a heartbeat, the next sequence number."""
    return _HEADER.pack(encode_session(session), _sequence(next_sequence_number), END_OF_SESSION)


def parse_packet(buf: bytes | bytearray | memoryview) -> MoldPacket:
    """One downstream packet; :class:`MoldError` unless ``buf`` is exactly one well-formed packet."""
    view = memoryview(buf).cast("B")
    size = len(view)
    if size < HEADER_LENGTH:
        raise MoldError(f"truncated packet: {size} bytes, the header alone is {HEADER_LENGTH}")
    session, sequence, count = _HEADER.unpack_from(view, 0)
    if session.translate(None, _PRINTABLE_ASCII):
        raise MoldError(f"session {session!r} is not printable ASCII")
    if sequence == 0:
        raise MoldError("sequence number 0: sequence numbers start at 1")
    if count in (HEARTBEAT, END_OF_SESSION):
        if size != HEADER_LENGTH:
            kind = "heartbeat" if count == HEARTBEAT else "end of session"
            raise MoldError(f"{kind} packet with {size - HEADER_LENGTH} bytes after its header")
        return MoldPacket(session, sequence, count, [])
    if sequence + count - 1 > UINT64_MAX:
        raise MoldError(f"{count} messages from sequence number {sequence} run past 2**64 - 1")
    messages = []
    at = HEADER_LENGTH
    for i in range(count):
        if at + BLOCK_LENGTH_SIZE > size:
            raise MoldError(f"message count is {count} but the packet ends after {i} messages")
        (length,) = _BLOCK_LENGTH.unpack_from(view, at)
        at += BLOCK_LENGTH_SIZE
        if at + length > size:
            raise MoldError(
                f"message {i} claims {length} bytes at offset {at}, the packet has {size - at} left"
            )
        messages.append(bytes(view[at:at + length]))
        at += length
    if at != size:
        raise MoldError(f"{size - at} bytes after the last of {count} messages")
    return MoldPacket(session, sequence, count, messages)


class PacketBuilder:
    """Packs messages into downstream packets of at most ``max_payload`` bytes.

    ``append`` (or ``claim``) adds one message and answers False when it does not fit; then
    ``build`` returns the packet and starts the next one, numbered where this one ended::

        if not builder.append(msg):
            send(builder.build())
            builder.append(msg)

    One buffer is allocated once and reused, so ``claim``'s views stay valid (it is never
    resized) but are overwritten once ``build`` has returned.
    """

    def __init__(
        self, session: str | bytes, sequence_number: int = 1, max_payload: int = DEFAULT_MAX_PAYLOAD
    ) -> None:
        if isinstance(max_payload, bool) or not isinstance(max_payload, int):
            raise TypeError(f"max_payload must be an int, got {type(max_payload).__name__}")
        if not HEADER_LENGTH + BLOCK_LENGTH_SIZE <= max_payload <= MAX_UDP_PAYLOAD:
            raise MoldError(
                f"max_payload must be between {HEADER_LENGTH + BLOCK_LENGTH_SIZE} and "
                f"{MAX_UDP_PAYLOAD} bytes, got {max_payload}"
            )
        self.session = encode_session(session)
        self.max_payload = max_payload
        self._sequence = _sequence(sequence_number)
        self._count = 0
        self._size = HEADER_LENGTH
        self._buffer = bytearray(max_payload)
        self._view = memoryview(self._buffer)

    @property
    def sequence_number(self) -> int:
        """The sequence number of the current packet's first message."""
        return self._sequence

    @property
    def next_sequence_number(self) -> int:
        """The sequence number the next appended message gets."""
        return self._sequence + self._count

    @property
    def message_count(self) -> int:
        return self._count

    @property
    def size(self) -> int:
        """Bytes the packet would have if built now, header included."""
        return self._size

    @property
    def remaining(self) -> int:
        """The longest message that still fits (-1 when not even an empty one does)."""
        if self._count >= MAX_MESSAGE_COUNT:
            return -1
        return min(self.max_payload - self._size - BLOCK_LENGTH_SIZE, MAX_MESSAGE_LENGTH)

    @property
    def is_full(self) -> bool:
        return self.remaining < 0

    def fits(self, length: int) -> bool:
        return 0 <= length <= self.remaining

    def claim(self, length: int) -> memoryview | None:
        """Reserve the next message of ``length`` bytes and return its space to write into, or
        ``None`` when it does not fit this packet.  Raises :class:`MoldError` for a message that
        would not fit even an empty packet: flushing would not help."""
        if not isinstance(length, int) or length < 0:
            raise MoldError(f"message length must be a non-negative int, got {length!r}")
        if length > min(self.max_payload - HEADER_LENGTH - BLOCK_LENGTH_SIZE, MAX_MESSAGE_LENGTH):
            raise MoldError(f"a {length}-byte message never fits a {self.max_payload}-byte packet")
        if length > self.remaining:
            return None
        _check_range(self._sequence, self._count + 1)
        at = self._size
        _BLOCK_LENGTH.pack_into(self._buffer, at, length)
        at += BLOCK_LENGTH_SIZE
        self._size = at + length
        self._count += 1
        return self._view[at:at + length]

    def append(self, message: bytes | bytearray | memoryview) -> bool:
        """Add one message; False (and nothing added) when it does not fit this packet."""
        space = self.claim(len(message))
        if space is None:
            return False
        space[:] = message
        return True

    def build(self) -> bytes:
        """The packet so far (a heartbeat if empty), then start the next packet after it."""
        _HEADER.pack_into(self._buffer, 0, self.session, self._sequence, self._count)
        packet = bytes(self._view[:self._size])
        self._sequence += self._count
        self._count = 0
        self._size = HEADER_LENGTH
        return packet

    def heartbeat(self) -> bytes:
        """A heartbeat with the next expected sequence number (the current packet is kept)."""
        return encode_heartbeat(self.session, self.next_sequence_number)

    def end_of_session(self) -> bytes:
        """An end-of-session packet with the next expected sequence number."""
        return encode_end_of_session(self.session, self.next_sequence_number)


# --- request packets ------------------------------------------------------------------------
def encode_request(session: str | bytes, sequence_number: int, count: int) -> bytes:
    """Ask for ``count`` messages from ``sequence_number`` on (always 20 bytes)."""
    _sequence(sequence_number)
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"requested message count must be an int, got {type(count).__name__}")
    if not 1 <= count <= 0xFFFF:
        raise MoldError(f"requested message count must be between 1 and 65535, got {count}")
    _check_range(sequence_number, count)
    return _REQUEST.pack(encode_session(session), sequence_number, count)


def parse_request(buf: bytes | bytearray | memoryview) -> MoldRequest:
    """A request packet; :class:`MoldError` unless ``buf`` is exactly a valid one."""
    view = memoryview(buf).cast("B")
    if len(view) != REQUEST_LENGTH:
        raise MoldError(f"a request packet is {REQUEST_LENGTH} bytes, got {len(view)}")
    session, sequence, count = _REQUEST.unpack(view)
    if session.translate(None, _PRINTABLE_ASCII):
        raise MoldError(f"session {session!r} is not printable ASCII")
    # A request for nothing, or from sequence 0 (which names no message), is malformed.
    if sequence == 0:
        raise MoldError("requested sequence number 0: sequence numbers start at 1")
    if count == 0:
        raise MoldError("requested message count 0")
    if sequence + count - 1 > UINT64_MAX:
        raise MoldError(f"{count} messages from sequence number {sequence} run past 2**64 - 1")
    return MoldRequest(session, sequence, count)
