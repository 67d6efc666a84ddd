//! Our quantized blocks against real ggml (node-llama-cpp's `libggml-base.so`, llama.cpp
//! 80fb11ac): valid per `ggml_validate_row_data`, read back by ggml's `to_float` exactly as we
//! read them, and with an importance-weighted error no worse than `ggml_quantize_chunk`'s on
//! real weights (`smollm2-768` with its real imatrix). Needs `GGML_BASE_LIB` and
//! `DYNQUANT_TEST_MODELS`; fails loudly without them unless `DYNQUANT_SKIP_ORACLES=1`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{Access, GgufModel};
use dynquant_quants::{dequantize, quantize_rows};

mod common;

use common::Ggml;

const LEGACY: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

/// K-quants (`k/quantize.rs`).
const KQUANTS: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Codebook i-quants (`iq/codebook.rs`); they need an importance vector.
const CODEBOOK: [GgmlType; 7] = [
    GgmlType::IQ2_XXS,
    GgmlType::IQ1_S,
    GgmlType::IQ3_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ1_M,
    GgmlType::IQ2_S,
    GgmlType::IQ3_S,
];

/// Non-linear 4-bit, ternary and FP4 types (`iq/iq4.rs`, `ternary/quantize.rs`, `fp4/quantize.rs`).
const IQ4_TQ_MXFP4: [GgmlType; 5] = [
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::MXFP4,
];

fn rows_for_test(seed: u64) -> Vec<f32> {
    // Rows of 256: ordinary, zero, tiny, huge, one outlier, constant.
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut v = Vec::new();
    for kind in 0..6 {
        for j in 0..256 {
            let r = next();
            v.push(match kind {
                0 => r,
                1 => 0.0,
                2 => r * 1e-30,
                3 => r * 6e4,
                4 => {
                    if j == 7 {
                        50.0
                    } else {
                        r * 0.01
                    }
                }
                _ => 0.25,
            });
        }
    }
    v
}

#[test]
fn our_blocks_are_valid_ggml_and_read_back_identically() {
    let Some(g) = Ggml::load() else { return };
    let x = rows_for_test(3);
    let imp: Vec<f32> = (0..256).map(|j| 0.5 + ((j * 37) % 11) as f32).collect();
    for ty in LEGACY
        .into_iter()
        .chain(KQUANTS)
        .chain(IQ4_TQ_MXFP4)
        .chain([GgmlType::F16, GgmlType::BF16])
        .chain(CODEBOOK)
    {
        let n = 256;
        let mut out = vec![0u8; x.len() / n * ty.row_bytes(n as u64).unwrap() as usize];
        let importance = CODEBOOK.contains(&ty).then_some(&imp[..]);
        quantize_rows(ty, &x, n, importance, &mut out).unwrap();
        assert!(g.validate(ty, &out), "{ty}: ggml rejects our blocks");
        let mut ours = vec![0f32; x.len()];
        dequantize(ty, &out, &mut ours).unwrap();
        let theirs = g.to_float(ty, &out, x.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.to_bits(), b.to_bits(), "{ty}");
        }
    }
}

#[test]
fn q8_0_matches_ggml_byte_for_byte() {
    let Some(g) = Ggml::load() else { return };
    let x = rows_for_test(9);
    let mut ours = vec![0u8; x.len() / 32 * 34];
    quantize_rows(GgmlType::Q8_0, &x, 256, None, &mut ours).unwrap();
    assert_eq!(ours, g.quantize_chunk(GgmlType::Q8_0, &x, 256, None));
}

