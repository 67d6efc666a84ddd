//! Bit-exactness against real ggml: node-llama-cpp's prebuilt `libggml-base.so` (llama.cpp
//! 80fb11ac), loaded with libloading. Needs `GGML_BASE_LIB` (see `.oracle/env.sh`); fails
//! loudly without it unless `DYNQUANT_SKIP_ORACLES=1`.

use dynquant_gguf::types::{GgmlType, TYPE_TABLE};
use dynquant_gguf::{Access, GgufModel};
use dynquant_quants::{can_dequantize, dequantize};

mod common;

use common::Ggml;

#[test]
fn type_table_matches_ggml() {
    let Some(g) = Ggml::load() else { return };
    for info in TYPE_TABLE {
        let t = g.traits(info.ty);
        // SAFETY: type_name is a static NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(t.type_name) }
            .to_str()
            .unwrap();
        assert_eq!(name, info.name, "id {}", info.id);
        assert_eq!(t.blck_size as u64, info.block_size, "{}", info.name);
        assert_eq!(t.type_size as u64, info.type_size, "{}", info.name);
        assert_eq!(t.is_quantized, info.quantized, "{}", info.name);
    }
}

fn assert_bits_eq(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(
            x.to_bits(),
            y.to_bits(),
            "{what}: element {i}: ours {x} ggml {y}"
        );
    }
}

/// Xorshift64 stream (deterministic test data).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Where a block keeps its scales, which must be finite for ggml to accept it.
enum Scales {
    /// fp16 scales at these byte offsets.
    F16(&'static [usize]),
    /// One f32 scale at this offset (Q8_K).
    F32(usize),
    /// IQ1_M: an fp16 spread over the top nibbles of the four u16 words at this offset.
    Iq1m(usize),
    /// Byte-sized scales (E8M0, UE4M3): every value is acceptable, these are edge cases.
    Bytes(&'static [usize], &'static [u8]),
}

/// The scale fields of each quantized type (`ggml/src/ggml-common.h` block structs).
fn scale_fields(ty: GgmlType) -> Scales {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | Q1_0 | Q2_0 | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S
        | IQ4_NL | IQ4_XS => Scales::F16(&[0]),
        Q4_1 | Q5_1 | Q4_K | Q5_K => Scales::F16(&[0, 2]),
        Q2_K => Scales::F16(&[80, 82]),
        Q3_K => Scales::F16(&[108]),
        Q6_K => Scales::F16(&[208]),
        TQ1_0 => Scales::F16(&[52]),
        TQ2_0 => Scales::F16(&[64]),
        Q8_K => Scales::F32(0),
        IQ1_M => Scales::Iq1m(48),
        // E8M0 255 is NaN: ggml rejects it.
        MXFP4 => Scales::Bytes(&[0], &[0, 1, 2, 127, 128, 200, 254]),
        NVFP4 => Scales::Bytes(
            &[0, 1, 2, 3],
            &[0x00, 0x01, 0x07, 0x38, 0x7e, 0x7f, 0x80, 0xff],
        ),
        other => panic!("no scale layout known for {other}: add it here"),
    }
}

/// Edge-case fp16 scales: zeros, smallest and largest subnormals, one, largest finite, both
/// signs, a typical small scale.
const F16_SCALES: [u16; 10] = [
    0x0000, 0x8000, 0x0001, 0x03ff, 0x3c00, 0x7bff, 0xfbff, 0x8001, 0x2e66, 0xa1e0,
];

/// Random blocks whose scale fields are edge cases or random finite values; ggml must
/// accept them (`ggml_validate_row_data`, checked by the caller).
fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let size = ty.type_size() as usize;
    let mut out: Vec<u8> = (0..n_blocks * size).map(|_| rng.next() as u8).collect();
    let fields = scale_fields(ty);
    for (b, block) in out.chunks_exact_mut(size).enumerate() {
        let mut f16_scale = |k: usize| {
            let i = b * 3 + k * 5;
            if i % 13 < F16_SCALES.len() {
                F16_SCALES[i % 13]
            } else {
                // Random finite: anything but exponent 31.
                (rng.next() as u16) & 0xfbff
            }
        };
        match fields {
            Scales::F16(offsets) => {
                for (k, &at) in offsets.iter().enumerate() {
                    block[at..at + 2].copy_from_slice(&f16_scale(k).to_le_bytes());
                }
            }
            Scales::F32(at) => {
                let edge = [0.0f32, -0.0, 1e-40, f32::MAX, -3.5, 1.0 / 1024.0];
                let d = edge.get(b % 8).copied().unwrap_or(rng.unit() * 1e3);
                block[at..at + 4].copy_from_slice(&d.to_le_bytes());
            }
            Scales::Iq1m(at) => {
                let d = f16_scale(0);
                for i in 0..4 {
                    let w = &mut block[at + 2 * i..at + 2 * i + 2];
                    let word = u16::from_le_bytes([w[0], w[1]]) & 0x0fff;
                    let word = word | (((d >> (4 * i)) & 0xf) << 12);
                    w.copy_from_slice(&word.to_le_bytes());
                }
            }
            Scales::Bytes(offsets, edges) => {
                for (k, &at) in offsets.iter().enumerate() {
                    block[at] = edges[(b + 3 * k) % edges.len()];
                }
            }
        }
    }
    out
}

