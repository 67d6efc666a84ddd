//! The one place that asks what the CPU can do. Two questions are kept apart:
//!
//! * **Which numerics to reproduce** ([`flavor`]): llama.cpp loads the libggml-cpu variant that
//!   fits the CPU, and the variants round differently (vector widths, ggml's vector `exp`, and
//!   whether the compiler fused `a*b + c`). `DYNQUANT_CPU_FLAVOR` (`avx512`, `avx512-nobf16`,
//!   `avx2`, `sse2`, `scalar`) names another variant, to compare with it on the same machine;
//!   every numeric choice of the engine follows this answer.
//! * **Which instructions may run** ([`simd`]): the AVX2 + FMA forms of the kernels, used only
//!   when the hardware has them and the flavour is one built with them. Each such kernel has a
//!   portable form that gives the same bits, so this answer changes speed, never results.

use std::sync::OnceLock;

/// Which of ggml's CPU builds (vector width, vector `exp`, contraction) is reproduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// AVX-512F + DQ: 16 lanes, result `scalef(poly, n)`.
    Avx512,
    /// AVX2 + FMA: 8 lanes, result `fma(k, j, k)` with special cases past |n| > 126.
    Avx2,
    /// SSE2 without FMA: 4 lanes, the AVX2 formula with separate multiply and add.
    Sse2,
    /// No vector routine: the C library's `expf` for every value.
    Scalar,
}

impl Flavor {
    /// The flavour of the libggml-cpu variant ggml would load on this CPU, or the one named by
    /// `DYNQUANT_CPU_FLAVOR` (`avx512`, `avx2`, `sse2`, `scalar`; for comparing with another
    /// libggml-cpu variant on the same machine; `avx512-nobf16` is the AVX-512 build of a CPU
    /// without AVX-512 BF16, ggml's icelake and skylakex variants). Not cached: [`flavor`] is.
    pub fn detect() -> Flavor {
        match std::env::var("DYNQUANT_CPU_FLAVOR").as_deref() {
            Ok("avx512" | "avx512-nobf16") => return Flavor::Avx512,
            Ok("avx2") => return Flavor::Avx2,
            Ok("sse2") => return Flavor::Sse2,
            Ok("scalar") => return Flavor::Scalar,
            _ => {}
        }
        let hw = hardware();
        if hw.avx512 {
            Flavor::Avx512
        } else if hw.avx2_fma {
            Flavor::Avx2
        } else if cfg!(target_arch = "x86_64") {
            Flavor::Sse2
        } else {
            Flavor::Scalar
        }
    }

    /// Vector width in f32 lanes (1 for [`Flavor::Scalar`]).
    pub fn lanes(self) -> usize {
        match self {
            Flavor::Avx512 => 16,
            Flavor::Avx2 => 8,
            Flavor::Sse2 => 4,
            Flavor::Scalar => 1,
        }
    }

    /// Whether this build has FMA, which lets the compiler contract `a*b + c` in ggml's scalar
    /// code and makes its vector kernels use fused multiply-adds.
    pub fn fused(self) -> bool {
        matches!(self, Flavor::Avx512 | Flavor::Avx2)
    }
}

/// Instruction-set extensions of the running CPU, detected once.
#[derive(Debug, Clone, Copy)]
struct Hardware {
    /// AVX2, FMA and F16C (what every fast kernel of the engine needs).
    avx2_fma: bool,
    /// AVX-512F and DQ (what ggml's AVX-512 variant needs).
    avx512: bool,
    /// AVX-512 BF16 (`vdpbf16ps`, which ggml's zen4 variant multiplies BF16 weights with).
    avx512_bf16: bool,
    /// AVX-512 VNNI on 256-bit registers (`vpdpbusd`: exact integer dot products, a speed-up
    /// only).
    vnni256: bool,
}

fn hardware() -> Hardware {
    static HW: OnceLock<Hardware> = OnceLock::new();
    *HW.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            Hardware {
                // every AVX2 CPU has F16C; the kernels round to f16 with it
                avx2_fma: has!("avx2") && has!("fma") && has!("f16c"),
                avx512: has!("avx512f") && has!("avx512dq"),
                avx512_bf16: has!("avx512f") && has!("avx512bf16"),
                vnni256: has!("avx512vnni") && has!("avx512vl"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Hardware {
            avx2_fma: false,
            avx512: false,
            avx512_bf16: false,
            vnni256: false,
        }
    })
}

/// The flavour whose numerics the engine reproduces (detected once, see [`Flavor::detect`]).
pub fn flavor() -> Flavor {
    static F: OnceLock<Flavor> = OnceLock::new();
    *F.get_or_init(Flavor::detect)
}

/// Whether `a*b + c` is fused in the reproduced numerics ([`Flavor::fused`] of [`flavor`]).
pub(crate) fn fused() -> bool {
    flavor().fused()
}

/// Whether the AVX2 + FMA forms of the kernels may run: the hardware has them and the
/// reproduced flavour is built with them.
pub(crate) fn simd() -> bool {
    fused() && hardware().avx2_fma
}

/// Whether the AVX-512F forms of the kernels may run: [`simd`], and the hardware has AVX-512F
/// (and DQ). Such forms keep every lane's order, so they change speed, never results.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn simd512() -> bool {
    simd() && hardware().avx512
}

/// Whether the integer kernels may use AVX-512 VNNI's `vpdpbusd` on 256-bit registers
/// ([`simd`], and the hardware has it): the integer sums are exact either way, so this changes
/// speed, never results.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn vnni256() -> bool {
    simd() && hardware().vnni256
}

/// Whether BF16 weights take ggml's `vdpbf16ps` kernels: the reproduced flavour is AVX-512 and
/// the CPU has AVX-512 BF16, as the variant ggml loads on such a CPU (zen4) is built with.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn bf16_dot() -> bool {
    static NO_BF16: OnceLock<bool> = OnceLock::new();
    let no_bf16 = *NO_BF16
        .get_or_init(|| std::env::var("DYNQUANT_CPU_FLAVOR").as_deref() == Ok("avx512-nobf16"));
    simd512() && flavor() == Flavor::Avx512 && hardware().avx512_bf16 && !no_bf16
}

/// Whether the hardware has AVX2 and FMA, whatever the flavour (for code given a flavour
/// explicitly, and for the tests that compare the AVX2 forms of the kernels with their portable
/// forms whenever the machine can run both).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn avx2_fma_hardware() -> bool {
    hardware().avx2_fma
}
