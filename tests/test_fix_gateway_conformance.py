"""FIX 4.4 gateway conformance over real TCP, with simplefix as the counterparty's engine:
every order type, the session layer's timing, numbering, gaps and resends, cancel-on-
disconnect, the throttle, malformed input, and numbers that survive a restart.

Most tests share one running exchange (``ex``); each uses its own sessions (so its own
orders and reports) and leaves no order resting (``finish``), so the single instrument's book
is empty between tests. Stop prices lie outside the band every other test trades in
(PRICE - 50 .. PRICE + 50), so no earlier trade triggers them.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import simplefix

from ringex.gateways.fix_codec import utc_timestamp
from gateway_kit import PRICE, fix_toml, running_exchange
from test_fix_gateway import Peer

SIDS = tuple(range(31, 81))


def acct(sid: int) -> int:
    """The account session ``sid`` trades (accounts 1-4 are funded)."""
    return 1 + sid % 4


SESSIONS = tuple((sid, acct(sid)) for sid in SIDS)


def prefix(tag: str) -> str:
    return f"rxfc{tag}{time.time_ns() % 10**8}"


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    with running_exchange(tmp_path_factory.mktemp("fixconf"), fix_toml(prefix("m"), SESSIONS)) as running:
        yield running


def now() -> str:
    return utc_timestamp(time.time_ns()).decode()


def order(p: Peer, cl: str, side: int, qty: int = 1, price: int | None = PRICE, *, ord_type: int = 2,
          tif: int = 1, stop: int | None = None, extra: tuple[tuple[int, object], ...] = ()) -> None:
    """A NewOrderSingle of ``p``'s account (Price only when given, StopPx when given)."""
    fields: list[tuple[int, object]] = [(11, cl), (1, acct(int(p.sender[1:]))), (55, "DEMO"), (54, side),
                                        (60, now()), (38, qty), (40, ord_type)]
    if price is not None:
        fields.append((44, price))
    if stop is not None:
        fields.append((99, stop))
    fields.append((59, tif))
    p.send("D", *fields, *extra)


def drain(p: Peer, seconds: float) -> list[simplefix.FixMessage]:
    """Everything ``p`` receives within ``seconds`` (stops early if the connection closes)."""
    got: list[simplefix.FixMessage] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(p.recv(left))
        except (TimeoutError, socket.timeout, ConnectionError, OSError):
            break
    return got


def closed(p: Peer, timeout: float = 5.0) -> list[simplefix.FixMessage]:
    """What ``p`` receives until the gateway closes the connection (fails if it does not)."""
    got: list[simplefix.FixMessage] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the gateway did not close the connection; got {[g.get(35) for g in got]}"
        try:
            got.append(p.recv(left))
        except ConnectionError:
            return got
        except (TimeoutError, socket.timeout):
            continue
        except OSError:  # reset by the gateway
            return got


def ers(msgs: list[simplefix.FixMessage], cl: str) -> list[simplefix.FixMessage]:
    return [g for g in msgs if g.get(35) == b"8" and g.get(11) == cl.encode()]


def finish(*peers: Peer) -> None:
    """Cancel whatever each (logged-on) peer left resting, wait for the report, close."""
    for i, p in enumerate(peers):
        try:
            p.send("q", (11, f"fin{i}-{time.monotonic_ns()}"), (530, 7), (60, now()))
            p.until(b"r", timeout=5.0)
        except (OSError, ConnectionError, TimeoutError):
            pass
        finally:
            p.close()


def relogon(ex, sid: int, seq: int) -> tuple[Peer, simplefix.FixMessage]:
    """A new connection for a session whose old one was just closed, logged on without a
    reset. The gateway may not have seen the old connection end yet (it then refuses the
    Logon by closing, consuming no number): tried again a few times."""
    for attempt in range(5):
        p = Peer(ex, sid, seq=seq)
        try:
            return p, p.logon(reset=False)
        except ConnectionError:
            p.close()
            if attempt == 4:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


