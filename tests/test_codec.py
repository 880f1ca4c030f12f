"""Our hot-path codecs against the independent ``sbe`` package, for every message in the schema.

Every test iterates ``SCHEMA.messages``, so a message added to ``schema.xml`` is covered
without touching this file.  Three representations meet here:

* ours, flat: the ``Stamp`` composite's members are fields of the message (``seq``,
  ``timestampNs``, ``ingressNs``), enums are ``IntEnum`` members, char arrays are ``str``;
* the ``sbe`` package's, nested: ``{'stamp': {'seq': ...}, 'side': 'Buy', ...}`` with enums
  as their names;
* the numpy structured dtype over the same bytes (enums as integers, text as ``bytes``).

Known limits of the ``sbe`` package's char handling (not of SBE, not of ours): it decodes
a char array by cutting at the first NUL and then ``str.strip()``-ing it, so text with an
embedded NUL or leading/trailing whitespace does not survive *its* decoder.  The cross
checks therefore draw text the package can represent; our own round trip is checked over
all of ASCII.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import numpy as np
import pytest
import sbe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringex.engine.wire import messages
from ringex.engine.wire.codec import HEADER, FieldLayout, MessageLayout
from ringex.engine.wire.messages import SCHEMA

LAYOUTS: list[MessageLayout] = [SCHEMA.messages[tid] for tid in sorted(SCHEMA.messages)]
IDS = [layout.name for layout in LAYOUTS]

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Printable ASCII without whitespace: text that the sbe package's decoder returns unchanged
# (it strips whitespace and cuts at NUL).  Interior spaces survive its strip, so allow them
# away from the ends.
_SBE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


# -- value strategies -------------------------------------------------------------------------


def _sbe_safe_text(length: int) -> st.SearchStrategy[str]:
    inner = st.text(alphabet=_SBE_SAFE + " ", min_size=0, max_size=max(length - 2, 0))
    edge = st.sampled_from(_SBE_SAFE)
    built = st.one_of(
        st.just(""),
        st.text(alphabet=_SBE_SAFE, min_size=length, max_size=length),  # full length
        st.text(alphabet=_SBE_SAFE, min_size=1, max_size=length),
        st.tuples(edge, inner, edge).map(lambda t: (t[0] + t[1] + t[2])[:length]),
    )
    return built


def _any_ascii_text(length: int) -> st.SearchStrategy[str]:
    # Any ASCII, NUL included, except a trailing NUL (NUL is SBE's padding).
    return st.one_of(
        st.just(""),
        st.text(alphabet=st.characters(max_codepoint=0x7F), min_size=length, max_size=length),
        st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=length),
    ).filter(lambda s: not s.endswith("\0"))


def field_strategy(f: FieldLayout, *, sbe_safe: bool = True) -> st.SearchStrategy[Any]:
    if f.is_char:
        return _sbe_safe_text(f.length) if sbe_safe else _any_ascii_text(f.length)
    if f.enum is not None:
        return st.sampled_from(list(f.enum))
    lo, hi = f.bounds()
    specials = sorted({v for v in (lo, lo + 1, -1, 0, 1, hi - 1, hi) if lo <= v <= hi})
    return st.one_of(st.sampled_from(specials), st.integers(lo, hi))


def message_strategy(layout: MessageLayout, *, sbe_safe: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f.name: field_strategy(f, sbe_safe=sbe_safe) for f in layout.fields})


def extreme_messages(layout: MessageLayout) -> list[dict[str, Any]]:
    """Deterministic corner cases: every field at its min, at its max, and every enum value."""
    enum_fields = [f for f in layout.fields if f.enum is not None]
    rounds = max([len(f.enum) for f in enum_fields], default=1)  # type: ignore[arg-type]
    out = []
    for which in ("min", "max"):
        for k in range(rounds):
            values: dict[str, Any] = {}
            for f in layout.fields:
                if f.is_char:
                    values[f.name] = "" if which == "min" else ("Z" * f.length)
                elif f.enum is not None:
                    members = sorted(f.enum)
                    values[f.name] = members[k % len(members)]
                else:
                    lo, hi = f.bounds()
                    values[f.name] = lo if which == "min" else hi
            out.append(values)
    # mid-length text with interior space, and the other extreme of each enum
    values = {}
    for f in layout.fields:
        if f.is_char:
            values[f.name] = ("A B" + "C" * f.length)[: max(f.length - 1, 0)]
        elif f.enum is not None:
            values[f.name] = max(f.enum)
        else:
            values[f.name] = 0
    out.append(values)
    return out


# -- translation between representations -----------------------------------------------------


def expected_ours(layout: MessageLayout, values: dict[str, Any]) -> dict[str, Any]:
    """What our decoder should give back for ``values`` (as passed to ``encode``)."""
    out: dict[str, Any] = {}
    for f in layout.fields:
        v = values[f.name]
        if f.enum is not None:
            v = f.enum[v] if isinstance(v, str) else f.enum(v)
        elif f.is_char:
            v = v.decode("ascii") if isinstance(v, bytes) else v
            v = v.rstrip("\0")
        out[f.name] = v
    return out


def _sbe_value(t: Any, v: Any) -> Any:
    if isinstance(t, sbe.Enum):
        return v.name
    return v


def to_sbe(tid: int, flat: dict[str, Any]) -> dict[str, Any]:
    """Our flat field dict as the sbe package's nested dict (composites nested, enums by name)."""
    msg = SCHEMA.sbe.messages[tid]
    layout = SCHEMA.messages[tid]
    norm = expected_ours(layout, flat)
    out: dict[str, Any] = {}
    for f in msg.fields:
        if isinstance(f.type, sbe.Composite):
            out[f.name] = {m.name: _sbe_value(m, norm[m.name]) for m in f.type.types}
        else:
            out[f.name] = _sbe_value(f.type, norm[f.name])
    return out


