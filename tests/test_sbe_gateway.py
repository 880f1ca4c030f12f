"""The binary gateway over real TCP against a running exchange (``ringex run``): FIXP session
set-up and its refusals, order entry round trips, fills between sessions, the gateway's own
refusals, retransmission after a reconnect, idempotent client numbering, cancel-on-disconnect,
bad input and the slow-reader bound. One exchange serves the module; each test has sessions
of its own."""

from __future__ import annotations

import struct
import time
import uuid as uuidlib

import pytest

from ringex.engine.wire import messages as m
from ringex.gateways.client import Client, SessionRejected, SessionTerminated
from ringex.gateways.sofh import header

from gateway_kit import PRICE, gateway_toml, limit, running_exchange, session_toml
from pipeline_kit import unique_prefix

TC = m.TerminationCode
# sessions: (id, accounts, rate, cancel_on_disconnect)
SESSIONS = [
    (1, "[1]", 0, True), (2, "[2]", 0, True),  # round trips and fills
    (3, "[3]", 5, True),  # throttle: 5 a second, burst 5
    (4, "[1]", 0, False), (5, "[2]", 0, True),  # retransmission after reconnect
    (6, "[1]", 0, True), (7, "[2]", 0, True),  # cancel-on-disconnect
    (8, "[3]", 0, True),  # duplicates
    (9, "[4]", 0, True),  # bad input and the session that must not notice
    (10, "[4]", 0, True),  # slow reader
    (11, "[1, 2]", 0, True),  # refusals at logon
    (12, "[3]", 0, True),  # every order type
]


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    prefix = unique_prefix()
    toml = gateway_toml(prefix, sessions="".join(session_toml(s, a, rate=r, cod=c, burst=5 if r else 0)
                                                 for s, a, r, c in SESSIONS),
                        gateway_extra="max_backlog_bytes = 65536")
    with running_exchange(tmp_path_factory.mktemp("gw"), toml) as running:
        yield running


def names(events) -> list[str]:
    return [e.name for e in events]


def until_name(client: Client, name: str, timeout: float = 5.0):
    return client.receive_until(lambda e: e.name == name, timeout=timeout)


# ------------------------------------------------------------------ session set-up


def test_negotiate_refusals_name_their_reason(ex):
    with pytest.raises(SessionRejected) as err:
        Client.connect(ex.host, ex.port, 999, "pw999")
    assert err.value.code == m.NegotiationRejectCode.UnknownSession
    with pytest.raises(SessionRejected) as err:
        Client.connect(ex.host, ex.port, 11, "wrong")
    assert err.value.code == m.NegotiationRejectCode.Credentials
    c = ex.raw(11)
    c.send_raw(m.Negotiate.encode(uuidHi=1, uuidLo=uuidlib.uuid4().int & (2**64 - 1), sessionId=11,
                                  clientFlow=m.FlowType.Recoverable, credentials="pw11"))
    reply = c._session_reply()
    assert reply.name == "NegotiationReject" and reply["code"] == m.NegotiationRejectCode.FlowTypeNotSupported
    c.close_socket()
    # an identity is used once: negotiating the same UUID again is refused
    good = ex.client(11)
    used = good.uuid
    good.terminate()
    again = ex.raw(11)
    with pytest.raises(SessionRejected) as err:
        again.negotiate(used)
    assert err.value.code == m.NegotiationRejectCode.DuplicateId
    again.close_socket()


def test_establish_refusals_name_their_reason(ex):
    c = ex.raw(11)
    c.uuid = (7, 7)  # never negotiated
    with pytest.raises(SessionRejected) as err:
        c.establish()
    assert err.value.code == m.EstablishmentRejectCode.Unnegotiated
    c = ex.raw(11, keepalive_ms=10)  # below keepalive_min_ms (50)
    c.negotiate()
    with pytest.raises(SessionRejected) as err:
        c.establish()
    assert err.value.code == m.EstablishmentRejectCode.KeepaliveInterval
    c = ex.raw(11)
    c.negotiate()
    c.credentials = "wrong"
    with pytest.raises(SessionRejected) as err:
        c.establish()
    assert err.value.code == m.EstablishmentRejectCode.Credentials


# ------------------------------------------------------------------ order entry


