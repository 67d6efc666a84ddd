//! The one declarative table of ggml tensor types and llama file types.
//!
//! Every fact about a type (wire id, ggml's spelling, block geometry, whether it needs an
//! importance matrix, what llama.cpp falls back to when a row does not divide the block) lives
//! in exactly one row below. Nothing else in dynquant lists types: ask this table.
//!
//! Sources, at llama.cpp commit 80fb11ac (release v0.4.0, ggml 0.23.0), the project's pinned
//! reference: `ggml/include/ggml.h` (`enum ggml_type`), `ggml/src/ggml.c` (`type_traits[]`:
//! names, block sizes, type sizes), `ggml/src/ggml-common.h` (block structs),
//! `src/llama-quant.cpp` (`tensor_type_fallback`, `tensor_requires_imatrix`,
//! `llama_ftype_get_default_type`) and `include/llama.h` (`enum llama_ftype`).
//! Retired ids (4, 5, 31-33, 36-38) are never reused and are rejected as unknown.

use std::fmt;
use std::str::FromStr;

/// How much a type depends on an importance matrix to be usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImatrixNeed {
    /// Quantizes well without one (it may still use one if given).
    Optional,
    /// Usable without one, but much worse (IQ3_XXS: LLaMA-2-7B PPL 107 vs 5.51, PR #5332).
    /// llama-quantize at the pinned reference refuses it without an imatrix.
    Recommended,
    /// ggml or llama-quantize refuse to quantize without one.
    Required,
}

/// Static facts about one ggml type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeInfo {
    /// The type this row describes.
    pub ty: GgmlType,
    /// Frozen ggml wire id (`enum ggml_type`).
    pub id: u32,
    /// ggml's exact spelling (`type_traits[].type_name`), e.g. `q4_K`.
    pub name: &'static str,
    /// Elements per block (1 for plain scalar types).
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
    /// Whether blocks carry quantized data (as opposed to plain scalars).
    pub quantized: bool,
    /// Whether the type may be stored as model weights (Q8_1/Q8_K are dot-product
    /// intermediates only, integer types are not weights).
    pub weight_type: bool,
    /// Importance-matrix dependence.
    pub imatrix: ImatrixNeed,
    /// llama.cpp's `tensor_type_fallback` when the row length is not a multiple of the block.
    /// `None` means "no fallback defined" (for block sizes <= 32 the type itself is tried,
    /// then F16; see [`GgmlType::fallback_for_row`]).
    pub fallback: Option<GgmlType>,
}

impl TypeInfo {
    /// Bits per weight of a full block.
    pub fn bpw(&self) -> f64 {
        self.type_size as f64 * 8.0 / self.block_size as f64
    }

    /// Bytes taken by `n_elements` elements laid out as whole blocks; `None` when the count
    /// is not a multiple of the block size or the size overflows.
    pub fn bytes_for(&self, n_elements: u64) -> Option<u64> {
        if !n_elements.is_multiple_of(self.block_size) {
            return None;
        }
        (n_elements / self.block_size).checked_mul(self.type_size)
    }
}

macro_rules! ggml_types {
    ($( $variant:ident = $id:literal {
            name: $name:literal, block: $block:literal, bytes: $bytes:literal,
            quantized: $q:literal, weight: $w:literal, imatrix: $im:ident, fallback: $fb:expr $(,)?
        } ),+ $(,)?) => {
        /// A ggml tensor type. The discriminant is the frozen ggml wire id.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum GgmlType {
            $(
                #[doc = concat!("ggml `", $name, "` (id ", stringify!($id), ")")]
                $variant = $id,
            )+
        }

        /// Every known type, in id order.
        pub const TYPE_TABLE: &[TypeInfo] = &[
            $( TypeInfo {
                ty: GgmlType::$variant,
                id: $id,
                name: $name,
                block_size: $block,
                type_size: $bytes,
                quantized: $q,
                weight_type: $w,
                imatrix: ImatrixNeed::$im,
                fallback: $fb,
            }, )+
        ];
    };
}

use GgmlType as T;