#[test]
fn bad_input_is_a_typed_error() {
    use dynquant_quants::QuantError;
    let mut x = vec![0.5f32; 64];
    x[40] = f32::NAN;
    let mut out = vec![0u8; 2 * 18];
    assert!(matches!(
        quantize_rows(GgmlType::Q4_0, &x, 32, None, &mut out),
        Err(QuantError::NonFiniteInput { row: 1, col: 8, .. })
    ));
    // The legacy types check their input on the way when there is no importance: a NaN or
    // infinity in a zero, constant or varied block, alone or with a huge finite value.
    for ty in LEGACY.into_iter().filter(|&t| t != GgmlType::Q8_0) {
        let size = ty.row_bytes(32).unwrap() as usize;
        for base in [0.0f32, 0.5, -2.0, 7.0] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for huge in [None, Some(3e38f32)] {
                    let mut x: Vec<f32> = (0..64).map(|i| base * (1.0 + (i % 5) as f32)).collect();
                    if base == 7.0 {
                        x.iter_mut().for_each(|v| *v = base);
                    }
                    if let Some(h) = huge {
                        x[41] = h;
                    }
                    x[40] = bad;
                    let mut out = vec![0u8; 2 * size];
                    let r = quantize_rows(ty, &x, 32, None, &mut out);
                    assert!(
                        matches!(r, Err(QuantError::NonFiniteInput { row: 1, col: 8, .. })),
                        "{ty} {base} {bad} {huge:?}: {r:?}"
                    );
                }
            }
        }
    }
    let x = vec![1e9f32; 32];
    assert!(matches!(
        quantize_rows(GgmlType::Q4_0, &x, 32, None, &mut out[..18]),
        Err(QuantError::InvalidBlock { row: 0, .. })
    ));
    assert!(matches!(
        quantize_rows(GgmlType::Q4_0, &x, 33, None, &mut out),
        Err(QuantError::BadRowShape { .. })
    ));
    assert!(matches!(
        quantize_rows(
            GgmlType::Q4_0,
            &x[..32],
            32,
            Some(&[-1.0; 32]),
            &mut out[..18]
        ),
        Err(QuantError::BadImportance { col: 0, .. })
    ));
}

#[test]
fn out_of_range_iq4_tq_blocks_are_typed_errors() {
    use dynquant_quants::QuantError;
    let x = vec![1e9f32; 256];
    for ty in IQ4_TQ_MXFP4 {
        let mut out = vec![0u8; ty.row_bytes(256).unwrap() as usize];
        let r = quantize_rows(ty, &x, 256, None, &mut out);
        if ty == GgmlType::MXFP4 {
            // E8M0 covers every finite f32: never invalid.
            r.unwrap();
        } else {
            assert!(
                matches!(r, Err(QuantError::InvalidBlock { row: 0, .. })),
                "{ty}: {r:?}"
            );
        }
    }
}

/// Importance-weighted squared error of `blocks` against `x`.
fn weighted_error(ty: GgmlType, x: &[f32], blocks: &[u8], n: usize, w: &[f32]) -> f64 {
    let mut y = vec![0f32; x.len()];
    dequantize(ty, blocks, &mut y).unwrap();
    x.iter()
        .zip(&y)
        .enumerate()
        .map(|(i, (a, b))| f64::from(w[i % n]) * f64::from(a - b).powi(2))
        .sum()
}

