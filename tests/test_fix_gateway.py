"""The FIX 4.4 gateway (gateways/fix_gateway.py) over real TCP, against a running exchange,
with simplefix (an independent FIX implementation) as the counterparty's engine."""

from __future__ import annotations

import socket
import time

import pytest
import simplefix

from ringex.gateways.fix_codec import utc_timestamp
from gateway_kit import PRICE, fix_toml, running_exchange

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
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.sender, header=True)
        m.append_pair(56, "RINGEX", header=True)
        m.append_pair(34, self.seq if seq is None else seq, header=True)
        m.append_pair(52, utc_timestamp(time.time_ns()).decode(), header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        self.sock.sendall(m.encode())
        if seq is None:
            self.seq += 1

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
        self.send("D", (11, cl), (1, sid_account if account is None else account), (55, "DEMO"), (54, side),
                  (60, utc_timestamp(time.time_ns()).decode()), (38, qty), (40, 2), (44, price), (59, tif))

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
