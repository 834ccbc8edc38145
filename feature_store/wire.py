"""Vectorized protobuf encoding of Feast list values, for bulk materialization.

Feast stores a list feature in Redis as a serialized ``feast.types.Value``. Building one
protobuf message per entity costs tens of microseconds in Python; encoding whole Arrow list
columns at once with NumPy costs a fraction of that. The output is byte-for-byte what
``Value(...).SerializeToString()`` produces (property-tested against protobuf itself); reads
keep using protobuf.

Wire format (proto3): ``Value{<list field>: XList{val: [...]}}`` is
``tag(field, LEN) varint(len(inner)) inner`` with ``inner = 0x0A varint(len(packed)) packed``
for numeric lists (empty when the list is) and ``inner = (0x0A varint(len(s)) s)*`` for strings.
Every row is assembled into one buffer by scattering contiguous runs, then sliced.
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
    if len(v):
        # sizes grow with the (unsigned) value: equal at both ends, equal for all
        smallest, largest = varint_sizes(np.array([v.min(), v.max()], np.uint64)).tolist()
        if smallest == largest <= 8:  # timestamps, flags
            return _fixed_width_varints(v, largest), np.full(len(v), largest, np.int64)
    sizes = varint_sizes(v)
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    starts = np.cumsum(sizes) - sizes
    for k in range(int(sizes.max(initial=0))):
        has = sizes > k
        byte = ((v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        more = (sizes[has] > k + 1).astype(np.uint8) << 7
        out[starts[has] + k] = byte | more
    return out, sizes


def _fixed_width_varints(v: np.ndarray, width: int) -> np.ndarray:
    """Varints of ``width`` (<= 8) bytes each: the 7-bit groups of every value spread to
    one byte each within a uint64 (little-endian), continuation bits set, then the first
    ``width`` bytes of each kept."""
    spread = v & np.uint64(0x7F)
    for k in range(1, width):
        spread |= (v & np.uint64(0x7F << 7 * k)) << np.uint64(k)
    spread |= np.uint64(int.from_bytes(b"\x80" * (width - 1), "little"))
    as_bytes = spread.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    return as_bytes[:, :width].ravel() if width < 8 else as_bytes.ravel()


_LONG_RUN = 64


def _scatter(out: np.ndarray, dest: np.ndarray, src: np.ndarray, lengths: np.ndarray) -> None:
    """Copy ``src`` (runs of ``lengths`` bytes, back to back) to runs starting at ``dest``."""
    src_starts = np.cumsum(lengths) - lengths
    if len(lengths) and len(src) > _LONG_RUN * len(lengths):
        # few long runs (one per row): slice copies beat an index array per byte
        for d, s, n in zip(dest.tolist(), src_starts.tolist(), lengths.tolist(), strict=True):
            out[d : d + n] = src[s : s + n]
        return
    out[np.repeat(dest - src_starts, lengths) + np.arange(len(src))] = src


def _messages(
    tag: int, payload: np.ndarray, payload_lengths: np.ndarray, packed: bool
) -> list[bytes]:
    """One ``Value`` per row from each row's payload (back to back in ``payload``)."""
    inner = payload_lengths.copy()
    has = payload_lengths > 0
    if packed:
        plen_bytes, plen_sizes = varints(payload_lengths[has])
        inner[has] = 1 + plen_sizes + payload_lengths[has]
    head_bytes, head_sizes = varints(inner)
    total = 1 + head_sizes + inner
    ends = np.cumsum(total)
    starts = ends - total
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    out[starts] = tag
    _scatter(out, starts + 1, head_bytes, head_sizes)
    body = starts + 1 + head_sizes
    if packed:
        out[body[has]] = _VAL
        _scatter(out, body[has] + 1, plen_bytes, plen_sizes)
        body = body.copy()
        body[has] += 1 + plen_sizes
    _scatter(out, body, payload, payload_lengths)
    buffer = out.tobytes()
    return [buffer[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def _list_parts(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy().astype(np.int64)
    return offsets, array.values.slice(offsets[0], offsets[-1] - offsets[0])


def _per_row(offsets: np.ndarray, element_bytes: np.ndarray) -> np.ndarray:
    """Total bytes of each row's elements."""
    cumulative = np.concatenate(([0], np.cumsum(element_bytes)))
    bounds = cumulative[offsets - offsets[0]]
    return np.diff(bounds)


def encode_int64_lists(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """``Value(int64_list_val=Int64List(val=row))`` bytes for every row of a list<int64>."""
    offsets, values = _list_parts(column)
    encoded, sizes = varints(values.to_numpy(zero_copy_only=False))
    return _messages(INT64_LIST, encoded, _per_row(offsets, sizes), packed=True)


def encode_double_lists(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """``Value(double_list_val=DoubleList(val=row))`` bytes for every row of a list<double>."""
    offsets, values = _list_parts(column)
    raw = values.to_numpy(zero_copy_only=False).astype("<f8", copy=False).view(np.uint8)
    return _messages(DOUBLE_LIST, raw, np.diff(offsets) * 8, packed=True)


def encode_string_lists(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """``Value(string_list_val=StringList(val=row))`` bytes for every row of a list<string>."""
    offsets, values = _list_parts(column)
    strings = values.cast(pa.string())
    if strings.null_count:
        raise ValueError("string lists must not hold nulls")
    bounds = np.frombuffer(strings.buffers()[1], dtype=np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ].astype(np.int64)
    data = np.frombuffer(strings.buffers()[2] or b"", dtype=np.uint8)[bounds[0] : bounds[-1]]
    lengths = np.diff(bounds)
    if int(lengths.max(initial=0)) < 128:  # short strings (ids): a 2-byte header each
        element_sizes = 2 + lengths
        starts = np.cumsum(element_sizes) - element_sizes
        elements = np.empty(int(element_sizes.sum()), dtype=np.uint8)
        header = np.zeros(len(elements), dtype=bool)
        header[starts] = True
        header[starts + 1] = True
        elements[starts] = _VAL
        elements[starts + 1] = lengths
        elements[~header] = data
    else:
        length_bytes, length_sizes = varints(lengths)
        element_sizes = 1 + length_sizes + lengths
        elements = np.empty(int(element_sizes.sum()), dtype=np.uint8)
        starts = np.cumsum(element_sizes) - element_sizes
        elements[starts] = _VAL
        _scatter(elements, starts + 1, length_bytes, length_sizes)
        _scatter(elements, starts + 1 + length_sizes, data, lengths)
    return _messages(STRING_LIST, elements, _per_row(offsets, element_sizes), packed=False)
