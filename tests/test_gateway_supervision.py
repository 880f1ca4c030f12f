"""A gateway that dies or hangs under load never freezes the exchange and loses no session
event: SIGKILL of the gateway process while orders flow through it, and SIGSTOP of it while
orders for its sessions keep arriving from another ring. The supervisor restarts a dead
gateway and kills then restarts a hung one; the new gateway resumes the output ring from its
cursor and its sessions' flows from their stores, so a client that reconnects receives
exactly what it missed (consecutive numbers, no duplicate) and the client's own numbering
says which of its orders were applied."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from ringex import crash_points
from ringex.engine.wire import messages as m
from ringex.gateways.client import SessionTerminated
from ringex.gateways.sofh import header

from gateway_kit import (
    PRICE,
    gateway_toml,
    limit,
    offer_load,
    running_exchange,
    session_toml,
    signal_if_alive,
    start_exchange,
)
from pipeline_kit import unique_prefix

MAKER, TAKER = 1, 2  # sessions: the maker rests, the taker sweeps it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def supervised_toml() -> str:
    """Two sessions without cancel-on-disconnect on a fixed port (a restarted gateway listens
    where its clients reconnect), the gateway in a process of its own, a ring for load."""
    toml = gateway_toml(unique_prefix(),
                        sessions=session_toml(MAKER, "[1]", cod=False) + session_toml(TAKER, "[2]", cod=False),
                        extra='[rings]\ngateways = ["load"]\noutput_capacity = 4096\n',
                        processes='[[process]]\nname = "core"\nagents = ["sequencer", "engine"]\n'
                                  '[[process]]\nname = "edge"\nagents = ["bin"]\n')
    return toml.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{free_port()}"')


@pytest.fixture
def ex(tmp_path):
    with running_exchange(tmp_path, supervised_toml()) as running:
        yield running


def gateway_pid(ex) -> int:
    return ex.pids["edge"]


def wait_restarted(ex, old_pid: int, since: float, timeout: float = 30.0) -> None:
    """Until the supervisor has started a new gateway process that listens again."""
    ex.wait_listening(timeout=timeout, after=since)
    assert ex.port  # the same configured port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [line for line in ex.output if "started process 'edge'" in line]
        if len(new) >= 2:
            pid = int(new[-1].split("(pid ")[1].split(")")[0])
            if pid != old_pid:
                ex.pids["edge"] = pid
                return
        time.sleep(0.05)
    raise TimeoutError("the gateway was not restarted")


def reconnect(client, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.reconnect()
            return
        except (OSError, SessionTerminated):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def flow(client, until, timeout: float = 15.0) -> list:
    """Events up to ``until``; each has the next number."""
    return client.receive_until(until, timeout=timeout)


def consecutive(events, first: int) -> bool:
    return [e.seq for e in events] == list(range(first, first + len(events)))


def test_a_gateway_killed_under_load_is_restarted_and_its_sessions_recover(ex):
    maker, taker = ex.client(MAKER), ex.client(TAKER)
    maker.new_order(**limit(1, "Sell", qty=500, price=PRICE, account=1))
    rest = flow(maker, lambda e: e.name == "OrderAccepted")
    n = 300
    for i in range(n):  # load: IOC buys against the resting sell, not waiting for answers
        taker.new_order(**limit(100 + i, "Buy", qty=1, price=PRICE, account=2, timeInForce="IOC"))
        if i == n // 2:  # the gateway is busy with them: the first answered, more on their way
            taker.receive(timeout=10)
    pid = gateway_pid(ex)
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    wait_restarted(ex, pid, killed_at)
    reconnect(maker)
    reconnect(taker)
    applied = taker.last_applied  # the taker's orders the gateway took before it died
    assert 1 <= applied <= n
    # every applied order is answered once, in the taker's flow
    answers = flow(taker, lambda e: e.name == "Trade" and e["takerClOrdId"] == 100 + applied - 1)
    answers = [e for e in answers if e.seq > 1] if answers[0].seq > 1 else answers  # the first was read above
    assert consecutive(answers, answers[0].seq) and answers[0].seq <= 2
    trades = [e["takerClOrdId"] for e in answers if e.name == "Trade"]
    assert trades == [100 + i for i in range(applied)]
    assert taker.drain(0.3) == []
    # the maker's flow has the same trades, consecutively numbered after its acceptance
    got = flow(maker, lambda e: e.name == "Trade" and e["takerClOrdId"] == 100 + applied - 1)
    assert consecutive(rest + got, rest[0].seq)
    assert [e["takerClOrdId"] for e in got if e.name == "Trade"] == trades
    # and trading goes on through the new gateway
    taker.new_order(**limit(900, "Buy", qty=1, price=PRICE, account=2, timeInForce="IOC"))
    assert flow(taker, lambda e: e.name == "Trade")[-1]["takerClOrdId"] == 900
    maker.terminate()
    taker.terminate()


def _taker_iocs(n: int) -> list[bytes]:
    """``n`` IOC buys of the taker's session (clOrdIds from 5000), as engine messages."""
    return [m.NewOrder.encode(sessionId=TAKER, **limit(5000 + i, "Buy", qty=1, price=PRICE, account=2,
                                                       timeInForce="IOC")) for i in range(n)]


