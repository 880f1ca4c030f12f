"""Every way a message or a schema can be wrong, and that the error says what is wrong."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from ringex.engine.wire.codec import (
    HEADER,
    CodecError,
    FieldLayout,
    MessageLayout,
    Schema,
    SchemaError,
    SchemaMismatchError,
    TruncatedMessageError,
    UnknownTemplateError,
)
from ringex.engine.wire.messages import SCHEMA

LAYOUTS: list[MessageLayout] = [SCHEMA.messages[tid] for tid in sorted(SCHEMA.messages)]
IDS = [layout.name for layout in LAYOUTS]


def sample(layout: MessageLayout) -> bytes:
    """A valid message with every integer field non-zero."""
    values = {}
    for i, f in enumerate(layout.fields, start=1):
        if f.is_char:
            values[f.name] = "X" * f.length
        elif f.enum is not None:
            values[f.name] = max(f.enum)
        else:
            values[f.name] = i
    return layout.encode(**values)


def int_fields(layout: MessageLayout) -> list[FieldLayout]:
    return [f for f in layout.fields if not f.is_char and f.enum is None]


def with_header(buf: bytes, **header: int) -> bytes:
    names = ("blockLength", "templateId", "schemaId", "version")
    values = dict(zip(names, HEADER.unpack_from(buf)))
    values.update(header)
    return HEADER.pack(*(values[n] for n in names)) + buf[HEADER.size :]


def first_invalid(enum: type) -> int:
    valid = {int(m) for m in enum}
    return next(v for v in range(256) if v not in valid)


# -- decoding: truncation, header mismatches ----------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_every_truncation_is_reported(layout: MessageLayout) -> None:
    buf = sample(layout)
    assert SCHEMA.decode(buf).name == layout.name
    for n in range(layout.size):
        with pytest.raises(TruncatedMessageError) as info:
            SCHEMA.decode(buf[:n])
        text = str(info.value)
        assert "truncated" in text
        if n < HEADER.size:
            assert f"{n} bytes" in text and "header" in text, text
        else:
            assert f"{layout.name}: {n} of {layout.size} bytes" in text, text
    # same at an offset inside a larger buffer, and through a numpy array
    padded = b"\xaa" * 5 + buf
    for n in (0, 7, layout.size - 1):
        with pytest.raises(TruncatedMessageError):
            SCHEMA.decode(padded[: 5 + n], 5)
        with pytest.raises(TruncatedMessageError):
            SCHEMA.decode(np.frombuffer(buf[:n], dtype=np.uint8))


def test_truncation_is_a_codec_error() -> None:
    # callers that catch CodecError (or ValueError) catch every decoding failure
    for cls in (TruncatedMessageError, UnknownTemplateError, SchemaMismatchError, SchemaError):
        assert issubclass(cls, CodecError)
    assert issubclass(CodecError, ValueError)


def test_unknown_template_ids() -> None:
    buf = sample(LAYOUTS[0])
    unknown = [t for t in (0, 5, 99, 999, 65535) if t not in SCHEMA.messages]
    unknown.append(max(SCHEMA.messages) + 1)
    for tid in unknown:
        with pytest.raises(UnknownTemplateError, match=rf"unknown template id {tid}\b"):
            SCHEMA.decode(with_header(buf, templateId=tid))
        with pytest.raises(UnknownTemplateError, match=str(tid)):
            SCHEMA.message(tid)
    with pytest.raises(UnknownTemplateError, match="NoSuchMessage"):
        SCHEMA.message("NoSuchMessage")
    with pytest.raises(UnknownTemplateError):
        SCHEMA.encode("NoSuchMessage", seq=1)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_wrong_schema_id_and_version(layout: MessageLayout) -> None:
    buf = sample(layout)
    for sid in (0, SCHEMA.schema_id - 1, SCHEMA.schema_id + 1, 65535):
        with pytest.raises(SchemaMismatchError, match=rf"schema id {sid} in header, expected {SCHEMA.schema_id}"):
            SCHEMA.decode(with_header(buf, schemaId=sid))
    for ver in (0, SCHEMA.version + 1, 65535):
        if ver == SCHEMA.version:
            continue
        with pytest.raises(SchemaMismatchError, match=rf"version {ver} in header.*version {SCHEMA.version}"):
            SCHEMA.decode(with_header(buf, version=ver))


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_wrong_block_length(layout: MessageLayout) -> None:
    buf = sample(layout) + b"\0" * 8  # long enough that a bigger blockLength is not a truncation
    for bl in (0, layout.block_length - 1, layout.block_length + 1, 65535):
        with pytest.raises(CodecError) as info:
            SCHEMA.decode(with_header(buf, blockLength=bl))
        assert not isinstance(info.value, TruncatedMessageError)
        assert f"{layout.name}: header blockLength {bl}, expected {layout.block_length}" in str(info.value)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_invalid_enum_on_decode(layout: MessageLayout) -> None:
    for f in layout.fields:
        if f.enum is None:
            continue
        for bad in (first_invalid(f.enum), (1 << (8 * f.size)) - 1):
            if bad in {int(m) for m in f.enum}:
                continue
            buf = bytearray(sample(layout))
            buf[f.offset : f.offset + f.size] = bad.to_bytes(f.size, "little")
            with pytest.raises(CodecError, match=rf"{layout.name}\.{f.name}: {bad} is not a valid {f.enum.__name__}"):
                SCHEMA.decode(bytes(buf))


# -- encoding: ranges, types, enums, text, names ----------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_out_of_range_integers(layout: MessageLayout) -> None:
    for f in int_fields(layout):
        lo, hi = f.bounds()
        bits = 8 * f.size
        assert hi - lo == (1 << bits) - 1
        assert (lo == 0) == f.primitive.value.startswith("u")
        layout.encode(**{f.name: lo})
        layout.encode(**{f.name: hi})
        for bad in (lo - 1, hi + 1, lo - (1 << 70), hi + (1 << 70)):
            where = re.escape(f"{layout.name}.{f.name}: {bad} is outside [{lo}, {hi}]")
            with pytest.raises(CodecError, match=where):
                layout.encode(**{f.name: bad})
            with pytest.raises(CodecError, match=where):
                layout.encode_into(bytearray(layout.size), 0, **{f.name: bad})
            with pytest.raises(CodecError, match=where):
                SCHEMA.encode(layout.template_id, **{f.name: bad})
        # numpy integers are accepted within range and checked the same way
        np_type = np.dtype(f.numpy_code).type
        assert layout.encode(**{f.name: np_type(hi)}) == layout.encode(**{f.name: hi})


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_non_integers_for_integer_fields(layout: MessageLayout) -> None:
    for f in int_fields(layout):
        for bad in (1.0, 1.5, "1", None, True, b"\x01"):
            with pytest.raises(CodecError, match=rf"{layout.name}\.{f.name}: expected an integer"):
                layout.encode(**{f.name: bad})


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_invalid_enum_on_encode(layout: MessageLayout) -> None:
    for f in layout.fields:
        if f.enum is None:
            continue
        name = f.enum.__name__
        for bad in (first_invalid(f.enum), -1, 1 << (8 * f.size), "NoSuchValue", "buy", None, 1.5):
            with pytest.raises(CodecError, match=rf"{layout.name}\.{f.name}: .* is not a {name}"):
                layout.encode(**{f.name: bad})


@pytest.mark.parametrize("layout", [m for m in LAYOUTS if any(f.is_char for f in m.fields)], ids=lambda m: m.name)
def test_bad_text(layout: MessageLayout) -> None:
    for f in layout.fields:
        if not f.is_char:
            continue
        where = rf"{layout.name}\.{f.name}: "
        layout.encode(**{f.name: "A" * f.length})
        layout.encode(**{f.name: b"A" * f.length})
        with pytest.raises(CodecError, match=where + r".* is longer than " + str(f.length)):
            layout.encode(**{f.name: "A" * (f.length + 1)})
        with pytest.raises(CodecError, match=where + r".* is longer than " + str(f.length)):
            layout.encode(**{f.name: b"A" * (f.length + 1)})
        for bad in ("é", "AB\u00ffC", "\u20ac", "\U0001f600"):
            with pytest.raises(CodecError, match=where + r".* is not ASCII"):
                layout.encode(**{f.name: bad})
        for bad_bytes in (b"\xff", b"AB\x80", "é".encode()):
            with pytest.raises(CodecError, match=where + r".* is not ASCII"):
                layout.encode(**{f.name: bad_bytes})
        for wrong in (5, None, ["A"], 1.0):
            with pytest.raises(CodecError, match=where + "expected text"):
                layout.encode(**{f.name: wrong})


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_unknown_field_names(layout: MessageLayout) -> None:
    with pytest.raises(CodecError, match=rf"{layout.name} has no field\(s\) bogus\b"):
        layout.encode(bogus=1)
    with pytest.raises(CodecError, match=r"has no field\(s\) alsoBogus, bogus"):
        layout.encode(seq=1, bogus=1, alsoBogus=2)
    with pytest.raises(CodecError, match="bogus"):
        layout.encode_into(bytearray(layout.size), 0, bogus=1)
    # the composite's own name is not a field of ours: its members are
    with pytest.raises(CodecError, match="stamp"):
        layout.encode(stamp={"seq": 1})
    with pytest.raises(CodecError, match=rf"{layout.name} has no field 'bogus'"):
        layout.field("bogus")
    with pytest.raises(CodecError, match="bogus"):
        layout.offset("bogus")


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_encode_into_too_small_or_bad_offset(layout: MessageLayout) -> None:
    need = rf"{layout.name} needs {layout.size} bytes"
    with pytest.raises(CodecError, match=need):
        layout.encode_into(bytearray(layout.size - 1), 0)
    with pytest.raises(CodecError, match=need):
        layout.encode_into(bytearray(layout.size), 1)
    with pytest.raises(CodecError, match=need):
        layout.encode_into(bytearray(layout.size + 8), -1)
    # nothing was written by a refused encode
    buf = bytearray(layout.size)
    with pytest.raises(CodecError):
        layout.encode_into(buf, 0, seq=-1)
    assert buf == bytearray(layout.size)


def test_pack_into_is_unvalidated_but_struct_still_refuses_overflow() -> None:
    layout = LAYOUTS[0]
    f = int_fields(layout)[0]
    values = list(layout.values({}))
    values[layout.field_names.index(f.name)] = f.bounds()[1] + 1
    with pytest.raises(struct.error):
        layout.pack_into(bytearray(layout.size), 0, *values)


# -- schema loading -------------------------------------------------------------------------

_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<sbe:messageSchema xmlns:sbe="http://fixprotocol.io/2016/sbe" package="t" id="9" version="2" byteOrder="littleEndian">
  <types>
    <composite name="messageHeader">
      <type name="blockLength" primitiveType="uint16"/>
      <type name="templateId" primitiveType="uint16"/>
      <type name="schemaId" primitiveType="uint16"/>
      <type name="version" primitiveType="uint16"/>
    </composite>
    <composite name="groupSizeEncoding">
      <type name="blockLength" primitiveType="uint16"/>
      <type name="numInGroup" primitiveType="uint16"/>
    </composite>
    <composite name="Stamp">
      <type name="seq" primitiveType="uint64"/>
    </composite>
    <type name="I64" primitiveType="int64"/>
    <type name="U32" primitiveType="uint32"/>
    <type name="U8" primitiveType="uint8"/>
    <type name="F64" primitiveType="double"/>
    <type name="F32" primitiveType="float"/>
    <type name="Sym" primitiveType="char" length="3" characterEncoding="ASCII"/>
    <type name="Const" primitiveType="int64" presence="constant">7</type>
    <enum name="Side" encodingType="uint8"><validValue name="Buy">1</validValue></enum>
    <set name="Flags" encodingType="uint8"><choice name="A">0</choice></set>
    {extra_types}
  </types>
"""
_TAIL = "</sbe:messageSchema>\n"


