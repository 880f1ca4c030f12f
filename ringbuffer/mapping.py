"""The shared-memory object behind a ring: its name, and mapping, creating and unlinking it.

A ring's name is a POSIX shared-memory name, ``/`` followed by one path component
(:func:`canonical_name` adds the ``/`` when it is missing); the object is
``/dev/shm<name>``.  :class:`SharedMapping` is one process's mapping of it: the ``mmap``
and an int64 view of it (``memoryview.cast('q')``), through which every header word and
cursor is read and written with one aligned 8-byte access.  A mapping does not interpret
the bytes (:mod:`.header` does); unlinking a name leaves mappings already open valid.
"""

from __future__ import annotations

import mmap

import posix_ipc

from . import descriptor as d
from .errors import RingError, RingFormatError, RingNotFoundError

__all__ = ["SharedMapping", "canonical_name", "ring_exists", "unlink_ring"]


def canonical_name(name: str) -> str:
    """``name`` with its leading ``/``; a clear ValueError for anything that is no name."""
    if not isinstance(name, str) or not name.strip("/"):
        raise ValueError(f"ring name must be a non-empty string, got {name!r}")
    if "/" in name.lstrip("/"):
        raise ValueError(f"ring name {name!r} must not contain '/' after the first character")
    return name if name.startswith("/") else "/" + name


def ring_exists(name: str) -> bool:
    """Whether a shared-memory object of that name exists (ring or not)."""
    try:
        shm = posix_ipc.SharedMemory(canonical_name(name), read_only=True)
    except posix_ipc.ExistentialError:
        return False
    shm.close_fd()
    return True


def unlink_ring(name: str) -> bool:
    """Remove the name (mappings already open stay valid).  False when it did not exist."""
    try:
        posix_ipc.unlink_shared_memory(canonical_name(name))
        return True
    except posix_ipc.ExistentialError:
        return False


# MAP_POPULATE: every page of the ring is allocated and mapped here, when the ring is
# created or attached, not by a first write or read in a duty cycle (a minor fault per
# 4 KiB page, thousands of them on a ring's first lap: a pause issue 12 hunts).
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


class SharedMapping:
    """An open mapping of a shared-memory object: the mmap and its int64 view.

    Build one with :meth:`open` (an existing object) or :meth:`create` (a new one).
    """

    def __init__(self, mm: mmap.mmap, size: int) -> None:
        self.mm = mm
        self.size = size
        # Whole words only: a garbage object of odd length still gets a header check.
        self.q: memoryview | None = memoryview(mm)[: size - size % d.WORD_SIZE].cast("q")

    @classmethod
    def open(cls, name: str, *, read_only: bool) -> "SharedMapping":
        """Map the existing object ``name`` (canonical), whole.

        Raises :class:`RingNotFoundError` when there is none, :class:`RingFormatError` when
        it is too small to hold a ring header, :class:`RingError` when it may not be opened.
        """
        try:
            shm = posix_ipc.SharedMemory(name, read_only=read_only)
        except posix_ipc.ExistentialError:
            raise RingNotFoundError(
                f"ring {name!r} does not exist (no shared-memory object /dev/shm{name})", name
            ) from None
        except posix_ipc.PermissionsError as exc:
            raise RingError(f"ring {name!r}: permission denied opening it: {exc}", name) from None
        try:
            size = shm.size
            if size < d.HEADER_LENGTH:
                raise RingFormatError(
                    f"ring {name!r} is not a ringex ring: the object is {size} bytes, "
                    f"smaller than the {d.HEADER_LENGTH}-byte header",
                    name,
                )
            prot = mmap.PROT_READ if read_only else mmap.PROT_READ | mmap.PROT_WRITE
            mm = mmap.mmap(shm.fd, size, flags=_MAP_FLAGS, prot=prot)
        finally:
            shm.close_fd()
        return cls(mm, size)

    @classmethod
    def create(cls, name: str, size: int, mode: int) -> "SharedMapping | None":
        """Create the object ``name`` (canonical) of ``size`` zero bytes and map it
        read-write; ``None`` when the name is taken.  Nothing is left behind on failure."""
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode, size=size)
        except posix_ipc.ExistentialError:
            return None
        try:
            mm = mmap.mmap(shm.fd, size, flags=_MAP_FLAGS, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            shm.close_fd()
            unlink_ring(name)
            raise
        shm.close_fd()
        return cls(mm, size)

    def close(self) -> None:
        q, self.q = self.q, None
        if q is not None:
            q.release()
        try:
            self.mm.close()
        except BufferError:
            # Someone still holds a zero-copy view of the slots; the mapping goes away
            # when the last view does.
            pass
