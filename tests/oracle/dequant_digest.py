#!/usr/bin/env python3
"""Dequantize every tensor of a GGUF file with gguf-py and print one JSON object
{tensor name: sha256 of its values as little-endian f32}, so a Rust test can check that our
dequantization of the same bytes is bit-identical to gguf-py's (numpy) one.

Usage: $DYNQUANT_PYTHON tests/oracle/dequant_digest.py FILE
"""
from __future__ import annotations

import hashlib
import json
import sys

sys.dont_write_bytecode = True

import numpy as np  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} FILE", file=sys.stderr)
        return 2
    r = GGUFReader(argv[1])
    out = {}
    for t in r.tensors:
        values = dequantize(t.data, t.tensor_type).astype("<f4", copy=False)
        out[t.name] = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