def from_sbe(tid: int, nested: dict[str, Any]) -> dict[str, Any]:
    """The sbe package's decoded dict, flattened and typed the way our decoder types it."""
    msg = SCHEMA.sbe.messages[tid]
    layout = SCHEMA.messages[tid]
    flat: dict[str, Any] = {}
    for f in msg.fields:
        if isinstance(f.type, sbe.Composite):
            for m in f.type.types:
                flat[m.name] = nested[f.name][m.name]
        else:
            flat[f.name] = nested[f.name]
    out = {}
    for f in layout.fields:
        v = flat[f.name]
        if f.enum is not None:
            assert isinstance(v, str), f"sbe decoded {layout.name}.{f.name} as {v!r}, not an enum name"
            v = f.enum[v]
        out[f.name] = v
    return out


def dtype_values(layout: MessageLayout, record: np.void) -> dict[str, Any]:
    out = {}
    for f in layout.fields:
        v = record[f.name]
        if f.is_char:
            v = bytes(v).decode("ascii")
        elif f.enum is not None:
            v = f.enum(int(v))
        else:
            v = int(v)
        out[f.name] = v
    return out


# -- the cross checks, one function per direction ----------------------------------------------


def check_ours_to_sbe(layout: MessageLayout, values: dict[str, Any]) -> bytes:
    ours = layout.encode(**values)
    assert len(ours) == layout.size
    expected = expected_ours(layout, values)

    # our own decoder
    decoded = SCHEMA.decode(ours)
    assert decoded.name == layout.name
    assert decoded.template_id == layout.template_id
    assert decoded.fields == expected
    assert list(decoded.fields) == list(layout.field_names)

    # the sbe package reads our bytes to the same values and the same header
    theirs = SCHEMA.sbe.decode(ours)
    assert theirs.message_name == layout.name
    assert theirs.header == {
        "blockLength": layout.block_length,
        "templateId": layout.template_id,
        "schemaId": SCHEMA.schema_id,
        "version": SCHEMA.version,
    }
    assert from_sbe(layout.template_id, theirs.value) == expected

    # the numpy view reads the same values as the struct decode
    rec = np.frombuffer(ours, dtype=layout.dtype)
    assert rec.shape == (1,)
    assert (int(rec["blockLength"][0]), int(rec["templateId"][0]), int(rec["schemaId"][0]), int(rec["version"][0])) == (
        layout.block_length,
        layout.template_id,
        SCHEMA.schema_id,
        SCHEMA.version,
    )
    assert dtype_values(layout, rec[0]) == expected

    # encode_into and pack_into write the same bytes
    buf = bytearray(layout.size + 3)
    assert layout.encode_into(buf, 3, **values) == layout.size
    assert bytes(buf[3:]) == ours
    assert SCHEMA.decode(buf, 3).fields == expected
    raw = bytearray(layout.size)
    layout.pack_into(raw, 0, *layout.values(values))
    assert bytes(raw) == ours
    return ours


