"""The FIX 4.4 session layer (gateways/fix_session.py), sans I/O. The counterparty's messages
are built with simplefix, an independent FIX implementation, and ours are read back with
its parser, so neither side's framing is checked only against itself."""

from __future__ import annotations

import simplefix
import pytest

from ringex.gateways.fix_codec import FixMessage, FixReader, Garbled, utc_timestamp
from ringex.gateways.fix_session import NS, FixSession, FixSessionConfig, SessionState
from ringex.gateways.session_store import SessionStore

US, THEM = "RINGEX", "CLIENT"
T0 = 1_796_000_000 * NS  # wall clock of the tests (2026-12)
HB = 30  # the counterparty's HeartBtInt


def cfg(**kw) -> FixSessionConfig:
    kw.setdefault("password", "secret")
    return FixSessionConfig(sender_comp_id=US, target_comp_id=THEM, **kw)


def their(msg_type: str, seq: int, *fields: tuple[int, object], sender: str = THEM, target: str = US,
          sending_ns: int = T0, poss_dup: bool = False, orig_ns: int | None = None) -> FixMessage:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    m.append_pair(35, msg_type, header=True)
    m.append_pair(49, sender, header=True)
    m.append_pair(56, target, header=True)
    m.append_pair(34, seq, header=True)
    if poss_dup:
        m.append_pair(43, "Y", header=True)
    m.append_pair(52, utc_timestamp(sending_ns).decode(), header=True)
    if orig_ns is not None:
        m.append_pair(122, utc_timestamp(orig_ns).decode(), header=True)
    for tag, value in fields:
        m.append_pair(tag, value)
    (msg,) = FixReader().feed(m.encode())
    assert isinstance(msg, FixMessage)
    return msg


def logon(seq: int = 1, *extra: tuple[int, object], password: str = "secret", hb: int = HB) -> FixMessage:
    return their("A", seq, (98, 0), (108, hb), (554, password), *extra)


def order(seq: int, clordid: str = "o1", **kw) -> FixMessage:
    return their("D", seq, (11, clordid), (1, 1), (55, "BTC-USD"), (54, 1), (60, utc_timestamp(T0).decode()),
                 (38, 1), (40, 2), (44, "50000"), **kw)


def sent(s: FixSession) -> list[simplefix.FixMessage]:
    """What the session queued for the socket, parsed by simplefix; the queue is emptied."""
    p = simplefix.FixParser()
    p.append_buffer(bytes(s.out))
    s.out.clear()
    out = []
    while (m := p.get_message()) is not None:
        out.append(m)
    return out


def kinds(msgs: list[simplefix.FixMessage]) -> list[tuple[bytes, int]]:
    return [(m.get(35), int(m.get(34))) for m in msgs]


@pytest.fixture
def store(tmp_path):
    st = SessionStore(tmp_path / "fix", 7)
    yield st
    st.close()


@pytest.fixture
def session(store) -> FixSession:
    s = FixSession(cfg(), store)
    s.connected(0)
    return s


def logged_on(s: FixSession) -> None:
    assert s.on_message(logon(), 0, T0) == []
    (reply,) = sent(s)
    assert reply.get(35) == b"A" and reply.get(108) == str(HB).encode() and reply.get(98) == b"0"
    assert reply.get(49) == US.encode() and reply.get(56) == THEM.encode() and reply.get(34) == b"1"
    assert s.active


# --------------------------------------------------------------------------------- logon


def test_a_good_logon_is_answered_and_application_messages_flow(session) -> None:
    logged_on(session)
    due = session.on_message(order(2), 1, T0)
    assert [m.get(11) for m in due] == [b"o1"]
    assert session.expected == 3