@contextmanager
def peers(ex, *sids: int) -> Iterator[list[Peer]]:
    """Logged-on peers (ResetSeqNumFlag=Y), cleaned up on the way out."""
    ps = [Peer(ex, sid) for sid in sids]
    try:
        for p in ps:
            p.logon()
        yield ps
    finally:
        finish(*ps)


# ------------------------------------------------------------------- order types


def test_limit_order_rests_fills_partly_and_is_canceled(ex) -> None:
    with peers(ex, 31, 32) as (maker, taker):
        order(maker, "L1", side=2, qty=3, price=PRICE + 11)
        ack = maker.until(b"8", t11=b"L1")
        assert (ack.get(150), ack.get(39), ack.get(40), ack.get(44)) == (b"0", b"0", b"2", str(PRICE + 11).encode())
        order(taker, "L2", side=1, qty=1, price=PRICE + 11, tif=3)
        tf = taker.until(b"8", t11=b"L2", t150=b"F")
        mf = maker.until(b"8", t11=b"L1", t150=b"F")
        assert (tf.get(39), tf.get(851)) == (b"2", b"2") and (mf.get(39), mf.get(851)) == (b"1", b"1")
        assert (mf.get(32), mf.get(14), mf.get(151), mf.get(31)) == (b"1", b"1", b"2", str(PRICE + 11).encode())
        assert tf.get(527) == mf.get(527)  # the same trade
        maker.send("F", (41, "L1"), (11, "L1c"), (55, "DEMO"), (54, 2), (60, now()))
        c = maker.until(b"8", t11=b"L1c")
        assert (c.get(150), c.get(39), c.get(41), c.get(151), c.get(14)) == (b"4", b"4", b"L1", b"0", b"1")


def test_market_order_takes_the_resting_order(ex) -> None:
    with peers(ex, 33, 34) as (maker, taker):
        order(maker, "M1", side=2, qty=2, price=PRICE + 12)
        maker.until(b"8", t11=b"M1", t150=b"0")
        order(taker, "M2", side=1, qty=2, price=None, ord_type=1, tif=3)
        ack = taker.until(b"8", t11=b"M2")
        if ack.get(150) == b"0":
            ack = taker.until(b"8", t11=b"M2", t150=b"F")
        assert (ack.get(150), ack.get(39), ack.get(40)) == (b"F", b"2", b"1")
        assert (ack.get(31), ack.get(32), ack.get(14), ack.get(151)) == (str(PRICE + 12).encode(), b"2", b"2", b"0")
        assert ack.get(44) is None
        mf = maker.until(b"8", t11=b"M1", t150=b"F")
        assert mf.get(39) == b"2"


def test_stop_order_is_triggered_by_a_trade_then_fills(ex) -> None:
    stop = PRICE - 60
    with peers(ex, 35, 36, 37) as (stopper, maker, taker):
        order(stopper, "S1", side=2, qty=1, price=None, ord_type=3, stop=stop)
        ack = stopper.until(b"8", t11=b"S1")
        assert (ack.get(150), ack.get(39), ack.get(40), ack.get(99)) == (b"0", b"0", b"3", str(stop).encode())
        order(maker, "S2", side=1, qty=2, price=stop)
        maker.until(b"8", t11=b"S2", t150=b"0")
        order(taker, "S3", side=2, qty=1, price=stop, tif=3)  # trades at the stop price
        taker.until(b"8", t11=b"S3", t150=b"F")
        trig = stopper.until(b"8", t11=b"S1")
        assert (trig.get(150), trig.get(39), trig.get(14)) == (b"L", b"0", b"0")
        fill = stopper.until(b"8", t11=b"S1")
        assert (fill.get(150), fill.get(39), fill.get(31), fill.get(32)) == (b"F", b"2", str(stop).encode(), b"1")
        mf = [maker.until(b"8", t11=b"S2", t150=b"F") for _ in range(2)]
        assert mf[-1].get(39) == b"2"


