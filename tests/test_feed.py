"""The market-data feed end to end: ``ringex run`` with an ITCH/MoldUDP64 publisher, real
subscribers over UDP, orders through the binary gateway.

One exchange for the module. Its publisher sends to a relay (``feed_kit.Relay``) that copies
each packet to three subscribers: one present from the start that joins at sequence number 1
and hears everything, one present from the start that loses and reorders packets on purpose
and recovers them by retransmission, and one that joins late by snapshot. In the middle of the
run the publisher's process is SIGKILLed and restarted by the supervisor. At the end each
subscriber's order-level book must be the engine's book (rebuilt from the journal), order by
order, and the feed's store must be exactly what a fresh translator makes of the journal's
events: the feed is a deterministic function of the sequenced input.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from feed_kit import Relay, engine_book, engine_replay, feed_book_rows, store_messages
from gateway_kit import PRICE, gateway_toml, limit, running_exchange, session_toml
from ringex.feeds import itch
from ringex.feeds import moldudp64 as mold
from ringex.feeds import soupbintcp as soup
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.itch_instrument import itch_instruments
from itch_model import Translator as ModelTranslator
from ringex.feeds.itch_translate import engine_order_id
from ringex.feeds.md_publisher import ADDRESS_FILE
from ringex.feeds.subscriber import FeedSubscriber
from ringex.tools.config import parse_config

FEED = "md"
SEED = 20261207


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def feed_toml(prefix: str, relay_port: int, rtx_port: int, snap_port: int,
              destination: str = "") -> str:
    processes = """
[[process]]
name = "core"
agents = ["sequencer", "engine"]
[[process]]
name = "gw"
agents = ["bin"]
[[process]]
name = "mdproc"
agents = ["md"]
"""
    feed = f"""
