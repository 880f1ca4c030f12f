"""A FIX 4.4 session, sans I/O: logon, sequence numbers both ways, heartbeats, resends, logout.

The gateway frames bytes into messages (``fix_codec.FixReader``) and hands each to
:meth:`FixSession.on_message`, calls :meth:`FixSession.on_timer` every duty cycle, sends
what :attr:`FixSession.out` holds and closes the connection once :attr:`FixSession.closing`
is set and ``out`` is empty. What the session returns from ``on_message`` are the
application messages to apply, in sequence order, each exactly once.

The rules are FIX 4.4's session layer (Volume 2, "Session Protocol"), with QuickFIX/J's and
Artio's behaviour where the specification leaves room:

* **Logon.** The first message must be a Logon, else the connection is dropped with no
  answer. CompIDs, password, EncryptMethod 0 and HeartBtInt within the configured bounds are
  checked; a failure is answered with a Logout carrying the reason, then the connection is
  closed. ``ResetSeqNumFlag=Y`` starts both flows again at 1 (the store's new identity).
* **Incoming numbers.** A message numbered as expected is processed. One numbered higher
  means a gap: a ResendRequest for everything from the expected number on (sent once per
  gap), and the early messages are kept (bounded) until the gap is filled, then processed
  in order. One numbered lower without PossDupFlag=Y ends the session (Logout, as the
  specification says); with PossDupFlag=Y it is a duplicate and ignored. A SequenceReset
  with GapFillFlag=Y moves the expected number forward like the messages it replaces;
  without (Reset) it sets the expected number whatever its own number. A well-framed but
  invalid message is answered with a Reject (SessionRejectReason, RefTagID) and still
  consumes its number; a garbled one (``fix_codec.Garbled``) is ignored and consumes none.
* **Outgoing numbers.** Every message sent is stored (``SessionStore``, the same
  persistent flow the binary gateway keeps) before it is queued, under its MsgSeqNum, so a
  ResendRequest is answered with the original application messages (PossDupFlag=Y,
  OrigSendingTime) and each run of session messages is replaced by one
  SequenceReset-GapFill; a Reject is resent as itself. Numbers both ways survive a restart.
* **Liveness.** A Heartbeat after HeartBtInt seconds without sending; after HeartBtInt plus
  a fifth without receiving, a TestRequest; after as long again with nothing, the
  connection is closed. SendingTime more than ``sending_time_tolerance_s`` from the
  gateway's clock is a Reject (SendingTimeAccuracyProblem) and a Logout.

Exactly once for application messages: ``expected`` moves when a message is handed to the
gateway; the gateway calls :meth:`FixSession.persist` after it has published what it was
handed, which writes the number to the store. A gateway killed in between finds, at
restart, the numbers its inbound ring already holds, as the binary gateway does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ringex.gateways.fix_codec import (
    SOH,
    FixMessage,
    FixReader,
    Garbled,
    Invalid,
    encode,
    encode_fields,
    parse_utc_timestamp,
    passes_validation,
    utc_timestamp,
    validate,
)
from ringex.gateways.fix_dictionary import MESSAGES, SessionRejectReason
from ringex.gateways.fix_outbound import TOO_LONG, frame
from ringex.gateways.session_store import MAX_PAYLOAD, SOURCE_GATEWAY, SessionStore

__all__ = ["FixSession", "FixSessionConfig", "SessionState"]

NS = 1_000_000_000
# ``send_batch`` frames this many messages or more in one compiled call: below, the call's
# own cost (~4 µs) is more than what it saves (~3 µs a message; docs/probes/fix_order_cost.py)
BATCH_FROM = 3
#: Early messages kept while a gap is being filled; more and the session is ended (a peer
#: that never fills its gap must not grow the gateway's memory).
MAX_QUEUED = 10_000
#: How long a connection may stay without a Logon, and a Logout without its answer.
LOGON_TIMEOUT_NS = 10 * NS
LOGOUT_TIMEOUT_NS = 2 * NS
#: Session-level message types: replaced by a gap fill when resent (Reject excepted).
ADMIN = frozenset({b"0", b"1", b"2", b"4", b"5", b"A"})
#: Application message types (the dictionary's), which the session hands to the gateway.
_APPLICATION = frozenset(t for t, spec in MESSAGES.items() if not spec.admin)

R = SessionRejectReason


class SessionState(enum.Enum):
    AWAITING_LOGON = "awaiting logon"
    ACTIVE = "active"
    LOGOUT_SENT = "logout sent"
    CLOSED = "closed"


@dataclass(frozen=True)
class FixSessionConfig:
    """One counterparty: who it is, how it proves it, and the session timing it may ask for."""

    sender_comp_id: str  # ours: SenderCompID on what we send, TargetCompID on what it sends
    target_comp_id: str  # the counterparty's
    password: str = ""  # "" = no Password (554) asked for
    min_heartbeat_s: int = 1
    max_heartbeat_s: int = 120
    sending_time_tolerance_s: int = 120


@dataclass
class SessionStats:
    """What ``ringex stat`` and the tests count: one field per kind of trouble."""

    logons: int = 0
    bad_logons: int = 0
    garbled: int = 0
    rejects_sent: int = 0
    resend_requests_sent: int = 0
    resends_served: int = 0
    test_requests_sent: int = 0
    too_low: int = 0
    duplicates_ignored: int = 0
    reasons: list[str] = field(default_factory=list)  # why each logon failed or the session ended


class FixSession:
    """One counterparty's session over one connection at a time (see the module notes)."""

    def __init__(self, cfg: FixSessionConfig, store: SessionStore) -> None:
        self.cfg = cfg
        self.store = store
        self._sender = cfg.sender_comp_id.encode()
        self._target = cfg.target_comp_id.encode()
        # what encode's common case asks of the header (SendingTime is ours: digits)
        self._plain_header = bool(self._sender and self._target and SOH not in self._sender + self._target)
        self._header_ms = -1  # report_header's millisecond, and what it gave for it
        self._header: tuple[np.ndarray, int] = (np.zeros(0, np.uint8), 0)
        self.stats = SessionStats()
        self.out = bytearray()
        self.state = SessionState.CLOSED
        self.closing = False
        self.close_reason = ""
        self.heartbeat_ns = 30 * NS
        self.expected = store.next_in
        self._queued: dict[int, FixMessage] = {}
        self._validated: tuple[FixMessage | None, Invalid | None] = (None, None)
        # numbers whose message was already acted on when it arrived early (a queued Logon,
        # a ResendRequest answered at once): counted, not acted on, when their turn comes
        self._noop: set[int] = set()
        self._gap_requested_to = 0  # the highest number a ResendRequest of ours already covers
        self._last_recv = self._last_send = self._opened = self._logout_at = 0
        self._test_req_at = 0  # when our unanswered TestRequest went out (0: none)
        self._test_req_id = 0

    # ------------------------------------------------------------------ connection

    def connected(self, now_ns: int) -> None:
        """A new connection for this session: nothing is sent until its Logon."""
        self.out.clear()
        self.state = SessionState.AWAITING_LOGON
        self.closing = False
        self.close_reason = ""
        self._queued.clear()
        self._noop.clear()
        self._gap_requested_to = 0
        self._opened = self._last_recv = self._last_send = now_ns
        self._test_req_at = 0
        self.expected = self.store.next_in

    def disconnected(self) -> None:
        """The connection is gone (either side). The store counts what the gateway has
        published (``SessionStore.next_in``), not what was handed to it: an order handed out
        but never published is asked for again at the next Logon."""
        self.store.flush()
        self.state = SessionState.CLOSED
        self._queued.clear()

    @property
    def active(self) -> bool:
        return self.state is SessionState.ACTIVE

    def persist(self) -> None:
        """Write the expected incoming number and the stored flow (after the gateway has
        published every application message this session handed it)."""
        self.store.next_in = self.expected
        self.store.flush()

    def _close(self, reason: str) -> None:
        self.closing = True
        self.close_reason = reason
        self.stats.reasons.append(reason)

    # ------------------------------------------------------------------ sending

    def send(self, msg_type: bytes, body: list[tuple[int, bytes | str | int]] | bytes, wall_ns: int, now_ns: int,
             source: int = SOURCE_GATEWAY, created: int = 0, position: int = 0) -> int:
        """Number, store and queue one message; returns its MsgSeqNum. ``source``,
        ``created``, ``position``: the ring message it answers (``SessionStore.append``)."""
        seq = self.store.next_seq
        raw = encode(msg_type, self._sender, self._target, seq, utc_timestamp(wall_ns), body)
        self.store.append(raw, source, created, position)
        self.out += raw
        self._last_send = now_ns
        return seq

    def send_batch(self, messages: list[tuple[bytes, list[tuple[int, bytes | str | int]] | bytes, int]],
                   wall_ns: int, now_ns: int, source: int, created: int) -> None:
        """``send`` for each ``(msg_type, body, position)`` in order: the same bytes stored and
        queued, and the same refusals; ``BATCH_FROM`` or more framed in one compiled call
        (``fix_outbound``) where ``_send_framed`` can, otherwise one by one."""
        if len(messages) < BATCH_FROM or not self._send_framed(messages, wall_ns, now_ns, source, created):
            for msg_type, body, position in messages:
                self.send(msg_type, body, wall_ns, now_ns, source, created, position)

    def _send_framed(self, messages: list[tuple[bytes, list[tuple[int, bytes | str | int]] | bytes, int]],
                     wall_ns: int, now_ns: int, source: int, created: int) -> bool:
        """``messages`` stored and queued as ``send`` would, in one compiled call; False, with
        nothing done, where encode's common case does not hold (a doubtful header or
        MsgType, a body not written fields, a value ``send`` refuses, a message too long:
        ``send`` then does each, and refuses what it refuses after those before it)."""
        if not self._plain_header:
            return False
        types, given, positions = zip(*messages)
        try:  # pairs written here as encode writes them after the header
            bodies = tuple(b if b.__class__ is bytes else encode_fields(list(b)) if b else b"" for b in given)
        except ValueError:
            return False
        if not (all(b.endswith(SOH) for b in bodies) and all(types) and SOH not in b"".join(types)):
            return False
        status, wire, records, offsets = frame(types, bodies, self._sender, self._target, utc_timestamp(wall_ns),
                                               self.store.next_seq, positions, created, source, self.store.end,
                                               MAX_PAYLOAD)
        if status == TOO_LONG:
            return False
        self.sent_framed(wire, records, offsets, source, created, positions[-1], now_ns)
        return True

    @property
    def plain_header(self) -> bool:
        """Are the CompIDs such that ``fix_outbound`` may frame this session's messages?"""
        return self._plain_header

    def report_header(self, wall_ns: int) -> tuple[np.ndarray, int]:
        """What ``fix_outbound.frame_messages`` puts in a header beside BodyLength, MsgType
        and MsgSeqNum, for messages sent at ``wall_ns`` (``plain_header`` sessions): the
        CompIDs' part, then SendingTime's, as bytes viewed (the same for a whole millisecond:
        kept); and the first part's length."""
        ms = wall_ns // 1_000_000
        if ms != self._header_ms:
            middle = b"\x0149=%s\x0156=%s\x0134=" % (self._sender, self._target)
            self._header_ms = ms
            self._header = (np.frombuffer(middle + b"\x0152=%s\x01" % utc_timestamp(wall_ns), np.uint8), len(middle))
        return self._header

    def sent_framed(self, wire: np.ndarray, records: np.ndarray, offsets: np.ndarray, source: int, created: int,
                    position: int, now_ns: int) -> None:
        """Messages ``fix_outbound.frame_messages`` numbered from ``store.next_seq`` on and
        framed (``wire``, and their store ``records`` starting at ``offsets``, counted from
        ``store.end``), the last one answering ring position ``position``: stored and queued,
        as ``send`` does each."""
        self.store.append_records(records, offsets, source, created, position)
        self.out += memoryview(wire)
        self._last_send = now_ns

    def send_reports(self, bodies: np.ndarray, lengths: list[int], positions: list[int], wall_ns: int, now_ns: int,
                     source: int, created: int) -> None:
        """ExecutionReports whose bodies lie back to back in ``bodies`` (``fix_report_kernel``'s,
        TransactTime included), report ``i`` answering ring position ``positions[i]``, sent
        one by one (``send``, which refuses what it refuses): what ``frame_messages`` could
        not frame."""
        at = 0
        for n, position in zip(lengths, positions):
            self.send(b"8", bodies[at:at + n].tobytes(), wall_ns, now_ns, source, created, position)
            at += n

    def logout(self, text: str, wall_ns: int, now_ns: int) -> None:
        """Begin a Logout of our own (the gateway stops, the operator ends the session)."""
        if self.state is SessionState.ACTIVE:
            self.send(b"5", [(58, text)] if text else [], wall_ns, now_ns)
            self.state = SessionState.LOGOUT_SENT
            self._logout_at = now_ns

    def _reject(self, msg: FixMessage, reason: SessionRejectReason, ref_tag: int | None, text: str,
                wall_ns: int, now_ns: int) -> None:
        body: list[tuple[int, bytes | str | int]] = [(45, msg.seq_num or 0)]
        if ref_tag is not None:
            body.append((371, ref_tag))
        body += [(372, msg.msg_type or b"?"), (373, int(reason)), (58, text)]
        self.send(b"3", body, wall_ns, now_ns)
        self.stats.rejects_sent += 1

    def _fatal(self, text: str, wall_ns: int, now_ns: int) -> None:
        """Logout with ``text`` and close once it is written."""
        self.send(b"5", [(58, text)], wall_ns, now_ns)
        self.state = SessionState.LOGOUT_SENT
        self._close(text)

    # ------------------------------------------------------------------ receiving

    def on_garbled(self, garbled: Garbled) -> None:
        """Ignored, as the specification says: no answer, no number consumed."""
        self.stats.garbled += 1

    def on_message(self, msg: FixMessage, now_ns: int, wall_ns: int) -> list[FixMessage]:
        """Process one framed message; returns the application messages now due, in order."""
        if self.closing or self.state is SessionState.CLOSED:
            return []
        self._last_recv = now_ns
        self._test_req_at = 0  # anything received answers a TestRequest's question
        if self.state is SessionState.AWAITING_LOGON:
            return self._on_logon(msg, now_ns, wall_ns)
        if msg.msg_type in _APPLICATION and not self._queued and not self._noop and self._in_order(msg, wall_ns):
            # what _sequenced, _in_sequence and _one do with it, in short
            self.expected += 1
            if self._gap_requested_to < self.expected:
                self._gap_requested_to = 0
            return [msg]
        return self._sequenced(msg, now_ns, wall_ns)

    def take_in_order(self, seq: int, sent_ns: int, now_ns: int, wall_ns: int) -> bool:
        """``on_message``'s fast lane for an application message the caller has framed and
        checked already (``fix_scan``: it passes validation, carries the session's CompIDs
        and no PossDupFlag): if it is the message expected next, in SendingTime tolerance,
        with nothing queued or pending, it is taken as ``on_message`` would take it (True:
        the caller applies it); otherwise nothing changes (False: the caller hands it to
        ``on_message``)."""
        if (self.state is not SessionState.ACTIVE or self.closing or seq != self.expected or self._queued
                or self._noop or abs(sent_ns - wall_ns) > self.cfg.sending_time_tolerance_s * NS):
            return False
        self._last_recv = now_ns
        self._test_req_at = 0
        self.expected += 1
        if self._gap_requested_to < self.expected:
            self._gap_requested_to = 0
        return True

    def _in_order(self, msg: FixMessage, wall_ns: int) -> bool:
        """Is ``msg`` the message expected next, from the counterparty, no PossDupFlag, and
        does it pass every check (``fix_codec.validate``, SendingTime)? Then nothing of the
        full path (gaps, duplicates, Rejects) applies to it."""
        first = msg.fields_by_tag
        if (msg.seq_num != self.expected or first.get(49) != self._target or first.get(56) != self._sender
                or 43 in first or not passes_validation(msg)):
            return False
        return abs(parse_utc_timestamp(first[52]) - wall_ns) <= self.cfg.sending_time_tolerance_s * NS

    def _on_logon(self, msg: FixMessage, now_ns: int, wall_ns: int) -> list[FixMessage]:
        if msg.msg_type != b"A":
            self._close("first message not a Logon")  # no answer: we do not know who this is
            self.stats.bad_logons += 1
            return []
        problem = validate(msg)
        if problem is None:
            problem = self._logon_problem(msg)
        if problem is not None:  # refused with the reason, then closed
            self.stats.bad_logons += 1
            self._fatal(problem if isinstance(problem, str) else problem.text, wall_ns, now_ns)
            return []
        self.heartbeat_ns = msg.int(108) * NS
        seq = msg.seq_num or 0
        reset = msg.get(141) == b"Y"
        if reset:
            if seq != 1:
                self.stats.bad_logons += 1
                self._fatal(f"ResetSeqNumFlag=Y with MsgSeqNum {seq}, must be 1", wall_ns, now_ns)
                return []
            self.store.reset(*_identity(wall_ns))
            self.expected = 1
        elif seq < self.expected:
            self.stats.bad_logons += 1
            self.stats.too_low += 1
            self._fatal(f"MsgSeqNum too low, expecting {self.expected} but received {seq}", wall_ns, now_ns)
            return []
        self.state = SessionState.ACTIVE
        self.stats.logons += 1
        body: list[tuple[int, bytes | str | int]] = [(98, 0), (108, msg.int(108))]
        if reset:
            body.append((141, b"Y"))
        self.send(b"A", body, wall_ns, now_ns)
        if seq > self.expected:  # logged on, and the gap before the Logon is asked for
            self._noop.add(seq)
            return self._early(msg, seq, now_ns, wall_ns)
        return self._in_sequence(msg, seq, now_ns, wall_ns, logon=True)

    def _logon_problem(self, msg: FixMessage) -> str | None:
        if msg.get(49) != self._target or msg.get(56) != self._sender:
            return (f"CompID problem: SenderCompID {_text(msg.get(49))} TargetCompID {_text(msg.get(56))} "
                    "is not a configured session")
        if self.cfg.password and msg.get(554) != self.cfg.password.encode():
            return "invalid password"
        if msg.get(98) != b"0":
            return "EncryptMethod must be 0 (none)"
        hb = msg.int(108)
        if not self.cfg.min_heartbeat_s <= hb <= self.cfg.max_heartbeat_s:
            return (f"HeartBtInt {hb} out of range: {self.cfg.min_heartbeat_s}.."
                    f"{self.cfg.max_heartbeat_s} s")
        return None

    def _sequenced(self, msg: FixMessage, now_ns: int, wall_ns: int) -> list[FixMessage]:
        problem = validate(msg)
        self._validated = (msg, problem)  # _one's answer too, when msg is in sequence
        try:
            seq = msg.seq_num
        except ValueError:
            seq = None
        if seq is None:  # the specification: no MsgSeqNum ends the session
            self._fatal("MsgSeqNum (34) missing or not a number", wall_ns, now_ns)
            return []
        if msg.get(49) != self._target or msg.get(56) != self._sender:
            self._reject(msg, R.CompIdProblem, 49 if msg.get(49) != self._target else 56,
                         "CompID problem", wall_ns, now_ns)
            self._fatal("CompID problem", wall_ns, now_ns)
            return []
        if msg.msg_type == b"4" and msg.get(123) != b"Y" and problem is None:
            return self._sequence_reset(msg, now_ns, wall_ns)  # a Reset ignores its own number
        if msg.msg_type == b"2" and problem is None and seq > self.expected:
            self._serve_resend(msg, wall_ns, now_ns)  # answered at once, even out of order
            self._noop.add(seq)
        if seq < self.expected:
            if msg.get(43) == b"Y":
                self.stats.duplicates_ignored += 1
                return []
            self.stats.too_low += 1
            self._fatal(f"MsgSeqNum too low, expecting {self.expected} but received {seq}", wall_ns, now_ns)
            return []
        if seq > self.expected:
            return self._early(msg, seq, now_ns, wall_ns)
        return self._in_sequence(msg, seq, now_ns, wall_ns)

    def _early(self, msg: FixMessage, seq: int, now_ns: int, wall_ns: int) -> list[FixMessage]:
        """A gap before ``msg``: ask for what is missing (once), keep ``msg`` until then."""
        if len(self._queued) >= MAX_QUEUED:
            self._fatal(f"gap from {self.expected} not filled within {MAX_QUEUED} messages", wall_ns, now_ns)
            return []
        self._queued[seq] = msg
        if self.expected > self._gap_requested_to:
            self.send(b"2", [(7, self.expected), (16, 0)], wall_ns, now_ns)
            self._gap_requested_to = seq
            self.stats.resend_requests_sent += 1
        if msg.msg_type == b"5":  # a Logout that arrives early still ends the session
            self._answer_logout(wall_ns, now_ns)
        return []

    def _in_sequence(self, msg: FixMessage, seq: int, now_ns: int, wall_ns: int,
                     logon: bool = False) -> list[FixMessage]:
        """Process ``msg`` (numbered ``expected``), then whatever it lets out of the queue."""
        due: list[FixMessage] = []
        while True:
            self.expected = seq + 1
            if not logon:
                app = self._one(msg, now_ns, wall_ns)
                if app is not None:
                    due.append(app)
            logon = False
            if self.closing or self.state is not SessionState.ACTIVE:
                break
            nxt = self._queued.pop(self.expected, None)
            if nxt is None:
                # a gap fill may have moved past queued numbers
                for stale in [s for s in self._queued if s < self.expected]:
                    del self._queued[stale]
                break
            msg, seq = nxt, self.expected
        if not self._queued and self._gap_requested_to < self.expected:
            self._gap_requested_to = 0
        if not due:
            self.store.next_in = self.expected  # nothing for the gateway to publish first
        return due

    def _one(self, msg: FixMessage, now_ns: int, wall_ns: int) -> FixMessage | None:
        """One message in sequence: a session message is handled here, an application
        message is returned for the gateway."""
        if msg.seq_num in self._noop:
            self._noop.discard(msg.seq_num)
            return None
        seen, problem = self._validated
        if seen is not msg:  # released from the queue: validated when it arrived, not kept
            problem = validate(msg)
        if problem is None:
            problem = self._time_problem(msg, wall_ns)
            if problem is not None:
                self._reject(msg, problem.reason, problem.ref_tag, problem.text, wall_ns, now_ns)
                self._fatal(problem.text, wall_ns, now_ns)
                return None
        if problem is not None:
            self._reject(msg, problem.reason, problem.ref_tag, problem.text, wall_ns, now_ns)
            return None
        t = msg.msg_type
        if t == b"0":
            if msg.get(112) is not None and msg.get(112) == str(self._test_req_id).encode():
                self._test_req_at = 0
        elif t == b"1":
            self.send(b"0", [(112, msg.get(112) or b"")], wall_ns, now_ns)
        elif t == b"2":
            self._serve_resend(msg, wall_ns, now_ns)
        elif t == b"4":
            new = msg.int(36)
            if new < self.expected:
                self._reject(msg, R.ValueIsIncorrect, 36,
                             f"NewSeqNo {new} is below the expected {self.expected}", wall_ns, now_ns)
            else:
                self.expected = new  # the gap fill stands for the messages up to new - 1
        elif t == b"5":
            self._answer_logout(wall_ns, now_ns)
        elif t == b"A":
            self._reject(msg, R.ValueIsIncorrect, 35, "Logon while logged on", wall_ns, now_ns)
        elif t == b"3":
            pass  # the counterparty refused one of ours: nothing to undo in a session layer
        elif MESSAGES[t].admin:
            pass
        else:
            return msg
        return None

    def _time_problem(self, msg: FixMessage, wall_ns: int) -> Invalid | None:
        try:
            sent = parse_utc_timestamp(msg.get(52) or b"")
        except ValueError:
            return Invalid(R.IncorrectDataFormat, 52, "SendingTime is not a UTCTimestamp")
        if abs(sent - wall_ns) > self.cfg.sending_time_tolerance_s * NS:
            return Invalid(R.SendingTimeAccuracyProblem, 52,
                           f"SendingTime more than {self.cfg.sending_time_tolerance_s} s from ours")
        if msg.get(43) == b"Y":
            orig = msg.get(122)
            if orig is None:
                return Invalid(R.RequiredTagMissing, 122, "PossDupFlag=Y without OrigSendingTime")
            try:
                if parse_utc_timestamp(orig) > sent:
                    return Invalid(R.SendingTimeAccuracyProblem, 122, "OrigSendingTime after SendingTime")
            except ValueError:
                return Invalid(R.IncorrectDataFormat, 122, "OrigSendingTime is not a UTCTimestamp")
        return None

    def _sequence_reset(self, msg: FixMessage, now_ns: int, wall_ns: int) -> list[FixMessage]:
        new = msg.int(36)
        if new < self.expected:
            self._reject(msg, R.ValueIsIncorrect, 36,
                         f"SequenceReset to {new}, below the expected {self.expected}", wall_ns, now_ns)
            return []
        self.expected = new
        for stale in [s for s in self._queued if s < new]:
            del self._queued[stale]
        nxt = self._queued.pop(new, None)
        if nxt is not None:
            return self._in_sequence(nxt, new, now_ns, wall_ns)
        self.store.next_in = self.expected
        return []

    def _answer_logout(self, wall_ns: int, now_ns: int) -> None:
        if self.state is SessionState.LOGOUT_SENT:
            self._close("logged out")
            return
        self.send(b"5", [], wall_ns, now_ns)
        self.state = SessionState.LOGOUT_SENT
        self._close("logged out by the counterparty")

    # ------------------------------------------------------------------ resending

    def _serve_resend(self, msg: FixMessage, wall_ns: int, now_ns: int) -> None:
        """Answer a ResendRequest from the store: application messages and Rejects again,
        with PossDupFlag=Y and OrigSendingTime; every run of session messages as one
        SequenceReset-GapFill. Our own new messages go after the resent ones."""
        last = self.store.next_seq - 1
        begin = msg.int(7)
        end = msg.int(16)
        if end == 0 or end > last:
            end = last
        self.stats.resends_served += 1
        if begin < 1 or begin > end:
            return
        gap_from = 0
        for seq, raw in enumerate(self.store.read(begin, end - begin + 1), begin):
            old = _parse(raw)
            if old.msg_type in ADMIN:
                if not gap_from:
                    gap_from = seq
                continue
            if gap_from:
                self._gap_fill(gap_from, seq, wall_ns, now_ns)
                gap_from = 0
            self._resend(old, seq, wall_ns, now_ns)
        if gap_from:
            self._gap_fill(gap_from, end + 1, wall_ns, now_ns)

    def _gap_fill(self, seq: int, new_seq: int, wall_ns: int, now_ns: int) -> None:
        self.out += encode(b"4", self._sender, self._target, seq, utc_timestamp(wall_ns),
                           [(123, b"Y"), (36, new_seq)], poss_dup=True, orig_sending_time=utc_timestamp(wall_ns))
        self._last_send = now_ns

    def _resend(self, old: FixMessage, seq: int, wall_ns: int, now_ns: int) -> None:
        body = [(tag, value) for tag, value in old.fields if tag not in _HEADER_AND_TRAILER]
        self.out += encode(old.msg_type, self._sender, self._target, seq, utc_timestamp(wall_ns), body,
                           poss_dup=True, orig_sending_time=old.get(52))
        self._last_send = now_ns

    # ------------------------------------------------------------------ timers

    def on_timer(self, now_ns: int, wall_ns: int) -> None:
        """Heartbeats, TestRequests, and the limits on silence, Logon and Logout."""
        if self.closing or self.state is SessionState.CLOSED:
            return
        if self.state is SessionState.AWAITING_LOGON:
            if now_ns - self._opened > LOGON_TIMEOUT_NS:
                self._close("no Logon")
            return
        if self.state is SessionState.LOGOUT_SENT:
            if now_ns - self._logout_at > LOGOUT_TIMEOUT_NS:
                self._close("no answer to our Logout")
            return
        hb = self.heartbeat_ns
        silent = now_ns - self._last_recv
        if self._test_req_at:
            if now_ns - self._test_req_at > hb + hb // 5:
                self._close(f"no answer to a TestRequest within {(hb + hb // 5) / NS:g} s")
                return
        elif silent > hb + hb // 5:
            self._test_req_id += 1
            self.send(b"1", [(112, self._test_req_id)], wall_ns, now_ns)
            self._test_req_at = now_ns
            self.stats.test_requests_sent += 1
        if now_ns - self._last_send >= hb:
            self.send(b"0", [], wall_ns, now_ns)


_HEADER_AND_TRAILER = frozenset({8, 9, 35, 49, 56, 34, 43, 52, 122, 10})


def _parse(raw: bytes) -> FixMessage:
    """A message of our own store, framed again."""
    found = FixReader(max(len(raw), 64)).feed(raw)
    if len(found) != 1 or not isinstance(found[0], FixMessage):
        raise ValueError(f"stored message is not one FIX message: {raw[:60]!r}")
    return found[0]


def _identity(wall_ns: int) -> tuple[int, int]:
    """A new store identity for a sequence reset: distinct from every earlier one."""
    return wall_ns, 0


def _text(value: bytes | None) -> str:
    return "(none)" if value is None else value.decode("ascii", "replace")
