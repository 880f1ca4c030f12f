"""The client's session logic without a network (gateways/client.py ``ClientProtocol``): what
it sends at each step, and how it orders what arrives, so that a caller sees the server's
messages with consecutive numbers, no gap and no duplicate, whatever the interleaving of a
retransmission with live messages."""

from __future__ import annotations

import pytest

from ringex.engine.wire import messages as m
from ringex.gateways.client import ClientProtocol, SessionRejected, SessionTerminated


def accepted(cl: int) -> bytes:
    return m.OrderAccepted.encode(clOrdId=cl, side="Buy", ordType="Limit", timeInForce="GTC")


def establish(p: ClientProtocol, next_seq: int, last_applied: int = 0) -> bytes | None:
    p.establish_message()
    return p.established(m.SCHEMA.decode(m.EstablishmentAck.encode(
        uuidHi=p.uuid[0], uuidLo=p.uuid[1], nextSeqNo=next_seq, lastAppliedSeqNo=last_applied, keepaliveInterval=1000)))


def arrive(p: ClientProtocol, *messages: bytes) -> list[tuple[int, int]]:
    for msg in messages:
        p.on_payload(msg)
    out = []
    while p._queue:
        e = p._queue.popleft()
        out.append((e.seq, e["clOrdId"]))
    return out


def test_a_retransmission_comes_before_the_live_messages_that_overtook_it():
    p = ClientProtocol(1, "pw")
    p.negotiate_message()
    assert establish(p, 1) is None
    assert arrive(p, accepted(1), accepted(2)) == [(1, 1), (2, 2)]
    p.new_connection()  # reconnect: the server has sent 3..5 meanwhile
    request = establish(p, 6)
    assert m.SCHEMA.decode(request)["fromSeqNo"] == 3 and m.SCHEMA.decode(request)["count"] == 3
    # live 6 arrives before the retransmission; then 3..5; then the live numbering resumes
    seen = arrive(p, accepted(6))
    assert seen == []  # held back
    seen = arrive(p, m.Retransmission.encode(nextSeqNo=3, count=3), accepted(3), accepted(4), accepted(5),
                  m.Sequence.encode(nextSeqNo=7), accepted(7))
    assert seen == [(3, 3), (4, 4), (5, 5), (6, 6), (7, 7)]


def test_what_arrives_twice_is_given_once():
    p = ClientProtocol(1, "pw")
    p.negotiate_message()
    establish(p, 1)
    assert arrive(p, accepted(1), accepted(2)) == [(1, 1), (2, 2)]
    # a retransmission of what it had already
    assert arrive(p, m.Retransmission.encode(nextSeqNo=1, count=2), accepted(1), accepted(2),
                  m.Sequence.encode(nextSeqNo=3), accepted(3)) == [(3, 3)]


def test_after_a_reconnect_numbering_resumes_after_what_the_server_applied():
    p = ClientProtocol(1, "pw")
    p.negotiate_message()
    establish(p, 1)
    for cl in range(5):
        p.order_message("NewOrder", dict(clOrdId=cl, side="Buy", ordType="Limit"))
    assert p.next_out == 6
    p.new_connection()
    establish(p, 1, last_applied=3)  # 4 and 5 never arrived: resent from 6 on, as new
    assert p.next_out == 6 and p.last_applied == 3
    p.new_connection()
    p.establish_message(next_seq=4)  # a client that resends 4 and 5 itself says so
    p.established(m.SCHEMA.decode(m.EstablishmentAck.encode(nextSeqNo=1, lastAppliedSeqNo=3, keepaliveInterval=1)),
                  resend_from=4)
    assert p.next_out == 4


def test_refusals_and_terminations_raise_with_their_code():
    p = ClientProtocol(1, "pw")
    p.negotiate_message()
    with pytest.raises(SessionRejected) as err:
        p.negotiated(m.SCHEMA.decode(m.NegotiationReject.encode(code="Credentials", reason="no")))
    assert err.value.code == m.NegotiationRejectCode.Credentials
    with pytest.raises(SessionTerminated):
        p.established(m.SCHEMA.decode(m.Terminate.encode(code="UnspecifiedError", reason="x")))
    p.on_payload(m.Terminate.encode(code="SlowConsumer", reason="too slow"))
    assert p.terminated is not None and p.terminated.code == m.TerminationCode.SlowConsumer
    with pytest.raises(ValueError):
        p.order_message("Funds", {})


def test_what_arrives_with_the_establishment_ack_is_numbered_after_it():
    """Live messages in the same read as the ack wait for it: numbered from the ack's
    nextSeqNo, and behind the retransmission the ack makes the client ask for."""
    p = ClientProtocol(1, "pw")
    p.negotiate_message()
    establish(p, 1)
    assert arrive(p, accepted(1)) == [(1, 1)]
    p.new_connection()
    p.establish_message()
    ack = m.EstablishmentAck.encode(uuidHi=p.uuid[0], uuidLo=p.uuid[1], nextSeqNo=5, keepaliveInterval=1000)
    reply = p.on_payload(ack, handshake=True)
    p.on_payload(accepted(5))  # came in the same read as the ack
    request = p.established(reply)
    assert m.SCHEMA.decode(request)["fromSeqNo"] == 2
    p.resume()
    assert arrive(p) == []  # 5 waits for 2..4
    assert arrive(p, m.Retransmission.encode(nextSeqNo=2, count=3), accepted(2), accepted(3), accepted(4),
                  m.Sequence.encode(nextSeqNo=6)) == [(2, 2), (3, 3), (4, 4), (5, 5)]
