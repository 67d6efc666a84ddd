//! The codebook i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) times Q8_K
//! activations as ggml-cpu computes them (`ggml_vec_dot_iq*_q8_K`).
//!
//! A weight row is decoded once per tile into signed 8-bit values (grid magnitude times sign,
//! or IQ1's signed grid values), an integer multiplier per 16 values (`2s + 1`) and the f16
//! scale. Per super-block the products are exact integers that ggml's AVX2 code keeps in eight
//! 32-bit lanes (lane `l` holds elements `4l..4l+3` of every 32-element group, times that
//! group half's multiplier); then `acc[l] = fma(d_w * d_a, lane[l], acc[l])` over the
//! super-blocks and `hsum_float_8(acc)` times the factor the grids leave out (1/8 for IQ2,
//! 1/4 for IQ3_XXS). IQ1_S adds `1/8 * sum(fma(d, delta_sum))` (its ±1/8 shifts through Q8_K's
//! 16-element sums), IQ1_M a second lane set for its shifts. ggml builds without AVX
//! (`Flavor::Sse2`, `Flavor::Scalar`) take the generic order instead: one integer per
//! super-block and `sumf += d * sum`. Only the float steps' order matters: integer sums are
//! exact in any order.

use dynquant_gguf::GgmlType;
use dynquant_quants::iq::grids::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID,
};
use dynquant_quants::iq::layout::{iq1m, iq1s, iq2s, iq2xs, iq2xxs, iq3s, iq3xxs};
use half::f16;

use super::kquant::{quantize_q8k_impl, Q8K};
use super::layout::QK_K;
use crate::reduce::hsum_float_8;
use crate::weight::Weight;

/// The weight types of this kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IqType {
    Iq2Xxs,
    Iq2Xs,
    Iq2S,
    Iq3Xxs,
    Iq3S,
    Iq1S,
    Iq1M,
}

impl IqType {
    /// The family member of a weight type, `None` for types of other families.
    pub(crate) fn of(ty: GgmlType) -> Option<IqType> {
        Some(match ty {
            GgmlType::IQ2_XXS => IqType::Iq2Xxs,
            GgmlType::IQ2_XS => IqType::Iq2Xs,
            GgmlType::IQ2_S => IqType::Iq2S,
            GgmlType::IQ3_XXS => IqType::Iq3Xxs,
            GgmlType::IQ3_S => IqType::Iq3S,
            GgmlType::IQ1_S => IqType::Iq1S,
            GgmlType::IQ1_M => IqType::Iq1M,
            _ => return None,
        })
    }

    fn ggml(self) -> GgmlType {
        match self {
            IqType::Iq2Xxs => GgmlType::IQ2_XXS,
            IqType::Iq2Xs => GgmlType::IQ2_XS,
            IqType::Iq2S => GgmlType::IQ2_S,
            IqType::Iq3Xxs => GgmlType::IQ3_XXS,
            IqType::Iq3S => GgmlType::IQ3_S,
            IqType::Iq1S => GgmlType::IQ1_S,
            IqType::Iq1M => GgmlType::IQ1_M,
        }
    }

    /// The factor ggml applies to the final sum: the part of the sub-block scales
    /// (`d * (0.5 + s) * 0.25 = d * (2s + 1) / 8`) the integer multipliers leave out.
    fn factor(self) -> f32 {
        match self {
            IqType::Iq2Xxs | IqType::Iq2Xs | IqType::Iq2S => 0.125,
            IqType::Iq3Xxs => 0.25,
            IqType::Iq3S | IqType::Iq1S | IqType::Iq1M => 1.0,
        }
    }

    /// The type of a const-generic code (`code as u8` of the variant), for kernels specialized
    /// per type.
    #[inline(always)]
    fn from_code(code: u8) -> IqType {
        match code {
            0 => IqType::Iq2Xxs,
            1 => IqType::Iq2Xs,
            2 => IqType::Iq2S,
            3 => IqType::Iq3Xxs,
            4 => IqType::Iq3S,
            5 => IqType::Iq1S,
            _ => IqType::Iq1M,
        }
    }

    /// Decoded blocks per stored super-block (IQ1_M: its values, then its ±1 shift signs).
    fn parts(self) -> usize {
        if self == IqType::Iq1M {
            2
        } else {
            1
        }
    }
}

/// IQ1's grid shift (`IQ1S_DELTA`, `IQ1M_DELTA`).
const IQ1_DELTA: f32 = 0.125;

/// One super-block of an i-quant weight in integer form.
#[derive(Clone)]
pub(crate) struct IqBlock {
    /// The f16 scale (IQ1_M: the super-scale gathered from its scale words).
    d: f32,
    /// Integer multiplier of each 16 values.
    sc: [i16; 16],
    /// IQ1_S: multiplier times shift sign (±1) of each 32 values, for the Q8_K sums.
    bias: [i16; 8],
    /// Signed values in element order (IQ1_M's second part: the ±1 shift signs).
    q: [i8; QK_K],
    /// The values the serial order sums: `q`, or for IQ1 `8q` plus the shift's sign, so one
    /// integer pass gives `8 * sum + shift` (the float step scales it by the exact 1/8).
    serial_q: [i8; QK_K],
    /// `128 * sum(multiplier * serial_q)`: what the activations' +128 offset adds to the serial
    /// sum (the VNNI kernel multiplies unsigned activations).
    offset_sum: i32,
}

impl IqBlock {
    fn new(d: f32) -> IqBlock {
        IqBlock {
            d,
            sc: [0; 16],
            bias: [0; 8],
            q: [0; QK_K],
            serial_q: [0; QK_K],
            offset_sum: 0,
        }
    }