[[feed]]
name = "{FEED}"
destination = "{destination or f'127.0.0.1:{relay_port}'}"
retransmit_listen = "127.0.0.1:{rtx_port}"
snapshot_listen = "127.0.0.1:{snap_port}"
username = "demo"
password = "secret"
heartbeat_ms = 100
retain_messages = 1000
max_payload = 400
"""
    return gateway_toml(prefix, sessions=session_toml(1, "[1]") + session_toml(2, "[2]"),
                        processes=processes) + feed


class Flow:
    """A seeded random order flow of two sessions: resting limits (some icebergs), aggressive
    IOC and market orders, cancels, replaces that keep or lose priority, mass cancels. (The
    tests make its clients with a 10 s keepalive: one that waits on subscribers for a while
    must not have the gateway end their sessions meanwhile.)"""

    def __init__(self, clients: dict[int, object], seed: int, between=lambda: None) -> None:
        self.clients = clients
        self.between = between  # called every 25 orders: the subscribers keep up as they would
        self.r = random.Random(seed)
        self.next_cl = {sid: 1 for sid in clients}
        self.live: dict[int, list[int]] = {sid: [] for sid in clients}

    def _learn(self) -> None:
        for sid, c in self.clients.items():
            for e in c.drain(quiet=0.001):
                if e.name == "OrderAccepted":
                    self.live[sid].append(e["orderId"])

    def step(self, n: int) -> None:
        for i in range(n):
            if i % 25 == 0:
                self._learn()
                self.between()
            sid = self.r.choice(sorted(self.clients))
            c = self.clients[sid]
            cl = self.next_cl[sid]
            self.next_cl[sid] += 1
            acct = sid
            side = self.r.choice(("Buy", "Sell"))
            x = self.r.random()
            off = self.r.randint(1, 8)
            passive = PRICE - off if side == "Buy" else PRICE + off
            if x < 0.45:
                qty = self.r.randint(1, 12)
                kw = {}
                if self.r.random() < 0.25 and qty > 3:
                    kw["displayQty"] = self.r.randint(1, 3)
                c.new_order(**limit(cl, side, qty=qty, price=passive, account=acct, **kw))
            elif x < 0.62:
                through = PRICE + off if side == "Buy" else PRICE - off
                c.new_order(**limit(cl, side, qty=self.r.randint(1, 15), price=through, account=acct,
                                    timeInForce="IOC"))
            elif x < 0.65:
                c.new_order(clOrdId=cl, account=acct, instrument=1, side=side, ordType="Market",
                            qty=self.r.randint(1, 5), timeInForce="IOC")
            elif x < 0.82 and self.live[sid]:
                oid = self.r.choice(self.live[sid])
                c.cancel(clOrdId=cl, orderId=oid, account=acct, instrument=1)
            elif x < 0.99 and self.live[sid]:
                oid = self.r.choice(self.live[sid])
                c.replace(clOrdId=cl, orderId=oid, account=acct, instrument=1, price=passive,
                          qty=self.r.randint(1, 12))
            elif x >= 0.99:
                c.mass_cancel(clOrdId=cl, account=acct, instrument=0, scope="Session")
        self._learn()

    def mark(self) -> list[int]:
        """One resting order per session, far from the market, acknowledged: once a subscriber
        shows them, it has seen everything the flow caused (the engine answers in order)."""
        ids = []
        for sid, c in sorted(self.clients.items()):
            cl = self.next_cl[sid]
            self.next_cl[sid] += 1
            c.new_order(**limit(cl, "Buy", qty=1, price=PRICE - 500, account=sid))
            acks = c.receive_until(lambda e, cl=cl: e.name in ("OrderAccepted", "OrderRejected") and e["clOrdId"] == cl,
                                   timeout=30)
            assert acks[-1].name == "OrderAccepted", acks[-1]
            ids.append(acks[-1]["orderId"])
        return ids


@contextmanager
def feed_setup(directory: Path, rings: str = "", env: dict[str, str] | None = None):
    """A relay, three subscribers (early, lossy, late: not yet joined) and a running exchange
    publishing to the relay (``env``: added to its environment, e.g. a crash point)."""
    relay = Relay(seed=SEED)
    rtx, snap = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    subs: dict[str, FeedSubscriber] = {}
    try:
        subs["early"] = FeedSubscriber(("127.0.0.1", 0), ("127.0.0.1", rtx))
        subs["lossy"] = FeedSubscriber(("127.0.0.1", 0), ("127.0.0.1", rtx), ("127.0.0.1", snap), "demo", "secret")
        subs["late"] = FeedSubscriber(("127.0.0.1", 0), ("127.0.0.1", rtx), ("127.0.0.1", snap), "demo", "secret")
        relay.add(subs["early"].address)
        relay.add(subs["lossy"].address, drop=0.08, reorder=0.08)
        relay.add(subs["late"].address)
        prefix = f"rxfeed{os.getpid()}{directory.name[-6:]}"
        # the sessions' orders outlive their clients: what the tests compare does not move
        toml = feed_toml(prefix, relay.port, rtx, snap).replace("cancel_on_disconnect = true",
                                                                 "cancel_on_disconnect = false")
        toml = toml.replace("[supervisor]", rings + "[supervisor]")
        with running_exchange(directory, toml, env=env) as ex:
            ex.feed_ports = (rtx, snap)
            ex.config = parse_config(toml)
            yield ex, relay, subs
    finally:
        for s in subs.values():
            s.close()
        relay.close()


@pytest.fixture(scope="module")
def feed_exchange(tmp_path_factory):
    """One exchange for the tests that leave its processes as they are; it has published a
    few thousand messages (more than its store retains) when they start."""
    with feed_setup(tmp_path_factory.mktemp("feed")) as (ex, relay, subs):
        subs["early"].join()
        clients = {sid: ex.client(sid, keepalive_ms=10_000) for sid in (1, 2)}
        flow = Flow(clients, SEED + 1, between=lambda: subs["early"].poll(0))
        flow.step(1500)
        _settle({"early": subs["early"]}, flow.mark())
        yield ex, relay, subs


def _wait_restarted(ex, after: float, timeout: float = 120.0, tick=lambda: None) -> None:
    """Until the publisher writes its address file again (``tick``: keeps clients alive)."""
    path = ex.directory / "data" / "feeds" / FEED / ADDRESS_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.stat().st_mtime > after:
                return
        except FileNotFoundError:
            pass
        tick()
        time.sleep(0.05)
    raise TimeoutError("the publisher was not restarted:\n" + exchange_log(ex))


def exchange_log(ex) -> str:
    """The exchange's output without its status lines (for a failure's message)."""
    return "".join(line for line in ex.output if not line.startswith("seq "))[-4000:]


def _settle(subs: dict[str, FeedSubscriber], marks: list[int], timeout: float = 60.0) -> None:
    """Until every subscriber shows the ``marks`` (``Flow.mark``) and has every message the
    publisher has announced (heartbeats say the next number)."""
    deadline = time.monotonic() + timeout
    now = None
    while time.monotonic() < deadline:
        for s in subs.values():
            s.poll(0.01)
        now = [(s.next_seq, s.receiver.known_end) for s in subs.values()]
        shown = all({engine_order_id(ref) for ref in s.book.orders} >= set(marks) for s in subs.values())
        if shown and all(n == k for n, k in now) and len({n for n, _ in now}) == 1:
            return
    raise TimeoutError(f"the subscribers did not settle: {now}")


def test_every_subscriber_book_is_the_engine_book(tmp_path):
    """The whole story (its own exchange: the publisher's restarted process must be gone
    when the test ends)."""
    with feed_setup(tmp_path) as (ex, relay, subs):
        _every_subscriber_book_is_the_engine_book(ex, relay, subs)


def _every_subscriber_book_is_the_engine_book(ex, relay, subs) -> None:
    subs["early"].join()
    subs["lossy"].join()
    clients = {sid: ex.client(sid, keepalive_ms=10_000) for sid in (1, 2)}
    flow = Flow(clients, SEED, between=lambda: [s.poll(0) for s in subs.values() if s.receiver is not None])
    flow.step(600)
    for s in ("early", "lossy"):
        subs[s].run_until(lambda s=s: subs[s].next_seq > 300, 30)
    subs["late"].join()  # by snapshot, mid-run
    assert subs["late"].snapshots == 1
    flow.step(400)
    # the publisher dies mid-flow; the supervisor restarts it and it resumes its session
    killed_at = time.time()
    os.kill(ex.pids["mdproc"], signal.SIGKILL)
    flow.step(300)
    _wait_restarted(ex, killed_at)
    flow.step(700)
    _settle(subs, flow.mark())

    instruments, outputs = _books_are_the_engines(ex, subs, at_least=20)
    # the lossy one lost packets and got every message back by retransmission alone
    assert relay.targets[1].dropped > 0 and subs["lossy"].requests > 0 and subs["lossy"].snapshots == 1
    assert subs["early"].executions > 50

    # the feed is a function of the journal: the reference model (tests/itch_model.py, one
    # event at a time in Python) makes the same bytes of the same events
    first, stored = store_messages(ex.directory / "data" / "feeds" / FEED)
    assert first > 1 and len(stored) >= 1000 - 256  # retention dropped the oldest segments
    _store_is_the_journal_translated(ex, instruments, outputs)
    assert subs["early"].session == subs["late"].session  # the crash did not end the session


def _books_are_the_engines(ex, subs: dict[str, FeedSubscriber], at_least: int) -> tuple[list, list]:
    """Each subscriber's book is the engine's (rebuilt from the journal), order by order, and
    holds more than ``at_least`` orders (a real book, not an empty one); the instruments and
    the journal's output events, for more checks."""
    engine, outputs = engine_replay(ex.directory / "data")
    instruments = itch_instruments(ex.config.instrument)
    expected = engine_book(engine, instruments)
    assert len(expected) > at_least
    for name, s in subs.items():
        assert feed_book_rows(s.book) == expected, name
    return instruments, outputs


