//! Matrix-product kernels, one file per family; [`crate::matmul`] picks the kernel of each
//! product and nothing else.
//!
//! * [`legacy`]: Q4_0, Q4_1, Q5_0, Q8_0 weights as ggml-cpu's integer dot products;
//! * [`iquant`]: the codebook i-quants (IQ1_S, IQ1_M, IQ2_XXS/XS/S, IQ3_XXS/S) as ggml-cpu's
//!   integer dot products;
//! * [`kquant`]: Q4_K (repacked), Q6_K, Q2_K (repacked on AVX-512), Q3_K and Q5_K weights as
//!   ggml-cpu's integer dot products;
//! * [`iq4`]: IQ4_XS (through `kquant`'s lanes) and IQ4_NL (repacked) weights;
//! * [`ternary`]: TQ1_0 and TQ2_0 (through `kquant`'s lanes);
//! * [`float`]: any other weight type (and the exact numerics): dequantized rows times
//!   activations rounded to the weight's dot type;
//! * [`expert`]: the expert products ggml-cpu's `mul_mat_id` computes differently from
//!   `mul_mat` (repacked Q4_K and Q2_K weights: the gemv for every routed row);
//! * [`layout`]: where the fields of the blocks read directly sit;
//! * `tiled`: the tiling skeleton of the integer kernels.

pub(crate) mod expert;
pub(crate) mod float;
pub(crate) mod iq4;
pub(crate) mod iquant;
pub(crate) mod kquant;
pub(crate) mod layout;
pub(crate) mod legacy;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod panel;
pub(crate) mod ternary;
mod tiled;

/// FNV-1a over the bits of `values`: a stored digest of a kernel's results checks the kernel on
/// machines that cannot run the form it is compared with.
#[cfg(test)]
pub(crate) fn bits_digest(values: &[f32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        v.to_bits()
            .to_le_bytes()
            .iter()
            .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    })
}

/// Deterministic pseudo-random inputs for the kernels' unit tests (xorshift bytes, and
/// activations spread around zero from them).
#[cfg(test)]
pub(crate) mod test_data {
    pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    pub(crate) fn acts(n: usize, seed: u64) -> Vec<f32> {
        bytes(n, seed)
            .iter()
            .map(|&b| (b as f32 - 127.5) / 31.0)
            .collect()
    }
}