def test_an_order_round_trip_and_a_fill_between_two_sessions(ex):
    buyer, seller = ex.client(1), ex.client(2)
    try:
        buyer.new_order(**limit(101, "Buy", qty=3, account=1))
        acc = until_name(buyer, "OrderAccepted")[-1]
        assert acc["clOrdId"] == 101 and acc["sessionId"] == 1 and acc["seq"] > 0
        seller.new_order(**limit(201, "Sell", qty=2, account=2))
        sold = until_name(seller, "Trade")[-1]
        bought = until_name(buyer, "Trade")[-1]
        assert sold.fields == bought.fields  # the one Trade, delivered to both sides
        assert bought["makerClOrdId"] == 101 and bought["takerClOrdId"] == 201 and bought["qty"] == 2
        assert bought["makerSessionId"] == 1 and bought["takerSessionId"] == 2
        buyer.cancel(clOrdId=102, origClOrdId=101, orderId=acc["orderId"], account=1, instrument=1)
        canceled = until_name(buyer, "OrderCanceled")[-1]
        assert canceled["canceledQty"] == 1
        # server numbers are consecutive from the first
        seqs = [e.seq for e in [acc]]
        assert seqs[0] >= 1
    finally:
        buyer.terminate()
        seller.terminate()


def test_every_order_type_round_trips(ex):
    c = ex.client(12)
    a = 3
    try:
        cases = [
            limit(1201, "Buy", price=PRICE - 50, account=a),
            limit(1202, "Sell", qty=10, price=PRICE + 50, account=a, displayQty=2),  # iceberg
            limit(1203, "Buy", price=PRICE - 40, account=a, postOnly="True"),
            limit(1204, "Buy", price=PRICE - 30, account=a, timeInForce="Day"),
            dict(clOrdId=1205, account=a, instrument=1, side="Buy", ordType="Stop", qty=1, stopPrice=PRICE + 200,
                 timeInForce="GTC"),
            dict(clOrdId=1206, account=a, instrument=1, side="Sell", ordType="StopLimit", qty=1, price=PRICE - 200,
                 stopPrice=PRICE - 150, timeInForce="GTC"),
        ]
        for order in cases:
            c.new_order(**order)
        accepted = [e for e in c.receive_until(lambda e: e.name == "OrderAccepted" and e["clOrdId"] == 1206)
                    if e.name == "OrderAccepted"]
        assert [e["clOrdId"] for e in accepted] == [1201, 1202, 1203, 1204, 1205, 1206]
        ids = {e["clOrdId"]: e["orderId"] for e in accepted}
        # IOC and FOK against an empty price: IOC's remainder canceled, FOK rejected
        c.new_order(**limit(1207, "Buy", price=PRICE - 60, account=a, timeInForce="IOC"))
        got = c.receive_until(lambda e: e.name == "OrderCanceled" and e["clOrdId"] == 1207)
        assert got[-1]["reason"] == m.CancelReason.IocRemainder
        c.new_order(**limit(1208, "Buy", price=PRICE - 60, account=a, timeInForce="FOK"))
        got = c.receive_until(lambda e: e.name == "OrderRejected" and e["clOrdId"] == 1208)
        assert got[-1]["reason"] == m.RejectReason.FokUnfillable
        # a market order against the iceberg
        c.new_order(clOrdId=1209, account=a, instrument=1, side="Buy", ordType="Market", qty=1, timeInForce="IOC")
        trade = c.receive_until(lambda e: e.name == "Trade" and e["takerClOrdId"] == 1209)[-1]
        assert trade["makerClOrdId"] == 1202
        c.replace(clOrdId=1210, origClOrdId=1201, orderId=ids[1201], account=a, instrument=1, price=PRICE - 45, qty=2)
        got = c.receive_until(lambda e: e.name in ("OrderReplaced", "CancelRejected") and e["clOrdId"] == 1210)
        assert got[-1].name == "OrderReplaced" and got[-1]["qty"] == 2
        c.mass_cancel(clOrdId=1211, account=a, instrument=1, scope="AccountInstrument")
        done = c.receive_until(lambda e: e.name == "MassCancelDone")[-1]
        assert done["clOrdId"] == 1211 and done["canceledCount"] >= 4
    finally:
        c.terminate()


