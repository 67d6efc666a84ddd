#!/usr/bin/env python3
"""Generate crates/dynquant-quants/src/tables.rs: ggml's i-quant lookup tables.

The tables are format facts defined in llama.cpp `ggml/src/ggml-common.h` (GGML_TABLE_BEGIN ...).
This script reads them out of a compiled ggml, node-llama-cpp 3.21.1's `libggml-base.so`
(llama.cpp 80fb11ac, the project's pinned reference, see docs/oracles.md), through the ELF
symbol table (`iq2xxs_grid`, ...), so no table is transcribed by hand. The four small tables
that the compiler folded away (`kmask_iq2xs`, `ksigns_iq2xs`, `kvalues_iq4nl`, `kvalues_mxfp4`)
are written below as they appear in ggml-common.h; `ksigns_iq2xs` is also re-derived from its
definition (7 sign bits plus an even-parity eighth bit).

When gguf-py is importable (`$DYNQUANT_PYTHON`, gguf 0.19.0), every table is also compared with
gguf-py's independent encoding of it (`gguf.quants`), and the script fails on any difference.

Usage (no network access needed):
    . .oracle/env.sh
    $DYNQUANT_PYTHON scripts/gen_quant_tables.py "$GGML_BASE_LIB" \
        > crates/dynquant-quants/src/tables.rs
"""

import struct
import sys

PINNED = "80fb11ac73e66d89eae2c6a91d8a77428fa733ed"

# (symbol, element bytes, entries)
GRIDS = [
    ("iq2xxs_grid", 8, 256),
    ("iq2xs_grid", 8, 512),
    ("iq2s_grid", 8, 1024),
    ("iq3xxs_grid", 4, 256),
    ("iq3s_grid", 4, 512),
    ("iq1s_grid", 8, 2048),
]

# ggml-common.h, verbatim values.
KMASK_IQ2XS = [1, 2, 4, 8, 16, 32, 64, 128]
KSIGNS_IQ2XS = [
    0, 129, 130, 3, 132, 5, 6, 135, 136, 9, 10, 139, 12, 141, 142, 15,
    144, 17, 18, 147, 20, 149, 150, 23, 24, 153, 154, 27, 156, 29, 30, 159,
    160, 33, 34, 163, 36, 165, 166, 39, 40, 169, 170, 43, 172, 45, 46, 175,
    48, 177, 178, 51, 180, 53, 54, 183, 184, 57, 58, 187, 60, 189, 190, 63,
    192, 65, 66, 195, 68, 197, 198, 71, 72, 201, 202, 75, 204, 77, 78, 207,
    80, 209, 210, 83, 212, 85, 86, 215, 216, 89, 90, 219, 92, 221, 222, 95,
    96, 225, 226, 99, 228, 101, 102, 231, 232, 105, 106, 235, 108, 237, 238, 111,
    240, 113, 114, 243, 116, 245, 246, 119, 120, 249, 250, 123, 252, 125, 126, 255,
]
KVALUES_IQ4NL = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
KVALUES_MXFP4 = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]


