"""The MoldUDP64 re-request service's answers, from the publisher's message store.

A receiver that sees a gap sends a request packet (session, first sequence number wanted,
count) to the re-request address; the answer goes back to the address it came from, as
ordinary downstream packets of the same session (MoldUDP64 1.00). This module decides the
answer; the publisher owns the socket.

- Messages still retained: as many as the request asks, from the one asked for, packed up
  to ``max_payload`` per packet and at most ``max_packets`` packets per request (a receiver
  asks again for the rest: one request never makes the publisher send without bound).
- Messages no longer retained (below the store's oldest): an explicit answer, not silence: a
  packet with Message Count 0 whose Sequence Number is the oldest message still retained.
  A heartbeat's sequence number is never below what the receiver already has; this one is
  below the number it asked for only when nothing asked for exists any more, so the
  subscriber reads it as "retransmission starts here" and joins by snapshot instead.
- Messages not yet published (at or past the next number): a heartbeat with the next
  number, which says the same thing the live stream does.
- Another session's request: the same answer as for an unknown future, with our session's
  name in it, so the receiver learns that its session is over.
- A packet that is not a well-formed 20-byte request: no answer (MoldUDP64 has no way to
  say what was wrong); the publisher counts it.
"""

from __future__ import annotations

from ringex.feeds import moldudp64 as mold
from ringex.feeds.message_store import MessageStore

__all__ = ["answer"]


def answer(request: bytes, store: MessageStore, session: bytes, max_payload: int,
           max_packets: int = 16) -> list[bytes] | None:
    """The packets that answer ``request``; None when it is not a request (count it)."""
    try:
        req = mold.parse_request(request)
    except mold.MoldError:
        return None
    nxt = store.next_seq
    if req.session != session or req.sequence_number >= nxt:
        return [mold.encode_heartbeat(session, nxt)]
    if req.sequence_number < store.first_seq:
        return [mold.encode_heartbeat(session, store.first_seq)]
    seq = req.sequence_number
    wanted = req.requested_message_count
    packets: list[bytes] = []
    budget = max_payload - mold.HEADER_LENGTH
    while wanted > 0 and len(packets) < max_packets and seq < nxt:
        msgs = store.read(seq, wanted, budget)
        if not msgs:
            break
        packets.append(mold.encode_packet(session, seq, msgs))
        seq += len(msgs)
        wanted -= len(msgs)
    return packets
