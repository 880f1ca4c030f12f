"""SoupBinTCP 4.0 (``ringex.feeds.soupbintcp``) against the specification's layouts.

From the spec, written out here rather than read from the module: every packet is a 2-byte
big-endian Packet Length (the bytes after it: type + payload), a 1-byte Packet Type, then
the payload.  Login Request 'L': Username 6 (Alpha, padded on the right), Password 10 (Alpha,
padded on the right), Requested Session 10 (Alpha), Requested Sequence Number 20 (Numeric:
ASCII digits, right-justified, padded on the left with spaces).  Login Accepted 'A': Session
10 (padded on the left), Sequence Number 20 (Numeric).  Login Rejected 'J': one reason
code, 'A' not authorized or 'S' session not available.  Heartbeats 'H' (server) and 'R'
(client), End of Session 'Z' and Logout Request 'O' have no payload.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringex.feeds import soupbintcp as soup
from ringex.feeds.soupbintcp import SoupError, SoupPacket, SoupReader

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def be(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


# --- packets, byte by byte -------------------------------------------------------------------
def test_login_request_layout() -> None:
    p = soup.login_request("bob", "secret", "SESS1", 7)
    assert len(p) == 2 + 47
    assert p[0:2] == be(47, 2)            # Packet Length: 1 + 6 + 10 + 10 + 20
    assert p[2:3] == b"L"
    assert p[3:9] == b"bob   "            # Username, left-justified
    assert p[9:19] == b"secret    "       # Password, left-justified
    assert p[19:29] == b"     SESS1"      # Requested Session, padded like Login Accepted's
    assert p[29:49] == b" " * 19 + b"7"   # Requested Sequence Number, right-justified
    assert struct.unpack(">Hc6s10s10s20s", p) == (47, b"L", b"bob   ", b"secret    ", b"     SESS1", b"7".rjust(20))


def test_login_request_defaults_ask_for_the_current_session_from_the_start() -> None:
    p = soup.login_request("u", "p")
    assert p[19:29] == b" " * 10 and p[29:49] == b"1".rjust(20)
    assert soup.login_request("u", "p", "", 0)[29:49] == b"0".rjust(20)
    assert soup.login_request("u", "p", "", 10**20 - 1)[29:49] == b"9" * 20


def test_login_accepted_layout() -> None:
    p = soup.login_accepted("SESS1", 42)
    assert len(p) == 2 + 31
    assert p[0:2] == be(31, 2)
    assert p[2:3] == b"A"
    assert p[3:13] == b"     SESS1"          # Session, left padded with spaces
    assert p[13:33] == b"42".rjust(20, b" ")  # Sequence Number, left padded with spaces
    assert struct.unpack(">Hc10s20s", p) == (31, b"A", b"     SESS1", b"42".rjust(20))


@pytest.mark.parametrize("reason", [b"A", b"S"])
def test_login_rejected_layout(reason: bytes) -> None:
    assert soup.login_rejected(reason) == b"\x00\x02J" + reason


def test_payload_free_packets() -> None:
    assert soup.server_heartbeat() == b"\x00\x01H"
    assert soup.client_heartbeat() == b"\x00\x01R"
    assert soup.end_of_session() == b"\x00\x01Z"
    assert soup.logout_request() == b"\x00\x01O"


def test_data_and_debug_packets() -> None:
    msg = bytes(range(36))
    assert soup.sequenced_data(msg) == be(37, 2) + b"S" + msg
    assert soup.unsequenced_data(msg) == be(37, 2) + b"U" + msg
    assert soup.debug("hello") == be(6, 2) + b"+hello"
    assert soup.sequenced_data(b"") == b"\x00\x01S"
    big = bytes(65534)
    assert soup.sequenced_data(big)[0:2] == b"\xff\xff"


def test_descriptors_match_the_spec() -> None:
    assert [(f.name, f.offset, f.length) for f in soup.LOGIN_REQUEST_LAYOUT.fields] == [
        ("packet_length", 0, 2), ("packet_type", 2, 1), ("username", 3, 6), ("password", 9, 10),
        ("requested_session", 19, 10), ("requested_sequence_number", 29, 20)]
    assert [(f.name, f.offset, f.length) for f in soup.LOGIN_ACCEPTED_LAYOUT.fields] == [
        ("packet_length", 0, 2), ("packet_type", 2, 1), ("session", 3, 10), ("sequence_number", 13, 20)]
    assert soup.FIXED_PACKET_LENGTH == {b"A": 31, b"J": 2, b"L": 47, b"H": 1, b"Z": 1, b"R": 1, b"O": 1}


# --- encoder validation --------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda: soup.login_request("sevenCH", "p"),
    lambda: soup.login_request("u", "elevenchars"),
    lambda: soup.login_request("u", "p", "elevenchars"),
    lambda: soup.login_request("u", "p", "", -1),
    lambda: soup.login_request("u", "p", "", 10**20),
    lambda: soup.login_request("ü", "p"),
    lambda: soup.login_request("u\n", "p"),
    lambda: soup.login_accepted("SESS1", 0),
    lambda: soup.login_accepted("", 1),
    lambda: soup.login_rejected(b"X"),
    lambda: soup.debug(b"bell\x07"),
    lambda: soup.sequenced_data(bytes(65535)),
    lambda: soup.encode_packet(b"Q", b""),
    lambda: soup.encode_packet(b"H", b"x"),
])
def test_encoders_refuse_invalid_values(call) -> None:
    with pytest.raises(SoupError):
        call()


def test_sequence_numbers_must_be_ints() -> None:
    with pytest.raises(TypeError):
        soup.login_request("u", "p", "", "1")
    with pytest.raises(TypeError):
        soup.login_accepted("S", 1.0)


# --- decoders ------------------------------------------------------------------------------
def test_login_decoders_round_trip() -> None:
    req = soup.decode_login_request(soup.parse_packet(soup.login_request("bob", "secret", "SESS1", 7)))
    assert req == soup.LoginRequest("bob", "secret", "SESS1", 7)
    assert soup.decode_login_request(soup.parse_packet(soup.login_request("u", "p"))).requested_session == ""
    acc = soup.decode_login_accepted(soup.parse_packet(soup.login_accepted("0000012345", 10**19)))
    assert acc == soup.LoginAccepted("0000012345", 10**19)
    assert soup.decode_login_rejected(soup.parse_packet(soup.login_rejected(b"S"))) == (b"S",)


def test_decoders_accept_either_padding_of_sessions_and_numbers() -> None:
    left_justified = b"\x00\x1fA" + b"SESS1     " + b"42".ljust(20)
    assert soup.decode_login_accepted(soup.parse_packet(left_justified)) == ("SESS1", 42)
    zero_filled = b"\x00\x1fA" + b"SESS1     " + b"42".rjust(20, b"0")
    assert soup.decode_login_accepted(soup.parse_packet(zero_filled)) == ("SESS1", 42)


def _login_request_with(offset: int, value: bytes) -> SoupPacket:
    raw = bytearray(soup.login_request("bob", "secret", "SESS1", 7))
    raw[offset:offset + len(value)] = value
    return soup.parse_packet(bytes(raw))


@pytest.mark.parametrize("offset, value", [
    (29, b"12a".rjust(20)),         # a letter in the number
    (29, b" " * 20),                # no number at all
    (29, b"1 2".rjust(20)),         # a space inside the number
    (29, b"-1".rjust(20)),          # a sign is not a digit
    (29, b"\xd9".rjust(20)),        # non-ASCII (an Arabic-Indic digit's byte)
    (3, b"b\x00b"),                 # a control byte in the username
    (9, b"\xffsecret"),             # non-ASCII password
])
def test_login_request_decoder_rejects_malformed_fields(offset: int, value: bytes) -> None:
    with pytest.raises(SoupError):
        soup.decode_login_request(_login_request_with(offset, value))


def test_login_accepted_decoder_rejects_nonsense() -> None:
    for raw in (
        b"\x00\x1fA" + b" " * 10 + b"1".rjust(20),       # blank session
        b"\x00\x1fA" + b"SESS1".rjust(10) + b"0".rjust(20),  # sequence numbers start at 1
        b"\x00\x1fA" + b"SESS1".rjust(10) + b"x".rjust(20),
    ):
        with pytest.raises(SoupError):
            soup.decode_login_accepted(soup.parse_packet(raw))


def test_decoders_check_type_and_length() -> None:
    with pytest.raises(SoupError, match="not a Login Request"):
        soup.decode_login_request(SoupPacket(b"A", bytes(46)))
    with pytest.raises(SoupError, match="46 bytes"):
        soup.decode_login_request(SoupPacket(b"L", bytes(45)))
    with pytest.raises(SoupError):
        soup.decode_login_rejected(SoupPacket(b"J", b"X"))
    with pytest.raises(SoupError):
        soup.decode_login_rejected(SoupPacket(b"J", b"AS"))


# --- the stream framer -----------------------------------------------------------------------
STREAM_PACKETS = [
    soup.login_accepted("SESS1", 1),
    soup.sequenced_data(b"A" + bytes(35)),
    soup.server_heartbeat(),
    soup.sequenced_data(b""),
    soup.debug("note"),
    soup.end_of_session(),
]
STREAM = b"".join(STREAM_PACKETS)
EXPECTED = [soup.parse_packet(p) for p in STREAM_PACKETS]


def test_reader_whole_stream_at_once() -> None:
    assert SoupReader().feed(STREAM) == EXPECTED


def test_reader_one_byte_at_a_time() -> None:
    reader = SoupReader()
    out = []
    for i in range(len(STREAM)):
        out += reader.feed(STREAM[i:i + 1])
        assert reader.buffered < max(map(len, STREAM_PACKETS))  # at most one partial packet
    assert out == EXPECTED and reader.buffered == 0


@FAST
@given(st.lists(st.integers(0, len(STREAM)), max_size=8))
def test_reader_any_split(cuts: list[int]) -> None:
    reader = SoupReader()
    bounds = [0, *sorted(cuts), len(STREAM)]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        out += reader.feed(memoryview(STREAM)[a:b])
    assert out == EXPECTED


def test_reader_rejects_length_zero_as_soon_as_it_arrives() -> None:
    reader = SoupReader()
    with pytest.raises(SoupError, match="Packet Length 0"):
        reader.feed(b"\x00\x00")


def test_reader_rejects_lengths_above_its_bound_before_the_payload() -> None:
    reader = SoupReader(max_packet_length=100)
    assert reader.feed(be(100, 2) + b"S") == []
    reader = SoupReader(max_packet_length=100)
    with pytest.raises(SoupError, match="101 exceeds"):
        reader.feed(be(101, 2))


def test_reader_rejects_unknown_types_and_wrong_fixed_lengths() -> None:
    with pytest.raises(SoupError, match="packet type"):
        SoupReader().feed(b"\x00\x01Q")
    with pytest.raises(SoupError, match="Packet Length 1"):
        SoupReader().feed(b"\x00\x02Hx")
    with pytest.raises(SoupError, match="Packet Length 47"):
        SoupReader().feed(b"\x00\x05L")


def test_reader_stays_broken_after_an_error() -> None:
    reader = SoupReader()
    with pytest.raises(SoupError):
        reader.feed(soup.server_heartbeat() + b"\x00\x00")
    with pytest.raises(SoupError, match="already broken"):
        reader.feed(soup.server_heartbeat())


def test_reader_accept_filters_the_direction() -> None:
    server_side = SoupReader(accept=soup.CLIENT_PACKET_TYPES)
    assert server_side.feed(soup.login_request("u", "p") + soup.client_heartbeat())[1] == (b"R", b"")
    with pytest.raises(SoupError, match="unexpected packet type"):
        server_side.feed(soup.login_accepted("S", 1))


def test_reader_bound_is_validated() -> None:
    for bound in (0, 46, 65536):
        with pytest.raises(SoupError):
            SoupReader(max_packet_length=bound)


def test_parse_packet_wants_exactly_one() -> None:
    with pytest.raises(SoupError):
        soup.parse_packet(soup.server_heartbeat() * 2)
    with pytest.raises(SoupError):
        soup.parse_packet(soup.login_accepted("S", 1)[:-1])
    with pytest.raises(SoupError):
        soup.parse_packet(b"")


# --- random input -----------------------------------------------------------------------
_type = st.sampled_from(sorted(soup.PACKET_TYPES) + [b"Q", b"\x00"])
_plausible = st.tuples(st.integers(0, 60), _type, st.binary(max_size=60)).map(lambda t: be(t[0], 2) + t[1] + t[2])


@FAST
@given(st.lists(st.binary(max_size=20) | _plausible, max_size=6))
def test_random_streams_raise_only_soup_error(chunks: list[bytes]) -> None:
    reader = SoupReader(max_packet_length=64)
    packets: list[SoupPacket] = []
    try:
        for chunk in chunks:
            packets += reader.feed(chunk)
    except SoupError:
        return
    # Every framed packet re-encodes to exactly the bytes it came from.
    consumed = len(b"".join(chunks)) - reader.buffered
    assert b"".join(soup.encode_packet(p.packet_type, p.payload) for p in packets) == b"".join(chunks)[:consumed]


@FAST
@given(st.binary(min_size=46, max_size=46) | st.lists(st.sampled_from(b" 0123456789abcAB\x00\xff"),
       min_size=46, max_size=46).map(bytes))
def test_random_login_payloads_raise_only_soup_error(payload: bytes) -> None:
    for packet, decoder in (
        (SoupPacket(b"L", payload), soup.decode_login_request),
        (SoupPacket(b"A", payload[:30]), soup.decode_login_accepted),
        (SoupPacket(b"J", payload[:1]), soup.decode_login_rejected),
    ):
        try:
            decoder(packet)
        except SoupError:
            pass
