"""SoupBinTCP 4.0 packets: encoders, a bounded stream framer, login decoders.  Pure: no sockets.

Every packet, in both directions::

    0   Packet Length   2  uint16 big-endian: the bytes after this field (type + payload)
    2   Packet Type     1  Alpha
    3   payload         Packet Length - 1 bytes

The packets (offsets from the start of the packet, Packet Length in brackets)::

    both ways
      '+' Debug                3   Text                       printable ASCII, any length
    server to client
      'A' Login Accepted (31)  3   Session               10   Alpha, padded on the left
                               13  Sequence Number       20   Numeric: the next Sequenced
                                                               Data message's number
      'J' Login Rejected (2)   3   Reject Reason Code     1   'A' not authorized,
                                                               'S' session not available
      'S' Sequenced Data       3   Message                    any bytes (one ITCH message)
      'H' Server Heartbeat (1)
      'Z' End of Session (1)
    client to server
      'L' Login Request (47)   3   Username               6   Alpha, padded on the right
                               9   Password              10   Alpha, padded on the right
                               19  Requested Session     10   Alpha; all blanks: the current one
                               29  Requested Sequence Number  20   Numeric: 1 from the start,
                                                               0 from the newest message
      'U' Unsequenced Data     3   Message                    any bytes
      'R' Client Heartbeat (1)
      'O' Logout Request (1)

Numeric fields are ASCII decimal digits, right-justified and padded on the left with spaces
(the spec: "Left padded with spaces").  Alpha fields are printable ASCII padded with spaces:
Username and Password left-justified, padded on the right (Alpha's usual rule); the Session
of Login Accepted right-justified, "Left padded with spaces" in the spec's words.  The spec
does not say how a Requested Session is padded ("the session the client would like to log
into, or all blanks to log into the currently active session"), so we pad it like the Login
Accepted session it normally echoes, and the decoders strip blanks from both ends of either
session so that a peer that pads on the other side still decodes to the same session.
Numbers decode leniently the same way (surrounding blanks stripped, leading zeros allowed);
anything but ASCII digits inside raises.

Sequenced Data packets carry no sequence number: both ends count them from the number that
Login Accepted gave.  SoupBinTCP 4.0 has the same packet layouts as 3.00 (4.1 appends a
heartbeat timeout to Login Request, which this module does not send or accept).

:class:`SoupReader` frames a TCP byte stream into packets.  It keeps at most one partial
packet, refuses a Packet Length of 0 (no type byte) or above its bound as soon as the two
length bytes arrive, and refuses an unknown type or a fixed-size packet of the wrong length
as soon as the type byte does.  All such errors are :class:`SoupError` (a ``ValueError``);
after one the stream has lost its framing, so the reader refuses everything after it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, NamedTuple

__all__ = [
    "SoupError", "Field", "PacketLayout", "LAYOUTS", "SoupPacket", "LoginRequest",
    "LoginAccepted", "LoginRejected", "SoupReader", "encode_packet", "parse_packet", "debug",
    "login_accepted", "login_rejected", "sequenced_data", "server_heartbeat", "end_of_session",
    "login_request", "unsequenced_data", "client_heartbeat", "logout_request",
    "decode_login_request", "decode_login_accepted", "decode_login_rejected", "DEBUG",
    "LOGIN_ACCEPTED", "LOGIN_REJECTED", "SEQUENCED_DATA", "SERVER_HEARTBEAT", "END_OF_SESSION",
    "LOGIN_REQUEST", "UNSEQUENCED_DATA", "CLIENT_HEARTBEAT", "LOGOUT_REQUEST",
    "SERVER_PACKET_TYPES", "CLIENT_PACKET_TYPES", "PACKET_TYPES", "REJECT_NOT_AUTHORIZED",
    "REJECT_SESSION_NOT_AVAILABLE", "REJECT_REASONS", "FIXED_PACKET_LENGTH",
    "DEFAULT_MAX_PACKET_LENGTH", "MAX_PAYLOAD_LENGTH",
]


class SoupError(ValueError):
    """Bytes that are not a well-formed SoupBinTCP packet, or a value that cannot be sent."""


# --- packet types ---------------------------------------------------------------------------
DEBUG = b"+"
LOGIN_ACCEPTED = b"A"
LOGIN_REJECTED = b"J"
SEQUENCED_DATA = b"S"
SERVER_HEARTBEAT = b"H"
END_OF_SESSION = b"Z"
LOGIN_REQUEST = b"L"
UNSEQUENCED_DATA = b"U"
CLIENT_HEARTBEAT = b"R"
LOGOUT_REQUEST = b"O"
SERVER_PACKET_TYPES = frozenset({DEBUG, LOGIN_ACCEPTED, LOGIN_REJECTED, SEQUENCED_DATA, SERVER_HEARTBEAT, END_OF_SESSION})
CLIENT_PACKET_TYPES = frozenset({DEBUG, LOGIN_REQUEST, UNSEQUENCED_DATA, CLIENT_HEARTBEAT, LOGOUT_REQUEST})
PACKET_TYPES = SERVER_PACKET_TYPES | CLIENT_PACKET_TYPES

REJECT_NOT_AUTHORIZED = b"A"
REJECT_SESSION_NOT_AVAILABLE = b"S"
REJECT_REASONS = frozenset({REJECT_NOT_AUTHORIZED, REJECT_SESSION_NOT_AVAILABLE})


# --- descriptors ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """A field; ``offset`` counts from the start of the packet, Packet Length included."""

    name: str
    offset: int
    length: int
    kind: str  # "uint16", "type", "alpha" (padded on the right), "alpha_right"
               # (padded on the left), "numeric", "code" (one letter)

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class PacketLayout:
    """A fixed-size packet: checked contiguous from offset 0, the header first."""

    packet_type: bytes
    name: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        at = 0
        for f in self.fields:
            if f.offset != at or f.length < 1:
                raise ValueError(f"SoupBinTCP {self.name}: field {f.name!r} misplaced")
            at = f.end
        if [(f.name, f.offset, f.length) for f in self.fields[:2]] != [
            ("packet_length", PACKET_LENGTH_OFFSET, 2), ("packet_type", PACKET_TYPE_OFFSET, 1),
        ]:
            raise ValueError(f"SoupBinTCP {self.name}: does not open with the packet header")

    @property
    def total_length(self) -> int:
        """Bytes on the wire, Packet Length field included."""
        return self.fields[-1].end

    @property
    def packet_length(self) -> int:
        """The value of its Packet Length field."""
        return self.total_length - PAYLOAD_OFFSET + 1

    @property
    def payload_fields(self) -> tuple[Field, ...]:
        return self.fields[2:]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


PACKET_LENGTH_OFFSET = 0
PACKET_TYPE_OFFSET = 2
PAYLOAD_OFFSET = 3
_LENGTH = struct.Struct(">H")
#: A Packet Length counts the type byte, so the longest payload is one byte short of 0xFFFF.
MAX_PAYLOAD_LENGTH = 0xFFFF - 1
#: Default bound of :class:`SoupReader` (ITCH messages are under 64 bytes; logins 47).
DEFAULT_MAX_PACKET_LENGTH = 4096
#: Numeric fields are 20 digits wide.
NUMERIC_LIMIT = 10 ** 20


def _packet(packet_type: bytes, name: str, *payload: tuple[str, int, int, str]) -> PacketLayout:
    head = (Field("packet_length", 0, 2, "uint16"), Field("packet_type", 2, 1, "type"))
    return PacketLayout(packet_type, name, head + tuple(Field(*p) for p in payload))


LOGIN_ACCEPTED_LAYOUT = _packet(LOGIN_ACCEPTED, "Login Accepted",
    ("session", 3, 10, "alpha_right"),
    ("sequence_number", 13, 20, "numeric"),
)
LOGIN_REJECTED_LAYOUT = _packet(LOGIN_REJECTED, "Login Rejected",
    ("reject_reason_code", 3, 1, "code"),
)
LOGIN_REQUEST_LAYOUT = _packet(LOGIN_REQUEST, "Login Request",
    ("username", 3, 6, "alpha"),
    ("password", 9, 10, "alpha"),
    ("requested_session", 19, 10, "alpha_right"),
    ("requested_sequence_number", 29, 20, "numeric"),
)
# Header-only packets.
SERVER_HEARTBEAT_LAYOUT = _packet(SERVER_HEARTBEAT, "Server Heartbeat")
END_OF_SESSION_LAYOUT = _packet(END_OF_SESSION, "End of Session")
CLIENT_HEARTBEAT_LAYOUT = _packet(CLIENT_HEARTBEAT, "Client Heartbeat")
LOGOUT_REQUEST_LAYOUT = _packet(LOGOUT_REQUEST, "Logout Request")

#: The fixed-size packets by type (Debug and the two data packets have any length).
LAYOUTS: dict[bytes, PacketLayout] = {
    layout.packet_type: layout
    for layout in (
        LOGIN_ACCEPTED_LAYOUT, LOGIN_REJECTED_LAYOUT, LOGIN_REQUEST_LAYOUT,
        SERVER_HEARTBEAT_LAYOUT, END_OF_SESSION_LAYOUT, CLIENT_HEARTBEAT_LAYOUT,
        LOGOUT_REQUEST_LAYOUT,
    )
}
#: The value of the Packet Length field of each fixed-size packet type.
FIXED_PACKET_LENGTH: dict[bytes, int] = {t: layout.packet_length for t, layout in LAYOUTS.items()}
assert FIXED_PACKET_LENGTH[LOGIN_REQUEST] == 47 and FIXED_PACKET_LENGTH[LOGIN_ACCEPTED] == 31

_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


class SoupPacket(NamedTuple):
    packet_type: bytes
    payload: bytes


class LoginRequest(NamedTuple):
    username: str
    password: str
    requested_session: str  # "" asks for the currently active session
    requested_sequence_number: int


class LoginAccepted(NamedTuple):
    session: str
    sequence_number: int


class LoginRejected(NamedTuple):
    reject_reason_code: bytes


# --- field codecs ---------------------------------------------------------------------------
def _ascii(name: str, value: str | bytes) -> bytes:
    if isinstance(value, str):
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise SoupError(f"{name} must be ASCII, got {value!r}") from None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise TypeError(f"{name} must be str or bytes, got {type(value).__name__}")
    if raw.translate(None, _PRINTABLE_ASCII):
        raise SoupError(f"{name} must be printable ASCII, got {value!r}")
    return raw


def _alpha(f: Field, value: str | bytes, *, blank_ok: bool = True) -> bytes:
    raw = _ascii(f.name, value)
    if len(raw) > f.length:
        raise SoupError(f"{f.name} must be at most {f.length} characters, got {value!r}")
    if not blank_ok and not raw.strip(b" "):
        raise SoupError(f"{f.name} must not be blank")
    if f.kind == "alpha_right":
        return raw.rjust(f.length, b" ")
    return raw.ljust(f.length, b" ")


def _numeric(f: Field, value: int, minimum: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{f.name} must be an int, got {type(value).__name__}")
    if not minimum <= value < NUMERIC_LIMIT:
        raise SoupError(f"{f.name} must be between {minimum} and {NUMERIC_LIMIT - 1}, got {value}")
    return str(value).rjust(f.length, " ").encode("ascii")


def _field_bytes(payload: bytes, f: Field) -> bytes:
    start = f.offset - PAYLOAD_OFFSET
    return payload[start:start + f.length]


def _decode_alpha(payload: bytes, f: Field) -> str:
    raw = _field_bytes(payload, f)
    if raw.translate(None, _PRINTABLE_ASCII):
        raise SoupError(f"{f.name} {raw!r} is not printable ASCII")
    text = raw.decode("ascii")
    # Username / Password are padded on the right; sessions may come padded on either side.
    return text.strip(" ") if f.kind == "alpha_right" else text.rstrip(" ")


def _decode_numeric(payload: bytes, f: Field, minimum: int) -> int:
    digits = _field_bytes(payload, f).strip(b" ")
    if not digits or not digits.isdigit():  # bytes.isdigit: ASCII 0-9 only
        raise SoupError(f"{f.name} {_field_bytes(payload, f)!r} is not a number")
    value = int(digits)
    if value < minimum:
        raise SoupError(f"{f.name} must be at least {minimum}, got {value}")
    return value


# --- encoders -------------------------------------------------------------------------------
def encode_packet(packet_type: bytes, payload: bytes = b"") -> bytes:
    """Any packet: the length prefix, the type, the payload as given."""
    packet_type = bytes(packet_type)
    if packet_type not in PACKET_TYPES:
        raise SoupError(f"unknown SoupBinTCP packet type {packet_type!r}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise SoupError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_LENGTH}")
    fixed = FIXED_PACKET_LENGTH.get(packet_type)
    if fixed is not None and 1 + len(payload) != fixed:
        raise SoupError(f"packet {packet_type!r} has Packet Length {fixed}, not {1 + len(payload)}")
    return _LENGTH.pack(1 + len(payload)) + packet_type + payload


def debug(text: str | bytes) -> bytes:
    return encode_packet(DEBUG, _ascii("debug text", text))


def login_accepted(session: str | bytes, sequence_number: int) -> bytes:
    """``sequence_number``: the number of the next Sequenced Data packet (>= 1)."""
    f = LOGIN_ACCEPTED_LAYOUT.field
    return encode_packet(
        LOGIN_ACCEPTED,
        _alpha(f("session"), session, blank_ok=False) + _numeric(f("sequence_number"), sequence_number, 1),
    )


def login_rejected(reason: bytes) -> bytes:
    if bytes(reason) not in REJECT_REASONS:
        raise SoupError(f"reject reason must be one of {sorted(REJECT_REASONS)}, got {reason!r}")
    return encode_packet(LOGIN_REJECTED, bytes(reason))


def sequenced_data(message: bytes) -> bytes:
    return encode_packet(SEQUENCED_DATA, message)


def server_heartbeat() -> bytes:
    return encode_packet(SERVER_HEARTBEAT)


def end_of_session() -> bytes:
    return encode_packet(END_OF_SESSION)


def login_request(
    username: str | bytes, password: str | bytes, requested_session: str | bytes = "",
    requested_sequence_number: int = 1,
) -> bytes:
    """A blank ``requested_session`` asks for the current session; ``requested_sequence_number``
    1 starts from the session's first message, 0 from the newest."""
    f = LOGIN_REQUEST_LAYOUT.field
    return encode_packet(
        LOGIN_REQUEST,
        _alpha(f("username"), username)
        + _alpha(f("password"), password)
        + _alpha(f("requested_session"), requested_session)
        + _numeric(f("requested_sequence_number"), requested_sequence_number, 0),
    )


