#!/usr/bin/env python3
"""Print the `dynquant inspect --json` schema for a GGUF file, computed with gguf-py.

Usage: .oracle/venv/bin/python tests/oracle/gguf_to_json.py GGUF_FILE [> out.json]

Used to self-test compare_inspect.py and for debugging differences against dynquant's JSON.
Only the fields compare_inspect.py checks (plus bpw) are emitted.
"""
from __future__ import annotations

import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gguf import GGUFReader  # noqa: E402

from _ggufpy import field_type_and_value, kv_fields, tensor_type_name, to_json_value  # noqa: E402


def to_json(r: GGUFReader, path: str) -> dict:
    """The inspect JSON object for an open reader."""
    metadata = []
    for f in kv_fields(r):
        types, value = field_type_and_value(f)
        metadata.append({"key": f.name, "type": types, "value": to_json_value(types, value)})

    tensors = []
    for t in r.tensors:
        n_el = int(t.n_elements)
        n_bytes = int(t.n_bytes)
        tensors.append({
            "name": t.name,
            "type": tensor_type_name(t),
            "type_id": int(t.tensor_type),
            "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset) - int(r.data_offset),
            "data_offset": int(t.data_offset),
            "n_elements": n_el,
            "n_bytes": n_bytes,
            "bpw": (n_bytes * 8 / n_el) if n_el else 0.0,
        })

    return {
        "path": path,
        "version": int(r.fields["GGUF.version"].parts[0][0]),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "file_size": os.path.getsize(path),
        "metadata": metadata,
        "tensors": tensors,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} GGUF_FILE", file=sys.stderr)
        return 2
    path = argv[1]
    try:
        r = GGUFReader(path)
    except Exception as e:  # noqa: BLE001
        print(f"error: gguf-py cannot open {path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1

    out = to_json(r, path)
    sys.stdout.buffer.write(json.dumps(out, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
