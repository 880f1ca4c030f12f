"""FIX framing and validation, compiled: every well-formed message of a receive in one call.

``FixReader`` (``fix_codec``) frames and checks one message at a time in Python, at ~10 µs a
message; an order costs more in framing and checking than in anything the exchange does
with it. ``scan`` does the common case, a run of whole, well-framed messages back to back,
in one compiled pass over the bytes, with exactly ``FixReader._take_good``'s framing rules
(BeginString, BodyLength, CheckSum, no second message hiding inside a claimed body, every
field ``tag=value``) and, for each message, exactly ``fix_codec.passes_validation``'s
checks (the dictionary's tags, required tags, no repeats, each value's format and accepted
values), from tables made from ``fix_dictionary`` at import. It stops at the first thing
that is not a whole good message (an unfinished one, anything garbled) and leaves it to
``FixReader``, which reports it as always; a check it cannot make in compiled code makes the
message "not known valid", and the Python path then says why (or that it is valid after
all). So the compiled pass only ever takes the Python path's own answers early.

Per message it gives a row of ``MESSAGE_WORDS`` int64 words (``M_*``) and its fields' rows
in ``fields`` (``F_TAG``, ``F_START``, ``F_END``: offsets into the bytes scanned), plus what
the session's fast lane needs (``FixSession.take_in_order``): MsgSeqNum, SendingTime in
nanoseconds, whether PossDupFlag is present and whether SenderCompID and TargetCompID are
the session's.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.gateways.fix_dictionary import FIELDS, HEADER_ALLOWED, HEADER_REQUIRED, MESSAGES, TRAILER, FieldType

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = [
    "F_END", "F_START", "F_TAG", "FIELD_WORDS", "MESSAGE_WORDS", "M_COMP_OK", "M_END", "M_FIELD_COUNT",
    "M_FIELD_FROM", "M_POSS_DUP", "M_SENT_NS", "M_SEQ", "M_START", "M_TYPE", "M_VALID", "MSG_TYPES", "scan",
]

# a message's row
M_START, M_END = 0, 1  # its bytes: [start, end) of what was scanned
M_FIELD_FROM, M_FIELD_COUNT = 2, 3  # its fields' rows
M_TYPE = 4  # index of its MsgType in MSG_TYPES; -1: not a type of the dictionary
M_VALID = 5  # 1: passes every check of fix_codec.passes_validation; 0: not known to
M_SEQ = 6  # MsgSeqNum (valid messages only; one of more than 18 digits makes a message not known valid)
M_SENT_NS = 7  # SendingTime, ns since the epoch (valid messages only)
M_POSS_DUP = 8  # 1: PossDupFlag (43) is present
M_COMP_OK = 9  # 1: SenderCompID and TargetCompID are those the caller gave
MESSAGE_WORDS = 10

F_TAG, F_START, F_END = 0, 1, 2
FIELD_WORDS = 3

# How a value is checked (passes_validation's per-tag test, as a code)
K_UNDEFINED = 0  # not a tag of the dictionary
K_ANY = 1  # any non-empty value (String)
K_INT = 2  # -?[0-9]+
K_DIGITS = 3  # [0-9]+ (SeqNum, Length, NumInGroup)
K_FLOAT = 4  # -?([0-9]+.?[0-9]*|.[0-9]+)
K_CHAR = 5  # one character
K_ONE_OF = 6  # one character of the tag's set
K_MULTI = 7  # characters of the tag's set, separated by single spaces
K_TIMESTAMP = 8  # UTCTimestamp: YYYYMMDD-HH:MM:SS[.sss|.ssssss], a real date and time
K_UNSURE = 9  # a test not made here: the message is left to the Python path

MAX_TAG = max(FIELDS) + 1
_SOH, _EQ, _SPACE, _DOT, _MINUS, _ZERO = 1, 61, 32, 46, 45, 48
_PREFIX = np.frombuffer(b"8=FIX.4.4\x019=", np.uint8)
_SYNC = np.frombuffer(b"8=FIX", np.uint8)
_TRAILER_LENGTH = 7  # "10=ddd" SOH
_MAX_LENGTH_DIGITS = 9
_NS = 1_000_000_000
_NS_PER_DAY = 86_400 * _NS


def _kind(tag: int) -> tuple[int, bytes]:
    """``fix_codec._value_check``'s test for ``tag`` as a code and its character set."""
    f = FIELDS[tag]
    kind, allowed = f.type, f.values
    if allowed is not None and all(len(v) == 1 for v in allowed):
        chars = b"".join(sorted(allowed))
        if kind in (FieldType.CHAR, FieldType.BOOLEAN):
            return K_ONE_OF, chars  # BOOLEAN's allowed values are Y and N: well formed too
        if kind is FieldType.INT and chars.isdigit():
            return K_ONE_OF, chars  # one digit of the set: an int, and one of the values
        if kind is FieldType.MULTIPLECHARVALUE and b" " not in chars:
            return K_MULTI, chars
        return K_UNSURE, b""
    if allowed is not None:
        return K_UNSURE, b""
    simple = {FieldType.STRING: K_ANY, FieldType.INT: K_INT, FieldType.SEQNUM: K_DIGITS,
              FieldType.LENGTH: K_DIGITS, FieldType.NUMINGROUP: K_DIGITS, FieldType.FLOAT: K_FLOAT,
              FieldType.CHAR: K_CHAR, FieldType.UTCTIMESTAMP: K_TIMESTAMP}
    if kind in simple:
        return simple[kind], b""
    if kind is FieldType.BOOLEAN:
        return K_ONE_OF, b"NY"
    if kind is FieldType.MULTIPLECHARVALUE:  # any characters but the space
        return K_MULTI, bytes(c for c in range(256) if c != _SPACE)
    return K_UNSURE, b""


