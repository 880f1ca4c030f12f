"""The FIX 4.4 gateway (gateways/fix_gateway.py) over real TCP, against a running exchange,
with simplefix (an independent FIX implementation) as the counterparty's engine."""

from __future__ import annotations

import socket
import time

import pytest
import simplefix

from ringex.gateways.fix_codec import utc_timestamp
from ringex.gateways.fix_gateway import FixSessionStore
from ringex.gateways.session_store import SessionStore
from ringex.ringbuffer.counters import CountersError, CountersReader
from gateway_kit import GATEWAY, PRICE, fix_toml, running_exchange

HB = 30


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    with running_exchange(tmp_path_factory.mktemp("fix"), fix_toml(f"rxfix{time.time_ns() % 10**9}")) as running:
        yield running


class Peer:
    """A FIX counterparty: simplefix for every byte, a blocking socket with timeouts."""

    def __init__(self, ex, sid: int, password: str | None = None, seq: int = 1) -> None:
        self.sock = socket.create_connection((ex.host, ex.port), timeout=5.0)
        self.sender = f"C{sid}"
        self.password = password if password is not None else f"pw{sid}"
        self.parser = simplefix.FixParser()
        self.seq = seq

    def send(self, msg_type: str, *fields: tuple[int, object], seq: int | None = None) -> None:
        self.sock.sendall(self.encode(msg_type, *fields, seq=seq))

    def encode(self, msg_type: str, *fields: tuple[int, object], seq: int | None = None) -> bytes:
        """The message ``send`` would send (numbered: it counts as sent)."""
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.sender, header=True)
        m.append_pair(56, "RINGEX", header=True)
        m.append_pair(34, self.seq if seq is None else seq, header=True)
        m.append_pair(52, utc_timestamp(time.time_ns()).decode(), header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        if seq is None:
            self.seq += 1
        return m.encode()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = 5.0) -> simplefix.FixMessage:
        deadline = time.monotonic() + timeout
        while True:
            m = self.parser.get_message()
            if m is not None:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("nothing from the gateway")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the gateway closed the connection")
            self.parser.append_buffer(data)

    def until(self, msg_type: bytes, timeout: float = 5.0, **match: bytes) -> simplefix.FixMessage:
        """The next message of ``msg_type`` (whose tags ``match``, e.g. ``t150=b"F"``)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(max(0.01, deadline - time.monotonic()))
            if m.get(35) == msg_type and all(m.get(int(k[1:])) == v for k, v in match.items()):
                return m

    def logon(self, *extra: tuple[int, object], reset: bool = True) -> simplefix.FixMessage:
        """Log on; ``reset``: with ResetSeqNumFlag=Y, both sides from 1 (the module's tests
        share the sessions, and each begins afresh unless it tests the numbering)."""
        self.send("A", (98, 0), (108, HB), (554, self.password), *extra, *([(141, "Y")] if reset else []))
        return self.until(b"A")

    def order(self, cl: str, side: int, qty: int = 1, price: int = PRICE, tif: int = 1, account: int | None = None,
              sid_account: int = 1) -> None:
        self.send_raw(self.order_bytes(cl, side, qty, price, tif, account, sid_account))

    def order_bytes(self, cl: str, side: int, qty: int = 1, price: int = PRICE, tif: int = 1,
                    account: int | None = None, sid_account: int = 1) -> bytes:
        return self.encode("D", (11, cl), (1, sid_account if account is None else account), (55, "DEMO"),
                           (54, side), (60, utc_timestamp(time.time_ns()).decode()), (38, qty), (40, 2),
                           (44, price), (59, tif))

    def until_all(self, done, timeout: float = 5.0) -> list[simplefix.FixMessage]:
        """Every message received up to and including the first for which ``done`` is true."""
        deadline = time.monotonic() + timeout
        got = []
        while not got or not done(got[-1]):
            got.append(self.recv(max(0.01, deadline - time.monotonic())))
        return got

    def close(self) -> None:
        self.sock.close()


def test_logon_and_an_order_is_acknowledged(ex) -> None:
    p = Peer(ex, 21)
    try:
        ack = p.logon()
        assert ack.get(108) == str(HB).encode() and ack.get(56) == b"C21"
        p.order("a1", side=1, price=PRICE - 10)
        er = p.until(b"8", t11=b"a1")
        assert er.get(150) == b"0" and er.get(39) == b"0" and er.get(37) not in (None, b"NONE")
        assert er.get(151) == b"1" and er.get(14) == b"0" and er.get(55) == b"DEMO"
        p.send("F", (41, "a1"), (11, "a1-x"), (55, "DEMO"), (54, 1), (60, utc_timestamp(time.time_ns()).decode()))
        done = p.until(b"8", t11=b"a1-x")
        assert done.get(150) == b"4" and done.get(39) == b"4" and done.get(41) == b"a1"
    finally:
        p.close()


def test_two_sessions_trade_and_each_gets_its_fill(ex) -> None:
    maker, taker = Peer(ex, 22), Peer(ex, 23)
    try:
        maker.logon()
        taker.logon()
        maker.order("m1", side=2, qty=2, price=PRICE + 5, sid_account=2)
        maker.until(b"8", t11=b"m1", t150=b"0")
        taker.order("t1", side=1, qty=2, price=PRICE + 5, tif=3, sid_account=3)
        tf = taker.until(b"8", t11=b"t1", t150=b"F")
        mf = maker.until(b"8", t11=b"m1", t150=b"F")
        for f in (tf, mf):
            assert f.get(39) == b"2" and f.get(32) == b"2" and f.get(31) == str(PRICE + 5).encode()
            assert f.get(14) == b"2" and f.get(151) == b"0"
        assert tf.get(17) != mf.get(17)  # ExecIDs unique
    finally:
        maker.close()
        taker.close()


def test_a_wrong_password_is_logged_out_with_the_reason(ex) -> None:
    p = Peer(ex, 21, password="nope")
    try:
        p.send("A", (98, 0), (108, HB), (554, "nope"))
        lo = p.until(b"5")
        assert b"invalid password" in lo.get(58)
        with pytest.raises((ConnectionError, TimeoutError, OSError)):
            p.recv(timeout=3.0)
    finally:
        p.close()


def test_garbled_is_ignored_and_an_invalid_message_rejected(ex) -> None:
    p = Peer(ex, 21)
    try:
        p.logon()
        p.send_raw(b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01")  # BodyLength and CheckSum wrong
        p.send("1", (112, "after-garbage"))  # the garbled one consumed no number
        hb = p.until(b"0", t112=b"after-garbage")
        assert hb is not None
        p.send("D", (11, "bad"), (1, 1), (55, "DEMO"), (60, utc_timestamp(time.time_ns()).decode()), (38, 1),
               (40, 2), (44, PRICE))  # Side (54) missing
        rej = p.until(b"3")
        assert rej.get(371) == b"54" and rej.get(373) == b"1"
    finally:
        p.close()


def test_an_account_the_session_may_not_trade_is_refused_unsequenced(ex) -> None:
    p = Peer(ex, 21)
    try:
        p.logon()
        p.order("na", side=1, price=PRICE - 10, account=2)
        er = p.until(b"8", t11=b"na")
        assert er.get(150) == b"8" and er.get(39) == b"8"
    finally:
        p.close()


def test_numbers_continue_across_a_reconnect_and_a_resend_is_answered(ex) -> None:
    p = Peer(ex, 22)
    try:
        ack = p.logon()
        p.order("r1", side=1, price=PRICE - 20, sid_account=2)
        er = p.until(b"8", t11=b"r1")
        last = int(er.get(34))
        p.send("5")
        p.until(b"5")
    finally:
        p.close()
    q = Peer(ex, 22, seq=p.seq)
    try:
        ack2 = q.logon(reset=False)
        assert int(ack2.get(34)) > last >= int(ack.get(34))
        q.send("2", (7, last), (16, last))
        # (the logout's cancel-on-disconnect may report r1 canceled, live, before the resend)
        again = q.until(b"8", t11=b"r1", t150=b"0")
        assert again.get(43) == b"Y" and again.get(34) == str(last).encode() and again.get(122) is not None
    finally:
        q.close()


def _now() -> str:
    return utc_timestamp(time.time_ns()).decode()


HELD = f"gateway {GATEWAY}: cancels/replaces held until their order was accepted"


def counter(ex, label: str) -> int:
    """A counter of the exchange's processes, by label."""
    for proc in ex.pids:
        try:
            reader = CountersReader(f"ringex-counters-{ex.prefix}-{proc}")
        except (CountersError, OSError):
            continue
        try:
            if reader.find(label) is not None:
                return reader.value(label)
        finally:
            reader.close()
    raise KeyError(label)