@pytest.mark.parametrize("msg, reason", [
    (lambda: logon(password="wrong"), "invalid password"),
    (lambda: their("A", 1, (98, 0), (108, HB), (554, "secret"), sender="SOMEONE"), "CompID problem"),
    (lambda: logon(hb=0), "HeartBtInt 0 out of range"),
    (lambda: their("A", 1, (98, 1), (108, HB), (554, "secret")), "tag 98"),
])
def test_a_bad_logon_is_logged_out_with_its_reason_and_counted(session, msg, reason) -> None:
    assert session.on_message(msg(), 0, T0) == []
    (reply,) = sent(session)
    assert reply.get(35) == b"5" and reason in reply.get(58).decode()
    assert session.closing and session.stats.bad_logons == 1 and session.stats.logons == 0


def test_a_first_message_that_is_not_a_logon_closes_without_an_answer(session) -> None:
    assert session.on_message(order(1), 0, T0) == []
    assert session.closing and sent(session) == []


def test_no_logon_within_the_limit_closes(session) -> None:
    session.on_timer(5 * NS, T0)
    assert not session.closing
    session.on_timer(11 * NS, T0)
    assert session.closing and session.close_reason == "no Logon"


# ---------------------------------------------------------------------------- heartbeats


def test_heartbeat_after_the_interval_then_test_request_then_disconnect(session) -> None:
    logged_on(session)
    session.on_timer(HB * NS, T0)
    assert kinds(sent(session)) == [(b"0", 2)]  # nothing sent for HeartBtInt: a Heartbeat
    session.on_timer(HB * NS * 6 // 5 + 1, T0)  # nothing received for HeartBtInt + 20 %
    (tr,) = sent(session)
    assert tr.get(35) == b"1" and tr.get(112) is not None
    session.on_timer(2 * HB * NS * 6 // 5 + 2, T0)
    assert session.closing and "TestRequest" in session.close_reason


def test_an_answered_test_request_keeps_the_session(session) -> None:
    logged_on(session)
    session.on_timer(HB * NS * 6 // 5 + 1, T0)
    (tr,) = [m for m in sent(session) if m.get(35) == b"1"]
    t = HB * NS * 6 // 5 + 2
    session.on_message(their("0", 2, (112, tr.get(112).decode())), t, T0)
    session.on_timer(t + HB * NS, T0)
    assert not session.closing


def test_a_test_request_is_answered_with_its_id(session) -> None:
    logged_on(session)
    session.on_message(their("1", 2, (112, "ping-7")), 1, T0)
    (hb,) = sent(session)
    assert hb.get(35) == b"0" and hb.get(112) == b"ping-7"


# ------------------------------------------------------------------------ sequence numbers


def test_a_gap_is_asked_for_once_and_the_early_messages_wait_for_it(session) -> None:
    logged_on(session)
    assert session.on_message(order(4, "c"), 1, T0) == []
    (rr,) = sent(session)
    assert rr.get(35) == b"2" and rr.get(7) == b"2" and rr.get(16) == b"0"
    assert session.on_message(order(5, "d"), 1, T0) == []
    assert sent(session) == []  # the same gap: no second ResendRequest
    assert [m.get(11) for m in session.on_message(order(2, "a", poss_dup=True, orig_ns=T0), 1, T0)] == [b"a"]
    assert [m.get(11) for m in session.on_message(order(3, "b", poss_dup=True, orig_ns=T0), 1, T0)] == [b"b", b"c", b"d"]
    assert session.expected == 6


def test_too_low_without_possdup_ends_the_session(session) -> None:
    logged_on(session)
    session.on_message(order(2), 1, T0)
    session.on_message(order(2, "again"), 1, T0)
    (lo,) = sent(session)
    assert lo.get(35) == b"5" and b"MsgSeqNum too low, expecting 3 but received 2" in lo.get(58)
    assert session.closing


def test_too_low_with_possdup_is_a_duplicate_and_ignored(session) -> None:
    logged_on(session)
    session.on_message(order(2), 1, T0)
    assert session.on_message(order(2, poss_dup=True, orig_ns=T0), 1, T0) == []
    assert not session.closing and sent(session) == [] and session.stats.duplicates_ignored == 1


def test_a_gap_fill_moves_the_expected_number_and_releases_the_queue(session) -> None:
    logged_on(session)
    session.on_message(order(5, "e"), 1, T0)
    sent(session)
    due = session.on_message(their("4", 2, (123, "Y"), (36, 5), poss_dup=True, orig_ns=T0), 1, T0)
    assert [m.get(11) for m in due] == [b"e"] and session.expected == 6


def test_a_sequence_reset_sets_the_expected_number_whatever_its_own(session) -> None:
    logged_on(session)
    session.on_message(their("4", 99, (36, 20)), 1, T0)  # Reset: its MsgSeqNum is not checked
    assert session.expected == 20 and sent(session) == []
    session.on_message(their("4", 20, (36, 10)), 1, T0)
    (rej,) = sent(session)
    assert rej.get(35) == b"3" and rej.get(371) == b"36" and rej.get(373) == b"5"
    assert session.expected == 20


def test_reset_seq_num_flag_starts_both_flows_at_one(store) -> None:
    s = FixSession(cfg(), store)
    s.connected(0)
    logged_on(s)
    s.on_message(order(2), 1, T0)
    s.send(b"8", [(37, 1)], T0, 1)
    s.persist()
    s.disconnected()
    s.connected(2)
    s.on_message(logon(1, (141, "Y")), 3, T0)
    (reply,) = sent(s)
    assert reply.get(141) == b"Y" and reply.get(34) == b"1" and s.expected == 2


# --------------------------------------------------------------------------------- resend


def test_a_resend_request_gets_the_application_messages_again_and_gap_fills_for_the_rest(session) -> None:
    logged_on(session)  # our 1: Logon
    first = session.send(b"8", [(37, 11), (17, "e1")], T0, 1)  # 2
    session.on_timer(1 + HB * NS, T0)  # 3: Heartbeat
    session.send(b"8", [(37, 12), (17, "e2")], T0, 1)  # 4
    sent(session)
    assert first == 2
    later = T0 + 5 * NS
    session.on_message(their("2", 2, (7, 1), (16, 0), sending_ns=later), HB * NS, later)
    got = sent(session)
    assert kinds(got) == [(b"4", 1), (b"8", 2), (b"4", 3), (b"8", 4)]
    fill1, again, fill3, again4 = got
    assert fill1.get(123) == b"Y" and fill1.get(36) == b"2" and fill1.get(43) == b"Y"
    assert fill3.get(36) == b"4"
    assert again.get(43) == b"Y" and again.get(17) == b"e1"
    assert again.get(122) == utc_timestamp(T0) and again.get(52) == utc_timestamp(later)


def test_a_resend_request_is_answered_even_when_it_arrives_early(session) -> None:
    logged_on(session)
    session.send(b"8", [(37, 11)], T0, 1)
    sent(session)
    session.on_message(their("2", 3, (7, 2), (16, 2)), 1, T0)  # 2 missing: it is asked for too
    got = sent(session)
    assert (b"8", 2) in kinds(got) and any(m.get(35) == b"2" for m in got)
    # when the gap is filled, the early ResendRequest is counted, not served twice
    session.on_message(their("4", 2, (123, "Y"), (36, 3), poss_dup=True, orig_ns=T0), 1, T0)
    assert session.expected == 4 and sent(session) == []


# ----------------------------------------------------------------------------- validation


def test_an_invalid_message_is_rejected_with_its_tag_and_consumes_its_number(session) -> None:
    logged_on(session)
    bad = their("D", 2, (11, "x"), (1, 1), (55, "BTC-USD"), (60, utc_timestamp(T0).decode()), (38, 1), (40, 2))
    assert session.on_message(bad, 1, T0) == []  # Side (54) missing
    (rej,) = sent(session)
    assert rej.get(35) == b"3" and rej.get(45) == b"2" and rej.get(373) == b"1" and rej.get(371) == b"54"
    assert [m.get(11) for m in session.on_message(order(3), 1, T0)] == [b"o1"]


def test_sending_time_out_of_tolerance_is_rejected_then_logged_out(session) -> None:
    logged_on(session)
    session.on_message(order(2, sending_ns=T0 - 300 * NS), 1, T0)
    rej, lo = sent(session)
    assert rej.get(35) == b"3" and rej.get(373) == b"10" and lo.get(35) == b"5"
    assert session.closing


def test_possdup_without_orig_sending_time_is_rejected(session) -> None:
    logged_on(session)
    session.on_message(order(2, poss_dup=True), 1, T0)
    rej = sent(session)[0]
    assert rej.get(35) == b"3" and rej.get(371) == b"122" and rej.get(373) == b"1"


def test_a_garbled_message_is_ignored_and_consumes_no_number(session) -> None:
    logged_on(session)
    session.on_garbled(Garbled("bad checksum", b"8=FIX.4.4\x01..."))
    assert session.stats.garbled == 1 and sent(session) == [] and session.expected == 2


def test_a_wrong_comp_id_after_logon_is_rejected_and_logged_out(session) -> None:
    logged_on(session)
    session.on_message(their("0", 2, sender="INTRUDER"), 1, T0)
    rej, lo = sent(session)
    assert rej.get(373) == b"9" and lo.get(35) == b"5" and session.closing


# ---------------------------------------------------------------------------------- logout


def test_their_logout_is_answered_and_closes(session) -> None:
    logged_on(session)
    session.on_message(their("5", 2), 1, T0)
    (lo,) = sent(session)
    assert lo.get(35) == b"5" and session.closing


def test_our_logout_waits_for_theirs(session) -> None:
    logged_on(session)
    session.logout("end of day", T0, 1)
    (lo,) = sent(session)
    assert lo.get(58) == b"end of day" and session.state is SessionState.LOGOUT_SENT and not session.closing
    session.on_message(their("5", 2), 2, T0)
    assert session.closing and sent(session) == []


def test_our_logout_unanswered_closes_after_the_limit(session) -> None:
    logged_on(session)
    session.logout("bye", T0, 1)
    session.on_timer(1 + 3 * NS, T0)
    assert session.closing and session.close_reason == "no answer to our Logout"


# ------------------------------------------------------------------------------ persistence


def test_numbers_both_ways_survive_a_restart(tmp_path) -> None:
    st = SessionStore(tmp_path / "fix", 9)
    s = FixSession(cfg(), st)
    s.connected(0)
    logged_on(s)
    s.on_message(order(2), 1, T0)
    s.send(b"8", [(37, 1)], T0, 1)
    s.persist()
    st.close()  # the gateway process ends
    st = SessionStore(tmp_path / "fix", 9)
    try:
        s = FixSession(cfg(), st)
        s.connected(0)
        s.on_message(logon(3), 1, T0)
        (reply,) = sent(s)
        assert reply.get(34) == b"3"  # ours went 1 (Logon), 2 (report): the next is 3
        assert s.expected == 4
        s.on_message(logon(4), 1, T0)  # a second Logon while logged on is refused
        assert sent(s)[0].get(35) == b"3"
    finally:
        st.close()


# ------------------------------------------------------- the in-order fast lane, against the full path


def _run(s: FixSession, msgs: list[FixMessage]) -> list:
    """Each message's outcome: the application messages handed over, what was sent (type,
    number, reason, ref tag), and the session's numbers and state after it."""
    out = []
    for i, msg in enumerate(msgs):
        apps = s.on_message(msg, i + 1, T0)
        out.append(([a.raw for a in apps], [(m.get(35), m.get(34), m.get(373), m.get(371)) for m in sent(s)],
                    s.expected, s.store.next_in, s.state, s.closing, s.stats.rejects_sent, s.stats.too_low))
    return out


def _scanned_lane(on_message):
    """``on_message`` as the gateway reaches it: the message framed and checked by
    ``fix_scan`` and taken by ``take_in_order`` where it may be, else the full call."""
    import numpy as np

    from ringex.gateways import fix_scan as fs
    from ringex.gateways.fix_dictionary import MESSAGES

    def lane(self, msg, now_ns, wall_ns):
        rows, fields = np.zeros((1, fs.MESSAGE_WORDS), np.int64), np.zeros((64, fs.FIELD_WORDS), np.int64)
        n, _ = fs.scan(np.frombuffer(msg.raw, np.uint8), len(msg.raw), 8192, np.frombuffer(THEM.encode(), np.uint8),
                       np.frombuffer(US.encode(), np.uint8), rows, fields)
        row = rows[0]
        if (n == 1 and row[fs.M_VALID] and row[fs.M_COMP_OK] and not row[fs.M_POSS_DUP]
                and not MESSAGES[fs.MSG_TYPES[row[fs.M_TYPE]]].admin
                and self.take_in_order(int(row[fs.M_SEQ]), int(row[fs.M_SENT_NS]), now_ns, wall_ns)):
            lane.taken += 1
            return [msg]
        return on_message(self, msg, now_ns, wall_ns)
    lane.taken = 0
    return lane


@pytest.mark.parametrize("case", [
    "in order", "wrong sender", "wrong target", "sending time off", "possdup too low", "possdup in order",
    "gap then fill", "invalid", "status request", "business message we send",
])
def test_the_fast_lane_does_what_the_full_path_does(tmp_path, monkeypatch, case: str) -> None:
    """Application messages are handed over at once when they are the next expected and pass
    every check (``FixSession._in_order``, or ``fix_scan`` and ``take_in_order`` as the gateway
    does); every sequence below, run with each lane and once with every message through
    ``_sequenced``, gives the same answers and state."""
    flows = {
        "in order": [logon(), order(2, "a"), order(3, "b"), order(4, "c")],
        "wrong sender": [logon(), order(2, "a"), order(3, "b", sender="INTRUDER")],
        "wrong target": [logon(), order(2, "a", target="ELSEWHERE")],
        "sending time off": [logon(), order(2, "a"), order(3, "b", sending_ns=T0 + 200 * NS)],
        "possdup too low": [logon(), order(2, "a"), order(2, "a", poss_dup=True, orig_ns=T0)],
        "possdup in order": [logon(), order(2, "a", poss_dup=True, orig_ns=T0 - NS), order(3, "b")],
        "gap then fill": [logon(), order(3, "b"), order(2, "a"), order(4, "c")],
        "invalid": [logon(), their("D", 2, (11, "x"), (1, 1), (55, "BTC-USD"), (38, 1), (40, 2)), order(3, "b")],
        "status request": [logon(), their("H", 2, (11, "a"), (55, "BTC-USD"), (54, 1)), order(3, "b")],
        "business message we send": [logon(), their("8", 2, (37, "1"), (17, "e"), (150, "0"), (39, "0"),
                                                     (55, "X"), (54, "1"), (151, "1"), (14, "0"), (6, "0"))],
    }
    results = []
    for lane in (True, False, "scanned"):
        with monkeypatch.context() as mp:
            if not lane:
                mp.setattr(FixSession, "_in_order", lambda self, msg, wall_ns: False)
            if lane == "scanned":  # as FixGatewayAgent._receive: fix_scan, then take_in_order
                scanned = _scanned_lane(FixSession.on_message)
                mp.setattr(FixSession, "on_message", scanned)
            st = SessionStore(tmp_path / f"lane-{lane}", 7)
            s = FixSession(cfg(), st)
            s.connected(0)
            results.append(_run(s, flows[case]))
            st.close()
    assert results[0] == results[1] == results[2]
    if case == "in order":
        assert [apps for apps, *_ in results[0][1:]] != [[], [], []]  # the lane handed them over
        assert scanned.taken == 3
