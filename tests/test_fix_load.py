"""The FIX load generator's compiled hot path (tools/fix_load_kernel.py) against the Python it
replaces, without an exchange.

The renderer is held to ``fix_codec.encode`` and to a reference model of the flow's rules
written as the generator's Python once had them (a dict of working orders and a deque of
acknowledged ones per session), over random runs with acknowledgements, fills and cancels in
between. The scanner is held to ``FixLoad._message`` (the Python handling of any message)
fed by a Python framer: the same acknowledgements, fills, refusals, positions and sequence
numbers over random streams of gateway messages, whole, cut at every byte, and garbled.
"""

from __future__ import annotations

import random
import re
import socket
from collections import deque

import numpy as np
import pytest

from ringex.gateways.fix_codec import encode
from ringex.tools import fix_load as L
from ringex.tools import fix_load_kernel as K

TS = b"20260101-00:00:00.000"
NOW = 123_456_789
_FIELD = re.compile(rb"(\d+)=([^\x01]*)\x01")


def generator(orders: int, sessions: int = 3, *, seed: int = 1, tag: bytes = b"a1b2-", symbol: str = "DEMO",
              max_live: int = L.MAX_LIVE, max_position: int = L.MAX_POSITION,
              socks: list | None = None, **kw) -> L.FixLoad:
    """A generator over no sockets (or ``socks``), its run tag and timestamps fixed."""
    specs = [L.FixSessionSpec(f"C{20 + s}", "pw", 1 + s * 7) for s in range(sessions)]
    gen = L.FixLoad(socks or [None] * sessions, specs, [2] * sessions, 1000.0, orders / 1000.0, symbol=symbol,
                    price=1000, seed=seed, max_live=max_live, max_position=max_position, **kw)
    gen.tag = tag
    gen._tag = np.frombuffer(tag, np.uint8).copy()
    gen._timestamp = lambda: TS  # type: ignore[method-assign]
    return gen


def messages(gen: L.FixLoad, s: int) -> list[bytes]:
    """Session ``s``'s output row, cut into messages."""
    row = bytes(gen.out[s, :gen.sess[s, K.S_OUT_END]])
    out, pos = [], 0
    while pos < len(row):
        end = row.index(b"\x0110=", pos) + 8
        out.append(row[pos:end])
        pos = end
    return out


# ---------------------------------------------------------------------------- the renderer


