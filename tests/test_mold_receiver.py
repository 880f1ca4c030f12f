"""MoldReceiver: MoldUDP64 sequencing without I/O (ringex.feeds.mold_receiver).

Packets are written out byte by byte from the MoldUDP64 1.00 layout (10-byte session, 8-byte
big-endian sequence number, 2-byte big-endian message count, then per message a 2-byte
big-endian length and the data) and parsed with ``moldudp64.parse_packet``, which is what the
receiver is fed in production.
"""

from __future__ import annotations

import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringex.feeds.mold_receiver import MoldReceiver
from ringex.feeds.moldudp64 import parse_packet

SESSION = b"SESSION001"
OTHER = b"SESSION002"
RETRY = 1_000


def wire(session: bytes, seq: int, messages: list[bytes] | None = None, count: int | None = None) -> bytes:
    """A downstream packet from the spec: session(10) seq(8, BE) count(2, BE) blocks."""
    assert len(session) == 10
    messages = messages or []
    n = len(messages) if count is None else count
    out = session + seq.to_bytes(8, "big") + n.to_bytes(2, "big")
    for m in messages:
        out += len(m).to_bytes(2, "big") + m
    return out


def pkt(seq: int, messages: list[bytes], session: bytes = SESSION):
    return parse_packet(wire(session, seq, messages))


def heartbeat(next_seq: int, session: bytes = SESSION):
    return parse_packet(wire(session, next_seq, count=0))


def end_of_session(next_seq: int, session: bytes = SESSION):
    return parse_packet(wire(session, next_seq, count=0xFFFF))


def msg(n: int) -> bytes:
    return b"m" + struct.pack(">I", n)


def msgs(first: int, last: int) -> list[bytes]:
    return [msg(n) for n in range(first, last + 1)]


def test_wire_helper_matches_the_spec_layout():
    raw = wire(SESSION, 0x0102030405060708, [b"ab", b"c"])
    assert raw[0:10] == SESSION
    assert raw[10:18] == bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert raw[18:20] == b"\x00\x02"
    assert raw[20:] == b"\x00\x02ab\x00\x01c"
    p = parse_packet(raw)
    assert (p.session, p.sequence_number, p.message_count, p.messages) == (SESSION, 0x0102030405060708, 2, [b"ab", b"c"])


# -- delivery ------------------------------------------------------------------------------------

def test_in_order_packets_are_delivered_at_once():
    r = MoldReceiver(SESSION)
    assert r.packet(pkt(1, msgs(1, 3))) == msgs(1, 3)
    assert r.packet(pkt(4, msgs(4, 4))) == msgs(4, 4)
    assert r.packet(pkt(5, msgs(5, 9))) == msgs(5, 9)
    assert r.expected == 10
    assert r.gap() is None and r.request(0) is None
    assert r.duplicates == 0 and r.foreign == 0


def test_session_none_joins_the_first_packets_session():
    r = MoldReceiver()
    assert r.packet(pkt(1, msgs(1, 1), session=OTHER)) == msgs(1, 1)
    assert r.session == OTHER
    assert r.packet(pkt(2, msgs(2, 2), session=SESSION)) == []
    assert r.foreign == 1


def test_next_seq_starts_the_numbering():
    r = MoldReceiver(SESSION, next_seq=100)
    assert r.packet(pkt(98, msgs(98, 101))) == msgs(100, 101)
    assert r.duplicates == 2
    assert r.expected == 102


def test_duplicates_are_dropped_and_counted():
    r = MoldReceiver(SESSION)
    assert r.packet(pkt(1, msgs(1, 3))) == msgs(1, 3)
    assert r.packet(pkt(1, msgs(1, 3))) == []
    assert r.duplicates == 3
    # A packet overlapping what we have: only the new part.
    assert r.packet(pkt(2, msgs(2, 5))) == msgs(4, 5)
    assert r.duplicates == 5
    # A duplicate of a held (not yet delivered) message counts too, and is delivered once.
    assert r.packet(pkt(8, msgs(8, 9))) == []
    assert r.packet(pkt(8, msgs(8, 9))) == []
    assert r.duplicates == 7
    assert r.packet(pkt(6, msgs(6, 7))) == msgs(6, 9)
    assert r.expected == 10


