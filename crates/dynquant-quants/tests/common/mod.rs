//! The real ggml (node-llama-cpp's prebuilt `libggml-base.so`, llama.cpp 80fb11ac) through
//! libloading, shared by the oracle tests. Needs `GGML_BASE_LIB` (see `.oracle/env.sh`);
//! fails loudly without it unless `DYNQUANT_SKIP_ORACLES=1`.
#![allow(dead_code)]

use std::ffi::{c_char, c_void};

use dynquant_gguf::types::GgmlType;

/// `struct ggml_type_traits` (`ggml/include/ggml.h`).
#[repr(C)]
pub struct TypeTraits {
    pub type_name: *const c_char,
    pub blck_size: i64,
    pub blck_size_interleave: i64,
    pub type_size: usize,
    pub is_quantized: bool,
    pub to_float: Option<unsafe extern "C" fn(*const c_void, *mut f32, i64)>,
    pub from_float_ref: Option<unsafe extern "C" fn(*const f32, *mut c_void, i64)>,
}

pub struct Ggml {
    lib: libloading::Library,
}

impl Ggml {
    pub fn load() -> Option<Ggml> {
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

    pub fn traits(&self, ty: GgmlType) -> &TypeTraits {
        // SAFETY: ggml_get_type_traits returns a pointer into a static table for a valid id.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn(i32) -> *const TypeTraits> =
                self.lib.get(b"ggml_get_type_traits").unwrap();
            &*f(ty.id() as i32)
        }
    }

    pub fn to_float(&self, ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
        if ty == GgmlType::F32 {
            // ggml has no to_float for f32: the data is the floats.
            return src
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
        }
        let f = match self.traits(ty).to_float {
            Some(f) => f,
            // Types whose traits have no to_float (Q8_K): call the exported row function.
            None => *self.dequantize_row_symbol(ty),
        };
        let mut out = vec![0f32; n];
        // SAFETY: src holds n/blck whole blocks; out has n floats.
        unsafe { f(src.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
        out
    }

    pub fn dequantize_row_symbol(
        &self,
        ty: GgmlType,
    ) -> libloading::Symbol<'_, unsafe extern "C" fn(*const c_void, *mut f32, i64)> {
        let name = format!("dequantize_row_{}", ty.name());
        // SAFETY: ggml's dequantize_row_* all have the to_float signature.
        unsafe { self.lib.get(name.as_bytes()) }.unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// `ggml_validate_row_data`: whether ggml accepts these blocks (finite scales).
    pub fn validate(&self, ty: GgmlType, data: &[u8]) -> bool {
        // SAFETY: data is a readable buffer of data.len() bytes of whole blocks.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn(i32, *const c_void, usize) -> bool> =
                self.lib.get(b"ggml_validate_row_data").unwrap();
            f(ty.id() as i32, data.as_ptr().cast(), data.len())
        }
    }

    /// `ggml_quantize_requires_imatrix` (IQ2_XXS, IQ2_XS, IQ1_S at the pinned commit).
    pub fn requires_imatrix(&self, ty: GgmlType) -> bool {
        // SAFETY: a pure query on a type id.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn(i32) -> bool> =
                self.lib.get(b"ggml_quantize_requires_imatrix").unwrap();
            f(ty.id() as i32)
        }
    }

    /// `ggml_quantize_chunk` on `src.len() / n_per_row` whole rows.
    pub fn quantize_chunk(
        &self,
        ty: GgmlType,
        src: &[f32],
        n_per_row: usize,
        imatrix: Option<&[f32]>,
    ) -> Vec<u8> {
        let nrows = src.len() / n_per_row;
        let row_bytes = ty.row_bytes(n_per_row as u64).unwrap() as usize;
        let mut dst = vec![0u8; nrows * row_bytes];
        if let Some(w) = imatrix {
            assert_eq!(w.len(), n_per_row);
        }
        type QuantizeChunk =
            unsafe extern "C" fn(i32, *const f32, *mut c_void, i64, i64, i64, *const f32) -> usize;
        // SAFETY: src has nrows·n_per_row floats, dst the row bytes ggml writes, imatrix is
        // null or n_per_row floats. Never called for Q8_1/Q8_K (ggml aborts).
        let written = unsafe {
            let f: libloading::Symbol<QuantizeChunk> =
                self.lib.get(b"ggml_quantize_chunk").unwrap();
            f(
                ty.id() as i32,
                src.as_ptr(),
                dst.as_mut_ptr().cast(),
                0,
                nrows as i64,
                n_per_row as i64,
                imatrix.map_or(std::ptr::null(), |w| w.as_ptr()),
            )
        };
        assert_eq!(written, dst.len(), "{ty}");
        dst
    }
}
