//! Op by op against the real ggml CPU backend (the libggml-cpu variant ggml itself picks on
//! this CPU, see `common/ggml.rs`): matrix products per weight type, batch sizes that take
//! ggml's different paths (vec_dot, llamafile tinyBLAS, repacked gemm/gemv), and element-wise
//! ops. Results must be bit-identical.

mod common;

use std::borrow::Cow;

use common::ggml::Ggml;
use dynquant_engine::matmul::{matmul, Weight};
use dynquant_engine::Numerics;
use dynquant_gguf::GgmlType;
use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::oracle::Oracle;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly normal, with rare large outliers (as transformer activations have).
    fn act(&mut self) -> f32 {
        let u: f32 = (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 2.0;
        if self.next().is_multiple_of(97) {
            u * 60.0
        } else {
            u
        }
    }
}

fn acts(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed | 1);
    (0..n).map(|_| r.act()).collect()
}

/// Number of differing values and the largest relative difference.
fn diff(ours: &[f32], theirs: &[f32]) -> (usize, f32) {
    let mut n = 0;
    let mut worst = 0f32;
    for (a, b) in ours.iter().zip(theirs) {
        if a.to_bits() != b.to_bits() {
            n += 1;
            worst = worst.max((a - b).abs() / b.abs().max(1e-6));
        }
    }
    (n, worst)
}

/// Whether ggml-cpu moves a weight of this type and row count into its repacked layout on
/// this CPU (repack.cpp, ggml_repack_get_optimal_repack_type, x86 branches).
fn repacked(ty: GgmlType, rows: usize) -> bool {
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    // the loaded variant's build, not only the CPU: GGML_CPU_VARIANT=haswell has no AVX-512
    let avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::env::var("GGML_CPU_VARIANT").map_or(true, |v| {
            [
                "skylakex",
                "cannonlake",
                "cascadelake",
                "cooperlake",
                "icelake",
                "sapphirerapids",
                "zen4",
            ]
            .contains(&v.as_str())
        });
    rows.is_multiple_of(8)
        && match ty {
            GgmlType::Q4_0 | GgmlType::Q4_K | GgmlType::IQ4_NL | GgmlType::MXFP4 => avx2,
            GgmlType::Q6_K => avx2 && std::env::var("Q6REPACK").is_ok(),
            GgmlType::Q2_K => avx512,
            _ => false,
        }
}

fn ggml_mul_mat(g: &Ggml, w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    let mut gr = g.graph();
    let wt = gr.input(
        w.ty.id() as i32,
        &[w.cols as i64, w.rows as i64],
        w.data.to_vec(),
        repacked(w.ty, w.rows),
    );
    let xt = gr.f32(&[w.cols as i64, n_tok as i64], x);
    let y = gr.mul_mat(wt, xt);
    gr.compute(y, w.rows * n_tok)
}

/// One weight per type of `model`, products with 1..512 tokens.
fn check_matmuls(model: &std::path::Path, report_only: bool) {
    let Some(g) = Ggml::load() else { return };
    let gguf = GgufModel::open(model, Access::Mmap).expect("open");
    let mut seen = Vec::new();
    let mut bad = Vec::new();
    for t in gguf.tensors() {
        let ty = t.info.ggml_type;
        // one weight per type (token_embd too: it is the tied output)
        if t.info.shape.len() != 2 || seen.contains(&ty) || ty == GgmlType::F32 {
            continue;
        }
        seen.push(ty);
        let (cols, rows) = (t.info.shape[0] as usize, t.info.shape[1] as usize);
        // a slice of rows keeps the test fast
        let rows = if std::env::var("FULL").is_ok() {
            rows
        } else {
            rows.min(256)
        };
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let all = gguf.tensor_data(&t).expect("data");
        let data = &all[..rb * rows];
        let w = Weight::new(&t.info.name, ty, cols, rows, Cow::Borrowed(data)).expect("weight");
        for n_tok in [1usize, 2, 3, 4, 8, 16, 64, 65, 512] {
            let x = acts(cols * n_tok, 7 + n_tok as u64);
            let ours = matmul(&w, &x, n_tok, Numerics::Llama).expect("matmul");
            let theirs = ggml_mul_mat(&g, &w, &x, n_tok);
            let (n, worst) = diff(&ours, &theirs);
            if std::env::var("DEBUG_SINGLE").is_ok() {
                let mut single = Vec::new();
                let mut gsingle = Vec::new();
                for t in 0..n_tok {
                    let xt = &x[t * cols..(t + 1) * cols];
                    single.extend(matmul(&w, xt, 1, Numerics::Llama).unwrap());
                    gsingle.extend(ggml_mul_mat(&g, &w, xt, 1));
                }
                eprintln!(
                    "ours single vs batch {:?}, ggml single vs batch {:?}",
                    diff(&single, &ours),
                    diff(&gsingle, &theirs)
                );
                for t in 0..n_tok {
                    let pat: String = (0..rows)
                        .map(|r| {
                            if ours[t * rows + r].to_bits() == theirs[t * rows + r].to_bits() {
                                '.'
                            } else {
                                'x'
                            }
                        })
                        .collect();
                    eprintln!("t{t:2} {pat}");
                }
            }
            eprintln!(
                "{} {ty} {cols}x{rows} n_tok {n_tok}: {n} of {} differ (max rel {worst:.2e})",
                g.variant,
                ours.len()
            );
            if n > 0 {
                bad.push(format!("{ty} n_tok {n_tok}: {n} differ"));
            }
        }
    }
    if !report_only {
        assert!(bad.is_empty(), "{bad:?}");
    }
}

