//! Where the fields of ggml's weight blocks sit (ggml-common.h, the `block_*` structs), for the
//! kernels that read stored blocks directly. The K-quant layouts are dynquant-quants' own
//! (`dynquant_quants::k::layout`, re-exported here), the same source its decoders read; the
//! legacy layouts (Q4_0..Q8_0), which that crate keeps private, are named here. Block sizes in
//! bytes and elements come from the type table (`GgmlType::type_size`, `block_size`), and the
//! tests below check that the fields fill exactly those sizes.

use dynquant_gguf::GgmlType;
pub(crate) use dynquant_quants::k::layout::{q4k, q6k};

/// Elements of a legacy block (`QK4_0`, `QK4_1`, `QK5_0`, `QK5_1`, `QK8_0`).
pub(crate) const QK: usize = 32;
/// Elements of a K-quant super-block (`QK_K`).
pub(crate) const QK_K: usize = 256;

/// `block_q4_0`: f16 scale, 16 bytes of 4-bit values (element `j` low nibble, `j + 16` high).
pub(crate) mod q4_0 {
    /// f16 scale.
    pub(crate) const D: usize = 0;
    /// Packed 4-bit values.
    pub(crate) const QS: usize = 2;
}

/// `block_q4_1`: f16 scale, f16 minimum, 16 bytes of 4-bit values.
pub(crate) mod q4_1 {
    /// f16 scale.
    pub(crate) const D: usize = 0;
    /// f16 block minimum.
    pub(crate) const M: usize = 2;
    /// Packed 4-bit values.
    pub(crate) const QS: usize = 4;
}

/// `block_q5_0`: f16 scale, the 32 fifth bits (u32), 16 bytes of low nibbles.
pub(crate) mod q5_0 {
    /// f16 scale.
    pub(crate) const D: usize = 0;
    /// Fifth bits, bit `j` for element `j` (little-endian u32).
    pub(crate) const QH: usize = 2;
    /// Packed low 4 bits.
    pub(crate) const QS: usize = 6;
}

/// `block_q5_1`: f16 scale, f16 minimum, the fifth bits, 16 bytes of low nibbles.
pub(crate) mod q5_1 {
    /// f16 block minimum.
    pub(crate) const M: usize = 2;
    /// Packed low 4 bits (the last field).
    #[cfg(test)]
    pub(crate) const QS: usize = 8;
}

/// `block_q8_0`: f16 scale, 32 i8 values.
pub(crate) mod q8_0 {
    /// f16 scale.
    pub(crate) const D: usize = 0;
    /// i8 values.
    pub(crate) const QS: usize = 2;
}

/// Offset of the f16 block minimum of the types whose activations are Q8_1 (the minimum
/// multiplies the activations' stored block sums), `None` for the others.
pub(crate) fn block_min(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_1 => Some(q4_1::M),
        GgmlType::Q5_1 => Some(q5_1::M),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(ty: GgmlType) -> usize {
        ty.type_size() as usize
    }

    #[test]
    fn fields_fill_the_type_tables_blocks() {
        use GgmlType::*;
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
            assert_eq!(ty.block_size() as usize, QK, "{ty}");
        }
        for ty in [Q4_K, Q6_K] {
            assert_eq!(ty.block_size() as usize, QK_K, "{ty}");
        }
        assert_eq!(q4_0::QS + QK / 2, size(Q4_0));
        assert_eq!((q4_1::D, q4_1::M + 2), (0, q4_1::QS));
        assert_eq!(q4_1::QS + QK / 2, size(Q4_1));
        assert_eq!((q5_0::D + 2, q5_0::QH + 4), (q5_0::QH, q5_0::QS));
        assert_eq!(q5_0::QS + QK / 2, size(Q5_0));
        assert_eq!(q5_1::M + 2 + 4, q5_1::QS);
        assert_eq!(q5_1::QS + QK / 2, size(Q5_1));
        assert_eq!((q8_0::D + 2, q8_0::QS + QK), (q8_0::QS, size(Q8_0)));
        assert_eq!(q4k::QS + QK_K / 2, size(Q4_K));
        assert_eq!(q6k::D + 2, size(Q6_K));
    }
}