def _msg_code(msg_type: bytes) -> int:
    """A MsgType of one or two bytes as one number (what ``scan`` compares): its bytes and
    its length, so that no two differ only by a zero byte."""
    return msg_type[0] | (msg_type[1] << 8 if len(msg_type) > 1 else 0) | len(msg_type) << 16


MSG_TYPES: tuple[bytes, ...] = tuple(MESSAGES)
_TYPE_CODES = np.array([_msg_code(t) for t in MSG_TYPES], np.int64)
_KINDS = np.zeros(MAX_TAG, np.int8)
_CHARSET_OF = np.zeros(MAX_TAG, np.int64)  # a tag's row of _CHARSETS (row 0: no set)
_SETS = {_tag: _kind(_tag) for _tag in FIELDS}
_CHARSETS = np.zeros((1 + sum(1 for _k, _c in _SETS.values() if _c), 256), np.bool_)
for _tag, (_k, _chars) in _SETS.items():
    _KINDS[_tag] = _k
    if _chars:
        _CHARSET_OF[_tag] = _row = int(_CHARSET_OF.max()) + 1
        for _c in _chars:
            _CHARSETS[_row, _c] = True
_ALLOWED = np.zeros((len(MSG_TYPES), MAX_TAG), np.bool_)
_REQUIRED = np.full((len(MSG_TYPES), 32), -1, np.int64)
for _i, _t in enumerate(MSG_TYPES):
    _spec = MESSAGES[_t]
    for _tag in _spec.allowed | HEADER_ALLOWED | set(TRAILER):
        if _tag in FIELDS and _tag > 0:
            _ALLOWED[_i, _tag] = True
    _req = HEADER_REQUIRED + _spec.required
    _REQUIRED[_i, :len(_req)] = _req


@njit(cache=True, inline="always")
def _digits(buf: np.ndarray, start: int, end: int) -> bool:
    if end <= start:
        return False
    for i in range(start, end):
        if buf[i] < 48 or buf[i] > 57:
            return False
    return True


