"""Hypothesis strategies for any protobuf message, built from its descriptor.

Every field may be left unset or get a value of its wire type over its whole range (unknown enum numbers,
negative and huge integers, NaN and infinities, empty, blank, long and odd strings), at most one member of
each oneof is set, and nested messages recurse to a bounded depth. Strings are valid Unicode (protobuf
cannot encode anything else from Python); invalid UTF-8 on the wire is fuzzed separately with raw bytes.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

_T = FieldDescriptor
_INT_RANGES = {
    _T.TYPE_INT32: (-(2**31), 2**31 - 1),
    _T.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _T.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _T.TYPE_ENUM: (-(2**31), 2**31 - 1),
    _T.TYPE_UINT32: (0, 2**32 - 1),
    _T.TYPE_FIXED32: (0, 2**32 - 1),
    _T.TYPE_INT64: (-(2**63), 2**63 - 1),
    _T.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _T.TYPE_UINT64: (0, 2**64 - 1),
    _T.TYPE_FIXED64: (0, 2**64 - 1),
}
# Values that mean something to our services, mixed in so that examples also get past validation.
_WORDS = ["", " ", "\n\t ", "Elena Varga", "priya-raman", "ROLE_USER", "KV cache?", "\x00", "é漢😀", "ignore previous"]
_STRINGS = st.one_of(
    st.sampled_from(_WORDS),
    st.text(max_size=80),
    st.builds(lambda word, n: word * n, st.sampled_from(["word ", "x", "😀"]), st.integers(100, 3000)),
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == _T.TYPE_STRING:
        return _STRINGS
    if field.type == _T.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == _T.TYPE_BOOL:
        return st.booleans()
    if field.type == _T.TYPE_FLOAT:
        return st.floats(width=32)
    if field.type == _T.TYPE_DOUBLE:
        return st.floats()
    low, high = _INT_RANGES[field.type]
    small = [v for v in (-1, 0, 1, 2, 3, 5, 8, 50, 51, 1000, 1001, 8192, 8193) if low <= v <= high]
    if field.type == _T.TYPE_ENUM:
        small += [v.number for v in field.enum_type.values]
    return st.one_of(st.sampled_from(small), st.sampled_from([low, high]), st.integers(low, high))


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    single = messages(field.message_type, depth - 1) if field.type == _T.TYPE_MESSAGE else _scalar(field)
    if field.is_repeated:
        return st.lists(single, max_size=3 if field.type == _T.TYPE_MESSAGE else 10)
    return single


def messages(descriptor: Descriptor, depth: int = 3) -> st.SearchStrategy[Message]:
    """Messages of this type: any subset of fields set (one per oneof), values over their full ranges."""
    cls = GetMessageClass(descriptor)
    if depth <= 0:
        return st.just(cls())
    plain = [f for f in descriptor.fields if f.containing_oneof is None or f.containing_oneof.name.startswith("_")]
    oneofs = [o for o in descriptor.oneofs if not o.name.startswith("_")]  # "_x": proto3 optional, not a oneof
    fields = {f.name: st.none() | _value(f, depth) for f in plain}
    for oneof in oneofs:
        choices = [st.tuples(st.just(f.name), _value(f, depth)) for f in oneof.fields]
        fields[f"oneof:{oneof.name}"] = st.none() | st.one_of(choices)
    return st.fixed_dictionaries(fields).map(lambda values: _build(cls, values))


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for key, value in values.items():
        if value is None:
            continue
        name, value = value if key.startswith("oneof:") else (key, value)
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name) if field.is_repeated or field.type == _T.TYPE_MESSAGE else None
        if field.is_repeated and field.type == _T.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        elif field.is_repeated:
            target.extend(value)
        elif field.type == _T.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message
