"""How the kernel is compiled, and the constants its arithmetic shares.

Every kernel function is ``@njit(**JIT)`` (its own compiled function, called through a
native call: the message handlers and the few shared pieces whose code is too large to
copy into each caller) or ``@njit(**INLINE)`` (copied into its callers at numba IR level:
no call, no separate compilation, no specialisation per literal argument).

``cache=True``: machine code is kept on disk and reloaded at the next start (see
``jitcache``). ``nogil``: the agent runner's other threads are never held up by a batch.
``error_model="numpy"``: integer division by zero does not raise (every divisor is checked
at the edge or by a definition check), so no exception paths in the hot code.
"""

JIT = dict(cache=True, nogil=True, error_model="numpy")
INLINE = dict(JIT, inline="always")

PPM = 1_000_000  # rates are parts per million
MAX_I64 = (1 << 63) - 1