def unsequenced_data(message: bytes) -> bytes:
    return encode_packet(UNSEQUENCED_DATA, message)


def client_heartbeat() -> bytes:
    return encode_packet(CLIENT_HEARTBEAT)


def logout_request() -> bytes:
    return encode_packet(LOGOUT_REQUEST)


# --- framing --------------------------------------------------------------------------------
def _header_problem(length: int, packet_type: bytes | None, max_length: int, accept: frozenset[bytes]) -> str | None:
    if length == 0:
        return "Packet Length 0: a packet has at least its type byte"
    if length > max_length:
        return f"Packet Length {length} exceeds the bound of {max_length}"
    if packet_type is None:
        return None
    if packet_type not in accept:
        return f"unexpected packet type {packet_type!r}"
    fixed = FIXED_PACKET_LENGTH.get(packet_type)
    if fixed is not None and length != fixed:
        return f"packet {packet_type!r} must have Packet Length {fixed}, got {length}"
    return None


class SoupReader:
    """Frames a byte stream into :class:`SoupPacket` values, across any split of the stream.

    ``accept`` narrows the packet types taken (a server passes :data:`CLIENT_PACKET_TYPES`);
    ``max_packet_length`` bounds the Packet Length field and so the memory one connection can
    make the reader hold.
    """

    def __init__(
        self, max_packet_length: int = DEFAULT_MAX_PACKET_LENGTH, accept: Iterable[bytes] | None = None
    ) -> None:
        floor = max(FIXED_PACKET_LENGTH.values())  # every fixed-size packet must pass
        if isinstance(max_packet_length, bool) or not isinstance(max_packet_length, int):
            raise TypeError("max_packet_length must be an int")
        if not floor <= max_packet_length <= 0xFFFF:
            raise SoupError(f"max_packet_length must be between {floor} and 65535, got {max_packet_length}")
        self.max_packet_length = max_packet_length
        self.accept = PACKET_TYPES if accept is None else frozenset(bytes(t) for t in accept)
        unknown = self.accept - PACKET_TYPES
        if unknown:
            raise SoupError(f"unknown packet types {sorted(unknown)}")
        self._buffer = bytearray()
        self._broken: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held of a packet not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[SoupPacket]:
        """The packets that ``data`` completes, in order; raises :class:`SoupError` (and refuses
        every later call) at the first malformed header."""
        if self._broken is not None:
            raise SoupError(f"stream already broken: {self._broken}")
        buf = self._buffer
        buf += data
        packets: list[SoupPacket] = []
        at = 0
        end = len(buf)
        try:
            while end - at >= 2:
                (length,) = _LENGTH.unpack_from(buf, at)
                packet_type = bytes(buf[at + 2:at + 3]) if end - at >= 3 else None
                problem = _header_problem(length, packet_type, self.max_packet_length, self.accept)
                if problem:
                    self._broken = f"{problem} (stream offset {at} of this read)"
                    raise SoupError(self._broken)
                if end - at < 2 + length:
                    break
                packets.append(SoupPacket(packet_type, bytes(buf[at + 3:at + 2 + length])))
                at += 2 + length
        finally:
            del buf[:at]
        return packets


