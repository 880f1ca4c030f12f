"""MoldUDP64 1.00 (``ringex.feeds.moldudp64``) against the specification's layouts.

From the spec, written out here rather than read from the module: the downstream header is
Session (offset 0, 10 bytes), Sequence Number (10, 8, big-endian), Message Count (18, 2);
each message block is a 2-byte big-endian length then that many bytes; Message Count 0 is a
heartbeat and 0xFFFF end of session, both carrying the next expected sequence number; the
request packet is Session (0, 10), Sequence Number (10, 8), Requested Message Count (18, 2),
20 bytes in all.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringex.feeds import itch
from ringex.feeds import moldudp64 as mold
from ringex.feeds.moldudp64 import MoldError, PacketBuilder

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

SESSION = b"0000012345"


def be(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


# --- the downstream packet -------------------------------------------------------------------
def test_downstream_packet_layout() -> None:
    pkt = mold.encode_packet(SESSION, 42, [b"abc", b"", b"xyz12"])
    assert len(pkt) == 20 + (2 + 3) + (2 + 0) + (2 + 5)
    assert pkt[0:10] == SESSION          # Session
    assert pkt[10:18] == be(42, 8)       # Sequence Number of the first message
    assert pkt[18:20] == be(3, 2)        # Message Count
    assert pkt[20:22] == be(3, 2) and pkt[22:25] == b"abc"
    assert pkt[25:27] == be(0, 2)
    assert pkt[27:29] == be(5, 2) and pkt[29:34] == b"xyz12"
    assert struct.unpack(">10sQH", pkt[:20]) == (SESSION, 42, 3)


def test_descriptor_matches_the_spec() -> None:
    assert [(f.name, f.offset, f.length) for f in mold.DOWNSTREAM_HEADER] == [
        ("session", 0, 10), ("sequence_number", 10, 8), ("message_count", 18, 2)]
    assert [(f.name, f.offset, f.length) for f in mold.REQUEST] == [
        ("session", 0, 10), ("sequence_number", 10, 8), ("requested_message_count", 18, 2)]
    assert mold.HEADER_LENGTH == 20 and mold.REQUEST_LENGTH == 20


def test_short_session_is_padded_with_spaces() -> None:
    assert mold.encode_packet("AB", 1, [])[0:10] == b"AB        "
    with pytest.raises(MoldError):
        mold.encode_session("ELEVENCHARS")
    with pytest.raises(MoldError):
        mold.encode_session("SESSIÖN")


def test_heartbeat_and_end_of_session() -> None:
    hb = mold.encode_heartbeat(SESSION, 1001)
    assert hb == SESSION + be(1001, 8) + b"\x00\x00"
    eos = mold.encode_end_of_session(SESSION, 1001)
    assert eos == SESSION + be(1001, 8) + b"\xff\xff"
    packet = mold.parse_packet(hb)
    assert packet.is_heartbeat and not packet.is_end_of_session and packet.next_sequence_number == 1001
    packet = mold.parse_packet(eos)
    assert packet.is_end_of_session and packet.messages == [] and packet.message_count == 0xFFFF


def test_parse_round_trip_unpacks_as_a_tuple() -> None:
    orders = [itch.add_order(1, 0, 5, n, b"B", 100, "AAPL", 1_000_000 + n) for n in range(3)]
    session, seq, count, messages = mold.parse_packet(mold.encode_packet(SESSION, 7, orders))
    assert (session, seq, count, messages) == (SESSION, 7, 3, orders)
    assert [itch.decode(m).order_reference_number for m in messages] == [0, 1, 2]


@pytest.mark.parametrize("bad, why", [
    (b"", "empty"),
    (SESSION + be(1, 8) + b"\x00", "header cut short"),
    (SESSION + be(1, 8) + be(3, 2) + be(1, 2) + b"a" + be(1, 2) + b"b", "count 3 but 2 blocks"),
    (SESSION + be(1, 8) + be(1, 2) + be(5, 2) + b"abc", "length past the end"),
    (SESSION + be(1, 8) + be(1, 2) + b"\x00", "block length cut short"),
    (SESSION + be(1, 8) + be(1, 2) + be(1, 2) + b"a" + b"junk", "trailing junk"),
    (SESSION + be(1, 8) + be(0, 2) + b"x", "heartbeat with a payload"),
    (SESSION + be(1, 8) + be(0xFFFF, 2) + b"x", "end of session with a payload"),
    (SESSION + be(0, 8) + be(0, 2), "sequence number 0"),
    (SESSION + be(2**64 - 1, 8) + be(2, 2) + be(0, 2) * 2, "sequence numbers past 2**64 - 1"),
    (b"SESS\x00\x01\x02\x03\x04\x05" + be(1, 8) + be(0, 2), "control bytes in the session"),
])
def test_malformed_packets_raise_mold_error(bad: bytes, why: str) -> None:
    with pytest.raises(MoldError):
        mold.parse_packet(bad)


@pytest.mark.parametrize("call", [
    lambda: mold.encode_packet(SESSION, 0, [b"a"]),
    lambda: mold.encode_packet(SESSION, 2**64, []),
    lambda: mold.encode_packet(SESSION, 1, [bytes(0x10000)]),
    lambda: mold.encode_packet(SESSION, 2**64 - 1, [b"a", b"b"]),
    lambda: mold.encode_packet(SESSION, 1, [b""] * 0xFFFF),
    lambda: mold.encode_heartbeat(SESSION, 0),
])
def test_encoders_refuse_what_the_format_cannot_carry(call) -> None:
    with pytest.raises(MoldError):
        call()


# --- the request packet --------------------------------------------------------------------
def test_request_layout_and_round_trip() -> None:
    req = mold.encode_request(SESSION, 1234, 56)
    assert len(req) == 20
    assert req[0:10] == SESSION
    assert req[10:18] == be(1234, 8)   # Sequence Number
    assert req[18:20] == be(56, 2)     # Requested Message Count
    assert struct.unpack(">10sQH", req) == (SESSION, 1234, 56)
    assert mold.parse_request(req) == (SESSION, 1234, 56)


@pytest.mark.parametrize("bad", [
    b"", SESSION + be(1, 8) + b"\x00", SESSION + be(1, 8) + be(1, 2) + b"\x00",
    SESSION + be(0, 8) + be(1, 2), SESSION + be(1, 8) + be(0, 2),
    SESSION + be(2**64 - 1, 8) + be(2, 2), b"\xff" * 10 + be(1, 8) + be(1, 2),
])
def test_malformed_requests_raise_mold_error(bad: bytes) -> None:
    with pytest.raises(MoldError):
        mold.parse_request(bad)


def test_encode_request_validates() -> None:
    for seq, count in ((0, 1), (1, 0), (1, 0x10000), (2**64, 1)):
        with pytest.raises(MoldError):
            mold.encode_request(SESSION, seq, count)


# --- the builder ---------------------------------------------------------------------------
ORDER = itch.add_order(1, 0, 5, 9, b"S", 100, "MSFT", 4_100_000)  # 36 bytes


def test_builder_fills_the_default_1400_byte_payload() -> None:
    builder = PacketBuilder(SESSION)
    assert builder.max_payload == 1400
    added = 0
    while builder.append(ORDER):
        added += 1
    assert added == (1400 - 20) // (2 + 36) == 36
    assert builder.size == 20 + 36 * 38 and builder.message_count == 36
    pkt = builder.build()
    assert len(pkt) == 1388 <= 1400
    assert pkt[10:18] == be(1, 8) and pkt[18:20] == be(36, 2)
    assert mold.parse_packet(pkt).messages == [ORDER] * 36
    # The next packet starts where this one ended.
    assert builder.sequence_number == 37 and builder.message_count == 0
    assert builder.append(ORDER)
    assert mold.parse_packet(builder.build()).sequence_number == 37


def test_builder_exact_fit_and_full() -> None:
    builder = PacketBuilder(SESSION, sequence_number=5, max_payload=20 + 2 * (2 + 10))
    assert builder.append(b"0123456789") and builder.append(b"abcdefghij")
    assert builder.is_full and builder.remaining < 0 and not builder.fits(0)
    assert not builder.append(b"")
    assert builder.size == 44
    assert builder.build() == SESSION + be(5, 8) + be(2, 2) + be(10, 2) + b"0123456789" + be(10, 2) + b"abcdefghij"
    assert builder.next_sequence_number == 7 and not builder.is_full


def test_builder_refuses_a_message_that_never_fits() -> None:
    builder = PacketBuilder(SESSION, max_payload=60)
    with pytest.raises(MoldError, match="never fits"):
        builder.append(bytes(39))
    assert builder.append(bytes(38))  # 20 + 2 + 38 == 60


def test_claim_lets_itch_pack_in_place() -> None:
    builder = PacketBuilder(SESSION, sequence_number=100)
    space = builder.claim(36)
    assert itch.pack_into(space, 0, b"A", 1, 0, 5, 9, b"S", 100, "MSFT", 4_100_000) == 36
    assert builder.append(ORDER)
    assert builder.build() == mold.encode_packet(SESSION, 100, [ORDER, ORDER])


def test_empty_build_is_a_heartbeat_and_the_specials_use_the_next_sequence() -> None:
    builder = PacketBuilder("SESS", sequence_number=10)
    assert builder.build() == mold.encode_heartbeat("SESS", 10)
    builder.append(ORDER)
    assert builder.heartbeat() == mold.encode_heartbeat("SESS", 11)
    assert builder.end_of_session() == mold.encode_end_of_session("SESS", 11)


@pytest.mark.parametrize("kwargs", [
    {"max_payload": 21}, {"max_payload": 65_508}, {"sequence_number": 0}, {"session": "ELEVENCHARS"},
])
def test_builder_arguments_are_validated(kwargs: dict) -> None:
    args = {"session": SESSION, **kwargs}
    with pytest.raises(MoldError):
        PacketBuilder(**args)


@FAST
@given(st.lists(st.integers(0, 200), max_size=60), st.integers(24, 600), st.integers(1, 2**40))
def test_builder_streams_every_message_once_in_order(sizes: list[int], limit: int, first: int) -> None:
    messages = [bytes([i % 256]) * size for i, size in enumerate(sizes) if size <= limit - 22]
    builder = PacketBuilder(SESSION, sequence_number=first, max_payload=limit)
    packets = []
    for m in messages:
        if not builder.append(m):
            packets.append(builder.build())
            assert builder.append(m)
    packets.append(builder.build())
    expected_seq = first
    seen: list[bytes] = []
    for pkt in packets:
        assert len(pkt) <= limit
        parsed = mold.parse_packet(pkt)
        assert parsed.sequence_number == expected_seq
        expected_seq += len(parsed.messages)
        seen += parsed.messages
    assert seen == messages


# --- random input -----------------------------------------------------------------------
_session = st.binary(min_size=10, max_size=10) | st.lists(st.integers(0x20, 0x7E), min_size=10, max_size=10).map(bytes)
_sequence = st.sampled_from([0, 1, 2**64 - 1]) | st.integers(0, 2**64 - 1)
# Plausible headers over random bodies reach the block checks that random bytes rarely do.
_plausible = st.tuples(_session, _sequence, st.sampled_from([0, 1, 2, 3, 0xFFFF]), st.binary(max_size=30)).map(
    lambda t: t[0] + be(t[1], 8) + be(t[2], 2) + t[3])


@FAST
@given(st.binary(max_size=80) | _plausible)
def test_random_packets_raise_only_mold_error(data: bytes) -> None:
    try:
        packet = mold.parse_packet(data)
    except MoldError:
        return
    # What the parser accepts, the encoders reproduce byte for byte.
    if packet.is_end_of_session:
        assert mold.encode_end_of_session(packet.session, packet.sequence_number) == data
    else:
        assert mold.encode_packet(packet.session, packet.sequence_number, packet.messages) == data


@FAST
@given(st.binary(max_size=24) | st.tuples(_session, _sequence, st.integers(0, 0xFFFF)).map(
    lambda t: t[0] + be(t[1], 8) + be(t[2], 2)))
def test_random_requests_raise_only_mold_error(data: bytes) -> None:
    try:
        request = mold.parse_request(data)
    except MoldError:
        return
    assert mold.encode_request(*request) == data


def test_encode_packets_splits_at_the_payload_bound_and_numbers_on() -> None:
    msgs = [bytes([65 + i % 26]) * (5 + i % 40) for i in range(300)]
    packets = mold.encode_packets("SESS", 1000, msgs, 200)
    seq, got = 1000, []
    for p in packets:
        assert len(p) <= 200
        assert p[0:10] == b"SESS      " and int.from_bytes(p[10:18], "big") == seq
        count = int.from_bytes(p[18:20], "big")
        at = 20
        for _ in range(count):
            n = int.from_bytes(p[at:at + 2], "big")
            got.append(p[at + 2:at + 2 + n])
            at += 2 + n
        assert at == len(p)
        seq += count
    assert got == msgs and seq == 1300
    # each packet full: the next message would not have fitted
    for p, nxt in zip(packets, packets[1:]):
        assert len(p) + 2 + int.from_bytes(nxt[20:22], "big") > 200
    with pytest.raises(mold.MoldError):
        mold.encode_packets("SESS", 1, [b"x" * 200], 200)