#[test]
fn error_is_at_most_ggmls_on_real_weights_with_real_imatrix() {
    let Some(g) = Ggml::load() else { return };
    let dir =
        PathBuf::from(std::env::var_os("DYNQUANT_TEST_MODELS").expect("DYNQUANT_TEST_MODELS"));
    let model = GgufModel::open(dir.join("smollm2-768.gguf"), Access::Mmap).unwrap();
    let imatrix = Imatrix::read(dir.join("smollm2-768.imatrix.gguf")).unwrap();
    // Every tensor class, in early, middle and late layers.
    let picked: Vec<_> = model
        .tensors()
        .filter(|t| t.info.shape.len() == 2 && t.info.name.starts_with("blk."))
        .filter(|t| {
            ["blk.0.", "blk.14.", "blk.29."]
                .iter()
                .any(|p| t.info.name.starts_with(p))
        })
        .collect();
    assert_eq!(picked.len(), 21);
    // DYNQUANT_QUANT_TYPES=q4_0,tq1_0 restricts the run to those types (for iterating).
    let only: Option<Vec<GgmlType>> = std::env::var("DYNQUANT_QUANT_TYPES")
        .ok()
        .map(|s| s.split(',').map(|t| t.trim().parse().unwrap()).collect());
    // DYNQUANT_QUANT_NO_IMATRIX=1: both sides quantize without an importance vector (ggml
    // then takes its reference paths) and the error is the plain squared error; the types
    // that need an imatrix are skipped.
    let no_imatrix = std::env::var_os("DYNQUANT_QUANT_NO_IMATRIX").is_some_and(|v| v == "1");
    // DYNQUANT_QUANT_REPS=n: time each tensor n times per side and keep the fastest (1 here).
    let reps: usize = std::env::var("DYNQUANT_QUANT_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        .max(1);
    println!("type   | ours/ggml weighted error | worst tensor | speed ours/ggml (1 thread)");
    for ty in LEGACY
        .into_iter()
        .chain(KQUANTS)
        .chain(IQ4_TQ_MXFP4)
        .chain(CODEBOOK)
        .filter(|ty| only.as_ref().is_none_or(|o| o.contains(ty)))
        .filter(|ty| !(no_imatrix && CODEBOOK.contains(ty)))
    {
        let (mut ours_total, mut ggml_total, mut worst) = (0f64, 0f64, (0f64, String::new()));
        let (mut ours_time, mut ggml_time) = (Duration::ZERO, Duration::ZERO);
        // ggml builds its grid maps on a type's first call (seconds for IQ1/IQ2): untimed.
        if let Some(t) = picked.first() {
            let n = t.info.shape[0] as usize;
            let w = imatrix.get(&t.info.name).unwrap().weights(0);
            g.quantize_chunk(ty, &vec![0.5f32; n], n, Some(&w));
        }
        for t in &picked {
            let n = t.info.shape[0] as usize;
            let mut x = vec![0f32; t.info.n_elements() as usize];
            dequantize(t.info.ggml_type, &model.tensor_data(t).unwrap(), &mut x).unwrap();
            let w = if no_imatrix {
                vec![1f32; n]
            } else {
                imatrix.get(&t.info.name).unwrap().weights(0)
            };
            let importance = (!no_imatrix).then_some(&w[..]);
            // Each side's fastest of `reps` runs (alternating), against other jobs' noise.
            let (mut theirs, mut ours) = (Vec::new(), Vec::new());
            let (mut best_ggml, mut best_ours) = (Duration::MAX, Duration::MAX);
            for _ in 0..reps {
                let start = Instant::now();
                theirs = g.quantize_chunk(ty, &x, n, importance);
                best_ggml = best_ggml.min(start.elapsed());
                let start = Instant::now();
                ours = vec![0u8; theirs.len()];
                quantize_rows(ty, &x, n, importance, &mut ours).unwrap();
                best_ours = best_ours.min(start.elapsed());
            }
            ggml_time += best_ggml;
            ours_time += best_ours;
            let (eo, eg) = (
                weighted_error(ty, &x, &ours, n, &w),
                weighted_error(ty, &x, &theirs, n, &w),
            );
            ours_total += eo;
            ggml_total += eg;
            let ratio = if eg > 0.0 { eo / eg } else { 1.0 };
            if ratio > worst.0 {
                worst = (ratio, t.info.name.clone());
            }
        }
        let ratio = ours_total / ggml_total;
        // Throughput ratio (> 1: ours is faster); printed only, never asserted.
        let speed = ggml_time.as_secs_f64() / ours_time.as_secs_f64();
        println!(
            "{ty:<6} | {ratio:.4} | {:.4} ({}) | {speed:.2}x",
            worst.0, worst.1
        );
        assert!(ratio <= 1.0, "{ty}: aggregate error ratio {ratio}");
        assert!(
            worst.0 <= 1.02,
            "{ty}: {} has error ratio {}",
            worst.1,
            worst.0
        );
    }
}