def test_stop_limit_order_is_triggered_by_a_trade_then_fills(ex) -> None:
    stop = PRICE + 70
    with peers(ex, 38, 39, 40) as (stopper, maker, taker):
        order(stopper, "SL1", side=1, qty=1, price=stop, ord_type=4, stop=stop)
        ack = stopper.until(b"8", t11=b"SL1")
        assert (ack.get(150), ack.get(40), ack.get(99), ack.get(44)) == (b"0", b"4", str(stop).encode(),
                                                                          str(stop).encode())
        order(maker, "SL2", side=2, qty=2, price=stop)
        maker.until(b"8", t11=b"SL2", t150=b"0")
        order(taker, "SL3", side=1, qty=1, price=stop, tif=3)
        taker.until(b"8", t11=b"SL3", t150=b"F")
        trig = stopper.until(b"8", t11=b"SL1")
        assert trig.get(150) == b"L"
        fill = stopper.until(b"8", t11=b"SL1")
        assert (fill.get(150), fill.get(39), fill.get(31), fill.get(14)) == (b"F", b"2", str(stop).encode(), b"1")


def test_ioc_remainder_expires(ex) -> None:
    with peers(ex, 41, 42) as (maker, taker):
        order(maker, "I1", side=2, qty=1, price=PRICE + 13)
        maker.until(b"8", t11=b"I1", t150=b"0")
        order(taker, "I2", side=1, qty=3, price=PRICE + 13, tif=3)
        f = taker.until(b"8", t11=b"I2", t150=b"F")
        assert (f.get(39), f.get(32), f.get(151)) == (b"1", b"1", b"2")
        end = taker.until(b"8", t11=b"I2", t150=b"C")
        assert (end.get(39), end.get(14), end.get(151), end.get(58)) == (b"C", b"1", b"0", b"IocRemainder")


def test_fok_that_cannot_fill_is_refused_and_trades_nothing(ex) -> None:
    with peers(ex, 43, 44) as (maker, taker):
        order(maker, "K1", side=2, qty=1, price=PRICE + 14)
        maker.until(b"8", t11=b"K1", t150=b"0")
        order(taker, "K2", side=1, qty=3, price=PRICE + 14, tif=4)
        r = taker.until(b"8", t11=b"K2")
        assert (r.get(150), r.get(39), r.get(14), r.get(58)) == (b"8", b"8", b"0", b"FokUnfillable")
        # the resting order is untouched
        maker.send("H", (11, "K1"), (55, "DEMO"), (54, 2))
        st = maker.until(b"8", t11=b"K1", t150=b"I")
        assert (st.get(39), st.get(14), st.get(151)) == (b"0", b"0", b"1")


def test_post_only_that_would_trade_is_rejected(ex) -> None:
    with peers(ex, 45, 46) as (maker, taker):
        order(maker, "P1", side=2, qty=1, price=PRICE + 15)
        maker.until(b"8", t11=b"P1", t150=b"0")
        order(taker, "P2", side=1, qty=1, price=PRICE + 15, extra=((18, "6"),))
        r = taker.until(b"8", t11=b"P2")
        assert (r.get(150), r.get(39), r.get(14), r.get(58)) == (b"8", b"8", b"0", b"PostOnlyWouldTrade")
        # post-only that would not trade rests
        order(taker, "P3", side=1, qty=1, price=PRICE + 14, extra=((18, "6"),))
        ok = taker.until(b"8", t11=b"P3")
        assert (ok.get(150), ok.get(18)) == (b"0", b"6")


def test_iceberg_fills_in_pieces_of_its_max_floor(ex) -> None:
    with peers(ex, 47, 48) as (maker, taker):
        order(maker, "B1", side=2, qty=30, price=PRICE + 16, extra=((111, 10),))
        ack = maker.until(b"8", t11=b"B1", t150=b"0")
        assert (ack.get(111), ack.get(38)) == (b"10", b"30")
        order(taker, "B2", side=1, qty=25, price=PRICE + 16, tif=3)
        pieces = [maker.until(b"8", t11=b"B1", t150=b"F") for _ in range(3)]
        assert [x.get(32) for x in pieces] == [b"10", b"10", b"5"]
        assert [x.get(14) for x in pieces] == [b"10", b"20", b"25"]
        assert (pieces[-1].get(39), pieces[-1].get(151)) == (b"1", b"5")
        tf = [taker.until(b"8", t11=b"B2", t150=b"F") for _ in range(3)]
        assert tf[-1].get(14) == b"25" and tf[-1].get(39) == b"2"


