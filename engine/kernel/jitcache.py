"""Keeps numba's on-disk cache of the compiled kernel honest, and where it can be written.

numba freezes module-level constants (every field offset and enum value, derived from
``schema.xml`` by ``ringex.engine.wire.layout``) into the compiled code, and its
``cache=True`` index only notices a change of the *calling* function's own source file. A
new schema, or an edit to a helper module, would otherwise load stale machine code.
``guard_cache`` keeps a stamp (the schema fingerprint, every source of ``engine/kernel/``
and ``engine/wire/``, the numba/numpy/Python versions) next to the cache files and deletes
the kernel's cache entries whenever the stamp changes, before anything is loaded from them.

Which modules hold compiled code is not a list: it is this folder. Every module of
``ringex.engine.kernel`` is compiled code or feeds it; anything else lives elsewhere.

Where the cache goes: beside the sources (``engine/kernel/__pycache__``) when that folder is
writable, as in a checkout; otherwise (a pip install into a read-only site-packages) a
per-user directory, ``$XDG_CACHE_HOME/ringex/numba`` (``~/.cache/ringex/numba``), so that
only the first start compiles. ``NUMBA_CACHE_DIR``, when set, wins over both.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numba
import numpy as np

KERNEL_DIR = Path(__file__).resolve().parent
WIRE_DIR = KERNEL_DIR.parent / "wire"
STAMP_NAME = "ringex-engine-kernel.stamp"
CACHE_PATTERNS = ("*.nbi", "*.nbc")


def kernel_modules() -> list[str]:
    """The kernel's modules (every ``*.py`` of its folder but the package's own ``__init__``)."""
    return sorted(p.stem for p in KERNEL_DIR.glob("*.py") if p.stem != "__init__")


def sources() -> list[Path]:
    """Every file the compiled kernel derives from: its own folder and the wire format's."""
    files = [p for d in (KERNEL_DIR, WIRE_DIR) for p in d.iterdir()
             if p.is_file() and p.suffix in (".py", ".xml")]
    return sorted(files, key=lambda p: (p.parent.name, p.name))


def fingerprint() -> str:
    """What the compiled kernel depends on, hashed."""
    h = hashlib.sha256()
    for path in sources():
        h.update(f"{path.parent.name}/{path.name}".encode())
        h.update(path.read_bytes())
    h.update(f"{numba.__version__} {np.__version__} {sys.version}".encode())
    return h.hexdigest()[:32]


def _writable(folder: Path) -> bool:
    cache = folder / "__pycache__"
    try:
        cache.mkdir(exist_ok=True)
    except OSError:
        return False
    return os.access(cache, os.W_OK | os.X_OK)


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ringex" / "numba"


def choose_cache_location() -> Path | None:
    """Point numba at a writable cache for the kernel (see the module's text); returns the
    directory chosen when it is not beside the sources, None when it is (or when the user
    set ``NUMBA_CACHE_DIR``). Must run before the kernel's modules are imported: numba
    picks a function's cache location when it is decorated."""
    if numba.config.CACHE_DIR or _writable(KERNEL_DIR):
        return None
    where = user_cache_dir()
    where.mkdir(parents=True, exist_ok=True)
    numba.config.CACHE_DIR = str(where)
    return where


def cache_dir() -> Path | None:
    """Where numba keeps the kernel modules' cache files (None when the JIT is disabled):
    asked of a dispatcher made here and now, so it follows ``choose_cache_location``."""

    def probe() -> int:  # never called: its dispatcher tells where numba caches this folder
        return 0

    cache = getattr(numba.njit(cache=True)(probe), "_cache", None)
    path = getattr(cache, "_cache_path", None)
    return Path(path) if path else None


def guard_cache() -> bool:
    """Clear the kernel's numba cache if it was built from other sources; True if cleared."""
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
        modules = set(kernel_modules())
        for pattern in CACHE_PATTERNS:
            for f in where.glob(pattern):
                if f.name.split(".", 1)[0] in modules:
                    f.unlink(missing_ok=True)
        tmp = where / f"{STAMP_NAME}.{os.getpid()}"
        tmp.write_text(fp)
        os.replace(tmp, stamp)
    except OSError:
        return False  # a cache location we cannot write: numba will not write there either
    return True
