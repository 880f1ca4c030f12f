"""The sequencer: merges every inbound ring into the engine's input ring, stamping each message.

Each gateway (and the admin feed) owns one single-producer ring; the sequencer polls them
round-robin with a per-ring batch bound, so a flooded gateway cannot starve a quiet one.
It copies each batch into the engine ring and writes the global sequence number and its
timestamp into every message's ``Stamp`` (the ingress timestamp the gateway set is kept; a
zero one gets the sequencer's time). The engine's only clock is this stamp, which is what
makes a journal replay reproduce the same output; it never goes backwards, even when the
host's clock does (``stamp_clock``).

Exactly once across a crash of this process: each publish to the engine ring (and to the
reject ring) first notes its provenance in the ring (which inbound ring, and that ring's
read position once the batch is consumed), then publishes, then commits the inbound
consumer. A sequencer that dies between publish and commit leaves a note whose publish
happened; its successor (``on_start``) commits the inbound ring up to the noted position
before reading anything, so the batch is neither lost nor sequenced twice. A note whose
publish never happened is ignored: the batch is read again and sequenced once.
docs/architecture.md ("Crash windows") walks through every instant.

When the supervisor withdraws acceptance (a pipeline process died), order-entry messages are
not forwarded: each becomes a rejection with reason ``ExchangeNotAccepting`` on the reject
ring, so whoever sent it hears why. Admin messages still flow (they queue for the engine).

Admin messages (deposits, index prices, kill switches, limits, instrument definitions: the
``messages.ADMIN`` templates) are taken from the admin ring only, which the launcher alone
writes. One that arrives on a gateway's ring is never sequenced: it becomes an
``AdminResult`` with reason ``AdminNotPermitted`` on the reject ring and is counted, so
that whatever can write a gateway ring (a gateway, a client through it) cannot deposit money
or move a mark. A gateway batch is checked with one table lookup per message; only a batch
that holds an admin message goes through the one-at-a-time path.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from ringex import crash_points
from ringex.engine.pipeline.stamp_clock import MonotonicStamps
from ringex.engine.wire import messages as m
from ringex.engine.wire.rejections import rejection_for
from ringex.ringbuffer.agent import Agent
from ringex.ringbuffer.consumer import Consumer
from ringex.ringbuffer.control import ControlBlock
from ringex.ringbuffer.counters import TYPE_BACK_PRESSURE, TYPE_USER
from ringex.ringbuffer.producer import Producer
from ringex.ringbuffer.ring import Ring

# The stamp sits at the same place in every inbound message (the schema's convention); the
# sequencer writes it through a uint64 view of the slots, so it needs word indexes.
_SEQ = m.NewOrder.offset("seq")
_TS = m.NewOrder.offset("timestampNs")
_INGRESS = m.NewOrder.offset("ingressNs")
for _layout in m.INBOUND:
    if (_layout.offset("seq"), _layout.offset("timestampNs"), _layout.offset("ingressNs")) != (_SEQ, _TS, _INGRESS):
        raise RuntimeError(f"{_layout.name}: the Stamp must open every inbound message's block")
SEQ_WORD, TS_WORD, INGRESS_WORD = _SEQ >> 3, _TS >> 3, _INGRESS >> 3
TEMPLATE_ID_OFFSET = 2  # messageHeader: blockLength u16, templateId u16, ...

log = logging.getLogger("ringex.sequencer")
ADMIN_REFUSED_COUNTER = "sequencer: admin messages refused (gateway ring)"
_CRASH = crash_points.ARMED
_ORDER_ENTRY_IDS = frozenset(x.template_id for x in m.ORDER_ENTRY)
_ADMIN_IDS = frozenset(x.template_id for x in m.ADMIN)
_IS_ADMIN = np.zeros(1 << 16, dtype=bool)  # by template id: one lookup per message
_IS_ADMIN[list(_ADMIN_IDS)] = True
_MAX_ORDER_ENTRY_ID = max(_ORDER_ENTRY_IDS)
if _MAX_ORDER_ENTRY_ID >= min(_ADMIN_IDS):  # what holds_admin's first test relies on
    raise RuntimeError("order-entry template ids must be below every admin template id")
_NOT_ACCEPTING = int(m.RejectReason.ExchangeNotAccepting)
_NOT_PERMITTED = int(m.RejectReason.AdminNotPermitted)


def last_sequence(ring: Ring) -> int:
    """The sequence stamped on the last message published to ``ring`` (0 if none)."""
    return _last_word(ring, SEQ_WORD)


def last_stamp(ring: Ring) -> int:
    """The time stamped on the last message published to ``ring`` (0 if none)."""
    return _last_word(ring, TS_WORD)


def _last_word(ring: Ring, word: int) -> int:
    pos = ring.producer_position
    if pos == 0:
        return 0
    slot = ring.slots()[(pos - 1) & (ring.capacity - 1)]
    return int(slot[:(word + 1) * 8].view("<u8")[word])


def admin_refusal_for(slot: np.ndarray | memoryview, now: int) -> bytes:
    """The answer to an admin message that arrived on a gateway's ring."""
    decoded = m.SCHEMA.decode(bytes(slot))
    f = decoded.fields
    return m.AdminResult.encode(
        seq=0, timestampNs=now, ingressNs=f.get("ingressNs") or now, value=0,
        account=f.get("account", 0), instrument=f.get("instrument", 0),
        refTemplateId=decoded.template_id, reason=_NOT_PERMITTED,
    )


