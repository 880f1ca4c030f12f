"""The snapshot service (ringex.feeds.snapshot_server) and the re-request answers
(ringex.feeds.retransmit).

Bytes are written out from the specifications, not from our encoders:

- SoupBinTCP 4.0: Packet Length (2, big-endian, counting the type byte and payload), Packet
  Type (1), payload. Login Request 'L' (length 47): Username 6, Password 10 (Alpha, padded on
  the right), Requested Session 10, Requested Sequence Number 20 (Numeric, right-justified,
  space-padded). Login Accepted 'A' (length 31): Session 10 (padded on the left), Sequence
  Number 20. Login Rejected 'J' (length 2): reason 'A' or 'S'. Sequenced Data 'S', Server
  Heartbeat 'H' (1), End of Session 'Z' (1), Client Heartbeat 'R' (1), Logout Request 'O' (1).
- GLIMPSE 5.0 End of Snapshot: 'G' at offset 0, then 20 bytes at offset 1: the sequence number
  as ASCII digits, right-justified, space-padded on the left (21 bytes in all).
- MoldUDP64 1.00: Session 10, Sequence Number 8 (big-endian), Message Count 2 (big-endian),
  then per message a 2-byte big-endian length and the data; a request is exactly those 20
  header bytes, the count being how many messages are wanted.
"""

from __future__ import annotations

import pytest

from ringex.feeds import itch
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.message_store import MessageStore
from ringex.feeds.retransmit import answer
from ringex.feeds.snapshot_server import SnapshotConnection, end_of_snapshot, parse_end_of_snapshot

SEC = 1_000_000_000
T0 = 5 * SEC
SESSION = "FEEDA00001"
USER, PASSWORD = "alice", "s3cret"


# -- SoupBinTCP by hand ---------------------------------------------------------------------------

def soup(packet_type: bytes, payload: bytes = b"") -> bytes:
    return (1 + len(payload)).to_bytes(2, "big") + packet_type + payload


def login(user: str = USER, password: str = PASSWORD, session: str = "", seq: int = 1) -> bytes:
    payload = (user.encode().ljust(6) + password.encode().ljust(10) + session.encode().rjust(10)
               + str(seq).encode().rjust(20))
    raw = soup(b"L", payload)
    assert len(raw) == 2 + 47 and raw[:3] == b"\x00\x2fL"
    return raw


