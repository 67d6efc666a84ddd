//! TQ1_0 and TQ2_0 weights (ternary levels {-1, 0, 1} times one f16 scale per 256 elements) as
//! ggml-cpu's x86 `vec_dot_tq{1,2}_0_q8_K` computes them: the stored digits (0, 1, 2; TQ2_0's
//! two bits may also hold 3) times the activations in the K-quants' eight lanes (lane `l`: elements
//! `4l..4l+3` of every 32-element group), minus the activations' sums of elements `32l..32l+31`
//! (the `-1` offset, taken from Q8_K's `bsums`), then one float step per lane and super-block
//! ([`super::kquant::LaneType::TQ1`]). This file only decodes the digits.

use dynquant_gguf::GgmlType;
use dynquant_quants::ternary::layout::{tq1, tq2};
use half::f16;

use super::kquant::LaneBlock;
use super::layout::QK_K;

/// The digit (0, 1 or 2) at base-3 position `n` of a TQ1_0 byte: the byte is the fraction
/// `b/256` of `3^5`, so the digit is the integer part of `3 * (b * 3^n mod 256) / 256`
/// (ggml-quants.c, `dequantize_row_tq1_0`).
fn trit(b: u8, n: u32) -> i8 {
    let q = b.wrapping_mul(3u8.pow(n));
    ((u16::from(q) * 3) >> 8) as i8
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// A ternary super-block as a [`LaneBlock`]: the digits, every scale 1, no minima.
fn lane_block(d: f32, q: [i8; QK_K]) -> LaneBlock {
    LaneBlock::new(d, 0.0, [1; 16], [0; 16], q)
}

/// Digits of a TQ1_0 row in element order: the first 32 bytes give elements `32n + m` (digit `n`
/// of byte `m`), the next 16 elements `160 + 16n + m`, the 4 `qh` bytes `240 + 4n + m`.
pub(crate) fn decode_tq1(row: &[u8]) -> Vec<LaneBlock> {
    row.chunks_exact(GgmlType::TQ1_0.type_size() as usize)
        .map(|b| {
            let mut q = [0i8; QK_K];
            for n in 0..5 {
                for m in 0..32 {
                    q[32 * n + m] = trit(b[tq1::QS + m], n as u32);
                }
                for m in 0..16 {
                    q[160 + 16 * n + m] = trit(b[tq1::QS + 32 + m], n as u32);
                }
            }
            for n in 0..4 {
                for m in 0..4 {
                    q[240 + 4 * n + m] = trit(b[tq1::QH + m], n as u32);
                }
            }
            lane_block(f16_at(b, tq1::D), q)
        })
        .collect()
}

/// Digits of a TQ2_0 row: byte `32h + m` holds element `128h + 32s + m` at bits `2s`.
pub(crate) fn decode_tq2(row: &[u8]) -> Vec<LaneBlock> {
    row.chunks_exact(GgmlType::TQ2_0.type_size() as usize)
        .map(|b| {
            let mut q = [0i8; QK_K];
            for h in 0..2 {
                for s in 0..4 {
                    for m in 0..32 {
                        q[128 * h + 32 * s + m] = ((b[tq2::QS + 32 * h + m] >> (2 * s)) & 3) as i8;
                    }
                }
            }
            lane_block(f16_at(b, tq2::D), q)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digits are the reference dequantizer's levels plus one, for every byte value.
    #[test]
    fn digits_match_the_reference_dequantizer() {
        for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
            let size = ty.type_size() as usize;
            let mut row: Vec<u8> = (0..size * 2).map(|i| (i * 37 + 11) as u8).collect();
            for b in row.chunks_exact_mut(size) {
                let at = size - 2;
                b[at..].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
            }
            let blocks = match ty {
                GgmlType::TQ1_0 => decode_tq1(&row),
                _ => decode_tq2(&row),
            };
            let mut reference = vec![0f32; QK_K * 2];
            dynquant_quants::dequantize(ty, &row, &mut reference).unwrap();
            let ours: Vec<f32> = blocks
                .iter()
                .flat_map(|b| b.q.iter().map(|&v| f32::from(v) - 1.0))
                .collect();
            assert_eq!(ours, reference, "{ty}");
        }
    }
}
