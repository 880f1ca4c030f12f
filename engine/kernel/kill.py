"""Kill switches at four levels: account, session, instrument, exchange (docs/risk.md).

``on_kill_switch`` engages or releases one and, on engage, cancels every working order in its
scope in ascending order id; ``kill_reason`` is what a new order is refused for while one is
engaged (``glob[G_KILLS]`` counts the engaged switches so that a new order checks nothing
when there are none).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.admin import known_account, known_instrument
from ringex.engine.kernel.arena import views
from ringex.engine.kernel.events import get
from ringex.engine.kernel.flags import INLINE, JIT
from ringex.engine.kernel.matching import remove_order
from ringex.engine.kernel.state import (
    A_KILL, G_CAPACITY, G_KILL_EXCHANGE, G_KILLED, G_KILLED_N, G_KILLS, I_KILL, MAX_KILLED_SESSIONS,
    O_ACCT, O_INST, O_OID, O_SESS, O_STATE,
)
from ringex.engine.wire.layout import (
    CXL_KILL, KILL_ACCOUNT, KILL_ENGAGE, KILL_EXCHANGE, KILL_INSTRUMENT, KILL_RELEASE, KILL_SESSION,
    KS_ACCOUNT, KS_ACTION, KS_INSTRUMENT, KS_SCOPE, KS_SESSION, R_INVALID_SCOPE, R_KILL_ACCOUNT,
    R_KILL_CAPACITY, R_KILL_EXCHANGE, R_KILL_INSTRUMENT, R_KILL_SESSION, R_NONE, R_UNKNOWN_ACCOUNT,
    R_UNKNOWN_INSTRUMENT, T_KILL_SWITCH,
)


@njit(**INLINE)
def killed_session(glob, sess):
    """Index of ``sess`` in the table of killed sessions, or -1."""
    for k in range(glob[G_KILLED_N]):
        if glob[G_KILLED + k] == sess:
            return k
    return -1


@njit(**INLINE)
def kill_reason(acct, ins, glob, acc, sess, inst):
    """The first engaged kill switch a new order falls under (docs/risk.md), or R_NONE."""
    if acct[A_KILL, acc] != 0:
        return R_KILL_ACCOUNT
    if glob[G_KILLED_N] != 0 and killed_session(glob, sess) >= 0:
        return R_KILL_SESSION
    if ins[I_KILL, inst] != 0:
        return R_KILL_INSTRUMENT
    if glob[G_KILL_EXCHANGE] != 0:
        return R_KILL_EXCHANGE
    return R_NONE


@njit(**JIT)
def on_kill_switch(mem, out, i64, b):
    """docs/risk.md "Admin messages": KillSwitch engage / release at four levels."""
    st = views(mem)
    ins, acct, glob = st.ins, st.acct, st.glob
    acc = get(i64, b, KS_ACCOUNT)
    sess = get(i64, b, KS_SESSION)
    inst = get(i64, b, KS_INSTRUMENT)
    scope = get(i64, b, KS_SCOPE)
    action = get(i64, b, KS_ACTION)
    engage = action == KILL_ENGAGE
    reason = R_NONE
    if scope < KILL_ACCOUNT or scope > KILL_EXCHANGE or (not engage and action != KILL_RELEASE):
        reason = R_INVALID_SCOPE
    elif scope == KILL_ACCOUNT and not known_account(acct, glob, acc):
        reason = R_UNKNOWN_ACCOUNT
    elif scope == KILL_INSTRUMENT and not known_instrument(ins, glob, inst):
        reason = R_UNKNOWN_INSTRUMENT
    elif (scope == KILL_SESSION and engage and killed_session(glob, sess) < 0
          and glob[G_KILLED_N] >= MAX_KILLED_SESSIONS):
        reason = R_KILL_CAPACITY
    out = ev.admin_result(out, glob, 0, acc, inst, T_KILL_SWITCH, reason)
    if reason != R_NONE:
        return out
    on = 1 if engage else 0
    if scope == KILL_ACCOUNT:
        glob[G_KILLS] += on - acct[A_KILL, acc]
        acct[A_KILL, acc] = on
    elif scope == KILL_INSTRUMENT:
        glob[G_KILLS] += on - ins[I_KILL, inst]
        ins[I_KILL, inst] = on
    elif scope == KILL_EXCHANGE:
        glob[G_KILLS] += on - glob[G_KILL_EXCHANGE]
        glob[G_KILL_EXCHANGE] = on
    else:
        k = killed_session(glob, sess)
        if engage and k < 0:
            glob[G_KILLED + glob[G_KILLED_N]] = sess
            glob[G_KILLED_N] += 1
            glob[G_KILLS] += 1
        elif not engage and k >= 0:
            last = glob[G_KILLED_N] - 1
            glob[G_KILLED + k] = glob[G_KILLED + last]
            glob[G_KILLED + last] = 0
            glob[G_KILLED_N] = last
            glob[G_KILLS] -= 1
    out = ev.kill_switch_status(out, glob, acc, sess, inst, scope, action)
    if engage:
        out = cancel_scope(mem, out, scope, acc, sess, inst, np.int64(CXL_KILL))
    return out


@njit(**JIT)
def cancel_scope(mem, out, scope, acc, sess, inst, reason):
    """Cancel, for ``reason``, every working order in a kill switch's ``scope`` (a
    session's orders, too, for a session-scoped mass cancel), in ascending order id: a scan of
    the order pool, as no list links a session's orders."""
    st = views(mem)
    o, glob = st.orders, st.glob
    cap = glob[G_CAPACITY]
    oids = np.empty(cap, dtype=np.int64)
    slots = np.empty(cap, dtype=np.int64)
    n = 0
    for s in range(cap):
        if o[s, O_STATE] == 0:  # S_FREE
            continue
        if scope == KILL_ACCOUNT and o[s, O_ACCT] != acc:
            continue
        if scope == KILL_SESSION and o[s, O_SESS] != sess:
            continue
        if scope == KILL_INSTRUMENT and o[s, O_INST] != inst:
            continue
        oids[n] = o[s, O_OID]
        slots[n] = s
        n += 1
    order = np.argsort(oids[:n])
    for k in range(n):
        out = remove_order(mem, out, slots[order[k]], reason)
    return out