def _app(msgs, cl: bytes) -> list[tuple[bytes, bytes | None]]:
    """(MsgType, ExecType) of the application messages about ClOrdID ``cl`` (11 or 41)."""
    return [(x.get(35), x.get(150)) for x in msgs if cl in (x.get(11), x.get(41)) and x.get(35) in (b"8", b"9")]


def test_a_cancel_right_behind_its_order_is_held_until_the_order_is_accepted(ex) -> None:
    """NewOrderSingle and OrderCancelRequest in one write: the cancel reaches the gateway
    before the engine has accepted the order, is held, and goes once the order is accepted."""
    p = Peer(ex, 21)
    try:
        p.logon()
        held = counter(ex, HELD)
        both = p.order_bytes("h1", side=1, price=PRICE - 30) + p.encode(
            "F", (41, "h1"), (11, "h1-x"), (55, "DEMO"), (54, 1), (60, _now()))
        p.send_raw(both)
        got = p.until_all(lambda x: x.get(35) in (b"8", b"9") and x.get(11) == b"h1-x")
        assert _app(got, b"h1") == [(b"8", b"0"), (b"8", b"4")], got
        new, done = (x for x in got if x.get(35) == b"8" and b"h1" in (x.get(11), x.get(41)))
        assert new.get(11) == b"h1" and new.get(37) not in (None, b"NONE")
        assert (done.get(11), done.get(41), done.get(39), done.get(37)) == (b"h1-x", b"h1", b"4", new.get(37))
        assert int(new.get(34)) < int(done.get(34))
        assert counter(ex, HELD) == held + 1  # it was held, not refused nor sent unaccepted
    finally:
        p.close()