def split(stream: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of each packet of a server's byte stream."""
    out, at = [], 0
    while at < len(stream):
        length = int.from_bytes(stream[at:at + 2], "big")
        assert length >= 1 and at + 2 + length <= len(stream)
        out.append((stream[at + 2:at + 3], bytes(stream[at + 3:at + 2 + length])))
        at += 2 + length
    return out


def snapshot_messages() -> list[bytes]:
    return [
        itch.stock_directory(1, 0, 1, "AAA", b"Q", b"N", 100, b"N", b"C", "Z", b"P", b"N", b"N",
                             b"1", b"N", 0, b"N"),
        itch.stock_trading_action(1, 0, 1, "AAA", b"T", ""),
        itch.add_order(1, 0, 2, 7, b"B", 100, "AAA", 10_000),
        itch.add_order(1, 0, 3, 8, b"S", 50, "AAA", 10_100),
        b"G" + b"42".rjust(20, b" "),
    ]


class Conn:
    def __init__(self, session: str = SESSION) -> None:
        self.calls = 0
        self.session = session

        def snap() -> list[bytes]:
            self.calls += 1
            return snapshot_messages()

        self.c = SnapshotConnection("peer:1", USER, PASSWORD, lambda: self.session, snap, T0)

    def drain(self) -> list[tuple[bytes, bytes]]:
        out = split(bytes(self.c.outgoing))
        del self.c.outgoing[:]
        return out


# -- login ----------------------------------------------------------------------------------------

def test_login_accepted_then_the_snapshot_as_sequenced_data():
    k = Conn()
    k.c.receive(login(), T0 + 1)
    assert k.c.logged_in and not k.c.closed
    packets = k.drain()
    assert packets[0] == (b"A", b"FEEDA00001" + b" " * 19 + b"1")
    assert packets[1:] == [(b"S", m) for m in snapshot_messages()]
    assert packets[-1] == (b"S", b"G" + b" " * 18 + b"42")
    assert k.calls == 1


def test_login_accepted_bytes_exactly():
    k = Conn()
    k.c.receive(login(), T0)
    raw = bytes(k.c.outgoing)
    assert raw[0:2] == b"\x00\x1f"     # Packet Length 31
    assert raw[2:3] == b"A"
    assert raw[3:13] == b"FEEDA00001"
    assert raw[13:33] == b"                   1"
    first = snapshot_messages()[0]
    assert raw[33:35] == (1 + len(first)).to_bytes(2, "big") and raw[35:36] == b"S"
    assert raw[36:36 + len(first)] == first


def test_login_accepted_pads_a_short_session_on_the_left():
    k = Conn(session="ABC")
    k.c.receive(login(), T0)
    assert k.drain()[0] == (b"A", b"       ABC" + b" " * 19 + b"1")


def test_login_split_across_reads():
    k = Conn()
    raw = login()
    for i in range(len(raw)):
        k.c.receive(raw[i:i + 1], T0 + i)
        assert k.c.logged_in == (i == len(raw) - 1)
    assert k.drain()[0][0] == b"A"


@pytest.mark.parametrize("user, password", [(USER, "wrong"), ("bob", PASSWORD), ("", ""), (USER, "")])
def test_wrong_credentials_are_rejected_not_authorized(user, password):
    k = Conn()
    k.c.receive(login(user, password), T0)
    assert bytes(k.c.outgoing) == b"\x00\x02JA"
    assert k.c.closed and k.c.rejected and not k.c.logged_in
    assert k.calls == 0


def test_wrong_session_is_rejected_session_not_available():
    k = Conn()
    k.c.receive(login(session="FEEDA00000"), T0)
    assert bytes(k.c.outgoing) == b"\x00\x02JS"
    assert k.c.closed and k.c.rejected and not k.c.logged_in
    assert k.calls == 0


@pytest.mark.parametrize("session", ["", "FEEDA00001"])
def test_blank_or_current_session_is_accepted(session):
    k = Conn()
    k.c.receive(login(session=session), T0)
    assert k.c.logged_in and not k.c.closed
    assert k.drain()[0] == (b"A", b"FEEDA00001" + b" " * 19 + b"1")


def test_requested_session_padded_on_the_right_is_accepted():
    k = Conn(session="ABC")
    payload = USER.encode().ljust(6) + PASSWORD.encode().ljust(10) + b"ABC".ljust(10) + b"1".rjust(20)
    k.c.receive(soup(b"L", payload), T0)
    assert k.c.logged_in


@pytest.mark.parametrize("raw", [
    b"\x00\x00",                              # Packet Length 0: no type byte
    soup(b"X", b"abc"),                       # unknown type
    soup(b"S", b"data"),                      # a server's packet type from a client
    soup(b"L", b"x" * 45),                    # Login Request of the wrong length
    soup(b"R", b"x"),                         # Client Heartbeat with a payload
    b"\x01\x01" + b"+" + b"x" * 256,          # longer than any client packet
    soup(b"L", b"alice\x01" + b" " * 40),     # Login Request with a non-printable username
    soup(b"L", USER.encode().ljust(6) + PASSWORD.encode().ljust(10) + b" " * 10 + b"1x".rjust(20)),
], ids=["len0", "unknown", "server-type", "login-len", "hb-len", "too-long", "ctrl-char", "bad-number"])
def test_malformed_packet_closes_the_connection(raw):
    k = Conn()
    k.c.receive(raw, T0)
    assert k.c.closed and not k.c.logged_in
    assert k.calls == 0
    # Nothing more is read once closed.
    k.c.receive(login(), T0 + 1)
    assert not k.c.logged_in and k.calls == 0


def test_unsequenced_data_closes_the_connection():
    k = Conn()
    k.c.receive(login(), T0)
    k.drain()
    k.c.receive(soup(b"U", b"please"), T0 + 1)
    assert k.c.closed


def test_second_login_request_closes_the_connection():
    k = Conn()
    k.c.receive(login(), T0)
    k.drain()
    k.c.receive(login(), T0 + 1)
    assert k.c.closed and k.calls == 1


@pytest.mark.parametrize("logged_in", [False, True])
def test_logout_request_closes(logged_in):
    k = Conn()
    if logged_in:
        k.c.receive(login(), T0)
        k.drain()
    k.c.receive(b"\x00\x01O", T0 + 1)
    assert k.c.closed
    assert k.drain() == []


def test_client_heartbeat_and_debug_are_accepted():
    k = Conn()
    k.c.receive(b"\x00\x01R" + soup(b"+", b"hello"), T0)
    assert not k.c.closed
    k.c.receive(login(), T0 + 1)
    assert k.c.logged_in


# -- timers ---------------------------------------------------------------------------------------

def test_login_timeout():
    k = Conn()
    # The client keeps talking (so it is not silent) but never logs in.
    for t in range(0, 30, 10):
        k.c.receive(b"\x00\x01R", T0 + t * SEC)
        k.c.timers(T0 + t * SEC)
    k.c.timers(T0 + 29 * SEC)
    assert not k.c.closed
    k.c.receive(b"\x00\x01R", T0 + 29 * SEC)
    k.c.timers(T0 + 31 * SEC)
    assert k.c.closed and not k.c.logged_in and "Login" in k.c.why
    assert k.drain() == []  # no heartbeats to a client not logged in


def test_silent_client_is_disconnected_before_login():
    k = Conn()
    k.c.timers(T0 + 14 * SEC)
    assert not k.c.closed
    k.c.timers(T0 + 16 * SEC)
    assert k.c.closed


def test_silent_client_is_disconnected_after_login():
    k = Conn()
    k.c.receive(login(), T0)
    k.drain()
    for t in range(1, 15):
        k.c.timers(T0 + t * SEC)
        k.drain()
        assert not k.c.closed
    k.c.timers(T0 + 15 * SEC + SEC // 2)
    assert k.c.closed and "silent" in k.c.why


def test_client_heartbeats_keep_the_session_alive():
    k = Conn()
    k.c.receive(login(), T0)
    k.drain()
    for t in range(1, 60):
        if t % 10 == 0:
            k.c.receive(b"\x00\x01R", T0 + t * SEC)
        k.c.timers(T0 + t * SEC)
        k.drain()
    assert not k.c.closed
    k.c.timers(T0 + 50 * SEC + 16 * SEC)
    assert k.c.closed


def test_server_heartbeat_after_a_second_without_sending():
    k = Conn()
    k.c.receive(login(), T0)
    k.drain()
    k.c.timers(T0 + SEC - 1)
    assert k.drain() == []
    k.c.timers(T0 + SEC)
    assert bytes(k.c.outgoing) == b"\x00\x01H"
    k.drain()
    k.c.receive(b"\x00\x01R", T0 + SEC + 10)  # hearing from the client is not sending
    k.c.timers(T0 + SEC + SEC // 2)
    assert k.drain() == []
    k.c.timers(T0 + 2 * SEC)
    assert k.drain() == [(b"H", b"")]
    assert not k.c.closed


def test_end_of_session_to_a_logged_in_client():
    k = Conn()
    k.c.receive(login(), T0)
    k.drain()
    k.c.end_of_session(T0 + 1)
    assert bytes(k.c.outgoing) == b"\x00\x01Z"
    assert k.c.closed


def test_end_of_session_without_login_just_closes():
    k = Conn()
    k.c.end_of_session(T0 + 1)
    assert bytes(k.c.outgoing) == b"" and k.c.closed


def test_end_of_session_after_close_sends_nothing():
    k = Conn()
    k.c.receive(login(), T0)
    k.drain()
    k.c.receive(b"\x00\x01O", T0 + 1)
    k.c.end_of_session(T0 + 2)
    assert bytes(k.c.outgoing) == b""


# -- End of Snapshot (GLIMPSE 5.0) ---------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 42, 123_456_789, 10**20 - 1])
def test_end_of_snapshot_layout(n):
    raw = end_of_snapshot(n)
    assert len(raw) == 21
    assert raw[0:1] == b"G"                            # offset 0, length 1: Message Type
    field = raw[1:21]                                  # offset 1, length 20: Sequence Number
    digits = str(n).encode()
    assert field == b" " * (20 - len(digits)) + digits
    assert parse_end_of_snapshot(raw) == n


@pytest.mark.parametrize("n", [0, -1, 10**20])
def test_end_of_snapshot_out_of_range(n):
    with pytest.raises(ValueError):
        end_of_snapshot(n)


def test_parse_end_of_snapshot_written_by_hand():
    assert parse_end_of_snapshot(b"G" + b" " * 19 + b"7") == 7
    assert parse_end_of_snapshot(b"G" + b"9" * 20) == 10**20 - 1
    assert parse_end_of_snapshot(b"G" + b" " * 15 + b"00123") == 123


@pytest.mark.parametrize("raw", [
    b"G" + b" " * 18 + b"7",            # 20 bytes
    b"G" + b" " * 20 + b"7",            # 22 bytes
    b"A" + b" " * 19 + b"7",            # not 'G'
    b"G" + b"7" + b" " * 19,            # left-justified
    b"G" + b" " * 20,                   # blank
    b"G" + b" " * 17 + b"1 2",          # a space inside
    b"G" + b" " * 18 + b"-1",           # a sign
    b"G" + b" " * 18 + b"1a",           # not a digit
    b"",
], ids=["short", "long", "type", "left", "blank", "inner-space", "sign", "letter", "empty"])
def test_parse_end_of_snapshot_refuses_what_is_not_one(raw):
    assert parse_end_of_snapshot(raw) is None


# -- retransmit.answer from a real MessageStore -------------------------------------------------

MOLD = SESSION.encode()


def request(seq: int, count: int, session: bytes = MOLD) -> bytes:
    raw = session + seq.to_bytes(8, "big") + count.to_bytes(2, "big")
    assert len(raw) == 20
    return raw


def unpack(packet: bytes) -> tuple[bytes, int, int, list[bytes]]:
    session = packet[0:10]
    seq = int.from_bytes(packet[10:18], "big")
    count = int.from_bytes(packet[18:20], "big")
    msgs, at = [], 20
    if count not in (0, 0xFFFF):
        for _ in range(count):
            n = int.from_bytes(packet[at:at + 2], "big")
            msgs.append(packet[at + 2:at + 2 + n])
            at += 2 + n
    assert at == len(packet)
    return session, seq, count, msgs


def make_messages(n: int) -> list[bytes]:
    out = []
    for i in range(1, n + 1):
        if i % 3 == 0:
            out.append(itch.order_delete(1, 0, i, i))                    # 19 bytes
        elif i % 3 == 1:
            out.append(itch.add_order(1, 0, i, i, b"B", i, "AAA", 100))  # 36 bytes
        else:
            out.append(itch.system_event(0, 0, i, b"O"))                 # 12 bytes
    return out


@pytest.fixture
def store(tmp_path):
    s = MessageStore(tmp_path, 1_000_000)
    s.start_session(SESSION, FeedBook())
    msgs = make_messages(60)
    for i in range(0, 60, 7):
        s.append(msgs[i:i + 7], 1, i, {}, 0, FeedBook())
    s.msgs = msgs
    yield s
    s.close()


@pytest.mark.parametrize("seq, count, max_payload, max_packets", [
    (1, 1, 1400, 16), (1, 60, 1400, 16), (5, 10, 100, 16), (5, 10, 100, 2), (1, 60, 80, 16),
    (30, 100, 200, 3), (59, 10, 1400, 16), (60, 1, 58, 1), (2, 0xFFFF, 120, 16),
])
def test_answer_carries_exactly_the_asked_messages(store, seq, count, max_payload, max_packets):
    packets = answer(request(seq, count), store, MOLD, max_payload, max_packets)
    assert packets
    assert len(packets) <= max_packets
    expect_next = seq
    got: list[bytes] = []
    for p in packets:
        assert len(p) <= max_payload
        session, first, n, msgs = unpack(p)
        assert session == MOLD and first == expect_next and n == len(msgs) >= 1
        got += msgs
        expect_next += n
    assert got == store.msgs[seq - 1:seq - 1 + len(got)]
    available = min(count, 60 - seq + 1)
    if len(packets) < max_packets:
        assert len(got) == available  # all of it, unless the packet limit cut it short
    else:
        assert len(got) <= available
    # Each packet is as full as it may be: the next message would not have fitted.
    for p in packets[:-1]:
        _, first, n, _ = unpack(p)
        nxt = store.msgs[first - 1 + n]
        assert len(p) + 2 + len(nxt) > max_payload


def test_answer_below_the_oldest_retained_is_a_heartbeat_with_the_oldest(tmp_path):
    s = MessageStore(tmp_path, retain_messages=4, segment_messages=4)
    try:
        s.start_session(SESSION, FeedBook())
        msgs = make_messages(20)
        for i in range(20):
            s.append([msgs[i]], 1, i, {}, 0, FeedBook())
        oldest = s.first_seq
        assert oldest > 1
        for seq in (1, oldest - 1):
            packets = answer(request(seq, 3), s, MOLD, 1400)
            assert len(packets) == 1
            assert packets[0] == MOLD + oldest.to_bytes(8, "big") + b"\x00\x00"
        # From the oldest on: the messages themselves.
        packets = answer(request(oldest, 2), s, MOLD, 1400)
        assert [unpack(p)[1:] for p in packets] == [(oldest, 2, msgs[oldest - 1:oldest + 1])]
    finally:
        s.close()


@pytest.mark.parametrize("seq", [61, 62, 1000])
def test_answer_at_or_after_next_is_a_heartbeat_with_next(store, seq):
    assert store.next_seq == 61
    packets = answer(request(seq, 5), store, MOLD, 1400)
    assert packets == [MOLD + (61).to_bytes(8, "big") + b"\x00\x00"]


def test_answer_to_another_session_is_our_heartbeat_with_next(store):
    packets = answer(request(1, 5, session=b"FEEDA00000"), store, MOLD, 1400)
    assert packets == [MOLD + (61).to_bytes(8, "big") + b"\x00\x00"]


@pytest.mark.parametrize("raw", [
    request(1, 5)[:19],
    request(1, 5) + b"\x00",
    b"",
    MOLD + (1).to_bytes(8, "big") + b"\x00\x00",        # count 0
    MOLD + (0).to_bytes(8, "big") + b"\x00\x05",        # sequence number 0
    b"FEEDA\x0100001" + (1).to_bytes(8, "big") + b"\x00\x05",  # a non-printable session
], ids=["19", "21", "empty", "count0", "seq0", "session"])
def test_malformed_request_gets_no_answer(store, raw):
    assert answer(raw, store, MOLD, 1400) is None


def test_answer_on_an_empty_session(tmp_path):
    s = MessageStore(tmp_path, 100)
    try:
        s.start_session(SESSION, FeedBook())
        assert answer(request(1, 1), s, MOLD, 1400) == [MOLD + (1).to_bytes(8, "big") + b"\x00\x00"]
    finally:
        s.close()


def test_receiver_and_answer_end_to_end(tmp_path):
    """A receiver's request, answered from the store: retained messages fill the gap; a gap
    below the oldest retained message makes the receiver ``lost`` (join by snapshot)."""
    from ringex.feeds.mold_receiver import MoldReceiver
    from ringex.feeds.moldudp64 import parse_packet

    s = MessageStore(tmp_path, retain_messages=4, segment_messages=4)
    try:
        s.start_session(SESSION, FeedBook())
        msgs = make_messages(20)
        for i in range(20):
            s.append([msgs[i]], 1, i, {}, 0, FeedBook())
        oldest = s.first_seq
        # Joined late, at the oldest retained: everything arrives.
        rx = MoldReceiver(MOLD, next_seq=oldest)
        rx.packet(parse_packet(MOLD + (21).to_bytes(8, "big") + b"\x00\x00"))
        got = []
        for now in range(0, 100 * SEC, SEC):
            req = rx.request(now)
            if req is None:
                break
            for p in answer(request(*req), s, MOLD, 100, max_packets=2):
                got += rx.answer(parse_packet(p))
        assert got == msgs[oldest - 1:] and not rx.lost and rx.gap() is None
        # From 1: no longer retained.
        rx = MoldReceiver(MOLD)
        rx.packet(parse_packet(MOLD + (21).to_bytes(8, "big") + b"\x00\x00"))
        req = rx.request(0)
        assert req == (1, 20)
        packets = answer(request(*req), s, MOLD, 1400)
        assert [rx.answer(parse_packet(p)) for p in packets] == [[]]
        assert rx.lost
    finally:
        s.close()
