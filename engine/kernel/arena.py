"""The engine state as seen from compiled code: one int64 arena, viewed as its named tables.

Names, the same in every kernel module: ``mem`` is the arena (the one array compiled
functions pass each other), ``glob`` its globals view (its first ``N_GLOB`` words), ``st``
the ``Tables`` of both (``st.orders``, ``st.ins``, ``st.wallet``, ...; the row and column
constants are in ``ringex.engine.kernel.state``).

Compiled functions pass each other the arena alone: numba passes an array as a struct of
7-9 machine words and reference-counts it with atomic operations, so handing a tuple of
seven arrays to every helper cost more than the matching itself (measured: ~40 ns a call).
``views(mem)`` and ``tables(glob)`` rebuild the tables from the offsets kept in the globals
(pointer arithmetic, inlined: what a caller does not use costs nothing), and ``borrow`` gives
the entry point a reference-count-free alias of the arena for the duration of a batch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.core import cgutils, types
from numba.core import config as _numba_config
from numba.extending import intrinsic

from ringex.engine.kernel.flags import INLINE
from ringex.engine.kernel.state import (
    G_AT_ACCT, G_AT_BITS, G_AT_BUCKETS, G_AT_INS, G_AT_LEVELS, G_AT_ORDERS, G_BOOK_SLOTS, G_BUCKETS,
    ACCT_STRIDE, G_CAPACITY, G_MAX_ACCOUNTS, G_MAX_INSTRUMENTS, G_WORDS, N_ACCT, N_GLOB, N_INS,
    N_ORDER_FIELDS,
    G_AT_HEAP, G_AT_POS, G_AT_WALLET, G_MAX_ASSETS, N_POS, N_WALLET,
)


if _numba_config.DISABLE_JIT:

    def borrow(arr):
        """Plain Python: the array itself."""
        return arr

    def table1(mem, at, n):
        return mem[at: at + n]

    def table2(mem, at, rows, cols):
        return mem[at: at + rows * cols].reshape((rows, cols))

    def table2t(mem, at, rows, cols, stride):
        """``mem[at : at + cols * stride].reshape(cols, stride)[:, :rows].T``: a field-first
        view of records stored one after another."""
        return mem[at: at + cols * stride].reshape((cols, stride))[:, :rows].T

    def _reach(glob, words):
        """The first ``words`` words of the arena that ``glob`` starts: plain Python may not
        index a view past its end, compiled code does."""
        return np.lib.stride_tricks.as_strided(glob, shape=(words,), strides=(8,), writeable=True)

    def far1(glob, at, n):
        return table1(_reach(glob, at + n), at, n)

    def far2(glob, at, rows, cols):
        """A table of the arena reached from its globals view (which starts the arena)."""
        return table2(_reach(glob, at + rows * cols), at, rows, cols)

    def far2t(glob, at, rows, cols, stride):
        return table2t(_reach(glob, at + cols * stride), at, rows, cols, stride)

else:

    def _alias(context, builder, arr_type, arr, data, shape, strides, out_type):
        src = context.make_array(arr_type)(context, builder, value=arr)
        dst = context.make_array(out_type)(context, builder)
        dst.meminfo = cgutils.get_null_value(dst.meminfo.type)
        dst.parent = cgutils.get_null_value(dst.parent.type)
        dst.itemsize = src.itemsize
        dst.data = data if data is not None else src.data
        dst.shape = shape if shape is not None else src.shape
        dst.strides = strides if strides is not None else src.strides
        nitems = context.get_constant(types.intp, 1)
        for dim in cgutils.unpack_tuple(builder, dst.shape):
            nitems = builder.mul(nitems, dim)
        dst.nitems = nitems
        return dst._getvalue()

    @intrinsic
    def borrow(typingctx, arr):
        """An alias of ``arr`` without a reference count (no meminfo): passing it around and
        taking views of it costs no atomic operations. Only valid while ``arr`` is alive,
        i.e. within the call that received ``arr``."""

        def codegen(context, builder, sig, args):
            return _alias(context, builder, sig.args[0], args[0], None, None, None, sig.return_type)

        return arr(arr), codegen

    @intrinsic
    def table1(typingctx, mem, at, n):
        """``mem[at : at + n]`` without bounds checks, reference count or helper calls."""
        out_type = types.Array(types.int64, 1, "C")

        def codegen(context, builder, sig, args):
            arr, at_v, n_v = args
            src = context.make_array(sig.args[0])(context, builder, value=arr)
            data = builder.gep(src.data, [at_v])
            shape = cgutils.pack_array(builder, [n_v])
            strides = cgutils.pack_array(builder, [context.get_constant(types.intp, 8)])
            return _alias(context, builder, sig.args[0], arr, data, shape, strides, out_type)

        return out_type(mem, types.intp, types.intp), codegen

    @intrinsic
    def table2(typingctx, mem, at, rows, cols):
        """``mem[at : at + rows * cols].reshape(rows, cols)``, as ``table1``."""
        out_type = types.Array(types.int64, 2, "C")

        def codegen(context, builder, sig, args):
            arr, at_v, r_v, c_v = args
            src = context.make_array(sig.args[0])(context, builder, value=arr)
            data = builder.gep(src.data, [at_v])
            shape = cgutils.pack_array(builder, [r_v, c_v])
            eight = context.get_constant(types.intp, 8)
            strides = cgutils.pack_array(builder, [builder.mul(c_v, eight), eight])
            return _alias(context, builder, sig.args[0], arr, data, shape, strides, out_type)

        return out_type(mem, types.intp, types.intp, types.intp), codegen

    @intrinsic
    def table2t(typingctx, mem, at, rows, cols, stride):
        """A (rows, cols) view whose column j is record j of ``stride`` words at
        ``mem[at + j * stride]``: records stored one after another, indexed field first."""
        out_type = types.Array(types.int64, 2, "A")

        def codegen(context, builder, sig, args):
            arr, at_v, r_v, c_v, s_v = args
            src = context.make_array(sig.args[0])(context, builder, value=arr)
            data = builder.gep(src.data, [at_v])
            shape = cgutils.pack_array(builder, [r_v, c_v])
            eight = context.get_constant(types.intp, 8)
            strides = cgutils.pack_array(builder, [eight, builder.mul(s_v, eight)])
            return _alias(context, builder, sig.args[0], arr, data, shape, strides, out_type)

        return out_type(mem, types.intp, types.intp, types.intp, types.intp), codegen


class Tables(NamedTuple):
    """The arena's tables by name (``ringex.engine.kernel.state`` documents each)."""

    orders: np.ndarray  # orders[slot, O_*]
    levels: np.ndarray  # levels[book index, 0 | 1]: head | tail slot
    bits: np.ndarray  # level_bits: non-empty levels, 32 per word
    ins: np.ndarray  # ins[I_*, instrument]
    acct: np.ndarray  # acct[A_*, account] (account-major storage, transposed view)
    buckets: np.ndarray  # the order id table
    glob: np.ndarray  # glob[G_*]: the arena's first words
    wallet: np.ndarray  # wallet[account * max_assets + asset, W_*]
    pos: np.ndarray  # pos[account * max_instruments + instrument, P_*]
    heap: np.ndarray  # heap[(instrument * 2 + h) * max_accounts + i, 0 | 1]: key | account