def test_a_replace_right_behind_its_order_is_held_until_the_order_is_accepted(ex) -> None:
    p = Peer(ex, 21)
    try:
        p.logon()
        held = counter(ex, HELD)
        both = p.order_bytes("h2", side=1, price=PRICE - 30) + p.encode(
            "G", (41, "h2"), (11, "h2-r"), (55, "DEMO"), (54, 1), (40, 2), (38, 2), (44, PRICE - 31), (60, _now()))
        p.send_raw(both)
        got = p.until_all(lambda x: x.get(35) in (b"8", b"9") and x.get(11) == b"h2-r")
        assert _app(got, b"h2") == [(b"8", b"0"), (b"8", b"5")], got
        rep = got[-1]
        assert (rep.get(11), rep.get(41), rep.get(38), rep.get(44), rep.get(39)) == (
            b"h2-r", b"h2", b"2", str(PRICE - 31).encode(), b"0")
        p.send("F", (41, "h2"), (11, "h2-x"), (55, "DEMO"), (54, 1), (60, _now()))  # by its first ClOrdID
        done = p.until(b"8", t11=b"h2-x")
        assert (done.get(150), done.get(41), done.get(151)) == (b"4", b"h2-r", b"0")
        assert counter(ex, HELD) == held + 1
    finally:
        p.close()


def test_a_cancel_held_for_an_order_that_fills_on_entry_is_too_late(ex) -> None:
    """An IOC that trades in full as it arrives: its ExecutionReports, then the held cancel's
    OrderCancelReject, too late (CxlRejReason 0)."""
    maker, p = Peer(ex, 22), Peer(ex, 21)
    try:
        maker.logon()
        p.logon()
        maker.order("hm", side=2, qty=1, price=PRICE + 7, sid_account=2)
        maker.until(b"8", t11=b"hm", t150=b"0")
        both = p.order_bytes("h3", side=1, qty=1, price=PRICE + 7, tif=3) + p.encode(
            "F", (41, "h3"), (11, "h3-x"), (55, "DEMO"), (54, 1), (60, _now()))
        p.send_raw(both)
        got = p.until_all(lambda x: x.get(11) == b"h3-x")
        assert _app(got, b"h3") == [(b"8", b"0"), (b"8", b"F"), (b"9", None)], got
        rej = got[-1]
        assert (rej.get(41), rej.get(39), rej.get(102), rej.get(434)) == (b"h3", b"2", b"0", b"1")
        assert maker.until(b"8", t11=b"hm", t150=b"F").get(39) == b"2"
    finally:
        maker.close()
        p.close()


def test_a_fix_session_store_knows_where_its_numbering_begins_in_the_inbound_ring(tmp_path) -> None:
    """What lets a restarted gateway read back the numbers it had published (gateway_agent's
    _recover_applied): a reset records the ring's position, and an identity older than the
    ring owns all of it."""
    ring = 5_000  # the inbound ring's creation time
    s = FixSessionStore(tmp_path, 1)
    s.adopt_inbound(ring)  # a new store: its one identity owns the whole ring
    assert s.inbound_start == (ring, 0)
    s.inbound_mark = lambda: (ring, 42)
    s.reset(4_000, 0)  # a Logon with ResetSeqNumFlag=Y (FixSession passes no ring position)
    assert s.inbound_start == (ring, 42) and s.uuid == (4_000, 0)
    s.next_in = 7
    s.adopt_inbound(ring)  # the same incarnation: kept
    assert s.inbound_start == (ring, 42) and s.next_in == 7
    s.adopt_inbound(ring + 1)  # the ring made again since: all of it is this identity's
    assert s.inbound_start == (ring + 1, 0) and s.next_in == 7 and s.uuid == (4_000, 0)
    s.close()
    # stores written before the start was recorded (0): by the identity's age
    for uuid, known in (((4_000, 0), True), ((6_000, 0), False), ((0, 0), True)):
        old = SessionStore(tmp_path / str(uuid[0]), 2)
        old.reset(*uuid)
        old.next_in = 3
        old.close()
        again = FixSessionStore(tmp_path / str(uuid[0]), 2)
        again.adopt_inbound(ring)
        assert again.inbound_start == ((ring, 0) if known else (0, 0)) and again.next_in == 3, uuid
        again.close()
