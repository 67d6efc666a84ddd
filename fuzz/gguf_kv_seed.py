#!/usr/bin/env python3
"""Writes a metadata-only GGUF (no tensors) holding the KVs of a real GGUF file whose keys start
with one of the given prefixes. Used by scripts/fuzz.sh to seed the tokenizer targets.
The vocabulary is cut to its first N_TOKENS tokens (env N_TOKENS, default 400) and the merges
to those whose parts and result survive, so the seed stays a few KB.
Usage: gguf_kv_seed.py IN.gguf OUT.gguf [PREFIX...]"""
import os
import struct
import sys

SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def skip_value(f, ty):
    if ty in SIZES:
        f.read(SIZES[ty])
    elif ty == 8:
        (n,) = struct.unpack("<Q", f.read(8))
        f.read(n)
    elif ty == 9:
        (ety, n) = struct.unpack("<IQ", f.read(12))
        if ety in SIZES:
            f.read(SIZES[ety] * n)
        else:
            for _ in range(n):
                skip_value(f, ety)
    else:
        raise ValueError(f"unknown type {ty}")


def read_strings(raw):
    (klen,) = struct.unpack("<Q", raw[:8])
    pos = 8 + klen + 4
    ety, n = struct.unpack("<IQ", raw[pos : pos + 12])
    assert ety == 8
    pos += 12
    out = []
    for _ in range(n):
        (slen,) = struct.unpack("<Q", raw[pos : pos + 8])
        out.append(raw[pos + 8 : pos + 8 + slen].decode("utf-8", "surrogateescape"))
        pos += 8 + slen
    return out


def write_strings(key, strings):
    k = key.encode()
    out = struct.pack("<Q", len(k)) + k + struct.pack("<IIQ", 9, 8, len(strings))
    for s in strings:
        b = s.encode("utf-8", "surrogateescape")
        out += struct.pack("<Q", len(b)) + b
    return out


def merge_ok(merge, vocab):
    parts = merge.split(" ")
    return len(parts) == 2 and parts[0] in vocab and parts[1] in vocab and "".join(parts) in vocab


def main():
    src, dst, prefixes = sys.argv[1], sys.argv[2], tuple(sys.argv[3:]) or ("",)
    kept = []
    with open(src, "rb") as f:
        magic, version, _n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
        assert magic == b"GGUF", src
        for _ in range(n_kv):
            start = f.tell()
            (klen,) = struct.unpack("<Q", f.read(8))
            key = f.read(klen).decode()
            (ty,) = struct.unpack("<I", f.read(4))
            skip_value(f, ty)
            end = f.tell()
            if key.startswith(prefixes):
                f.seek(start)
                kept.append((key, ty, f.read(end - start)))
    n_tokens = int(os.environ.get("N_TOKENS", "400"))
    tokens = None
    for key, ty, raw in kept:
        if key == "tokenizer.ggml.tokens":
            tokens = read_strings(raw)[:n_tokens]
    vocab = set(tokens or [])
    cut = []
    for key, ty, raw in kept:
        if key == "tokenizer.ggml.tokens":
            raw = write_strings(key, tokens)
        elif key == "tokenizer.ggml.merges":
            merges = [m for m in read_strings(raw) if merge_ok(m, vocab)]
            raw = write_strings(key, merges)
        elif key in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            klen = 8 + len(key.encode())
            ety, n = struct.unpack("<IQ", raw[klen + 4 : klen + 16])
            size = SIZES[ety]
            body = raw[klen + 16 : klen + 16 + size * min(n, n_tokens)]
            raw = raw[: klen + 4] + struct.pack("<IQ", ety, min(n, n_tokens)) + body
        cut.append(raw)
    kept = cut
    with open(dst, "wb") as out:
        out.write(struct.pack("<4sIQQ", b"GGUF", version, 0, len(kept)))
        for kv in kept:
            out.write(kv)


main()