def elf_symbols(blob):
    """Maps symbol name -> (file offset, size) for the defined symbols of an ELF64 LE file."""
    assert blob[:4] == b"\x7fELF" and blob[4] == 2 and blob[5] == 1, "need ELF64 little-endian"
    e_shoff, = struct.unpack_from("<Q", blob, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", blob, 0x3A)
    sections = []
    for i in range(e_shnum):
        (_name, sh_type, _flags, sh_addr, sh_offset, sh_size, sh_link, _info, _align,
         sh_entsize) = struct.unpack_from("<IIQQQQIIQQ", blob, e_shoff + i * e_shentsize)
        sections.append((sh_type, sh_addr, sh_offset, sh_size, sh_link, sh_entsize))
    out = {}
    for sh_type, _addr, off, size, link, entsize in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        str_off = sections[link][2]
        for k in range(size // entsize):
            st_name, _info, _other, st_shndx, st_value, st_size = struct.unpack_from(
                "<IBBHQQ", blob, off + k * entsize)
            if st_shndx == 0 or st_shndx >= len(sections):
                continue
            end = blob.index(b"\0", str_off + st_name)
            name = blob[str_off + st_name:end].decode()
            _t, sec_addr, sec_off, _s, _l, _e = sections[st_shndx]
            out[name] = (sec_off + st_value - sec_addr, st_size)
    return out


def read_grids(lib_path):
    blob = open(lib_path, "rb").read()
    syms = elf_symbols(blob)
    grids = {}
    for name, width, n in GRIDS:
        off, size = syms[name]
        assert size == width * n, f"{name}: symbol size {size}, expected {width * n}"
        fmt = "<%d%s" % (n, "Q" if width == 8 else "I")
        grids[name] = list(struct.unpack_from(fmt, blob, off))
    return grids


def check_ksigns():
    for i, v in enumerate(KSIGNS_IQ2XS):
        parity = bin(i).count("1") & 1
        assert v == i | (parity << 7), f"ksigns_iq2xs[{i}]"


def check_against_gguf_py(grids):
    """Compares with gguf-py's own encoding of the tables (skipped when gguf is missing)."""
    try:
        import numpy as np
        from gguf import quants
    except ImportError:
        print("gguf-py not importable: cross-check skipped", file=sys.stderr)
        return
    assert bytes(KSIGNS_IQ2XS) == quants.IQ2_XXS.ksigns
    assert tuple(KVALUES_IQ4NL) == tuple(quants.IQ4_NL.kvalues)
    assert tuple(KVALUES_MXFP4) == tuple(quants.MXFP4.kvalues)
    pairs = [
        ("iq2xxs_grid", quants.IQ2_XXS, np.uint8, 8),
        ("iq2xs_grid", quants.IQ2_XS, np.uint8, 8),
        ("iq2s_grid", quants.IQ2_S, np.uint8, 8),
        ("iq3xxs_grid", quants.IQ3_XXS, np.uint8, 4),
        ("iq3s_grid", quants.IQ3_S, np.uint8, 4),
        ("iq1s_grid", quants.IQ1_S, np.int8, 8),
    ]
    for name, cls, dtype, width in pairs:
        cls.init_grid()
        ref = cls.grid.reshape(-1, width).astype(dtype).view(np.uint8).reshape(-1, width)
        ours = np.array(grids[name], dtype=np.uint64 if width == 8 else np.uint32)
        ours = ours.view(np.uint8).reshape(-1, width)
        assert ref.shape == ours.shape and (ref == ours).all(), f"{name} differs from gguf-py"
    print("cross-checked against gguf-py: all tables equal", file=sys.stderr)


def emit_table(name, rust_ty, values, per_line, fmt):
    const = name.upper()
    lines = ["#[rustfmt::skip]", f"pub(crate) const {const}: [{rust_ty}; {len(values)}] = ["]
    for i in range(0, len(values), per_line):
        lines.append("    " + " ".join(fmt(v) + "," for v in values[i:i + per_line]))
    lines.append("];")
    return "\n".join(lines)


def fingerprint(values, bits):
    """(entries, wrapping sum, xor, position-weighted wrapping sum) over the entries as unsigned."""
    mask = (1 << 64) - 1
    unsigned = [v & ((1 << bits) - 1) for v in values]
    total = sum(unsigned) & mask
    xor = 0
    for v in unsigned:
        xor ^= v
    weighted = sum((i + 1) * v for i, v in enumerate(unsigned)) & mask
    return len(values), total, xor, weighted


def emit_checksum_test(tables):
    """A unit test pinning every table's size and checksums, so accidental edits are caught."""
    out = [
        "",
        "#[cfg(test)]",
        "mod tests {",
        "    use super::*;",
        "",
        "    /// (entries, wrapping sum, xor, position-weighted wrapping sum), entries as unsigned.",
        "    fn fingerprint(values: impl IntoIterator<Item = u64>) -> (usize, u64, u64, u64) {",
        "        let (mut n, mut sum, mut xor, mut weighted) = (0usize, 0u64, 0u64, 0u64);",
        "        for v in values {",
        "            n += 1;",
        "            sum = sum.wrapping_add(v);",
        "            xor ^= v;",
        "            weighted = weighted.wrapping_add((n as u64).wrapping_mul(v));",
        "        }",
        "        (n, sum, xor, weighted)",
        "    }",
        "",
        "    #[test]",
        "    fn tables_match_their_generated_checksums() {",
    ]
    for name, values, bits in tables:
        n, total, xor, weighted = fingerprint(values, bits)
        signed = name.startswith("kvalues")
        conv = {8: ".map(|&v| u64::from(v as u8))" if signed else ".map(|&v| u64::from(v))",
                32: ".map(|&v| u64::from(v))", 64: ".copied()"}[bits]
        out.append("        assert_eq!(")
        out.append(f"            fingerprint({name.upper()}.iter(){conv}),")
        out.append(f"            ({n}, 0x{total:016x}, 0x{xor:016x}, 0x{weighted:016x}),")
        out.append(f"            \"{name}\"")
        out.append("        );")
    out.append("    }")
    out.append("}")
    return "\n".join(out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    grids = read_grids(sys.argv[1])
    check_ksigns()
    check_against_gguf_py(grids)

    out = [
        "//! Lookup tables of the ggml i-quants and FP4 types. GENERATED, do not edit by hand.",
        "//!",
        "//! Origin: llama.cpp `ggml/src/ggml-common.h` (the `GGML_TABLE_BEGIN` tables) at commit",
        f"//! {PINNED}, the project's pinned reference. Generated by",
        "//! `scripts/gen_quant_tables.py`, which reads the grids from that commit's compiled",
        "//! `libggml-base.so` (node-llama-cpp 3.21.1) by ELF symbol and cross-checks every table",
        "//! against gguf-py 0.19.0. A checksum test below catches accidental edits.",
        "//!",
        "//! Grid entries pack one byte per weight, little-endian (weight 0 in the low byte):",
        "//! `IQ1S_GRID` bytes are int8 in {-1, 0, 1}; the other grids hold unsigned magnitudes.",
        "",
        "/// Bit `j` selects the sign of weight `j` in an 8-weight group (`kmask_iq2xs`).",
        emit_table("kmask_iq2xs", "u8", KMASK_IQ2XS, 8, str),
        "",
        "/// 7-bit sign pattern -> 8 sign bits with even parity (`ksigns_iq2xs`).",
        emit_table("ksigns_iq2xs", "u8", KSIGNS_IQ2XS, 16, str),
        "",
        "/// IQ4_NL / IQ4_XS non-linear levels (`kvalues_iq4nl`).",
        emit_table("kvalues_iq4nl", "i8", KVALUES_IQ4NL, 16, str),
        "",
        "/// E2M1 values, doubled (`kvalues_mxfp4`), used by MXFP4 and NVFP4.",
        emit_table("kvalues_mxfp4", "i8", KVALUES_MXFP4, 16, str),
    ]
    docs = {
        "iq2xxs_grid": "IQ2_XXS: 256 groups of 8 magnitudes in {8, 25, 43}.",
        "iq2xs_grid": "IQ2_XS: 512 groups of 8 magnitudes in {8, 25, 43}.",
        "iq2s_grid": "IQ2_S: 1024 groups of 8 magnitudes in {8, 25, 43}.",
        "iq3xxs_grid": "IQ3_XXS: 256 groups of 4 magnitudes.",
        "iq3s_grid": "IQ3_S: 512 groups of 4 magnitudes.",
        "iq1s_grid": "IQ1_S / IQ1_M: 2048 groups of 8 int8 values in {-1, 0, 1}.",
    }
    for name, width, _n in GRIDS:
        rust_ty = "u64" if width == 8 else "u32"
        digits = 2 * width
        per_line = 4 if width == 8 else 6
        out.append("")
        out.append(f"/// {docs[name]} (`{name}`)")
        out.append(emit_table(name, rust_ty, grids[name], per_line,
                              lambda v, d=digits: f"0x{v:0{d}x}"))
    tables = [("kmask_iq2xs", KMASK_IQ2XS, 8), ("ksigns_iq2xs", KSIGNS_IQ2XS, 8),
              ("kvalues_iq4nl", KVALUES_IQ4NL, 8), ("kvalues_mxfp4", KVALUES_MXFP4, 8)]
    tables += [(name, grids[name], 8 * width) for name, width, _n in GRIDS]
    out.append(emit_checksum_test(tables))
    print("\n".join(out))


if __name__ == "__main__":
    main()
