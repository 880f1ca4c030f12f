"""The FIX gateway survives SIGKILL (gateways/fix_gateway.py under the supervisor).

The gateway runs in a process of its own, on a fixed port; the test kills that process, the
supervisor starts it again, and the counterparties (simplefix, with the FIX session rules a
real engine follows: ResendRequest on a gap, resend with PossDupFlag=Y or SequenceReset-
GapFill when asked) log on again without a reset. Sequence numbers continue both ways, the
ClOrdID book survived (OrderStatusRequest, a cancel of an order placed before the crash), and
no order is lost or applied twice, also when the kill lands while orders are on their way:
at a random instant, or at the gateway's crash points (tests/test_gateway_supervision.py
does the same for the binary gateway).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import simplefix

from ringex import crash_points
from ringex.engine.storage.data_dir import journal_dir
from ringex.engine.storage.journal_reader import JournalReader
from ringex.engine.wire import messages as m
from ringex.gateways.fix_codec import utc_timestamp
from gateway_kit import PRICE, fix_toml, running_exchange
from pipeline_kit import unique_prefix
from test_fix_gateway import HELD, Peer, counter

ADMIN = frozenset({"0", "1", "2", "4", "5", "A"})  # replaced by a gap fill when resent
EDGE = "edge"  # the gateway's process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crash_toml(sessions: tuple[tuple[int, int], ...]) -> str:
    """The FIX gateway alone in process ``edge``, on a fixed port (a restarted gateway listens
    where its counterparties reconnect), no cancel-on-disconnect (resting orders outlive the
    connections the kill ends)."""
    toml = fix_toml(unique_prefix(), sessions, cod=False,
                    extra='[[process]]\nname = "core"\nagents = ["sequencer", "engine"]\n'
                          f'[[process]]\nname = "{EDGE}"\nagents = ["bin"]\n')
    return toml.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{free_port()}"')


def crash_once(tmp_path: Path, point: str) -> tuple[Path, dict[str, str]]:
    """The environment that kills the gateway once at ``point`` (``name[@hit]``), and the
    directory where the kill leaves its marker (crash_points.py)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    return markers, {crash_points.ENV_AT: point, crash_points.ENV_ONCE: str(markers)}


def kill_gateway(ex) -> None:
    """SIGKILL the gateway's process; returns once the supervisor has started a new one that
    listens again."""
    killed_at = time.time()
    os.kill(ex.pids[EDGE], signal.SIGKILL)
    wait_restarted(ex, killed_at)


def wait_restarted(ex, since: float) -> None:
    """Until the supervisor has started a new gateway process (after ``since``, a
    time.time()) that listens again."""
    old = ex.pids[EDGE]
    ex.wait_listening(timeout=60, after=since)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = [line for line in ex.output if f"started process '{EDGE}'" in line]
        if started:
            pid = int(started[-1].split("(pid ")[1].split(")")[0])
            if pid != old:
                ex.pids[EDGE] = pid
                return
        time.sleep(0.05)
    raise TimeoutError("the gateway was not restarted:\n" + ex.read_output()[-3000:])