def test_reduce_only_on_spot_is_rejected_by_the_engine(ex) -> None:
    with peers(ex, 49) as (p,):
        order(p, "E1", side=2, qty=1, price=PRICE + 17, extra=((18, "E"),))
        r = p.until(b"8", t11=b"E1")
        # the engine: nothing to reduce on a spot instrument (InvalidFlags, OrdRejReason 11)
        assert (r.get(150), r.get(39), r.get(103), r.get(58)) == (b"8", b"8", b"11", b"InvalidFlags")
        assert r.get(37) == b"NONE"


def test_cancel_replace_changes_price_and_quantity(ex) -> None:
    with peers(ex, 50) as (p,):
        order(p, "G1", side=1, qty=2, price=PRICE - 30)
        ack = p.until(b"8", t11=b"G1", t150=b"0")
        p.send("G", (41, "G1"), (11, "G2"), (1, acct(50)), (55, "DEMO"), (54, 1), (60, now()), (38, 3),
               (40, 2), (44, PRICE - 31))
        r = p.until(b"8", t11=b"G2")
        assert (r.get(150), r.get(39), r.get(41), r.get(38), r.get(44), r.get(151)) == (
            b"5", b"0", b"G1", b"3", str(PRICE - 31).encode(), b"3")
        assert r.get(37) == ack.get(37)
        # the old ClOrdID is no longer the order's current one, but still names it
        p.send("H", (11, "G2"), (55, "DEMO"), (54, 1))
        st = p.until(b"8", t11=b"G2", t150=b"I")
        assert (st.get(39), st.get(38)) == (b"0", b"3")
        p.send("F", (41, "G2"), (11, "G3"), (55, "DEMO"), (54, 1), (60, now()))
        c = p.until(b"8", t11=b"G3")
        assert (c.get(150), c.get(41)) == (b"4", b"G2")


def test_mass_cancel_reports_the_count_and_each_order(ex) -> None:
    with peers(ex, 51) as (p,):
        for i in range(3):
            order(p, f"Q{i}", side=1, qty=1, price=PRICE - 40 - i)
            p.until(b"8", t11=f"Q{i}".encode(), t150=b"0")
        p.send("q", (11, "Qmc"), (530, 7), (60, now()))
        got: list[simplefix.FixMessage] = []
        deadline = time.monotonic() + 5
        while not any(g.get(35) == b"r" for g in got) or sum(g.get(150) == b"4" for g in got) < 3:
            got.append(p.recv(max(0.01, deadline - time.monotonic())))
        report = next(g for g in got if g.get(35) == b"r")
        assert (report.get(11), report.get(530), report.get(531), report.get(533)) == (b"Qmc", b"7", b"7", b"3")
        canceled = sorted(g.get(11) for g in got if g.get(35) == b"8" and g.get(150) == b"4")
        assert canceled == [b"Q0", b"Q1", b"Q2"]
        assert all(g.get(39) == b"4" and g.get(151) == b"0" for g in got if g.get(150) == b"4")


def test_order_status_request(ex) -> None:
    with peers(ex, 52) as (p,):
        order(p, "H1", side=1, qty=4, price=PRICE - 35)
        ack = p.until(b"8", t11=b"H1", t150=b"0")
        p.send("H", (11, "H1"), (55, "DEMO"), (54, 1), (790, "req-1"))
        st = p.until(b"8", t11=b"H1", t150=b"I")
        assert (st.get(39), st.get(37), st.get(38), st.get(151), st.get(14), st.get(790)) == (
            b"0", ack.get(37), b"4", b"4", b"0", b"req-1")
        p.send("H", (11, "nobody"), (55, "DEMO"), (54, 1))
        unk = p.until(b"8", t11=b"nobody", t150=b"I")
        assert (unk.get(39), unk.get(103)) == (b"8", b"5")


