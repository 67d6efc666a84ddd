#!/usr/bin/env python3
"""Self-test of compare_inspect.py (no dynquant needed).

Usage: $DYNQUANT_PYTHON tests/oracle/selftest_compare.py [GGUF_FILE...]

For a generated edge-case GGUF (make_edge_gguf.py) and for each GGUF_FILE given (e.g. the two
oracle models), builds the reference JSON with gguf_to_json.py's logic, checks that compare_inspect
accepts it unchanged, and that every tampering (value, float ulp, type list, shape, offsets, key
order, dropped key/tensor, ...) is reported. Also checks the accepted equivalent forms (shortest
float32 repr, gguf-py's bare ["array"] for an empty array, upper-case tensor type names).
Each file is opened once. Exit 0 when all checks pass, 1 otherwise.
"""
from __future__ import annotations

import copy
import os
import struct
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gguf import GGUFReader  # noqa: E402

import compare_inspect as ci  # noqa: E402
import make_edge_gguf  # noqa: E402
from gguf_to_json import to_json  # noqa: E402


def next_f32(x: float) -> float:
    b = struct.unpack("<I", struct.pack("<f", x))[0]
    return struct.unpack("<f", struct.pack("<I", b + 1))[0]


def md(j: dict, key: str) -> dict:
    for m in j["metadata"]:
        if m["key"] == key:
            return m
    raise LookupError(key)


def first_md(j: dict, types: list[str]) -> dict:
    for m in j["metadata"]:
        if m["type"] != types:
            continue
        v = m["value"]
        if types[0] == "array":
            if len(v) > 0 and not isinstance(v[0], str) or types[-1] == "string" and len(v) > 0:
                return m
        elif not (types[0].startswith("float") and isinstance(v, str)):
            return m
    raise LookupError(types)


def _set(obj, key, value):
    obj[key] = value