def write_schema(tmp_path: Path, messages: str, extra_types: str = "", head: str = _HEAD) -> Path:
    path = tmp_path / "schema.xml"
    path.write_text(head.replace("{extra_types}", extra_types) + messages + _TAIL, encoding="utf-8")
    return path


def test_minimal_schema_loads(tmp_path: Path) -> None:
    """The template the bad schemas below are made from is itself good."""
    path = write_schema(
        tmp_path,
        '<sbe:message name="M" id="3" blockLength="24">'
        '<field name="stamp" id="1" type="Stamp"/><field name="a" id="2" type="I64"/>'
        '<field name="n" id="3" type="U32"/><field name="sym" id="4" type="Sym"/><field name="s" id="5" type="Side"/>'
        "</sbe:message>",
    )
    schema = Schema(path)
    m = schema.message("M")
    assert (schema.schema_id, schema.version) == (9, 2)
    assert m.field_names == ("seq", "a", "n", "sym", "s")
    assert [f.offset for f in m.fields] == [8, 16, 24, 28, 31]
    assert m.size == 32 and schema.slot_size == 64
    buf = m.encode(seq=1, a=-2, n=3, sym="abc", s="Buy")
    assert schema.decode(buf).fields == {"seq": 1, "a": -2, "n": 3, "sym": "abc", "s": schema.enum("Side").Buy}
    assert schema.sbe.decode(buf).value == {"stamp": {"seq": 1}, "a": -2, "n": 3, "sym": "abc", "s": "Buy"}
    assert schema.fingerprint != SCHEMA.fingerprint