def test_reordered_packets_are_delivered_in_order_once_the_gap_fills():
    r = MoldReceiver(SESSION)
    assert r.packet(pkt(7, msgs(7, 9))) == []
    assert r.packet(pkt(4, msgs(4, 6))) == []
    assert r.packet(pkt(10, msgs(10, 10))) == []
    assert r.expected == 1
    assert r.packet(pkt(1, msgs(1, 3))) == msgs(1, 10)
    assert r.expected == 11 and r.gap() is None and r.duplicates == 0


def test_partial_fill_delivers_up_to_the_next_hole():
    r = MoldReceiver(SESSION)
    r.packet(pkt(3, msgs(3, 3)))
    r.packet(pkt(6, msgs(6, 6)))
    assert r.packet(pkt(1, msgs(1, 2))) == msgs(1, 3)
    assert r.gap() == (4, 2)
    assert r.packet(pkt(4, msgs(4, 5))) == msgs(4, 6)


# -- gaps and requests --------------------------------------------------------------------------

def test_gap_from_a_later_packet():
    r = MoldReceiver(SESSION)
    assert r.gap() is None
    r.packet(pkt(1, msgs(1, 2)))
    r.packet(pkt(6, msgs(6, 8)))
    assert r.gap() == (3, 3)
    r.packet(pkt(4, msgs(4, 4)))
    assert r.gap() == (3, 1)
    r.packet(pkt(3, msgs(3, 3)))
    assert r.gap() == (5, 1)


def test_gap_from_a_heartbeat_ahead():
    r = MoldReceiver(SESSION)
    r.packet(pkt(1, msgs(1, 2)))
    assert r.packet(heartbeat(3)) == []
    assert r.gap() is None  # the heartbeat says 3 is next: nothing missing
    assert r.packet(heartbeat(10)) == []
    assert r.gap() == (3, 7)
    # A stale heartbeat does not shrink what is known to exist.
    r.packet(heartbeat(5))
    assert r.gap() == (3, 7)


def test_gap_is_capped_by_max_request():
    r = MoldReceiver(SESSION, max_request=4)
    r.packet(heartbeat(101))
    assert r.gap() == (1, 4)
    assert r.request(0) == (1, 4)
    # At most 0xFFFE can be asked for in one MoldUDP64 request.
    big = MoldReceiver(SESSION, max_request=1 << 20)
    big.packet(heartbeat(1 + (1 << 20)))
    assert big.gap() == (1, 0xFFFE)


def test_request_pacing():
    r = MoldReceiver(SESSION, retry_ns=RETRY)
    assert r.request(0) is None  # no gap, nothing to ask
    assert r.requests == 0
    r.packet(pkt(5, msgs(5, 5)))
    assert r.request(10_000) == (1, 4)
    assert r.requests == 1
    # The same gap again only after retry_ns.
    assert r.request(10_000) is None
    assert r.request(10_000 + RETRY - 1) is None
    assert r.request(10_000 + RETRY) == (1, 4)
    assert r.requests == 2
    # A part arrives: the gap now starts elsewhere, asked for at once.
    r.packet(pkt(1, msgs(1, 2)))
    assert r.request(10_000 + RETRY + 1) == (3, 2)
    assert r.request(10_000 + RETRY + 2) is None
    # Filled: nothing to ask.
    r.packet(pkt(3, msgs(3, 4)))
    assert r.gap() is None
    assert r.request(10_000 + 10 * RETRY) is None
    assert r.requests == 3


def test_request_same_start_but_longer_gap_still_waits():
    r = MoldReceiver(SESSION, retry_ns=RETRY)
    r.packet(pkt(3, msgs(3, 3)))
    assert r.request(0) == (1, 2)
    r.packet(heartbeat(10))
    assert r.request(1) is None  # still the gap starting at 1: paced


# -- answers from the re-request server ---------------------------------------------------------

def test_answer_packets_fill_the_gap():
    r = MoldReceiver(SESSION, retry_ns=RETRY)
    r.packet(pkt(1, msgs(1, 1)))
    r.packet(pkt(5, msgs(5, 6)))
    assert r.request(0) == (2, 3)
    assert r.answer(pkt(2, msgs(2, 3))) == msgs(2, 3)
    assert r.answer(pkt(4, msgs(4, 4))) == msgs(4, 6)
    assert r.gap() is None and not r.lost
    # A late live copy of what the answer gave is a duplicate.
    assert r.packet(pkt(2, msgs(2, 4))) == []
    assert r.duplicates == 3