def test_an_account_the_session_may_not_trade_is_refused_at_the_gateway(ex):
    c = ex.client(1)  # trades account 1 only
    try:
        c.new_order(**limit(301, "Buy", account=2))
        rej = until_name(c, "OrderRejected")[-1]
        assert rej["reason"] == m.RejectReason.AccountNotPermitted and rej["clOrdId"] == 301
        assert rej["seq"] == 0  # never sequenced
        c.mass_cancel(clOrdId=302, account=1, instrument=1, scope="Instrument")  # everybody's orders
        rej = until_name(c, "CancelRejected")[-1]
        assert rej["reason"] == m.RejectReason.AccountNotPermitted and rej["refTemplateId"] == m.MassCancel.template_id
        c.mass_cancel(clOrdId=303, account=0, instrument=0, scope="Session")  # its own: fine
        assert until_name(c, "MassCancelDone")[-1]["clOrdId"] == 303
    finally:
        c.terminate()


def test_the_throttle_refuses_what_exceeds_the_rate(ex):
    c = ex.client(3)  # 5 a second, burst 5
    try:
        for i in range(12):
            c.new_order(**limit(400 + i, "Buy", price=PRICE - 100, account=3, timeInForce="IOC"))
        events = c.drain(0.5)
        throttled = [e["clOrdId"] for e in events if e.name == "OrderRejected" and e["reason"] == m.RejectReason.Throttled]
        accepted = [e["clOrdId"] for e in events if e.name == "OrderAccepted"]
        assert 5 <= len(accepted) <= 6 and len(throttled) == 12 - len(accepted)
        assert accepted == [400 + i for i in range(len(accepted))]
    finally:
        c.terminate()


# ------------------------------------------------------------------ recovery


def test_reconnect_retransmits_what_was_missed_with_no_gap_and_no_duplicate(ex):
    c = ex.client(4)  # no cancel-on-disconnect
    other = ex.client(5)
    try:
        c.new_order(**limit(501, "Sell", qty=5, price=PRICE + 10, account=1))
        first = until_name(c, "OrderAccepted")
        seen = [e.seq for e in first]
        c.close_socket()  # gone without a word
        for i in range(3):  # fills happen while it is away
            other.new_order(**limit(601 + i, "Buy", qty=1, price=PRICE + 10, account=2))
            until_name(other, "Trade")
        c.reconnect()
        missed = c.receive_until(lambda e: e.name == "Trade" and e["takerClOrdId"] == 603)
        trades = [e for e in missed if e.name == "Trade"]
        assert [t["takerClOrdId"] for t in trades] == [601, 602, 603]
        seqs = seen + [e.seq for e in missed]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # consecutive: no gap, no duplicate
        # and the flow goes on live after the retransmission
        other.new_order(**limit(604, "Buy", qty=1, price=PRICE + 10, account=2))
        live = until_name(c, "Trade")[-1]
        assert live["takerClOrdId"] == 604 and live.seq == seqs[-1] + 1
        assert c.drain(0.2) == []
    finally:
        c.mass_cancel(clOrdId=599, scope="Session", account=0, instrument=0)
        until_name(c, "MassCancelDone")
        c.terminate()
        other.terminate()


def test_a_client_sequence_number_seen_before_is_not_applied_twice(ex):
    c = ex.client(8)
    try:
        c.new_order(**limit(801, "Buy", price=PRICE - 100, account=3))
        until_name(c, "OrderAccepted")
        c.close_socket()
        # reconnect claiming to resend from 1: the server says 1 was applied, the resend is ignored
        c.reconnect(resend_from=1)
        assert c.last_applied == 1
        c.new_order(**limit(801, "Buy", price=PRICE - 100, account=3))  # number 1 again
        c.new_order(**limit(802, "Buy", price=PRICE - 100, account=3))  # number 2: new
        got = until_name(c, "OrderAccepted")
        assert [e["clOrdId"] for e in got if e.name == "OrderAccepted"] == [802]
        assert c.drain(0.3) == []
        # a jump forward (a Sequence saying the next is 5) is reported: numbers 3..4 never came
        c.send_raw(m.Sequence.encode(nextSeqNo=5))
        c.next_out = 5
        c.new_order(**limit(803, "Buy", price=PRICE - 100, account=3))
        got = until_name(c, "OrderAccepted")
        assert (3, 2) in c.not_applied and got[-1]["clOrdId"] == 803
    finally:
        c.mass_cancel(clOrdId=899, scope="Session", account=0, instrument=0)
        until_name(c, "MassCancelDone")
        c.terminate()