def check_sbe_to_ours(layout: MessageLayout, values: dict[str, Any]) -> None:
    tid = layout.template_id
    nested = to_sbe(tid, values)
    theirs = SCHEMA.sbe.encode(SCHEMA.sbe.messages[tid], nested)
    ours = layout.encode(**values)
    assert theirs == ours, f"{layout.name}: sbe bytes {theirs.hex()} != ours {ours.hex()}"
    assert SCHEMA.decode(theirs).fields == expected_ours(layout, values)
    # and the sbe package agrees with itself on what it wrote
    assert SCHEMA.sbe.decode(theirs).value == nested


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_extremes_round_trip_both_ways(layout: MessageLayout) -> None:
    for values in extreme_messages(layout):
        check_ours_to_sbe(layout, values)
        check_sbe_to_ours(layout, values)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_ours_and_sbe_agree(layout: MessageLayout, data: st.DataObject) -> None:
    values = data.draw(message_strategy(layout), label="fields")
    check_ours_to_sbe(layout, values)
    check_sbe_to_ours(layout, values)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_enum_inputs_by_name_int_and_member(layout: MessageLayout, data: st.DataObject) -> None:
    """An enum field accepts its member, its name or its integer value, all to the same bytes."""
    values = data.draw(message_strategy(layout), label="fields")
    by_name = {k: (v.name if isinstance(v, int) and hasattr(v, "name") else v) for k, v in values.items()}
    by_int = {k: (int(v) if hasattr(v, "name") else v) for k, v in values.items()}
    assert layout.encode(**by_name) == layout.encode(**by_int) == layout.encode(**values)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_our_round_trip_over_all_ascii(layout: MessageLayout, data: st.DataObject) -> None:
    values = data.draw(message_strategy(layout, sbe_safe=False), label="fields")
    encoded = layout.encode(**values)
    assert SCHEMA.decode(encoded).fields == expected_ours(layout, values)
    # bytes in, same as str in
    as_bytes = {k: (v.encode("ascii") if isinstance(v, str) else v) for k, v in values.items()}
    assert layout.encode(**as_bytes) == encoded


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_missing_fields_default_to_zero_blank_and_lowest_enum(layout: MessageLayout) -> None:
    decoded = SCHEMA.decode(layout.encode()).fields
    for f in layout.fields:
        if f.is_char:
            assert decoded[f.name] == ""
        elif f.enum is not None:
            assert decoded[f.name] is min(f.enum)
        else:
            assert decoded[f.name] == 0
    # the sbe package reads the defaulted message too
    SCHEMA.sbe.decode(layout.encode())


def test_every_enum_value_of_every_enum_field_is_exercised() -> None:
    """The deterministic corner cases really do reach every value of every enum field."""
    for layout in LAYOUTS:
        seen: dict[str, set[int]] = {f.name: set() for f in layout.fields if f.enum is not None}
        for values in extreme_messages(layout):
            for name in seen:
                seen[name].add(int(values[name]))
        for f in layout.fields:
            if f.enum is not None:
                assert seen[f.name] == {int(m) for m in f.enum}, f"{layout.name}.{f.name}"


