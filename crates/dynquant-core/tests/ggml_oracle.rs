//! Bit-exactness against real ggml: node-llama-cpp's prebuilt `libggml-base.so` (llama.cpp
//! 80fb11ac), loaded with libloading. Needs `GGML_BASE_LIB` (see `.oracle/env.sh`); fails
//! loudly without it unless `DYNQUANT_SKIP_ORACLES=1`.

use std::ffi::{c_char, c_void};

use dynquant_core::gguf::{Access, GgufModel};
use dynquant_core::quants::{can_dequantize, dequantize};
use dynquant_core::types::{GgmlType, TYPE_TABLE};

/// `struct ggml_type_traits` (`ggml/include/ggml.h`).
#[repr(C)]
struct TypeTraits {
    type_name: *const c_char,
    blck_size: i64,
    blck_size_interleave: i64,
    type_size: usize,
    is_quantized: bool,
    to_float: Option<unsafe extern "C" fn(*const c_void, *mut f32, i64)>,
    from_float_ref: Option<unsafe extern "C" fn(*const f32, *mut c_void, i64)>,
}

struct Ggml {
    lib: libloading::Library,
}

impl Ggml {
    fn load() -> Option<Ggml> {
        let Some(path) = std::env::var_os("GGML_BASE_LIB") else {
            if std::env::var("DYNQUANT_SKIP_ORACLES").as_deref() == Ok("1") {
                return None;
            }
            panic!("GGML_BASE_LIB is not set: source .oracle/env.sh (scripts/prepare-oracles.sh)");
        };
        // SAFETY: loading ggml runs no initialisers with preconditions.
        let lib = unsafe { libloading::Library::new(path) }.expect("load libggml-base");
        Some(Ggml { lib })
    }

    fn traits(&self, ty: GgmlType) -> &TypeTraits {
        // SAFETY: ggml_get_type_traits returns a pointer into a static table for a valid id.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn(i32) -> *const TypeTraits> =
                self.lib.get(b"ggml_get_type_traits").unwrap();
            &*f(ty.id() as i32)
        }
    }

    fn to_float(&self, ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
        if ty == GgmlType::F32 {
            // ggml has no to_float for f32: the data is the floats.
            return src
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
        }
        let f = self.traits(ty).to_float.expect("to_float");
        let mut out = vec![0f32; n];
        // SAFETY: src holds n/blck whole blocks; out has n floats.
        unsafe { f(src.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
        out
    }
}

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

/// Random blocks with finite scales (ggml's validator rejects non-finite ones), including
/// zero, tiny (subnormal) and huge scales.
fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let size = ty.type_size() as usize;
    let scales = [
        0x0000u16, 0x0001, 0x03ff, 0x3c00, 0x7bff, 0xfbff, 0x8001, 0x2e66,
    ];
    let mut out = Vec::with_capacity(n_blocks * size);
    for b in 0..n_blocks {
        let start = out.len();
        out.extend((0..size).map(|_| next() as u8));
        // Scale fields (d, and m for the _1 types) sit at the start of legacy blocks.
        let d = scales[b % scales.len()];
        out[start..start + 2].copy_from_slice(&d.to_le_bytes());
        if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            let m = scales[(b * 3 + 1) % scales.len()];
            out[start + 2..start + 4].copy_from_slice(&m.to_le_bytes());
        }
    }
    out
}

#[test]
fn dequantization_is_bit_exact_with_ggml_on_random_blocks() {
    let Some(g) = Ggml::load() else { return };
    for info in TYPE_TABLE.iter().filter(|t| can_dequantize(t.ty)) {
        for n_blocks in [1usize, 3, 17] {
            let n = n_blocks * info.block_size as usize;
            let src = if info.quantized {
                random_blocks(info.ty, n_blocks, 7 + n_blocks as u64)
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
    }
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