def test_a_hung_gateway_does_not_freeze_the_exchange_and_is_restarted(ex):
    maker, taker = ex.client(MAKER), ex.client(TAKER)
    maker.new_order(**limit(1, "Sell", qty=1000, price=PRICE, account=1))
    rest = flow(maker, lambda e: e.name == "OrderAccepted")
    pid = gateway_pid(ex)
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        # load for the taker's session arrives from another ring while its gateway is stopped
        n = 400
        offer_load(ex.prefix, _taker_iocs(n))
        wait_restarted(ex, pid, stopped_at)  # killed by the supervisor, then restarted
    finally:
        signal_if_alive(pid, signal.SIGCONT)  # if it was not killed, let it go on
    reconnect(maker)
    reconnect(taker)
    got = flow(taker, lambda e: e.name == "Trade" and e["takerClOrdId"] == 5000 + n - 1, timeout=30)
    assert consecutive(got, 1)
    assert [e["takerClOrdId"] for e in got if e.name == "Trade"] == [5000 + i for i in range(n)]
    mk = flow(maker, lambda e: e.name == "Trade" and e["takerClOrdId"] == 5000 + n - 1, timeout=30)
    assert consecutive(rest + mk, rest[0].seq)
    assert sum(e["qty"] for e in mk if e.name == "Trade") == n, (
        [(e.seq, e.name, e.fields.get("takerClOrdId")) for e in rest + mk][:100], ex.read_output()[-4000:])
    maker.terminate()
    taker.terminate()


# the second hit of each is the first batch of the taker's burst (the first is the maker's order): reached
# however the burst is batched
@pytest.mark.parametrize("point, hit", [("gateway.after_publish", 2), ("gateway.after_store", 2)])
def test_a_gateway_killed_at_each_crash_point_applies_and_delivers_exactly_once(tmp_path, point, hit):
    """Killed between publishing orders and counting them, the restarted gateway reads the
    numbers back from its ring: a client that resends everything from its first number has
    each order applied once. Killed between storing events and committing its cursor, it
    skips what its stores hold: each event is in each flow once."""
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {crash_points.ENV_AT: f"{point}@{hit}", crash_points.ENV_ONCE: str(markers)}
    with running_exchange(tmp_path / "ex", supervised_toml(), env=env) as ex:
        maker, taker = ex.client(MAKER), ex.client(TAKER)
        maker.new_order(**limit(1, "Sell", qty=1000, price=PRICE, account=1))
        rest = flow(maker, lambda e: e.name == "OrderAccepted")
        pid = gateway_pid(ex)
        started = time.time()
        n = 200
        orders = [limit(100 + i, "Buy", qty=1, price=PRICE, account=2, timeInForce="IOC") for i in range(n)]
        for order in orders:
            try:
                taker.new_order(**order)
            except SessionTerminated:
                break  # the gateway died under it
        wait_restarted(ex, pid, started)
        assert (markers / point).exists(), "the crash point was not reached"
        reconnect(maker)
        taker.close_socket()
        taker.open()
        taker.establish(next_seq=1)  # resend everything: what was applied is ignored
        for order in orders:
            taker.new_order(**order)
        got = flow(taker, lambda e: e.name == "Trade" and e["takerClOrdId"] == 100 + n - 1, timeout=30)
        trades = [e["takerClOrdId"] for e in got if e.name == "Trade"]
        assert sorted(trades) == [100 + i for i in range(n)] and len(set(trades)) == n
        assert taker.drain(0.5) == [] and taker.not_applied == []
        mk = flow(maker, lambda e: e.name == "Trade" and e["takerClOrdId"] == 100 + n - 1, timeout=30)
        assert consecutive(rest + mk, rest[0].seq)
        assert sorted(e["takerClOrdId"] for e in mk if e.name == "Trade") == [100 + i for i in range(n)]
        maker.terminate()
        taker.terminate()


