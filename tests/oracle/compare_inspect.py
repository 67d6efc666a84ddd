#!/usr/bin/env python3
"""Compare `dynquant inspect --json FILE` output with gguf-py's GGUFReader on the same file.

Usage: $DYNQUANT_PYTHON tests/oracle/compare_inspect.py OUR_JSON GGUF_FILE
       (OUR_JSON may be "-" for stdin)

Checks:
  * header: version, alignment, data_offset (absolute start of the data section), file_size,
    and the KV / tensor counts;
  * metadata: the ordered key list (gguf-py's virtual GGUF.* fields skipped), each key's type list
    and value. Integers/bools/strings compare exactly; float32 values compare as float32 bit
    patterns and float64 values as float64 bit patterns (our JSON writes them as numbers or the
    strings "NaN", "inf", "-inf"; any NaN matches any NaN). Strings are UTF-8, lossy on both
    sides. For an empty array the declared element type is read from the file, so both
    ["array", "<elem>"] and gguf-py's bare ["array"] are accepted;
  * tensors: names in order, type_id (and the type name, case-insensitively), shape (ggml order),
    offset (relative to the data section), data_offset (absolute), n_elements, n_bytes.

Prints every difference (the first 50, then a count) and exits 1 if there is any; otherwise prints
a one-line summary and exits 0. Exit 2 on usage errors or unreadable input.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from gguf import GGUFReader  # noqa: E402

from _ggufpy import (  # noqa: E402
    FLOAT_TYPES,
    INT_TYPES,
    NP_DTYPES,
    field_type_and_value,
    ggufpy_types,
    kv_fields,
    tensor_type_name,
)

MAX_SHOWN = 50


class Diffs:
    """Collects differences; prints the first MAX_SHOWN as they come when echo is set."""

    def __init__(self, echo: bool = True) -> None:
        self.n = 0
        self.echo = echo
        self.msgs: list[str] = []

    def add(self, msg: str) -> None:
        self.n += 1
        if self.n <= MAX_SHOWN:
            self.msgs.append(msg)
            if self.echo:
                print(f"DIFF {msg}")

    def note(self, msg: str) -> None:
        if self.echo:
            print(f"  ({msg})")

    def __len__(self) -> int:
        return self.n


def short(v, limit: int = 120) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


# --- floats -------------------------------------------------------------------------------------

_SPECIAL = {"NaN": float("nan"), "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
            "Infinity": float("inf"), "-Infinity": float("-inf")}


def _json_float(x):
    """A JSON float value as Python float, or None if it is not a valid float encoding."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str) and x in _SPECIAL:
        return _SPECIAL[x]
    return None