    /// Fills `serial_q` and `offset_sum` from `q`, the multipliers and, for IQ1, the shift
    /// sign of each 8 values.
    fn set_serial(&mut self, shift8: &[i8; 32]) {
        let mut offset = 0;
        for (g, &shift) in shift8.iter().enumerate() {
            let mut sum = 0i32;
            for e in 8 * g..8 * g + 8 {
                let v = 8 * self.q[e] + shift;
                self.serial_q[e] = v;
                sum += i32::from(v);
            }
            offset += i32::from(self.sc[g / 2]) * sum;
        }
        self.offset_sum = 128 * offset;
    }

    /// The same multiplier for both halves of 32-value sub-block `ib`.
    fn set_scale(&mut self, ib: usize, lo: u32, hi: u32) {
        self.sc[2 * ib] = (2 * lo + 1) as i16;
        self.sc[2 * ib + 1] = (2 * hi + 1) as i16;
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16_at(b, at)).to_f32()
}

/// The 8 signs of a 7-bit pattern (`ksigns_iq2xs`: the eighth makes the count of minus signs
/// even).
fn signs7(pattern: u32) -> u8 {
    let p = (pattern & 127) as u8;
    p | (((p.count_ones() & 1) as u8) << 7)
}

/// Per sign byte, the word whose byte `j` is 0xff where bit `j` is set.
const SIGN_MASKS: [u64; 256] = {
    let mut masks = [0u64; 256];
    let mut s = 0;
    while s < 256 {
        let mut j = 0;
        while j < 8 {
            if s >> j & 1 != 0 {
                masks[s] |= 0xff << (8 * j);
            }
            j += 1;
        }
        s += 1;
    }
    masks
};

/// Writes 8 values: byte `j` of `grid` is the magnitude of value `j`, bit `j` of `signs` makes
/// it negative. Eight bytes at a time in a u64: `(m ^ mask) - mask` per byte (-m where the mask
/// is 0xff), the byte-wise subtraction done without borrows crossing bytes.
#[inline(always)]
fn put_signed(out: &mut [i8], grid: u64, signs: u8) {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mask = SIGN_MASKS[usize::from(signs)];
    let x = grid ^ mask;
    let v = ((x | HIGH) - (mask & !HIGH)) ^ ((x ^ !mask) & HIGH);
    put_iq1(out, v);
}

/// Writes 8 of IQ1's signed grid values (byte `j` of `grid` is value `j`).
#[inline(always)]
fn put_iq1(out: &mut [i8], grid: u64) {
    for (o, b) in out[..8].iter_mut().zip(grid.to_le_bytes()) {
        *o = b as i8;
    }
}

/// Two 4-value grid entries as one 8-value entry (first in the low half).
fn join4(first: u32, second: u32) -> u64 {
    u64::from(first) | (u64::from(second) << 32)
}