# -- header -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_header_matches_sbe(layout: MessageLayout) -> None:
    msg = SCHEMA.sbe.messages[layout.template_id]
    theirs = SCHEMA.sbe.encode(msg, to_sbe(layout.template_id, extreme_messages(layout)[0]))
    ours = layout.encode(**extreme_messages(layout)[0])
    assert ours[: HEADER.size] == theirs[: HEADER.size] == layout.header_bytes
    assert SCHEMA.sbe.decode_header(ours) == {
        "blockLength": msg.blockLength,
        "templateId": msg.id,
        "schemaId": int(SCHEMA.sbe.id),
        "version": int(SCHEMA.sbe.version),
    }
    assert layout.block_length == msg.blockLength
    assert layout.size == HEADER.size + msg.blockLength
    assert HEADER.size == 8
    assert struct.unpack_from("<HHHH", ours) == (msg.blockLength, msg.id, SCHEMA.schema_id, SCHEMA.version)
    assert SCHEMA.layout_of(ours) is layout


def test_schema_identity() -> None:
    assert SCHEMA.schema_id == int(SCHEMA.sbe.id) == 7001
    assert SCHEMA.version == int(SCHEMA.sbe.version)
    assert sorted(SCHEMA.messages) == sorted(SCHEMA.sbe.messages)
    assert {m.name for m in LAYOUTS} == {m.name for m in SCHEMA.sbe.messages.values()}
    assert len(SCHEMA.by_name) == len(SCHEMA.messages)
    for layout in LAYOUTS:
        assert SCHEMA.message(layout.name) is layout
        assert SCHEMA.message(layout.template_id) is layout


# -- layout conventions -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_alignment_and_contiguity(layout: MessageLayout) -> None:
    offset = HEADER.size
    for f in layout.fields:
        assert f.offset == offset, f"{layout.name}.{f.name}: gap or overlap at {f.offset}"
        if not f.is_char:
            assert f.offset % f.size == 0, f"{layout.name}.{f.name} at {f.offset} is not {f.size}-byte aligned"
        assert layout.dtype.fields[f.name][1] == f.offset
        offset += f.size
    assert offset == layout.size == layout.struct.size
    assert layout.body_struct.size == layout.block_length
    assert layout.dtype.itemsize == layout.size


def test_slot_size() -> None:
    assert SCHEMA.slot_size % 64 == 0
    assert SCHEMA.slot_size >= max(m.size for m in LAYOUTS)
    assert SCHEMA.slot_size - 64 < max(m.size for m in LAYOUTS)  # the smallest such multiple
    assert SCHEMA.max_message_size == max(m.size for m in LAYOUTS)


def test_every_message_that_crosses_a_ring_starts_with_the_stamp() -> None:
    ring = set(messages.RING)
    assert ring and len(ring) + len(messages.SESSION) == len(LAYOUTS)
    for layout in LAYOUTS:
        if layout in ring:
            assert layout.field_names[:3] == ("seq", "timestampNs", "ingressNs"), layout.name
            assert layout.offset("seq") == 8
        else:  # the FIXP session layer: gateway and client only
            assert "seq" not in layout.field_names and layout in messages.SESSION, layout.name


def test_every_message_fits_a_128_byte_slot() -> None:
    """Engine throughput depends on the slot size (docs/benchmarks.md): an instrument's risk
    limits travel in their own InstrumentLimits so that InstrumentDefinition stays small."""
    assert SCHEMA.slot_size == 128
    assert max(m.size for m in LAYOUTS) == SCHEMA.message("Trade").size == 125


# -- slots: numpy over a (k, slot_size) array of mixed messages ----------------------------------