class Counterparty(Peer):
    """A ``Peer`` that keeps what it sent (to resend it when the gateway asks, PossDupFlag=Y
    and OrigSendingTime, admin messages as a gap fill) and what it received, by MsgSeqNum,
    across reconnections."""

    def __init__(self, ex, sid: int) -> None:
        super().__init__(ex, sid)
        self.ex = ex
        self.sent: dict[int, tuple[str, tuple, str]] = {}
        self.got: dict[int, simplefix.FixMessage] = {}  # first received of each number
        self.filled: set[int] = set()  # numbers a gap fill of the gateway's stood for
        self.asked: list[tuple[int, int]] = []  # the gateway's ResendRequests
        self.next_in = 1  # the next number expected from the gateway

    def encode(self, msg_type: str, *fields: tuple[int, object], seq: int | None = None,
               orig_time: str | None = None) -> bytes:
        n = self.seq if seq is None else seq
        now = utc_timestamp(time.time_ns()).decode()
        m = simplefix.FixMessage()
        for tag, value in ((8, "FIX.4.4"), (35, msg_type), (49, self.sender), (56, "RINGEX"), (34, n)):
            m.append_pair(tag, value, header=True)
        if orig_time is not None:
            m.append_pair(43, "Y", header=True)
        m.append_pair(52, now, header=True)
        if orig_time is not None:
            m.append_pair(122, orig_time, header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        if seq is None:
            self.sent[n] = (msg_type, fields, now)
            self.seq += 1
        return m.encode()

    def recv(self, timeout: float = 5.0) -> simplefix.FixMessage:
        msg = super().recv(timeout)
        n = int(msg.get(34))
        if msg.get(35) == b"4" and msg.get(123) == b"Y":
            self.filled.update(range(n, int(msg.get(36))))
            self.next_in = max(self.next_in, int(msg.get(36)))
            return msg
        self.got.setdefault(n, msg)
        self.next_in = max(self.next_in, n + 1)
        if msg.get(35) == b"2":
            begin, end = int(msg.get(7)), int(msg.get(16))
            self.asked.append((begin, end))
            self.resend(begin, end or self.seq - 1)
        return msg

    def resend(self, begin: int, end: int) -> None:
        """Messages ``begin``..``end`` again, as FIX says: application messages with
        PossDupFlag=Y, each run of session messages as one SequenceReset-GapFill."""
        out, run = b"", None
        for n in range(begin, end + 1):
            msg_type, fields, when = self.sent[n]
            if msg_type in ADMIN:
                run = n if run is None else run
                continue
            if run is not None:
                out += self.gap_fill(run, n)
                run = None
            out += self.encode(msg_type, *fields, seq=n, orig_time=when)
        if run is not None:
            out += self.gap_fill(run, end + 1)
        self.sock.sendall(out)

    def gap_fill(self, seq: int, new_seq: int) -> bytes:
        return self.encode("4", (123, "Y"), (36, new_seq), seq=seq, orig_time=utc_timestamp(time.time_ns()).decode())

    def sync(self, tag: str) -> list[simplefix.FixMessage]:
        """A TestRequest and what came up to its Heartbeat: everything the gateway sent
        before it has been read."""
        self.send("1", (112, tag))
        return self.until_all(lambda x: x.get(35) == b"0" and x.get(112) == tag.encode(), timeout=10.0)

    def reconnect(self, timeout: float = 30.0) -> simplefix.FixMessage:
        """A new connection and a Logon without a reset (our next number, as a FIX engine
        does); then a ResendRequest for what the gateway numbered while we were away, if
        anything. Returns its Logon answer."""
        self.sock.close()
        expected = self.next_in
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((self.ex.host, self.ex.port), timeout=5.0)
                self.parser = simplefix.FixParser()
                ack = self.logon(reset=False)
                break
            except (OSError, ConnectionError, TimeoutError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if int(ack.get(34)) > expected:
            self.send("2", (7, expected), (16, 0))
        return ack

    def app(self, cl: str) -> list[simplefix.FixMessage]:
        """The application messages received about ClOrdID ``cl`` (11 or 41), each number once."""
        c = cl.encode()
        return [x for _, x in sorted(self.got.items()) if x.get(35) in (b"8", b"9", b"r") and c in (x.get(11), x.get(41))]

    def complete(self) -> bool:
        """Every number from 1 to the last received was received or gap-filled."""
        top = max(self.got)
        return all(n in self.got or n in self.filled for n in range(1, top + 1))

    def problems(self) -> list[simplefix.FixMessage]:
        return [x for x in self.got.values() if x.get(35) in (b"3", b"5", b"j")]


def now() -> str:
    return utc_timestamp(time.time_ns()).decode()


def exec_types(p: Counterparty, cl: str) -> list[bytes]:
    return [x.get(150) for x in p.app(cl) if x.get(35) == b"8" and x.get(150) != b"I"]


def test_a_killed_fix_gateway_comes_back_with_its_sessions_numbers_and_orders(tmp_path) -> None:
    with running_exchange(tmp_path, crash_toml(((21, 1), (22, 2)))) as ex:
        maker, taker = Counterparty(ex, 21), Counterparty(ex, 22)
        try:
            maker.logon()
            taker.logon()
            for cl, side, qty, price in (("k1", 2, 3, PRICE + 10), ("k2", 2, 1, PRICE + 12), ("k3", 1, 1, PRICE - 10)):
                maker.order(cl, side=side, qty=qty, price=price, sid_account=1)
                maker.until(b"8", t11=cl.encode(), t150=b"0")
            taker.order("t1", side=1, qty=1, price=PRICE + 10, tif=3, sid_account=2)
            taker.until(b"8", t11=b"t1", t150=b"F")
            maker.until(b"8", t11=b"k1", t150=b"F")
            maker.send("G", (41, "k3"), (11, "k3r"), (55, "DEMO"), (54, 1), (40, 2), (38, 2), (44, PRICE - 11),
                       (60, now()))
            maker.until(b"8", t11=b"k3r", t150=b"5")
            # a cancel held until its order is accepted, before the crash
            maker.send_raw(maker.order_bytes("k4", side=1, price=PRICE - 12)
                           + maker.encode("F", (41, "k4"), (11, "k4x"), (55, "DEMO"), (54, 1), (60, now())))
            maker.until(b"8", t11=b"k4x", t150=b"4")
            maker.sync("before")
            taker.sync("before")
            order_id = maker.app("k1")[0].get(37)
            last = {p.sender: (p.next_in, p.seq) for p in (maker, taker)}

            kill_gateway(ex)

            for p in (maker, taker):
                ack = p.reconnect()
                next_in, next_out = last[p.sender]
                assert int(ack.get(34)) == next_in  # its numbering continues after the last we got
                after = p.sync("after")
                # and it expected exactly our next number: no ResendRequest, no Logout
                assert p.asked == [] and not [x for x in after if x.get(35) in (b"2", b"3", b"5")], after
                assert p.seq == next_out + 2  # the Logon and the TestRequest
            # the ClOrdID book survived: status of orders placed before the crash
            maker.send("H", (11, "k1"), (55, "DEMO"), (54, 2))
            st = maker.until(b"8", t11=b"k1", t150=b"I")
            assert (st.get(39), st.get(14), st.get(151), st.get(37)) == (b"1", b"1", b"2", order_id)
            maker.send("H", (11, "k3"), (55, "DEMO"), (54, 1))  # by its ClOrdID before the replace
            st = maker.until(b"8", t11=b"k3", t150=b"I")
            assert (st.get(39), st.get(38), st.get(44)) == (b"0", b"2", str(PRICE - 11).encode())
            maker.send("H", (11, "k4"), (55, "DEMO"), (54, 1))
            assert maker.until(b"8", t11=b"k4", t150=b"I").get(39) == b"4"
            taker.send("H", (11, "t1"), (55, "DEMO"), (54, 1))
            assert taker.until(b"8", t11=b"t1", t150=b"I").get(39) == b"2"
            # a cancel of an order placed before the crash
            maker.send("F", (41, "k2"), (11, "k2x"), (55, "DEMO"), (54, 2), (60, now()))
            done = maker.until(b"8", t11=b"k2x")
            assert (done.get(150), done.get(41), done.get(39)) == (b"4", b"k2", b"4")
            # the engine holds exactly the two orders still working, k1 (2 left) and k3 replaced
            maker.send("q", (11, "all"), (530, 7), (60, now()))
            got = maker.until_all(lambda x: x.get(35) == b"r", timeout=10.0)
            assert got[-1].get(533) == b"2"
            canceled = {x.get(11) for x in got if x.get(35) == b"8" and x.get(150) == b"4"}
            assert canceled == {b"k1", b"k3r"}
            # each order reported once, and every number both ways accounted for
            assert exec_types(maker, "k1") == [b"0", b"F", b"4"]
            assert exec_types(maker, "k2") == [b"0", b"4"] and exec_types(maker, "k4") == [b"0", b"4"]
            assert exec_types(maker, "k3") == [b"0", b"5"] and exec_types(taker, "t1") == [b"0", b"F"]
            for p in (maker, taker):
                assert p.complete() and p.problems() == []
        finally:
            maker.close()
            taker.close()


@pytest.mark.parametrize("kill", ["sigkill", "gateway.after_publish", "gateway.after_store"])
def test_a_fix_gateway_killed_with_orders_on_their_way_applies_each_once(tmp_path, kill: str) -> None:
    """Five IOC orders in one write, and the gateway killed: by the test right behind them
    (it has mostly not read them yet), or by itself between publishing them and counting
    them in the session store, or between storing their reports and committing its ring
    cursor (the third time it reaches the point: the venue check and the maker's order come
    first). Whatever the gateway published is counted from its ring at restart and answered
    from the stores; the rest is asked for again (ResendRequest) and resent with
    PossDupFlag=Y: each order trades once, each report arrives once."""
    n = 5
    env = None
    if kill != "sigkill":
        markers, env = crash_once(tmp_path, f"{kill}@2")  # the taker's batch
    with running_exchange(tmp_path / "ex", crash_toml(((23, 3), (24, 4))), env=env) as ex:
        maker, taker = Counterparty(ex, 23), Counterparty(ex, 24)
        try:
            maker.logon()
            taker.logon()
            maker.order("s1", side=2, qty=n, price=PRICE + 20, sid_account=3)
            maker.until(b"8", t11=b"s1", t150=b"0")
            sent_at = time.time()
            taker.send_raw(b"".join(taker.order_bytes(f"b{i}", side=1, qty=1, price=PRICE + 20, tif=3,
                                                      sid_account=4) for i in range(n)))
            if kill == "sigkill":
                kill_gateway(ex)
            else:
                wait_restarted(ex, sent_at)
                assert (markers / kill).exists(), "the crash point was not reached"
            for p in (maker, taker):
                p.reconnect()

            deadline = time.monotonic() + 30

            def ended(cl: str) -> bool:
                return any(x.get(39) in (b"2", b"4", b"8", b"C") for x in taker.app(cl))

            while not all(ended(f"b{i}") for i in range(n)):
                assert time.monotonic() < deadline, ({i: exec_types(taker, f"b{i}") for i in range(n)},
                                                     ex.read_output()[-3000:])
                try:
                    taker.recv(max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    pass
            while exec_types(maker, "s1").count(b"F") < n:
                assert time.monotonic() < deadline, exec_types(maker, "s1")
                try:
                    maker.recv(max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    pass
            maker.sync("end")
            taker.sync("end")
            for i in range(n):  # each accepted once and filled once: none lost, none twice
                assert exec_types(taker, f"b{i}") == [b"0", b"F"], (i, exec_types(taker, f"b{i}"), taker.asked)
            fills = [x for x in maker.app("s1") if x.get(150) == b"F"]
            assert len(fills) == n and (fills[-1].get(14), fills[-1].get(39)) == (str(n).encode(), b"2")
            assert len({x.get(17) for x in fills}) == n
            for p in (maker, taker):
                assert p.complete() and p.problems() == [], p.problems()
            if kill == "gateway.after_publish":  # published, so counted from the ring: none asked for again
                assert taker.asked == []
            # the book agrees: nothing of the maker's is left working
            maker.send("q", (11, "all"), (530, 7), (60, now()))
            assert maker.until(b"r", timeout=10.0).get(533) == b"0"
        finally:
            maker.close()
            taker.close()


def test_a_fix_gateway_killed_before_publishing_an_order_asks_for_it_again(tmp_path) -> None:
    """A NewOrderSingle and, in the same write, an OrderStatusRequest (answered by the
    gateway itself); killed before the order is published: the restarted gateway counted
    neither, so it asks for both again and the order, resent with PossDupFlag=Y, is
    accepted (counting the status request would have counted the order too, which then
    could only be reported lost)."""
    markers, env = crash_once(tmp_path, "gateway.before_publish")
    with running_exchange(tmp_path / "ex", crash_toml(((25, 1),)), env=env) as ex:
        p = Counterparty(ex, 25)
        try:
            p.logon()
            started = time.time()
            order_seq = p.seq
            p.send_raw(p.order_bytes("k", side=1, price=PRICE - 40) + p.encode("H", (11, "k"), (55, "DEMO"), (54, 1)))
            wait_restarted(ex, started)
            assert (markers / "gateway.before_publish").exists(), "the crash point was not reached"
            p.reconnect()
            deadline = time.monotonic() + 30
            while not {b"0", b"8"} & set(exec_types(p, "k")):  # accepted, or rejected as lost
                p.recv(max(0.01, deadline - time.monotonic()))
            p.sync("end")
            assert exec_types(p, "k") == [b"0"], p.app("k")  # accepted once, never reported lost
            assert [a for a in p.asked if a[0] <= order_seq] == [(order_seq, 0)]  # asked again from the order on
            assert p.complete() and p.problems() == []
        finally:
            p.close()


def test_a_held_cancel_survives_a_gateway_restart(tmp_path) -> None:
    """NewOrderSingle and OrderCancelRequest in one write while the engine is stopped: the
    order is published, the cancel held in the session's book; the gateway is killed and
    restarted, then the engine goes on: the new gateway reports the acceptance, releases the
    cancel it found in the book, and reports the cancel."""
    toml = crash_toml(((25, 1),)).replace("heartbeat_timeout_ms = 1000", "heartbeat_timeout_ms = 60000")
    with running_exchange(tmp_path, toml) as ex:
        p = Counterparty(ex, 25)
        core = ex.pids["core"]
        stopped = False
        try:
            p.logon()
            held = counter(ex, HELD)
            os.kill(core, signal.SIGSTOP)
            stopped = True
            p.send_raw(p.order_bytes("h", side=1, price=PRICE - 40)
                       + p.encode("F", (41, "h"), (11, "hx"), (55, "DEMO"), (54, 1), (60, now())))
            deadline = time.monotonic() + 10
            while counter(ex, HELD) == held:  # the gateway has it, held
                assert time.monotonic() < deadline, "the cancel was not held"
                time.sleep(0.02)
            kill_gateway(ex)
            os.kill(core, signal.SIGCONT)
            stopped = False
            p.reconnect()
            deadline = time.monotonic() + 30
            while b"4" not in exec_types(p, "h"):
                p.recv(max(0.01, deadline - time.monotonic()))
            p.sync("end")
            assert exec_types(p, "h") == [b"0", b"4"], p.app("h")
            done = p.app("h")[-1]
            assert (done.get(11), done.get(41), done.get(39)) == (b"hx", b"h", b"4")
            assert p.complete() and p.problems() == [] and p.asked == []
        finally:
            if stopped:
                os.kill(core, signal.SIGCONT)
            p.close()


def test_a_released_cancel_published_before_a_crash_is_not_sent_again(tmp_path) -> None:
    """NewOrderSingle and OrderCancelRequest in one write: the cancel is held until the
    order's acceptance, then released, staged and published (the gateway's second publish),
    and the gateway killed right after it. The book recorded the release before the publish,
    so the restarted gateway waits for the cancel's answer instead of releasing it again: the
    order is canceled once, and the engine is sent one CancelOrder, not a second one (which it
    would refuse, unseen by the counterparty: the gateway no longer knows its number; a
    second ReplaceOrder would be applied again)."""
    markers, env = crash_once(tmp_path, "gateway.after_publish@2")
    with running_exchange(tmp_path / "ex", crash_toml(((26, 1),)), env=env) as ex:
        p = Counterparty(ex, 26)
        try:
            p.logon()
            held = counter(ex, HELD)
            sent_at = time.time()
            p.send_raw(p.order_bytes("r", side=1, price=PRICE - 40)
                       + p.encode("F", (41, "r"), (11, "rx"), (55, "DEMO"), (54, 1), (60, now())))
            wait_restarted(ex, sent_at)
            assert (markers / "gateway.after_publish").exists(), "the crash point was not reached"
            assert counter(ex, HELD) >= held  # (the restarted gateway's counters start again)
            p.reconnect()
            deadline = time.monotonic() + 30
            while b"4" not in exec_types(p, "r"):
                assert time.monotonic() < deadline, p.app("r")
                try:
                    p.recv(max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    pass
            time.sleep(0.5)  # what a second cancel would bring has time to come
            p.sync("end")
            assert exec_types(p, "r") == [b"0", b"4"], p.app("r")
            assert [x.get(35) for x in p.app("rx")] == [b"8"], p.app("rx")  # the cancel's report, no 9
            assert p.complete() and p.problems() == [], p.problems()
            assert journaled(tmp_path / "ex" / "data", m.CancelOrder, session=26) == 1
        finally:
            p.close()


def journaled(data_dir: Path, message: Any, session: int) -> int:
    """How many ``message``s (a ``messages`` codec) of session ``session`` the engine's journal
    holds: what the engine was sent, each once however often a gateway restarted."""
    template, at = message.template_id, message.offset("sessionId")
    n = 0
    for record in JournalReader(journal_dir(data_dir)).records():
        data = bytes(record.payload)
        size = len(data) // record.count
        for slot in range(0, len(data), size):
            if (int.from_bytes(data[slot + 2:slot + 4], "little") == template
                    and int.from_bytes(data[slot + at:slot + at + 4], "little") == session):
                n += 1
    return n


def test_an_untethered_fix_gateway_reports_every_fill_it_missed(tmp_path) -> None:
    """Stopped while more than half the output ring goes by (aggressive orders from another
    ring filling its counterparty's resting order): the supervisor untethers it and restarts
    it at the ring's head; it makes the events it missed again from the journal
    (engine/storage/output_replay.py), so the counterparty, logging on again, gets every fill
    once: CumQty adds up."""
    from ringex.engine.wire import messages as m

    from gateway_kit import offer_load, signal_if_alive

    n = 1500  # about 3 events each: well past half of the 4096-slot output ring
    toml = crash_toml(((23, 3),)).replace(
        "[supervisor]", '[rings]\ngateways = ["load"]\noutput_capacity = 4096\n[supervisor]')
    with running_exchange(tmp_path, toml) as ex:
        maker = Counterparty(ex, 23)
        try:
            maker.logon()
            maker.order("big", side=2, qty=n, price=PRICE + 20, sid_account=3)
            maker.until(b"8", t11=b"big", t150=b"0")
            pid = ex.pids[EDGE]
            stopped_at = time.time()
            os.kill(pid, signal.SIGSTOP)
            try:
                offer_load(ex.prefix, [m.NewOrder.encode(sessionId=99, clOrdId=1 + i, account=4, instrument=1,
                                                         side="Buy", ordType="Limit", price=PRICE + 20, qty=1,
                                                         timeInForce="IOC") for i in range(n)])
                wait_restarted(ex, stopped_at)
            finally:
                signal_if_alive(pid, signal.SIGCONT)
            out = ex.read_output()
            assert "untethered subscriber" in out and "made again the" in out, out[-3000:]
            maker.reconnect()
            deadline = time.monotonic() + 30
            while not any(x.get(39) == b"2" for x in maker.app("big")):
                assert time.monotonic() < deadline, (len(maker.app("big")), ex.read_output()[-3000:])
                maker.recv(max(0.01, deadline - time.monotonic()))
            fills = [x for x in maker.app("big") if x.get(150) in (b"F", b"1", b"2")]
            assert len(fills) == n and len({x.get(17) for x in fills}) == n  # every fill once, unique ExecIDs
            assert sum(int(x.get(32)) for x in fills) == n and fills[-1].get(14) == str(n).encode()
            assert maker.complete() and not maker.problems()
        finally:
            maker.close()


def test_fix_orders_in_flight_when_the_whole_exchange_is_killed_are_answered_after_the_restart(tmp_path):
    """The FIX side of ``test_gateway_supervision``'s whole-exchange kill: NewOrderSingles the
    gateway published (and counted) while the core process was stopped, every process then
    SIGKILLed; the next run resumes the rings, and the counterparty, logging on again with its
    numbers continuing, gets an ExecutionReport for each order (the gateway's book and its
    ring agree: the same incarnation), none twice, and is not asked to send them again."""
    from test_gateway_supervision import kill_with_orders_in_flight

    from gateway_kit import start_exchange

    toml = fix_toml(unique_prefix(), sessions=((21, 1),), cod=False)
    first = start_exchange(tmp_path, toml)
    p = Peer(first, 21)
    p.logon()
    kill_with_orders_in_flight(first, lambda: [p.order(f"w{i}", side=2, price=PRICE + 40 + i) for i in range(3)], 3)
    p.close()
    with running_exchange(tmp_path, toml) as second:
        assert "resumed the rings a crashed run left" in second.read_output()
        q = Peer(second, 21, seq=p.seq)
        try:
            ack = q.logon(reset=False)
            assert int(ack.get(34)) > 2  # the reports were numbered while it was away:
            q.send("2", (7, 2), (16, 0))  # it asks for them, as a FIX engine does at a gap
            reports: dict[bytes, list[bytes]] = {}
            deadline = time.monotonic() + 30
            while len(reports) < 3 and time.monotonic() < deadline:
                m = q.recv(max(0.01, deadline - time.monotonic()))
                assert m.get(35) != b"2", "the gateway asked for the orders again"
                if m.get(35) == b"8" and (m.get(11) or b"").startswith(b"w"):
                    reports.setdefault(m.get(11), []).append(m.get(150))
            assert sorted(reports) == [b"w0", b"w1", b"w2"], second.read_output()[-3000:]
            assert all(len(v) == 1 for v in reports.values()), reports
        finally:
            q.close()