def test_a_gateway_killed_before_publishing_never_counts_a_later_answered_message(tmp_path):
    """An order staged and, in the same read, a later order the gateway refuses itself (an
    account the session may not trade): killed before the publish, the restarted gateway
    has counted neither (counting the refusal would have counted the order the engine never
    saw, and the client would never learn it was not applied); resent, the order is applied
    once."""
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {crash_points.ENV_AT: "gateway.before_publish", crash_points.ENV_ONCE: str(markers)}
    with running_exchange(tmp_path / "ex", supervised_toml(), env=env) as ex:
        maker, taker = ex.client(MAKER), ex.client(TAKER)
        maker.new_order(**limit(1, "Sell", qty=10, price=PRICE, account=1))
        flow(maker, lambda e: e.name == "OrderAccepted")
        taker.new_order(**limit(100, "Buy", qty=1, price=PRICE, account=2, timeInForce="IOC"))
        flow(taker, lambda e: e.name == "Trade")
        first = taker.next_out
        ioc = limit(101, "Buy", qty=1, price=PRICE, account=2, timeInForce="IOC")
        foreign = limit(102, "Buy", qty=1, price=PRICE, account=1, timeInForce="IOC")  # not the taker's account
        batch = b"".join(header(len(x)) + x for x, _ in (taker.order_message("NewOrder", dict(ioc)),
                                                         taker.order_message("NewOrder", dict(foreign))))
        pid = gateway_pid(ex)
        started = time.time()
        taker._sock.sendall(batch)  # one read: the order staged, the refusal answered, then the kill
        wait_restarted(ex, pid, started)
        assert (markers / "gateway.before_publish").exists(), "the crash point was not reached"
        taker.close_socket()
        taker.open()
        taker.establish(next_seq=first)
        assert taker.last_applied == first - 1  # neither counted
        taker.new_order(**ioc)
        taker.new_order(**foreign)
        got = flow(taker, lambda e: e.name == "Trade" and e["takerClOrdId"] == 101, timeout=20)
        got += taker.drain(0.5)  # (the refusal's answer may also come again from the flow kept before the kill)
        assert [e["takerClOrdId"] for e in got if e.name == "Trade"] == [101]  # applied once
        assert {e["clOrdId"] for e in got if e.name == "OrderRejected"} == {102}
        assert taker.not_applied == []
        maker.terminate()
        taker.terminate()


def test_the_gateway_ends_its_sessions_cleanly_when_the_launcher_is_killed(tmp_path):
    """SIGKILL of ``ringex run`` itself: its children follow it (parent-death signal), and the
    gateway says so to its clients (Terminate GatewayShutdown) rather than vanishing; the next
    ``ringex run`` on the same directory starts, reclaiming what the dead one left."""
    prefix = unique_prefix()
    toml = gateway_toml(prefix, sessions=session_toml(MAKER, "[1]", cod=False))
    first = start_exchange(tmp_path, toml)
    c = first.client(MAKER)
    first.proc.kill()
    first.proc.wait(timeout=10)
    with pytest.raises(SessionTerminated) as err:
        while True:
            c.receive(timeout=10)
    assert err.value.code == m.TerminationCode.GatewayShutdown
    c.close_socket()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in first.pids.values()):
        assert time.monotonic() < deadline, "children outlived the launcher"
        time.sleep(0.05)
    with running_exchange(tmp_path, toml) as second:  # and it stops cleanly, leaving nothing
        again = second.client(MAKER)
        again.new_order(**limit(1, "Sell", qty=1, price=PRICE + 50, account=1))
        assert flow(again, lambda e: e.name == "OrderAccepted")[-1]["clOrdId"] == 1
        again.terminate()


