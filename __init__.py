"""ringex: an exchange core in the LMAX/Aeron style.

The repository's top-level folders are this package's subpackages:
``ringex.ringbuffer`` (shared-memory rings, agents, counters), ``ringex.engine``
(SBE schema and codecs, matching and risk), ``ringex.gateways``, ``ringex.feeds``,
``ringex.tools`` (the ``ringex`` command) and ``ringex.tuning``.
"""

__version__ = "0.1.0"