ggml_types! {
    F32 = 0 { name: "f32", block: 1, bytes: 4, quantized: false, weight: true, imatrix: Optional, fallback: None },
    F16 = 1 { name: "f16", block: 1, bytes: 2, quantized: false, weight: true, imatrix: Optional, fallback: None },
    Q4_0 = 2 { name: "q4_0", block: 32, bytes: 18, quantized: true, weight: true, imatrix: Optional, fallback: None },
    Q4_1 = 3 { name: "q4_1", block: 32, bytes: 20, quantized: true, weight: true, imatrix: Optional, fallback: None },
    Q5_0 = 6 { name: "q5_0", block: 32, bytes: 22, quantized: true, weight: true, imatrix: Optional, fallback: None },
    Q5_1 = 7 { name: "q5_1", block: 32, bytes: 24, quantized: true, weight: true, imatrix: Optional, fallback: None },
    Q8_0 = 8 { name: "q8_0", block: 32, bytes: 34, quantized: true, weight: true, imatrix: Optional, fallback: None },
    Q8_1 = 9 { name: "q8_1", block: 32, bytes: 36, quantized: true, weight: false, imatrix: Optional, fallback: None },
    Q2_K = 10 { name: "q2_K", block: 256, bytes: 84, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::Q4_0) },
    Q3_K = 11 { name: "q3_K", block: 256, bytes: 110, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::Q4_0) },
    Q4_K = 12 { name: "q4_K", block: 256, bytes: 144, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::Q5_0) },
    Q5_K = 13 { name: "q5_K", block: 256, bytes: 176, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::Q5_1) },
    Q6_K = 14 { name: "q6_K", block: 256, bytes: 210, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::Q8_0) },
    Q8_K = 15 { name: "q8_K", block: 256, bytes: 292, quantized: true, weight: false, imatrix: Optional, fallback: None },
    IQ2_XXS = 16 { name: "iq2_xxs", block: 256, bytes: 66, quantized: true, weight: true, imatrix: Required, fallback: Some(T::IQ4_NL) },
    IQ2_XS = 17 { name: "iq2_xs", block: 256, bytes: 74, quantized: true, weight: true, imatrix: Required, fallback: Some(T::IQ4_NL) },
    IQ3_XXS = 18 { name: "iq3_xxs", block: 256, bytes: 98, quantized: true, weight: true, imatrix: Recommended, fallback: Some(T::IQ4_NL) },
    IQ1_S = 19 { name: "iq1_s", block: 256, bytes: 50, quantized: true, weight: true, imatrix: Required, fallback: Some(T::IQ4_NL) },
    IQ4_NL = 20 { name: "iq4_nl", block: 32, bytes: 18, quantized: true, weight: true, imatrix: Optional, fallback: None },
    IQ3_S = 21 { name: "iq3_s", block: 256, bytes: 110, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::IQ4_NL) },
    IQ2_S = 22 { name: "iq2_s", block: 256, bytes: 82, quantized: true, weight: true, imatrix: Required, fallback: Some(T::IQ4_NL) },
    IQ4_XS = 23 { name: "iq4_xs", block: 256, bytes: 136, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::IQ4_NL) },
    I8 = 24 { name: "i8", block: 1, bytes: 1, quantized: false, weight: false, imatrix: Optional, fallback: None },
    I16 = 25 { name: "i16", block: 1, bytes: 2, quantized: false, weight: false, imatrix: Optional, fallback: None },
    I32 = 26 { name: "i32", block: 1, bytes: 4, quantized: false, weight: false, imatrix: Optional, fallback: None },
    I64 = 27 { name: "i64", block: 1, bytes: 8, quantized: false, weight: false, imatrix: Optional, fallback: None },
    F64 = 28 { name: "f64", block: 1, bytes: 8, quantized: false, weight: false, imatrix: Optional, fallback: None },
    IQ1_M = 29 { name: "iq1_m", block: 256, bytes: 56, quantized: true, weight: true, imatrix: Required, fallback: Some(T::IQ4_NL) },
    BF16 = 30 { name: "bf16", block: 1, bytes: 2, quantized: false, weight: true, imatrix: Optional, fallback: None },
    TQ1_0 = 34 { name: "tq1_0", block: 256, bytes: 54, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::Q4_0) },
    TQ2_0 = 35 { name: "tq2_0", block: 256, bytes: 66, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::Q4_0) },
    MXFP4 = 39 { name: "mxfp4", block: 32, bytes: 17, quantized: true, weight: true, imatrix: Optional, fallback: None },
    NVFP4 = 40 { name: "nvfp4", block: 64, bytes: 36, quantized: true, weight: true, imatrix: Optional, fallback: None },
    Q1_0 = 41 { name: "q1_0", block: 128, bytes: 18, quantized: true, weight: true, imatrix: Optional, fallback: None },
    Q2_0 = 42 { name: "q2_0", block: 64, bytes: 18, quantized: true, weight: true, imatrix: Optional, fallback: Some(T::Q4_0) },
}

/// A type id that is not (or no longer) a ggml type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown ggml type id {0}")]
pub struct UnknownTypeId(pub u32);

/// A type name that matches no ggml type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ggml type name '{0}' (expected one of: {names})", names = type_names_for_help())]
pub struct UnknownTypeName(pub String);