def _float_bits(values: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(bit patterns, nan mask) of float64 `values` converted to `dtype`."""
    a = values.astype(dtype)
    ut = np.uint32 if np.dtype(dtype).itemsize == 4 else np.uint64
    return a.view(ut), np.isnan(a)


# --- values -------------------------------------------------------------------------------------

def compare_scalar(where: str, tname: str, ours, ref, d: Diffs) -> None:
    if tname == "string":
        if not isinstance(ours, str) or ours != ref:
            d.add(f"{where}: value {short(ours)} != gguf-py {short(ref)}")
    elif tname == "bool":
        if not isinstance(ours, bool) or ours != ref:
            d.add(f"{where}: value {short(ours)} != gguf-py {short(ref)}")
    elif tname in INT_TYPES:
        if isinstance(ours, bool) or not isinstance(ours, int) or ours != ref:
            d.add(f"{where}: value {short(ours)} != gguf-py {short(ref)}")
    elif tname in FLOAT_TYPES:
        f = _json_float(ours)
        if f is None:
            d.add(f"{where}: value {short(ours)} is not a float (gguf-py {ref!r})")
            return
        dt = NP_DTYPES[tname]
        ob, on = _float_bits(np.array([f]), dt)
        rb, rn = _float_bits(np.array([ref]), dt)
        if not ((on[0] and rn[0]) or (ob[0] == rb[0])):
            d.add(f"{where}: {tname} value {ours!r} (bits {int(ob[0]):#x}) != gguf-py {ref!r} (bits {int(rb[0]):#x})")
    else:
        d.add(f"{where}: unhandled type {tname}")


def compare_array(where: str, types: list[str], ours, ref, d: Diffs) -> None:
    """types is the declared reference type list, starting with "array"."""
    if not isinstance(ours, list):
        d.add(f"{where}: value is {type(ours).__name__}, expected a list of {len(ref)}")
        return
    if len(ours) != len(ref):
        d.add(f"{where}: array length {len(ours)} != gguf-py {len(ref)}")
        return
    etype = types[1] if len(types) > 1 else None
    if len(ref) == 0:
        return
    if etype == "array":
        for i, (o, r) in enumerate(zip(ours, ref)):
            compare_array(f"{where}[{i}]", types[1:], o, r, d)
        return
    if etype == "string":
        if ours == ref:
            return
        for i, (o, r) in enumerate(zip(ours, ref)):
            if o != r:
                d.add(f"{where}[{i}]: value {short(o)} != gguf-py {short(r)}")
                if len(d) >= MAX_SHOWN:
                    return
        return
    # numeric / bool arrays: vectorised
    n = len(ref)
    if etype == "bool":
        if not all(type(x) is bool for x in ours):
            bad = next(i for i, x in enumerate(ours) if type(x) is not bool)
            d.add(f"{where}[{bad}]: value {short(ours[bad])} is not a bool")
            return
        oa = np.array(ours, dtype=np.bool_)
        mism = np.flatnonzero(oa != ref)
    elif etype in INT_TYPES:
        if not all(type(x) is int for x in ours):
            bad = next(i for i, x in enumerate(ours) if type(x) is not int)
            d.add(f"{where}[{bad}]: value {short(ours[bad])} is not an integer")
            return
        try:
            oa = np.array(ours, dtype=NP_DTYPES[etype])
        except OverflowError:
            lo, hi = np.iinfo(NP_DTYPES[etype]).min, np.iinfo(NP_DTYPES[etype]).max
            bad = next(i for i, x in enumerate(ours) if not lo <= x <= hi)
            d.add(f"{where}[{bad}]: value {ours[bad]} out of {etype} range (gguf-py {ref[bad]})")
            return
        mism = np.flatnonzero(oa != ref)
    elif etype in FLOAT_TYPES:
        if all(type(x) is float or type(x) is int for x in ours):
            of = np.array(ours, dtype=np.float64)
        else:
            conv = [_json_float(x) for x in ours]
            if any(c is None for c in conv):
                bad = next(i for i, c in enumerate(conv) if c is None)
                d.add(f"{where}[{bad}]: value {short(ours[bad])} is not a float")
                return
            of = np.array(conv, dtype=np.float64)
        dt = NP_DTYPES[etype]
        ob, on = _float_bits(of, dt)
        rb, rn = _float_bits(np.asarray(ref, dtype=np.float64), dt)
        mism = np.flatnonzero(~((on & rn) | (ob == rb)))
    else:
        d.add(f"{where}: unhandled element type {etype}")
        return
    for i in mism[: max(0, MAX_SHOWN - len(d)) + 1]:
        d.add(f"{where}[{int(i)}]: value {short(ours[int(i)])} != gguf-py {short(ref[int(i)].item())}")
    if len(mism) > 1:
        d.note(f"{where}: {len(mism)} of {n} elements differ")


def compare_metadata(ours_md, r: GGUFReader, d: Diffs) -> int:
    fields = kv_fields(r)
    ref_keys = [f.name for f in fields]
    if not isinstance(ours_md, list) or not all(isinstance(m, dict) and "key" in m for m in ours_md):
        d.add("metadata: not a list of objects with a 'key'")
        return len(ref_keys)
    our_keys = [m["key"] for m in ours_md]
    if our_keys != ref_keys:
        if len(our_keys) != len(ref_keys):
            d.add(f"metadata: {len(our_keys)} keys != gguf-py {len(ref_keys)}")
        for k in [k for k in ref_keys if k not in set(our_keys)]:
            d.add(f"metadata: key {k!r} missing from our JSON")
        for k in [k for k in our_keys if k not in set(ref_keys)]:
            d.add(f"metadata: extra key {k!r} not in gguf-py")
        for i, (a, b) in enumerate(zip(our_keys, ref_keys)):
            if a != b:
                d.add(f"metadata: key order differs first at index {i}: ours {a!r}, gguf-py {b!r}")
                break
    ours_by_key = {}
    for m in ours_md:
        if m["key"] in ours_by_key:
            d.add(f"metadata: duplicate key {m['key']!r} in our JSON")
        ours_by_key[m["key"]] = m
    for f in fields:
        m = ours_by_key.get(f.name)
        if m is None:
            continue
        where = f"metadata {f.name!r}"
        types, value = field_type_and_value(f)
        our_types = m.get("type")
        accepted = [types, ggufpy_types(f)]
        if our_types not in accepted:
            d.add(f"{where}: type {our_types} != gguf-py {types}")
            continue
        if "value" not in m:
            d.add(f"{where}: no value in our JSON")
            continue
        if types[0] == "array":
            compare_array(where, types, m["value"], value, d)
        else:
            compare_scalar(where, types[0], m["value"], value, d)
    return len(ref_keys)


TENSOR_FIELDS = ("type_id", "shape", "offset", "data_offset", "n_elements", "n_bytes")


def compare_tensors(ours_t, r: GGUFReader, d: Diffs) -> None:
    if not isinstance(ours_t, list) or not all(isinstance(t, dict) and "name" in t for t in ours_t):
        d.add("tensors: not a list of objects with a 'name'")
        return
    ref = r.tensors
    our_names = [t["name"] for t in ours_t]
    ref_names = [t.name for t in ref]
    if our_names != ref_names:
        if len(our_names) != len(ref_names):
            d.add(f"tensors: {len(our_names)} tensors != gguf-py {len(ref_names)}")
        for n in [n for n in ref_names if n not in set(our_names)]:
            d.add(f"tensors: {n!r} missing from our JSON")
        for n in [n for n in our_names if n not in set(ref_names)]:
            d.add(f"tensors: extra tensor {n!r} not in gguf-py")
        for i, (a, b) in enumerate(zip(our_names, ref_names)):
            if a != b:
                d.add(f"tensors: order differs first at index {i}: ours {a!r}, gguf-py {b!r}")
                break
    ours_by_name = {t["name"]: t for t in ours_t}
    base = int(r.data_offset)
    for t in ref:
        o = ours_by_name.get(t.name)
        if o is None:
            continue
        want = {
            "type_id": int(t.tensor_type),
            "shape": [int(x) for x in t.shape],
            "offset": int(t.data_offset) - base,
            "data_offset": int(t.data_offset),
            "n_elements": int(t.n_elements),
            "n_bytes": int(t.n_bytes),
        }
        for k in TENSOR_FIELDS:
            if k not in o:
                d.add(f"tensor {t.name!r}: no {k!r} in our JSON")
            elif o[k] != want[k] or isinstance(o[k], bool):
                d.add(f"tensor {t.name!r}: {k} {o[k]!r} != gguf-py {want[k]!r}")
        tn = o.get("type")
        if not isinstance(tn, str) or tn.lower() != tensor_type_name(t):
            d.add(f"tensor {t.name!r}: type {tn!r} != gguf-py {tensor_type_name(t)!r}")


def compare(ours: dict, r: GGUFReader, gguf_path: str, d: Diffs) -> tuple[int, dict]:
    """Compare our parsed JSON with an open reader; returns (number of KVs, header values)."""
    header = {
        "version": int(r.fields["GGUF.version"].parts[0][0]),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "file_size": os.path.getsize(gguf_path),
    }
    for k, v in header.items():
        if k not in ours:
            d.add(f"header: no {k!r} in our JSON")
        elif ours[k] != v or isinstance(ours[k], bool):
            d.add(f"header: {k} {ours[k]!r} != gguf-py {v!r}")
    n_kv = compare_metadata(ours.get("metadata"), r, d)
    compare_tensors(ours.get("tensors"), r, d)
    return n_kv, header


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} OUR_JSON GGUF_FILE", file=sys.stderr)
        return 2
    json_path, gguf_path = argv[1], argv[2]
    try:
        if json_path == "-":
            ours = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        else:
            with open(json_path, "rb") as fh:
                ours = json.loads(fh.read().decode("utf-8"))
    except Exception as e:  # noqa: BLE001
        print(f"error: cannot read our JSON {json_path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if not isinstance(ours, dict):
        print(f"error: {json_path}: top level is not an object", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        r = GGUFReader(gguf_path)
    except Exception as e:  # noqa: BLE001
        print(f"error: gguf-py cannot open {gguf_path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    t_open = time.perf_counter() - t0

    d = Diffs()
    n_kv, header = compare(ours, r, gguf_path, d)
    t_all = time.perf_counter() - t0

    if d.n:
        if d.n > MAX_SHOWN:
            print(f"... {d.n - MAX_SHOWN} more differences not shown")
        print(f"FAIL: {d.n} difference(s) between {json_path} and gguf-py on {gguf_path}")
        return 1
    print(f"OK: {gguf_path}: {n_kv} metadata keys and {len(r.tensors)} tensors match gguf-py "
          f"(version {header['version']}, alignment {header['alignment']}, data_offset {header['data_offset']}; "
          f"open {t_open:.1f}s, total {t_all:.1f}s)")
    return 0


if __name__ == "__main__":
    try:
        rc = main(sys.argv)
    except Exception:  # noqa: BLE001 - a crash here is a bug in this script, not a difference
        import traceback
        traceback.print_exc()
        print("error: compare_inspect.py crashed", file=sys.stderr)
        rc = 2
    sys.exit(rc)
