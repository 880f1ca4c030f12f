"""Which machines may run the lock-free ring protocol.

The rings publish a slot by writing its bytes and then storing the cursor with one aligned
8-byte store; a reader loads the cursor and then the bytes.  That is correct without fences
only under x86-64 total store order (stores are not reordered with other stores, loads not
with other loads).  On a weakly ordered machine (ARM, POWER, RISC-V) a reader could see the
new cursor before the slot's bytes, and Python has no portable fence to put between them,
so the rings refuse to run there rather than corrupt data silently.
"""

from __future__ import annotations

import platform as _stdlib_platform
import sys

from .errors import UnsupportedPlatformError

#: ``platform.machine()`` spellings of x86-64 (Linux, BSD, Windows).
X86_64_MACHINES = frozenset({"x86_64", "amd64", "x86-64", "x64"})


def machine() -> str:
    return _stdlib_platform.machine()


def lock_free_supported(machine_name: str | None = None) -> bool:
    name = machine() if machine_name is None else machine_name
    return name.lower() in X86_64_MACHINES and sys.byteorder == "little"


def check_lock_free(ring_name: str | None = None) -> None:
    """Raise :class:`UnsupportedPlatformError` unless this machine is x86-64."""
    name = machine()
    if lock_free_supported(name):
        return
    what = f"ring {ring_name!r}: " if ring_name else ""
    raise UnsupportedPlatformError(
        f"{what}the lock-free ring protocol needs x86-64 total store order (TSO) memory "
        f"ordering, and this machine is {name or 'unknown'!r} ({sys.byteorder}-endian); "
        "on weakly ordered CPUs a reader could see a published cursor before the slot's "
        "bytes, so ringex refuses to create or attach rings here",
        ring_name,
    )
