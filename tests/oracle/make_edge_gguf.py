#!/usr/bin/env python3
"""Write a small hand-built GGUF v3 file full of metadata edge cases (stdlib only, no gguf-py).

Usage: python3 tests/oracle/make_edge_gguf.py OUT.gguf [--utf8-only]

With --utf8-only the two keys holding invalid UTF-8 are left out (dynquant rejects such strings
with a typed error; the full file tests that error).

Covers: every scalar type at its extremes, float32 NaN/inf/-inf/-0.0/denormal, float64, invalid
UTF-8 (lossy decoding), non-ASCII strings, empty strings, empty arrays (scalar, string and array
element types), bool/float/uint64/int8 arrays, arrays of arrays (uint32 and string, with an empty
inner array), general.alignment = 64 and three tensors (F32, Q8_0, F16) with 64-byte-aligned offsets.
Tensor data is all zeros. Useful for `dynquant inspect --json` vs compare_inspect.py.
"""
from __future__ import annotations

import os
import struct
import sys

TYPE_IDS = dict(uint8=0, int8=1, uint16=2, int16=3, uint32=4, int32=5, float32=6, bool=7, string=8,
                array=9, uint64=10, int64=11, float64=12)
FMT = dict(uint8="B", int8="b", uint16="H", int16="h", uint32="I", int32="i", float32="f", bool="?",
           uint64="Q", int64="q", float64="d")
ALIGN = 64


def gstr(b) -> bytes:
    if isinstance(b, str):
        b = b.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def scalar(t: str, v) -> bytes:
    return gstr(v) if t == "string" else struct.pack("<" + FMT[t], v)


def array(types: list[str], values) -> bytes:
    """types: element type chain, e.g. ["uint32"] or ["array", "string"]."""
    et = types[0]
    out = struct.pack("<IQ", TYPE_IDS[et], len(values))
    for v in values:
        out += array(types[1:], v) if et == "array" else scalar(et, v)
    return out


def kv(key: str, t: str, value, elem: list[str] | None = None) -> bytes:
    body = array(elem, value) if t == "array" else scalar(t, value)
    return gstr(key) + struct.pack("<I", TYPE_IDS[t]) + body


def build(utf8_only: bool = False) -> bytes:
    nan, inf = float("nan"), float("inf")
    kvs = [
        kv("general.architecture", "string", "llama"),
        kv("edge.u8", "uint8", 255), kv("edge.i8", "int8", -128),
        kv("edge.u16", "uint16", 65535), kv("edge.i16", "int16", -32768),
        kv("edge.u32", "uint32", 2**32 - 1), kv("edge.i32", "int32", -2**31),
        kv("edge.u64", "uint64", 2**64 - 1), kv("edge.i64", "int64", -2**63),
        kv("edge.bool_true", "bool", True), kv("edge.bool_false", "bool", False),
        kv("edge.f32_nan", "float32", nan), kv("edge.f32_inf", "float32", inf),
        kv("edge.f32_ninf", "float32", -inf), kv("edge.f32_negzero", "float32", -0.0),
        kv("edge.f32_denormal", "float32", 1e-45), kv("edge.f32_tenth", "float32", 0.1),
        kv("edge.f64_tenth", "float64", 0.1), kv("edge.f64_nan", "float64", nan),
        kv("edge.str_bad_utf8", "string", b"ok\xff\xfe\xc3(end\xe2\x82"),
        kv("edge.str_unicode", "string", "h\u00e9llo \u4e16\u754c \U0001F600"),
        kv("edge.str_empty", "string", ""),
        kv("edge.str_newlines", "string", "a\nb\t\"c\"\\\x00d"),
        kv("edge.arr_empty_u32", "array", [], ["uint32"]),
        kv("edge.arr_empty_str", "array", [], ["string"]),
        kv("edge.arr_empty_arr", "array", [], ["array", "uint32"]),
        kv("edge.arr_bool", "array", [True, False, True], ["bool"]),
        kv("edge.arr_f32", "array", [1.5, nan, inf, -inf, -0.0, 3.4028234663852886e38, 1e-45], ["float32"]),
        kv("edge.arr_f64", "array", [0.1, 1e300, -inf, nan], ["float64"]),
        kv("edge.arr_u64", "array", [0, 2**64 - 1], ["uint64"]),
        kv("edge.arr_i8", "array", [-128, 127, 0], ["int8"]),
        kv("edge.arr_str", "array", ["a", b"\xff", "", "\u00e9"], ["string"]),
        kv("edge.arr_arr_u32", "array", [[1, 2, 3], [], [4]], ["array", "uint32"]),
        kv("edge.arr_arr_str", "array", [["x", "y"], ["z"]], ["array", "string"]),
        kv("general.alignment", "uint32", ALIGN),
    ]
    if utf8_only:
        kvs = [k for k in kvs if b"edge.str_bad_utf8" not in k and b"edge.arr_str" not in k]
    # (name, ggml shape, type id, n_bytes)
    tensors = [("edge.f32", [4, 3], 0, 48), ("edge.q8_0", [32, 2], 8, 2 * 34), ("edge.f16", [5], 1, 10)]
    info = b""
    off = 0
    for name, shape, tid, nbytes in tensors:
        info += gstr(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
        info += struct.pack("<IQ", tid, off)
        off = (off + nbytes + ALIGN - 1) // ALIGN * ALIGN
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + info
    head += b"\0" * (-len(head) % ALIGN)
    return head + bytes(off)


def main(argv: list[str]) -> int:
    utf8_only = "--utf8-only" in argv[2:]
    if len(argv) not in (2, 3) or (len(argv) == 3 and not utf8_only):
        print(f"usage: {argv[0]} OUT.gguf [--utf8-only]", file=sys.stderr)
        return 2
    tmp = argv[1] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(build(utf8_only))
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