@njit(cache=True, inline="always")
def _number(buf: np.ndarray, start: int, end: int) -> int:
    v = 0
    for i in range(start, end):
        v = v * 10 + (buf[i] - 48)
    return v


@njit(cache=True)
def _float_ok(buf: np.ndarray, start: int, end: int) -> bool:
    """-?(?:[0-9]+\\.?[0-9]*|\\.[0-9]+), the whole value."""
    i = start
    if i < end and buf[i] == _MINUS:
        i += 1
    whole = 0
    while i < end and 48 <= buf[i] <= 57:
        i += 1
        whole += 1
    if i == end:
        return whole > 0
    if buf[i] != _DOT:
        return False
    i += 1
    frac = 0
    while i < end and 48 <= buf[i] <= 57:
        i += 1
        frac += 1
    return i == end and (whole > 0 or frac > 0)


@njit(cache=True)
def _days(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (the civil-from-days inverse)."""
    y = year - 1 if month <= 2 else year
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True)
def _timestamp(buf: np.ndarray, start: int, end: int) -> tuple[bool, int]:
    """``fix_codec.parse_utc_timestamp`` of the value: (False, 0) where it raises."""
    n = end - start
    if n != 17 and n != 21 and n != 24:
        return False, 0
    for k in range(17):
        c = buf[start + k]
        if k == 8:
            if c != 45:  # "-"
                return False, 0
        elif k == 11 or k == 14:
            if c != 58:  # ":"
                return False, 0
        elif c < 48 or c > 57:
            return False, 0
    if n > 17:
        if buf[start + 17] != _DOT or not _digits(buf, start + 18, end):
            return False, 0
    year = _number(buf, start, start + 4)
    month = _number(buf, start + 4, start + 6)
    day = _number(buf, start + 6, start + 8)
    hour = _number(buf, start + 9, start + 11)
    minute = _number(buf, start + 12, start + 14)
    second = _number(buf, start + 15, start + 17)
    if year < 1 or month < 1 or month > 12 or day < 1:
        return False, 0
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = 29 if month == 2 and leap else (28 if month == 2 else (30 if month == 4 or month == 6 or month == 9 or month == 11 else 31))
    if day > month_days or hour > 23 or minute > 59 or second > 60:
        return False, 0
    fraction = 0
    if n == 21:
        fraction = _number(buf, start + 18, end) * 1_000_000
    elif n == 24:
        fraction = _number(buf, start + 18, end) * 1_000
    return True, _days(year, month, day) * _NS_PER_DAY + ((hour * 60 + minute) * 60 + second) * _NS + fraction


@njit(cache=True)
def _value_ok(buf: np.ndarray, start: int, end: int, kind: int, charset: np.ndarray) -> int:
    """1 the value passes its tag's test, 0 it does not, -1 not known here."""
    if kind == K_ANY:
        return 1
    if kind == K_INT:
        return 1 if _digits(buf, start + 1 if buf[start] == _MINUS else start, end) else 0
    if kind == K_DIGITS:
        return 1 if _digits(buf, start, end) else 0
    if kind == K_FLOAT:
        return 1 if _float_ok(buf, start, end) else 0
    if kind == K_CHAR:
        return 1 if end - start == 1 else 0
    if kind == K_ONE_OF:
        return 1 if end - start == 1 and charset[buf[start]] else 0
    if kind == K_MULTI:  # [^ ](?: [^ ])* with every character in the set
        if (end - start) % 2 == 0:
            return 0
        for i in range(start, end):
            if (i - start) % 2 == 1:
                if buf[i] != _SPACE:
                    return 0
            elif buf[i] == _SPACE or not charset[buf[i]]:
                return 0
        return 1
    if kind == K_TIMESTAMP:
        return 1 if _timestamp(buf, start, end)[0] else 0
    return -1


@njit(cache=True)
def _equal(buf: np.ndarray, start: int, end: int, text: np.ndarray) -> bool:
    if end - start != len(text):
        return False
    for i in range(len(text)):
        if buf[start + i] != text[i]:
            return False
    return True


@njit(cache=True)
def _early_end(buf: np.ndarray, start: int, stop: int, total: int) -> bool:
    """Does SOH "10=" 3 digits SOH "8=FIX" begin in [start, stop) and end by ``total``?"""
    for i in range(start, min(stop, total - 12)):
        if (buf[i] == _SOH and buf[i + 1] == 49 and buf[i + 2] == 48 and buf[i + 3] == _EQ
                and 48 <= buf[i + 4] <= 57 and 48 <= buf[i + 5] <= 57 and 48 <= buf[i + 6] <= 57
                and buf[i + 7] == _SOH and buf[i + 8] == 56 and buf[i + 9] == _EQ and buf[i + 10] == 70
                and buf[i + 11] == 73 and buf[i + 12] == 88):
            return True
    return False


@njit(cache=True)
def _frame(buf: np.ndarray, at: int, size: int, limit: int) -> int:
    """The end of the well-framed message at ``at`` (``FixReader._take_good``'s tests), or -1."""
    p = len(_PREFIX)
    if size - at < p:
        return -1
    for k in range(p):
        if buf[at + k] != _PREFIX[k]:
            return -1
    digits_at = at + p
    length_end = -1
    for i in range(digits_at, min(size, digits_at + _MAX_LENGTH_DIGITS + 1)):
        if buf[i] == _SOH:
            length_end = i
            break
    if length_end <= digits_at or not _digits(buf, digits_at, length_end):
        return -1
    trailer_at = length_end + 1 + _number(buf, digits_at, length_end)
    total = trailer_at + _TRAILER_LENGTH
    if total - at > limit or total > size:
        return -1
    if buf[trailer_at - 1] != _SOH or buf[total - 1] != _SOH:
        return -1
    if buf[trailer_at] != 49 or buf[trailer_at + 1] != 48 or buf[trailer_at + 2] != _EQ:
        return -1
    if not _digits(buf, trailer_at + 3, trailer_at + 6):
        return -1
    s = 0
    for i in range(at, trailer_at):
        s += buf[i]
    if s % 256 != _number(buf, trailer_at + 3, trailer_at + 6):
        return -1
    if _early_end(buf, length_end, trailer_at - 1, total):
        return -1
    return total


@njit(cache=True, nogil=True)
def scan(buf: np.ndarray, size: int, limit: int, sender: np.ndarray, target: np.ndarray,
         messages: np.ndarray, fields: np.ndarray) -> tuple[int, int]:
    """Frame and check the whole, well-framed messages at the front of ``buf[:size]``,
    at most ``len(messages)`` of them and ``len(fields)`` fields in all; each no longer
    than ``limit``. ``sender``/``target``: the SenderCompID and TargetCompID a message must
    carry for ``M_COMP_OK``. Returns (messages, bytes they take): what follows is
    unfinished, not well framed (``FixReader`` reports it), or did not fit."""
    count = 0
    used = 0
    at = 0
    while count < len(messages):
        total = _frame(buf, at, size, limit)
        if total < 0:
            break
        # the fields: tag=value, each ended by SOH (the last one is the checksum's)
        first_field = used
        i = at
        framed = True
        while i < total:
            if used >= len(fields):
                framed = False
                break
            eq = -1
            j = i
            while buf[j] != _SOH:
                if eq < 0 and buf[j] == _EQ:
                    eq = j
                j += 1
            if eq < 0:
                framed = False  # FixMessage refuses it: FixReader reports it garbled
                break
            tag = -1  # not a plain number (or one far past the dictionary): no valid message
            if _digits(buf, i, eq) and eq - i <= 18:
                tag = _number(buf, i, eq)
            fields[used, F_TAG] = tag
            fields[used, F_START] = eq + 1
            fields[used, F_END] = j
            used += 1
            i = j + 1
        if not framed:
            used = first_field
            break
        row = messages[count]
        row[M_START] = at
        row[M_END] = total
        row[M_FIELD_FROM] = first_field
        row[M_FIELD_COUNT] = used - first_field
        row[M_TYPE] = -1
        row[M_VALID] = 0
        row[M_SEQ] = -1
        row[M_SENT_NS] = -1
        row[M_POSS_DUP] = 0
        row[M_COMP_OK] = 0
        _check(buf, row, fields, first_field, used, sender, target)
        count += 1
        at = total
    return count, at


@njit(cache=True)
def _check(buf: np.ndarray, row: np.ndarray, fields: np.ndarray, first: int, end: int, sender: np.ndarray,
           target: np.ndarray) -> None:
    """``passes_validation`` of one framed message, into its row (with the session's digest)."""
    n = end - first
    if n < 3 or fields[first, F_TAG] != 8 or fields[first + 1, F_TAG] != 9 or fields[first + 2, F_TAG] != 35:
        return
    t_start, t_end = fields[first + 2, F_START], fields[first + 2, F_END]
    if t_end - t_start < 1 or t_end - t_start > 2:
        return
    width = t_end - t_start
    code = np.int64(buf[t_start]) | (t_end - t_start) << 16
    if width == 2:
        code |= np.int64(buf[t_start + 1]) << 8
    kind = -1
    for k in range(len(_TYPE_CODES)):
        if _TYPE_CODES[k] == code:
            kind = k
            break
    row[M_TYPE] = kind
    if kind < 0:
        return
    seen = np.zeros(len(_REQUIRED[0]), np.bool_)  # which required tags are present
    valid = True
    sender_ok = target_ok = False
    for f in range(first, end):
        tag = fields[f, F_TAG]
        start, stop = fields[f, F_START], fields[f, F_END]
        if tag <= 0 or tag >= MAX_TAG or not _ALLOWED[kind, tag] or stop <= start:
            valid = False
            break
        for g in range(first, f):  # a repeated tag (messages have a few dozen fields at most)
            if fields[g, F_TAG] == tag:
                valid = False
                break
        if not valid:
            break
        if _value_ok(buf, start, stop, _KINDS[tag], _CHARSETS[_CHARSET_OF[tag]]) != 1:
            valid = False
            break
        for r in range(len(_REQUIRED[kind])):
            if _REQUIRED[kind, r] == tag:
                seen[r] = True
        if tag == 34:
            row[M_SEQ] = _number(buf, start, stop) if stop - start <= 18 else -1
        elif tag == 52:
            row[M_SENT_NS] = _timestamp(buf, start, stop)[1]
        elif tag == 43:
            row[M_POSS_DUP] = 1
        elif tag == 49:
            sender_ok = _equal(buf, start, stop, sender)
        elif tag == 56:
            target_ok = _equal(buf, start, stop, target)
    if not valid:
        return
    for r in range(len(_REQUIRED[kind])):
        if _REQUIRED[kind, r] >= 0 and not seen[r]:
            return
    row[M_VALID] = 1 if row[M_SEQ] >= 0 else 0
    row[M_COMP_OK] = 1 if sender_ok and target_ok else 0


def warm_up() -> None:
    """Compile (or load from the cache) before a duty cycle needs it, with the argument
    types the gateway passes: bytes read (read-only arrays over ``bytes``), CompIDs the
    same, the reader's tables. (A read-only array is a type of its own to numba: one
    missed here compiles in the duty cycle, seconds, and the supervisor takes the gateway
    for hung.)"""
    messages = np.zeros((1, MESSAGE_WORDS), np.int64)
    fields = np.zeros((8, FIELD_WORDS), np.int64)
    empty = np.frombuffer(b"", np.uint8)
    scan(np.frombuffer(b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01", np.uint8), 0, 8192, empty, empty, messages, fields)