def _store_is_the_journal_translated(ex, instruments, outputs) -> None:
    """The feed's store holds exactly what a fresh translator makes of the journal's events
    (``tests/itch_model.py``), from its oldest retained message on: nothing lost or repeated."""
    fresh: list[bytes] = []
    t = ModelTranslator(instruments, FeedBook())
    for out in outputs:
        t.translate(out, fresh)
    first, stored = store_messages(ex.directory / "data" / "feeds" / FEED)
    assert len(fresh) == first - 1 + len(stored)
    for i, msg in enumerate(stored):
        assert msg == fresh[first - 1 + i], f"message {first + i}: {itch.decode(msg)} != {itch.decode(fresh[first - 1 + i])}"


@pytest.mark.parametrize("point", ["feed.after_store", "feed.after_send"])
def test_a_publisher_killed_at_its_crash_points_loses_and_repeats_nothing(tmp_path, point):
    """SIGKILLed right after storing a batch (not sent) or right after sending it (cursor not
    committed): the restarted publisher resumes its session, the subscribers recover what was
    stored and never sent by retransmission, and nothing is published twice."""
    from ringex import crash_points

    once = tmp_path / "once"
    once.mkdir()
    env = {crash_points.ENV_AT: f"{point}@30", crash_points.ENV_ONCE: str(once)}
    with feed_setup(tmp_path / "ex", env=env) as (ex, relay, subs):
        subs["early"].join()
        subs["lossy"].join()
        clients = {sid: ex.client(sid, keepalive_ms=10_000) for sid in (1, 2)}
        listening = {k: subs[k] for k in ("early", "lossy")}
        flow = Flow(clients, SEED + 7, between=lambda: [s.poll(0) for s in listening.values()])
        flow.step(500)
        fired = once / point
        deadline = time.monotonic() + 60
        while not fired.exists() and time.monotonic() < deadline:
            flow.step(25)
        assert fired.exists(), "the crash point never fired:\n" + exchange_log(ex)
        _wait_restarted(ex, fired.stat().st_mtime, tick=lambda: [s.poll(0) for s in listening.values()])
        flow.step(300)
        _settle(listening, flow.mark())
        instruments, outputs = _books_are_the_engines(ex, listening, at_least=2)
        assert subs["early"].session == subs["lossy"].session
        _store_is_the_journal_translated(ex, instruments, outputs)