def test_orders_in_flight_when_the_whole_exchange_is_killed_are_answered_after_the_restart(tmp_path):
    """Every process killed at once (the launcher and its children: SIGKILL all, as the OOM
    killer or ``kill -9`` of the group would) while orders sit in the gateway's inbound ring,
    published and counted as received but not yet sequenced (the core process stopped). The
    next ``ringex run`` on the directory resumes the rings the dead run left (they are this
    directory's: tools/ring_record.py), so each of those orders is answered: none is lost with
    the client's numbers counted and nothing to say so (as when the rings were re-created)."""
    toml = gateway_toml(unique_prefix(), sessions=session_toml(MAKER, "[1]", cod=False))
    first = start_exchange(tmp_path, toml)
    c = first.client(MAKER, keepalive_ms=10_000)

    def send() -> None:
        for cl in range(1, 6):
            c.new_order(**limit(cl, "Sell", qty=1, price=PRICE + 50 + cl, account=1))

    kill_with_orders_in_flight(first, send, 5)
    c.close_socket()
    with running_exchange(tmp_path, toml) as second:
        assert "resumed the rings a crashed run left" in second.read_output()
        c.host, c.port = second.host, second.port
        c.reconnect()
        answered: dict[int, str] = {}
        deadline = time.monotonic() + 30
        while len(answered) < 5 and time.monotonic() < deadline:
            for e in c.drain(quiet=0.2):
                if e.name in ("OrderAccepted", "OrderRejected"):
                    answered.setdefault(e["clOrdId"], e.name)
        assert sorted(answered) == [1, 2, 3, 4, 5], second.read_output()[-3000:]
        assert c.not_applied == []
        c.terminate()


def kill_with_orders_in_flight(ex, send, orders: int) -> None:
    """Stop the core process (sequencer and engine), ``send`` orders, wait until the gateway
    has published and counted ``orders`` of them (its orders-in counter), then SIGKILL every
    process: the orders are in the inbound ring, never sequenced."""
    from ringex.ringbuffer.counters import CountersReader

    os.kill(ex.pids["core"], signal.SIGSTOP)
    send()
    deadline = time.monotonic() + 30
    while True:
        with CountersReader(f"ringex-counters-{ex.prefix}-gateways") as r:
            if r.value("gateway bin: orders in") >= orders:
                break
        assert time.monotonic() < deadline, "the gateway did not take the orders"
        time.sleep(0.05)
    _kill_everything(ex)


def _kill_everything(ex) -> None:
    ex.proc.kill()
    ex.proc.wait(timeout=10)
    for pid in ex.pids.values():
        signal_if_alive(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in ex.pids.values()):
        assert time.monotonic() < deadline, "children outlived SIGKILL"
        time.sleep(0.05)


