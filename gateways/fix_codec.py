"""FIX 4.4 tag=value: how the FIX gateway cuts a TCP stream into messages, checks and writes them.

A message is fields ``tag=value`` each ended by SOH (0x01), always opening with the same three
and closing with the checksum::

    8=FIX.4.4<SOH>9=<BodyLength><SOH>35=<MsgType><SOH> ... <SOH>10=<CheckSum><SOH>

* BodyLength (9) counts the bytes from the first byte after its own SOH up to and including
  the SOH just before ``10=``.
* CheckSum (10) is the sum of every byte before ``10=`` modulo 256, written as exactly three
  digits (``10=007``).

(FIX 4.4 specification, Volume 2, "Message Format" and "CheckSum Calculation".)

Garbled and invalid
-------------------
A message that cannot be framed is *garbled*: wrong BeginString, BodyLength not a number or
not pointing at ``10=``, CheckSum not three digits or not matching, longer than the receiver's
maximum, a field without ``=``. The specification says to ignore such a message: no Reject, the
sequence number is not consumed, the gap shows up with the next good message. ``FixReader``
reports each as ``Garbled`` (for logging) and resynchronises at the next ``8=FIX`` that starts
a field (at the front of what is buffered, or right after a SOH), so a good message after a
bad one is never lost. Bytes it drops are reported, one ``Garbled`` per drop, so a bad message
that arrives in pieces may be reported in pieces. The buffer never holds more than the largest
message accepted plus one read: garbage without any ``8=`` is dropped as it comes.

A framed message can still be *invalid*: an unknown tag, a required one missing, a value of
the wrong format. ``validate`` says which SessionRejectReason a Reject (35=3) must give; the
session layer sends it and consumes the sequence number.

The codec does no I/O: ``FixReader.feed`` takes whatever a socket read returned, ``encode``
returns the bytes to send.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from ringex.gateways.fix_dictionary import (
    FIELDS,
    HEADER_ALLOWED,
    HEADER_REQUIRED,
    MESSAGES,
    TRAILER,
    FieldType,
    SessionRejectReason,
)

SOH = b"\x01"
BEGIN_STRING = b"FIX.4.4"

# Every message starts with exactly these bytes (BeginString, then the BodyLength tag).
_PREFIX = b"8=" + BEGIN_STRING + SOH + b"9="
# What a resynchronisation looks for, after a SOH or at the front of the buffer.
_SYNC = b"8=FIX"
_TRAILER_LENGTH = len(b"10=000\x01")
# More BodyLength digits than this cannot be under any sane maximum; no need to wait for a SOH.
_MAX_LENGTH_DIGITS = 9
# A checksum field followed by a new message inside what BodyLength claims as body: the claim
# is wrong, and waiting for the bytes it asks for would hold up the next message.
_EARLY_END = re.compile(rb"\x0110=\d{3}\x018=FIX")

_DIGITS = re.compile(rb"[0-9]+")
_SIGNED_DIGITS = re.compile(rb"-?[0-9]+")
_FLOAT = re.compile(rb"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_MULTIPLE_CHAR = re.compile(rb"[^ ](?: [^ ])*")
_TIMESTAMP = re.compile(rb"([0-9]{4})([0-9]{2})([0-9]{2})-([0-9]{2}):([0-9]{2}):([0-9]{2})"
                        rb"(?:\.([0-9]{3}|[0-9]{6}))?")
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_NONE: frozenset[int] = frozenset()  # a message with no unparsed tag (nearly all) shares this one
_NS_PER_DAY = 86_400 * 10**9


def _parse_int(text: bytes) -> int | None:
    """A strict integer: ``int()`` alone would also take spaces, ``+`` and ``_``."""
    if _SIGNED_DIGITS.fullmatch(text) is None:
        return None
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        return None


class FixMessage:
    """One framed message: its bytes and its fields in wire order, parsed once.

    A tag that is not an integer is kept as tag 0 (as QuickFIX's parser reads it) and
    remembered, so that ``validate`` can tell it from a literal ``0=``. Raises ``ValueError``
    for a field without ``=``: such bytes are not a message."""

    __slots__ = ("raw", "fields", "msg_type", "_first", "_unparsed")

    def __init__(self, raw: bytes) -> None:
        if not raw.endswith(SOH):
            raise ValueError("a FIX message ends with SOH")
        fields: list[tuple[int, bytes]] = []
        unparsed: set[int] = set()
        for i, field in enumerate(raw[:-1].split(SOH)):
            tag_text, eq, value = field.partition(b"=")
            if not eq:
                raise ValueError(f"field {i} ({field[:32]!r}) has no '='")
            if tag_text.isdigit():  # ASCII digits only: what _parse_int takes, without its regex
                tag = int(tag_text) if len(tag_text) < 20 else _parse_int(tag_text)
            else:
                tag = _parse_int(tag_text)
            if tag is None:
                unparsed.add(i)
                tag = 0
            fields.append((tag, value))
        self.raw = raw
        self.fields = fields
        self._first = first = dict(reversed(fields))  # a repeated tag: its first value
        self._unparsed = frozenset(unparsed) if unparsed else _NONE
        self.msg_type = first.get(35, b"")

    @property
    def fields_by_tag(self) -> dict[int, bytes]:
        """Each tag's value (a repeated tag's first one); not to be changed."""
        return self._first

    def get(self, tag: int) -> bytes | None:
        return self._first.get(tag)

    def has(self, tag: int) -> bool:
        return tag in self._first

    def int(self, tag: int) -> int:
        value = self._first.get(tag)
        if value is None:
            raise ValueError(f"tag {tag} is missing")
        number = _parse_int(value)
        if number is None:
            raise ValueError(f"tag {tag} is not an integer: {value!r}")
        return number

    @property
    def seq_num(self) -> int | None:
        value = self._first.get(34)
        if value is None:
            return None
        return int(value) if value.isdigit() and len(value) < 20 else _parse_int(value)

    def __repr__(self) -> str:
        return f"FixMessage({self.raw.replace(SOH, b'|').decode('ascii', 'backslashreplace')})"


class Garbled(NamedTuple):
    """Bytes that could not be framed as a message; the specification says to ignore them."""

    reason: str
    raw: bytes


_SCAN = None  # fix_scan.scan, imported at the first feed_scanned: numba only where it is used


def _load_scan():  # type: ignore[no-untyped-def]
    global _SCAN
    from ringex.gateways.fix_scan import scan

    _SCAN = scan
    return scan


#: feed_scanned's tables: rows for more messages than one read holds, and their fields
SCAN_MESSAGES = 2048
SCAN_FIELDS = 1 << 16


class Scanned(NamedTuple):
    """What ``FixReader.feed_scanned`` found: ``count`` messages scanned from ``data``
    (``fix_scan``'s rows ``messages[:count]`` and their ``fields``), then ``rest``."""

    data: bytes
    count: int
    messages: np.ndarray
    fields: np.ndarray
    rest: list[FixMessage | Garbled]


class FixReader:
    """Frames one connection's byte stream: ``feed`` what a read returned, get back every
    message (or ``Garbled`` drop) now complete; an unfinished message waits for the next feed.

    A message longer than ``max_message`` bytes is garbled, so the buffer never holds more
    than that plus one feed."""

    def __init__(self, max_message: int = 8192) -> None:
        if max_message < len(_PREFIX) + _TRAILER_LENGTH:
            raise ValueError(f"max_message {max_message} is smaller than any FIX message")
        self.max_message = max_message
        self._buf = bytearray()
        self._scan_rows: np.ndarray | None = None  # feed_scanned's tables, made at its first call
        self._scan_fields: np.ndarray | None = None

    @property
    def pending(self) -> int:
        """Bytes received that are not yet a message (or a drop)."""
        return len(self._buf)

    def take_pending(self) -> bytes:
        """The bytes received that are not yet a message, taken out (the reader is empty
        after): for a caller that reads the rest of the stream its own way."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def feed(self, data: bytes) -> list[FixMessage | Garbled]:
        self._buf += data
        out: list[FixMessage | Garbled] = []
        if self._buf.startswith(_PREFIX):
            self._take_good(out)
        while self._buf:
            found = self._next()
            if found is None:
                break
            out.append(found)
        return out

    def feed_scanned(self, data: bytes, sender: np.ndarray, target: np.ndarray) -> Scanned:
        """``feed``, with the run of whole, well-framed messages at the front framed and
        checked by ``fix_scan.scan`` (``sender``/``target``: the CompIDs its ``M_COMP_OK``
        compares, as uint8 arrays) instead of made into ``FixMessage`` objects: the caller
        makes one of a scanned message only when it needs one. What follows that run
        (anything garbled, good messages after it) comes in ``rest`` as ``feed`` gives it.
        The tables are the reader's, good until the next call."""
        scan = _SCAN or _load_scan()
        if self._buf:
            self._buf += data
            data = bytes(self._buf)
        rows, fields = self._scan_rows, self._scan_fields
        if rows is None:
            from ringex.gateways.fix_scan import FIELD_WORDS, MESSAGE_WORDS

            rows = self._scan_rows = np.zeros((SCAN_MESSAGES, MESSAGE_WORDS), np.int64)
            fields = self._scan_fields = np.zeros((SCAN_FIELDS, FIELD_WORDS), np.int64)
        n, used = scan(np.frombuffer(data, np.uint8), len(data), self.max_message, sender, target, rows, fields)
        rest: list[FixMessage | Garbled] = []
        if used == len(data) and not self._buf:
            return Scanned(data, n, rows, fields, rest)  # (the common case: every byte a message)
        self._buf[:] = data[used:]
        if self._buf.startswith(_PREFIX):
            self._take_good(rest)  # (what did not fit the tables)
        while self._buf:
            found = self._next()
            if found is None:
                break
            rest.append(found)
        return Scanned(data, n, rows, fields, rest)

    def _take_good(self, out: list[FixMessage | Garbled]) -> None:
        """The common case first: whole, well-framed messages back to back at the front of the
        buffer, each checked as ``_next`` checks it, cut out with one deletion at the end.
        Stops at the first thing that is not one (an unfinished message, anything garbled),
        which ``_next`` then handles (and reports) as always."""
        buf = self._buf
        view = memoryview(buf)
        size, limit, at = len(buf), self.max_message, 0
        start = len(_PREFIX)
        try:
            while buf.startswith(_PREFIX, at):
                digits_at = at + start
                length_end = buf.find(SOH, digits_at, digits_at + _MAX_LENGTH_DIGITS + 1)
                if length_end <= digits_at:
                    break
                digits = buf[digits_at:length_end]
                if not digits.isdigit():
                    break
                trailer_at = length_end + 1 + int(digits)
                total = trailer_at + _TRAILER_LENGTH
                if total - at > limit or total > size:
                    break
                if buf[trailer_at - 1] != 1 or buf[total - 1] != 1 or not buf.startswith(b"10=", trailer_at):
                    break
                checksum = buf[trailer_at + 3:trailer_at + 6]
                if not checksum.isdigit() or sum(view[at:trailer_at]) % 256 != int(checksum):
                    break
                early = _EARLY_END.search(buf, length_end, total)
                if early is not None and early.start() < trailer_at - 1:
                    break
                try:
                    message = FixMessage(bytes(view[at:total]))
                except ValueError:
                    break
                out.append(message)
                at = total
        finally:
            view.release()
        if at:
            del buf[:at]

    def _next(self) -> FixMessage | Garbled | None:
        """The message or drop at the front of the buffer, taken out of it; None to wait."""
        buf = self._buf
        head = bytes(buf[:len(_PREFIX)])
        if not buf.startswith(_SYNC[:len(buf)]):
            return self._drop("no BeginString: garbage before '8=FIX'")
        if head != _PREFIX[:len(head)]:
            if head.startswith(b"8=" + BEGIN_STRING + SOH):
                return self._drop("BodyLength (9) is not the second field")
            return self._drop("BeginString is not FIX.4.4")
        if len(head) < len(_PREFIX):
            return None
        digits_at = len(_PREFIX)
        length_end = buf.find(SOH, digits_at, digits_at + _MAX_LENGTH_DIGITS + 1)
        if length_end < 0:
            digits = bytes(buf[digits_at:digits_at + _MAX_LENGTH_DIGITS + 1])
            if len(digits) <= _MAX_LENGTH_DIGITS and (not digits or digits.isdigit()):
                return None  # the BodyLength digits are still arriving
            return self._drop(f"BodyLength (9) is not a number: {digits!r}")
        digits = bytes(buf[digits_at:length_end])
        if not _DIGITS.fullmatch(digits):
            return self._drop(f"BodyLength (9) is not a number: {digits!r}")
        body_start = length_end + 1
        trailer_at = body_start + int(digits)
        total = trailer_at + _TRAILER_LENGTH
        if total > self.max_message:
            return self._drop(f"message of {total} bytes exceeds the maximum of {self.max_message}")
        early = _EARLY_END.search(buf, length_end, min(len(buf), total))
        if early is not None and early.start() < trailer_at - 1:
            return self._drop(f"BodyLength {int(digits)} runs past the end of the message")
        if len(buf) < total:
            return None
        trailer = bytes(buf[trailer_at:total])
        if buf[trailer_at - 1] != SOH[0] or not trailer.startswith(b"10="):
            return self._drop(f"BodyLength {int(digits)} does not point at CheckSum (10)")
        if not (_DIGITS.fullmatch(trailer[3:6]) and trailer[6:] == SOH):
            return self._drop(f"CheckSum (10) is not three digits: {trailer!r}")  # so its end is unknown
        computed = sum(memoryview(buf)[:trailer_at]) % 256
        if computed != int(trailer[3:6]):
            return self._drop(f"CheckSum {trailer[3:6].decode()} does not match the computed {computed:03d}",
                              total)
        raw = bytes(buf[:total])
        try:
            message = FixMessage(raw)
        except ValueError as e:
            return self._drop(str(e), total)
        del buf[:total]
        return message

    def _drop(self, reason: str, end: int | None = None) -> Garbled:
        """Drop the bytes up to ``end`` (a bad message whose extent is known) or up to the next
        resynchronisation point; without one, everything but a tail that may begin one."""
        buf = self._buf
        if end is None:
            sync = buf.find(SOH + _SYNC)
            if sync >= 0:
                end = sync + 1
            else:
                end = len(buf)
                last = buf.rfind(SOH, max(0, len(buf) - len(_SYNC)))
                if last >= 0 and _SYNC.startswith(buf[last + 1:]):
                    end = last + 1
        raw = bytes(buf[:end])
        del buf[:end]
        return Garbled(reason, raw)


class Invalid(NamedTuple):
    """Why a framed message must be rejected (Reject, 35=3): SessionRejectReason (373),
    RefTagID (371) where there is one, and Text (58)."""

    reason: SessionRejectReason
    ref_tag: int | None
    text: str


def validate(msg: FixMessage) -> Invalid | None:
    """The session layer's checks of a framed message, in the order they are made; None if
    it passes them all."""
    if passes_validation(msg):
        return None
    return _why_invalid(msg)


def passes_validation(msg: FixMessage) -> bool:
    """Does ``msg`` pass every check of ``_why_invalid``? The same checks, made at once
    against sets prepared per message type (``_Checks``): True only where
    ``_why_invalid`` finds nothing; anything doubtful is left to it (which says why)."""
    checks = _CHECKS.get(msg.msg_type)
    fields = msg.fields
    if checks is None or msg._unparsed or len(fields) < 3:
        return False
    first = msg._first
    if (fields[0][0] != 8 or fields[1][0] != 9 or fields[2][0] != 35 or len(first) != len(fields)
            or not first.keys() <= checks.allowed or not checks.required <= first.keys()):
        return False
    formats = checks.formats
    for tag, value in fields:
        if not value:
            return False
        ok = formats.get(tag)
        if ok is not None and not ok(value):
            return False
    return True


def _why_invalid(msg: FixMessage) -> Invalid | None:
    """``validate``'s checks one by one, in the order the first failure is reported."""
    R = SessionRejectReason
    fields = msg.fields
    for i, expected in enumerate((8, 9, 35)):
        if i >= len(fields) or fields[i][0] != expected:
            return Invalid(R.TagSpecifiedOutOfRequiredOrder, expected, f"tag {expected} must be field {i + 1}")
    for i, (tag, _) in enumerate(fields):
        if i in msg._unparsed:
            return Invalid(R.InvalidTagNumber, None, f"field {i + 1} has a tag that is not a number")
        if tag <= 0:
            return Invalid(R.InvalidTagNumber, tag, f"tag {tag} is not a positive number")
    for tag, value in fields:
        if not value:
            return Invalid(R.TagSpecifiedWithoutValue, tag, f"tag {tag} has no value")
    spec = MESSAGES.get(msg.msg_type)
    if spec is None:
        return Invalid(R.InvalidMsgType, 35, f"MsgType {msg.msg_type!r} is not supported")
    for tag, _ in fields:
        if tag not in FIELDS:
            return Invalid(R.UndefinedTag, tag, f"tag {tag} is not defined")
        if tag not in spec.allowed and tag not in HEADER_ALLOWED and tag not in TRAILER:
            return Invalid(R.TagNotDefinedForMessageType, tag, f"tag {tag} is not defined for {spec.name}")
    seen: set[int] = set()
    for tag, _ in fields:
        if tag in seen:
            return Invalid(R.TagAppearsMoreThanOnce, tag, f"tag {tag} appears more than once")
        seen.add(tag)
    for tag in HEADER_REQUIRED + spec.required:
        if tag not in seen:
            return Invalid(R.RequiredTagMissing, tag, f"required tag {tag} is missing")
    for tag, value in fields:
        if not _well_formed(FIELDS[tag].type, value):
            return Invalid(R.IncorrectDataFormat, tag,
                           f"tag {tag} is not a valid {FIELDS[tag].type.value}: {value[:32]!r}")
    for tag, value in fields:
        allowed = FIELDS[tag].values
        if allowed is None:
            continue
        items = value.split(b" ") if FIELDS[tag].type is FieldType.MULTIPLECHARVALUE else (value,)
        if any(item not in allowed for item in items):
            return Invalid(R.ValueIsIncorrect, tag, f"tag {tag} value {value[:32]!r} is not supported")
    return None


class _Checks(NamedTuple):
    """What a message of one type must satisfy (``passes_validation``): the tags it may carry (all
    positive and defined), those it must, and per tag one test of its value's format and
    accepted values together (absent: any non-empty value)."""

    allowed: frozenset[int]
    required: frozenset[int]
    formats: dict[int, Callable[[bytes], object]]


def _value_check(tag: int) -> Callable[[bytes], object] | None:
    f = FIELDS[tag]
    kind, allowed = f.type, f.values
    if allowed is not None and kind is FieldType.CHAR and all(len(v) == 1 for v in allowed):
        return allowed.__contains__  # one of them: a single character, so well formed too
    if allowed is None and kind is FieldType.STRING:
        return None
    if allowed is None:
        return _FORMATS.get(kind) or (lambda value: _well_formed(kind, value))
    multiple = kind is FieldType.MULTIPLECHARVALUE
    return lambda value: _well_formed(kind, value) and all(
        item in allowed for item in (value.split(b" ") if multiple else (value,)))


#: ``_well_formed`` of a type, where one call does it (a match is true, None false)
_FORMATS: dict[FieldType, Callable[[bytes], object]] = {
    FieldType.INT: _SIGNED_DIGITS.fullmatch, FieldType.SEQNUM: _DIGITS.fullmatch,
    FieldType.LENGTH: _DIGITS.fullmatch, FieldType.NUMINGROUP: _DIGITS.fullmatch,
    FieldType.FLOAT: _FLOAT.fullmatch, FieldType.BOOLEAN: frozenset((b"Y", b"N")).__contains__,
    FieldType.MULTIPLECHARVALUE: _MULTIPLE_CHAR.fullmatch,
    FieldType.UTCTIMESTAMP: lambda value: _well_formed(FieldType.UTCTIMESTAMP, value),
}


def _prepare_checks() -> dict[bytes, _Checks]:
    out = {}
    for msg_type, spec in MESSAGES.items():
        allowed = frozenset(t for t in spec.allowed | HEADER_ALLOWED | set(TRAILER) if t in FIELDS and t > 0)
        formats = {t: check for t in allowed if (check := _value_check(t)) is not None}
        out[msg_type] = _Checks(allowed, frozenset(HEADER_REQUIRED + spec.required), formats)
    return out


def _well_formed(kind: FieldType, value: bytes) -> bool:
    if kind is FieldType.INT:
        return _SIGNED_DIGITS.fullmatch(value) is not None
    if kind in (FieldType.SEQNUM, FieldType.LENGTH, FieldType.NUMINGROUP):
        return _DIGITS.fullmatch(value) is not None
    if kind is FieldType.FLOAT:
        return _FLOAT.fullmatch(value) is not None
    if kind is FieldType.CHAR:
        return len(value) == 1
    if kind is FieldType.BOOLEAN:
        return value in (b"Y", b"N")
    if kind is FieldType.MULTIPLECHARVALUE:
        return _MULTIPLE_CHAR.fullmatch(value) is not None
    if kind is FieldType.UTCTIMESTAMP:
        if len(value) >= 17 and value[:17] in _SECONDS:  # read before: the fraction alone is new
            n = len(value)
            return n == 17 or ((n == 21 or n == 24) and value[17] == 46 and value[18:].isdigit())
        try:
            parse_utc_timestamp(value)
        except ValueError:
            return False
    return True


def parse_utc_timestamp(value: bytes) -> int:
    """``YYYYMMDD-HH:MM:SS[.sss|.ssssss]`` (UTC) as nanoseconds since the epoch. A leap
    second (``:60``), which FIX allows, counts as the first second of the next minute."""
    # Most timestamps share their second with the previous one: its value is remembered,
    # only the fraction is read again.
    n = len(value)
    if n == 21 or n == 24 or n == 17:
        second = _SECONDS.get(value[:17])
        if second is not None:
            if n == 17:
                return second
            fraction = value[18:]
            if value[17] == 46 and fraction.isdigit():  # "."
                return second + int(fraction) * (1_000_000 if n == 21 else 1_000)
    ns = _parse_utc_timestamp(value)
    if n >= 17:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        _SECONDS[value[:17]] = ns - ns % 10**9
    return ns


_SECONDS: dict[bytes, int] = {}  # "YYYYMMDD-HH:MM:SS" -> ns, of timestamps read
_SECONDS_KEPT = 64


def _parse_utc_timestamp(value: bytes) -> int:
    m = _TIMESTAMP.fullmatch(value)
    if m is None:
        raise ValueError(f"not a UTCTimestamp: {value[:32]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        days = datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueError(f"not a UTCTimestamp (no such date): {value!r}") from None
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"not a UTCTimestamp (no such time): {value!r}")
    fraction = m.group(7) or b""
    ns = int(fraction.ljust(9, b"0")) if fraction else 0
    return days * _NS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 10**9 + ns


def utc_timestamp(wall_ns: int) -> bytes:
    """``YYYYMMDD-HH:MM:SS.sss``: FIX 4.4's UTCTimestamp carries milliseconds at most, so the
    rest is truncated."""
    second, ns = divmod(wall_ns, 10**9)
    prefix = _PREFIXES.get(second)
    if prefix is None:
        if len(_PREFIXES) >= _PREFIXES_KEPT:
            _PREFIXES.clear()
        prefix = _PREFIXES[second] = _utc_timestamp(second * 10**9)[:-3]
    return b"%s%03d" % (prefix, ns // 1_000_000)


# utc_timestamp's seconds written "YYYYMMDD-HH:MM:SS." (a report's TransactTime and its
# SendingTime may be a second apart, a resend's OrigSendingTime more)
_PREFIXES: dict[int, bytes] = {}
_PREFIXES_KEPT = 64


def _utc_timestamp(wall_ns: int) -> bytes:
    days, ns = divmod(wall_ns, _NS_PER_DAY)
    date = datetime.date.fromordinal(_EPOCH_ORDINAL + days)
    seconds, ns = divmod(ns, 10**9)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return (f"{date.year:04d}{date.month:02d}{date.day:02d}-{hour:02d}:{minute:02d}:{second:02d}"
            f".{ns // 1_000_000:03d}").encode()


def _value_bytes(tag: int, value: bytes | str | int) -> bytes:
    # bool is an int: True would go out as "True"
    if isinstance(value, bool) or not isinstance(value, (bytes, str, int)):
        raise TypeError(f"tag {tag}: a value is bytes, str or int, got {type(value).__name__}")
    if isinstance(value, int):
        return str(value).encode()
    text = value.encode("ascii") if isinstance(value, str) else value
    if not text:
        raise ValueError(f"tag {tag}: FIX has no empty values")
    if SOH in text:
        raise ValueError(f"tag {tag}: a value cannot contain SOH: {text[:32]!r}")
    return text


def encode_fields(items: list[tuple[int, bytes | str | int]]) -> bytes:
    """``tag=value<SOH>`` for each item. The same tags with the same value types come back
    message after message: each such shape is written with one format string
    (``_template``), kept; a value that turns out empty or holds SOH is left to
    ``_fields_one_by_one``, which refuses it."""
    tags, values = zip(*items)
    shape = (tags, tuple(map(type, values)))
    template = _TEMPLATES.get(shape)
    if template is None:
        template = _template(*shape)
        if len(_TEMPLATES) >= _TEMPLATES_KEPT:
            _TEMPLATES.clear()
        _TEMPLATES[shape] = template
    if template:
        out = template % values
        if out.count(SOH) == len(tags) and b"=\x01" not in out:
            return out
    return _fields_one_by_one(items)


def _template(tags: tuple[int, ...], kinds: tuple[type, ...]) -> bytes:
    """The format string of ``tags`` with values of types ``kinds`` (b"": none, a tag or a
    type ``_fields_one_by_one`` must look at)."""
    parts = []
    for tag, kind in zip(tags, kinds):
        if tag.__class__ is not int or tag <= 0 or kind not in (bytes, int):
            return b""
        parts.append(b"%d=%s\x01" % (tag, b"%d" if kind is int else b"%s"))
    return b"".join(parts)


_TEMPLATES: dict[tuple[tuple[int, ...], tuple[type, ...]], bytes] = {}
_TEMPLATES_KEPT = 1024


def _fields_one_by_one(items: list[tuple[int, bytes | str | int]]) -> bytes:
    parts = []
    for tag, value in items:
        if isinstance(tag, bool) or not isinstance(tag, int) or tag <= 0:
            raise ValueError(f"a tag is a positive integer, got {tag!r}")
        parts.append(b"%d=%s\x01" % (tag, _value_bytes(tag, value)))
    return b"".join(parts)


def encode(msg_type: bytes, sender: bytes, target: bytes, seq: int, sending_time: bytes,
           body: Sequence[tuple[int, bytes | str | int]] | bytes, *, poss_dup: bool = False,
           orig_sending_time: bytes | None = None) -> bytes:
    """One complete message: the standard header (8 9 35 49 56 34 [43] 52 [122]), ``body`` in
    the order given, then the CheckSum. ``body``: (tag, value) pairs, or fields already
    written (``tag=value<SOH>`` each, by a caller that checked its values)."""
    if (body.__class__ is bytes and not poss_dup and orig_sending_time is None and seq.__class__ is int
            and msg_type.__class__ is sender.__class__ is target.__class__ is sending_time.__class__ is bytes
            and msg_type and sender and target and sending_time and body.endswith(SOH)  # type: ignore[union-attr]
            and SOH not in msg_type + sender + target + sending_time):
        # the common case (a report), written in one go; anything doubtful takes the path below
        fields = b"35=%s\x0149=%s\x0156=%s\x0134=%d\x0152=%s\x01%s" % (msg_type, sender, target, seq, sending_time,
                                                                        body)
        message = b"8=FIX.4.4\x019=%d\x01%s" % (len(fields), fields)
        return message + b"10=%03d\x01" % (sum(message) % 256)
    header: list[tuple[int, bytes | str | int]] = [(35, msg_type), (49, sender), (56, target), (34, seq)]
    if poss_dup:
        header.append((43, b"Y"))
    header.append((52, sending_time))
    if orig_sending_time is not None:
        header.append((122, orig_sending_time))
    if body.__class__ is bytes:
        if body and not body.endswith(SOH):  # type: ignore[union-attr]
            raise ValueError("written fields end with SOH")
        fields = encode_fields(header) + body  # type: ignore[operator]
    else:
        fields = encode_fields(header + list(body))
    message = b"8=" + BEGIN_STRING + SOH + b"9=%d\x01" % len(fields) + fields
    return message + b"10=%03d\x01" % (sum(message) % 256)


_CHECKS = _prepare_checks()