# ------------------------------------------------------------------- session layer


def test_heartbeat_then_test_request_then_disconnect(ex) -> None:
    p = Peer(ex, 53)
    try:
        p.send("A", (98, 0), (108, 1), (554, p.password), (141, "Y"))
        assert p.until(b"A").get(108) == b"1"
        t0 = time.monotonic()
        p.until(b"0", timeout=3.0)
        assert time.monotonic() - t0 < 2.5  # within about HeartBtInt of silence
        tr = p.until(b"1", timeout=4.0)  # we say nothing: a TestRequest
        assert tr.get(112)
        t1 = time.monotonic()
        closed(p, timeout=5.0)  # and nothing again: disconnected
        assert time.monotonic() - t1 < 4.0
    finally:
        p.close()


def test_answering_a_test_request_keeps_the_session(ex) -> None:
    p = Peer(ex, 54)
    try:
        p.send("A", (98, 0), (108, 1), (554, p.password), (141, "Y"))
        p.until(b"A")
        tr = p.until(b"1", timeout=4.0)
        p.send("0", (112, tr.get(112).decode()))
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # keep talking: the session lives on
            p.send("0")
            drain(p, 0.5)
        p.send("1", (112, "still-here"))
        assert p.until(b"0", t112=b"still-here", timeout=3.0)
    finally:
        finish(p)


def test_a_gap_is_asked_for_and_a_gap_fill_releases_the_held_message(ex) -> None:
    with peers(ex, 55) as (p,):
        n = p.seq - 1  # the last number we sent (the Logon)
        p.seq = n + 2  # skip n + 1
        order(p, "GAP1", side=1, qty=1, price=PRICE - 45)
        rr = p.until(b"2")
        assert (rr.get(7), rr.get(16)) == (str(n + 1).encode(), b"0")
        assert not ers(drain(p, 0.3), "GAP1")  # held, not processed
        # the gap fill stands for n + 1; NewSeqNo is the next number, the held one
        p.send("4", (123, "Y"), (36, n + 2), (43, "Y"), (122, now()), seq=n + 1)
        ack = p.until(b"8", t11=b"GAP1")
        assert ack.get(150) == b"0"
        p.send("1", (112, "after-gap"))  # numbering goes on from n + 3
        assert p.until(b"0", t112=b"after-gap")


def test_a_gap_filled_by_resending_the_missing_messages_processes_all_in_order(ex) -> None:
    with peers(ex, 71) as (p,):
        n = p.seq - 1
        for k in (3, 4):  # n + 3 and n + 4 arrive first
            p.send("D", *order_fields(p, f"RS{k}", price=PRICE - 44), seq=n + k)
        rr = p.until(b"2")
        assert rr.get(7) == str(n + 1).encode()
        for k in (1, 2):  # the missing ones, resent
            p.send("D", *order_fields(p, f"RS{k}", price=PRICE - 44), (43, "Y"), (122, now()), seq=n + k)
        p.seq = n + 5
        acks: list[bytes] = []
        deadline = time.monotonic() + 5
        while len(acks) < 4:
            g = p.recv(max(0.01, deadline - time.monotonic()))
            if g.get(35) == b"8":
                assert g.get(150) == b"0"
                acks.append(g.get(11))
        assert acks == [b"RS1", b"RS2", b"RS3", b"RS4"]  # in sequence order
        assert not [g for g in drain(p, 0.3) if g.get(35) == b"2"]  # asked once


def test_msg_seq_num_too_low_is_a_logout_with_the_reason(ex) -> None:
    p = Peer(ex, 56)
    try:
        p.logon()
        p.send("1", (112, "x"))
        p.until(b"0", t112=b"x")
        p.send("1", (112, "low"), seq=2)  # 2 again, no PossDupFlag
        lo = p.until(b"5")
        assert b"MsgSeqNum too low, expecting 3 but received 2" in lo.get(58)
        closed(p)
    finally:
        p.close()