def test_a_request_beyond_retention_is_answered(feed_exchange):
    ex, relay, subs = feed_exchange
    rtx, _ = ex.feed_ports
    session = subs["early"].session
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(mold.encode_request(session, 1, 10), ("127.0.0.1", rtx))
        try:
            p = mold.parse_packet(s.recv(65536))
        except TimeoutError:
            raise AssertionError("no answer:\n" + exchange_log(ex)) from None
    assert p.is_heartbeat and p.sequence_number > 1  # the oldest still retained
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(mold.encode_request(session, p.sequence_number, 3), ("127.0.0.1", rtx))
        q = mold.parse_packet(s.recv(65536))
    assert q.sequence_number == p.sequence_number and q.message_count == 3
    for msg in q.messages:
        itch.decode(msg)


def test_malformed_requests_and_bad_logins_get_their_answers(feed_exchange):
    ex, relay, subs = feed_exchange
    rtx, snap = ex.feed_ports
    session = subs["early"].session
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for junk in (b"", b"x" * 19, b"x" * 21, session + b"\0" * 10):  # the last asks for 0 messages
            s.sendto(junk, ("127.0.0.1", rtx))
        with pytest.raises(TimeoutError):
            s.recv(65536)  # no answer: MoldUDP64 cannot say what was wrong
        s.settimeout(5)
        s.sendto(mold.encode_request(b"OTHERSESS1", 1, 1), ("127.0.0.1", rtx))
        p = mold.parse_packet(s.recv(65536))
        assert p.session == session and p.is_heartbeat  # our session, and where it stands

    def login(request: bytes) -> list[soup.SoupPacket]:
        with socket.create_connection(("127.0.0.1", snap), timeout=5) as c:
            c.sendall(request)
            reader = soup.SoupReader(0xFFFF)
            got: list[soup.SoupPacket] = []
            while True:
                data = c.recv(65536)
                if not data:
                    return got
                got += reader.feed(data)

    assert login(soup.login_request("demo", "wrong", "", 1)) == [soup.SoupPacket(b"J", b"A")]
    assert login(soup.login_request("demo", "secret", "NOSUCHSESS", 1)) == [soup.SoupPacket(b"J", b"S")]
    assert login(b"\x00\x05garbage") == []  # a malformed packet: the connection is closed
    assert login(b"\xff\xffL") == []  # a length past the bound
    # the publisher kept going: a subscriber still joins by snapshot and follows
    late = FeedSubscriber(("127.0.0.1", 0), ("127.0.0.1", rtx), ("127.0.0.1", snap), "demo", "secret")
    with late:
        nxt = late.join()
        assert nxt == subs["early"].next_seq
        assert feed_book_rows(late.book) == feed_book_rows(subs["early"].book)