/// Integer form of a row of `ty` (block layouts in `dynquant_quants::iq::layout`).
pub(crate) fn decode(ty: IqType, row: &[u8]) -> Vec<IqBlock> {
    let size = ty.ggml().type_size() as usize;
    let mut out = Vec::with_capacity(row.len() / size * ty.parts());
    for b in row.chunks_exact(size) {
        match ty {
            IqType::Iq2Xxs => {
                let mut blk = IqBlock::new(f16_at(b, iq2xxs::D));
                for ib in 0..8 {
                    let at = iq2xxs::QS + 8 * ib;
                    let aux = u32_at(b, at + 4);
                    blk.set_scale(ib, aux >> 28, aux >> 28);
                    for l in 0..4 {
                        let grid = IQ2XXS_GRID[usize::from(b[at + l])];
                        put_signed(&mut blk.q[32 * ib + 8 * l..], grid, signs7(aux >> (7 * l)));
                    }
                }
                out.push(blk);
            }
            IqType::Iq2Xs => {
                let mut blk = IqBlock::new(f16_at(b, iq2xs::D));
                for ib in 0..8 {
                    let s = u32::from(b[iq2xs::SCALES + ib]);
                    blk.set_scale(ib, s & 15, s >> 4);
                    for l in 0..4 {
                        let q = u16_at(b, iq2xs::QS + 2 * (4 * ib + l));
                        let grid = IQ2XS_GRID[usize::from(q & 511)];
                        let signs = signs7(u32::from(q >> 9));
                        put_signed(&mut blk.q[32 * ib + 8 * l..], grid, signs);
                    }
                }
                out.push(blk);
            }
            IqType::Iq2S => {
                let mut blk = IqBlock::new(f16_at(b, iq2s::D));
                for ib in 0..8 {
                    let s = u32::from(b[iq2s::SCALES + ib]);
                    blk.set_scale(ib, s & 15, s >> 4);
                    let qh = usize::from(b[iq2s::QH + ib]);
                    for l in 0..4 {
                        let g = 4 * ib + l;
                        let index = usize::from(b[iq2s::QS + g]) | (((qh >> (2 * l)) & 3) << 8);
                        let signs = b[iq2s::SIGNS + g];
                        put_signed(&mut blk.q[8 * g..], IQ2S_GRID[index], signs);
                    }
                }
                out.push(blk);
            }
            IqType::Iq3Xxs => {
                let mut blk = IqBlock::new(f16_at(b, iq3xxs::D));
                for ib in 0..8 {
                    let aux = u32_at(b, iq3xxs::SCALES_SIGNS + 4 * ib);
                    blk.set_scale(ib, aux >> 28, aux >> 28);
                    let qs = &b[iq3xxs::QS + 8 * ib..][..8];
                    for l in 0..4 {
                        let first = IQ3XXS_GRID[usize::from(qs[2 * l])];
                        let second = IQ3XXS_GRID[usize::from(qs[2 * l + 1])];
                        let signs = signs7(aux >> (7 * l));
                        put_signed(&mut blk.q[32 * ib + 8 * l..], join4(first, second), signs);
                    }
                }
                out.push(blk);
            }
            IqType::Iq3S => {
                let mut blk = IqBlock::new(f16_at(b, iq3s::D));
                for ib in 0..8 {
                    let s = u32::from((b[iq3s::SCALES + ib / 2] >> (4 * (ib % 2))) & 15);
                    blk.set_scale(ib, s, s);
                    // group of 4 number k takes its ninth index bit from bit k of qh
                    let qh = usize::from(b[iq3s::QH + ib]);
                    let index =
                        |k: usize| usize::from(b[iq3s::QS + 8 * ib + k]) | (((qh >> k) & 1) << 8);
                    for l in 0..4 {
                        let grid = join4(IQ3S_GRID[index(2 * l)], IQ3S_GRID[index(2 * l + 1)]);
                        let signs = b[iq3s::SIGNS + 4 * ib + l];
                        put_signed(&mut blk.q[32 * ib + 8 * l..], grid, signs);
                    }
                }
                out.push(blk);
            }
            IqType::Iq1S => {
                let mut blk = IqBlock::new(f16_at(b, iq1s::D));
                for ib in 0..8 {
                    let qh = u16_at(b, iq1s::QH + 2 * ib);
                    let ls = u32::from((qh >> 12) & 7);
                    blk.set_scale(ib, ls, ls);
                    let sign = if qh & 0x8000 != 0 { -1 } else { 1 };
                    blk.bias[ib] = sign * (2 * ls as i16 + 1);
                    for l in 0..4 {
                        let high = usize::from((qh >> (3 * l)) & 7);
                        let index = usize::from(b[iq1s::QS + 4 * ib + l]) | (high << 8);
                        put_iq1(&mut blk.q[32 * ib + 8 * l..], IQ1S_GRID[index]);
                    }
                }
                out.push(blk);
            }
            IqType::Iq1M => {
                let sc: [u16; 4] = std::array::from_fn(|i| u16_at(b, iq1m::SCALES + 2 * i));
                let d = (sc[0] >> 12)
                    | ((sc[1] >> 8) & 0x00f0)
                    | ((sc[2] >> 4) & 0x0f00)
                    | (sc[3] & 0xf000);
                let mut blk = IqBlock::new(f16::from_bits(d).to_f32());
                let mut shift = IqBlock::new(blk.d);
                let mut shift8 = [0i8; 32];
                for ib in 0..8 {
                    // two 3-bit multipliers per sub-block (values 0-15, then 16-31)
                    let s = u32::from(sc[ib / 2] >> (6 * (ib % 2)));
                    blk.set_scale(ib, s & 7, (s >> 3) & 7);
                    for l in 0..4 {
                        // group l's nibble: 3 high index bits, then the shift's sign
                        let nib = b[iq1m::QH + 2 * ib + l / 2] >> (4 * (l % 2));
                        let index =
                            usize::from(b[iq1m::QS + 4 * ib + l]) | (usize::from(nib & 7) << 8);
                        let at = 32 * ib + 8 * l;
                        put_iq1(&mut blk.q[at..], IQ1S_GRID[index]);
                        shift8[4 * ib + l] = if nib & 8 != 0 { -1 } else { 1 };
                        shift.q[at..at + 8].fill(shift8[4 * ib + l]);
                    }
                }
                shift.sc = blk.sc;
                blk.set_serial(&shift8);
                out.push(blk);
                out.push(shift);
            }
        }
        if !matches!(ty, IqType::Iq1M) {
            let blk = out.last_mut().expect("pushed above");
            match ty {
                IqType::Iq1S => {
                    let shift8 = std::array::from_fn(|g| blk.bias[g / 4].signum() as i8);
                    blk.set_serial(&shift8);
                }
                _ => {
                    blk.serial_q = blk.q;
                    blk.offset_sum = 128
                        * (0..QK_K)
                            .map(|e| i32::from(blk.sc[e / 16]) * i32::from(blk.q[e]))
                            .sum::<i32>();
                }
            }
        }
    }
    out
}

/// The eight lane sums of one super-block: lane `l` holds elements `4l..4l+3` of every
/// 32-element group times the multiplier of that group half.
#[inline(always)]
fn lanes(w: &IqBlock, a: &[i8; QK_K]) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for g in 0..8 {
        for (l, lane) in lanes.iter_mut().enumerate() {
            let at = 32 * g + 4 * l;
            let p: i32 = (at..at + 4).map(|e| w.q[e] as i32 * a[e] as i32).sum();
            *lane += w.sc[2 * g + l / 4] as i32 * p;
        }
    }
    lanes
}

/// IQ1_S's shift sum of one super-block: multiplier times sign times the activations' sum,
/// per 32 values.
#[inline(always)]
fn shift_sum(w: &IqBlock, a: &Q8K) -> i32 {
    // a plain loop: an iterator's closures would not inherit the caller's target features
    let mut s = 0;
    for g in 0..8 {
        s += w.bias[g] as i32 * (a.bsums[2 * g] + a.bsums[2 * g + 1]);
    }
    s
}

