"""Which session each engine event is for: the outbound filter of every gateway.

An event names its session in a ``sessionId`` field (a Trade in two: ``makerSessionId``
and ``takerSessionId``); market-data events (``Book*``, marks, statuses) name none. The
fields' offsets come from the schema, by template id, so the filter is a few numpy
gathers over a whole batch of slots, never a Python line per event that is not ours.
"""

from __future__ import annotations

import numpy as np

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

_WORD = np.arange(4)


def _gather_u32(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    idx = offsets[:, None] + _WORD
    return np.ascontiguousarray(np.take_along_axis(rows, idx, axis=1)).view("<u4")[:, 0]


def route(rows: np.ndarray, sessions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``rows`` ((k, slot) uint8 ring slots) and ``sessions`` (the session ids served
    here), ``(row_index, session_id)`` of every delivery, in row order: a Trade between two
    of our sessions is delivered to both, once to a session on both sides of it."""
    if not len(rows):
        empty = np.zeros(0, np.int64)
        return empty, empty
    tids = rows[:, 2].astype(np.int64) | (rows[:, 3].astype(np.int64) << 8)
    o1, o2 = _FIRST[tids], _SECOND[tids]
    s1 = _gather_u32(rows, o1).astype(np.int64)
    s2 = _gather_u32(rows, o2).astype(np.int64)
    mine1 = (o1 > 0) & np.isin(s1, sessions)
    mine2 = (o2 > 0) & np.isin(s2, sessions) & ~(mine1 & (s1 == s2))
    r1, r2 = np.nonzero(mine1)[0], np.nonzero(mine2)[0]
    if not len(r2):
        return r1, s1[r1]
    rows_at = np.concatenate([r1, r2])
    order = np.argsort(rows_at, kind="stable")
    return rows_at[order], np.concatenate([s1[r1], s2[r2]])[order]
