"""``MatchingEngine``: the Python face of the compiled matching engine.

    engine = MatchingEngine(EngineConfig(max_orders=100_000))
    events = engine.process(slots)        # (k, SLOT_SIZE) uint8 in -> (n, SLOT_SIZE) uint8 out

``process`` takes a batch of SBE slots exactly as a ring consumer hands them over (one
message per slot, starting at byte 0) and runs the whole batch in one compiled call
(``ringex.engine.kernel.dispatch.process_batch``). It returns a view of the batch's events in the
engine's own output buffer, valid until the next call; the buffer grows when a batch needs
more room, so no batch overflows it. The engine is deterministic: the same input bytes give
the same output bytes, however the input is split into batches.

The rules are docs/engine.md; the state is ``ringex.engine.kernel.state``.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import numpy as np

from ringex.engine.wire.codec import Decoded
from ringex.engine.config import EngineConfig
from ringex.engine.wire.layout import SLOT_SIZE, SLOT_WORDS
from ringex.engine.wire.messages import SCHEMA
from ringex.engine.kernel import state as S

_kernel: Any = None
_warmup_s: float | None = None


def jit_enabled() -> bool:
    """False when numba runs the engine as plain Python (``NUMBA_DISABLE_JIT=1``)."""
    from numba.core import config

    return not config.DISABLE_JIT


def load_kernel() -> Any:
    """Import (and on first use compile or load from cache) the compiled engine."""
    global _kernel
    if _kernel is None:
        from ringex.engine.kernel import dispatch as kernel

        _kernel = kernel.process_batch
    return _kernel


def warm_up() -> float:
    """Compile (or load from numba's cache) the engine's entry point; returns the seconds
    that took in this process (0 after the first time)."""
    global _warmup_s
    if _warmup_s is not None:
        return 0.0
    t0 = time.perf_counter()
    eng = MatchingEngine(EngineConfig(max_instruments=2, max_accounts=2, max_orders=1, price_levels=2,
                                      max_stops=0, market_protection_ticks=0, event_buffer=16),
                         _warm=False)
    eng.process(np.zeros((1, SLOT_SIZE), dtype=np.uint8))
    _warmup_s = time.perf_counter() - t0
    return _warmup_s


class MatchingEngine:
    """A deterministic central limit order book engine over preallocated arrays."""

    def __init__(self, config: EngineConfig | None = None, *, _warm: bool = True) -> None:
        self.config = config if config is not None else EngineConfig()
        self.state = S.allocate(self.config)
        self._out = np.zeros((self.config.event_buffer, SLOT_WORDS), dtype=np.int64)
        self._process = load_kernel()
        self._jit = jit_enabled()
        self._arena = self.state.arena
        self._glob = self.state.glob
        if _warm:
            warm_up()

    # -- the hot path -----------------------------------------------------------------------

    def process(self, slots: np.ndarray) -> np.ndarray:
        """Run a batch of (k, SLOT_SIZE) uint8 slots; returns the (n, SLOT_SIZE) uint8 events,
        a view valid until the next call."""
        if slots.dtype != np.uint8 or slots.ndim != 2 or slots.shape[1] != SLOT_SIZE:
            raise ValueError(f"expected a (k, {SLOT_SIZE}) uint8 slot array, got {slots.dtype}{slots.shape}")
        flags = slots.flags
        if not flags.c_contiguous:
            slots = np.ascontiguousarray(slots)
            flags = slots.flags
        if flags.writeable:
            # One numba signature for every caller: the kernel only reads its input, and
            # ring consumers hand over read-only views, so it always gets a read-only one.
            slots = slots.view()
            slots.flags.writeable = False
        if self._jit:
            out = self._process(self._arena, slots, self._out)
        else:
            with np.errstate(over="ignore"):  # int64 arithmetic wraps, as compiled
                out = self._process(self._arena, slots, self._out)
        self._out = out
        return out[: self._glob[S.G_EVENTS]].view(np.uint8)

    # -- conveniences (tests, tools) ----------------------------------------------------------

    def process_messages(self, messages: Iterable[bytes]) -> list[Decoded]:
        """Encode-free convenience: each message's bytes go into one slot; returns the
        decoded events of the batch."""
        return self.decode(self.process(pack_slots(messages)))

    def send(self, name: str, **fields: Any) -> list[Decoded]:
        """Encode one message (``SCHEMA.encode(name, **fields)``), process it, decode the events."""
        return self.process_messages([SCHEMA.encode(name, **fields)])

    @staticmethod
    def decode(events: np.ndarray) -> list[Decoded]:
        return [SCHEMA.decode(row) for row in events]

    @property
    def output_capacity(self) -> int:
        """Events the output buffer holds before it grows."""
        return int(self._out.shape[0])

    # -- state inspection ---------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        """The whole state as named arrays (views: read, don't write)."""
        return S.named_arrays(self.state)

    def snapshot(self) -> np.ndarray:
        """A copy of the whole state (one int64 array); ``restore`` puts it back."""
        return S.snapshot(self.state)

    def restore(self, snap: np.ndarray) -> None:
        """Put back a ``snapshot`` taken from an engine of the same configuration."""
        S.restore(self.state, snap)

    @property
    def next_order_id(self) -> int:
        return int(self.state.glob[S.G_NEXT_ORDER_ID])

    @property
    def next_trade_id(self) -> int:
        return int(self.state.glob[S.G_NEXT_TRADE_ID])

    @property
    def live_orders(self) -> int:
        return int(self.state.glob[S.G_LIVE])

    def best_bid(self, instrument: int) -> int | None:
        """Best bid price of ``instrument``, None when its bid side is empty."""
        idx = int(self.state.ins[S.I_BID, instrument])
        return None if idx < 0 else self._price(instrument, idx)

    def best_ask(self, instrument: int) -> int | None:
        idx = int(self.state.ins[S.I_ASK, instrument])
        return None if idx >= self.config.price_levels else self._price(instrument, idx)

    def last_price(self, instrument: int) -> int | None:
        ins = self.state.ins
        return int(ins[S.I_LAST, instrument]) if ins[S.I_HAS_LAST, instrument] else None

    def _price(self, instrument: int, idx: int) -> int:
        ins = self.state.ins
        return int((ins[S.I_BASE, instrument] + idx) * ins[S.I_TICK, instrument])

    def order(self, order_id: int) -> dict[str, int] | None:
        """A live order's fields by order id (None when it is not live)."""
        st = self.state
        # the same lookup the kernel does, in Python (not a hot path)
        s = int(st.id_buckets[order_id & int(st.glob[S.G_ID_MASK])]) if order_id > 0 else -1
        while s != -1 and int(st.orders[s, S.O_OID]) != order_id:
            s = int(st.orders[s, S.O_HNEXT])
        if s == -1:
            return None
        return {name: int(st.orders[s, i]) for i, name in enumerate(S.ORDER_FIELD_NAMES)}

    # -- money and positions (docs/risk.md) ----------------------------------------------------

    def balance(self, account: int, asset: int = 0) -> int:
        """An account's balance of ``asset`` (account 0: the insurance fund)."""
        return int(self.state.wallet[account * self.config.max_assets + asset, S.W_BAL])

    def held(self, account: int, asset: int = 0) -> int:
        """What the account's working spot orders hold of ``asset``."""
        return int(self.state.wallet[account * self.config.max_assets + asset, S.W_HELD])

    def fee_balance(self) -> int:
        """The fee account's balance (asset 0)."""
        return int(self.state.glob[S.G_FEES])

    def position(self, account: int, instrument: int) -> dict[str, int]:
        """``qty`` (signed), ``cost`` (signed notional paid), ``realized`` PnL, and the open
        order totals margin counts, of an account in a perpetual."""
        row = self.state.pos[account * self.config.max_instruments + instrument]
        return {name: int(row[i]) for i, name in enumerate(S.POS_NAMES) if name != "heap_index"}

    def mark_price(self, instrument: int) -> int:
        return int(self.state.ins[S.I_MARK, instrument])

    def index_price(self, instrument: int) -> int:
        return int(self.state.ins[S.I_INDEX, instrument])

    def account_risk(self, account: int) -> dict[str, int]:
        """``equity`` (cash + positions at mark), ``initial`` and ``maintenance`` margin, and
        ``free`` collateral (equity - asset-0 holds - initial), as the engine computes them."""
        from ringex.engine.kernel.margin import account_risk

        st = self.state
        eq, im, mm = account_risk(st.glob, account, 0, 0, 0, 0)
        held = self.held(account, 0)
        return {"equity": int(eq), "initial": int(im), "maintenance": int(mm),
                "free": int(eq) - held - int(im)}

    def book(self, instrument: int, side: int) -> list[list[tuple[int, int, int]]]:
        """One side of a book, best level first: each level a list of (orderId, displayed,
        leaves), oldest first. ``side`` is a ``Side`` value."""
        st = self.state
        levels = self.config.price_levels
        sidx = 0 if side == 1 else 1
        base = (instrument * 2 + sidx) * levels
        order = range(levels - 1, -1, -1) if sidx == 0 else range(levels)
        out = []
        for idx in order:
            s = int(st.levels[base + idx, 0])
            if s == -1:
                continue
            level = []
            while s != -1:
                level.append((int(st.orders[s, S.O_OID]), int(st.orders[s, S.O_DISP]), int(st.orders[s, S.O_LEAVES])))
                s = int(st.orders[s, S.O_NEXT])
            out.append(level)
        return out


def pack_slots(messages: Iterable[bytes]) -> np.ndarray:
    """Messages as a (k, SLOT_SIZE) uint8 slot array, one per slot, zero padded."""
    msgs = list(messages)
    slots = np.zeros((len(msgs), SLOT_SIZE), dtype=np.uint8)
    for i, m in enumerate(msgs):
        if len(m) > SLOT_SIZE:
            raise ValueError(f"message {i} is {len(m)} bytes; a slot holds {SLOT_SIZE}")
        slots[i, : len(m)] = np.frombuffer(m, dtype=np.uint8)
    return slots
