"""Which session each engine event is for: the outbound filter of every gateway.

An event names its session in a ``sessionId`` field (a Trade in two: ``makerSessionId``
and ``takerSessionId``); market-data events (``Book*``, marks, statuses) name none. The
fields' offsets come from the schema, by template id, and the filter is one compiled pass
over a whole batch of slots, never a Python line per event that is not ours.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.engine.wire import messages as m

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["MESSAGE_SIZE", "Deliveries", "route", "route_by_session", "warm_up"]

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


@njit(cache=True, nogil=True)
def _group(rows: np.ndarray, sids: np.ndarray, sizes_by_tid: np.ndarray, sessions: np.ndarray,
           region: np.ndarray, at: int, out_rows: np.ndarray, out_sizes: np.ndarray, out_positions: np.ndarray,
           present: np.ndarray, bounds: np.ndarray) -> int:
    """``route``'s deliveries regrouped by session (ascending id), row order kept within
    each; ``present``/``bounds``: the sessions with deliveries and where theirs start."""
    n = rows.shape[0]
    k = sessions.shape[0]
    counts = np.zeros(k + 1, np.int64)
    which = np.empty(n, np.int64)
    for i in range(n):
        j = np.searchsorted(sessions, sids[i])
        which[i] = j
        counts[j + 1] += 1
    for j in range(k):
        counts[j + 1] += counts[j]
    m = 0
    for j in range(k):
        if counts[j + 1] > counts[j]:
            present[m] = j
            bounds[m] = counts[j]
            m += 1
    bounds[m] = n
    fill = counts[:k].copy()
    for i in range(n):
        j = which[i]
        d = fill[j]
        fill[j] += 1
        r = rows[i]
        out_rows[d] = r
        out_positions[d] = at + r
        out_sizes[d] = sizes_by_tid[np.int64(region[r, 2]) | (np.int64(region[r, 3]) << 8)]
    return m


class Deliveries(NamedTuple):
    """A batch's deliveries grouped by session: session ``sessions[i]`` gets ``rows[b[i]:b[i+1]]``
    of the region (``sizes`` bytes each, at ring ``positions``), ``b = bounds``."""

    sessions: list[int]
    bounds: list[int]
    rows: np.ndarray
    sizes: np.ndarray
    positions: np.ndarray


def route_by_session(region: np.ndarray, sessions: np.ndarray, at: int) -> Deliveries:
    """``route``'s deliveries of ``region`` (ring slots from position ``at``) grouped by
    session, ascending, each session's in row order, with each message's size and ring
    position: what the gateway hands each session, in two compiled passes."""
    routed, sids = route(region, sessions)
    n = len(routed)
    if not n:
        return Deliveries([], [0], routed, routed, routed)
    rows = np.empty(n, np.int64)
    sizes = np.empty(n, np.int64)
    positions = np.empty(n, np.int64)
    present = np.empty(len(sessions), np.int64)
    bounds = np.empty(len(sessions) + 1, np.int64)
    m = _group(routed, sids, MESSAGE_SIZE, sessions, region, at, rows, sizes, positions, present, bounds)
    return Deliveries(sessions[present[:m]].tolist(), bounds[:m + 1].tolist(), rows, sizes, positions)


def warm_up() -> None:
    """Compile (or load) both passes now, not at the first event that needs them."""
    none = np.zeros(0, np.int64)
    slots = np.zeros((1, m.SLOT_SIZE), np.uint8)
    slots.flags.writeable = False  # what a ring consumer's read gives
    route(slots, np.zeros(1, np.int64))
    _group(none, none, MESSAGE_SIZE, np.zeros(1, np.int64), slots, 0, none.copy(), none.copy(), none.copy(),
           np.zeros(1, np.int64), np.zeros(2, np.int64))