def test_a_possdup_below_the_expected_number_is_ignored(ex) -> None:
    with peers(ex, 57) as (p,):
        p.send("1", (112, "x"))
        p.until(b"0", t112=b"x")
        p.send("1", (112, "dup"), (43, "Y"), (122, now()), seq=2)
        assert all(g.get(35) != b"5" for g in drain(p, 0.5))
        p.send("1", (112, "alive"))
        assert p.until(b"0", t112=b"alive")


def test_cancel_on_disconnect(ex) -> None:
    with peers(ex, 58) as (other,):
        a = Peer(ex, 59)
        try:
            a.logon()
            order(a, "COD1", side=2, qty=1, price=PRICE + 18)
            a.until(b"8", t11=b"COD1", t150=b"0")
        finally:
            a.close()  # no Logout: the socket just goes
        b, ack = relogon(ex, 59, a.seq)
        try:
            b.send("2", (7, 1), (16, 0))  # all of it again: the cancel is among it or follows live
            c = b.until(b"8", t11=b"COD1", t150=b"4", timeout=5.0)
            assert (c.get(39), c.get(151), c.get(58)) == (b"4", b"0", b"MassCancel")
            assert int(ack.get(34)) > 1
            b.send("H", (11, "COD1"), (55, "DEMO"), (54, 2))
            st = b.until(b"8", t11=b"COD1", t150=b"I")
            assert st.get(39) == b"4"
        finally:
            finish(b)
        # another session finds nothing of it at its price
        order(other, "COD2", side=1, qty=1, price=PRICE + 18, tif=3)
        r = other.until(b"8", t11=b"COD2", t150=b"C")
        assert r.get(14) == b"0"


# ------------------------------------------------------------------- cancel-on-disconnect, throttle


def test_throttle_refuses_over_rate_orders(tmp_path) -> None:
    with running_exchange(tmp_path, fix_toml(prefix("t"), ((61, acct(61)),), rate=2)) as tex:
        p = Peer(tex, 61)
        try:
            p.logon()
            time.sleep(1.1)  # the bucket full again after that MassCancel's token
            for i in range(8):
                order(p, f"T{i}", side=1, qty=1, price=PRICE - 20 - i)
            got: list[simplefix.FixMessage] = []
            deadline = time.monotonic() + 5
            while len({g.get(11) for g in got if g.get(35) == b"8"}) < 8:  # refusals come first
                got.append(p.recv(max(0.01, deadline - time.monotonic())))
            first = [ers(got, f"T{i}")[0] for i in range(8)]
            throttled = [r for r in first if r.get(150) == b"8"]
            accepted = [r for r in first if r.get(150) == b"0"]
            assert len(accepted) >= 2 and len(throttled) >= 4, [(r.get(11), r.get(150), r.get(58)) for r in first]
            for r in throttled:
                assert (r.get(39), r.get(58), r.get(37)) == (b"8", b"Throttled", b"NONE")
            # the session is not ended by it: a second later the bucket has refilled
            time.sleep(1.1)
            order(p, "T9", side=1, qty=1, price=PRICE - 30)
            assert p.until(b"8", t11=b"T9").get(150) == b"0"
        finally:
            p.close()


# ------------------------------------------------------------------- malformed input


def encoded(p: Peer, msg_type: str, *fields: tuple[int, object], seq: int | None = None) -> bytes:
    """A message as ``Peer.send`` would write it, not sent, numbered ``seq`` (default: next)."""
    m = simplefix.FixMessage()
    for tag, value in ((8, "FIX.4.4"), (35, msg_type), (49, p.sender), (56, "RINGEX"),
                       (34, p.seq if seq is None else seq), (52, now())):
        m.append_pair(tag, value, header=True)
    for tag, value in fields:
        m.append_pair(tag, value)
    return m.encode()


def order_fields(p: Peer, cl: str, side: int = 1, qty: object = 1, price: object = PRICE - 25) -> list:
    return [(11, cl), (1, acct(int(p.sender[1:]))), (55, "DEMO"), (54, side), (60, now()), (38, qty), (40, 2),
            (44, price), (59, 1)]


