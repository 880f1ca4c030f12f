"""Suite-wide fixtures. ``no_leaks`` (autouse) fails any test that leaves shared memory,
processes or listening ports behind: see ``leakcheck.py``."""

from leakcheck import _leak_marker, no_leaks, no_module_leaks  # noqa: F401  (registers them)
