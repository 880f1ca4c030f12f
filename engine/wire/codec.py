"""Hot-path codecs derived from the SBE schema.

The schema file (``schema.xml``) is parsed once with the ``sbe`` package; from its parse we
derive, for every message, the byte offset of every field, one precompiled
``struct.Struct`` for the whole message (header included) and a numpy structured dtype
over the same bytes.  Nothing here restates a layout by hand: change the XML and every
codec follows.  The ``sbe`` package itself stays the independent decoder that tests use
to prove our bytes conform (it is far too slow for the hot path).

Only fixed-length messages are supported: every message that crosses a ring fits one
slot, so groups and variable-length data are rejected when the schema is loaded.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import sbe

SCHEMA_PATH = Path(__file__).with_name("schema.xml")

# Every slot holds one message; slot sizes are multiples of this so that 8-byte fields of
# consecutive slots stay aligned.
SLOT_ALIGNMENT = 64

_STRUCT_CODES = {
    sbe.PrimitiveType.CHAR: "s",
    sbe.PrimitiveType.UINT8: "B",
    sbe.PrimitiveType.UINT16: "H",
    sbe.PrimitiveType.UINT32: "I",
    sbe.PrimitiveType.UINT64: "Q",
    sbe.PrimitiveType.INT8: "b",
    sbe.PrimitiveType.INT16: "h",
    sbe.PrimitiveType.INT32: "i",
    sbe.PrimitiveType.INT64: "q",
}
_NUMPY_CODES = {
    sbe.PrimitiveType.UINT8: "<u1",
    sbe.PrimitiveType.UINT16: "<u2",
    sbe.PrimitiveType.UINT32: "<u4",
    sbe.PrimitiveType.UINT64: "<u8",
    sbe.PrimitiveType.INT8: "<i1",
    sbe.PrimitiveType.INT16: "<i2",
    sbe.PrimitiveType.INT32: "<i4",
    sbe.PrimitiveType.INT64: "<i8",
}
_SIZES = {
    sbe.PrimitiveType.CHAR: 1,
    sbe.PrimitiveType.UINT8: 1,
    sbe.PrimitiveType.UINT16: 2,
    sbe.PrimitiveType.UINT32: 4,
    sbe.PrimitiveType.UINT64: 8,
    sbe.PrimitiveType.INT8: 1,
    sbe.PrimitiveType.INT16: 2,
    sbe.PrimitiveType.INT32: 4,
    sbe.PrimitiveType.INT64: 8,
}
_ENUM_PRIMITIVES = {
    sbe.EnumEncodingType.UINT8: sbe.PrimitiveType.UINT8,
    sbe.EnumEncodingType.UINT16: sbe.PrimitiveType.UINT16,
    sbe.EnumEncodingType.CHAR: sbe.PrimitiveType.CHAR,
}


class CodecError(ValueError):
    """A message could not be encoded or decoded; the text says which and why."""


class SchemaError(CodecError):
    """The schema file breaks a rule the codecs rely on."""


class TruncatedMessageError(CodecError):
    """The buffer ends before the message does."""


class UnknownTemplateError(CodecError):
    """The header names a template id this schema does not define."""


class SchemaMismatchError(CodecError):
    """The header names another schema, or a version this build cannot read."""


@dataclass(frozen=True)
class FieldLayout:
    """One field's place in a message: ``offset`` counts from the start of the header."""

    name: str
    offset: int
    size: int
    primitive: sbe.PrimitiveType
    enum: type[enum.IntEnum] | None = None
    length: int = 1  # characters, for char arrays

    @property
    def is_char(self) -> bool:
        return self.primitive is sbe.PrimitiveType.CHAR

    @property
    def struct_code(self) -> str:
        if self.is_char:
            return f"{self.length}s"
        return _STRUCT_CODES[self.primitive]

    @property
    def numpy_code(self) -> str:
        if self.is_char:
            return f"S{self.length}"
        return _NUMPY_CODES[self.primitive]

    def bounds(self) -> tuple[int, int]:
        """The smallest and largest integer the field can hold."""
        bits = 8 * self.size
        if self.primitive.value.startswith("u"):
            return 0, (1 << bits) - 1
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