def test_answer_heartbeat_above_what_was_asked_sets_lost():
    r = MoldReceiver(SESSION, retry_ns=RETRY)
    r.packet(pkt(1, msgs(1, 1)))
    r.packet(pkt(10, msgs(10, 10)))
    assert r.request(0) == (2, 8)
    # The server retains from 6 only: "retransmission starts here".
    assert r.answer(heartbeat(6)) == []
    assert r.lost
    assert r.request(RETRY * 10) is None  # lost: join by snapshot, no more requests


def test_answer_end_of_session_above_what_was_asked_sets_lost():
    r = MoldReceiver(SESSION)
    r.packet(heartbeat(5))
    assert r.request(0) == (1, 4)
    assert r.answer(end_of_session(3)) == []
    assert r.lost


def test_answer_heartbeat_at_what_was_asked_is_not_lost():
    r = MoldReceiver(SESSION)
    r.packet(pkt(1, msgs(1, 1)))
    r.packet(pkt(4, msgs(4, 4)))
    assert r.request(0) == (2, 2)
    r.answer(heartbeat(2))
    assert not r.lost
    r.answer(heartbeat(1))  # below: an old heartbeat, not an answer that anything is lost
    assert not r.lost


def test_answer_heartbeat_when_everything_arrived_meanwhile_is_not_lost():
    r = MoldReceiver(SESSION)
    r.packet(pkt(3, msgs(3, 3)))
    assert r.request(0) == (1, 2)
    assert r.packet(pkt(1, msgs(1, 2))) == msgs(1, 3)
    r.answer(heartbeat(4))
    assert not r.lost


def test_answer_of_another_session_is_ignored():
    r = MoldReceiver(SESSION)
    r.packet(heartbeat(5))
    assert r.request(0) == (1, 4)
    assert r.answer(heartbeat(50, session=OTHER)) == []
    assert r.answer(pkt(1, msgs(1, 4), session=OTHER)) == []
    assert not r.lost and r.foreign == 2 and r.expected == 1


# -- end of session -------------------------------------------------------------------------------

def test_end_of_session_waits_for_everything_before_it():
    r = MoldReceiver(SESSION)
    r.packet(pkt(1, msgs(1, 2)))
    assert r.packet(end_of_session(6)) == []
    assert not r.ended
    assert r.gap() == (3, 3)
    assert r.packet(pkt(4, msgs(4, 5))) == []
    assert not r.ended
    assert r.packet(pkt(3, msgs(3, 3))) == msgs(3, 5)
    assert r.ended


def test_end_of_session_when_everything_arrived():
    r = MoldReceiver(SESSION)
    r.packet(pkt(1, msgs(1, 3)))
    r.packet(end_of_session(4))
    assert r.ended and r.gap() is None


def test_end_of_session_of_another_session_is_ignored():
    r = MoldReceiver(SESSION)
    r.packet(pkt(1, msgs(1, 3)))
    r.packet(end_of_session(4, session=OTHER))
    assert not r.ended and r.foreign == 1


# -- foreign packets, bounds ---------------------------------------------------------------------

def test_foreign_packets_are_ignored_and_counted():
    r = MoldReceiver(SESSION)
    assert r.packet(pkt(1, msgs(1, 3), session=OTHER)) == []
    assert r.packet(heartbeat(100, session=OTHER)) == []
    assert r.expected == 1 and r.gap() is None and r.foreign == 2
    assert r.packet(pkt(1, msgs(1, 1))) == msgs(1, 1)


def test_max_held_bound_is_respected_and_the_furthest_are_dropped():
    r = MoldReceiver(SESSION, max_held=3)
    assert r.packet(pkt(2, msgs(2, 6))) == []
    assert sorted(r._held) == [2, 3, 4]  # 5 and 6: beyond the bound, dropped
    assert r.gap() == (1, 1)
    # A nearer message displaces the furthest held one.
    r = MoldReceiver(SESSION, max_held=2)
    r.packet(pkt(8, msgs(8, 9)))
    r.packet(pkt(3, msgs(3, 3)))
    assert sorted(r._held) == [3, 8]
    assert r.gap() == (1, 2)


def test_dropped_messages_are_asked_for_again_and_all_arrive_once():
    r = MoldReceiver(SESSION, max_held=2, retry_ns=RETRY)
    got = r.packet(pkt(3, msgs(3, 7)))
    assert sorted(r._held) == [3, 4]
    now = 0
    for _ in range(20):
        g = r.request(now)
        if g is None:
            break
        got += r.answer(pkt(g[0], msgs(g[0], g[0] + g[1] - 1)))
        assert len(r._held) <= 2
        now += RETRY
    assert got == msgs(1, 7)
    assert r.expected == 8 and r.gap() is None


