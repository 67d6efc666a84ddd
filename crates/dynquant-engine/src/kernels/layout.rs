//! Where the fields of ggml's weight blocks sit (ggml-common.h, the `block_*` structs), for the
//! kernels that read stored blocks directly: dynquant-quants' own (`dynquant_quants::legacy::layout`
//! and `dynquant_quants::k::layout`, re-exported here), the same source its decoders and
//! validity checks read. Block sizes in
//! bytes and elements come from the type table (`GgmlType::type_size`, `block_size`), and the
//! tests below check that the fields fill exactly those sizes.

use dynquant_gguf::GgmlType;
pub(crate) use dynquant_quants::k::layout::{q2k, q3k, q4k, q5k, q6k};
pub(crate) use dynquant_quants::legacy::layout::{q4_0, q4_1, q5_0, q5_1, q8_0};

/// Elements of a legacy block (`QK4_0`, `QK4_1`, `QK5_0`, `QK5_1`, `QK8_0`).
pub(crate) const QK: usize = 32;
/// Elements of a K-quant super-block (`QK_K`).
pub(crate) const QK_K: usize = 256;

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