class MessageLayout:
    """Everything needed to encode and decode one message type without the sbe package."""

    def __init__(
        self,
        name: str,
        template_id: int,
        block_length: int,
        fields: tuple[FieldLayout, ...],
        header: tuple[int, int, int, int],
    ) -> None:
        self.name = name
        self.template_id = template_id
        self.block_length = block_length
        self.fields = fields
        self.size = HEADER.size + block_length
        self.field_names = tuple(f.name for f in fields)
        self._by_name = {f.name: f for f in fields}
        self._header = header
        self.struct = struct.Struct("<HHHH" + "".join(f.struct_code for f in fields))
        self.body_struct = struct.Struct("<" + "".join(f.struct_code for f in fields))
        self.dtype = self.slot_dtype(self.size)
        self.header_bytes = HEADER.pack(*header)
        self._names = frozenset(self.field_names)
        # per field (name, quick coercion, value when absent), for ``values``
        self._plan = tuple((f.name, self._quick(f), b"" if f.is_char else _enum_default(f) if f.enum is not None else 0)
                           for f in fields)

    def __repr__(self) -> str:
        return f"MessageLayout({self.name}, templateId={self.template_id}, size={self.size})"

    def field(self, name: str) -> FieldLayout:
        try:
            return self._by_name[name]
        except KeyError:
            raise CodecError(f"{self.name} has no field {name!r}") from None

    def offset(self, name: str) -> int:
        """Byte offset of a field from the start of the message (header included)."""
        return self.field(name).offset

    def slot_dtype(self, itemsize: int) -> np.dtype:
        """A structured dtype over this message at the start of ``itemsize``-byte slots."""
        if itemsize < self.size:
            raise CodecError(f"{self.name} is {self.size} bytes; a {itemsize}-byte slot cannot hold it")
        names = ["blockLength", "templateId", "schemaId", "version", *self.field_names]
        formats = ["<u2", "<u2", "<u2", "<u2", *(f.numpy_code for f in self.fields)]
        offsets = [0, 2, 4, 6, *(f.offset for f in self.fields)]
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})

    # -- encoding -------------------------------------------------------------------------

    def _coerce(self, f: FieldLayout, value: Any) -> Any:
        if f.is_char:
            if isinstance(value, str):
                try:
                    value = value.encode("ascii")
                except UnicodeEncodeError:
                    raise CodecError(f"{self.name}.{f.name}: {value!r} is not ASCII") from None
            if not isinstance(value, (bytes, bytearray)):
                raise CodecError(f"{self.name}.{f.name}: expected text, got {type(value).__name__}")
            if not value.isascii():
                raise CodecError(f"{self.name}.{f.name}: {bytes(value)!r} is not ASCII")
            if len(value) > f.length:
                raise CodecError(f"{self.name}.{f.name}: {value!r} is longer than {f.length} characters")
            return bytes(value)
        if f.enum is not None:
            if isinstance(value, str):
                try:
                    return int(f.enum[value])
                except KeyError:
                    raise CodecError(f"{self.name}.{f.name}: {value!r} is not a {f.enum.__name__}") from None
            try:
                return int(f.enum(value))
            except ValueError:
                raise CodecError(f"{self.name}.{f.name}: {value!r} is not a {f.enum.__name__}") from None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise CodecError(f"{self.name}.{f.name}: expected an integer, got {value!r}")
        lo, hi = f.bounds()
        if not lo <= value <= hi:
            raise CodecError(f"{self.name}.{f.name}: {value} is outside [{lo}, {hi}]")
        return int(value)

    def _quick(self, f: FieldLayout) -> Callable[[Any], Any]:
        """``_coerce`` for ``f``, with the common case (an int in range, a member of the
        field's enum) answered without it: the same results, the same errors."""
        coerce = self._coerce
        if f.is_char:
            return lambda value: coerce(f, value)
        if f.enum is not None:
            kind, members = f.enum, frozenset(int(x) for x in f.enum)

            def quick_enum(value: Any) -> Any:
                if value.__class__ is kind or (value.__class__ is int and value in members):
                    return int(value)
                return coerce(f, value)
            return quick_enum
        lo, hi = f.bounds()

        def quick_int(value: Any) -> Any:
            if value.__class__ is int and lo <= value <= hi:
                return value
            return coerce(f, value)
        return quick_int

    def values(self, fields: Mapping[str, Any]) -> tuple[Any, ...]:
        """Validated values in layout order; missing fields are zero (blank for text)."""
        if not fields.keys() <= self._names:
            unknown = set(fields) - self._names
            raise CodecError(f"{self.name} has no field(s) {', '.join(sorted(unknown))}")
        return tuple(quick(fields[name]) if name in fields else absent for name, quick, absent in self._plan)

    def encode(self, **fields: Any) -> bytes:
        """Encode a whole message (header included), validating every field."""
        return self.struct.pack(*self._header, *self.values(fields))

    def encode_into(self, buffer: Any, offset: int = 0, **fields: Any) -> int:
        """Encode into ``buffer`` at ``offset``; returns the bytes written."""
        if offset < 0 or len(memoryview(buffer).cast("B")) - offset < self.size:
            raise CodecError(f"{self.name} needs {self.size} bytes at offset {offset}")
        self.struct.pack_into(buffer, offset, *self._header, *self.values(fields))
        return self.size

    def pack_into(self, buffer: Any, offset: int, *values: Any) -> None:
        """Hot path: raw values in layout order, no validation beyond struct's own."""
        self.struct.pack_into(buffer, offset, *self._header, *values)

    # -- decoding -------------------------------------------------------------------------

    def decode_body(self, buffer: Any, offset: int = 0) -> dict[str, Any]:
        raw = self.body_struct.unpack_from(buffer, offset + HEADER.size)
        out: dict[str, Any] = {}
        for f, v in zip(self.fields, raw):
            if f.is_char:
                v = v.rstrip(b"\0").decode("ascii", errors="replace")
            elif f.enum is not None:
                try:
                    v = f.enum(v)
                except ValueError:
                    raise CodecError(f"{self.name}.{f.name}: {v} is not a valid {f.enum.__name__}") from None
            out[f.name] = v
        return out