#[test]
fn dequantization_is_bit_exact_with_ggml_on_random_blocks() {
    let Some(g) = Ggml::load() else { return };
    let mut checked = Vec::new();
    for info in TYPE_TABLE.iter().filter(|t| can_dequantize(t.ty)) {
        for n_blocks in [1usize, 3, 17] {
            let n = n_blocks * info.block_size as usize;
            let src = if info.quantized {
                let src = random_blocks(info.ty, n_blocks, 7 + n_blocks as u64 + info.id as u64);
                assert!(
                    g.validate(info.ty, &src),
                    "{}: ggml rejects the blocks",
                    info.name
                );
                src
            } else {
                // Plain floats: every bit pattern, including NaN and infinities.
                (0..n * info.type_size as usize)
                    .map(|i| (i * 37 + 11) as u8)
                    .collect()
            };
            let mut ours = vec![0f32; n];
            dequantize(info.ty, &src, &mut ours).unwrap();
            let theirs = g.to_float(info.ty, &src, n);
            assert_bits_eq(&ours, &theirs, info.name);
        }
        checked.push(info.name);
    }
    // Every stored type but Q8_1 (an activation format ggml cannot dequantize) and the
    // plain integer types.
    let missing: Vec<_> = TYPE_TABLE
        .iter()
        .filter(|t| (t.quantized || t.weight_type) && !can_dequantize(t.ty))
        .map(|t| t.name)
        .collect();
    assert_eq!(missing, ["q8_1"], "checked {checked:?}");
}

/// Rows of `n_per_row` values that stress the quantizers: ordinary, zero, tiny, huge,
/// outliers, one sign only.
fn test_rows(n_per_row: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed | 1);
    let mut rows = Vec::new();
    let kinds: [fn(&mut Rng, usize) -> f32; 8] = [
        |r, _| r.unit() + r.unit() + r.unit(),
        |_, _| 0.0,
        |r, _| r.unit() * 1e-6,
        |r, _| r.unit() * 1e-30,
        |r, _| r.unit() * 3e4,
        |r, i| {
            if i % 97 == 5 {
                r.unit() * 500.0
            } else {
                r.unit() * 0.01
            }
        },
        |r, _| r.unit().abs() + 0.25,
        |r, i| if i % 2 == 0 { -r.unit().abs() } else { 0.0 },
    ];
    for kind in kinds {
        rows.extend((0..n_per_row).map(|i| kind(&mut rng, i)));
    }
    rows
}

#[test]
fn dequantization_is_bit_exact_with_ggml_on_blocks_ggml_quantized() {
    let Some(g) = Ggml::load() else { return };
    let n_per_row = 768; // 3 super-blocks; a multiple of every block size.
    let src = test_rows(n_per_row, 0x5eed);
    let mut rng = Rng(0x1a7);
    let imatrix: Vec<f32> = (0..n_per_row).map(|_| rng.unit().abs() + 0.01).collect();
    let (mut checked, mut expected) = (0, 0);
    // Weight types only: ggml aborts when asked to quantize to Q8_1/Q8_K.
    for info in TYPE_TABLE
        .iter()
        .filter(|t| t.quantized && t.weight_type && can_dequantize(t.ty))
    {
        let weightings: &[Option<&[f32]>] = if g.requires_imatrix(info.ty) {
            &[Some(&imatrix)]
        } else {
            &[None, Some(&imatrix)]
        };
        expected += weightings.len();
        for &w in weightings {
            let blocks = g.quantize_chunk(info.ty, &src, n_per_row, w);
            let what = format!("{} (imatrix: {})", info.name, w.is_some());
            assert!(
                g.validate(info.ty, &blocks),
                "{what}: ggml rejects its own blocks"
            );
            let mut ours = vec![0f32; src.len()];
            dequantize(info.ty, &blocks, &mut ours).unwrap();
            let theirs = g.to_float(info.ty, &blocks, src.len());
            assert_bits_eq(&ours, &theirs, &what);
            checked += 1;
        }
    }
    // 25 weight types, with and without an imatrix where ggml allows both.
    assert_eq!((checked, expected), (47, 47));
}

#[test]
fn dequantization_is_bit_exact_with_ggml_on_smollm2() {
    let Some(g) = Ggml::load() else { return };
    let dir = std::env::var_os("DYNQUANT_ORACLE").expect("DYNQUANT_ORACLE");
    let path = std::path::Path::new(&dir).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = GgufModel::open(path, Access::Mmap).unwrap();
    let mut checked = 0;
    for t in model.tensors() {
        let data = model.tensor_data(&t).unwrap();
        let n = t.info.n_elements() as usize;
        let mut ours = vec![0f32; n];
        dequantize(t.info.ggml_type, &data, &mut ours).unwrap();
        let theirs = g.to_float(t.info.ggml_type, &data, n);
        assert_bits_eq(&ours, &theirs, &t.info.name);
        checked += 1;
    }
    assert_eq!(checked, 272);
}
