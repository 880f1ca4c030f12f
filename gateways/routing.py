"""Which session each engine event is for: the outbound filter of every gateway.

An event names its session in a ``sessionId`` field (a Trade in two: ``makerSessionId``
and ``takerSessionId``); market-data events (``Book*``, marks, statuses) name none. The
fields' offsets come from the schema, by template id, and the filter is one compiled pass
over a whole batch of slots, never a Python line per event that is not ours.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.wire import messages as m

__all__ = ["MESSAGE_SIZE", "route"]

_TEMPLATES = 1 << 16
_FIRST = np.zeros(_TEMPLATES, np.int64)  # byte offset of the first session field; 0 = none
_SECOND = np.zeros(_TEMPLATES, np.int64)  # of a second one (a Trade's taker side); 0 = none
#: Bytes of each ring message by template id (header included); 0 for an unknown id.
MESSAGE_SIZE = np.zeros(_TEMPLATES, np.int64)

for _layout in m.RING:
    MESSAGE_SIZE[_layout.template_id] = _layout.size
    _fields = [f for f in _layout.fields if f.name == "sessionId" or f.name.endswith("SessionId")]
    if len(_fields) > 2:
        raise RuntimeError(f"{_layout.name}: the router reads at most two session fields")
    for _table, _f in zip((_FIRST, _SECOND), _fields):
        if _f.size != 4:
            raise RuntimeError(f"{_layout.name}.{_f.name}: the router reads 4-byte session ids")
        _table[_layout.template_id] = _f.offset

@njit(cache=True, nogil=True)
def _route(rows: np.ndarray, first: np.ndarray, second: np.ndarray, sessions: np.ndarray,
           out_rows: np.ndarray, out_sids: np.ndarray) -> int:
    n = 0
    for i in range(rows.shape[0]):
        tid = np.int64(rows[i, 2]) | (np.int64(rows[i, 3]) << 8)
        mine1 = False
        s1 = np.int64(-1)
        for which in range(2):
            at = first[tid] if which == 0 else second[tid]
            if at == 0:
                break
            sid = (np.int64(rows[i, at]) | (np.int64(rows[i, at + 1]) << 8) | (np.int64(rows[i, at + 2]) << 16)
                   | (np.int64(rows[i, at + 3]) << 24))
            if which == 1 and mine1 and sid == s1:
                break  # one session on both sides of a trade: delivered once
            j = np.searchsorted(sessions, sid)
            if j < sessions.shape[0] and sessions[j] == sid:
                out_rows[n] = i
                out_sids[n] = sid
                n += 1
                if which == 0:
                    mine1 = True
            if which == 0:
                s1 = sid
    return n


def route(rows: np.ndarray, sessions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``rows`` ((k, slot) uint8 ring slots) and ``sessions`` (the session ids served
    here, sorted int64), ``(row_index, session_id)`` of every delivery, in row order: a Trade
    between two of our sessions is delivered to both, once to a session on both sides of it.
    One compiled pass over the batch."""
    k = len(rows)
    out_rows = np.empty(2 * k, np.int64)
    out_sids = np.empty(2 * k, np.int64)
    n = _route(rows, _FIRST, _SECOND, sessions, out_rows, out_sids) if k else 0
    return out_rows[:n], out_sids[:n]
