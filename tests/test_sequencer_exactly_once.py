"""The sequencer across its own crash: no message lost, none sequenced twice.

The reproduction from issue 11, with the project's own classes and no process: orders in an
inbound ring, a ``SequencerAgent`` that "dies" at one instant of its hand-off (an exception
where the process would have been killed; nothing after it runs, not even ``on_close``),
then a second ``SequencerAgent`` on the same rings. Whatever the instant, the engine ring
(or the reject ring, when not accepting) must hold each message exactly once, in order,
with sequence numbers 1..n.
"""

from __future__ import annotations

import os
from itertools import count

import pytest

from ringex.engine.pipeline.sequencer import SequencerAgent
from ringex.engine.wire import messages as m
from ringex.ringbuffer import descriptor as d
from ringex.ringbuffer.consumer import Consumer
from ringex.ringbuffer.control import ControlBlock
from ringex.ringbuffer.producer import Producer
from ringex.ringbuffer.ring import Ring

SLOT = m.SLOT_SIZE
_n = count()


class Died(Exception):
    """Stands for SIGKILL at the instant it is raised."""


def new_order(cl: int) -> bytes:
    return m.NewOrder.encode(
        clOrdId=cl, side=1, price=1000, qty=1, account=1, instrument=1, ordType=m.OrdType.Limit,
        timeInForce=m.TimeInForce.GTC, stpMode=m.StpMode.Off, sessionId=7,
    )


def trading_status(n: int) -> bytes:
    return m.TradingStatusUpdate.encode(instrument=n, status=m.TradingStatus.Halted)


def funds(account: int) -> bytes:
    return m.Funds.encode(account=account, asset=0, amount=10**9, action=m.FundsAction.Deposit)


class Venue:
    """Two inbound rings (the first is the admin ring), the engine and reject rings, a
    control block."""

    def __init__(self) -> None:
        tag = f"rxseq{os.getpid()}n{next(_n)}"
        self.names = [f"{tag}-in-a", f"{tag}-in-b"]
        self.inbound = [Ring.create(n, slot_size=SLOT, capacity=64) for n in self.names]
        self.engine = Ring.create(f"{tag}-eng", slot_size=SLOT, capacity=64)
        self.reject = Ring.create(f"{tag}-rej", slot_size=SLOT, capacity=64)
        self.control = ControlBlock.create(f"{tag}-ctl")
        self.control.accept()
        self.tag = tag
        self.agents: list[SequencerAgent] = []

    def sequencer(self) -> SequencerAgent:
        agent = SequencerAgent(self.names, self.engine.name, self.reject.name, self.control.name,
                               batch_limit=16, clock=lambda: 1_000, admin_ring=self.names[0])
        agent.on_start()
        self.agents.append(agent)
        return agent

    def offer(self, ring: int, messages: list[bytes]) -> None:
        producer = self.inbound[ring].producer(takeover=True)
        for msg in messages:
            assert producer.offer(msg)

    def messages(self, ring: Ring) -> list[m.Decoded]:
        return [m.SCHEMA.decode(bytes(ring.slots()[i & (ring.capacity - 1)]))
                for i in range(ring.producer_position)]

    def close(self) -> None:
        for a in self.agents:
            a.on_close()
        for r in (*self.inbound, self.engine, self.reject):
            r.close()
            r.unlink()
        self.control.close()


@pytest.fixture
def venue():
    v = Venue()
    try:
        yield v
    finally:
        v.close()


def die_at(monkeypatch, cls, method: str, after: bool = True) -> None:
    """Make ``cls.method`` kill the process just after (or before) it does its work."""
    original = getattr(cls, method)

    def dying(self, *args, **kwargs):
        if after:
            original(self, *args, **kwargs)
        raise Died(method)

    monkeypatch.setattr(cls, method, dying)


def run_until_idle(agent: SequencerAgent) -> None:
    for _ in range(100):
        if not agent.do_work():
            return
    raise AssertionError("the sequencer never went idle")