@SETTINGS
@given(data=st.data())
def test_slot_dtype_over_mixed_slots(data: st.DataObject) -> None:
    slot = SCHEMA.slot_size
    chosen = data.draw(st.lists(st.sampled_from(LAYOUTS), min_size=1, max_size=12), label="messages")
    slots = np.zeros((len(chosen), slot), dtype=np.uint8)
    # dirty the slots first: stale bytes past a message must not matter
    slots[:] = data.draw(st.integers(0, 255), label="fill")
    expected = []
    for i, layout in enumerate(chosen):
        values = data.draw(message_strategy(layout), label=layout.name)
        layout.encode_into(slots[i], 0, **values)
        expected.append(expected_ours(layout, values))

    # header through any message's slot dtype (the header is common)
    head = slots.view(LAYOUTS[0].slot_dtype(slot))[:, 0]
    assert list(head["templateId"]) == [m.template_id for m in chosen]

    for layout in {m.template_id: m for m in chosen}.values():
        dt = layout.slot_dtype(slot)
        assert dt.itemsize == slot
        mask = head["templateId"] == layout.template_id
        recs = slots[mask].view(dt)[:, 0]
        rows = np.flatnonzero(mask)
        for rec, row in zip(recs, rows):
            assert dtype_values(layout, rec) == expected[row]
            assert SCHEMA.decode(slots[row]).fields == expected[row]
        # the whole array viewed at once, then indexed
        whole = slots.view(dt)[:, 0]
        for row in rows:
            assert dtype_values(layout, whole[row]) == expected[row]

    # iter_slots, as a ring delivers them
    for got, want, layout in zip(SCHEMA.iter_slots(slots), expected, chosen):
        assert got.name == layout.name
        assert got.fields == want
    # the sbe package reads each slot too (it ignores the bytes past the message)
    for row, layout in enumerate(chosen):
        assert from_sbe(layout.template_id, SCHEMA.sbe.decode(bytes(slots[row])).value) == expected[row]


def test_slot_dtype_too_small_is_refused() -> None:
    from ringex.engine.wire.codec import CodecError

    for layout in LAYOUTS:
        with pytest.raises(CodecError, match=layout.name):
            layout.slot_dtype(layout.size - 1)
        assert layout.slot_dtype(layout.size).itemsize == layout.size


def test_decode_at_offset_in_a_stream() -> None:
    """Messages laid end to end in one buffer decode at their offsets, ours and sbe's."""
    buf = bytearray()
    offsets = []
    for layout, pick in zip(LAYOUTS, itertools.cycle([0, -2])):  # all-min, all-max alternately
        offsets.append(len(buf))
        buf += layout.encode(**extreme_messages(layout)[pick])
    for layout, off in zip(LAYOUTS, offsets):
        assert SCHEMA.decode(buf, off).name == layout.name
        assert SCHEMA.sbe.decode(memoryview(buf)[off:]).message_name == layout.name


# -- the risk engine's messages (docs/risk.md) ---------------------------------------------------
# Covered by every parametrized test above like any message; here, what the risk engine relies
# on is pinned: the template ids, the new fields and enum values, and realistic values that
# round-trip both ways against the sbe package.

RISK_MESSAGES = {  # name: (template id, fields after the stamp, in wire order)
    "Funds": (12, ("amount", "account", "asset", "action")),
    "IndexPrice": (13, ("price", "instrument")),
    "InstrumentLimits": (16, ("maxOrderQty", "maxPosition", "maxOrderNotional", "notionalDivisor", "cbWindowNs",
                              "cbHaltNs", "instrument", "priceBandPpm", "cbMovePpm")),
    "PerpetualParams": (17, ("tierNotional", "fundingIntervalNs", "impactNotional", "instrument", "imPpm", "mmPpm", "tierStepPpm",
                             "fundingCapPpm", "basisCapPpm", "basisEmaPpm", "liquidationFeePpm",
                             "interestPpm")),
    "MarkPrice": (123, ("markPrice", "indexPrice", "basis", "instrument")),
    "FundingApplied": (124, ("markPrice", "indexPrice", "remainder", "total", "instrument", "ratePpm")),
    "Liquidation": (125, ("qty", "price", "amount", "equity", "requirement", "account", "counterparty",
                          "instrument", "stage")),
}


@pytest.mark.parametrize("name", sorted(RISK_MESSAGES))
def test_risk_messages_are_in_the_schema(name: str) -> None:
    tid, fields = RISK_MESSAGES[name]
    layout = SCHEMA.message(name)
    assert layout.template_id == tid and SCHEMA.message(tid) is layout
    assert layout.field_names == ("seq", "timestampNs", "ingressNs", *fields)