def _enum_default(f: FieldLayout) -> int:
    assert f.enum is not None
    return int(min(f.enum))


HEADER = struct.Struct("<HHHH")


@dataclass(frozen=True)
class Decoded:
    """A decoded message: its name, template id and field values (enums as IntEnum)."""

    name: str
    template_id: int
    fields: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


class Schema:
    """The parsed schema: enums as ``IntEnum`` classes and a ``MessageLayout`` per message."""

    def __init__(self, path: Path = SCHEMA_PATH) -> None:
        self.path = Path(path)
        text = self.path.read_bytes()
        self.fingerprint = hashlib.sha256(text).hexdigest()[:16]
        with open(self.path, encoding="utf-8") as fh:
            try:
                parsed = sbe.Schema.parse(fh)
            except Exception as exc:  # the sbe package asserts on malformed schemas
                raise SchemaError(f"{self.path}: cannot parse schema: {exc!r}") from exc
        self.sbe = parsed
        self.schema_id = int(parsed.id)
        self.version = int(parsed.version)
        self.enums: dict[str, type[enum.IntEnum]] = {}
        for tname, t in parsed.types.items():
            if isinstance(t, sbe.Enum):
                try:
                    members = {v.name: int(v.value) for v in t.valid_values}
                except ValueError:
                    raise SchemaError(f"{self.path}: enum {tname}: char-encoded enums are not supported") from None
                self.enums[tname] = enum.IntEnum(tname, members)  # type: ignore[misc]
        self._check_header(parsed)
        self.messages: dict[int, MessageLayout] = {}
        self.by_name: dict[str, MessageLayout] = {}
        for tid in sorted(parsed.messages):
            layout = self._layout(parsed.messages[tid])
            self.messages[tid] = layout
            self.by_name[layout.name] = layout
        self.max_message_size = max(m.size for m in self.messages.values())
        self.slot_size = -(-self.max_message_size // SLOT_ALIGNMENT) * SLOT_ALIGNMENT

    def _check_header(self, parsed: sbe.Schema) -> None:
        header = parsed.types.get(parsed.header_type_name)
        names = [t.name for t in getattr(header, "types", [])]
        if names != ["blockLength", "templateId", "schemaId", "version"]:
            raise SchemaError(f"{self.path}: messageHeader must be blockLength, templateId, schemaId, version")
        if any(t.primitiveType is not sbe.PrimitiveType.UINT16 for t in header.types):
            raise SchemaError(f"{self.path}: messageHeader fields must all be uint16")

    def _field_layouts(self, msg: sbe.Message) -> list[FieldLayout]:
        out: list[FieldLayout] = []
        offset = HEADER.size

        def add(name: str, t: Any) -> None:
            nonlocal offset
            where = f"{msg.name}.{name}"
            if isinstance(t, sbe.PrimitiveType):
                raise SchemaError(f"{where}: declare a named <type> for the field (sbe cannot decode bare primitives)")
            if getattr(t, "presence", None) is sbe.Presence.CONSTANT:
                raise SchemaError(f"{where}: constant fields are not supported (they take no bytes on the wire)")
            if isinstance(t, sbe.Enum):
                enc = t.encodingType
                prim = _ENUM_PRIMITIVES[enc] if isinstance(enc, sbe.EnumEncodingType) else enc.primitiveType
                if prim is sbe.PrimitiveType.CHAR:
                    raise SchemaError(f"{where}: char-encoded enums are not supported")
                fl = FieldLayout(name, offset, _SIZES[prim], prim, enum=self.enums[t.name])
            elif isinstance(t, sbe.Type):
                if t.primitiveType in (sbe.PrimitiveType.FLOAT, sbe.PrimitiveType.DOUBLE):
                    raise SchemaError(f"{where}: floating point has no place in an exchange message")
                if t.padding:
                    raise SchemaError(f"{where}: explicit offsets are not supported")
                length = t.length if t.primitiveType is sbe.PrimitiveType.CHAR else 1
                fl = FieldLayout(name, offset, _SIZES[t.primitiveType] * length, t.primitiveType, length=length)
            else:
                raise SchemaError(f"{where}: {type(t).__name__} fields are not supported (fixed-length messages only)")
            if not fl.is_char and fl.offset % fl.size:
                raise SchemaError(f"{where}: offset {fl.offset} is not aligned to its {fl.size}-byte size")
            out.append(fl)
            offset += fl.size

        for f in msg.fields:
            if not isinstance(f, sbe.Field):
                raise SchemaError(f"{msg.name}.{f.name}: groups and var data are not supported")
            if isinstance(f.type, sbe.Composite):
                for member in f.type.types:
                    add(member.name, member)
            else:
                add(f.name, f.type)
        return out

    def _layout(self, msg: sbe.Message) -> MessageLayout:
        fields = tuple(self._field_layouts(msg))
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise SchemaError(f"{msg.name}: field names collide once composites are flattened: {names}")
        block = sum(f.size for f in fields)
        if msg.blockLength is None:
            raise SchemaError(f"{msg.name}: declare blockLength (the sbe package writes 0 without it)")
        if msg.blockLength != block:
            raise SchemaError(f"{msg.name}: declared blockLength {msg.blockLength} but its fields take {block} bytes")
        header = (block, msg.id, self.schema_id, self.version)
        return MessageLayout(msg.name, msg.id, block, fields, header)

    # -- lookup ---------------------------------------------------------------------------

    def message(self, key: int | str) -> MessageLayout:
        try:
            return self.messages[key] if isinstance(key, int) else self.by_name[key]
        except KeyError:
            raise UnknownTemplateError(f"no message {key!r} in schema {self.schema_id}") from None

    def enum(self, name: str) -> type[enum.IntEnum]:
        return self.enums[name]

    # -- whole-message codec --------------------------------------------------------------

    def encode(self, key: int | str, **fields: Any) -> bytes:
        return self.message(key).encode(**fields)

    def layout_of(self, buffer: Any, offset: int = 0) -> MessageLayout:
        """Check the header at ``offset`` and return the layout it names."""
        view = memoryview(buffer).cast("B")
        available = len(view) - offset
        if available < HEADER.size:
            raise TruncatedMessageError(
                f"truncated message: {available} bytes, fewer than the {HEADER.size}-byte SBE header"
            )
        block, tid, sid, ver = HEADER.unpack_from(view, offset)
        if sid != self.schema_id:
            raise SchemaMismatchError(f"schema id {sid} in header, expected {self.schema_id}")
        if ver != self.version:
            raise SchemaMismatchError(f"schema version {ver} in header, this build reads version {self.version}")
        layout = self.messages.get(tid)
        if layout is None:
            raise UnknownTemplateError(f"unknown template id {tid} (schema {sid} version {ver})")
        if block != layout.block_length:
            raise CodecError(f"{layout.name}: header blockLength {block}, expected {layout.block_length}")
        if available < layout.size:
            raise TruncatedMessageError(f"truncated {layout.name}: {available} of {layout.size} bytes")
        return layout

    def decode(self, buffer: Any, offset: int = 0) -> Decoded:
        layout = self.layout_of(buffer, offset)
        return Decoded(layout.name, layout.template_id, layout.decode_body(buffer, offset))

    def iter_slots(self, slots: np.ndarray) -> Iterable[Decoded]:
        """Decode each row of a (k, slot_size) uint8 array, as a ring delivers them."""
        for row in slots:
            yield self.decode(row)


_DEFAULT: Schema | None = None


def default_schema() -> Schema:
    """The schema shipped with ringex, parsed once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Schema()
    return _DEFAULT
