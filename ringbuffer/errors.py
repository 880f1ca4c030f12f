"""Exceptions raised by the rings.  Every message names the ring and the problem."""

from __future__ import annotations


class RingError(Exception):
    """Base of every ring error; ``ring_name`` is the shared-memory name (or ``None``)."""

    def __init__(self, message: str, ring_name: str | None = None) -> None:
        super().__init__(message)
        self.ring_name = ring_name


class UnsupportedPlatformError(RingError):
    """The machine does not give the memory ordering the lock-free protocol relies on."""


class RingNotFoundError(RingError, FileNotFoundError):
    """No shared-memory object of that name exists."""

    def __str__(self) -> str:  # FileNotFoundError would otherwise format errno/filename
        return self.args[0]


class RingFormatError(RingError):
    """The object exists but is not a (complete) ringex ring: wrong magic, truncated, ..."""


class RingVersionError(RingFormatError):
    """The object is a ringex ring of another layout version."""


class RingLayoutError(RingError):
    """The ring's slot size, capacity or number of consumers differs from what was expected."""


class RingExistsError(RingError, FileExistsError):
    """Creating a ring whose name is taken by a live ring (or by something else)."""

    def __str__(self) -> str:
        return self.args[0]


class StaleRingError(RingExistsError):
    """The name is taken by a ring whose creator process is gone; ``reclaim=True`` reuses it."""

    def __init__(self, message: str, ring_name: str | None = None, creator_pid: int = 0) -> None:
        super().__init__(message, ring_name)
        self.creator_pid = creator_pid


class RingBusyError(RingError):
    """A producer or consumer role is already held by another live process."""


class RingClosedError(RingError):
    """The ring (or this handle on it) has been closed."""


class RingReadOnlyError(RingError):
    """A write role was asked of a ring attached with ``observe`` (read-only)."""


class UntetheredError(RingError):
    """This consumer was taken out of the producer's gating while it was not consuming (the
    supervisor judged it dead); the slots it had not committed may have been overwritten.
    Attach the index again to rejoin at the producer's position."""
