#!/usr/bin/env python3
"""Open each GGUF file (e.g. the parts of a split model) with gguf-py and print one JSON line per file:

  {"file": PATH, "tensors": N, "kv": N, "split_no": N|null, "split_count": N|null, "split_tensors_count": N|null}

"kv" counts the file's real KV pairs (gguf-py's virtual GGUF.* fields are not counted); the split_*
values come from the `split.no`, `split.count` and `split.tensors.count` keys (null when absent).

Usage: $DYNQUANT_PYTHON tests/oracle/read_parts.py FILE...
Exit 0 if every file opened; 1 (after trying all files, with a message on stderr per failure)
otherwise; 2 on usage errors.
"""
from __future__ import annotations

import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gguf import GGUFReader  # noqa: E402

from _ggufpy import field_type_and_value, kv_fields  # noqa: E402

SPLIT_KEYS = {"split_no": "split.no", "split_count": "split.count", "split_tensors_count": "split.tensors.count"}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(f"usage: {argv[0]} FILE...", file=sys.stderr)
        return 2
    failed = 0
    for path in argv[1:]:
        try:
            r = GGUFReader(path)
            kvs = kv_fields(r)
            out = {"file": path, "tensors": len(r.tensors), "kv": len(kvs)}
            for name, key in SPLIT_KEYS.items():
                f = r.fields.get(key)
                out[name] = field_type_and_value(f)[1] if f is not None else None
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"error: gguf-py cannot open {path}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        print(json.dumps(out, ensure_ascii=False), flush=True)
    if failed:
        print(f"error: {failed} of {len(argv) - 1} file(s) failed to open", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