_MSG = '<sbe:message name="Bad" id="1"{bl}>{fields}</sbe:message>'


def _msg(fields: str, bl: int | None) -> str:
    return _MSG.format(bl="" if bl is None else f' blockLength="{bl}"', fields=fields)


BAD_SCHEMAS = {
    "bare primitive": (
        _msg('<field name="a" id="1" type="int64"/>', 8),
        r"Bad\.a: declare a named <type>",
    ),
    "no blockLength": (
        _msg('<field name="a" id="1" type="I64"/>', None),
        r"Bad: declare blockLength",
    ),
    "wrong blockLength": (
        _msg('<field name="a" id="1" type="I64"/><field name="b" id="2" type="U32"/>', 16),
        r"Bad: declared blockLength 16 but its fields take 12 bytes",
    ),
    "blockLength too small": (
        _msg('<field name="a" id="1" type="I64"/>', 4),
        r"Bad: declared blockLength 4 but its fields take 8 bytes",
    ),
    "misaligned int64 after uint8": (
        _msg('<field name="a" id="1" type="U8"/><field name="b" id="2" type="I64"/>', 9),
        r"Bad\.b: offset 9 is not aligned to its 8-byte size",
    ),
    "misaligned uint32 after char[3]": (
        _msg('<field name="a" id="1" type="Sym"/><field name="b" id="2" type="U32"/>', 7),
        r"Bad\.b: offset 11 is not aligned to its 4-byte size",
    ),
    "double field": (
        _msg('<field name="a" id="1" type="F64"/>', 8),
        r"Bad\.a: floating point",
    ),
    "float field": (
        _msg('<field name="a" id="1" type="F32"/>', 4),
        r"Bad\.a: floating point",
    ),
    "group": (
        _msg(
            '<field name="a" id="1" type="I64"/>'
            '<group name="legs" id="2" blockLength="8"><field name="b" id="3" type="I64"/></group>',
            8,
        ),
        r"Bad\.legs: groups and var data are not supported",
    ),
    "set field": (
        _msg('<field name="f" id="1" type="Flags"/>', 1),
        r"Bad\.f: Set fields are not supported",
    ),
    "constant field": (
        _msg('<field name="a" id="1" type="I64"/><field name="c" id="2" type="Const"/>', 8),
        r"Bad\.c: constant fields are not supported",
    ),
    "colliding names after flattening": (
        _msg('<field name="stamp" id="1" type="Stamp"/><field name="seq" id="2" type="I64"/>', 16),
        r"Bad: field names collide",
    ),
    "unknown tag": (
        _msg('<field name="a" id="1" type="I64"/><bogus/>', 8),
        r"cannot parse schema",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SCHEMAS))
