"""The engine process's first step: compile the matching engine, or load it from numba's cache.

On a fresh clone (and after any change under ``engine/kernel/`` or ``engine/wire/``) numba
compiles the kernel: minutes on a small host, during which the process polls no ring and
would otherwise say nothing. So a compile is announced before it starts and timed when it
ends, and flagged in the process's counters (``COMPILING_LABEL``: 1 while compiling) so that
the launcher waits for it without calling the process hung, and shows progress meanwhile.
A start that loads from the cache logs one short line.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ringex.engine.engine import jit_enabled, warm_up
from ringex.ringbuffer.counters import TYPE_USER, CountersManager

log = logging.getLogger("ringex.engine")

# The counter the launcher reads (tools/launcher.py): 1 while this process compiles.
COMPILING_LABEL = "engine: compiling the matching engine"
# What a first compile costs (README, measured on an idle 2-core host).
COMPILE_ESTIMATE = "about 3 minutes on an idle 2-core host"


def kernel_cache_warm() -> bool:
    """Whether the compiled kernel will load from numba's cache (True) or be compiled.

    Asks numba's own index of the entry point, as numba does before compiling: an entry for
    this bytecode and this CPU, written from the current source. Importing the kernel first
    clears entries built from other sources (``ringex.engine.kernel.jitcache``), so a stale
    cache reads as cold. The callees need no look: a cached entry point carries their code."""
    if not jit_enabled():
        return True  # plain Python: nothing to compile
    from ringex.engine.kernel import dispatch

    entry = dispatch.process_batch
    if entry.overloads:
        return True  # already compiled or loaded in this process
    try:
        cache = entry._cache
        codegen = entry.targetctx.codegen()
        return any(cache._index_key(key[0], codegen) == key for key in cache._cache_file._load_index())
    except Exception:  # noqa: BLE001 - numba's internals moved: announce, rather than stay silent
        return False


def cache_location() -> str:
    from ringex.engine.kernel import jitcache

    where = jitcache.cache_dir()
    return str(where) if where is not None else "(no cache: the JIT is disabled)"


def warm_up_engine(
    counters: CountersManager | None,
    *,
    cache_warm: Callable[[], bool] = kernel_cache_warm,
    compile_engine: Callable[[], float] = warm_up,
    where: Callable[[], str] = cache_location,
) -> float:
    """Compile or load the engine, saying which; returns the seconds it took.

    The keyword arguments are seams for tests (a cold cache without a 3-minute compile)."""
    flag = counters.allocate(COMPILING_LABEL, TYPE_USER) if counters is not None else None
    t0 = time.perf_counter()
    if cache_warm():
        compile_engine()
        took = time.perf_counter() - t0
        log.info("matching engine loaded from cache in %.1f s", took)
        return took
    log.info("compiling the matching engine: first start only, %s; cached in %s",
                COMPILE_ESTIMATE, where())
    if flag is not None:
        flag.set(1)
    try:
        compile_engine()
    finally:
        if flag is not None:
            flag.set(0)
    took = time.perf_counter() - t0
    log.info("compiled the matching engine in %.0f s", took)
    return took