class Reference:
    """The flow's rules as the generator's Python had them (before they were compiled)."""

    def __init__(self, gen: L.FixLoad) -> None:
        self.gen = gen
        self.S = gen.S
        self.working: list[dict[int, bytes]] = [{} for _ in range(self.S)]
        self.fifo: list[deque[int]] = [deque() for _ in range(self.S)]
        self.position = [0] * self.S
        self.seq = [2] * self.S
        self.cancels_without_target = self.demoted = self.leaned = 0

    def order(self, i: int) -> bytes:
        """Order ``i``'s message, as ``fix_codec.encode`` writes it."""
        gen, S = self.gen, self.S
        s, k = i % S, i // S
        o = gen.orders[i]
        tag, sym = gen.tag, gen.symbol
        cl = b"%s%d" % (tag, k)
        if o[K.O_KIND] == K.CANCEL:
            target = None
            while self.fifo[s]:
                t = self.fifo[s].popleft()
                side = self.working[s].pop(t, None)
                if side is not None:
                    target = t
                    break
            if target is None:
                self.cancels_without_target += 1
                body = [(41, b"none"), (11, cl), (55, sym), (54, b"1"), (60, TS)]
            else:
                body = [(41, b"%s%d" % (tag, target)), (11, cl), (55, sym), (54, side), (60, TS)]
            msg_type = b"F"
        else:
            buy, price = bool(o[K.O_BUY]), int(o[K.O_PRICE])
            tif = b"1"
            if o[K.O_KIND] == K.PASSIVE:
                if len(self.working[s]) >= gen.max_live:
                    tif = b"3"
                    self.demoted += 1
                else:
                    self.working[s][k] = b"1" if buy else b"2"
            else:
                tif = b"3"
                p = self.position[s]
                if abs(p) > gen.max_position and buy != (p < 0):
                    buy = p < 0
                    price = max(1, 2 * int(o[K.O_MID]) - price)
                    self.leaned += 1
            body = [(11, cl), (1, gen.sessions[s].account), (55, sym), (54, b"1" if buy else b"2"), (60, TS),
                    (38, b"1"), (40, b"2"), (44, price), (59, tif)]
            msg_type = b"D"
        self.seq[s] += 1
        return encode(msg_type, gen.sessions[s].sender, b"RINGEX", self.seq[s] - 1, TS, body)

    def new(self, i: int) -> None:
        s, k = i % self.S, i // self.S
        if self.gen.orders[i, K.O_KIND] == K.PASSIVE and k in self.working[s]:
            self.fifo[s].append(k)

    def fill(self, i: int, qty: int, buy: bool, done: bool) -> None:
        s = i % self.S
        self.position[s] += qty if buy else -qty
        if done:
            self.working[s].pop(i // self.S, None)

    def canceled(self, i: int) -> None:
        self.working[i % self.S].pop(i // self.S, None)


def report(gen: L.FixLoad, i: int, seq: int, exec_type: bytes, **extra: bytes) -> bytes:
    s = i % gen.S
    fields = [(37, b"9"), (11, b"%s%d" % (gen.tag, i // gen.S)), (17, b"e"), (150, exec_type), (39, b"0"),
              (55, gen.symbol)] + [(int(t[1:]), v) for t, v in extra.items()]
    return encode(b"8", b"RINGEX", gen.sessions[s].sender, seq, TS, fields)


@pytest.mark.parametrize("seed", range(12))
def test_the_compiled_renderer_writes_the_codecs_bytes_and_the_flows_rules(seed: int) -> None:
    rng = random.Random(seed)
    sessions = rng.randint(1, 4)
    n = rng.randint(50, 400)
    gen = generator(n, sessions, seed=seed, tag=b"%x-" % rng.randrange(1 << 24), symbol=rng.choice(["DEMO", "BTC-USD"]),
                    max_live=rng.randint(1, 8), max_position=rng.randint(0, 3))
    ref = Reference(gen)
    seq_in = [2] * sessions
    expected: list[list[bytes]] = [[] for _ in range(sessions)]
    sent = 0
    while sent < n:
        upto = min(n, sent + rng.randint(1, 12))
        gen._make_due(upto, TS)
        for i in range(sent, upto):
            expected[i % sessions].append(ref.order(i))
        sent = upto
        # the gateway answers some of them: New, fills (either side, done or not), cancels
        for _ in range(rng.randint(0, 6)):
            i = rng.randrange(sent)
            s = i % sessions
            what = rng.random()
            if what < 0.5:
                data = report(gen, i, seq_in[s], b"0")
                ref.new(i)
            elif what < 0.8:
                qty, buy, done = rng.randint(1, 3), rng.random() < 0.5, rng.random() < 0.5
                data = report(gen, i, seq_in[s], b"F", f32=b"%d" % qty, f54=b"1" if buy else b"2",
                              f151=b"0" if done else b"1")
                ref.fill(i, qty, buy, done)
            else:
                data = report(gen, i, seq_in[s], b"4")
                ref.canceled(i)
            seq_in[s] += 1
            c = gen.sessions[s]
            c.feed(data)
            assert gen._parse(c, NOW) == 1
    for s in range(sessions):
        assert messages(gen, s) == expected[s]
        assert gen.sessions[s].seq == ref.seq[s]
    assert (gen.cancels_without_target, gen.demoted, gen.leaned) == \
        (ref.cancels_without_target, ref.demoted, ref.leaned)
    # every order's end is where its bytes end in its session's stream
    for i in range(n):
        s = i % sessions
        assert gen.orders[i, K.O_END] == sum(len(m) for m in expected[s][:i // sessions + 1])


def test_the_rules_are_exercised_by_those_runs() -> None:
    """The random runs above demote, lean and target cancels (the cases are not vacuous)."""
    gen = generator(400, 2, max_live=2, max_position=0)
    gen._make_due(400, TS)
    assert gen.demoted > 0 and gen.cancels_without_target > 0
    gen = generator(300, 1, max_position=0)
    gen.sessions[0].position = 5
    gen._make_due(300, TS)
    assert gen.leaned > 0
    gen = generator(60, 1)
    gen._make_due(30, TS)
    for i in range(30):
        if gen.orders[i, K.O_KIND] == K.PASSIVE:
            gen.sessions[0].feed(report(gen, i, 2 + i, b"0"))
    gen._parse(gen.sessions[0], NOW)
    gen._make_due(60, TS)
    cancels = [m for m in messages(gen, 0)[30:] if b"35=F" in m]
    assert cancels and all(b"41=a1b2-" in m for m in cancels[:2])


def test_the_longest_numbers_fit_the_room_render_keeps() -> None:
    gen = generator(40, 2, tag=b"zzzzzz-")
    ref = Reference(gen)
    big = 10**18 - 1
    gen.orders[:, K.O_PRICE] = big
    gen.orders[:, K.O_MID] = big
    gen.sess[:, K.S_SEQ] = big
    ref.seq = [big] * 2
    gen._make_due(40, TS)
    got = messages(gen, 0) + messages(gen, 1)
    assert sorted(got) == sorted(ref.order(i) for i in range(40))
    assert max(len(m) for m in got) <= gen.room


def test_the_hand_made_admin_frame_and_the_compiled_order_frame_agree_with_the_codec() -> None:
    gen = generator(10, 1)
    gen._make_due(1, TS)
    gen._send_admin(gen.sessions[0], b"0", b"112=x\x01", TS)
    order, heartbeat = messages(gen, 0)
    assert heartbeat == encode(b"0", b"C20", b"RINGEX", 3, TS, [(112, b"x")])
    assert order.startswith(b"8=FIX.4.4\x019=") and gen.sessions[0].seq == 4


def test_rows_grow_and_everything_reaches_the_socket_in_order() -> None:
    """An output row far too small for a burst: what went is dropped, the row grows, and the
    peer reads exactly the messages in order, each order stamped sent once it went."""
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        gen = generator(600, 1, socks=[a])
        ref = Reference(gen)
        gen.out = np.empty((1, gen.room), np.uint8)
        got = bytearray()
        for upto in range(50, 601, 50):
            gen._make_due(upto, TS)
            while gen._unsent(gen.sessions[0]):
                gen._flush(gen.sessions[0], NOW + upto)
                got += b.recv(1 << 20)
        assert bytes(got) == b"".join(ref.order(i) for i in range(600))
        assert (gen.orders[:, K.O_SENT_AT] >= NOW).all()
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------- the scanner


def python_parse(gen: L.FixLoad, c: L._Session, data: bytes, now: int) -> int:
    """The Python framer the scanner replaced, handing every message to ``_message``."""
    buf = bytes(data)
    pos = count = 0
    while len(buf) - pos > K.MIN_FRAME:
        if buf[pos:pos + 12] != K.PREFIX:
            raise L.LoadError(f"{c.spec.comp_id}: garbled stream from the gateway")
        soh = buf.find(b"\x01", pos + 12, pos + 24)
        if soh < 0 or not buf[pos + 12:soh].isdigit():
            raise L.LoadError(f"{c.spec.comp_id}: garbled BodyLength from the gateway")
        end = soh + 1 + int(buf[pos + 12:soh]) + 7
        if end > len(buf):
            break
        gen._message(c, dict(_FIELD.findall(buf, soh + 1, end - 7)), now)
        pos = end
        count += 1
    return count


def raw(seq: int, msg_type: bytes, body: bytes) -> bytes:
    """A message framed right around any body, even fields the codec would not write (the
    scanner reads neither CompID)."""
    return L._frame(b"RINGEX", seq, TS, msg_type, body)


def msg(msg_type: bytes, seq: int, fields: list[tuple[int, bytes | int]]) -> bytes:
    return raw(seq, msg_type, b"".join(b"%d=%s\x01" % (t, v if isinstance(v, bytes) else b"%d" % v)
                                       for t, v in fields))


def random_stream(rng: random.Random, gen: L.FixLoad, s: int, count: int) -> bytes:
    """Gateway messages for session ``s``: reports of every kind, cancel rejects, admin,
    refusals, foreign and odd ClOrdIDs, repeated fields, gaps in the numbering."""
    sender = gen.sessions[s].sender
    tag = gen.tag
    mine = list(range(gen.due // gen.S + (s < gen.due % gen.S)))
    seq = int(gen.sess[s, K.S_NEXT_IN])
    out = []

    def clordid() -> bytes:
        u = rng.random()
        if u < 0.7 and mine:
            return b"%s%d" % (tag, rng.choice(mine))
        return rng.choice([b"old-7", tag, tag + b"x1", tag + b"+3", tag + b"0003", tag + b"9" * 25,
                           tag + b"%d" % (len(mine) + 5), b"%s%d" % (tag[:-1], 1)])

    for _ in range(count):
        u = rng.random()
        seq += rng.choice([1] * 8 + [0, 2])
        if u < 0.55:
            et = rng.choice([b"0", b"0", b"F", b"F", b"4", b"C", b"8", b"5", b"6", b"E", b"FF"])
            fields = [(37, b"9"), (11, clordid()), (17, b"e"), (150, et), (39, b"0"), (55, gen.symbol),
                      (54, rng.choice([b"1", b"2"]))]
            if et == b"F":
                fields += [(32, b"%d" % rng.randint(1, 4)), (31, b"1000"), (151, rng.choice([b"0", b"1"]))]
            if et in (b"4", b"C"):
                fields += [(41, rng.choice([clordid(), b""]))] if rng.random() < 0.7 else []
            if et == b"8":
                fields += [(103, b"3"), (58, b"price out of band")]
            if rng.random() < 0.1:
                fields.append((150, rng.choice([b"0", b"F", b"4"])))  # repeated: the last counts
            if rng.random() < 0.05:
                fields = [f for f in fields if f[0] != 150]
            out.append(msg(b"8", seq, fields))
        elif u < 0.7:
            fields = [(11, clordid()), (41, clordid()), (39, b"8"), (434, b"1")]
            code = rng.choice([b"0", b"1", b"1", b"3", b"6", b"2", b"99", None])
            if code is not None:
                fields.append((102, code))
            out.append(msg(b"9", seq, fields))
        elif u < 0.8:
            out.append(msg(b"0", seq, []))
        elif u < 0.84:
            out.append(msg(b"1", seq, [(112, b"T%d" % seq)]))
        elif u < 0.88:
            ref = int(rng.choice(gen.orders[s:gen.due:gen.S, K.O_SEQ])) if mine and rng.random() < 0.7 else 1
            out.append(msg(b"3", seq, [(45, ref), (373, b"5"), (58, b"bad field")]))
        elif u < 0.91:
            out.append(msg(b"j", seq, [(45, 3), (372, b"D"), (379, clordid()),
                                                                  (380, b"3")]))
        elif u < 0.93:
            seq += 3
            out.append(msg(b"4", seq - 3, [(36, seq + 1), (123, b"Y")]))
        elif u < 0.95:
            out.append(msg(b"B", seq, [(148, b"news")]))
        else:  # fields the regex reads its own way
            body = rng.choice([b"abc=1\x0111=%s\x01150=0\x01" % clordid(), b"011=%s\x01150=0\x01" % clordid(),
                               b"11=%s\x01150=0\x0158=a=b\x01" % clordid(), b"1234567=9\x0111=%s\x01" % clordid()])
            out.append(raw(seq, b"8", body))
    return b"".join(out)


def state(gen: L.FixLoad) -> tuple:
    return (gen.orders.tobytes(), gen.sess.tobytes(), gen.fifo.tobytes(), gen.acked, gen.trades,
            gen.rejected(), [bytes(gen.out[s, :gen.sess[s, K.S_OUT_END]]) for s in range(gen.S)])


def twins(seed: int, sessions: int, n: int, due: int) -> tuple[L.FixLoad, L.FixLoad]:
    a, b = generator(n, sessions, seed=seed), generator(n, sessions, seed=seed)
    for g in (a, b):
        g._make_due(due, TS)
    return a, b


@pytest.mark.parametrize("seed", range(10))
def test_the_scanner_takes_a_stream_as_the_python_handling_does(seed: int) -> None:
    rng = random.Random(seed)
    sessions = rng.randint(1, 3)
    fast, slow = twins(seed, sessions, 300, rng.randint(30, 300))
    for round_ in range(4):
        for s in range(sessions):
            stream = random_stream(rng, fast, s, rng.randint(1, 40))
            fast.sessions[s].feed(stream)
            taken = fast._parse(fast.sessions[s], NOW + round_)
            assert taken == python_parse(slow, slow.sessions[s], stream, NOW + round_)
            assert fast.sessions[s].rlen == 0
        assert state(fast) == state(slow)
        more = min(fast.n, fast.due + 40)  # orders in between, their targets from what was acknowledged
        fast._make_due(more, TS)
        slow._make_due(more, TS)
    assert fast.acked > 0 and fast.rejected() and fast.trades >= 0


def test_a_message_cut_at_any_byte_is_taken_once_whole() -> None:
    rng = random.Random(7)
    fast, slow = twins(7, 2, 120, 60)
    stream = random_stream(rng, fast, 1, 14)
    whole = python_parse(slow, slow.sessions[1], stream, NOW)
    expected = state(slow)
    for cut in range(len(stream) + 1):
        gen = generator(120, 2, seed=7)
        gen._make_due(60, TS)
        c = gen.sessions[1]
        c.feed(stream[:cut])
        first = gen._parse(c, NOW)
        c.feed(stream[cut:])
        assert first + gen._parse(c, NOW) == whole, cut
        assert state(gen) == expected, cut
        assert c.rlen == 0


def test_several_reads_of_any_size_make_no_difference() -> None:
    rng = random.Random(11)
    fast, slow = twins(11, 3, 150, 150)
    stream = random_stream(rng, fast, 2, 200)
    total = python_parse(slow, slow.sessions[2], stream, NOW)
    pos = taken = 0
    c = fast.sessions[2]
    while pos < len(stream):
        step = rng.choice([1, 7, 50, 300, 2000])
        c.feed(stream[pos:pos + step])
        pos += step
        taken += fast._parse(c, NOW)
    assert taken == total and state(fast) == state(slow)


@pytest.mark.parametrize("garble", [
    lambda m: b"9" + m[1:],  # not a message's start
    lambda m: m.replace(b"\x019=", b"\x019=1x", 1),  # a BodyLength that is not digits
    lambda m: m.replace(b"\x019=", b"\x019=12345678901234", 1),  # no SOH where a BodyLength ends
    lambda m: m.replace(b"\x0135=8", b"\x0135=8\x0158=extra bytes", 1),  # a BodyLength that is wrong
])
def test_a_garbled_message_stops_the_run_after_those_before_it(garble) -> None:
    fast, slow = twins(5, 1, 60, 60)
    good = [report(fast, i, 2 + i, b"0") for i in range(4)]
    after = report(fast, 5, 9, b"0")
    stream = b"".join(good[:2]) + garble(good[2]) + good[3] + after
    with pytest.raises(L.LoadError, match="garbled"):
        fast.sessions[0].feed(stream)
        fast._parse(fast.sessions[0], NOW)
    with pytest.raises(L.LoadError, match="garbled"):
        python_parse(slow, slow.sessions[0], stream, NOW)
    assert fast.acked >= 2 and state(fast) == state(slow)


@pytest.mark.parametrize("msg_type, fields, match", [
    (b"5", [(58, b"bye")], "logged out by the gateway: bye"),
    (b"2", [(7, 1), (16, 0)], "asked for a resend"),
])
def test_a_logout_or_a_resend_request_ends_the_run(msg_type, fields, match) -> None:
    gen = generator(30, 1)
    gen._make_due(3, TS)
    c = gen.sessions[0]
    c.feed(report(gen, 0, 2, b"0") + encode(msg_type, b"RINGEX", b"C20", 3, TS, fields))
    with pytest.raises(L.LoadError, match=match):
        gen._parse(c, NOW)
    assert gen.acked == 1 and c.logged_out == (msg_type == b"5")


def test_acknowledgement_fill_and_refusal_semantics() -> None:
    """The module docstring's rules, message by message through the scanner."""
    gen = generator(60, 1)
    gen._make_due(40, TS)
    c = gen.sessions[0]
    kinds = gen.orders[:40, K.O_KIND]
    ioc = int(np.flatnonzero(kinds == K.IOC)[0])
    passive = [int(i) for i in np.flatnonzero(kinds == K.PASSIVE)]
    c.feed(report(gen, ioc, 2, b"F", f32=b"1", f54=b"1", f151=b"0")
           + report(gen, ioc, 3, b"F", f32=b"1", f54=b"1", f151=b"0"))  # the first fill counts
    gen._parse(c, NOW)
    c.feed(report(gen, ioc, 4, b"F", f32=b"1", f54=b"1", f151=b"0"))
    gen._parse(c, NOW + 5)
    assert gen.orders[ioc, K.O_ACK_AT] == NOW and gen.orders[ioc, K.O_FILL_AT] == NOW and c.position == 3
    c.feed(report(gen, passive[0], 5, b"0") + report(gen, passive[0], 6, b"0"))  # New twice: queued once
    gen._parse(c, NOW)
    assert c.words[K.S_FIFO_TAIL] == 1 and gen.fifo[0, 0] == passive[0]
    c.feed(encode(b"9", b"RINGEX", b"C20", 7, TS, [(11, b"a1b2-%d" % passive[1]), (102, b"1")])
           + encode(b"3", b"RINGEX", b"C20", 8, TS, [(45, int(gen.orders[passive[2], K.O_SEQ])), (373, b"1")])
           + encode(b"j", b"RINGEX", b"C20", 9, TS, [(379, b"a1b2-%d" % passive[3]), (380, b"3")])
           + encode(b"1", b"RINGEX", b"C20", 12, TS, [(112, b"ping")]))
    before, seq = int(gen.sess[0, K.S_OUT_END]), c.seq
    assert gen._parse(c, NOW) == 4
    assert all(gen.orders[i, K.O_ACK_AT] == NOW for i in passive[1:4])
    assert gen.rejected() == {"UnknownOrder": 1, "SessionReject:1:": 1, "BusinessReject:3": 1}
    assert c.gaps == 1 and c.next_in == 13
    assert bytes(gen.out[0, before:gen.sess[0, K.S_OUT_END]]) == encode(b"0", b"C20", b"RINGEX", seq, TS,
                                                                         [(112, b"ping")])


# ---------------------------------------------------------------------------- the cycle


def test_duty_cycles_over_a_socket_pair_send_read_answer_and_keep_alive() -> None:
    """``cycle`` with a fake clock against a fake gateway on a socket pair: the due orders go
    out stamped sent, the reports naming them acknowledge them, a TestRequest is answered and
    an idle session sends a Heartbeat."""
    from ringex.gateways.fix_codec import FixMessage, FixReader

    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.settimeout(5)
        now = [0]
        gen = generator(30, 1, socks=[a], clock=lambda: now[0], heartbeat_s=1)
        gen.start(t0=0)
        now[0] = 40_000_000  # every order due (1,000/s)
        gen.cycle()
        reader = FixReader(1 << 16)
        got: list = []
        while len(got) < 30:
            got += reader.feed(b.recv(1 << 16))
        assert all(isinstance(m, FixMessage) for m in got) and (gen.orders[:, K.O_SENT_AT] == now[0]).all()
        answers = b"".join(report(gen, i, 2 + i, b"0") for i in range(30))
        b.sendall(answers + encode(b"1", b"RINGEX", b"C20", 32, TS, [(112, b"are you there")]))
        now[0] += 1_000
        gen.cycle()
        assert gen.acked == 30 and (gen.orders[:, K.O_ACK_AT] == now[0]).all()
        gen.cycle()  # the answer, queued while reading, goes with the next cycle's sends
        (hb,) = reader.feed(b.recv(1 << 16))
        assert hb.msg_type == b"0" and hb.get(112) == b"are you there"
        now[0] += 2 * L.NS
        gen.cycle()
        (idle,) = reader.feed(b.recv(1 << 16))
        assert idle.msg_type == b"0" and idle.get(112) is None and idle.seq_num == hb.seq_num + 1
        assert gen.done()
    finally:
        a.close()
        b.close()


def test_the_late_count_is_the_loops() -> None:
    rng = random.Random(2)
    gen = generator(500, 2)
    gen.start(t0=0)
    ack = np.array([rng.choice([-1, 1]) * rng.randrange(10**7) for _ in range(500)], np.int64)
    gen.orders[:, K.O_ACK_AT] = np.where(ack < 0, -1, gen.intended + ack)
    limit = 3_000_000
    for now in (0, 100_000_000, 250_000_000, 250_000_000, 600_000_000):
        old = gen._due(now - limit)
        expected = sum(1 for j in range(old) if ack[j] < 0 or ack[j] > limit)
        assert gen.late(now, limit) == expected