def holds_admin(batch: np.ndarray) -> bool:
    """Whether any slot of ``batch`` ((k, slot) uint8, rows contiguous) is an admin message.
    Order entry's ids are the lowest, so one ``max`` clears an ordinary batch (measured beside
    a running test suite: 18 ns a message at 256 a batch, against 49 for a cast-and-shift
    of both bytes and a table lookup)."""
    tids = batch.view("<u2")[:, TEMPLATE_ID_OFFSET // 2]  # messageHeader.templateId, little-endian
    return bool(tids.max() > _MAX_ORDER_ENTRY_ID and _IS_ADMIN[tids].any())


def stamp_into(out: np.ndarray, source: np.ndarray, first_seq: int, now: int) -> None:
    """Copy ``source`` slots into ``out`` and stamp sequence numbers and time."""
    out[:] = source
    words = out.view("<u8")
    words[:, SEQ_WORD] = np.arange(first_seq, first_seq + len(out), dtype=np.uint64)
    words[:, TS_WORD] = now
    ingress = words[:, INGRESS_WORD]
    ingress[ingress == 0] = now


class SequencerAgent(Agent):
    """Merge inbound rings into the engine ring, stamping sequence and time."""

    role_name = "sequencer"

    def __init__(
        self,
        inbound: list[str],
        engine_ring: str,
        reject_ring: str,
        control: str,
        *,
        first_seq: int = 1,
        batch_limit: int = 1024,
        clock: Callable[[], int] = time.time_ns,
        admin_ring: str | None = None,
        stamp_floor: int = 0,
    ) -> None:
        """``admin_ring``: the one inbound ring admin messages are taken from (None: none).
        ``clock``: the wall clock; stamps are taken from it through ``MonotonicStamps``,
        never below ``stamp_floor`` (the last journaled stamp: the rings of a restarted
        exchange are new and remember none) nor below the engine ring's last stamp."""
        if not inbound:
            raise ValueError("the sequencer needs at least one inbound ring")
        if admin_ring is not None and admin_ring not in inbound:
            raise ValueError(f"the admin ring {admin_ring!r} is not one of the inbound rings {inbound}")
        self.inbound_names = list(inbound)
        self._trusted = [name == admin_ring for name in inbound]
        # Each cycle polls the operator's ring first, then the gateways' in rotation (a cycle
        # starting at each in turn): the venue the launcher sets up before it accepts orders
        # (instruments, accounts, funds) is sequenced before any order, even one that arrives
        # in the cycle that sees the acceptance.
        n = len(inbound)
        admin = [i for i in range(n) if self._trusted[i]]
        self._polling_order = [tuple(admin + [(start + k) % n for k in range(n) if (start + k) % n not in admin])
                               for start in range(n)]
        self.engine_ring_name = engine_ring
        self.reject_ring_name = reject_ring
        self.control_name = control
        self.first_seq = first_seq
        self.batch_limit = batch_limit
        self.clock = clock
        self.stamp_floor = stamp_floor
        self._rings: list[Ring] = []

    def on_start(self) -> None:
        for name in self.inbound_names:
            self._rings.append(Ring.attach(name, wait_s=5.0))
        self._consumers: list[Consumer] = [r.consumer(0, takeover=True) for r in self._rings]
        engine = Ring.attach(self.engine_ring_name, wait_s=5.0)
        self._rings.append(engine)
        self._engine_ring = engine
        self._out: Producer = engine.producer(takeover=True)
        reject = Ring.attach(self.reject_ring_name, wait_s=5.0)
        self._rings.append(reject)
        self._reject: Producer = reject.producer(takeover=True)
        self._control = ControlBlock.attach(self.control_name)
        self._reconcile((engine, reject))
        # Resume after a restart from what the engine ring already holds.
        last = last_sequence(engine)
        self.next_seq = last + 1 if last else self.first_seq
        self.now = MonotonicStamps(self.clock, max(last_stamp(engine), self.stamp_floor))
        self._next_ring = 0
        counters = self.counters
        if counters is not None:
            self._sequenced = counters.allocate("sequencer: messages sequenced", TYPE_USER)
            self._rejected = counters.allocate("sequencer: orders rejected (not accepting)", TYPE_USER)
            self._refused_admin = counters.allocate(ADMIN_REFUSED_COUNTER, TYPE_USER)
            self._back_pressure = counters.allocate("sequencer: engine ring back-pressure", TYPE_BACK_PRESSURE)
        else:
            self._sequenced = self._rejected = self._refused_admin = self._back_pressure = None

    def _reconcile(self, targets: tuple[Ring, ...]) -> None:
        """Commit what a predecessor published but did not commit (see the module doc)."""
        for target in targets:
            noted = target.provenance()
            if noted is None:
                continue
            source, position = noted
            if not 0 <= source < len(self._consumers):
                raise RuntimeError(
                    f"sequencer: ring {target.name} notes inbound ring {source}, this "
                    f"sequencer has {len(self._consumers)}: started with another configuration?"
                )
            consumer = self._consumers[source]
            if consumer.position < position:
                log.warning("sequencer: %s: %d message(s) published to %s by the previous "
                            "sequencer were not committed; committing them, not resequencing",
                            self.inbound_names[source], position - consumer.position, target.name)
                consumer.advance_to(position)

    def do_work(self) -> int:
        consumers = self._consumers
        n = len(consumers)
        start = self._next_ring
        self._next_ring = start + 1 if start + 1 < n else 0
        accepting = self._control.accepting
        work = 0
        for i in self._polling_order[start]:
            work += (self._forward(i, consumers[i]) if accepting
                     else self._forward_one_by_one(i, consumers[i], accepting=False))
        if work and self._sequenced is not None:
            self._sequenced.increment(work)
        return work

    def _forward(self, source: int, consumer: Consumer) -> int:
        if not consumer.available():
            consumer.heartbeat()  # idle, not dead: the supervisor watches this stamp
            return 0
        free = self._out.remaining()
        if free <= 0:
            if self._back_pressure is not None:
                self._back_pressure.increment()
            return 0
        limit = self.batch_limit if self.batch_limit < free else free
        head, tail = consumer.read(limit)
        k = len(head) + len(tail)
        if not k:
            return 0
        # Both sides may wrap; only the rare wrapped input batch is joined into one copy.
        batch = head if not len(tail) else np.concatenate((head, tail))
        if not self._trusted[source] and holds_admin(batch):
            return self._forward_one_by_one(source, consumer, accepting=True)
        out_head, out_tail = self._out.claim(k)
        now = self.now()
        seq = self.next_seq
        done = 0
        for out in (out_head, out_tail):
            c = len(out)
            if c:
                stamp_into(out, batch[done:done + c], seq + done, now)
                done += c
        self._out.note_provenance(k, source, consumer.position + k)
        if _CRASH:
            crash_points.hit("sequencer.before_publish")
        self._out.publish(k)
        if _CRASH:
            crash_points.hit("sequencer.after_publish")
        consumer.commit(k)
        self.next_seq = seq + k
        return k

    def _forward_one_by_one(self, source: int, consumer: Consumer, *, accepting: bool) -> int:
        """One message at a time, each published (with its provenance) then committed, so
        a crash repeats no rejection and no admin message: order entry is forwarded, or
        refused while the exchange is not ``accepting``; an admin message is forwarded from
        the admin ring and refused from any other."""
        head, tail = consumer.read(self.batch_limit)
        trusted = self._trusted[source]
        done = 0
        for region in (head, tail):
            for row in region:
                tid = int(row[TEMPLATE_ID_OFFSET]) | int(row[TEMPLATE_ID_OFFSET + 1]) << 8
                if tid in _ADMIN_IDS and not trusted:
                    reply, counter = admin_refusal_for(row, self.now()), self._refused_admin
                elif tid in _ORDER_ENTRY_IDS and not accepting:
                    reply, counter = rejection_for(row, _NOT_ACCEPTING, self.now()), self._rejected
                else:
                    reply, counter = None, None
                if reply is not None:
                    out, _ = self._reject.claim(1)
                    if not len(out):
                        return done
                    out[0, :len(reply)] = np.frombuffer(reply, np.uint8)
                    out[0, len(reply):] = 0
                    target = self._reject
                    if counter is not None:
                        counter.increment()
                else:
                    out, _ = self._out.claim(1)
                    if not len(out):
                        return done
                    stamp_into(out, row[None, :], self.next_seq, self.now())
                    target = self._out
                    self.next_seq += 1
                target.note_provenance(1, source, consumer.position + 1)
                target.publish(1)
                if _CRASH:
                    crash_points.hit("sequencer.refused_after_publish")
                consumer.commit(1)
                done += 1
        return done

    def doorbell_sources(self) -> list[Consumer]:
        return list(self._consumers)

    def on_close(self) -> None:
        for c in getattr(self, "_consumers", []):
            c.close()
        for p in (getattr(self, "_out", None), getattr(self, "_reject", None)):
            if p is not None:
                p.close()
        for r in self._rings:
            r.close()
        self._rings.clear()
        control = getattr(self, "_control", None)
        if control is not None:
            control.close()