/// The float order of ggml's i-quant products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// The AVX2 kernels: eight lanes, `acc[l] = fma(d, lane[l], acc[l])`, `hsum_float_8`.
    Lanes,
    /// One integer per super-block and `sumf += d * sum` (the generic kernels' order; `fused`
    /// when the build contracts it to one `fma`).
    Serial {
        /// Whether `sumf + d * sum` is one fused multiply-add.
        fused: bool,
    },
}

/// The order ggml's build of the reproduced flavour uses for `rows` weight rows times `n_tok`
/// tokens. The AVX builds switch to the serial, fused order for products of at least 8 tokens
/// with weights of a multiple of 8 rows (one output per SIMD lane); that rule is measured
/// against libggml-cpu's zen4 and haswell variants (tests/ggml_ops.rs, `matmuls_iquants`).
fn form(rows: usize, n_tok: usize) -> Form {
    match crate::cpu::flavor() {
        crate::cpu::Flavor::Avx512 | crate::cpu::Flavor::Avx2 => {
            if n_tok >= 8 && rows.is_multiple_of(8) {
                Form::Serial { fused: true }
            } else {
                Form::Lanes
            }
        }
        // builds without AVX have no FMA
        _ => Form::Serial { fused: false },
    }
}

/// `a * b + c`, fused or not.
#[inline(always)]
fn madd(fused: bool, a: f32, b: f32, c: f32) -> f32 {
    if fused {
        a.mul_add(b, c)
    } else {
        c + a * b
    }
}

/// One row times one token in portable code, in the float order `form`.
#[inline(always)]
pub(crate) fn dot(ty: IqType, w: &[IqBlock], a: &[Q8K], form: Form) -> f32 {
    let parts = ty.parts();
    match form {
        Form::Lanes => {
            let mut acc = [0f32; 8];
            let mut acc2 = [0f32; 8];
            let mut shifts = 0f32;
            for (wb, ab) in w.chunks_exact(parts).zip(a) {
                let d = wb[0].d * ab.d;
                let l = lanes(&wb[0], &ab.q);
                for (acc, &l) in acc.iter_mut().zip(&l) {
                    *acc = d.mul_add(l as f32, *acc);
                }
                match ty {
                    IqType::Iq1S => shifts = d.mul_add(shift_sum(&wb[0], ab) as f32, shifts),
                    IqType::Iq1M => {
                        let l2 = lanes(&wb[1], &ab.q);
                        for (acc, &l) in acc2.iter_mut().zip(&l2) {
                            *acc = d.mul_add(l as f32, *acc);
                        }
                    }
                    _ => {}
                }
            }
            match ty {
                IqType::Iq1S => hsum_float_8(&acc) + IQ1_DELTA * shifts,
                IqType::Iq1M => hsum_float_8(&acc) + IQ1_DELTA * hsum_float_8(&acc2),
                _ => ty.factor() * hsum_float_8(&acc),
            }
        }
        Form::Serial { fused } => {
            let mut sumf = 0f32;
            for (wb, ab) in w.chunks_exact(parts).zip(a) {
                let d = wb[0].d * ab.d;
                let sum: i32 = lanes(&wb[0], &ab.q).iter().sum();
                let shift = match ty {
                    IqType::Iq1S => shift_sum(&wb[0], ab),
                    IqType::Iq1M => lanes(&wb[1], &ab.q).iter().sum(),
                    _ => 0,
                };
                sumf = serial_step(ty, fused, d, sum, shift, sumf);
            }
            ty.factor() * sumf
        }
    }
}

/// One super-block of the serial order: `sumf + d * sum` (IQ1: `d * (sum + shift / 8)`).
#[inline(always)]
fn serial_step(ty: IqType, fused: bool, d: f32, sum: i32, shift: i32, sumf: f32) -> f32 {
    match ty {
        // the shift's 1/8 is exact, so `sum + shift / 8` rounds once, contracted or not
        IqType::Iq1S | IqType::Iq1M => madd(fused, d, sum as f32 + IQ1_DELTA * shift as f32, sumf),
        _ => madd(fused, d, sum as f32, sumf),
    }
}

fma_variant!(quantize_q8k, quantize_q8k_impl, (x: &[f32]) -> Vec<Q8K>);

/// One token's activations: Q8_K blocks and, for the VNNI kernel, their values plus 128 as
/// unsigned bytes (`vpmaddubsw` multiplies an unsigned operand).
pub(crate) struct IqActs {
    q8k: Vec<Q8K>,
    unsigned: Vec<[u8; QK_K]>,
}

impl IqActs {
    fn new(q8k: Vec<Q8K>, unsigned: bool) -> IqActs {
        let unsigned = if unsigned {
            q8k.iter().map(|b| b.q.map(|v| (v as u8) ^ 0x80)).collect()
        } else {
            Vec::new()
        };
        IqActs { q8k, unsigned }
    }
}

/// Products of an i-quant weight with `n_tok` rows of activations (tokens x rows result).
pub(crate) fn matmul(ty: IqType, w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    let form = form(w.rows, n_tok);
    #[cfg(target_arch = "x86_64")]
    let vnni = crate::cpu::vnni256() && matches!(form, Form::Serial { .. });
    #[cfg(not(target_arch = "x86_64"))]
    let vnni = false;
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        |x| IqActs::new(quantize_q8k(x), vnni),
        |row| decode(ty, row),
        |rows, acts, n_tok, out| {
            #[cfg(target_arch = "x86_64")]
            if vnni {
                // SAFETY: `cpu::vnni256` detected AVX2, FMA and AVX-512 VNNI/VL at runtime, and
                // the activations carry their unsigned bytes.
                unsafe { avx2::tile_vnni(ty, rows, acts, form, out) };
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if crate::cpu::simd() {
                // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
                unsafe { avx2::tile(ty, rows, acts, form, out) };
                return;
            }
            for (t, a) in acts.iter().enumerate() {
                for (i, wr) in rows.iter().enumerate() {
                    out[i * n_tok + t] = dot(ty, wr, &a.q8k, form);
                }
            }
        },
    )
}

