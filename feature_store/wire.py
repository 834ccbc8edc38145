"""Vectorized protobuf encoding of Feast list values, for bulk materialization.

Feast stores a list feature in Redis as a serialized ``feast.types.Value``. Building one
protobuf message per entity costs tens of microseconds in Python; encoding whole Arrow list
columns at once with NumPy costs a fraction of that. The output is byte-for-byte what
``Value(...).SerializeToString()`` produces (property-tested against protobuf itself); reads
keep using protobuf.

Wire format (proto3): ``Value{<list field>: XList{val: [...]}}`` is
``tag(field, LEN) varint(len(inner)) inner`` with ``inner = 0x0A varint(len(packed)) packed``
for numeric lists (omitted when empty) and ``inner = (0x0A varint(len(s)) s)*`` for strings.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pyarrow as pa

#: Field tags (field number << 3 | LEN) of feast.types.Value's list fields.
STRING_LIST: Final = 0x62  # string_list_val = 12
INT64_LIST: Final = 0x72  # int64_list_val = 14
DOUBLE_LIST: Final = 0x7A  # double_list_val = 15
_VAL: Final = 0x0A  # field 1, LEN: XList.val (packed) / StringList.val (each string)


def varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes each unsigned value takes as a varint (1..10)."""
    v = values.astype(np.uint64, copy=False)
    sizes = np.ones(len(v), dtype=np.int64)
    for k in range(1, 10):
        sizes += (v >> np.uint64(7 * k)) > 0
    return sizes


def varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated varint encodings of ``values`` (int64 as two's complement) and sizes."""
    v = values.astype(np.int64, copy=False).view(np.uint64)
    sizes = varint_sizes(v)
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    starts = np.cumsum(sizes) - sizes
    for k in range(int(sizes.max(initial=0))):
        has = sizes > k
        byte = ((v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        more = (sizes[has] > k + 1).astype(np.uint8) << 7
        out[starts[has] + k] = byte | more
    return out, sizes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _frame(tag: int, payload: memoryview | bytes, packed: bool) -> bytes:
    if packed:
        inner = b"".join((bytes((_VAL,)), _varint(len(payload)), payload)) if len(payload) else b""
    else:
        inner = bytes(payload)
    return b"".join((bytes((tag,)), _varint(len(inner)), inner))


def _row_bounds(offsets: np.ndarray, element_bytes: np.ndarray) -> np.ndarray:
    """Byte offsets of each row's run in the concatenated element encodings."""
    cumulative = np.concatenate(([0], np.cumsum(element_bytes)))
    return cumulative[offsets]


def _list_parts(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.offsets.to_numpy().astype(np.int64), array.values


def encode_int64_lists(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """``Value(int64_list_val=Int64List(val=row))`` bytes for every row of a list<int64>."""
    offsets, values = _list_parts(column)
    encoded, sizes = varints(values.to_numpy(zero_copy_only=False))
    bounds = _row_bounds(offsets, sizes)
    buffer = memoryview(encoded.tobytes())
    return [
        _frame(INT64_LIST, buffer[bounds[i] : bounds[i + 1]], packed=True)
        for i in range(len(offsets) - 1)
    ]


def encode_double_lists(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """``Value(double_list_val=DoubleList(val=row))`` bytes for every row of a list<double>."""
    offsets, values = _list_parts(column)
    raw = values.to_numpy(zero_copy_only=False).astype("<f8", copy=False)
    buffer = memoryview(raw.tobytes())
    return [
        _frame(DOUBLE_LIST, buffer[offsets[i] * 8 : offsets[i + 1] * 8], packed=True)
        for i in range(len(offsets) - 1)
    ]


def encode_string_lists(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """``Value(string_list_val=StringList(val=row))`` bytes for every row of a list<string>."""
    offsets, values = _list_parts(column)
    strings = values.cast(pa.string())
    if strings.null_count:
        raise ValueError("string lists must not hold nulls")
    string_offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ].astype(np.int64)
    data = np.frombuffer(strings.buffers()[2] or b"", dtype=np.uint8)
    lengths = np.diff(string_offsets)
    length_bytes, length_sizes = varints(lengths)
    element_sizes = 1 + length_sizes + lengths
    out = np.empty(int(element_sizes.sum()), dtype=np.uint8)
    starts = np.cumsum(element_sizes) - element_sizes
    out[starts] = _VAL
    # varint of each length right after its tag
    length_starts = np.cumsum(length_sizes) - length_sizes
    owner = np.repeat(np.arange(len(lengths)), length_sizes)
    out[starts[owner] + 1 + (np.arange(len(length_bytes)) - length_starts[owner])] = length_bytes
    # then the string's bytes
    body_owner = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[starts[body_owner] + 1 + length_sizes[body_owner] + within] = data[
        np.repeat(string_offsets[:-1], lengths) + within
    ]
    bounds = _row_bounds(offsets, element_sizes)
    buffer = memoryview(out.tobytes())
    return [
        _frame(STRING_LIST, buffer[bounds[i] : bounds[i + 1]], packed=False)
        for i in range(len(offsets) - 1)
    ]
