"""Make an "original F16" model from a quantized GGUF (run with $DYNQUANT_PYTHON, gguf 0.19.0).

Usage: $DYNQUANT_PYTHON tests/oracle/make_f16_smollm2.py IN.gguf OUT.gguf

Every tensor of IN is dequantized with `gguf.quants.dequantize` and written back with `GGUFWriter`:
tensors with two or more dimensions become F16 (token_embd included), 1-D tensors (norms) are written
as F32. Every KV is copied in order with its declared type (arrays keep their element type), except
gguf-py's virtual `GGUF.*` fields and `general.architecture` (the writer sets it first), and
`general.file_type` is set to 1 (MOSTLY_F16). This is how the F16 SmolLM2 behind shared/golden was
made (docs/oracles.md section 3); it takes about 6 s and writes ~271 MB for SmolLM2-135M.

Exit codes: 0 ok, 1 failure, 2 usage error.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize

SKIP_KEYS = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture"}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: make_f16_smollm2.py IN.gguf OUT.gguf\n")
        return 2
    src, dst = argv[1], argv[2]
    t0 = time.time()
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(dst, arch)

    n_ft = 0
    for name, field in r.fields.items():
        if name in SKIP_KEYS:
            continue
        vtype = field.types[0]
        if name == "general.file_type":
            w.add_key_value(name, 1, GGUFValueType.UINT32)
            n_ft += 1
            continue
        if vtype == GGUFValueType.ARRAY:
            if len(field.types) > 2:
                raise SystemExit(f"nested array KV {name} not supported")
            sub = field.types[1] if len(field.types) > 1 else GGUFValueType.UINT32
            w.add_key_value(name, field.contents(), vtype, sub_type=sub)
        else:
            w.add_key_value(name, field.contents(), vtype)
    if n_ft == 0:
        w.add_key_value("general.file_type", 1, GGUFValueType.UINT32)

    counts: dict[str, int] = {}
    for t in r.tensors:
        qtype = GGMLQuantizationType(int(t.tensor_type))
        f32 = dequantize(np.asarray(t.data), qtype).astype(np.float32, copy=False)
        # numpy shape is the reverse of ggml's ne order.
        ne = [int(x) for x in t.shape]
        f32 = f32.reshape(list(reversed(ne)))
        out = f32.astype(np.float16) if len(ne) >= 2 and sum(1 for x in ne if x > 1) >= 2 else f32
        key = f"{qtype.name}->{'F16' if out.dtype == np.float16 else 'F32'}"
        counts[key] = counts.get(key, 0) + 1
        w.add_tensor(t.name, out)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    sys.stderr.write(f"wrote {dst}: {len(r.tensors)} tensors {counts} in {time.time() - t0:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
