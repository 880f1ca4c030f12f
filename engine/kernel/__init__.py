"""The compiled kernel: the engine's rules as numba functions over one int64 arena.

One module per message family (``dispatch`` routes a batch; ``orders``, ``admin``,
``kill``, ``money``, ``margin``, ``funding``, ``liquidation``, ``book``, ``matching``) and
the pieces they share: ``flags`` (numba options and constants), ``state`` (the arena's
layout), ``arena`` (its named views), ``events`` (writing output), ``fixed`` (fixed-point
arithmetic), ``heap``, ``prefetch`` and ``memory``.

Importing this package first makes numba's cache safe to load from: ``jitcache`` picks a
writable cache location and clears entries built from other sources, before any kernel
module is decorated or loads machine code. Nothing else happens at import. (The package's
other compiled modules import ``jitcache`` from here, so they get the same location.)
"""

from ringex.engine.kernel import jitcache as _jitcache

_jitcache.choose_cache_location()
_jitcache.guard_module(__file__)