/// All ggml type names, comma separated, for help and error texts.
pub fn type_names_for_help() -> String {
    TYPE_TABLE
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl GgmlType {
    /// The table row for this type.
    pub fn info(self) -> &'static TypeInfo {
        // The table is built by the same macro as the enum, one row per variant, so the
        // lookup always succeeds; a linear scan over ~35 rows is cheaper than it looks.
        TYPE_TABLE
            .iter()
            .find(|t| t.ty == self)
            .expect("every GgmlType has a table row")
    }

    /// Frozen ggml wire id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's exact spelling.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Elements per block.
    pub fn block_size(self) -> u64 {
        self.info().block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.info().type_size
    }

    /// Bytes of one row of `n_per_row` elements, or `None` when the row does not divide into
    /// blocks (or overflows).
    pub fn row_bytes(self, n_per_row: u64) -> Option<u64> {
        self.info().bytes_for(n_per_row)
    }

    /// The type llama.cpp would actually store for rows of `n_per_row` elements when this one
    /// was asked for: the type itself when it fits, else its fallback, else F16
    /// (`tensor_type_fallback` in `src/llama-quant.cpp`). `None` when llama.cpp defines no
    /// fallback ("no tensor type fallback is defined").
    pub fn fallback_for_row(self, n_per_row: u64) -> Option<GgmlType> {
        let fits = |t: GgmlType| n_per_row.is_multiple_of(t.block_size());
        if fits(self) {
            return Some(self);
        }
        let info = self.info();
        let candidate = match info.fallback {
            Some(fb) => fb,
            None if info.block_size <= 32 => self,
            None => return None,
        };
        Some(if fits(candidate) {
            candidate
        } else {
            GgmlType::F16
        })
    }
}

impl TryFrom<u32> for GgmlType {
    type Error = UnknownTypeId;
    fn try_from(id: u32) -> Result<Self, Self::Error> {
        TYPE_TABLE
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.ty)
            .ok_or(UnknownTypeId(id))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GgmlType {
    type Err = UnknownTypeName;
    /// Case-insensitive: `Q4_K`, `q4_k` and `q4_K` are the same type.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TYPE_TABLE
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(s))
            .map(|t| t.ty)
            .ok_or_else(|| UnknownTypeName(s.to_string()))
    }
}

/// Static facts about one llama file type (`general.file_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTypeInfo {
    /// `enum llama_ftype` value, written as u32 in `general.file_type`.
    pub id: u32,
    /// The name llama-quantize accepts on its command line (`Q4_K_M`).
    pub name: &'static str,
    /// `llama_ftype_get_default_type`; `None` where llama.cpp defines none (NVFP4).
    pub default_type: Option<GgmlType>,
}

/// `enum llama_ftype` at the pinned reference (`include/llama.h`); retired ids 4-6 and 33-35
/// are absent. Names follow llama-quantize's `QUANT_OPTIONS` (`tools/quantize/quantize.cpp`).
pub const FILE_TYPE_TABLE: &[FileTypeInfo] = &[
    ft(0, "F32", Some(T::F32)),
    ft(1, "F16", Some(T::F16)),
    ft(2, "Q4_0", Some(T::Q4_0)),
    ft(3, "Q4_1", Some(T::Q4_1)),
    ft(7, "Q8_0", Some(T::Q8_0)),
    ft(8, "Q5_0", Some(T::Q5_0)),
    ft(9, "Q5_1", Some(T::Q5_1)),
    ft(10, "Q2_K", Some(T::Q2_K)),
    ft(11, "Q3_K_S", Some(T::Q3_K)),
    ft(12, "Q3_K_M", Some(T::Q3_K)),
    ft(13, "Q3_K_L", Some(T::Q3_K)),
    ft(14, "Q4_K_S", Some(T::Q4_K)),
    ft(15, "Q4_K_M", Some(T::Q4_K)),
    ft(16, "Q5_K_S", Some(T::Q5_K)),
    ft(17, "Q5_K_M", Some(T::Q5_K)),
    ft(18, "Q6_K", Some(T::Q6_K)),
    ft(19, "IQ2_XXS", Some(T::IQ2_XXS)),
    ft(20, "IQ2_XS", Some(T::IQ2_XS)),
    ft(21, "Q2_K_S", Some(T::Q2_K)),
    ft(22, "IQ3_XS", Some(T::IQ3_S)),
    ft(23, "IQ3_XXS", Some(T::IQ3_XXS)),
    ft(24, "IQ1_S", Some(T::IQ1_S)),
    ft(25, "IQ4_NL", Some(T::IQ4_NL)),
    ft(26, "IQ3_S", Some(T::IQ3_S)),
    ft(27, "IQ3_M", Some(T::IQ3_S)),
    ft(28, "IQ2_S", Some(T::IQ2_XS)),
    ft(29, "IQ2_M", Some(T::IQ2_S)),
    ft(30, "IQ4_XS", Some(T::IQ4_XS)),
    ft(31, "IQ1_M", Some(T::IQ1_M)),
    ft(32, "BF16", Some(T::BF16)),
    ft(36, "TQ1_0", Some(T::TQ1_0)),
    ft(37, "TQ2_0", Some(T::TQ2_0)),
    ft(38, "MXFP4_MOE", Some(T::MXFP4)),
    ft(39, "NVFP4", None),
    ft(40, "Q1_0", Some(T::Q1_0)),
    ft(41, "Q2_0", Some(T::Q2_0)),
];