def assert_sequenced_once(venue: Venue, expected: list[int]) -> None:
    msgs = venue.messages(venue.engine)
    assert [x.fields["clOrdId"] for x in msgs] == expected
    assert [x.fields["seq"] for x in msgs] == list(range(1, len(expected) + 1))


@pytest.mark.parametrize("instant", ["after publish", "before publish", "after note"])
def test_a_sequencer_dying_in_its_hand_off_sequences_each_order_once(venue, monkeypatch, instant) -> None:
    venue.offer(0, [new_order(cl) for cl in range(1, 6)])
    with monkeypatch.context() as mp:
        if instant == "after publish":  # the window issue 11 reproduced: commit never ran
            die_at(mp, Consumer, "commit", after=False)
        elif instant == "before publish":
            die_at(mp, Producer, "publish", after=False)
        else:  # the note written, torn or whole, and nothing published
            die_at(mp, Producer, "note_provenance")
        first = venue.sequencer()
        with pytest.raises(Died):
            first.do_work()
    venue.agents.remove(first)  # a dead process closes nothing
    second = venue.sequencer()
    run_until_idle(second)
    assert_sequenced_once(venue, [1, 2, 3, 4, 5])
    assert second._consumers[0].position == 5


def test_the_window_would_repeat_the_batch_without_the_note(venue, monkeypatch) -> None:
    """The test above can fail: erase the note the dead sequencer left and the batch is
    sequenced twice, as before the fix."""
    venue.offer(0, [new_order(cl) for cl in range(1, 6)])
    with monkeypatch.context() as mp:
        die_at(mp, Consumer, "commit", after=False)
        first = venue.sequencer()
        with pytest.raises(Died):
            first.do_work()
    venue.agents.remove(first)
    venue.engine._q[d.word(d.PROVENANCE_UPTO_OFFSET)] = d.NO_PROVENANCE
    run_until_idle(venue.sequencer())
    assert [x.fields["clOrdId"] for x in venue.messages(venue.engine)] == [1, 2, 3, 4, 5] * 2


def test_a_crash_on_one_inbound_ring_leaves_the_other_untouched(venue, monkeypatch) -> None:
    venue.offer(0, [new_order(cl) for cl in range(1, 4)])
    venue.offer(1, [new_order(cl) for cl in range(11, 14)])
    first = venue.sequencer()
    first.do_work()  # both rings once: 1-3 then 11-13 (or the other way round)
    venue.offer(1, [new_order(14)])
    with monkeypatch.context() as mp:
        die_at(mp, Consumer, "commit", after=False)
        with pytest.raises(Died):
            first.do_work()
    venue.agents.remove(first)
    run_until_idle(venue.sequencer())
    got = [x.fields["clOrdId"] for x in venue.messages(venue.engine)]
    assert sorted(got) == [1, 2, 3, 11, 12, 13, 14]
    assert [x.fields["seq"] for x in venue.messages(venue.engine)] == list(range(1, 8))


def test_not_accepting_a_crash_repeats_no_rejection_and_no_admin_message(venue, monkeypatch) -> None:
    venue.control.refuse(1)
    venue.offer(0, [new_order(1), trading_status(9), new_order(2)])
    with monkeypatch.context() as mp:
        die_at(mp, Consumer, "commit", after=False)  # the first message's commit
        first = venue.sequencer()
        with pytest.raises(Died):
            first.do_work()
    venue.agents.remove(first)
    second = venue.sequencer()
    run_until_idle(second)
    rejected = venue.messages(venue.reject)
    assert [(x.name, x.fields["clOrdId"]) for x in rejected] == [("OrderRejected", 1), ("OrderRejected", 2)]
    assert all(x.fields["reason"] == m.RejectReason.ExchangeNotAccepting for x in rejected)
    admin = venue.messages(venue.engine)
    assert [(x.name, x.fields["seq"]) for x in admin] == [("TradingStatusUpdate", 1)]
    assert second._consumers[0].position == 3


