"""The answer to an order-entry message that never reaches the engine.

Refused before sequencing (by the sequencer while the exchange is not accepting, by a
gateway for a throttle breach or an account the session may not trade), an order-entry
message still gets the answer the engine would give a refusal: ``OrderRejected`` for a
``NewOrder``, ``CancelRejected`` for a cancel, a replace or a mass cancel, with the
message's identifiers. Its stamp's ``seq`` stays 0: that tells a client the engine never
saw the message.
"""

from __future__ import annotations

import struct

import numpy as np

from ringex.engine.wire import messages as m


def _reader(layout: m.MessageLayout, names: tuple[str, ...]) -> tuple[struct.Struct, tuple[str, ...]]:
    """One struct reading ``names`` of ``layout`` (those it has) by their offsets, skipping
    the rest: no enum is decoded, so a message with an invalid side or type (the engine's
    to reject) can still be answered."""
    fields = sorted((layout.field(n) for n in names if n in layout.field_names), key=lambda f: f.offset)
    fmt, at = "<", 0
    for f in fields:
        fmt += f"{f.offset - at}x{f.struct_code}"
        at = f.offset + f.size
    return struct.Struct(fmt), tuple(f.name for f in fields)


_WANTED = ("ingressNs", "clOrdId", "orderId", "origClOrdId", "sessionId", "account", "instrument")
_READERS = {x.template_id: _reader(x, _WANTED) for x in m.ORDER_ENTRY}


def rejection_for(slot: np.ndarray | memoryview | bytes, reason: int, now: int) -> bytes:
    """The rejection a client gets for an order-entry message (``slot``, header first) the
    exchange did not take."""
    data = bytes(slot)
    tid = int.from_bytes(data[2:4], "little")  # messageHeader.templateId
    reader, names = _READERS[tid]
    f = dict(zip(names, reader.unpack_from(data)))
    # Not sequenced: seq stays 0, which tells a gateway the engine never saw the message.
    stamp = {"seq": 0, "timestampNs": now, "ingressNs": f["ingressNs"] or now}
    common = {"sessionId": f["sessionId"], "account": f["account"], "instrument": f["instrument"]}
    if tid == m.NewOrder.template_id:
        return m.OrderRejected.encode(
            **stamp, **common, clOrdId=f["clOrdId"], orderId=0, reason=reason, refTemplateId=tid,
        )
    return m.CancelRejected.encode(
        **stamp, **common, clOrdId=f["clOrdId"], orderId=f.get("orderId", 0),
        origClOrdId=f.get("origClOrdId", 0), reason=reason, refTemplateId=tid,
    )
