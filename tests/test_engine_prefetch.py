"""The engine's memory and its prefetching: the arena is aligned, zeroed and faulted in, and
prefetching the next messages' rows never changes an output or trips on hostile input."""

from __future__ import annotations

import numpy as np

from engine_kit import SMALL, mixed_stream, patch
from ringex.engine.config import EngineConfig
from ringex.engine.engine import MatchingEngine, pack_slots
from ringex.engine.kernel.memory import HUGE_PAGE, MAPPED_FROM_BYTES, zeroed_words
from ringex.engine.wire.messages import SCHEMA

CONFIG = EngineConfig(**{**SMALL, "max_orders": 48, "max_stops": 6, "price_levels": 32})


def test_small_arenas_are_zeroed_and_start_a_cache_line():
    for n in (1, 7, 1000, 12345):
        words = zeroed_words(n)
        assert words.shape == (n,) and words.dtype == np.int64
        assert words.ctypes.data % 64 == 0
        assert not words.any()
        words[:] = 7  # writable, and all of it is ours
        assert int(words.sum()) == 7 * n


def test_large_arenas_are_mapped_on_huge_page_boundaries():
    n = MAPPED_FROM_BYTES // 8 + 3
    words = zeroed_words(n)
    assert words.shape == (n,)
    assert words.ctypes.data % HUGE_PAGE == 0
    assert not words.any()
    words[-1] = -1
    words[0] = 1
    assert int(words[0]) == 1 and int(words[-1]) == -1


def test_the_default_engine_arena_is_mapped():
    eng = MatchingEngine(EngineConfig())
    assert eng.state.arena.ctypes.data % HUGE_PAGE == 0


def _template(message: bytes) -> int:
    return int.from_bytes(message[2:4], "little")


def _hostile(messages: list[bytes], seed: int) -> list[bytes]:
    """``messages`` with, after every other one, a NewOrder or a CancelOrder whose account,
    instrument, order id, side, quantity and price are raw values from anywhere in their
    fields' ranges (edges half the time)."""
    rng = np.random.default_rng(seed)
    new = next(m for m in messages if _template(m) == SCHEMA.message("NewOrder").template_id)
    cxl = next(m for m in messages if _template(m) == SCHEMA.message("CancelOrder").template_id)
    edges = [0, 1, 2, 3, 4, 5, 47, 48, 49, 255, 65535, 2**31 - 1, 2**32 - 1]

    def pick(bits: int) -> int:
        if rng.random() < 0.5:
            return int(rng.choice(edges)) % (1 << bits)
        return int(rng.integers(0, 1 << bits))

    out: list[bytes] = []
    for i, m in enumerate(messages):
        out.append(m)
        if i % 2:
            continue
        if rng.random() < 0.5:
            price = int(rng.integers(-(2**63), 2**63 - 1)) if rng.random() < 0.3 else int(rng.integers(-5, 300))
            out.append(patch(new, "NewOrder", account=pick(32), instrument=pick(32), price=price,
                             side=int(rng.integers(0, 4)), qty=int(rng.integers(-2, 50))))
        else:
            oid = pick(63) if rng.random() < 0.7 else (1 << 64) - int(rng.integers(1, 1 << 20))  # reads negative
            out.append(patch(cxl, "CancelOrder", account=pick(32), instrument=pick(32), orderId=oid))
    return out


def test_hostile_messages_give_the_same_output_in_any_batching():
    """With one message per batch nothing is prefetched; in a whole batch every stage runs
    over every message: the bytes must be the same, and nothing may crash."""
    for seed in (1, 2):
        stream = pack_slots(_hostile(mixed_stream(900, seed=seed), seed))
        outs = []
        for batch in (len(stream), 1, 5):
            eng = MatchingEngine(CONFIG)
            outs.append(b"".join(eng.process(stream[i: i + batch]).tobytes()
                                 for i in range(0, len(stream), batch)))
        assert outs[0] == outs[1] == outs[2]
