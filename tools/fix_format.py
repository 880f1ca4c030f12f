"""How ``ringex fix-client`` shows FIX messages to people: each message received as one
line (``format_message``: the local time, a word such as FILLED, CXL-REJ or LOGOUT, then what
the message says, its codes by name); with ``--raw``, every message sent and received as
``tag=value|...`` (``format_raw``)."""

from __future__ import annotations

import time

from ringex.gateways.fix_codec import SOH, FixMessage
from ringex.gateways.fix_dictionary import FIELDS, MESSAGES
from ringex.tools.fix_commands import (
    BUSINESS_REJECT_REASONS, CXL_REJ_REASONS, EXEC_TYPES, MASS_REJECT_REASONS, MASS_RESPONSES, ORD_REJ_REASONS,
    ORD_STATUSES, SESSION_REJECT_REASONS, _name, _s, describe_order,
)


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"


def _tag_name(tag: str | None) -> str:
    if tag is None:
        return ""
    try:
        return f"tag {tag} ({FIELDS[int(tag)].name})"
    except (KeyError, ValueError):
        return f"tag {tag}"


def _msg_type_name(t: str | None) -> str:
    spec = MESSAGES.get((t or "").encode())
    return f"{spec.name} ({t})" if spec is not None else f"MsgType {t}"


def _execution_report(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    exec_type, status = g(150), g(39)
    if exec_type == "F":
        word = "FILLED" if status == "2" else "PARTIAL"
    else:
        word = EXEC_TYPES.get(exec_type or "", f"EXEC {exec_type}")
    parts = [describe_order({t: v.decode("ascii", "replace") for t, v in msg.fields})]
    if exec_type in ("I", "D", "L", "5") or (exec_type == "8" and status != "8"):
        parts.append(f"status {_name(ORD_STATUSES, status)}")
    if g(32) is not None:
        parts.append(f"last {g(32)} @ {g(31) or '?'}")
    parts.append(f"cum {g(14) or '?'}")
    parts.append(f"leaves {g(151) or '?'}")
    if g(14) not in (None, "0") and g(6) is not None:
        parts.append(f"avg {g(6)}")
    if g(37) not in (None, "NONE"):
        parts.append(f"order {g(37)}")
    parts.append(f"clordid {g(11) or '?'}")
    if g(41):
        parts.append(f"orig {g(41)}")
    if g(103) is not None:
        parts.append(f"reason {_name(ORD_REJ_REASONS, g(103))}")
    if g(58):
        parts.append(f"text {g(58)}")
    if msg.get(43) == b"Y":
        parts.append("(resent)")
    return f"{word:<9} " + "  ".join(parts)


def _cancel_reject(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    what = "replace" if g(434) == "2" else "cancel"
    parts = [f"{what} of {g(41) or '?'} refused", f"reason {_name(CXL_REJ_REASONS, g(102))}",
             f"status {_name(ORD_STATUSES, g(39))}"]
    if g(37) not in (None, "NONE"):
        parts.append(f"order {g(37)}")
    parts.append(f"clordid {g(11) or '?'}")
    if g(58):
        parts.append(f"text {g(58)}")
    return f"{'CXL-REJ':<9} " + "  ".join(parts)


def _mass_cancel_report(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    if g(531) == "0":
        parts = ["cancel-all refused", f"reason {_name(MASS_REJECT_REASONS, g(532))}"]
    else:
        scope = _name(MASS_RESPONSES, g(531)) + (f" {g(55)}" if g(55) else "")
        parts = [f"cancel-all ({scope})", f"{g(533) or '?'} canceled"]
    parts.append(f"clordid {g(11) or '?'}")
    if g(58):
        parts.append(f"text {g(58)}")
    return f"{'MASS-CXL':<9} " + "  ".join(parts)


def _session_reject(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    parts = [f"message {g(45) or '?'}" + (f" {_msg_type_name(g(372))}" if g(372) else "") + " refused by the session",
             f"reason {_name(SESSION_REJECT_REASONS, g(373))}"]
    if g(371):
        parts.append(_tag_name(g(371)))
    if g(58):
        parts.append(f"text {g(58)}")
    return f"{'REJECT':<9} " + "  ".join(parts)


def _business_reject(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    parts = [f"{_msg_type_name(g(372))} refused", f"reason {_name(BUSINESS_REJECT_REASONS, g(380))}"]
    if g(379):
        parts.append(f"ref {g(379)}")
    if g(45):
        parts.append(f"message {g(45)}")
    if g(58):
        parts.append(f"text {g(58)}")
    return f"{'BIZ-REJ':<9} " + "  ".join(parts)


def format_message(msg: FixMessage, when: float | None = None) -> str | None:
    """One readable line for a message received (prefixed by the local time ``when``, a
    ``time.time()``); None for those a person need not see (Heartbeat, TestRequest, ...)."""
    when = time.time() if when is None else when
    t = msg.msg_type
    if t == b"8":
        text = _execution_report(msg)
    elif t == b"9":
        text = _cancel_reject(msg)
    elif t == b"r":
        text = _mass_cancel_report(msg)
    elif t == b"3":
        text = _session_reject(msg)
    elif t == b"j":
        text = _business_reject(msg)
    elif t == b"5":
        text = f"{'LOGOUT':<9} " + (_s(msg, 58) or "logged out")
    elif t == b"A":
        text = (f"{'LOGON':<9} logged on as {_s(msg, 56)} to {_s(msg, 49)}, heartbeat {_s(msg, 108)} s"
                + (", sequence numbers reset" if msg.get(141) == b"Y" else ""))
    else:
        return None
    return f"{_clock(when)} {text}"


def format_raw(data: bytes) -> str:
    return data.replace(SOH, b"|").decode("ascii", "backslashreplace")