if not _numba_config.DISABLE_JIT:
    far1 = table1  # compiled: no bounds, so the globals view reaches the whole arena
    far2 = table2
    far2t = table2t


@njit(**INLINE)
def tables(glob):
    """Every table of the arena from its globals view ``glob`` alone (which starts the
    arena): functions that hold only ``glob`` reach the rest through it. The views are
    pointer arithmetic on the offsets in ``glob``; the compiler drops the ones a caller does
    not use."""
    maxi = glob[G_MAX_INSTRUMENTS]
    maxa = glob[G_MAX_ACCOUNTS]
    return Tables(
        far2(glob, glob[G_AT_ORDERS], glob[G_CAPACITY], N_ORDER_FIELDS),
        far2(glob, glob[G_AT_LEVELS], glob[G_BOOK_SLOTS], 2),
        far1(glob, glob[G_AT_BITS], maxi * 2 * glob[G_WORDS]),
        far2(glob, glob[G_AT_INS], N_INS, maxi),
        far2t(glob, glob[G_AT_ACCT], N_ACCT, maxa, ACCT_STRIDE),
        far1(glob, glob[G_AT_BUCKETS], glob[G_BUCKETS]),
        glob,
        far2(glob, glob[G_AT_WALLET], maxa * glob[G_MAX_ASSETS], N_WALLET),
        far2(glob, glob[G_AT_POS], maxa * maxi, N_POS),
        far2(glob, glob[G_AT_HEAP], maxi * 2 * maxa, 2),
    )


@njit(**INLINE)
def views(mem):
    """Every table of the arena ``mem``, by name."""
    return tables(table1(mem, 0, N_GLOB))
