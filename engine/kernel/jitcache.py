"""Keeps numba's on-disk cache of every compiled module honest, and where it can be written.

numba freezes module-level constants (field offsets and template ids derived from
``schema.xml`` by ``ringex.engine.wire``, another module's layout constants) into the
compiled code, links the compiled functions it calls into the caller's machine code, and its
``cache=True`` index only notices a change of the *calling* function's own source file. A
new schema, or an edit to a helper module, would otherwise load stale machine code: wrong
bytes on the wire, no error.

The unit is a folder, not a list of modules: a folder's compiled code is taken to derive
from every source of its own folder and of the wire format's (``engine/wire/``, schema
included). ``guard_cache(folder)`` keeps a stamp (those sources and the numba/numpy/Python
versions, hashed) next to the folder's cache files and deletes the folder's entries whenever
the stamp changes, before anything is loaded from them. tests/test_jitcache.py holds every
compiled module to that rule: whatever it imports, however indirectly, lies in its own folder
or the wire format's, or is a plain Python function or class, which compiled code cannot use.

When it runs: importing ``ringex.engine.kernel`` guards the kernel (every module there is
compiled code or feeds it); every other module with compiled code calls ``guard_module``
on import, before its first decorator (the first one of a folder guards the folder, once a
process), or imports one of its folder that does. Not its package's ``__init__``: that
would import numba (a few tenths of a second) into every process that touches a ring or the
``ringex`` command. numba loads a function's machine code on its first call, never sooner.

Where the cache goes: beside the sources (``<folder>/__pycache__``) when the kernel's folder
is writable, as in a checkout; otherwise (a pip install into a read-only site-packages) a
per-user directory, ``$XDG_CACHE_HOME/ringex/numba`` (``~/.cache/ringex/numba``), so that
only the first start compiles. ``NUMBA_CACHE_DIR``, when set, wins over both. numba keeps
each folder's files apart in either, which is what lets a stamp speak for one folder.
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
PACKAGE_DIR = KERNEL_DIR.parents[1]
CACHE_PATTERNS = ("*.nbi", "*.nbc")

_guarded: set[Path] = set()


def stamp_name(folder: Path | None = None) -> str:
    """The stamp's file name, after the folder's package (``ringex-gateways.stamp``)."""
    folder = KERNEL_DIR if folder is None else folder
    try:
        parts = folder.relative_to(PACKAGE_DIR).parts
    except ValueError:
        parts = (folder.name,)
    return "-".join(("ringex", *parts)) + ".stamp"


STAMP_NAME = stamp_name(KERNEL_DIR)


def modules(folder: Path) -> list[str]:
    """A folder's modules (every ``*.py`` but its package's ``__init__``): the names numba's
    cache files of that folder begin with."""
    return sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")


def kernel_modules() -> list[str]:
    """The kernel's modules."""
    return modules(KERNEL_DIR)


def sources(folder: Path | None = None) -> list[Path]:
    """Every file a folder's compiled code derives from (the kernel's by default): its own
    and the wire format's."""
    folder = KERNEL_DIR if folder is None else folder
    files = {p for d in (folder, WIRE_DIR) for p in d.iterdir()
             if p.is_file() and p.suffix in (".py", ".xml")}
    return sorted(files, key=lambda p: (p.parent.name, p.name))


def fingerprint(folder: Path | None = None) -> str:
    """What a folder's compiled code (the kernel's by default) depends on, hashed."""
    h = hashlib.sha256()
    for path in sources(folder):
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
    """Point numba at a writable cache for the package (see the module's text); returns the
    directory chosen when it is not beside the sources, None when it is (or when the user
    set ``NUMBA_CACHE_DIR``). Must run before any compiled module is imported: numba picks
    a function's cache location when it is decorated."""
    if numba.config.CACHE_DIR or _writable(KERNEL_DIR):
        return None
    where = user_cache_dir()
    where.mkdir(parents=True, exist_ok=True)
    numba.config.CACHE_DIR = str(where)
    return where


def cache_dir(folder: Path | None = None) -> Path | None:
    """Where numba keeps a folder's cache files (the kernel's by default; None when the JIT
    is disabled or nothing there can be cached): asked of a dispatcher made here and now for
    a function of that folder, so it follows ``choose_cache_location`` and numba's own rules."""
    folder = KERNEL_DIR if folder is None else folder
    anchor = next(iter(sorted(folder.glob("*.py"))), None)
    if anchor is None:
        return None
    # A function whose code claims to be the anchor's: numba locates its cache by that file.
    namespace: dict[str, object] = {}
    exec(compile("def probe():\n    return 0\n", str(anchor), "exec"), namespace)
    try:
        dispatcher = numba.njit(cache=True)(namespace["probe"])
    except RuntimeError:  # numba: no cache locator for this file
        return None
    path = getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)
    return Path(path) if path else None


def guard_cache(folder: Path | None = None) -> bool:
    """Clear a folder's numba cache (the kernel's by default) if it was built from other
    sources; True if cleared."""
    folder = KERNEL_DIR if folder is None else folder
    where = cache_dir(folder)
    if where is None:
        return False
    fp = fingerprint(folder)
    name = stamp_name(folder)
    stamp = where / name
    try:
        if stamp.read_text() == fp:
            return False
    except OSError:
        pass
    try:
        where.mkdir(parents=True, exist_ok=True)
        names = set(modules(folder))
        for pattern in CACHE_PATTERNS:
            for f in where.glob(pattern):
                if f.name.split(".", 1)[0] in names:
                    f.unlink(missing_ok=True)
        tmp = where / f"{name}.{os.getpid()}"
        tmp.write_text(fp)
        os.replace(tmp, stamp)
    except OSError:
        return False  # a cache location we cannot write: numba will not write there either
    return True


def guard_module(module_file: str) -> bool:
    """Guard the folder of a module with compiled code, once a process (call it with the
    module's ``__file__`` before its first decorator); True if this call cleared it."""
    folder = Path(module_file).resolve().parent
    if folder in _guarded:
        return False
    cleared = guard_cache(folder)
    _guarded.add(folder)
    return cleared


def guarded_folders() -> frozenset[Path]:
    """The folders this process has guarded so far."""
    return frozenset(_guarded)