def test_ringex_feed_records_the_itch_file(feed_exchange, tmp_path):
    """``ringex feed --write``: joins by snapshot and records every message it applies in the
    ITCH file framing (2-byte big-endian length, message), readable without our code."""
    ex, relay, subs = feed_exchange
    port = free_port(socket.SOCK_DGRAM)
    relay.add(("127.0.0.1", port))
    out = tmp_path / "feed.itch"
    proc = subprocess.run(
        [sys.executable, "-m", "ringex.tools.cli", "feed", "--config", str(ex.directory / "ex.toml"), "--feed", FEED,
         "--listen", f"127.0.0.1:{port}", "--duration", "1.5", "--write", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"joined feed {FEED} at sequence number {subs['early'].next_seq}" in proc.stdout
    data = out.read_bytes()
    book, at, kinds = FeedBook(), 0, set()
    while at < len(data):
        n = int.from_bytes(data[at:at + 2], "big")
        msg = itch.decode(data[at + 2:at + 2 + n])
        kinds.add(type(msg).__name__)
        book.apply(msg)
        at += 2 + n
    assert at == len(data) and {"StockDirectory", "StockTradingAction", "AddOrder"} <= kinds, \
        (kinds, proc.stdout, exchange_log(ex))
    subs["early"].poll(0.2)
    assert len(book) > 20 and feed_book_rows(book) == feed_book_rows(subs["early"].book)


def test_a_clean_restart_opens_a_new_session_that_carries_the_book(tmp_path):
    rtx, snap = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    follower = FeedSubscriber(("127.0.0.1", 0), ("127.0.0.1", rtx), ("127.0.0.1", snap), "demo", "secret")
    # without a snapshot service: it follows the next session from its first message, whose
    # opening carries the book
    plain = FeedSubscriber(("127.0.0.1", 0), ("127.0.0.1", rtx))
    relay = Relay(seed=SEED)
    relay.add(follower.address)
    relay.add(plain.address)
    toml = feed_toml(f"rxfeedr{os.getpid()}", relay.port, rtx, snap).replace(
        "cancel_on_disconnect = true", "cancel_on_disconnect = false")
    try:
        with running_exchange(tmp_path, toml) as ex:
            follower.join()
            plain.join()
            flow = Flow({sid: ex.client(sid, keepalive_ms=10_000) for sid in (1, 2)}, SEED + 2, between=lambda: follower.poll(0))
            flow.step(300)
            _settle({"follower": follower, "plain": plain}, flow.mark())
            first_session, book_before = follower.session, feed_book_rows(follower.book)
        for s in (follower, plain):  # End of Session on the clean stop
            assert s.run_until(lambda s=s: s.ended, 10)
        assert len(book_before) > 5
        with running_exchange(tmp_path, toml) as ex:
            for s in (follower, plain):
                assert s.run_until(lambda s=s: s.session not in (None, first_session)
                                   and len(s.book) == len(book_before), 30), \
                    f"session {s.session}, next {s.next_seq}, {len(s.book)} of {len(book_before)} orders\n{exchange_log(ex)}"
            assert follower.snapshots == 2  # it heard the new session and joined it by snapshot
            assert plain.session == follower.session == first_session[:-1] + b"2"
            engine, _ = engine_replay(ex.directory / "data")
            expected = engine_book(engine, itch_instruments(ex.config.instrument)
                                   if hasattr(ex, "config") else itch_instruments(parse_config(toml).instrument))
            assert feed_book_rows(follower.book) == feed_book_rows(plain.book) == book_before == expected
    finally:
        follower.close()
        plain.close()
        relay.close()


def test_a_multicast_feed_reaches_every_member(tmp_path):
    """The publisher sends to a multicast group (TTL 0, the loopback interface): every
    subscriber that joined the group hears the same packets and builds the same book."""
    group, port = "239.255.77.1", free_port(socket.SOCK_DGRAM)
    rtx, snap = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    try:
        members = [FeedSubscriber((group, port), ("127.0.0.1", rtx), ("127.0.0.1", snap), "demo", "secret",
                                  interface="127.0.0.1") for _ in range(2)]
    except OSError as exc:
        pytest.skip(f"this host cannot join a multicast group on loopback: {exc}")
    toml = feed_toml(f"rxfeedm{os.getpid()}", 0, rtx, snap, destination=f"{group}:{port}").replace(
        'username = "demo"', 'username = "demo"\nttl = 0\ninterface = "127.0.0.1"')
    try:
        with running_exchange(tmp_path, toml) as ex:
            for s in members:
                s.join()
            flow = Flow({sid: ex.client(sid, keepalive_ms=10_000) for sid in (1, 2)}, SEED + 3,
                        between=lambda: [s.poll(0) for s in members])
            flow.step(300)
            _settle({str(i): s for i, s in enumerate(members)}, flow.mark())
            rows = [feed_book_rows(s.book) for s in members]
            assert rows[0] == rows[1] and len(rows[0]) > 5
            assert all(s.requests == 0 for s in members)  # nothing lost on loopback: all heard live
    finally:
        for s in members:
            s.close()


def test_a_hung_publisher_is_killed_restarted_and_resumes(tmp_path):
    """SIGSTOP the publisher's process: the supervisor sees its heartbeat stop, kills it and
    starts it again; it resumes its session where its store ends, and the subscribers' books
    are the engine's (the engine never waited for it)."""
    with feed_setup(tmp_path) as (ex, relay, subs):
        early = subs["early"]
        early.join()
        flow = Flow({sid: ex.client(sid, keepalive_ms=10_000) for sid in (1, 2)}, SEED + 4, between=lambda: early.poll(0))
        flow.step(200)
        stopped_at = time.time()
        os.kill(ex.pids["mdproc"], signal.SIGSTOP)
        try:
            flow.step(300)  # the exchange goes on trading meanwhile
            _wait_restarted(ex, stopped_at, tick=flow._learn)  # (reading keeps the clients' sessions alive)
        finally:
            try:
                os.kill(ex.pids["mdproc"], signal.SIGCONT)  # (killed by then: nothing to continue)
            except ProcessLookupError:
                pass
        flow.step(200)
        _settle({"early": early}, flow.mark())
        engine, _ = engine_replay(ex.directory / "data")
        assert feed_book_rows(early.book) == engine_book(engine, itch_instruments(ex.config.instrument))
        assert "stopped consuming; killing it to restart it" in exchange_log(ex)


def test_a_publisher_that_missed_events_makes_them_again_from_the_journal(tmp_path):
    """Its subscriber index falls half a ring behind while it is stopped: the supervisor
    untethers it (the engine must not wait) and restarts it; it rejoins at the head, makes the
    events it missed again from the journal (engine/storage/output_replay.py) and publishes
    them in the same session: the subscribers see no break, and end with the engine's book."""
    with feed_setup(tmp_path, rings="[rings]\noutput_capacity = 1024\n") as (ex, relay, subs):
        early, lossy = subs["early"], subs["lossy"]
        early.join()
        lossy.join()
        flow = Flow({sid: ex.client(sid, keepalive_ms=10_000) for sid in (1, 2)}, SEED + 5,
                    between=lambda: [s.poll(0) for s in (early, lossy)])
        flow.step(150)
        first = early.session
        stopped_at = time.time()
        os.kill(ex.pids["mdproc"], signal.SIGSTOP)
        try:
            flow.step(600)  # well over half the ring's events, within the heartbeat timeout
            _wait_restarted(ex, stopped_at, tick=flow._learn)
        finally:
            try:
                os.kill(ex.pids["mdproc"], signal.SIGCONT)
            except ProcessLookupError:
                pass
        flow.step(200)
        _settle({"early": early, "lossy": lossy}, flow.mark())
        log = exchange_log(ex)
        assert "untethered subscriber" in log and "made again the" in log, log
        assert early.session == lossy.session == first and early.snapshots == 0 and lossy.snapshots == 1
        engine, _ = engine_replay(ex.directory / "data")
        expected = engine_book(engine, itch_instruments(ex.config.instrument))
        assert feed_book_rows(early.book) == feed_book_rows(lossy.book) == expected


def test_a_publisher_without_its_store_takes_the_book_from_the_engine(tmp_path):
    rtx, snap = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    toml = feed_toml(f"rxfeedl{os.getpid()}", free_port(socket.SOCK_DGRAM), rtx, snap).replace(
        "cancel_on_disconnect = true", "cancel_on_disconnect = false")
    with running_exchange(tmp_path, toml) as ex:
        flow = Flow({sid: ex.client(sid, keepalive_ms=10_000) for sid in (1, 2)}, SEED + 6)
        flow.step(300)
        flow.mark()
    shutil.rmtree(tmp_path / "data" / "feeds" / FEED)  # lost: the engine's book is not empty
    with running_exchange(tmp_path, toml) as ex:
        late = FeedSubscriber(("127.0.0.1", 0), ("127.0.0.1", rtx), ("127.0.0.1", snap), "demo", "secret")
        with late:
            late.join()
            engine, _ = engine_replay(ex.directory / "data")
            expected = engine_book(engine, itch_instruments(parse_config(toml).instrument))
            assert len(expected) > 5 and feed_book_rows(late.book) == expected
        assert "has no store, and the engine has a history" in exchange_log(ex)