def test_a_note_from_another_configuration_is_refused(venue) -> None:
    first = venue.sequencer()
    venue.offer(1, [new_order(1)])
    run_until_idle(first)
    first.on_close()
    venue.agents.remove(first)
    agent = SequencerAgent(venue.names[:1], venue.engine.name, venue.reject.name, venue.control.name)
    try:
        with pytest.raises(RuntimeError, match="notes inbound ring 1, this sequencer has 1"):
            agent.on_start()
    finally:
        agent.on_close()


def test_provenance_of_a_fresh_ring_is_none(venue) -> None:
    assert venue.engine.provenance() is None
    p = venue.engine.producer()
    head, _ = p.claim(2)
    p.note_provenance(2, 1, 40)
    assert venue.engine.provenance() is None  # noted, not published
    p.publish(2)
    assert venue.engine.provenance() == (1, 40)
    with pytest.raises(ValueError, match="provenance for 3 slots, 0 claimed"):
        p.note_provenance(3, 1, 41)
    p.close()


# --- admin messages only from the admin ring (issue 13, defect 8) ----------------------------


@pytest.mark.parametrize("accepting", [True, False])
def test_an_admin_message_on_a_gateway_ring_is_refused_not_sequenced(venue, accepting) -> None:
    if not accepting:
        venue.control.refuse(1)
    venue.offer(1, [new_order(1), funds(5), new_order(2), trading_status(3), new_order(3)])
    run_until_idle(venue.sequencer())
    refused = [x for x in venue.messages(venue.reject) if x.template_id == m.AdminResult.template_id]
    assert [(x.fields["refTemplateId"], x.fields["reason"], x.fields["seq"]) for x in refused] == [
        (m.Funds.template_id, int(m.RejectReason.AdminNotPermitted), 0),
        (m.TradingStatusUpdate.template_id, int(m.RejectReason.AdminNotPermitted), 0),
    ]
    assert refused[0].fields["account"] == 5
    engine = venue.messages(venue.engine)
    assert all(x.template_id == m.NewOrder.template_id for x in engine)
    if accepting:  # the orders around them go on, in order, numbered without gaps
        assert_sequenced_once(venue, [1, 2, 3])
    else:
        assert engine == [] and len(venue.messages(venue.reject)) == 5


def test_the_admin_ring_carries_admin_messages_and_a_clean_gateway_batch_takes_the_fast_path(
        venue, monkeypatch) -> None:
    venue.offer(0, [funds(5), trading_status(3)])
    venue.offer(1, [new_order(1), new_order(2)])
    agent = venue.sequencer()
    one_by_one = []
    real = agent._forward_one_by_one
    monkeypatch.setattr(agent, "_forward_one_by_one", lambda *a, **k: one_by_one.append(a) or real(*a, **k))
    run_until_idle(agent)
    assert [x.template_id for x in venue.messages(venue.engine)] == [
        m.Funds.template_id, m.TradingStatusUpdate.template_id, m.NewOrder.template_id, m.NewOrder.template_id]
    assert venue.messages(venue.reject) == [] and one_by_one == []


def test_the_admin_ring_must_be_an_inbound_ring(venue) -> None:
    with pytest.raises(ValueError, match="not one of the inbound rings"):
        SequencerAgent(venue.names, venue.engine.name, venue.reject.name, venue.control.name,
                       admin_ring="elsewhere")