/// Random blocks of `ty` (`rows` x `cols`) whose f16 scales at `scales` (byte offsets in a
/// block) are small and finite; every other byte is random, which every value of these types
/// allows.
fn random_weight(ty: GgmlType, cols: usize, rows: usize, scales: &[usize], seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let size = ty.type_size() as usize;
    let n = ty.row_bytes(cols as u64).unwrap() as usize * rows;
    let mut data: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
    for b in data.chunks_exact_mut(size) {
        for &at in scales {
            let v = half::f16::from_f32(0.002 + (r.next() % 1000) as f32 * 1e-5);
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    data
}

/// Products of `w` with `n_tok` tokens (seeded activations) for each of `n_toks`, bit for bit
/// against ggml; each differing product is reported and added to `bad`.
fn compare_products(g: &Ggml, w: &Weight<'_>, n_toks: &[usize], seed: u64, bad: &mut Vec<String>) {
    let (cols, rows) = (w.cols, w.rows);
    for &n_tok in n_toks {
        let x = acts(cols * n_tok, seed + n_tok as u64);
        let ours = matmul(w, &x, n_tok, Numerics::Llama).expect("matmul");
        let theirs = ggml_mul_mat(g, w, &x, n_tok);
        let (n, worst) = diff(&ours, &theirs);
        eprintln!(
            "{} {} {cols}x{rows} n_tok {n_tok}: {n} of {} differ (max rel {worst:.2e})",
            g.variant,
            w.ty,
            ours.len()
        );
        if n > 0 {
            bad.push(format!("{} {cols}x{rows} n_tok {n_tok}: {n} differ", w.ty));
        }
    }
}

/// Products of synthetic weights of `ty` with 1..65 tokens, bit for bit against ggml, for row
/// counts ggml repacks (groups of eight) and, with `odd_rows`, ones it does not.
fn check_synthetic(ty: GgmlType, scales: &[usize], odd_rows: bool) {
    let Some(g) = Ggml::load() else { return };
    let cols = 1536;
    let mut bad = Vec::new();
    let shapes: &[usize] = if odd_rows { &[64, 36] } else { &[64] };
    for &rows in shapes {
        let data = random_weight(ty, cols, rows, scales, rows as u64 * 31 + ty.id() as u64);
        let w = Weight::new("w", ty, cols, rows, Cow::Borrowed(&data)).expect("weight");
        compare_products(&g, &w, &[1usize, 2, 3, 4, 5, 8, 16, 65], 11, &mut bad);
    }
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn matmuls_q2_k() {
    use dynquant_quants::k::layout::q2k;
    check_synthetic(GgmlType::Q2_K, &[q2k::D, q2k::DMIN], true);
}

#[test]
fn matmuls_q3_k() {
    use dynquant_quants::k::layout::q3k;
    check_synthetic(GgmlType::Q3_K, &[q3k::D], true);
}

/// Q4_K in ggml's repacked layout (rows in groups of eight), with token counts that are and
/// are not whole groups of four (the gemm and gemv orders).
#[test]
fn matmuls_q4_k() {
    use dynquant_quants::k::layout::q4k;
    check_synthetic(GgmlType::Q4_K, &[q4k::D, q4k::DMIN], false);
}

#[test]
fn matmuls_q5_k() {
    use dynquant_quants::k::layout::q5k;
    check_synthetic(GgmlType::Q5_K, &[q5k::D, q5k::DMIN], true);
}

#[test]
fn matmuls_iq4_xs() {
    use dynquant_quants::iq::layout::iq4xs;
    check_synthetic(GgmlType::IQ4_XS, &[iq4xs::D], true);
}

/// IQ4_NL: only rows in groups of eight (ggml's repacked kernels; other weights take
/// llamafile's tinyBLAS, which the engine does not reproduce yet).
#[test]
fn matmuls_iq4_nl() {
    use dynquant_quants::iq::layout::iq4nl;
    check_synthetic(GgmlType::IQ4_NL, &[iq4nl::D], false);
}

/// Q4_0: rows in groups of eight take ggml's repacked kernels (`q4_0_8x8`), other rows the
/// `vec_dot` (or llamafile's tinyBLAS for batches).
#[test]
fn matmuls_q4_0() {
    use dynquant_quants::legacy::layout::q4_0;
    check_synthetic(GgmlType::Q4_0, &[q4_0::D], true);
}

/// MXFP4 (gpt-oss's experts): repacked (`mxfp4_8x8`) rows in groups of eight, the `vec_dot`
/// otherwise. Random exponents near 127 keep the values finite; blocks of zeros come with
/// subnormal and large scales.
#[test]
fn matmuls_mxfp4() {
    let Some(g) = Ggml::load() else { return };
    let mut bad = Vec::new();
    // an odd block count (49) takes the vec_dot's leftover step
    for (cols, rows) in [(1536usize, 64usize), (1568, 36)] {
        let mut data = random_weight(GgmlType::MXFP4, cols, rows, &[], rows as u64 + 3);
        for (i, b) in data.chunks_exact_mut(17).enumerate() {
            b[0] = 118 + (i % 13) as u8;
            // blocks of zeros as ggml stores them (exponent 0 or 1: subnormal scales), and
            // some under a large exponent
            if i % 7 == 3 {
                b[0] = (i % 2) as u8;
                b[1..].fill(if i % 3 == 0 { 0x88 } else { 0x08 });
            } else if i % 11 == 5 {
                b[0] = 140;
                b[1..].fill(0);
            }
        }
        let w =
            Weight::new("w", GgmlType::MXFP4, cols, rows, Cow::Borrowed(&data)).expect("weight");
        compare_products(&g, &w, &[1usize, 2, 3, 4, 5, 8, 16, 65], 13, &mut bad);
    }
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn matmuls_tq1_0() {
    use dynquant_quants::ternary::layout::tq1;
    check_synthetic(GgmlType::TQ1_0, &[tq1::D], true);
}

#[test]
fn matmuls_tq2_0() {
    use dynquant_quants::ternary::layout::tq2;
    check_synthetic(GgmlType::TQ2_0, &[tq2::D], true);
}

#[test]
fn matmuls_smollm2_q4_1() {
    let Some(o) = Oracle::get() else { return };
    check_matmuls(&o.smollm2(), false);
}

#[test]
fn matmuls_gemma3_q4_k_m() {
    let Some(o) = Oracle::get() else { return };
    check_matmuls(&o.gemma(), false);
}

#[test]
fn rms_norm_times_weight() {
    let Some(g) = Ggml::load() else { return };
    let (n, rows) = (576usize, 8usize);
    let mut x = acts(n * rows, 3);
    x[5] = 800.0;
    let w: Vec<f32> = acts(n, 5).iter().map(|v| 1.0 + 0.3 * v).collect();
    let mut gr = g.graph();
    let xt = gr.f32(&[n as i64, rows as i64], &x);
    let wt = gr.f32(&[n as i64], &w);
    let y = gr.rms_norm(xt, 1e-5);
    let y = gr.mul(y, wt);
    let theirs = gr.compute(y, n * rows);
    let mut ours = x.clone();
    dynquant_engine::ops::rms_norm(&mut ours, n, &w, 1e-5);
    let (d, worst) = diff(&ours, &theirs);
    eprintln!(
        "rms_norm: {d} of {} differ (max rel {worst:.2e})",
        ours.len()
    );
    assert_eq!(d, 0);
}

fn glu(act: dynquant_engine::ops::Activation) {
    let Some(g) = Ggml::load() else { return };
    let (n, rows) = (1536usize, 4usize);
    let gate: Vec<f32> = acts(n * rows, 11).iter().map(|v| v * 4.0).collect();
    let up = acts(n * rows, 13);
    let mut gr = g.graph();
    let a = gr.f32(&[n as i64, rows as i64], &gate);
    let b = gr.f32(&[n as i64, rows as i64], &up);
    let y = match act {
        dynquant_engine::ops::Activation::SwiGlu => gr.swiglu(a, b),
        dynquant_engine::ops::Activation::GeGlu => gr.geglu(a, b),
        dynquant_engine::ops::Activation::SwigluOai => {
            unreachable!("glu() checks SwiGlu and GeGlu against ggml")
        }
    };
    let theirs = gr.compute(y, n * rows);
    let mut ours = gate.clone();
    for (o, u) in ours.chunks_mut(n).zip(up.chunks(n)) {
        act.apply(o, u);
    }
    for i in 0..ours.len() {
        if ours[i].to_bits() != theirs[i].to_bits() && std::env::var("SHOW").is_ok() {
            eprintln!(
                "x {} up {} ours {} ggml {}",
                gate[i], up[i], ours[i], theirs[i]
            );
        }
    }
    let (d, worst) = diff(&ours, &theirs);
    eprintln!(
        "{act:?}: {d} of {} differ (max rel {worst:.2e})",
        ours.len()
    );
    assert_eq!(d, 0);
}

#[test]
fn swiglu() {
    glu(dynquant_engine::ops::Activation::SwiGlu);
}

#[test]
fn geglu() {
    glu(dynquant_engine::ops::Activation::GeGlu);
}

/// ggml's GELU table over every f16 input in (-10, 10), read through GEGLU with up = 1.
#[test]
fn gelu_table() {
    let Some(g) = Ggml::load() else { return };
    let xs: Vec<f32> = (0..=u16::MAX)
        .map(|b| half::f16::from_bits(b).to_f32())
        .filter(|x| x.is_finite() && x.abs() < 10.0)
        .collect();
    let n = xs.len() / 16 * 16;
    let xs = &xs[..n];
    let ones = vec![1f32; n];
    let mut gr = g.graph();
    let a = gr.f32(&[n as i64], xs);
    let b = gr.f32(&[n as i64], &ones);
    let y = gr.geglu(a, b);
    let theirs = gr.compute(y, n);
    let mut ours = xs.to_vec();
    dynquant_engine::ops::Activation::GeGlu.apply(&mut ours, &ones);
    let mut shown = 0;
    for i in 0..n {
        if ours[i].to_bits() != theirs[i].to_bits() && shown < 10 && std::env::var("SHOW").is_ok() {
            shown += 1;
            eprintln!("x {} ours {} ggml {}", xs[i], ours[i], theirs[i]);
        }
    }
    let (d, worst) = diff(&ours, &theirs);
    eprintln!("gelu table: {d} of {n} differ (max rel {worst:.2e})");
    assert_eq!(d, 0);
}

fn attn_config(n_head: usize, n_head_kv: usize, d: usize) -> dynquant_engine::config::Config {
    dynquant_engine::config::Config {
        arch: "llama".into(),
        n_embd: n_head * d,
        n_layer: 1,
        n_head,
        n_head_kv,
        head_dim_k: d,
        head_dim_v: d,
        n_ff: 4 * n_head * d,
        n_ctx_train: 4096,
        rms_eps: 1e-5,
        rope_kind: dynquant_engine::ops::RopeKind::Normal,
        n_rot: d,
        rope_base: 10000.0,
        rope_scale: 1.0,
        act: dynquant_engine::ops::Activation::SwiGlu,
        qk_norm: false,
        qk_norm_optional: false,
        qkv_bias: false,
        post_norms: false,
        embd_scale: None,
        q_scale: 1.0,
        kq_scale: 1.0 / (d as f32).sqrt(),
        swa: None,
        yarn: None,
        mla: None,
        moe: None,
    }
}

/// Causal flash attention of the last `n_q` of `n_kv` positions (keys at distance >= `window`
/// masked too), head size `d`, f16 K/V as llama.cpp's cache stores them.
fn check_attention(n_q: usize, n_kv: usize, d: usize, window: Option<usize>) -> (usize, f32) {
    let Some(g) = Ggml::load() else {
        return (0, 0.0);
    };
    let (nh, nkv) = if d > 128 { (4usize, 1usize) } else { (9, 3) };
    let c = attn_config(nh, nkv, d);
    let q: Vec<f32> = acts(n_q * nh * d, 21).iter().map(|v| v * 2.0).collect();
    let k: Vec<f32> = acts(n_kv * nkv * d, 23).iter().map(|v| v * 2.0).collect();
    let v = acts(n_kv * nkv * d, 25);
    let p0 = n_kv - n_q;
    let mut cache = dynquant_engine::attention::KvCache::new(nkv * d, nkv * d);
    cache.append(&k, &v, false);
    let ours = dynquant_engine::attention::attend(&c, &q, &cache, p0, n_q, window, false);
    // ggml: q [d, n_q, nh], k/v [d, n_kv, nkv] (f16), mask [n_kv, n_q padded] (f16)
    let perm = |x: &[f32], rows: usize, heads: usize| -> Vec<f32> {
        let mut o = vec![0f32; x.len()];
        for r in 0..rows {
            for h in 0..heads {
                o[(h * rows + r) * d..][..d].copy_from_slice(&x[(r * heads + h) * d..][..d]);
            }
        }
        o
    };
    let pad = n_q.div_ceil(64) * 64;
    let mut mask = vec![f32::NEG_INFINITY; pad * n_kv];
    for i in 0..n_q {
        let lo = window.map_or(0, |w| (p0 + i + 1).saturating_sub(w));
        for j in lo..=p0 + i {
            mask[i * n_kv + j] = 0.0;
        }
    }
    let mut gr = g.graph();
    let qt = gr.f32(&[d as i64, n_q as i64, nh as i64], &perm(&q, n_q, nh));
    let kt = gr.f16(&[d as i64, n_kv as i64, nkv as i64], &perm(&k, n_kv, nkv));
    let vt = gr.f16(&[d as i64, n_kv as i64, nkv as i64], &perm(&v, n_kv, nkv));
    let mt = gr.f16(&[n_kv as i64, pad as i64], &mask);
    let y = gr.flash_attn(qt, kt, vt, mt, c.kq_scale);
    let theirs = gr.compute(y, n_q * nh * d);
    let (n, worst) = diff(&ours, &theirs);
    eprintln!(
        "attention n_q {n_q} n_kv {n_kv}: {n} of {} differ (max rel {worst:.2e})",
        ours.len()
    );
    (n, worst)
}

/// deepseek2's attention: `nh` query heads with `dk`-wide keys and `dv`-wide values, either one
/// key/value head per query head (the legacy layout's decompressed heads) or, with `mla`, one
/// cached head whose values are the leading `dv` of each key row (latent and RoPE key).
fn check_attention_deepseek2(n_q: usize, n_kv: usize, dk: usize, dv: usize, mla: bool) -> usize {
    let Some(g) = Ggml::load() else { return 0 };
    let nh = 4usize;
    let nkv = if mla { 1 } else { nh };
    let mut c = attn_config(nh, nkv, dk);
    c.head_dim_v = dv;
    let q: Vec<f32> = acts(n_q * nh * dk, 41).iter().map(|v| v * 0.5).collect();
    let k: Vec<f32> = acts(n_kv * nkv * dk, 43);
    let v: Vec<f32> = if mla {
        k.chunks_exact(dk).flat_map(|r| &r[..dv]).copied().collect()
    } else {
        acts(n_kv * nkv * dv, 47)
    };
    let p0 = n_kv - n_q;
    let mut cache = if mla {
        dynquant_engine::attention::KvCache::values_in_keys(dk, dv)
    } else {
        dynquant_engine::attention::KvCache::new(nkv * dk, nkv * dv)
    };
    cache.append(&k, if mla { &[] } else { &v }, false);
    let ours = dynquant_engine::attention::attend(&c, &q, &cache, p0, n_q, None, false);
    // ggml: rows x heads of d values -> [d, rows, heads]
    let perm = |x: &[f32], rows: usize, heads: usize, d: usize| -> Vec<f32> {
        let mut o = vec![0f32; x.len()];
        for r in 0..rows {
            for h in 0..heads {
                o[(h * rows + r) * d..][..d].copy_from_slice(&x[(r * heads + h) * d..][..d]);
            }
        }
        o
    };
    let pad = n_q.div_ceil(64) * 64;
    let mut mask = vec![f32::NEG_INFINITY; pad * n_kv];
    for i in 0..n_q {
        for j in 0..=p0 + i {
            mask[i * n_kv + j] = 0.0;
        }
    }
    let mut gr = g.graph();
    let qt = gr.f32(&[dk as i64, n_q as i64, nh as i64], &perm(&q, n_q, nh, dk));
    let kt = gr.f16(
        &[dk as i64, n_kv as i64, nkv as i64],
        &perm(&k, n_kv, nkv, dk),
    );
    let vt = gr.f16(
        &[dv as i64, n_kv as i64, nkv as i64],
        &perm(&v, n_kv, nkv, dv),
    );
    let mt = gr.f16(&[n_kv as i64, pad as i64], &mask);
    let y = gr.flash_attn(qt, kt, vt, mt, c.kq_scale);
    let theirs = gr.compute(y, n_q * nh * dv);
    let (n, worst) = diff(&ours, &theirs);
    eprintln!(
        "attention (mla {mla}) n_q {n_q} n_kv {n_kv} dk {dk} dv {dv}: {n} of {} differ (max rel {worst:.2e})",
        ours.len()
    );
    n
}

/// deepseek2's attention shapes: the legacy layout's per-head 192-wide keys and 128-wide values,
/// and MLA's one cached head (synth-deepseek2-mla's 256 latent + 64 RoPE, DeepSeek-V3's 512 + 64).
#[test]
fn flash_attention_deepseek2_shapes_match_ggml() {
    let mut bad = Vec::new();
    for (n_q, n_kv) in [(1, 1), (1, 40), (7, 7), (64, 64), (100, 300), (512, 512)] {
        for (dk, dv, mla) in [(192, 128, false), (320, 256, true), (576, 512, true)] {
            let n = check_attention_deepseek2(n_q, n_kv, dk, dv, mla);
            if n > 0 {
                bad.push(format!(
                    "n_q {n_q} n_kv {n_kv} dk {dk} mla {mla}: {n} differ"
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn flash_attention_matches_ggml() {
    let mut bad = Vec::new();
    let cases = [
        (1, 1, 64, None),
        (1, 50, 64, None),
        (4, 90, 64, None),
        (8, 520, 64, None),
        (1, 600, 64, None),
        (2, 530, 64, None),
        (8, 1024, 64, None),
        (30, 800, 64, None),
        (64, 64, 64, None),
        (80, 80, 64, None),
        (100, 300, 64, None),
        // gemma3: head size 256, one KV head, sliding window
        (3, 200, 256, Some(64)),
        (130, 200, 256, Some(100)),
        (70, 70, 256, None),
    ];
    for (n_q, n_kv, d, window) in cases {
        let (n, _) = check_attention(n_q, n_kv, d, window);
        if n > 0 {
            bad.push((n_q, n_kv, d, n));
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

/// DeepSeek's YaRN RoPE (64 rotated dimensions, factor 40, original context 4096), at
/// positions past the original context.
#[test]
fn rope_yarn_matches_ggml() {
    let Some(g) = Ggml::load() else { return };
    let (d, nh, n_tok) = (64usize, 3usize, 70usize);
    let x: Vec<f32> = acts(n_tok * nh * d, 37).iter().map(|v| v * 3.0).collect();
    let yarn = dynquant_engine::ops::Yarn {
        ext_factor: 1.0,
        attn_factor: 0.73,
        beta_fast: 32.0,
        beta_slow: 1.0,
        n_ctx_orig: 4096,
    };
    let (base, freq_scale) = (10000.0f32, 1.0f32 / 40.0);
    let r = dynquant_engine::ops::Rope {
        kind: dynquant_engine::ops::RopeKind::Normal,
        n_rot: d,
        freq_base: base,
        freq_scale,
        freq_factors: None,
        yarn: Some(yarn.clone()),
    };
    let positions: Vec<i32> = (0..n_tok as i32).map(|t| t * 97 + 3).collect();
    let mut ours = x.clone();
    for (row, &p) in ours.chunks_mut(nh * d).zip(&positions) {
        r.apply(row, d, &r.cache(p as usize));
    }
    let mut gr = g.graph();
    let xt = gr.f32(&[d as i64, nh as i64, n_tok as i64], &x);
    let pos: Vec<u8> = positions.iter().flat_map(|p| p.to_le_bytes()).collect();
    let pt = gr.input(26, &[n_tok as i64], pos, false);
    let y = gr.rope_ext(
        xt,
        pt,
        d as i32,
        0,
        4096,
        base,
        freq_scale,
        [
            yarn.ext_factor,
            yarn.attn_factor,
            yarn.beta_fast,
            yarn.beta_slow,
        ],
    );
    let theirs = gr.compute(y, x.len());
    let (n, worst) = diff(&ours, &theirs);
    eprintln!("rope yarn: {n} of {} differ (max rel {worst:.2e})", x.len());
    assert_eq!(n, 0);
}

fn check_rope(kind: dynquant_engine::ops::RopeKind, base: f32, n_tok: usize) -> usize {
    let Some(g) = Ggml::load() else { return 0 };
    let (d, nh) = (64usize, 3usize);
    let x: Vec<f32> = acts(n_tok * nh * d, 31).iter().map(|v| v * 3.0).collect();
    let r = dynquant_engine::ops::Rope {
        kind,
        n_rot: d,
        freq_base: base,
        freq_scale: 1.0,
        freq_factors: None,
        yarn: None,
    };
    let mut ours = x.clone();
    for (t, row) in ours.chunks_mut(nh * d).enumerate() {
        r.apply(row, d, &r.cache(t));
    }
    let mode = match kind {
        dynquant_engine::ops::RopeKind::Normal => 0,
        dynquant_engine::ops::RopeKind::Neox => 2,
    };
    let mut gr = g.graph();
    let xt = gr.f32(&[d as i64, nh as i64, n_tok as i64], &x);
    let pos: Vec<u8> = (0..n_tok as i32).flat_map(|p| p.to_le_bytes()).collect();
    let pt = gr.input(26, &[n_tok as i64], pos, false);
    let y = gr.rope(xt, pt, d as i32, mode, base, 1.0);
    let theirs = gr.compute(y, x.len());
    let (n, worst) = diff(&ours, &theirs);
    eprintln!(
        "rope {kind:?} base {base}: {n} of {} differ (max rel {worst:.2e})",
        x.len()
    );
    n
}

#[test]
fn rope_matches_ggml() {
    use dynquant_engine::ops::RopeKind;
    let a = check_rope(RopeKind::Normal, 100000.0, 2100);
    let b = check_rope(RopeKind::Neox, 10000.0, 300);
    assert_eq!((a, b), (0, 0));
}

/// BF16 weights (random values with outliers, rounded to BF16): widths with and without a
/// leftover after ggml's 64-value `vec_dot` steps, and one tinyBLAS (32-value steps) cannot take.
#[test]
fn matmuls_bf16() {
    let Some(g) = Ggml::load() else { return };
    let mut bad = Vec::new();
    for (cols, rows) in [(1536usize, 64usize), (608, 36), (600, 8)] {
        let data: Vec<u8> = acts(cols * rows, cols as u64)
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v * 0.05).to_le_bytes())
            .collect();
        let w = Weight::new("w", GgmlType::BF16, cols, rows, Cow::Borrowed(&data)).expect("weight");
        compare_products(&g, &w, &[1usize, 2, 3, 7, 16, 65], 5, &mut bad);
    }
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn matmuls_smollm2_f16() {
    let Some(o) = Oracle::get() else { return };
    check_matmuls(&o.test_models().dir.join("smollm2-f16.gguf"), false);
}

/// The codebook i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M): weights
/// quantized here from random values (with an importance that varies by column), products with
/// 1..200 tokens, bit-identical with ggml. Row counts of a multiple of 8 and not (ggml's AVX
/// builds change order for batches of 8+ tokens with the former). `GGML_CPU_VARIANT=haswell
/// DYNQUANT_CPU_FLAVOR=avx2` (or `x64` with `sse2`) checks another variant's order.
#[test]
fn matmuls_iquants() {
    let Some(g) = Ggml::load() else { return };
    let mut bad = Vec::new();
    for (cols, rows) in [(1536usize, 48usize), (768, 20)] {
        for (i, ty) in [
            GgmlType::IQ2_XXS,
            GgmlType::IQ2_XS,
            GgmlType::IQ2_S,
            GgmlType::IQ3_XXS,
            GgmlType::IQ3_S,
            GgmlType::IQ1_S,
            GgmlType::IQ1_M,
        ]
        .into_iter()
        .enumerate()
        {
            let src: Vec<f32> = acts(cols * rows, 101 + i as u64)
                .iter()
                .map(|v| v * 0.02)
                .collect();
            let importance: Vec<f32> = (0..cols).map(|c| 0.5 + (c % 7) as f32 * 0.3).collect();
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut data = vec![0u8; rb * rows];
            dynquant_quants::quantize_rows(ty, &src, cols, Some(&importance), &mut data)
                .expect("quantize");
            let w = Weight::new(ty.to_string(), ty, cols, rows, Cow::Owned(data)).expect("weight");
            for n_tok in [1usize, 2, 3, 4, 5, 7, 8, 9, 17, 64, 200] {
                let x = acts(cols * n_tok, 7 + n_tok as u64);
                let ours = matmul(&w, &x, n_tok, Numerics::Llama).expect("matmul");
                let theirs = ggml_mul_mat(&g, &w, &x, n_tok);
                let (n, worst) = diff(&ours, &theirs);
                eprintln!(
                    "{} {ty} {cols}x{rows} n_tok {n_tok}: {n} of {} differ (max rel {worst:.2e})",
                    g.variant,
                    ours.len()
                );
                if n > 0 {
                    bad.push(format!("{ty} {cols}x{rows} n_tok {n_tok}: {n} differ"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

/// Expert routes of `n_tok` tokens over six experts, two per token, uneven as real routing is:
/// expert 0 gets no row, expert 1 one, expert 2 three, expert 5 eight (the IQ panel gemm's
/// threshold), experts 3 and 4 the rest, with both slot orders.
fn uneven_routes(n_tok: usize) -> Vec<[usize; 2]> {
    (0..n_tok)
        .map(|t| match t {
            0 => [1, 5],
            1..=3 => [5, 2],
            4..=7 => [3, 5],
            _ if t % 2 == 0 => [3, 4],
            _ => [4, 3],
        })
        .collect()
}

/// The engine's expert products for `routes` as `moe.rs` runs them (each expert's rows gathered
/// in token order, one [`matmul_expert`] per expert), laid out as ggml's `mul_mat_id` result
/// ([rows, n_used, n_tok]).
fn ours_mul_mat_id(experts: &[Weight<'_>], x: &[f32], routes: &[[usize; 2]]) -> Vec<f32> {
    use dynquant_engine::matmul::matmul_expert;
    let (cols, rows) = (experts[0].cols, experts[0].rows);
    let mut y = vec![0f32; routes.len() * 2 * rows];
    for (e, w) in experts.iter().enumerate() {
        let mine: Vec<(usize, usize)> = routes
            .iter()
            .enumerate()
            .flat_map(|(t, r)| (0..2).filter(move |&s| r[s] == e).map(move |s| (t, s)))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let xin: Vec<f32> = mine
            .iter()
            .flat_map(|&(t, _)| x[t * cols..(t + 1) * cols].iter().copied())
            .collect();
        let out = matmul_expert(w, &xin, mine.len(), Numerics::Llama).expect("matmul_expert");
        for (i, &(t, s)) in mine.iter().enumerate() {
            y[(t * 2 + s) * rows..][..rows].copy_from_slice(&out[i * rows..(i + 1) * rows]);
        }
    }
    y
}

/// `ggml_mul_mat_id` of six experts of `ty` (quantized here from random values, with an
/// importance that varies by column) with uneven routing, bit for bit against ggml, for row
/// counts ggml repacks (groups of eight) and, where the engine has that path, not; one token
/// (decoding) and a batch.
/// `GGML_CPU_VARIANT=haswell DYNQUANT_CPU_FLAVOR=avx2` checks the AVX2 build's order.
fn check_mul_mat_id(ty: GgmlType) {
    let Some(g) = Ggml::load() else { return };
    let n_expert = 6;
    let mut bad = Vec::new();
    // the engine reproduces Q4_K and IQ4_NL only in ggml's repacked layout (rows in groups of
    // eight, as every model's are)
    let odd_rows = !matches!(ty, GgmlType::Q4_K | GgmlType::IQ4_NL);
    let shapes: &[(usize, usize)] = if odd_rows {
        &[(768, 64), (512, 36)]
    } else {
        &[(768, 64)]
    };
    for &(cols, rows) in shapes {
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut data = vec![0u8; rb * rows * n_expert];
        let importance: Vec<f32> = (0..cols).map(|c| 0.5 + (c % 7) as f32 * 0.3).collect();
        for (e, d) in data.chunks_exact_mut(rb * rows).enumerate() {
            let src: Vec<f32> = acts(cols * rows, 301 + 7 * e as u64 + ty.id() as u64)
                .iter()
                .map(|v| v * 0.02)
                .collect();
            dynquant_quants::quantize_rows(ty, &src, cols, Some(&importance), d).expect("quantize");
        }
        let experts: Vec<Weight<'_>> = data
            .chunks_exact(rb * rows)
            .enumerate()
            .map(|(e, d)| {
                Weight::new(format!("exp{e}"), ty, cols, rows, Cow::Borrowed(d)).expect("weight")
            })
            .collect();
        for n_tok in [1usize, 40] {
            let routes = uneven_routes(n_tok);
            let x = acts(cols * n_tok, 5 + n_tok as u64);
            let ours = ours_mul_mat_id(&experts, &x, &routes);
            let mut gr = g.graph();
            let wt = gr.input(
                ty.id() as i32,
                &[cols as i64, rows as i64, n_expert as i64],
                data.clone(),
                repacked(ty, rows),
            );
            let xt = gr.f32(&[cols as i64, 1, n_tok as i64], &x);
            let ids: Vec<i32> = routes.iter().flatten().map(|&e| e as i32).collect();
            let it = gr.i32s(&[2, n_tok as i64], &ids);
            let y = gr.mul_mat_id(wt, xt, it);
            let theirs = gr.compute(y, rows * 2 * n_tok);
            let (n, worst) = diff(&ours, &theirs);
            eprintln!(
                "{} mul_mat_id {ty} {cols}x{rows}x{n_expert} n_tok {n_tok}: {n} of {} differ \
                 (max rel {worst:.2e})",
                g.variant,
                ours.len()
            );
            if n > 0 {
                bad.push(format!("{ty} {cols}x{rows} n_tok {n_tok}: {n} differ"));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn mul_mat_id_f16_f32() {
    check_mul_mat_id(GgmlType::F16);
    check_mul_mat_id(GgmlType::F32);
}

#[test]
fn mul_mat_id_k_quants() {
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        check_mul_mat_id(ty);
    }
}

#[test]
fn mul_mat_id_iquants() {
    for ty in [
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ2_S,
        GgmlType::IQ3_XXS,
        GgmlType::IQ3_S,
        GgmlType::IQ1_S,
        GgmlType::IQ1_M,
    ] {
        check_mul_mat_id(ty);
    }
}

#[test]
fn mul_mat_id_iq4_and_legacy() {
    for ty in [
        GgmlType::IQ4_XS,
        GgmlType::IQ4_NL,
        GgmlType::Q4_0,
        GgmlType::MXFP4,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
    ] {
        check_mul_mat_id(ty);
    }
}

/// F32 weights (routers, norms-sized products): `ggml_vec_dot_f32` for one token, tinyBLAS for
/// batches, bit for bit against ggml, for widths of a multiple of ggml's vector step.
#[test]
fn matmuls_f32() {
    let Some(g) = Ggml::load() else { return };
    let mut bad = Vec::new();
    for (cols, rows) in [(576usize, 4usize), (768, 36)] {
        let src = acts(cols * rows, 41 + cols as u64);
        let data: Vec<u8> = src.iter().flat_map(|v| (v * 0.05).to_le_bytes()).collect();
        let w = Weight::new("w", GgmlType::F32, cols, rows, Cow::Borrowed(&data)).expect("weight");
        compare_products(&g, &w, &[1usize, 2, 3, 5, 16, 65], 3, &mut bad);
    }
    assert!(bad.is_empty(), "{bad:?}");
}