const fn ft(id: u32, name: &'static str, default_type: Option<GgmlType>) -> FileTypeInfo {
    FileTypeInfo {
        id,
        name,
        default_type,
    }
}

/// llama.cpp ORs this flag into a file type it guessed rather than read; never written.
pub const FILE_TYPE_GUESSED: u32 = 1024;

/// Looks up a llama file type by `general.file_type` id.
pub fn file_type_by_id(id: u32) -> Option<&'static FileTypeInfo> {
    FILE_TYPE_TABLE.iter().find(|f| f.id == id)
}

/// Looks up a llama file type by name, case-insensitively (`q4_k_m`).
pub fn file_type_by_name(name: &str) -> Option<&'static FileTypeInfo> {
    FILE_TYPE_TABLE
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique_and_round_trip() {
        for (i, a) in TYPE_TABLE.iter().enumerate() {
            assert_eq!(a.ty.id(), a.id, "{}", a.name);
            assert_eq!(GgmlType::try_from(a.id), Ok(a.ty));
            assert_eq!(a.name.parse::<GgmlType>(), Ok(a.ty));
            assert_eq!(a.name.to_uppercase().parse::<GgmlType>(), Ok(a.ty));
            for b in &TYPE_TABLE[i + 1..] {
                assert_ne!(a.id, b.id);
                assert!(!a.name.eq_ignore_ascii_case(b.name));
            }
        }
    }

    #[test]
    fn retired_and_out_of_range_ids_are_unknown() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, 1000, u32::MAX] {
            assert_eq!(GgmlType::try_from(id), Err(UnknownTypeId(id)));
        }
    }

    #[test]
    fn fallbacks_follow_llama_cpp() {
        // SmolLM2 rows are 576 wide: not a multiple of 256, a multiple of 32.
        assert_eq!(GgmlType::Q4_K.fallback_for_row(576), Some(GgmlType::Q5_0));
        assert_eq!(GgmlType::Q6_K.fallback_for_row(576), Some(GgmlType::Q8_0));
        assert_eq!(
            GgmlType::IQ1_S.fallback_for_row(576),
            Some(GgmlType::IQ4_NL)
        );
        assert_eq!(GgmlType::Q2_K.fallback_for_row(576), Some(GgmlType::Q4_0));
        assert_eq!(GgmlType::Q5_K.fallback_for_row(576), Some(GgmlType::Q5_1));
        assert_eq!(GgmlType::Q4_K.fallback_for_row(1536), Some(GgmlType::Q4_K));
        // A row that is not even a multiple of 32 ends in F16.
        assert_eq!(GgmlType::Q4_K.fallback_for_row(100), Some(GgmlType::F16));
        assert_eq!(GgmlType::Q8_0.fallback_for_row(100), Some(GgmlType::F16));
        assert_eq!(GgmlType::Q1_0.fallback_for_row(96), None);
    }

    #[test]
    fn row_bytes_are_checked() {
        assert_eq!(GgmlType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_bytes(576), None);
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None);
        assert!((GgmlType::IQ1_S.info().bpw() - 1.5625).abs() < 1e-12);
    }

    #[test]
    fn file_types_are_unique_and_default_types_exist() {
        for (i, a) in FILE_TYPE_TABLE.iter().enumerate() {
            assert_eq!(file_type_by_id(a.id), Some(a));
            assert_eq!(file_type_by_name(&a.name.to_lowercase()), Some(a));
            for b in &FILE_TYPE_TABLE[i + 1..] {
                assert_ne!(a.id, b.id);
                assert_ne!(a.name, b.name);
            }
        }
        assert_eq!(
            file_type_by_name("iq2_s").unwrap().default_type,
            Some(GgmlType::IQ2_XS)
        );
    }
}