def test_the_next_expected_message_does_not_displace_held_ones():
    """Only messages *above* the next expected number are held (and bounded by max_held): the
    next expected one is delivered at once, so it should not push a held message out."""
    r = MoldReceiver(SESSION, max_held=3)
    r.packet(pkt(2, msgs(2, 6)))
    assert sorted(r._held) == [2, 3, 4]
    assert r.packet(pkt(1, msgs(1, 1))) == msgs(1, 4)
    assert r.gap() == (5, 2)

    r = MoldReceiver(SESSION, max_held=2)
    r.packet(pkt(8, msgs(8, 9)))
    r.packet(pkt(3, msgs(3, 3)))
    assert r.packet(pkt(1, msgs(1, 2))) == msgs(1, 3)
    assert r.gap() == (4, 4)


# -- the random channel ---------------------------------------------------------------------------

class Server:
    """A re-request server holding every message: answers in packets of up to ``chunk``."""

    def __init__(self, messages: list[bytes], chunk: int) -> None:
        self.messages = messages
        self.chunk = chunk

    def answer(self, first: int, count: int) -> list[bytes]:
        out = []
        seq = first
        end = min(first + count, len(self.messages) + 1)
        while seq < end:
            n = min(self.chunk, end - seq)
            out.append(wire(SESSION, seq, self.messages[seq - 1:seq - 1 + n]))
            seq += n
        return out


def run_channel(seed: int, n: int, max_held: int, max_request: int) -> None:
    rng = random.Random(seed)
    messages = [msg(i) + bytes(rng.randint(0, 6)) for i in range(1, n + 1)]
    # Split into packets.
    packets: list[bytes] = []
    seq = 1
    while seq <= n:
        k = rng.randint(1, 5)
        packets.append(wire(SESSION, seq, messages[seq - 1:seq - 1 + k]))
        seq += min(k, n - seq + 1)
        if rng.random() < 0.1:
            packets.append(wire(SESSION, seq, count=0))  # heartbeat: next expected
    # The channel: drop, duplicate, reorder within a window, stray other-session packets.
    sent: list[bytes] = []
    for p in packets:
        r = rng.random()
        if r < 0.25:
            continue
        sent.append(p)
        if r > 0.85:
            sent.append(p)
        if rng.random() < 0.05:
            sent.append(wire(OTHER, rng.randint(1, n), [b"x"]))
    for i in range(len(sent)):
        j = min(len(sent) - 1, i + rng.randint(0, 4))
        sent[i], sent[j] = sent[j], sent[i]
    sent.append(wire(SESSION, n + 1, count=0xFFFF))

    server = Server(messages, rng.randint(1, 7))
    rx = MoldReceiver(SESSION, max_held=max_held, retry_ns=RETRY, max_request=max_request)
    got: list[bytes] = []
    now = 0
    for raw in sent:
        got += rx.packet(parse_packet(raw))
        now += rng.randint(0, RETRY // 2)
        req = rx.request(now)
        if req is not None and rng.random() < 0.7:  # some requests (or answers) are lost too
            answers = server.answer(*req)
            rng.shuffle(answers)
            for a in answers:
                if rng.random() < 0.9:
                    got += rx.answer(parse_packet(a))
    # After the live stream: ask until nothing is missing.
    for _ in range(10 * n + 50):
        if rx.ended:
            break
        now += RETRY
        req = rx.request(now)
        assert req is not None, (rx.expected, rx.known_end, rx.gap())
        first, count = req
        assert first == rx.expected and 1 <= count <= max_request
        for a in server.answer(first, count):
            if rng.random() < 0.9:
                got += rx.answer(parse_packet(a))
    assert rx.ended and not rx.lost
    assert got == messages
    assert rx.expected == n + 1 and rx.gap() is None
    assert len(rx._held) == 0


@settings(max_examples=60, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120), max_held=st.sampled_from([2, 5, 1_000_000]),
       max_request=st.sampled_from([1, 3, 1024]))
def test_random_loss_duplication_and_reordering_deliver_each_message_once_in_order(seed, n, max_held, max_request):
    run_channel(seed, n, max_held, max_request)