def test_cancel_on_disconnect_cancels_the_sessions_orders(ex):
    c = ex.client(6)
    try:
        c.new_order(**limit(701, "Buy", price=PRICE - 70, account=1))
        c.new_order(**limit(702, "Buy", price=PRICE - 71, account=1))
        until_name(c, "OrderAccepted")
        until_name(c, "OrderAccepted")
        c.close_socket()
        time.sleep(0.3)
        c.reconnect()  # the cancellations happened while it was away: retransmitted
        got = c.receive_until(lambda e: e.name == "MassCancelDone")
        canceled = sorted(e["clOrdId"] for e in got if e.name == "OrderCanceled")
        assert canceled == [701, 702]
        assert all(e["reason"] == m.CancelReason.MassCancel for e in got if e.name == "OrderCanceled")
        assert got[-1]["canceledCount"] == 2
    finally:
        c.terminate()


# ------------------------------------------------------------------ bad input


def _bad(ex, frame: bytes, *, establish: bool = True) -> SessionTerminated:
    c = ex.client(9) if establish else ex.raw(9)
    try:
        c._sock.sendall(frame)
        with pytest.raises(SessionTerminated) as err:
            while True:  # the session's own events (a cancel-on-disconnect's) may come first
                c.receive(timeout=3.0)
        return err.value
    finally:
        c.close_socket()


def _sbe(template: int, block: int, body: bytes, schema: int = m.SCHEMA.schema_id, version: int = m.SCHEMA.version) -> bytes:
    return struct.pack("<HHHH", block, template, schema, version) + body


def test_each_kind_of_bad_input_gets_its_own_termination_reason(ex):
    order = m.NewOrder.encode(**limit(901, "Buy", account=4))
    body = order[8:]
    nb = m.NewOrder.block_length
    cases = {
        # SOFH: a length below the header, an encoding other than SBE little-endian
        TC.InvalidLength: struct.pack(">IH", 3, 0xEB50),
        TC.UnknownEncodingType: struct.pack(">IH", 6 + len(order), 0x5BE0) + order,
        TC.UnknownTemplate: header(8 + nb) + _sbe(999, nb, body),
        TC.WrongSchema: header(8 + nb) + _sbe(1, nb, body, schema=42),
        TC.WrongSchemaVersion: header(8 + nb) + _sbe(1, nb, body, version=99),
        TC.WrongBlockLength: header(8 + nb) + _sbe(1, nb - 8, body),
        TC.TruncatedMessage: header(20) + order[:20],
        TC.UnexpectedMessage: header(len(m.OrderAccepted.encode())) + m.OrderAccepted.encode(),
    }
    for code, frame in cases.items():
        assert _bad(ex, frame).code == code, code.name
    # an admin message from a client: never reaches the sequencer
    funds = m.Funds.encode(account=4, asset=0, amount=10**9, action="Deposit")
    assert _bad(ex, header(len(funds)) + funds).code == TC.UnexpectedMessage
    # an order before Establish
    assert _bad(ex, header(len(order)) + order, establish=False).code == TC.Unestablished


def test_a_bad_session_does_not_affect_another(ex):
    good = ex.client(2)
    try:
        bad = ex.client(9)
        bad._sock.sendall(struct.pack(">IH", 1 << 30, 0xEB50))  # a length far over the limit
        with pytest.raises(SessionTerminated):
            bad.receive(timeout=3.0)
        good.new_order(**limit(1001, "Sell", price=PRICE + 300, account=2))
        acc = until_name(good, "OrderAccepted")[-1]
        good.cancel(clOrdId=1002, origClOrdId=1001, orderId=acc["orderId"], account=2, instrument=1)
        until_name(good, "OrderCanceled")
    finally:
        good.terminate()


def test_a_reader_that_stops_reading_is_disconnected_at_the_backlog_bound(ex):
    c = ex.client(10, receive_buffer=4096)
    sent = 0
    try:
        batch = b"".join(
            header(m.NewOrder.size) + m.NewOrder.encode(**limit(20_000 + i, "Buy", price=PRICE - 200, account=4,
                                                               timeInForce="IOC"), sessionId=10)
            for i in range(500))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                c._sock.sendall(batch)
            except OSError:  # the gateway closed the connection
                break
            sent += 500
            c.next_out += 500
            if sent >= 200_000:
                break
        time.sleep(0.5)
        with pytest.raises(SessionTerminated):
            while True:
                c.receive(timeout=2.0)
        assert c.terminated.code == TC.SlowConsumer
    finally:
        c.close_socket()
    # the gateway is still there for everybody else
    other = ex.client(2)
    other.terminate()