def test_bad_schemas_are_refused(tmp_path: Path, case: str) -> None:
    messages, message = BAD_SCHEMAS[case]
    with pytest.raises(SchemaError, match=message):
        Schema(write_schema(tmp_path, messages))


def test_char_encoded_enum_is_refused(tmp_path: Path) -> None:
    path = write_schema(
        tmp_path,
        _msg('<field name="a" id="1" type="I64"/>', 8),
        extra_types='<enum name="CSide" encodingType="char"><validValue name="Buy">B</validValue></enum>',
    )
    with pytest.raises(SchemaError, match="CSide: char-encoded enums are not supported"):
        Schema(path)


def test_bad_message_header_is_refused(tmp_path: Path) -> None:
    head = _HEAD.replace('<type name="version" primitiveType="uint16"/>', "")
    with pytest.raises(SchemaError, match="messageHeader must be"):
        Schema(write_schema(tmp_path, _msg('<field name="a" id="1" type="I64"/>', 8), head=head))
    head = _HEAD.replace('<type name="version" primitiveType="uint16"/>', '<type name="version" primitiveType="uint32"/>')
    with pytest.raises(SchemaError, match="must all be uint16"):
        Schema(write_schema(tmp_path, _msg('<field name="a" id="1" type="I64"/>', 8), head=head))


def test_malformed_xml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "schema.xml"
    path.write_text("<sbe:messageSchema", encoding="utf-8")
    with pytest.raises(SchemaError, match="cannot parse schema"):
        Schema(path)
