"""The engine's whole state: one preallocated int64 arena holding a few tables.

Nothing in the engine lives outside the arena, which is what lets the compiled code run
over it a batch at a time (``ringex.engine.kernel.arena`` rebuilds the tables from the offsets in
the globals) and what makes a snapshot one array copy. ``EngineState`` gives named numpy
views of each table; ``named_arrays`` one view per field.

* **Order pool**: ``orders[slot, F]``, one row of ``N_ORDER_FIELDS`` int64 fields per slot
  (``O_PRICE``, ``O_LEAVES``, ...; ``named_arrays`` exposes each field as a strided array,
  struct-of-arrays style). Rows rather than one array per field because matching touches
  most fields of the orders it meets: a row is 3.5 cache lines, 28 separate arrays were
  28 (measured: 1.5x faster on the standard bench stream). A slot is free, resting in a
  price level, a pending stop, a queued order (halted instrument) or the aggressor being
  executed. Free slots form a singly linked free list through ``O_NEXT``.
* **Price levels**: ``levels[(instrument * 2 + side) * price_levels + tick, 0 | 1]`` is the
  head | tail slot of the level's intrusive doubly linked list (``O_NEXT`` / ``O_PREV``),
  oldest first; ``level_bits`` marks non-empty levels, 32 per word, so the next best price
  is found a word at a time.
* **Order id table**: ``id_buckets[orderId & mask]`` heads a chain (``O_HNEXT``) of the live
  orders whose id falls in that bucket; the table has at least twice as many buckets as the
  pool has slots, so chains stay short whatever the ids.
* **Instruments** ``ins[I_*, instrument]`` and **accounts** ``acct[A_*, account]``:
  definitions, best bid/ask, last trade price, the heads of per-instrument lists (all live
  orders in id order, pending stops, queued orders) and per-account lists (live orders in
  id order, for mass cancel).
* **Globals** ``glob[G_*]`` (the arena's first words): the id counters, live counts, the
  free list head, the stamp of the message being processed, the configured sizes and where
  each table starts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ringex.engine.config import EngineConfig
from ringex.engine.kernel.memory import zeroed_words

# -- order pool: one row of int64 fields per slot (``orders[slot, O_*]``) ----------------------
# One dtype for every field: numba then compiles each helper once, not once per int width.
# Rows are 32 words (4 cache lines, the arena keeps them line-aligned), hottest first: line 0
# is what an aggressor reads of every order it meets, line 1 what a fill or a cancel changes.
O_OID = 0  # order id
O_LEAVES = 1  # open quantity: displayed + hidden
O_DISP = 2  # displayed quantity now in the book
O_PRICE = 3  # limit price (0 for market / stop)
O_ACCT = 4
O_NEXT = 5  # level / stop list / queue / free list
O_CLORD = 6
O_SESS = 7
O_HIDDEN = 8  # iceberg reserve
O_DSIZE = 9  # iceberg display size (displayQty); 0 = fully displayed
O_FILLED = 10  # cumulative filled quantity
O_QTY = 11  # total quantity (FIX OrderQty): filled + leaves
O_PREV = 12
O_LEVEL = 13  # tick index of the limit price in the instrument's book window
O_SIDE = 14
O_STATE = 15  # S_*
O_INST = 16
O_TYPE = 17
O_TIF = 18
O_STP = 19  # stpMode as sent (AccountDefault resolved when used)
O_POST = 20
O_REDUCE = 21
O_STOP = 22  # stop price
O_HNEXT = 23  # order id table chain
O_ANEXT = 24  # the account's live orders, ascending id
O_APREV = 25
O_INEXT = 26  # the instrument's live orders, ascending id
O_IPREV = 27
O_RPRICE = 28  # risk price: what a spot buy's hold and a perpetual order's margin were priced at
O_HOLD = 29  # spot: what is left of the order's hold (asset 0 for a buy, the base asset for a sell)
O_OPEN = 30  # perpetual: the quantity counted in its position row's open buy / sell totals
O_FEE_CARRY = 31  # millionths of a money unit the order's fees so far were rounded up by (money.fee_due)
N_ORDER_FIELDS = 32  # whole cache lines
ORDER_FIELD_NAMES = (
    "orderId", "leaves", "displayed", "price", "account", "next", "clOrdId", "sessionId",
    "hidden", "display_size", "filled", "qty", "prev", "level", "side", "state",
    "instrument", "ordType", "timeInForce", "stpMode", "postOnly", "reduceOnly", "stopPrice", "id_next",
    "account_next", "account_prev", "instrument_next", "instrument_prev", "risk_price", "hold",
    "open", "fee_carry",
)
_LINK_FIELDS = (O_NEXT, O_PREV, O_ANEXT, O_APREV, O_INEXT, O_IPREV, O_LEVEL, O_HNEXT)

# order states
S_FREE = 0
S_RESTING = 1
S_STOP = 2  # pending stop, waiting for its trigger
S_QUEUED = 3  # accepted while halted with the Queue policy
S_ACTIVE = 4  # the aggressor being executed

# -- instruments (rows of ins, int64) ---------------------------------------------------------
I_DEFINED = 0
I_TICK = 1
I_LOT = 2
I_MIN_QTY = 3
I_MAX_QTY = 4
I_REF = 5
I_BASE = 6  # tick number of book index 0
I_STATUS = 7
I_POLICY = 8
I_KIND = 9
I_MAKER_FEE = 10
I_TAKER_FEE = 11
I_SYMBOL = 12  # 8 ASCII bytes as one word
I_BID = 13  # best bid book index, -1 when the bid side is empty
I_ASK = 14  # best ask book index, price_levels when the ask side is empty
I_LAST = 15  # last trade price
I_HAS_LAST = 16
I_STOP_HEAD = 17
I_STOP_TAIL = 18
I_STOP_MIN_BUY = 19  # <= the lowest buy stop price (a bound, refreshed when stops are scanned)
I_STOP_MAX_SELL = 20  # >= the highest sell stop price
I_QUEUE_HEAD = 21
I_QUEUE_TAIL = 22
I_LIVE_HEAD = 23
I_LIVE_TAIL = 24
I_LIVE = 25  # live orders
# risk (docs/risk.md): pre-trade limits, kill switch, circuit breaker
I_MAX_NOTIONAL = 26  # maxOrderNotional, 0 = none
I_NOTIONAL_DIV = 27  # notionalDivisor >= 1
I_BAND_PPM = 28  # priceBandPpm, 0 = no band
I_CB_MOVE = 29  # cbMovePpm
I_CB_WINDOW = 30  # cbWindowNs
I_CB_HALT = 31  # cbHaltNs
I_CB_ON = 32  # 1 when the circuit breaker is enabled (all three above non-zero)
I_CB_START = 33  # start of the current breaker window (sequencer time)
I_CB_REF = 34  # the window's reference price, 0 until its first trade
I_CB_UNTIL = 35  # halted by the breaker until this sequencer time; 0 when not
I_KILL = 36  # instrument kill switch engaged
# money and perpetuals (docs/risk.md)
I_BASE_ASSET = 37
I_MAX_ORDER_QTY = 38  # 0 = none
I_MAX_POS = 39  # maxPosition as sent, 0 = none
I_POS_LIMIT = 40  # the position limit in force: maxPosition capped by the overflow cap
I_IM = 41  # imPpm
I_MM = 42  # mmPpm (fraction of initial margin)
I_TIER_N = 43  # tierNotional, 0 = one tier
I_TIER_STEP = 44
I_FUND_INTERVAL = 45
I_FUND_CAP = 46
I_BASIS_CAP = 47
I_BASIS_EMA = 48
I_INDEX = 49
I_MARK = 50
I_EMA = 51  # the smoothed basis before its clamp
I_NEXT_FUND = 52  # sequencer time of the next funding, 0 when funding is off
I_HEAP_LONG = 53  # entries in the longs' at-risk heap
I_HEAP_SHORT = 54
I_LIQ_FEE = 55  # liquidationFeePpm
I_INTEREST = 56  # interestPpm
I_PREMIUM = 57  # the premium (mark - index) / index in ppm since I_PREM_T, clamped to +-100%
I_PREM_T = 58  # sequencer time the premium sum below runs to
I_PREM_HI = 59  # sum of premium * ns since I_FUND_START: I_PREM_HI * 2**32 + I_PREM_LO
I_PREM_LO = 60
I_FUND_START = 61  # start of the funding interval being averaged
I_IMPACT = 62  # impactNotional
N_INS = 63
INS_NAMES = ("defined", "tickSize", "lotSize", "minQty", "maxQty", "referencePrice", "base",
             "status", "haltPolicy", "kind", "makerFeePpm", "takerFeePpm", "symbol", "best_bid",
             "best_ask", "last_price", "has_last", "stop_head", "stop_tail", "stop_min_buy",
             "stop_max_sell", "queue_head", "queue_tail", "live_head", "live_tail", "live",
             "maxOrderNotional", "notionalDivisor", "priceBandPpm", "cbMovePpm", "cbWindowNs",
             "cbHaltNs", "cb_on", "cb_window_start", "cb_ref", "cb_until", "kill", "baseAsset",
             "maxOrderQty", "maxPosition", "position_limit", "imPpm", "mmPpm", "tierNotional",
             "tierStepPpm", "fundingIntervalNs", "fundingCapPpm", "basisCapPpm", "basisEmaPpm",
             "index_price", "mark_price", "basis_ema", "next_funding", "heap_longs", "heap_shorts",
             "liquidationFeePpm", "interestPpm", "premium", "premium_time", "premium_sum_hi",
             "premium_sum_lo", "funding_start", "impactNotional")

# -- accounts (rows of acct, int64) -----------------------------------------------------------
A_CREATED = 0
A_STP = 1
A_LIVE_HEAD = 2
A_LIVE_TAIL = 3
A_LIVE = 4
A_MAX_OPEN = 5  # maxOpenOrders, 0 = no limit
A_KILL = 6  # account kill switch engaged
A_NPOS = 7  # perpetuals in which it holds a position
A_MNEXT = 8  # list of the accounts holding positions in two perpetuals or more
A_MPREV = 9
A_DEBT = 10  # 1: a liquidation left it owing asset 0 while it holds other assets (docs/risk.md)
N_ACCT = 11
# Accounts are stored account-major, ACCT_STRIDE words each (the first 8, everything a new
# order reads of its account, share one cache line); ``acct`` is a transposed view, so code
# indexes it field first, acct[A_*, account], as the other tables.
ACCT_STRIDE = 16
ACCT_NAMES = ("created", "stpDefault", "live_head", "live_tail", "live", "maxOpenOrders", "kill",
              "positions", "multi_next", "multi_prev", "in_debt")

# -- wallets (rows of wallet, int64): wallet[account * max_assets + asset, W_*] ----------------
W_BAL = 0
W_HELD = 1
N_WALLET = 2

# -- positions (rows of pos, int64): pos[account * max_instruments + instrument, P_*] ----------
P_QTY = 0  # signed: long > 0
P_COST = 1  # signed notional paid for the open position
P_REAL = 2  # realized PnL (reporting)
P_B = 3  # open buy quantity (working non-reduce-only orders)
P_S = 4  # open sell quantity
P_BN = 5  # notional of the open buys at their risk prices
P_SN = 6
P_HEAP = 7  # index in its at-risk heap, -1 when in none
N_POS = 8
POS_NAMES = ("qty", "cost", "realized", "open_buy", "open_sell", "open_buy_notional",
             "open_sell_notional", "heap_index")

# -- at-risk heaps: heap[(instrument * 2 + h) * max_accounts + i, 0 | 1] = key | account -------
# h 0: longs keyed by -(liquidation price), h 1: shorts keyed by liquidation price; both
# min-heaps, so the top is the account nearest to liquidation.
MAX_PERPS = 32

# -- globals (glob, int64) ----------------------------------------------------------------------
G_NEXT_ORDER_ID = 0
G_NEXT_TRADE_ID = 1
G_LIVE = 2  # live orders (slots in use outside of execution)
G_STOPS = 3  # stop slots in use (pending stops and queued stop orders)
G_FREE = 4  # free list head
G_EVENTS = 5  # events written by the current batch
G_SEQ = 6  # stamp of the message being processed
G_TS = 7
G_ING = 8
G_CAPACITY = 9  # max_orders
G_LEVELS = 10  # price_levels
G_WORDS = 11  # level_bits words per book side
G_MAX_INSTRUMENTS = 12
G_MAX_ACCOUNTS = 13
G_MAX_STOPS = 14
G_PROTECTION = 15  # market_protection_ticks
G_ID_MASK = 16
G_MESSAGES = 17  # input messages processed, all batches
G_EVENTS_TOTAL = 18  # events emitted, all batches
# where each table lives in the arena (offsets in words) and the sizes that shape it
G_AT_ORDERS = 19
G_AT_LEVELS = 20
G_AT_BITS = 21
G_AT_INS = 22
G_AT_ACCT = 23
G_AT_BUCKETS = 24
G_BOOK_SLOTS = 25  # max_instruments * 2 * price_levels
G_BUCKETS = 26  # id_buckets length
G_ARENA_SIZE = 27
G_KILLS = 28  # kill switches engaged, all levels (0: nothing to check for a new order)
G_KILL_EXCHANGE = 29  # exchange kill switch engaged
G_CB_HALTS = 30  # instruments halted by their circuit breaker (0: nothing to reopen)
G_KILLED_N = 31  # sessions with an engaged kill switch
G_KILLED = 32  # their ids, G_KILLED .. G_KILLED + MAX_KILLED_SESSIONS
MAX_KILLED_SESSIONS = 32
G_FEES = G_KILLED + MAX_KILLED_SESSIONS  # the fee account's balance (asset 0)
G_MAX_ASSETS = G_FEES + 1
G_AT_WALLET = G_FEES + 2
G_AT_POS = G_FEES + 3
G_AT_HEAP = G_FEES + 4
G_PERP_N = G_FEES + 5  # perpetual instruments defined
G_FUNDING_N = G_FEES + 6  # perpetuals with funding on (0: nothing to check before a message)
G_MULTI_HEAD = G_FEES + 7  # first account holding positions in two perpetuals or more
G_AT_RISK = G_FEES + 8  # a re-key put an account at or past its liquidation price: check after the message
G_PERPS = G_FEES + 9  # perpetual ids, ascending, G_PERPS .. G_PERPS + MAX_PERPS
G_DEBTORS = G_PERPS + MAX_PERPS  # accounts in debt (0: nothing to check for a new order)
N_GLOB = G_DEBTORS + 1
GLOB_NAMES = ("next_order_id", "next_trade_id", "live_orders", "stop_slots", "free_head",
              "batch_events", "seq", "timestampNs", "ingressNs", "max_orders", "price_levels",
              "level_words", "max_instruments", "max_accounts", "max_stops",
              "market_protection_ticks", "id_mask", "messages", "events", "at_orders", "at_levels",
              "at_bits", "at_ins", "at_acct", "at_buckets", "book_slots", "buckets", "arena_size",
              "kills", "kill_exchange", "cb_halts", "killed_sessions")
# (the killed session ids, fee_balance, ... follow; named_arrays exposes the whole globals)

BITS_PER_WORD = 32  # level_bits words hold 32 flags so int64 arithmetic never touches the sign
NO_STOP_BUY = 1 << 62  # I_STOP_MIN_BUY when there is no buy stop
NO_STOP_SELL = -(1 << 62)


class EngineState(NamedTuple):
    """The engine's state: one int64 arena and named views of the tables inside it.

    The compiled engine is handed only ``arena`` (one array is cheap to pass between
    compiled functions; a tuple of seven is not) and rebuilds the views from the offsets in
    its globals (``ringex.engine.kernel.arena.views``)."""

    arena: np.ndarray  # everything below, back to back
    glob: np.ndarray  # (N_GLOB,), first in the arena
    orders: np.ndarray  # (max_orders, N_ORDER_FIELDS): one row per slot
    levels: np.ndarray  # (max_instruments * 2 * price_levels, 2): head, tail
    level_bits: np.ndarray  # (max_instruments * 2 * level_words,)
    ins: np.ndarray  # (N_INS, max_instruments)
    acct: np.ndarray  # (N_ACCT, max_accounts)
    id_buckets: np.ndarray  # (power of two >= 2 * max_orders,)
    wallet: np.ndarray  # (max_accounts * max_assets, N_WALLET)
    pos: np.ndarray  # (max_accounts * max_instruments, N_POS)
    heap: np.ndarray  # (max_instruments * 2 * max_accounts, 2)


def _views(arena: np.ndarray) -> EngineState:
    g = arena[:N_GLOB]
    cap, book, maxi, maxa = int(g[G_CAPACITY]), int(g[G_BOOK_SLOTS]), int(g[G_MAX_INSTRUMENTS]), int(g[G_MAX_ACCOUNTS])
    at = {k: int(g[k]) for k in (G_AT_ORDERS, G_AT_LEVELS, G_AT_BITS, G_AT_INS, G_AT_ACCT, G_AT_BUCKETS,
                                 G_AT_WALLET, G_AT_POS, G_AT_HEAP)}
    assets = int(g[G_MAX_ASSETS])
    words = int(g[G_WORDS]) * maxi * 2
    return EngineState(
        arena=arena,
        glob=g,
        orders=arena[at[G_AT_ORDERS]: at[G_AT_ORDERS] + cap * N_ORDER_FIELDS].reshape(cap, N_ORDER_FIELDS),
        levels=arena[at[G_AT_LEVELS]: at[G_AT_LEVELS] + 2 * book].reshape(book, 2),
        level_bits=arena[at[G_AT_BITS]: at[G_AT_BITS] + words],
        ins=arena[at[G_AT_INS]: at[G_AT_INS] + N_INS * maxi].reshape(N_INS, maxi),
        acct=arena[at[G_AT_ACCT]: at[G_AT_ACCT] + ACCT_STRIDE * maxa].reshape(maxa, ACCT_STRIDE)[:, :N_ACCT].T,
        id_buckets=arena[at[G_AT_BUCKETS]: at[G_AT_BUCKETS] + int(g[G_BUCKETS])],
        wallet=arena[at[G_AT_WALLET]: at[G_AT_WALLET] + maxa * assets * N_WALLET].reshape(maxa * assets, N_WALLET),
        pos=arena[at[G_AT_POS]: at[G_AT_POS] + maxa * maxi * N_POS].reshape(maxa * maxi, N_POS),
        heap=arena[at[G_AT_HEAP]: at[G_AT_HEAP] + maxi * 2 * maxa * 2].reshape(maxi * 2 * maxa, 2),
    )


def allocate(config: EngineConfig) -> EngineState:
    """A fresh, empty engine state sized by ``config``."""
    cap = config.max_orders
    levels = config.price_levels
    words = -(-levels // BITS_PER_WORD)
    buckets = 1024
    while buckets < 2 * cap:
        buckets *= 2
    book = config.max_instruments * 2 * levels
    sizes = [
        (G_AT_ORDERS, cap * N_ORDER_FIELDS),
        (G_AT_LEVELS, 2 * book),
        (G_AT_BITS, config.max_instruments * 2 * words),
        (G_AT_INS, N_INS * config.max_instruments),
        (G_AT_ACCT, ACCT_STRIDE * config.max_accounts),
        (G_AT_BUCKETS, buckets),
        (G_AT_WALLET, config.max_accounts * config.max_assets * N_WALLET),
        (G_AT_POS, config.max_accounts * config.max_instruments * N_POS),
        (G_AT_HEAP, config.max_instruments * 2 * config.max_accounts * 2),
    ]
    at = N_GLOB
    where = {}
    for key, size in sizes:
        at = -(-at // 8) * 8  # each table starts on a cache line
        where[key] = at
        at += size
    arena = zeroed_words(at)  # starts a cache line, and so does every table
    glob = arena[:N_GLOB]
    for key, off in where.items():
        glob[key] = off
    glob[G_ARENA_SIZE] = at
    glob[G_NEXT_ORDER_ID] = 1
    glob[G_NEXT_TRADE_ID] = 1
    glob[G_FREE] = 0
    glob[G_CAPACITY] = cap
    glob[G_LEVELS] = levels
    glob[G_WORDS] = words
    glob[G_MAX_INSTRUMENTS] = config.max_instruments
    glob[G_MAX_ACCOUNTS] = config.max_accounts
    glob[G_MAX_ASSETS] = config.max_assets
    glob[G_MULTI_HEAD] = -1
    glob[G_MAX_STOPS] = config.max_stops
    glob[G_PROTECTION] = config.market_protection_ticks
    glob[G_ID_MASK] = buckets - 1
    glob[G_BOOK_SLOTS] = book
    glob[G_BUCKETS] = buckets
    st = _views(arena)

    for field in _LINK_FIELDS:
        st.orders[:, field] = -1
    st.orders[:-1, O_NEXT] = np.arange(1, cap, dtype=np.int64)  # the free list, slot 0 first
    for row in (I_BID, I_STOP_HEAD, I_STOP_TAIL, I_QUEUE_HEAD, I_QUEUE_TAIL, I_LIVE_HEAD, I_LIVE_TAIL):
        st.ins[row] = -1
    st.ins[I_ASK] = levels
    st.ins[I_STOP_MIN_BUY] = NO_STOP_BUY
    st.ins[I_STOP_MAX_SELL] = NO_STOP_SELL
    st.ins[I_NOTIONAL_DIV] = 1
    st.acct[A_LIVE_HEAD] = -1
    st.acct[A_LIVE_TAIL] = -1
    st.acct[A_MNEXT] = -1
    st.acct[A_MPREV] = -1
    st.pos[:, P_HEAP] = -1
    st.levels[...] = -1
    st.id_buckets[...] = -1
    return st


def named_arrays(state: EngineState) -> dict[str, np.ndarray]:
    """Every array of the state under a stable dotted name (views, not copies)."""
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(ORDER_FIELD_NAMES):
        out[f"order.{name}"] = state.orders[:, i]
    for i, name in enumerate(INS_NAMES):
        out[f"instrument.{name}"] = state.ins[i]
    for i, name in enumerate(ACCT_NAMES):
        out[f"account.{name}"] = state.acct[i]
    assets = int(state.glob[G_MAX_ASSETS])
    out["wallet.balance"] = state.wallet[:, W_BAL].reshape(-1, assets)
    out["wallet.held"] = state.wallet[:, W_HELD].reshape(-1, assets)
    maxi = int(state.glob[G_MAX_INSTRUMENTS])
    for i, name in enumerate(POS_NAMES):
        out[f"position.{name}"] = state.pos[:, i].reshape(-1, maxi)
    out["heap"] = state.heap
    out["level.head"] = state.levels[:, 0]
    out["level.tail"] = state.levels[:, 1]
    out["level.bits"] = state.level_bits
    out["order_id.buckets"] = state.id_buckets
    out["globals"] = state.glob
    return out


def snapshot(state: EngineState) -> np.ndarray:
    """A copy of the whole state (the arena); ``restore`` puts it back."""
    return state.arena.copy()


def restore(state: EngineState, snap: np.ndarray) -> None:
    """Overwrite ``state`` in place with a ``snapshot`` of an engine of the same configuration."""
    if snap.shape != state.arena.shape or snap.dtype != state.arena.dtype:
        raise ValueError(f"snapshot is {snap.dtype}{snap.shape}, this engine's arena is "
                         f"{state.arena.dtype}{state.arena.shape} (another configuration?)")
    state.arena[...] = snap