def parse_packet(buf: bytes | bytearray | memoryview, max_packet_length: int = 0xFFFF) -> SoupPacket:
    """Exactly one complete packet (a convenience over :class:`SoupReader`)."""
    reader = SoupReader(max_packet_length)
    packets = reader.feed(buf)
    if len(packets) != 1 or reader.buffered:
        raise SoupError(f"expected exactly one packet, got {len(packets)} and {reader.buffered} bytes more")
    return packets[0]


# --- decoders -------------------------------------------------------------------------------
def _payload_of(packet: SoupPacket, layout: PacketLayout) -> bytes:
    if packet.packet_type != layout.packet_type:
        raise SoupError(f"not a {layout.name} packet: type {packet.packet_type!r}")
    if 1 + len(packet.payload) != layout.packet_length:
        raise SoupError(f"{layout.name} payload must be {layout.packet_length - 1} bytes, got {len(packet.payload)}")
    return packet.payload


def decode_login_request(packet: SoupPacket) -> LoginRequest:
    payload = _payload_of(packet, LOGIN_REQUEST_LAYOUT)
    f = LOGIN_REQUEST_LAYOUT.field
    return LoginRequest(
        _decode_alpha(payload, f("username")),
        _decode_alpha(payload, f("password")),
        _decode_alpha(payload, f("requested_session")),
        _decode_numeric(payload, f("requested_sequence_number"), 0),
    )


def decode_login_accepted(packet: SoupPacket) -> LoginAccepted:
    payload = _payload_of(packet, LOGIN_ACCEPTED_LAYOUT)
    f = LOGIN_ACCEPTED_LAYOUT.field
    session = _decode_alpha(payload, f("session"))
    if not session:
        raise SoupError("Login Accepted with a blank session")
    return LoginAccepted(session, _decode_numeric(payload, f("sequence_number"), 1))


def decode_login_rejected(packet: SoupPacket) -> LoginRejected:
    code = _payload_of(packet, LOGIN_REJECTED_LAYOUT)
    if code not in REJECT_REASONS:
        raise SoupError(f"unknown reject reason code {code!r}")
    return LoginRejected(code)