def test_bad_checksum_is_ignored_and_the_session_continues(ex) -> None:
    with peers(ex, 62) as (p,):
        bad = bytearray(encoded(p, "D", *order_fields(p, "CK1")))
        cs = int(bad[-4:-1])
        bad[-4:-1] = b"%03d" % ((cs + 1) % 256)
        p.send_raw(bytes(bad))
        order(p, "CK2", side=1, price=PRICE - 25)  # the same number: the garbled one consumed none
        got = []
        deadline = time.monotonic() + 5
        while not ers(got, "CK2"):
            got.append(p.recv(max(0.01, deadline - time.monotonic())))
        got += drain(p, 0.3)
        assert ers(got, "CK2")[0].get(150) == b"0"
        assert not ers(got, "CK1") and all(g.get(35) not in (b"3", b"5", b"2") for g in got)


def test_wrong_body_length_is_ignored_and_the_session_continues(ex) -> None:
    with peers(ex, 63) as (p,):
        for cl, delta in (("BL1", -7), ("BL2", +7)):
            msg = encoded(p, "D", *order_fields(p, cl))
            head, rest = msg.split(b"\x019=", 1)
            length, body = rest.split(b"\x01", 1)
            wrong = head + b"\x019=" + str(int(length) + delta).encode() + b"\x01" + body
            p.send_raw(wrong)  # (its CheckSum is still right: only the length lies)
        order(p, "BL3", side=1, price=PRICE - 25)
        got = []
        deadline = time.monotonic() + 5
        while not ers(got, "BL3"):
            got.append(p.recv(max(0.01, deadline - time.monotonic())))
        got += drain(p, 0.3)
        assert ers(got, "BL3")[0].get(150) == b"0"
        assert not ers(got, "BL1") and not ers(got, "BL2")
        assert all(g.get(35) not in (b"3", b"5", b"2") for g in got)


def test_missing_required_tag_is_rejected_and_consumes_its_number(ex) -> None:
    with peers(ex, 64) as (p,):
        fields = [f for f in order_fields(p, "RQ1") if f[0] != 40]  # OrdType missing
        p.send("D", *fields)
        rej = p.until(b"3")
        assert (rej.get(373), rej.get(371), rej.get(372), rej.get(45)) == (b"1", b"40", b"D", str(p.seq - 1).encode())
        order(p, "RQ2", side=1, price=PRICE - 25)
        assert p.until(b"8", t11=b"RQ2").get(150) == b"0"  # numbering goes on: no ResendRequest


def test_unknown_msg_type_is_rejected(ex) -> None:
    with peers(ex, 65) as (p,):
        p.send("ZZ", (58, "what"))
        rej = p.until(b"3")
        assert (rej.get(373), rej.get(372), rej.get(371)) == (b"11", b"ZZ", b"35")
        p.send("1", (112, "after-zz"))
        assert p.until(b"0", t112=b"after-zz")


def test_non_numeric_price_is_rejected_as_incorrect_data_format(ex) -> None:
    with peers(ex, 66) as (p,):
        p.send("D", *order_fields(p, "NP1", price="12a"))
        rej = p.until(b"3")
        assert (rej.get(373), rej.get(371), rej.get(372)) == (b"6", b"44", b"D")
        p.send("H", (11, "NP1"), (55, "DEMO"), (54, 1))
        st = p.until(b"8", t11=b"NP1", t150=b"I")
        assert (st.get(39), st.get(103)) == (b"8", b"5")  # never became an order


def test_negative_quantity_is_refused_and_never_trades(ex) -> None:
    with peers(ex, 67, 68) as (maker, p):
        order(maker, "NQ0", side=2, qty=5, price=PRICE + 19)
        maker.until(b"8", t11=b"NQ0", t150=b"0")
        p.send("D", *order_fields(p, "NQ1", qty=-5, price=PRICE + 19))
        r = p.until(b"8", t11=b"NQ1")
        assert (r.get(150), r.get(39), r.get(14), r.get(37)) == (b"8", b"8", b"0", b"NONE")
        assert r.get(103) == b"13" and b"must be > 0" in r.get(58)
        maker.send("H", (11, "NQ0"), (55, "DEMO"), (54, 2))
        st = maker.until(b"8", t11=b"NQ0", t150=b"I")
        assert (st.get(39), st.get(14), st.get(151)) == (b"0", b"0", b"5")
        assert not [g for g in drain(maker, 0.3) if g.get(150) == b"F"]