/// AVX2 form of [`dot`]'s vector order, four tokens per pass over a weight row: the integer
/// sums with `maddubs`/`madd` (exact, so their order is free), every float step as the
/// portable form.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{serial_step, shift_sum, Form, IqActs, IqBlock, IqType, IQ1_DELTA, Q8K};
    use crate::reduce::hsum_float_8;

    #[inline(always)]
    unsafe fn load(p: *const i8) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), v);
        hsum_float_8(&l)
    }

    /// The lane sums of block `w` with `N` tokens' activations.
    #[inline(always)]
    unsafe fn lanes<const N: usize>(w: &IqBlock, a: [&[i8; 256]; N]) -> [__m256i; N] {
        values_lanes(&w.q, &w.sc, a)
    }

    /// The multiplier of each 16 values as eight i16 lanes each, for the two halves of
    /// 32-value group `g`.
    #[inline(always)]
    unsafe fn group_scales(sc: &[i16; 16], g: usize) -> __m256i {
        _mm256_set_m128i(_mm_set1_epi16(sc[2 * g + 1]), _mm_set1_epi16(sc[2 * g]))
    }

    /// The lane sums of values `q` with multipliers `sc` and `N` tokens' activations.
    #[inline(always)]
    unsafe fn values_lanes<const N: usize>(
        q: &[i8; 256],
        sc: &[i16; 16],
        a: [&[i8; 256]; N],
    ) -> [__m256i; N] {
        let mut sums = [_mm256_setzero_si256(); N];
        for g in 0..8 {
            let wv = load(q.as_ptr().add(32 * g));
            let aw = _mm256_sign_epi8(wv, wv);
            let sc = group_scales(sc, g);
            for (s, a) in sums.iter_mut().zip(a) {
                let av = _mm256_sign_epi8(load(a.as_ptr().add(32 * g)), wv);
                let p = _mm256_maddubs_epi16(aw, av);
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, sc));
            }
        }
        sums
    }

    /// Sum of the eight i32 lanes.
    #[inline(always)]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// [`super::dot`] in the serial order, of row `w` with `N` tokens.
    #[inline(always)]
    unsafe fn serial_dots<const N: usize>(
        ty: IqType,
        fused: bool,
        w: &[IqBlock],
        a: [&[Q8K]; N],
    ) -> [f32; N] {
        let parts = ty.parts();
        let mut sumf = [0f32; N];
        for (bi, wb) in w.chunks_exact(parts).enumerate() {
            let qs: [&[i8; 256]; N] = std::array::from_fn(|k| &a[k][bi].q);
            let sums = lanes(&wb[0], qs);
            let sums2 = if parts == 2 {
                lanes(&wb[1], qs)
            } else {
                [_mm256_setzero_si256(); N]
            };
            for k in 0..N {
                let ab = &a[k][bi];
                let shift = match ty {
                    IqType::Iq1S => shift_sum(&wb[0], ab),
                    IqType::Iq1M => hsum_i32(sums2[k]),
                    _ => 0,
                };
                let d = wb[0].d * ab.d;
                sumf[k] = serial_step(ty, fused, d, hsum_i32(sums[k]), shift, sumf[k]);
            }
        }
        sumf.map(|s| ty.factor() * s)
    }

    /// [`super::dot`] in `form`, of row `w` with `N` tokens.
    #[inline(always)]
    unsafe fn dots<const N: usize>(
        ty: IqType,
        w: &[IqBlock],
        a: [&[Q8K]; N],
        form: Form,
    ) -> [f32; N] {
        match form {
            Form::Lanes => lane_dots(ty, w, a),
            Form::Serial { fused } => serial_dots(ty, fused, w, a),
        }
    }

    /// [`super::dot`] in the lane order, of row `w` with `N` tokens.
    #[inline(always)]
    unsafe fn lane_dots<const N: usize>(ty: IqType, w: &[IqBlock], a: [&[Q8K]; N]) -> [f32; N] {
        let parts = ty.parts();
        let mut acc = [_mm256_setzero_ps(); N];
        let mut acc2 = [_mm256_setzero_ps(); N];
        let mut shifts = [0f32; N];
        for (bi, wb) in w.chunks_exact(parts).enumerate() {
            let qs: [&[i8; 256]; N] = std::array::from_fn(|k| &a[k][bi].q);
            let sums = lanes(&wb[0], qs);
            let sums2 = if parts == 2 {
                lanes(&wb[1], qs)
            } else {
                [_mm256_setzero_si256(); N]
            };
            for k in 0..N {
                let ab = &a[k][bi];
                let d = wb[0].d * ab.d;
                let dv = _mm256_set1_ps(d);
                acc[k] = _mm256_fmadd_ps(dv, _mm256_cvtepi32_ps(sums[k]), acc[k]);
                match ty {
                    IqType::Iq1S => shifts[k] = d.mul_add(shift_sum(&wb[0], ab) as f32, shifts[k]),
                    IqType::Iq1M => {
                        acc2[k] = _mm256_fmadd_ps(dv, _mm256_cvtepi32_ps(sums2[k]), acc2[k])
                    }
                    _ => {}
                }
            }
        }
        std::array::from_fn(|k| match ty {
            IqType::Iq1S => hsum(acc[k]) + IQ1_DELTA * shifts[k],
            IqType::Iq1M => hsum(acc[k]) + IQ1_DELTA * hsum(acc2[k]),
            _ => ty.factor() * hsum(acc[k]),
        })
    }

    /// [`super::dot`] of one row and one token.
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(ty: IqType, w: &[IqBlock], a: &[Q8K], form: Form) -> f32 {
        dots::<1>(ty, w, [a], form)[0]
    }

    /// Serial-order sums of block `w` with four tokens' unsigned activations (`a + 128`):
    /// `vpmaddubsw` then `vpdpwssd` with the multipliers, minus the offset's share.
    #[inline(always)]
    unsafe fn serial_sums4_vnni(w: &IqBlock, au: [&[u8; 256]; 4]) -> __m128i {
        let mut sums = [_mm256_setzero_si256(); 4];
        for g in 0..8 {
            let wv = load(w.serial_q.as_ptr().add(32 * g));
            let sc = group_scales(&w.sc, g);
            for (s, a) in sums.iter_mut().zip(au) {
                let p = _mm256_maddubs_epi16(load(a.as_ptr().add(32 * g).cast()), wv);
                *s = _mm256_dpwssd_epi32(*s, p, sc);
            }
        }
        _mm_sub_epi32(hsum4(sums), _mm_set1_epi32(w.offset_sum))
    }

    /// [`serial_sums4_vnni`] of eight tokens.
    #[inline(always)]
    unsafe fn serial_sums8_vnni(w: &IqBlock, au: [&[u8; 256]; 8]) -> __m256i {
        let mut sums = [_mm256_setzero_si256(); 8];
        for g in 0..8 {
            let wv = load(w.serial_q.as_ptr().add(32 * g));
            let sc = group_scales(&w.sc, g);
            for (s, a) in sums.iter_mut().zip(au) {
                let p = _mm256_maddubs_epi16(load(a.as_ptr().add(32 * g).cast()), wv);
                *s = _mm256_dpwssd_epi32(*s, p, sc);
            }
        }
        _mm256_sub_epi32(
            crate::kernels::kquant::hsum8_i32(&sums),
            _mm256_set1_epi32(w.offset_sum),
        )
    }

    /// [`serial4`] of eight tokens with VNNI (the caller enables AVX-512 VNNI/VL): lane `k` of
    /// every vector is token `k`'s scalar steps.
    #[inline(always)]
    unsafe fn serial8_vnni<const T: u8, const FUSED: bool>(
        w: &[IqBlock],
        a: [&IqActs; 8],
    ) -> [f32; 8] {
        let ty = IqType::from_code(T);
        let parts = ty.parts();
        let iq1 = matches!(ty, IqType::Iq1S | IqType::Iq1M);
        let mut sumf = _mm256_setzero_ps();
        for (bi, wb) in w.chunks_exact(parts).enumerate() {
            let isum = serial_sums8_vnni(&wb[0], std::array::from_fn(|k| &a[k].unsigned[bi]));
            let mut sum = _mm256_cvtepi32_ps(isum);
            if iq1 {
                sum = _mm256_mul_ps(_mm256_set1_ps(IQ1_DELTA), sum);
            }
            let ad: [f32; 8] = std::array::from_fn(|k| a[k].q8k[bi].d);
            let d = _mm256_mul_ps(_mm256_set1_ps(wb[0].d), _mm256_loadu_ps(ad.as_ptr()));
            sumf = if FUSED {
                _mm256_fmadd_ps(d, sum, sumf)
            } else {
                _mm256_add_ps(sumf, _mm256_mul_ps(d, sum))
            };
        }
        let mut r = [0f32; 8];
        _mm256_storeu_ps(
            r.as_mut_ptr(),
            _mm256_mul_ps(_mm256_set1_ps(ty.factor()), sumf),
        );
        r
    }

    /// [`super::dot`] in the serial order of row `w` with four tokens, specialized for the type
    /// of code `T`: one integer pass over `serial_q` per super-block (for IQ1 `8 * sum +
    /// shift`, scaled by the exact 1/8: the same float as `sum + shift / 8`, both exact below
    /// 2^24), the four tokens' block sums reduced together, and their float steps as one
    /// 4-lane vector (each lane the scalar steps: same bits). `VNNI`: the integer pass of
    /// [`serial_sums4_vnni`] (the caller enables AVX-512 VNNI/VL).
    #[inline(always)]
    unsafe fn serial4<const T: u8, const FUSED: bool, const VNNI: bool>(
        w: &[IqBlock],
        a: [&IqActs; 4],
    ) -> [f32; 4] {
        let ty = IqType::from_code(T);
        let parts = ty.parts();
        let iq1 = matches!(ty, IqType::Iq1S | IqType::Iq1M);
        let mut sumf = _mm_setzero_ps();
        for (bi, wb) in w.chunks_exact(parts).enumerate() {
            let isum = if VNNI {
                serial_sums4_vnni(&wb[0], std::array::from_fn(|k| &a[k].unsigned[bi]))
            } else {
                let qs: [&[i8; 256]; 4] = std::array::from_fn(|k| &a[k].q8k[bi].q);
                hsum4(values_lanes(&wb[0].serial_q, &wb[0].sc, qs))
            };
            let mut sum = _mm_cvtepi32_ps(isum);
            if iq1 {
                sum = _mm_mul_ps(_mm_set1_ps(IQ1_DELTA), sum);
            }
            let ad = _mm_setr_ps(
                a[0].q8k[bi].d,
                a[1].q8k[bi].d,
                a[2].q8k[bi].d,
                a[3].q8k[bi].d,
            );
            let d = _mm_mul_ps(_mm_set1_ps(wb[0].d), ad);
            sumf = if FUSED {
                _mm_fmadd_ps(d, sum, sumf)
            } else {
                _mm_add_ps(sumf, _mm_mul_ps(d, sum))
            };
        }
        let mut r = [0f32; 4];
        _mm_storeu_ps(r.as_mut_ptr(), _mm_mul_ps(_mm_set1_ps(ty.factor()), sumf));
        r
    }

    /// The sums of the lanes of four vectors.
    #[inline(always)]
    unsafe fn hsum4(s: [__m256i; 4]) -> __m128i {
        let t01 = _mm256_hadd_epi32(s[0], s[1]);
        let t23 = _mm256_hadd_epi32(s[2], s[3]);
        let t = _mm256_hadd_epi32(t01, t23);
        _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1))
    }

    /// A tile's results: `out[i * n_tok + t]` for rows `i` and tokens `t`. Tokens go four at
    /// a time through all the tile's rows, so their activations and the decoded rows stay in
    /// the L1/L2 caches.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        ty: IqType,
        rows: &[Vec<IqBlock>],
        acts: &[IqActs],
        form: Form,
        out: &mut [f32],
    ) {
        by_form::<false>(ty, rows, acts, form, out)
    }

    /// [`tile`] with the serial order's integer pass in AVX-512 VNNI (the activations carry
    /// their unsigned bytes).
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub(super) unsafe fn tile_vnni(
        ty: IqType,
        rows: &[Vec<IqBlock>],
        acts: &[IqActs],
        form: Form,
        out: &mut [f32],
    ) {
        by_form::<true>(ty, rows, acts, form, out)
    }

    #[inline(always)]
    unsafe fn by_form<const VNNI: bool>(
        ty: IqType,
        rows: &[Vec<IqBlock>],
        acts: &[IqActs],
        form: Form,
        out: &mut [f32],
    ) {
        macro_rules! by_type {
            ($f:ident, $fused:literal) => {
                match ty {
                    IqType::Iq2Xxs => $f::<0, $fused, VNNI>(rows, acts, out),
                    IqType::Iq2Xs => $f::<1, $fused, VNNI>(rows, acts, out),
                    IqType::Iq2S => $f::<2, $fused, VNNI>(rows, acts, out),
                    IqType::Iq3Xxs => $f::<3, $fused, VNNI>(rows, acts, out),
                    IqType::Iq3S => $f::<4, $fused, VNNI>(rows, acts, out),
                    IqType::Iq1S => $f::<5, $fused, VNNI>(rows, acts, out),
                    IqType::Iq1M => $f::<6, $fused, VNNI>(rows, acts, out),
                }
            };
        }
        match form {
            Form::Serial { fused: true } => by_type!(serial_tile, true),
            Form::Serial { fused: false } => by_type!(serial_tile, false),
            Form::Lanes => lane_tile(ty, rows, acts, out),
        }
    }

    /// [`tile`] in the serial order for the type of code `T`.
    #[inline(always)]
    unsafe fn serial_tile<const T: u8, const FUSED: bool, const VNNI: bool>(
        rows: &[Vec<IqBlock>],
        acts: &[IqActs],
        out: &mut [f32],
    ) {
        let ty = IqType::from_code(T);
        let form = Form::Serial { fused: FUSED };
        let n_tok = acts.len();
        let mut t = 0;
        if VNNI {
            while t + 8 <= n_tok {
                let a: [&IqActs; 8] = std::array::from_fn(|k| &acts[t + k]);
                for (i, w) in rows.iter().enumerate() {
                    let r = serial8_vnni::<T, FUSED>(w, a);
                    out[i * n_tok + t..i * n_tok + t + 8].copy_from_slice(&r);
                }
                t += 8;
            }
        }
        while t + 4 <= n_tok {
            let a = [&acts[t], &acts[t + 1], &acts[t + 2], &acts[t + 3]];
            for (i, w) in rows.iter().enumerate() {
                let r = serial4::<T, FUSED, VNNI>(w, a);
                out[i * n_tok + t..i * n_tok + t + 4].copy_from_slice(&r);
            }
            t += 4;
        }
        for t in t..n_tok {
            for (i, w) in rows.iter().enumerate() {
                out[i * n_tok + t] = dots::<1>(ty, w, [&acts[t].q8k], form)[0];
            }
        }
    }

    /// [`tile`] in the lane order.
    #[inline(always)]
    unsafe fn lane_tile(ty: IqType, rows: &[Vec<IqBlock>], acts: &[IqActs], out: &mut [f32]) {
        let n_tok = acts.len();
        let mut t = 0;
        while t + 4 <= n_tok {
            let a = [
                &acts[t].q8k[..],
                &acts[t + 1].q8k,
                &acts[t + 2].q8k,
                &acts[t + 3].q8k,
            ];
            for (i, w) in rows.iter().enumerate() {
                let r = dots::<4>(ty, w, a, Form::Lanes);
                out[i * n_tok + t..i * n_tok + t + 4].copy_from_slice(&r);
            }
            t += 4;
        }
        for t in t..n_tok {
            for (i, w) in rows.iter().enumerate() {
                out[i * n_tok + t] = dots::<1>(ty, w, [&acts[t].q8k], Form::Lanes)[0];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_data::{acts, bytes};

    const TYPES: [IqType; 7] = [
        IqType::Iq2Xxs,
        IqType::Iq2Xs,
        IqType::Iq2S,
        IqType::Iq3Xxs,
        IqType::Iq3S,
        IqType::Iq1S,
        IqType::Iq1M,
    ];

    /// Random blocks with a finite f16 scale (IQ1_M: its scattered super-scale).
    fn blocks(ty: IqType, n: usize, seed: u64) -> Vec<u8> {
        let size = ty.ggml().type_size() as usize;
        let mut b = bytes(size * n, seed);
        for blk in b.chunks_exact_mut(size) {
            let d = f16::from_f32(0.001 + blk[0] as f32 * 1e-4).to_bits();
            if ty == IqType::Iq1M {
                for i in 0..4 {
                    let at = iq1m::SCALES + 2 * i + 1;
                    blk[at] = (blk[at] & 0x0f) | ((((d >> (4 * i)) & 15) as u8) << 4);
                }
            } else {
                blk[..2].copy_from_slice(&d.to_le_bytes());
            }
        }
        b
    }

    /// The decoded values times the scales equal dynquant-quants' dequantized rows (up to
    /// float rounding): the decoders read the layouts as the dequantizers do.
    #[test]
    fn decoded_values_match_the_dequantizer() {
        for ty in TYPES {
            let raw = blocks(ty, 2, 11);
            let mut deq = vec![0f32; 2 * QK_K];
            dynquant_quants::dequantize(ty.ggml(), &raw, &mut deq).unwrap();
            let dec = decode(ty, &raw);
            for (s, blocks) in dec.chunks_exact(ty.parts()).enumerate() {
                let b = &blocks[0];
                for e in 0..QK_K {
                    let m = b.d * b.sc[e / 16] as f32;
                    let mut v = m * b.q[e] as f32 * ty.factor();
                    if ty == IqType::Iq1S {
                        v += m * IQ1_DELTA * b.bias[e / 32].signum() as f32;
                    }
                    if ty == IqType::Iq1M {
                        v += m * IQ1_DELTA * blocks[1].q[e] as f32;
                    }
                    let want = deq[s * QK_K + e];
                    assert!(
                        (v - want).abs() <= want.abs() * 1e-5,
                        "{ty:?} block {s} elem {e}: {v} vs {want}"
                    );
                }
            }
        }
    }

    const FORMS: [Form; 3] = [
        Form::Lanes,
        Form::Serial { fused: true },
        Form::Serial { fused: false },
    ];

    /// Digest of the portable forms' results below, computed when the kernels were verified
    /// bit-exact against ggml (tests/ggml_ops.rs): the portable forms are checked on every
    /// machine, the AVX2 forms against them where the CPU has AVX2 and FMA.
    const PORTABLE_DIGEST: u64 = 0xa97f_6569_4256_f4a9;

    #[test]
    fn avx2_and_portable_forms_give_the_same_bits() {
        let avx2 = crate::cpu::avx2_fma_hardware();
        let mut portable = Vec::new();
        for ty in TYPES {
            for seed in 1..12u64 {
                let nb = 1 + seed as usize % 5;
                let a = quantize_q8k_impl(&acts(QK_K * nb, seed * 7));
                let w = decode(ty, &blocks(ty, nb, seed + 100));
                for form in FORMS {
                    let p = dot(ty, &w, &a, form);
                    portable.push(p);
                    #[cfg(target_arch = "x86_64")]
                    if avx2 {
                        // SAFETY: AVX2 and FMA detected above.
                        let v = unsafe { avx2::dot(ty, &w, &a, form) };
                        assert_eq!(p.to_bits(), v.to_bits(), "{ty:?} seed {seed} {form:?}");
                    }
                }
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // 13 different tokens: an eight-token pass (VNNI), a four-token pass and
                    // the single-token tail
                    let q8k: Vec<Vec<Q8K>> = (0..13u64)
                        .map(|k| quantize_q8k_impl(&acts(QK_K * nb, seed * 7 + k)))
                        .collect();
                    let tile_acts: Vec<IqActs> =
                        q8k.iter().map(|q| IqActs::new(q.clone(), true)).collect();
                    for form in FORMS {
                        let want: Vec<f32> = q8k.iter().map(|a| dot(ty, &w, a, form)).collect();
                        let mut out = vec![0f32; 13];
                        // SAFETY: as above.
                        unsafe {
                            avx2::tile(ty, std::slice::from_ref(&w), &tile_acts, form, &mut out)
                        };
                        let mut kernels = vec![("avx2", out)];
                        if crate::cpu::vnni256() {
                            let mut out = vec![0f32; 13];
                            // SAFETY: `cpu::vnni256` detected AVX-512 VNNI/VL (and AVX2, FMA).
                            unsafe {
                                avx2::tile_vnni(
                                    ty,
                                    std::slice::from_ref(&w),
                                    &tile_acts,
                                    form,
                                    &mut out,
                                )
                            };
                            kernels.push(("vnni", out));
                        }
                        for (name, out) in kernels {
                            for (k, (p, o)) in want.iter().zip(out).enumerate() {
                                assert_eq!(
                                    p.to_bits(),
                                    o.to_bits(),
                                    "{ty:?} seed {seed} {form:?} {name} tile, token {k}"
                                );
                            }
                        }
                    }
                }
            }
        }
        if !avx2 {
            eprintln!(
                "skipped: AVX2 forms of the i-quant dots not compared (this CPU lacks \
                 AVX2+FMA); the portable forms are checked against their stored digest"
            );
        }
        assert_eq!(crate::kernels::bits_digest(&portable), PORTABLE_DIGEST);
    }
}