def test_stamps_never_go_backwards_when_the_wall_clock_steps_back(venue) -> None:
    """Issue 13: funding and breaker reopens run from the stamp. A wall clock that steps
    back 400 ns (an NTP correction) stamps the last time again until it catches up; a new
    sequencer on the same rings starts from the last stamp in the engine ring."""
    wall = iter([5_000, 4_600, 4_700, 5_000, 5_200])
    agent = SequencerAgent(venue.names, venue.engine.name, venue.reject.name, venue.control.name,
                           batch_limit=1, clock=lambda: next(wall), admin_ring=venue.names[0])
    agent.on_start()
    venue.agents.append(agent)
    for cl in range(1, 6):
        venue.offer(1, [new_order(cl)])
        assert agent.do_work() == 1
    assert [x.fields["timestampNs"] for x in venue.messages(venue.engine)] == [5_000, 5_000, 5_000, 5_000, 5_200]
    assert agent.now.steps_back == 1
    # a restart with a wall clock far behind: the stamps stay at the last one
    restarted = SequencerAgent(venue.names, venue.engine.name, venue.reject.name, venue.control.name,
                               clock=lambda: 3_000, admin_ring=venue.names[0])
    restarted.on_start()
    venue.agents.append(restarted)
    venue.offer(1, [new_order(6)])
    assert restarted.do_work() == 1
    assert venue.messages(venue.engine)[-1].fields["timestampNs"] == 5_200
    assert [x.fields["seq"] for x in venue.messages(venue.engine)] == [1, 2, 3, 4, 5, 6]


def test_a_restarted_exchange_stamps_from_its_journal_not_from_a_clock_behind(venue, tmp_path) -> None:
    """A full restart creates new rings, which remember no stamp: the floor comes from the
    last journaled message (``journal_last_stamp``), so a wall clock stepped back while the
    exchange was down still never stamps below what the engine has seen."""
    from ringex.engine.storage.data_dir import journal_dir, journal_last_stamp
    from ringex.engine.storage.journal_writer import JournalWriter

    assert journal_last_stamp(tmp_path) == 0  # no journal at all
    stamped = []
    for seq, ts in [(1, 7_000), (2, 7_500), (3, 9_000)]:
        slot = bytearray(SLOT)
        msg = new_order(seq)
        slot[:len(msg)] = msg
        at_seq, at_ts = m.NewOrder.offset("seq"), m.NewOrder.offset("timestampNs")
        slot[at_seq:at_seq + 8] = seq.to_bytes(8, "little")
        slot[at_ts:at_ts + 8] = ts.to_bytes(8, "little")
        stamped.append(bytes(slot))
    journal_dir(tmp_path).mkdir()
    with JournalWriter(journal_dir(tmp_path), 1 << 20, "none", slot_size=SLOT) as w:
        w.append(1, stamped[:2], 2)
        w.append(3, stamped[2:], 1)
    assert journal_last_stamp(tmp_path) == 9_000  # the last message of the last record
    agent = SequencerAgent(venue.names, venue.engine.name, venue.reject.name, venue.control.name,
                           first_seq=4, clock=lambda: 3_000, admin_ring=venue.names[0],
                           stamp_floor=journal_last_stamp(tmp_path))
    agent.on_start()
    venue.agents.append(agent)
    venue.offer(1, [new_order(4)])
    assert agent.do_work() == 1
    last = venue.messages(venue.engine)[-1].fields
    assert (last["seq"], last["timestampNs"]) == (4, 9_000)
    assert agent.now.steps_back == 1


def test_the_admin_ring_is_polled_first_in_every_cycle(venue) -> None:
    # The launcher sets the venue up on the admin ring, then accepts orders: an order that
    # arrives in the cycle that sees the acceptance must not be sequenced before the
    # accounts and funds it needs (it was, when the rotation started at its ring).
    agent = SequencerAgent(venue.names, venue.engine.name, venue.reject.name, venue.control.name,
                           batch_limit=16, clock=lambda: 1_000, admin_ring=venue.names[1])
    agent.on_start()
    venue.agents.append(agent)
    for cycle in range(2):  # the rotation starts at each ring in turn
        venue.offer(0, [new_order(cycle + 1)])
        venue.offer(1, [funds(cycle + 1)])
        agent.do_work()
    assert [x.name for x in venue.messages(venue.engine)] == ["Funds", "NewOrder", "Funds", "NewOrder"]