# (name, mutation, expect_ok). A LookupError from the mutation means "not applicable to this file".
CASES = [
    ("unchanged", lambda j: None, True),
    ("uint32 value +1", lambda j: first_md(j, ["uint32"]).__setitem__("value", first_md(j, ["uint32"])["value"] + 1), False),
    ("string value", lambda j: md(j, "general.architecture").__setitem__("value", "llamax"), False),
    ("float32 +1 ulp", lambda j: (lambda m: _set(m, "value", next_f32(m["value"])))(first_md(j, ["float32"])), False),
    ("float32 -> NaN", lambda j: first_md(j, ["float32"]).__setitem__("value", "NaN"), False),
    ("bool flipped", lambda j: (lambda m: _set(m, "value", not m["value"]))(first_md(j, ["bool"])), False),
    ("bool as int", lambda j: (lambda m: _set(m, "value", int(m["value"])))(first_md(j, ["bool"])), False),
    ("type list", lambda j: first_md(j, ["uint32"]).__setitem__("type", ["int32"]), False),
    ("drop a key", lambda j: j["metadata"].pop(1), False),
    ("swap two keys", lambda j: j["metadata"].insert(0, j["metadata"].pop(1)), False),
    ("duplicate a key", lambda j: j["metadata"].append(copy.deepcopy(j["metadata"][-1])), False),
    ("string array element", lambda j: (lambda m: m["value"].__setitem__(len(m["value"]) // 2, m["value"][len(m["value"]) // 2] + "x"))(first_md(j, ["array", "string"])), False),
    ("string array shorter", lambda j: first_md(j, ["array", "string"])["value"].pop(), False),
    ("int32 array element", lambda j: (lambda m: m["value"].__setitem__(-1, m["value"][-1] + 1))(first_md(j, ["array", "int32"])), False),
    ("int array element as float", lambda j: (lambda m: m["value"].__setitem__(0, float(m["value"][0])))(first_md(j, ["array", "int32"])), False),
    ("float32 array +1 ulp", lambda j: (lambda m: m["value"].__setitem__(0, next_f32(m["value"][0])))(first_md(j, ["array", "float32"])), False),
    ("tensor shape", lambda j: j["tensors"][-1]["shape"].__setitem__(0, j["tensors"][-1]["shape"][0] + 1), False),
    ("tensor type_id", lambda j: j["tensors"][0].__setitem__("type_id", j["tensors"][0]["type_id"] ^ 1), False),
    ("tensor type name", lambda j: j["tensors"][0].__setitem__("type", "q9_9"), False),
    ("tensor type name upper-case", lambda j: j["tensors"][0].__setitem__("type", j["tensors"][0]["type"].upper()), True),
    ("tensor data_offset", lambda j: j["tensors"][-1].__setitem__("data_offset", j["tensors"][-1]["data_offset"] + 32), False),
    ("tensor relative offset", lambda j: j["tensors"][-1].__setitem__("offset", j["tensors"][-1]["offset"] + 32), False),
    ("tensor n_bytes", lambda j: j["tensors"][0].__setitem__("n_bytes", j["tensors"][0]["n_bytes"] - 1), False),
    ("tensor n_elements", lambda j: j["tensors"][0].__setitem__("n_elements", j["tensors"][0]["n_elements"] + 1), False),
    ("swap two tensors", lambda j: j["tensors"].insert(0, j["tensors"].pop(1)), False),
    ("drop a tensor", lambda j: j["tensors"].pop(), False),
    ("header data_offset", lambda j: j.__setitem__("data_offset", j["data_offset"] + 32), False),
    ("header file_size", lambda j: j.__setitem__("file_size", j["file_size"] - 1), False),
    ("header alignment", lambda j: j.__setitem__("alignment", 16), False),
    ("no tensors", lambda j: j.pop("tensors"), False),
    # edge-file specific
    ("nested inner value", lambda j: md(j, "edge.arr_arr_u32")["value"][2].__setitem__(0, 5), False),
    ("nested inner length", lambda j: md(j, "edge.arr_arr_u32")["value"][1].append(1), False),
    ("nested flattened", lambda j: md(j, "edge.arr_arr_u32").__setitem__("value", [1, 2, 3, 4]), False),
    ("nested type without inner", lambda j: md(j, "edge.arr_arr_u32").__setitem__("type", ["array", "array"]), False),
    ("nested string", lambda j: md(j, "edge.arr_arr_str")["value"][1].__setitem__(0, "q"), False),
    ("empty array as gguf-py ['array']", lambda j: md(j, "edge.arr_empty_u32").__setitem__("type", ["array"]), True),
    ("empty array wrong element type", lambda j: md(j, "edge.arr_empty_u32").__setitem__("type", ["array", "int32"]), False),
    ("NaN in array -> 0.0", lambda j: md(j, "edge.arr_f32")["value"].__setitem__(1, 0.0), False),
    ("inf in array -> -inf", lambda j: md(j, "edge.arr_f32")["value"].__setitem__(2, "-inf"), False),
    ("-0.0 -> 0.0", lambda j: md(j, "edge.f32_negzero").__setitem__("value", 0.0), False),
    ("float32 shortest repr", lambda j: md(j, "edge.f32_tenth").__setitem__("value", 0.1), True),
    ("denormal shortest repr", lambda j: md(j, "edge.f32_denormal").__setitem__("value", 1e-45), True),
    ("float32 max shortest repr", lambda j: md(j, "edge.arr_f32")["value"].__setitem__(5, 3.4028235e38), True),
    ("float64 given with f32 precision", lambda j: md(j, "edge.f64_tenth").__setitem__("value", 0.10000000149011612), False),
    ("uint64 overflow", lambda j: md(j, "edge.arr_u64")["value"].__setitem__(1, 2**64), False),
    ("int8 array overflow", lambda j: md(j, "edge.arr_i8")["value"].__setitem__(0, -129), False),
    ("lossy utf-8 different", lambda j: md(j, "edge.str_bad_utf8").__setitem__("value", "ok\ufffd(end\ufffd"), False),
    ("bool array element as int", lambda j: md(j, "edge.arr_bool")["value"].__setitem__(1, 0), False),
]


def run_file(path: str) -> int:
    r = GGUFReader(path)
    base = to_json(r, path)
    failures = 0
    ran = 0
    for name, mutate, expect_ok in CASES:
        j = copy.deepcopy(base)
        try:
            mutate(j)
        except LookupError:
            continue
        ran += 1
        d = ci.Diffs(echo=False)
        ci.compare(j, r, path, d)
        ok = d.n == 0
        if ok != expect_ok:
            failures += 1
            why = d.msgs[0] if d.msgs else "no difference reported"
            print(f"  FAILED [{name}]: expected {'match' if expect_ok else 'a difference'}; {why}")
    print(f"{path}: {ran - failures}/{ran} checks passed")
    return failures


def main(argv: list[str]) -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as td:
        edge = os.path.join(td, "edge.gguf")
        with open(edge, "wb") as f:
            f.write(make_edge_gguf.build())
        failures += run_file(edge)
    for p in argv[1:]:
        failures += run_file(p)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