def test_oversized_message_is_ignored_and_others_keep_trading(ex) -> None:
    with peers(ex, 69, 70, 60) as (p, maker, taker):
        big = encoded(p, "D", *order_fields(p, "OV1"), (58, "x" * 9000))
        assert len(big) > 8192
        p.send_raw(big)
        order(maker, "OV2", side=2, qty=1, price=PRICE + 21)
        maker.until(b"8", t11=b"OV2", t150=b"0")
        order(taker, "OV3", side=1, qty=1, price=PRICE + 21, tif=3)
        assert taker.until(b"8", t11=b"OV3", t150=b"F")
        # the gateway keeps the connection: the garbled bytes consumed no number
        order(p, "OV4", side=1, price=PRICE - 25)
        got = []
        deadline = time.monotonic() + 5
        while not ers(got, "OV4"):
            got.append(p.recv(max(0.01, deadline - time.monotonic())))
        assert ers(got, "OV4")[0].get(150) == b"0" and not ers(got, "OV1")
        assert all(g.get(35) not in (b"3", b"5", b"2") for g in got)


def test_garbage_then_close_breaks_nothing(ex) -> None:
    with peers(ex, 72, 73) as (maker, taker):
        order(maker, "GB1", side=2, qty=5, price=PRICE + 22)
        maker.until(b"8", t11=b"GB1", t150=b"0")
        order(taker, "GB2", side=1, qty=1, price=PRICE + 22, tif=3)
        taker.until(b"8", t11=b"GB2", t150=b"F")
        for junk in (bytes(range(256)) * 20, b"8=FIX.4.4\x019=99999\x0135=D\x01", b"8=FIX.4.2\x019=5\x01"):
            s = socket.create_connection((ex.host, ex.port), timeout=5.0)
            s.sendall(junk)
            order(taker, f"GB3{len(junk)}", side=1, qty=1, price=PRICE + 22, tif=3)  # during
            s.close()
            assert taker.until(b"8", t11=f"GB3{len(junk)}".encode(), t150=b"F")
        # and after, on a fresh connection the gateway still answers a Logon
        late = Peer(ex, 74)
        try:
            late.logon()
        finally:
            finish(late)


# ------------------------------------------------------------------- restart


def test_numbers_continue_across_an_exchange_restart(tmp_path) -> None:
    toml = fix_toml(prefix("r"), ((21, acct(21)), (22, acct(22))))
    with running_exchange(tmp_path, toml) as first:
        maker, taker = Peer(first, 21), Peer(first, 22)
        try:
            maker.logon()
            taker.logon()
            order(maker, "R1", side=2, qty=1, price=PRICE + 5)
            maker.until(b"8", t11=b"R1", t150=b"0")
            order(taker, "R2", side=1, qty=1, price=PRICE + 5, tif=3)
            taker.until(b"8", t11=b"R2", t150=b"F")
            maker.until(b"8", t11=b"R1", t150=b"F")
            taker.send("5")
            last = int(taker.until(b"5").get(34))
            closed(taker)
        finally:
            maker.close()
            taker.close()
    with running_exchange(tmp_path, toml) as second:  # the same directory
        again = Peer(second, 22, seq=taker.seq)
        try:
            ack = again.logon(reset=False)
            assert ack.get(141) is None
            assert int(ack.get(34)) == last + 1  # the gateway's numbering continues
            again.send("H", (11, "R2"), (55, "DEMO"), (54, 1))  # and so does ours, and the order book
            st = again.until(b"8", t11=b"R2", t150=b"I")
            assert (st.get(39), st.get(14)) == (b"2", b"1")
            again.send("2", (7, last), (16, last))  # the stored flow survived too
            assert again.until(b"4", timeout=5.0).get(123) == b"Y"
        finally:
            again.close()
