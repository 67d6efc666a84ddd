"""Shared helpers for the gguf-py based oracle scripts (run with the .oracle venv python).

gguf-py (PyPI `gguf` 0.19.0) flattens nested arrays and keeps every array element as its own
1-element numpy view, so the helpers here decode a ReaderField's raw `parts` directly:

* numeric arrays come back as one numpy array (no per-element Python objects),
* string arrays as a list of str (UTF-8, invalid sequences replaced with U+FFFD, like Rust's
  String::from_utf8_lossy),
* arrays of arrays as nested Python lists,
* the type list is the *declared* one, e.g. ["array", "uint32"] even for an empty array (gguf-py's
  own `.types` then only has [ARRAY]), and ["array", "array", "string"] for an array of string
  arrays (the inner type is taken from the first inner array, as gguf-py does).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType

# gguf value type ids 0..12, named as `dynquant inspect --json` names them.
TYPE_NAMES = {
    GGUFValueType.UINT8: "uint8",
    GGUFValueType.INT8: "int8",
    GGUFValueType.UINT16: "uint16",
    GGUFValueType.INT16: "int16",
    GGUFValueType.UINT32: "uint32",
    GGUFValueType.INT32: "int32",
    GGUFValueType.FLOAT32: "float32",
    GGUFValueType.BOOL: "bool",
    GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array",
    GGUFValueType.UINT64: "uint64",
    GGUFValueType.INT64: "int64",
    GGUFValueType.FLOAT64: "float64",
}

NP_DTYPES = {
    "uint8": np.uint8,
    "int8": np.int8,
    "uint16": np.uint16,
    "int16": np.int16,
    "uint32": np.uint32,
    "int32": np.int32,
    "float32": np.float32,
    "bool": np.bool_,
    "uint64": np.uint64,
    "int64": np.int64,
    "float64": np.float64,
}

INT_TYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"}
FLOAT_TYPES = {"float32", "float64"}

# The reader's first three fields are virtual (not KVs of the file).
VIRTUAL_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")


def type_name(t: int) -> str:
    try:
        return TYPE_NAMES[GGUFValueType(int(t))]
    except (KeyError, ValueError):
        return f"<unknown type {int(t)}>"


def _lossy(b: np.ndarray) -> str:
    return b.tobytes().decode("utf-8", errors="replace")


def _decode(parts: list, i: int, vtype: int) -> tuple[list[str], Any, int]:
    """Decode the value of type `vtype` whose parts start at parts[i].

    Returns (declared type names, value, index of the next unread part)."""
    name = type_name(vtype)
    if name == "string":
        return [name], _lossy(parts[i + 1]), i + 2
    if name in NP_DTYPES:
        v = parts[i][0]
        return [name], (bool(v) if name == "bool" else v.item()), i + 1
    if name != "array":
        raise ValueError(f"unhandled value type {vtype}")
    itype = int(parts[i][0])
    n = int(parts[i + 1][0])
    i += 2
    iname = type_name(itype)
    if iname == "string":
        vals = [p.tobytes().decode("utf-8", errors="replace") for p in parts[i + 1 : i + 2 * n : 2]]
        return ["array", "string"], vals, i + 2 * n
    if iname in NP_DTYPES:
        chunk = parts[i : i + n]
        dt = np.dtype(NP_DTYPES[iname])
        arr = np.concatenate(chunk).astype(dt.newbyteorder("="), copy=False) if n else np.empty(0, dt)
        return ["array", iname], arr, i + n
    if iname == "array":
        vals = []
        types = ["array", "array"]
        for k in range(n):
            t, v, i = _decode(parts, i, itype)
            if k == 0:
                types = ["array"] + t
            vals.append(v)
        return types, vals, i
    raise ValueError(f"unhandled array element type {itype}")


def field_type_and_value(field) -> tuple[list[str], Any]:
    """(declared type names, value) of a KV ReaderField (parts: key len, key, type, value...)."""
    vtype = int(field.parts[2][0])
    types, value, _ = _decode(field.parts, 3, vtype)
    return types, value


def ggufpy_types(field) -> list[str]:
    """gguf-py's own `.types` of a field, as names."""
    return [type_name(t) for t in field.types]


def kv_fields(reader: GGUFReader) -> list:
    """The real KV fields of the file, in file order (the reader's virtual GGUF.* fields skipped)."""
    fields = list(reader.fields.values())
    n_virtual = 0
    for f, vname in zip(fields, VIRTUAL_FIELDS):
        if f.name == vname:
            n_virtual += 1
    return fields[n_virtual:]


def to_json_value(types: list[str], value: Any) -> Any:
    """Value in the JSON form used by `dynquant inspect --json` (floats as numbers or "NaN"/"inf"/"-inf")."""

    def fl(x: float) -> Any:
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x

    head = types[0]
    if head == "array":
        if len(types) > 1 and types[1] == "array":
            return [to_json_value(types[1:], v) for v in value]
        if isinstance(value, np.ndarray):
            lst = value.tolist()
            if value.dtype.kind == "f":
                lst = [fl(x) for x in lst]
            return lst
        return list(value)
    if head in FLOAT_TYPES:
        return fl(float(value))
    return value


def tensor_type_name(tensor) -> str:
    return tensor.tensor_type.name.lower()