def test_risk_fields_and_enum_values() -> None:
    from ringex.engine.wire import messages as m

    definition = SCHEMA.message("InstrumentDefinition")
    assert "baseAsset" in definition.field_names and definition.field("baseAsset").struct_code == "I"
    assert SCHEMA.message("Funds").field("asset").struct_code == "I"
    assert (m.RejectReason.UnknownAsset, m.RejectReason.NotPerpetual) == (44, 45)
    assert m.CancelReason.ReduceOnly == 10
    assert [(s.name, int(s)) for s in m.LiquidationStage] == [
        ("Start", 1), ("BookOrder", 2), ("InsuranceTakeover", 3), ("AutoDeleverage", 4), ("InsuranceCover", 5),
        ("FeeCover", 6), ("Done", 7), ("LiquidationFee", 8)]
    assert m.PerpetualParams in m.ADMIN and m.PerpetualParams in m.INBOUND
    assert {m.MarkPrice.name, m.FundingApplied.name, m.Liquidation.name} <= set(SCHEMA.by_name)


RISK_SAMPLES = [
    ("InstrumentDefinition", dict(seq=1, timestampNs=2, ingressNs=3, tickSize=5, lotSize=10, minQty=10,
                                  maxQty=10**6, referencePrice=50_000, symbol="BTC-PERP", makerFeePpm=-100,
                                  takerFeePpm=250, instrument=7, baseAsset=0, kind="Perpetual",
                                  haltPolicy="Queue", status="Trading")),
    ("InstrumentDefinition", dict(seq=1, instrument=3, baseAsset=2**32 - 1, kind="Spot", symbol="ETH/USD")),
    ("Funds", dict(seq=9, amount=2**60, account=0, asset=7, action="Withdraw")),
    ("Funds", dict(amount=-(2**63), account=2**32 - 1, asset=2**32 - 1, action="Deposit")),
    ("IndexPrice", dict(seq=4, price=49_995, instrument=7)),
    ("InstrumentLimits", dict(maxOrderQty=2**63 - 1, maxPosition=123_456, maxOrderNotional=-1, notionalDivisor=10**8,
                              cbWindowNs=2**64 - 1, cbHaltNs=0, instrument=7, priceBandPpm=-(2**31),
                              cbMovePpm=2**31 - 1)),
    ("PerpetualParams", dict(seq=5, tierNotional=10**12, fundingIntervalNs=8 * 3600 * 10**9, instrument=7,
                             imPpm=100_000, mmPpm=500_000, tierStepPpm=25_000, fundingCapPpm=7_500,
                             basisCapPpm=-1, basisEmaPpm=1_000_000, liquidationFeePpm=5_000,
                             interestPpm=-100, impactNotional=2 * 10**6)),
    ("MarkPrice", dict(seq=6, markPrice=50_010, indexPrice=49_995, basis=15, instrument=7)),
    ("MarkPrice", dict(markPrice=1, indexPrice=3, basis=-3, instrument=2**32 - 1)),
    ("FundingApplied", dict(seq=7, markPrice=50_010, indexPrice=49_995, remainder=12, total=2**63 - 1,
                            instrument=7, ratePpm=-300)),
    ("Liquidation", dict(seq=8, qty=-40, price=48_000, amount=-(2**63), equity=-5, requirement=10**9, account=42,
                         counterparty=0, instrument=7, stage="AutoDeleverage")),
    ("Liquidation", dict(stage="Done")),
    ("AdminResult", dict(seq=9, value=10**15 + 5, account=3, instrument=0, refTemplateId=12,
                         reason="UnknownAsset")),
    ("OrderCanceled", dict(orderId=5, canceledQty=3, reason="ReduceOnly")),
    ("OrderRejected", dict(reason="NotPerpetual", refTemplateId=13)),
]


@pytest.mark.parametrize("name, values", RISK_SAMPLES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(RISK_SAMPLES)])
def test_risk_samples_round_trip_both_ways(name: str, values: dict[str, Any]) -> None:
    layout = SCHEMA.message(name)
    full = {f.name: values.get(f.name, "" if f.is_char else min(f.enum) if f.enum is not None else 0)
            for f in layout.fields}
    ours = check_ours_to_sbe(layout, full)
    check_sbe_to_ours(layout, full)
    decoded = SCHEMA.decode(ours).fields
    for k, v in values.items():
        want = layout.field(k).enum[v] if isinstance(v, str) and layout.field(k).enum is not None else v
        assert decoded[k] == want, k
