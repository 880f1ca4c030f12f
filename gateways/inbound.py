"""The binary gateway's order path, compiled: every order of a receive in one call.

A connection's receive yields many frames; the common case is a run of order-entry messages
from an established session, each needing the same checks (SBE header, template, length),
the session's numbering (FIXP idempotent flow), its throttle and its permitted accounts, then
a copy into the gateway's staging rows with the stamp and the session written. ``take_orders``
does that for a whole run of frames in compiled code and stops at the first frame that needs
anything else: a session message, a malformed frame, a duplicate number or a gap, a
throttle breach, an account the session may not trade. The gateway handles that one frame in
Python (``SbeGatewayAgent._on_frame``, which gives each case its own answer) and calls again
from the next. So the rare paths are written once, in Python, and the per-order cost is a
few dozen nanoseconds.

The session's numbering and its throttle live in int64 words shared with the Python side
(``SESSION_*`` here, ``throttle.LEVEL`` .. ``CAP``), so both paths count the same.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.engine.wire import messages as m
from ringex.engine.wire.layout import STAMP_ING, STAMP_SEQ, STAMP_TS
from ringex.gateways import throttle as t

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["DONE", "SLOW", "FULL", "SESSION_WORDS", "S_RECV", "S_EXPECTED", "S_DUPLICATES", "S_ID", "take_orders"]

DONE = 0  # every frame taken
SLOW = 1  # the frame at the returned index needs the Python path
FULL = 2  # the staging rows are full

# a session's words
S_RECV = 0  # the number the client's next application message carries
S_EXPECTED = 1  # the next number not yet taken (ahead of the store's nextIn by what is in flight)
S_DUPLICATES = 2  # messages ignored as already taken
S_ID = 3  # the session id, written into every order
SESSION_WORDS = 4

_SCHEMA_ID = m.SCHEMA.schema_id
_VERSION = m.SCHEMA.version
_TEMPLATES = max(x.template_id for x in m.ORDER_ENTRY) + 1
_SIZE = np.zeros(_TEMPLATES, np.int64)  # by template id; 0: not order entry
_BLOCK = np.zeros(_TEMPLATES, np.int64)
_SESSION_AT = np.zeros(_TEMPLATES, np.int64)
_ACCOUNT_AT = np.zeros(_TEMPLATES, np.int64)
for _x in m.ORDER_ENTRY:
    _SIZE[_x.template_id] = _x.size
    _BLOCK[_x.template_id] = _x.block_length
    _SESSION_AT[_x.template_id] = _x.offset("sessionId")
    _ACCOUNT_AT[_x.template_id] = _x.offset("account")
_MASS_CANCEL = m.MassCancel.template_id
_SCOPE_AT = m.MassCancel.offset("scope")
_SCOPE_SESSION = int(m.MassCancelScope.Session)
_SCOPE_ACCOUNT = int(m.MassCancelScope.Account)
_SCOPE_ACCOUNT_INSTRUMENT = int(m.MassCancelScope.AccountInstrument)
# the Stamp's words, the same in every message that crosses a ring (engine/wire/layout.py checks)
_SEQ_AT, _TS_AT, _INGRESS_AT = 8 * STAMP_SEQ, 8 * STAMP_TS, 8 * STAMP_ING
_NS = t.NS
_LEVEL, _AT, _RATE, _CAP = t.LEVEL, t.AT, t.RATE, t.CAP


@njit(cache=True, inline="always")
def _u16(buf, at):
    return np.int64(buf[at]) | (np.int64(buf[at + 1]) << 8)


@njit(cache=True, inline="always")
def _u32(buf, at):
    return _u16(buf, at) | (_u16(buf, at + 2) << 16)


@njit(cache=True, inline="always")
def _put_u64(row, at, value):
    for b in range(8):
        row[at + b] = (value >> (8 * b)) & 0xFF


@njit(cache=True, nogil=True)
def take_orders(buf: np.ndarray, frames: np.ndarray, first: int, session: np.ndarray, bucket: np.ndarray,
                permitted: np.ndarray, stage: np.ndarray, stage_session: np.ndarray, stage_seq: np.ndarray,
                staged: int, now_ns: int, wall_ns: int) -> tuple[int, int, int]:
    """Stage the orders of ``frames[first:]`` (rows of payload offset, length into ``buf``)
    for the session whose words are ``session`` (and throttle ``bucket``, accounts
    ``permitted``: one byte per account id). Returns ``(index, staged, status)``: where it
    stopped, the staging rows now used, and DONE, SLOW (frame ``index`` needs the Python
    path) or FULL."""
    slot = stage.shape[1]
    for i in range(first, frames.shape[0]):
        at = frames[i, 0]
        n = frames[i, 1]
        if n < 8:
            return i, staged, SLOW
        tid = _u16(buf, at + 2)
        if tid <= 0 or tid >= _TEMPLATES or _SIZE[tid] == 0 or n != _SIZE[tid] or _u16(buf, at) != _BLOCK[tid] \
                or _u16(buf, at + 4) != _SCHEMA_ID or _u16(buf, at + 6) != _VERSION:
            return i, staged, SLOW
        seq = session[S_RECV]
        if seq != session[S_EXPECTED]:
            return i, staged, SLOW  # a duplicate or a gap: answered in Python
        rate = bucket[_RATE]
        if rate:
            if now_ns > bucket[_AT]:
                elapsed = min(now_ns - bucket[_AT], bucket[_CAP] // rate + 1)
                bucket[_LEVEL] = min(bucket[_CAP], bucket[_LEVEL] + elapsed * rate)
                bucket[_AT] = now_ns
            if bucket[_LEVEL] < _NS:
                return i, staged, SLOW  # refused in Python, which takes no token
        check_account = True
        if tid == _MASS_CANCEL:
            scope = buf[at + _SCOPE_AT]
            if scope == _SCOPE_SESSION:
                check_account = False  # its own orders, whatever the account
            elif scope != _SCOPE_ACCOUNT and scope != _SCOPE_ACCOUNT_INSTRUMENT:
                return i, staged, SLOW  # everybody's orders, or no scope: Python decides
        if check_account:
            account = _u32(buf, at + _ACCOUNT_AT[tid])
            if account >= permitted.shape[0] or permitted[account] == 0:
                return i, staged, SLOW
        if staged >= stage.shape[0]:
            return i, staged, FULL
        row = stage[staged]
        for b in range(n):
            row[b] = buf[at + b]
        for b in range(n, slot):
            row[b] = 0
        # the stamp and the session are the gateway's to write; the stamp's seq word carries
        # the client's number until the sequencer stamps its copy (sbe_gateway._recover_applied)
        _put_u64(row, _SEQ_AT, seq)
        _put_u64(row, _TS_AT, 0)
        _put_u64(row, _INGRESS_AT, wall_ns)
        sid = session[S_ID]
        sat = _SESSION_AT[tid]
        for b in range(4):
            row[sat + b] = (sid >> (8 * b)) & 0xFF
        if rate:
            bucket[_LEVEL] -= _NS
        session[S_RECV] = seq + 1
        session[S_EXPECTED] = seq + 1
        stage_session[staged] = sid
        stage_seq[staged] = seq
        staged += 1
    return frames.shape[0], staged, DONE
