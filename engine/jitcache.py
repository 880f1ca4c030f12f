"""Keeps numba's on-disk cache of the engine honest.

numba freezes module-level constants (here: every field offset and enum value, derived
from ``schema.xml`` by ``ringex.engine.layout``) into the compiled code, and its
``cache=True`` index only notices a change of the *calling* function's own source file. A
new schema, or an edit to one of the engine's helper modules, would otherwise load stale
machine code. ``guard_cache`` keeps a stamp (schema fingerprint + the engine sources +
numba/numpy/Python versions) next to the cache files and deletes the engine's cache entries
whenever the stamp changes, before anything is loaded from them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numba
import numpy as np

from ringex.engine.messages import SCHEMA

ENGINE_DIR = Path(__file__).resolve().parent
# Modules whose njit functions end up in the compiled engine, and the files they derive from.
KERNEL_MODULES = ("arena", "events", "book", "matcher", "kernel", "fixed", "heap", "margin", "money",
                  "liquidation", "prefetch")
SOURCES = tuple(f"{m}.py" for m in KERNEL_MODULES) + (
    "layout.py", "state.py", "codec.py", "messages.py", "schema.xml", "jitcache.py")
STAMP_NAME = "ringex-engine-kernel.stamp"


def fingerprint() -> str:
    """What the compiled engine depends on, hashed."""
    h = hashlib.sha256()
    h.update(SCHEMA.fingerprint.encode())
    for name in SOURCES:
        h.update(name.encode())
        h.update((ENGINE_DIR / name).read_bytes())
    h.update(f"{numba.__version__} {np.__version__} {sys.version}".encode())
    return h.hexdigest()[:32]


@numba.njit(cache=True)
def _probe() -> int:  # never called: its dispatcher tells where numba caches this folder
    return 0


def cache_dir() -> Path | None:
    """Where numba keeps the engine modules' cache files (None when the JIT is disabled)."""
    cache = getattr(_probe, "_cache", None)
    path = getattr(cache, "_cache_path", None)
    return Path(path) if path else None


def guard_cache() -> bool:
    """Clear the engine's numba cache if it was built from other sources; True if cleared.
    Runs when ``ringex.engine.layout`` is imported, before any engine function compiles or
    loads from the cache."""
    where = cache_dir()
    if where is None:
        return False
    fp = fingerprint()
    stamp = where / STAMP_NAME
    try:
        if stamp.read_text() == fp:
            return False
    except OSError:
        pass
    try:
        where.mkdir(parents=True, exist_ok=True)
        for module in KERNEL_MODULES:
            for pattern in (f"{module}.*.nbi", f"{module}.*.nbc"):
                for f in where.glob(pattern):
                    f.unlink(missing_ok=True)
        tmp = where / f"{STAMP_NAME}.{os.getpid()}"
        tmp.write_text(fp)
        os.replace(tmp, stamp)
    except OSError:
        return False  # a read-only cache location: numba will not write there either
    return True