def test_rings_a_crashed_run_of_another_directory_left_are_created_afresh(tmp_path):
    """Resuming is for a directory's own rings: another data directory started on the same
    shared-memory prefix after the whole exchange was killed re-creates them (their contents
    belong to another journal)."""
    toml = gateway_toml(unique_prefix(), sessions=session_toml(MAKER, "[1]", cod=False))
    _kill_everything(start_exchange(tmp_path / "one", toml))
    with running_exchange(tmp_path / "two", toml) as other:
        out = other.read_output()
        assert "reclaimed stale rings left by a crashed run" in out and "resumed the rings" not in out
        c = other.client(MAKER)
        c.new_order(**limit(1, "Sell", qty=1, price=PRICE + 50, account=1))
        assert flow(c, lambda e: e.name == "OrderAccepted")[-1]["clOrdId"] == 1
        c.terminate()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie whose parent is gone is reaped by init soon; count it as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_gateway_cancels_the_orders_of_the_sessions_it_had_connected(tmp_path):
    """Its clients lost their connections when it died: a session with cancel-on-disconnect
    has its orders canceled when the gateway starts again (the MassCancel's answers wait in
    its flow); one without keeps them."""
    toml = supervised_toml().replace(f"[[gateway.session]]\nid = {MAKER}\ncredentials = \"pw{MAKER}\"\n"
                                     "accounts = [1]\nmax_msgs_per_s = 0\nburst = 0\ncancel_on_disconnect = false",
                                     f"[[gateway.session]]\nid = {MAKER}\ncredentials = \"pw{MAKER}\"\n"
                                     "accounts = [1]\nmax_msgs_per_s = 0\nburst = 0\ncancel_on_disconnect = true")
    assert "cancel_on_disconnect = true" in toml
    with running_exchange(tmp_path, toml) as ex:
        maker, taker = ex.client(MAKER), ex.client(TAKER)
        maker.new_order(**limit(1, "Sell", qty=5, price=PRICE + 10, account=1))
        taker.new_order(**limit(2, "Buy", qty=5, price=PRICE - 10, account=2))
        flow(maker, lambda e: e.name == "OrderAccepted")
        kept = flow(taker, lambda e: e.name == "OrderAccepted")[-1]["orderId"]
        pid = gateway_pid(ex)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        wait_restarted(ex, pid, killed_at)
        reconnect(maker)
        reconnect(taker)
        done = flow(maker, lambda e: e.name == "MassCancelDone")
        assert [e["clOrdId"] for e in done if e.name == "OrderCanceled"] == [1]
        assert done[-1]["canceledCount"] == 1
        taker.cancel(clOrdId=3, orderId=kept, account=2, instrument=1)
        assert flow(taker, lambda e: e.name in ("OrderCanceled", "CancelRejected"))[-1].name == "OrderCanceled"
        assert "cancel-on-disconnect" in ex.read_output()
        maker.terminate()
        taker.terminate()


def test_an_untethered_gateway_makes_the_events_it_missed_again_from_the_journal(ex):
    """Stopped while more than half the output ring of its sessions' events go by: the
    supervisor untethers it (the engine must not wait) and restarts it at the ring's head; it
    makes the events it missed again from the journal (engine/storage/output_replay.py), so
    both sessions' flows hold every answer, once, in order; the engine waiting on the full
    ring meanwhile is not taken for dead (the exchange keeps accepting)."""
    maker, taker = ex.client(MAKER), ex.client(TAKER)
    n = 1500  # about 4 events each: well past half of the 4096-slot output ring
    maker.new_order(**limit(1, "Sell", qty=n, price=PRICE, account=1))
    rest = flow(maker, lambda e: e.name == "OrderAccepted")
    pid = gateway_pid(ex)
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        offer_load(ex.prefix, _taker_iocs(n))
        wait_restarted(ex, pid, stopped_at)
    finally:
        signal_if_alive(pid, signal.SIGCONT)
    out = ex.read_output()
    assert "untethered subscriber" in out and "made again the" in out, out[-4000:]
    assert "failing safe" not in out  # the engine waited on the ring: blocked, not dead
    reconnect(maker)
    reconnect(taker)
    final = {"Trade", "OrderCanceled", "OrderRejected"}  # an IOC's last answer
    answered: dict[int, str] = {}
    got = []
    deadline = time.monotonic() + 30
    while len(answered) < n:
        assert time.monotonic() < deadline, (len(answered), ex.read_output()[-3000:])
        e = taker.receive(timeout=max(0.1, deadline - time.monotonic()))
        got.append(e)
        if e.name in final:
            cl = e["takerClOrdId"] if e.name == "Trade" else e["clOrdId"]
            assert cl not in answered, f"order {cl} answered twice"
            answered[cl] = e.name
    assert consecutive(got, 1)
    assert sorted(answered) == [5000 + i for i in range(n)]
    trades = sorted(cl for cl, how in answered.items() if how == "Trade")
    assert len(trades) == n  # nothing refused
    mk = flow(maker, lambda e: e.name == "Trade" and e["takerClOrdId"] == trades[-1], timeout=30)
    assert consecutive(rest + mk, rest[0].seq)
    assert [e["takerClOrdId"] for e in mk if e.name == "Trade"] == trades
    assert taker.drain(0.3) == [] and maker.drain(0.3) == []
    maker.terminate()
    taker.terminate()