def test_captured_frames_decode_with_the_sbe_package_against_the_schema(ex):
    """The bytes a client receives are SBE 1.0 as the published schema defines them: an
    independent decoder (the ``sbe`` package, reading engine/wire/schema.xml) agrees with
    every field of every message of a session's flow, session messages included."""
    import sbe

    with open(m.SCHEMA.path, encoding="utf-8") as fh:
        independent = sbe.Schema.parse(fh)
    buyer, seller = ex.client(1), ex.client(2)
    buyer.captured = []
    try:
        buyer.new_order(**limit(1101, "Buy", qty=2, account=1))
        until_name(buyer, "OrderAccepted")
        seller.new_order(**limit(1102, "Sell", qty=1, account=2))
        until_name(buyer, "Trade")
        buyer.mass_cancel(clOrdId=1103, scope="Session", account=0, instrument=0)
        until_name(buyer, "MassCancelDone")
        buyer.close_socket()
        buyer.reconnect()  # an EstablishmentAck
        buyer.new_order(**limit(1104, "Buy", account=1, timeInForce="IOC", price=PRICE - 100))
        until_name(buyer, "OrderCanceled")
        frames = list(buyer.captured)
    finally:
        buyer.terminate()
        seller.terminate()
    names_seen = set()
    for raw in frames:
        ours = m.SCHEMA.decode(raw)
        theirs = independent.decode(raw)
        assert theirs.message_name == ours.name
        assert theirs.header["blockLength"] == len(raw) - 8
        flat = {}
        for k, v in theirs.value.items():
            flat.update(v if isinstance(v, dict) else {k: v})
        for k, v in ours.fields.items():
            expected = v.name if hasattr(v, "name") else v
            assert flat[k] == expected, (ours.name, k)
        names_seen.add(ours.name)
    assert {"OrderAccepted", "Trade", "OrderCanceled", "MassCancelDone", "EstablishmentAck"} <= names_seen


def test_the_exchange_measures_each_stage_and_ringex_stat_shows_it(ex):
    import subprocess
    import sys

    from ringex.tools.stages import stage_snapshot

    before = stage_snapshot(ex.prefix)
    c = ex.client(1)
    try:
        for i in range(20):
            c.new_order(**limit(1300 + i, "Buy", price=PRICE - 150, account=1, timeInForce="IOC"))
        c.receive_until(lambda e: e.name == "OrderCanceled" and e["clOrdId"] == 1319)
    finally:
        c.terminate()
    stages = stage_snapshot(ex.prefix).since(before)
    assert set(stages) == {"gateway_to_sequencer", "sequencer_to_engine_output", "engine_output_to_socket"}
    assert stages["gateway_to_sequencer"]["count"] >= 20  # one per order
    assert stages["sequencer_to_engine_output"]["count"] >= 20
    assert stages["engine_output_to_socket"]["count"] >= 40  # two events per IOC order: accepted, canceled
    for s in stages.values():
        assert 0 < s["p50_us"] <= s["p99_us"] <= s["p999_us"] < 10_000_000
    out = subprocess.run([sys.executable, "-m", "ringex.tools.stat", "--count", "1"], capture_output=True,
                         text=True, timeout=60).stdout
    assert f"stage latency of exchange {ex.prefix!r}" in out
    assert "engine_output_to_socket" in out and "gateway_to_sequencer" in out


def test_the_asyncio_client_trades_stays_alive_and_recovers(ex):
    import asyncio

    from ringex.gateways.client import AsyncClient

    async def scenario():
        c = await AsyncClient.connect(ex.host, ex.port, 4, "pw4", keepalive_ms=100)  # session 4: no cancel-on-disconnect
        await c.new_order(**limit(1401, "Sell", price=PRICE + 400, account=1))
        acc = (await c.receive_until(lambda e: e.name == "OrderAccepted"))[-1]
        await asyncio.sleep(0.6)  # quiet for six intervals: its keepalive task keeps the session up
        assert c.terminated is None
        await c.close_socket()
        await c.reconnect()
        await c.cancel(clOrdId=1402, origClOrdId=1401, orderId=acc["orderId"], account=1, instrument=1)
        got = await c.receive_until(lambda e: e.name == "OrderCanceled")
        await c.terminate()
        return acc, got

    acc, got = asyncio.run(scenario())
    assert acc["clOrdId"] == 1401
    assert got[-1]["orderId"] == acc["orderId"] and got[-1].seq == acc.seq + 1  # numbered on across the reconnect
