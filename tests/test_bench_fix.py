"""``ringex bench fix`` (tools/bench_fix.py): the FIX open-loop generator (tools/fix_load.py)
against one running exchange (tests/gateway_kit.py's FIX gateway), and the pure parts of the
bench."""

from __future__ import annotations

import os
import time

import pytest

from ringex.gateways.fix_codec import FixMessage, FixReader, encode
from ringex.tools import bench_fix as B
from ringex.tools import fix_load as L

from gateway_kit import PRICE, fix_toml, running_exchange
from pipeline_kit import unique_prefix

SESSIONS = "C21:pw21:1,C22:pw22:2,C23:pw23:3"


def test_the_hand_made_frame_is_the_codecs() -> None:
    body = [(11, b"a-1"), (1, b"1"), (55, b"DEMO"), (54, b"1"), (38, b"1"), (40, b"2"), (44, b"1000"), (59, b"1")]
    ts = b"20260101-00:00:00.000"
    mine = L._frame(b"C21", 7, ts, b"D", b"".join(b"%d=%s\x01" % f for f in body))
    assert mine == encode(b"D", b"C21", b"RINGEX", 7, ts, body)
    (msg,) = FixReader().feed(mine)
    assert isinstance(msg, FixMessage) and msg.get(11) == b"a-1"


def test_the_flow_has_the_engine_benchmarks_mix() -> None:
    kinds, prices, buys, mids = L.make_flow(30_000, 3, 50_000, seed=1)
    share = [kinds.count(k) / len(kinds) for k in (L.PASSIVE, L.CANCEL, L.IOC)]
    assert 0.4 < share[0] < 0.65 and 0.25 < share[1] < 0.5 and 0.08 < share[2] < 0.12
    assert all(abs(m - 50_000) <= 1000 for m in mids)
    for k, p, b, m in zip(kinds, prices, buys, mids):
        if k == L.PASSIVE:
            assert (p < m) if b else (p > m)  # never crosses its own mid


def test_the_result_builder_has_the_issues_keys() -> None:
    run = {"completed": True, "unacked": 0, "rejected": {"UnknownOrder": 3}, "ack_p50_us": 100.0,
           "ack_p99_us": 900.0, "ack_p999_us": 1500.0, "achieved_rate": 5000.0, "run_s": 10.0,
           "generator_cpu_percent": 30.0}
    bad = dict(run, unacked=2)
    result = B.build_result({"cpus": 2, "model": "x", "loadavg_1m": 0.1}, 5000.0, 10.0, run,
                            {"core": 50.0, "generator": 30.0}, 10_000.0, 40_000.0,
                            {40_000.0: run, 80_000.0: bad}, 100.0)
    for key in ("orders_per_s", "ack_p50_us", "ack_p99_us", "ack_p999_us", "fixed_rate", "host", "cpu_percent"):
        assert key in result
    assert result["orders_per_s"] == 40_000.0 and result["ack_p99_us"] == 900.0
    assert [r["passed"] for r in result["search"]] == [True, False]
    assert not B.passed(dict(run, rejected={"OrderRejected:3:x": 1}))
    assert not B.passed(dict(run, ack_p99_us=20_000.0))
    import json

    json.dumps(result)


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        out.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def test_a_short_run_against_a_running_exchange_acknowledges_every_order(tmp_path) -> None:
    before = _children()
    with running_exchange(tmp_path / "ex", fix_toml(unique_prefix())) as ex:
        t = time.monotonic()
        r = L.run_fix_load(ex.host, ex.port, SESSIONS, symbol="DEMO", price=PRICE, rate=500.0, duration=1.5,
                           drain_s=5.0)
        assert time.monotonic() - t < 20
        assert r["completed"] and r["orders"] == 750 and r["sent"] == 750
        assert r["unacked"] == 0 and r["acked"] == 750, r
        assert set(r["rejected"]) <= B.BENIGN, r["rejected"]
        assert r["sequence_gaps"] == 0
        assert r["orders_passive"] + r["orders_cancel"] + r["orders_ioc"] == 750
        p50, p99, p999 = r["ack_p50_us"], r["ack_p99_us"], r["ack_p999_us"]
        assert p50 is not None and 0 < p50 <= p99 <= p999 <= r["ack_max_us"]
        assert B.passed(r, p99_limit_us=1e9)
        # the sessions logged out: a second run logs on again and is acknowledged too
        r2 = L.run_fix_load(ex.host, ex.port, SESSIONS, symbol="DEMO", price=PRICE, rate=500.0, duration=0.5,
                            seed=2)
        assert r2["unacked"] == 0, r2
        with pytest.raises(L.LoadError, match="C21"):  # a refused logon stops the run, naming the session
            L.run_fix_load(ex.host, ex.port, "C21:nope:1", symbol="DEMO", price=PRICE, rate=100.0, duration=0.2)
    assert _children() <= before  # the exchange is gone, nothing else left running



def test_reports_sent_right_after_the_logon_are_read_as_any_other(tmp_path) -> None:
    """A session that logs on again may be sent, in the same read as the Logon's answer,
    reports of its previous connection's orders (canceled on disconnect): the generator reads
    them as part of the flow (not this run's ClOrdIDs: ignored), neither a failed logon nor a
    sequence gap."""
    import socket
    import threading

    from ringex.gateways.fix_codec import utc_timestamp

    server = socket.create_server(("127.0.0.1", 0))
    ts = utc_timestamp(time.time_ns())
    report = encode(b"8", b"RINGEX", b"C21", 2, ts, [(37, b"9"), (11, b"old-7"), (17, b"1.1"), (150, b"4"),
                                                     (39, b"4"), (55, b"DEMO"), (54, b"1"), (151, b"0"),
                                                     (14, b"0"), (6, b"0")])

    def gateway() -> None:
        conn, _ = server.accept()
        with conn:
            FixReader().feed(conn.recv(4096))
            conn.sendall(encode(b"A", b"RINGEX", b"C21", 1, ts, [(98, 0), (108, 10), (141, b"Y")]) + report)
            time.sleep(0.5)

    t = threading.Thread(target=gateway)
    t.start()
    try:
        spec = L.parse_sessions("C21:pw21:1")[0]
        sock, next_in, after = L._logon("127.0.0.1", server.getsockname()[1], spec, 10, timeout=5.0)
        assert next_in == 2 and after == report
        gen = L.FixLoad([sock], [spec], [next_in], 100.0, 1.0, symbol="DEMO", price=PRICE, received=[after])
        assert gen._parse(gen.sessions[0], time.monotonic_ns()) == 1
        assert gen.sessions[0].next_in == 3 and gen.sessions[0].gaps == 0 and gen.acked == 0
        sock.close()
    finally:
        t.join(timeout=5)
        server.close()
