//! Horizontal sums of SIMD accumulators in the orders ggml's kernels use, so that a lane array
//! computed in scalar code reduces to the same bits as the vector register would.

/// `hsum_float_8` (ggml-cpu's AVX2 reduction of eight lanes): the high half added to the low
/// half, then lanes `0 + 2` and `1 + 3`, then those two.
#[inline(always)]
pub(crate) fn hsum_float_8(a: &[f32; 8]) -> f32 {
    let r: [f32; 4] = std::array::from_fn(|i| a[i + 4] + a[i]);
    (r[0] + r[2]) + (r[1] + r[3])
}

/// `_mm512_reduce_add_ps` as GCC expands it (ggml's AVX-512 reduction of sixteen lanes):
/// halves, quarters, then pairs.
#[inline(always)]
pub(crate) fn reduce_add_16(a: &[f32; 16]) -> f32 {
    let t3: [f32; 8] = std::array::from_fn(|i| a[8 + i] + a[i]);
    let t6: [f32; 4] = std::array::from_fn(|i| t3[4 + i] + t3[i]);
    (t6[0] + t6[2]) + (t6[1] + t6[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_orders_are_ggmls() {
        // values whose sum depends on the order: 1e8 absorbs a lone 1 but not a pair of them
        let mut a = [1f32; 8];
        a[0] = 1e8;
        a[4] = -1e8;
        // (1e8 - 1e8) + (1 + 1) + ...: exact here, while a left-to-right sum would lose the 1s
        assert_eq!(hsum_float_8(&a), 6.0);
        let b: [f32; 16] = std::array::from_fn(|i| {
            if i == 0 {
                1e8
            } else if i == 8 {
                -1e8
            } else {
                1.0
            }
        });
        assert_eq!(reduce_add_16(&b), 14.0);
        let seq: f32 = a.iter().sum();
        assert_ne!(seq, 6.0, "the test values no longer tell orders apart");
    }
}
