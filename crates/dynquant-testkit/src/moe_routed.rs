//! `smollm2-moe-routed`: SmolLM2's real weights as a mixture of experts whose router sends real
//! text unevenly, built from `smollm2-768` and a calibration text with dynquant's own engine.
//!
//! Construction (llama architecture with experts, the Mixtral layout llama.cpp runs):
//!
//! 1. **Upcycling.** Every layer's FFN becomes [`N_EXPERT`] experts, each a copy of the dense
//!    FFN (1536 units, so every expert row is a multiple of 256). [`N_EXPERT_USED`] are selected
//!    per token and llama.cpp renormalizes their softmax weights to sum to 1, so identical
//!    experts would compute the dense function under any routing.
//! 2. **Router from data.** The dense model runs over the calibration chunks; each layer's FFN
//!    inputs (after `ffn_norm`) are clustered by spherical k-means into [`N_EXPERT`] directions.
//!    Expert `e`'s router row is its unit centroid times `router_gain / mean |x|` times
//!    `(share_e · n_expert)^popularity`, where `share_e` is its cluster's share of the tokens:
//!    the logits are scaled cosine similarities, and a larger cluster's expert also wins more
//!    second places, as busy experts of trained routers do. Real text is then routed unevenly.
//! 3. **Specialization.** Each expert's `ffn_down` is refit to the tokens routed to it: column
//!    `j` (unit `j`) is multiplied by `min(1, r_j)^specialization`, where `r_j` is the unit's
//!    mean squared activation over the (token, slot) pairs routed to the expert divided by its
//!    mean over all pairs. Units that the expert's tokens use less than the average token are
//!    damped in that expert, so the experts differ and the model depends on its router: sent
//!    to another cluster's experts, a token loses units it needs.
//! 4. **Imatrix.** dynquant's engine collects the importance matrix of the written model on the
//!    same chunks (what `dynquant imatrix` does), per expert: a rarely chosen expert really sees
//!    few tokens.
//!
//! Deterministic on a given machine: the engine's results do not depend on the thread count
//! (its activations are ggml's for the CPU variant it runs on), the k-means starts from seeded
//! k-means++, and every sum runs in a fixed order.

use std::path::Path;
use std::sync::Mutex;

use dynquant_engine::eval::ChunkOptions;
use dynquant_engine::imatrix::Collector;
use dynquant_engine::matmul::Weight;
use dynquant_engine::model::MatmulObserver;
use dynquant_engine::{Logits, Model};
use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{keys, Access, GgufModel, Value, WriteOptions};
use dynquant_tokenizer::Tokenizer;

use crate::rng::Rng;
use crate::tensors::{read_f32, write_model, Planned};
use crate::{Result, TestkitError};

/// Routed experts per layer.
pub const N_EXPERT: usize = 4;
/// Experts selected per token.
pub const N_EXPERT_USED: usize = 2;

/// The construction's parameters ([`Default`]: the published model).
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedSpec {
    /// Routed experts per layer.
    pub n_expert: usize,
    /// Experts selected per token.
    pub n_expert_used: usize,
    /// Tokens per calibration chunk.
    pub ctx: usize,
    /// Calibration chunks (router, refit and imatrix), from the start of the text.
    pub chunks: usize,
    /// k-means iterations (it stops earlier once no assignment changes).
    pub kmeans_iters: usize,
    /// Seed of the k-means++ starts.
    pub seed: u64,
    /// Router logits are cosine similarities times this (before the popularity factor).
    pub router_gain: f32,
    /// Exponent of the cluster-share factor of each router row (0: every row the same norm).
    pub popularity: f32,
    /// Exponent of the per-expert damping of rarely used units (0: exact copies of the dense
    /// FFN, the dense function under any routing).
    pub specialization: f32,
}

impl Default for RoutedSpec {
    fn default() -> Self {
        RoutedSpec {
            n_expert: N_EXPERT,
            n_expert_used: N_EXPERT_USED,
            ctx: 512,
            chunks: 2,
            kmeans_iters: 30,
            seed: 15,
            router_gain: 8.0,
            popularity: 0.5,
            specialization: 0.75,
        }
    }
}

/// What a build measured on the calibration text.
#[derive(Debug, Clone)]
pub struct RoutedReport {
    /// Per layer, each expert's share of the (token, slot) pairs of the calibration chunks as
    /// the written model routes them (the imatrix counts).
    pub shares: Vec<Vec<f64>>,
    /// Calibration tokens.
    pub tokens: usize,
    /// Seconds of the dense pass, the write and the imatrix pass.
    pub seconds: [f64; 3],
}

/// The FFN inputs (`n_embd` per token) and `ffn_down` inputs (`n_ff` per token) of every layer
/// of a dense model, in token order.
#[derive(Debug, Default)]
struct LayerActivations {
    ffn_in: Vec<f32>,
    down_in: Vec<f32>,
}

/// Records the inputs of `blk.N.ffn_gate` and `blk.N.ffn_down` (a [`MatmulObserver`]).
struct FfnCapture {
    layers: Vec<Mutex<LayerActivations>>,
}

/// `blk.12.ffn_gate.weight` → `(12, "ffn_gate")`.
fn block_role(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, role) = rest.split_once('.')?;
    Some((layer.parse().ok()?, role.strip_suffix(".weight")?))
}

impl MatmulObserver for FfnCapture {
    fn observe(&self, w: &Weight<'_>, x: &[f32], n_tok: usize) {
        let Some((il, role)) = block_role(&w.name) else {
            return;
        };
        let Some(slot) = self.layers.get(il) else {
            return;
        };
        let rows = &x[..n_tok * w.cols];
        let mut acts = slot.lock().unwrap_or_else(|e| e.into_inner());
        match role {
            "ffn_gate" => acts.ffn_in.extend_from_slice(rows),
            "ffn_down" => acts.down_in.extend_from_slice(rows),
            _ => {}
        }
    }

    fn observe_expert(&self, _: &Weight<'_>, _: usize, _: usize, _: &[f32], _: usize) {}
}

/// The first `spec.chunks` chunks of `text` as the dense model tokenizes it (as
/// `dynquant imatrix` does: the text whole, BOS only when the vocabulary adds it, then BOS
/// substituted at each chunk start).
fn calibration_chunks(tok: &Tokenizer, text: &str, spec: &RoutedSpec) -> Result<Vec<Vec<u32>>> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let tokens = tok
        .encode(text, true, false)
        .map_err(|e| TestkitError::BadSource(format!("tokenizing the calibration text: {e}")))?;
    let opts = ChunkOptions::for_tokenizer(tok, spec.ctx, Some(spec.chunks));
    if opts.n_chunks(tokens.len()) < spec.chunks {
        return Err(TestkitError::BadSource(format!(
            "the calibration text gives {} tokens, fewer than {} chunks of {}",
            tokens.len(),
            spec.chunks,
            spec.ctx
        )));
    }
    Ok((0..spec.chunks).map(|i| opts.chunk(&tokens, i)).collect())
}

/// Runs the dense model over the chunks and returns each layer's FFN activations.
fn capture(model: &Model<'_>, chunks: &[Vec<u32>], ctx: usize) -> Result<Vec<LayerActivations>> {
    let obs = FfnCapture {
        layers: (0..model.config.n_layer)
            .map(|_| Mutex::new(LayerActivations::default()))
            .collect(),
    };
    let mut s = model.session(ctx);
    for c in chunks {
        s.clear();
        s.eval(c, Logits::None, Some(&obs))?;
    }
    Ok(obs
        .layers
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum()
}

/// Scales `v` to unit length (left as is when zero).
fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
}

/// Index of the centroid with the largest cosine to `p` (ties to the lower index).
fn nearest(centroids: &[Vec<f32>], p: &[f32]) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for (c, v) in centroids.iter().enumerate() {
        let s = dot(v, p);
        if s > best.1 {
            best = (c, s);
        }
    }
    best
}

/// Spherical k-means of the unit rows of `points` (`dim` each): `k` unit centroids, seeded by
/// k-means++ (distance 1 - cosine) from `rng`.
fn spherical_kmeans(
    points: &[f32],
    dim: usize,
    k: usize,
    iters: usize,
    rng: &mut Rng,
) -> Vec<Vec<f32>> {
    let n = points.len() / dim;
    let row = |t: usize| &points[t * dim..(t + 1) * dim];
    let mut centroids: Vec<Vec<f32>> = vec![row(rng.below(n as u64) as usize).to_vec()];
    while centroids.len() < k {
        let d: Vec<f64> = (0..n)
            .map(|t| (1.0 - nearest(&centroids, row(t)).1).max(0.0))
            .collect();
        let total: f64 = d.iter().sum();
        let mut r = rng.uniform() * total;
        let mut pick = n - 1;
        for (t, &w) in d.iter().enumerate() {
            if r < w {
                pick = t;
                break;
            }
            r -= w;
        }
        centroids.push(row(pick).to_vec());
    }
    let mut assign = vec![usize::MAX; n];
    for _ in 0..iters {
        let mut changed = false;
        for (t, a) in assign.iter_mut().enumerate() {
            let c = nearest(&centroids, row(t)).0;
            changed |= *a != c;
            *a = c;
        }
        if !changed {
            break;
        }
        let mut sums = vec![vec![0f64; dim]; k];
        let mut sizes = vec![0usize; k];
        for (t, &c) in assign.iter().enumerate() {
            sizes[c] += 1;
            sums[c]
                .iter_mut()
                .zip(row(t))
                .for_each(|(s, &v)| *s += v as f64);
        }
        for c in 0..k {
            if sizes[c] == 0 {
                // An empty cluster restarts at the point least similar to every centroid.
                let far = (0..n)
                    .min_by(|&a, &b| {
                        nearest(&centroids, row(a))
                            .1
                            .total_cmp(&nearest(&centroids, row(b)).1)
                    })
                    .unwrap_or(0);
                centroids[c] = row(far).to_vec();
                continue;
            }
            centroids[c] = sums[c].iter().map(|&s| s as f32).collect();
            normalize(&mut centroids[c]);
        }
    }
    centroids
}

/// Indices of the `k` largest values, largest first, ties to the lower index (llama.cpp's
/// `argsort` order as the engine reproduces it).
fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// One layer's router (`n_expert` rows of `n_embd`) and the `ffn_down` column scales of each
/// expert (`n_expert` rows of `n_ff`).
struct LayerFit {
    router: Vec<f32>,
    down_scale: Vec<Vec<f32>>,
}

/// The router of one layer from its FFN inputs (`n_embd` per token): spherical k-means
/// centroids, each scaled by `router_gain / mean |x|` and by its cluster's share to the power
/// `popularity`. Returns `n_expert` rows of `n_embd`.
fn fit_router(ffn_in: &[f32], n_embd: usize, il: usize, spec: &RoutedSpec) -> Vec<f32> {
    let n = ffn_in.len() / n_embd;
    let mut unit = ffn_in.to_vec();
    let mut mean_norm = 0f64;
    for r in unit.chunks_exact_mut(n_embd) {
        mean_norm += dot(r, r).sqrt();
        normalize(r);
    }
    mean_norm /= n as f64;
    let mut rng = Rng::new(spec.seed, &format!("blk.{il}.kmeans"));
    let centroids = spherical_kmeans(&unit, n_embd, spec.n_expert, spec.kmeans_iters, &mut rng);
    let mut sizes = vec![0usize; spec.n_expert];
    for r in unit.chunks_exact(n_embd) {
        sizes[nearest(&centroids, r).0] += 1;
    }
    let scale = spec.router_gain as f64 / mean_norm;
    centroids
        .iter()
        .zip(&sizes)
        .flat_map(|(c, &size)| {
            let share = size as f64 * spec.n_expert as f64 / n as f64;
            let g = (scale * share.powf(spec.popularity as f64)) as f32;
            c.iter().map(move |v| v * g)
        })
        .collect()
}

/// The `ffn_down` column scales of each expert: `min(1, r_j)^specialization`, where `r_j` is
/// unit `j`'s mean squared activation (`down_in`, `n_ff` per token) over the (token, slot)
/// pairs `router` sends to the expert, divided by its mean over all pairs. An expert no
/// calibration token reaches keeps the dense FFN.
fn specialize(
    ffn_in: &[f32],
    down_in: &[f32],
    router: &[f32],
    n_embd: usize,
    n_ff: usize,
    spec: &RoutedSpec,
) -> Vec<Vec<f32>> {
    let mut energy = vec![vec![0f64; n_ff]; spec.n_expert];
    let mut count = vec![0usize; spec.n_expert];
    for (x, a) in ffn_in.chunks_exact(n_embd).zip(down_in.chunks_exact(n_ff)) {
        let logits: Vec<f32> = router
            .chunks_exact(n_embd)
            .map(|r| dot(r, x) as f32)
            .collect();
        for e in top_k(&logits, spec.n_expert_used) {
            count[e] += 1;
            energy[e]
                .iter_mut()
                .zip(a)
                .for_each(|(s, &v)| *s += (v as f64) * (v as f64));
        }
    }
    let pairs = count.iter().sum::<usize>().max(1) as f64;
    let overall: Vec<f64> = (0..n_ff)
        .map(|j| energy.iter().map(|en| en[j]).sum::<f64>() / pairs)
        .collect();
    energy
        .iter()
        .zip(&count)
        .map(|(en, &c)| {
            en.iter()
                .zip(&overall)
                .map(|(&e, &o)| {
                    if c == 0 || o <= 0.0 {
                        return 1.0;
                    }
                    let rel = e / c as f64 / o;
                    rel.min(1.0).powf(spec.specialization as f64) as f32
                })
                .collect()
        })
        .collect()
}

fn fit_layer(
    acts: &LayerActivations,
    n_embd: usize,
    n_ff: usize,
    il: usize,
    spec: &RoutedSpec,
) -> Result<LayerFit> {
    let n = acts.ffn_in.len() / n_embd;
    if n < spec.n_expert || acts.down_in.len() != n * n_ff {
        return Err(TestkitError::BadSource(format!(
            "layer {il}: captured {} FFN inputs and {} down inputs",
            acts.ffn_in.len(),
            acts.down_in.len()
        )));
    }
    let router = fit_router(&acts.ffn_in, n_embd, il, spec);
    let down_scale = specialize(&acts.ffn_in, &acts.down_in, &router, n_embd, n_ff, spec);
    Ok(LayerFit { router, down_scale })
}

/// Writes `smollm2-moe-routed` from `smollm2-768` (`dense`) and its imatrix, both fitted on
/// the first [`RoutedSpec::chunks`] chunks of `calibration` (the text of `groups_merged.txt`);
/// `dataset` names the text in the imatrix. `progress` is told each step.
pub fn write_moe_routed(
    dense: &GgufModel,
    calibration: &str,
    dataset: &str,
    spec: &RoutedSpec,
    out_model: &Path,
    out_imatrix: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<RoutedReport> {
    if spec.n_expert < 2 || spec.n_expert_used == 0 || spec.n_expert_used >= spec.n_expert {
        return Err(TestkitError::BadSource(format!(
            "{} of {} experts used: need 1 <= used < experts",
            spec.n_expert_used, spec.n_expert
        )));
    }
    let tok = Tokenizer::from_gguf(dense.metadata())
        .map_err(|e| TestkitError::BadSource(format!("tokenizer: {e}")))?;
    let chunks = calibration_chunks(&tok, calibration, spec)?;
    let tokens = chunks.len() * spec.ctx;
    let engine = Model::load(dense)?;
    if engine.config.moe.is_some() {
        return Err(TestkitError::BadSource(
            "the dense model already has experts".into(),
        ));
    }
    let c = &engine.config;
    let (n_embd, n_ff, n_layer) = (c.n_embd, c.n_ff, c.n_layer);
    let mut seconds = [0.0; 3];

    let t = std::time::Instant::now();
    let acts = capture(&engine, &chunks, spec.ctx)?;
    let fits = acts
        .iter()
        .enumerate()
        .map(|(il, a)| fit_layer(a, n_embd, n_ff, il, spec))
        .collect::<Result<Vec<_>>>()?;
    drop(acts);
    seconds[0] = t.elapsed().as_secs_f64();
    progress(&format!(
        "  dense pass over {tokens} calibration tokens and router fit: {:.1} s",
        seconds[0]
    ));

    let t = std::time::Instant::now();
    write_experts_model(dense, &fits, spec, n_embd, n_ff, out_model)?;
    seconds[1] = t.elapsed().as_secs_f64();
    progress(&format!("  experts model written: {:.1} s", seconds[1]));

    let t = std::time::Instant::now();
    let gguf = GgufModel::open(out_model, Access::Mmap)?;
    let moe = Model::load(&gguf)?;
    // As `dynquant imatrix` (and llama-imatrix by default): no output projection.
    let collector = Collector::new(vec!["output.weight".into(), "token_embd.weight".into()]);
    let mut s = moe.session(spec.ctx);
    for c in &chunks {
        s.clear();
        s.eval(c, Logits::None, Some(&collector))?;
    }
    let im = collector.to_imatrix(
        vec![dataset.to_string()],
        chunks.len() as u32,
        spec.ctx as u32,
    );
    im.write(
        out_imatrix,
        &WriteOptions {
            overwrite: true,
            protected_inputs: dense.paths(),
        },
    )?;
    seconds[2] = t.elapsed().as_secs_f64();
    progress(&format!(
        "  imatrix pass of the experts model: {:.1} s",
        seconds[2]
    ));
    Ok(RoutedReport {
        shares: expert_shares(&im, n_layer),
        tokens,
        seconds,
    })
}

/// Writes the experts model: `dense`'s tensors, each FFN replaced by the router and the experts
/// of `fits`.
fn write_experts_model(
    dense: &GgufModel,
    fits: &[LayerFit],
    spec: &RoutedSpec,
    n_embd: usize,
    n_ff: usize,
    out_model: &Path,
) -> Result<()> {
    let mut md = dense.merged_metadata();
    md.replace("llama.expert_count", Value::U32(spec.n_expert as u32));
    md.replace(
        "llama.expert_used_count",
        Value::U32(spec.n_expert_used as u32),
    );
    let name = md
        .get(keys::general::NAME)
        .and_then(Value::as_str)
        .unwrap_or("SmolLM2")
        .to_string();
    md.replace(
        keys::general::NAME,
        Value::String(format!(
            "{name}, {} routed experts ({} used)",
            spec.n_expert, spec.n_expert_used
        )),
    );
    let (e, ff, ne) = (n_embd as u64, n_ff as u64, spec.n_expert as u64);
    let mut planned = Vec::new();
    for t in dense.tensors() {
        let name = t.info.name.clone();
        let Some((il, role)) =
            block_role(&name).filter(|(_, r)| r.starts_with("ffn_") && *r != "ffn_norm")
        else {
            let ty = t.info.ggml_type;
            planned.push(Planned::new(
                name.clone(),
                t.info.shape.clone(),
                ty,
                move || read_f32(dense, &name).map(|(_, v)| v),
            )?);
            continue;
        };
        let fit = &fits[il];
        let block = format!("blk.{il}");
        match role {
            "ffn_gate" | "ffn_up" => {
                if role == "ffn_gate" {
                    planned.push(Planned::new(
                        format!("{block}.ffn_gate_inp.weight"),
                        vec![e, ne],
                        GgmlType::F32,
                        || Ok(fit.router.clone()),
                    )?);
                }
                let n_exp = spec.n_expert;
                planned.push(Planned::new(
                    format!("{block}.{role}_exps.weight"),
                    vec![e, ff, ne],
                    GgmlType::F16,
                    move || read_f32(dense, &name).map(|(_, v)| v.repeat(n_exp)),
                )?);
            }
            "ffn_down" => planned.push(Planned::new(
                format!("{block}.ffn_down_exps.weight"),
                vec![ff, e, ne],
                GgmlType::F16,
                move || {
                    let (_, v) = read_f32(dense, &name)?;
                    let mut out = Vec::with_capacity(v.len() * fit.down_scale.len());
                    for scale in &fit.down_scale {
                        for row in v.chunks_exact(n_ff) {
                            out.extend(row.iter().zip(scale).map(|(w, s)| w * s));
                        }
                    }
                    Ok(out)
                },
            )?),
            other => {
                return Err(TestkitError::BadSource(format!(
                    "no expert mapping for '{other}' in blk.{il}"
                )))
            }
        }
    }
    write_model(out_model, md, planned)
}

/// Counts the (token, slot) pairs routed to each expert of each layer while a model runs (a
/// [`MatmulObserver`]: pass it to [`dynquant_engine::Session::eval`]).
#[derive(Debug)]
pub struct ExpertUsage {
    counts: Mutex<Vec<Vec<u64>>>,
}

impl ExpertUsage {
    /// A counter for a model of `n_layer` blocks.
    pub fn new(n_layer: usize) -> Self {
        ExpertUsage {
            counts: Mutex::new(vec![Vec::new(); n_layer]),
        }
    }

    /// Per layer, the pairs each expert received (empty for a layer without experts).
    pub fn counts(&self) -> Vec<Vec<u64>> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Per layer, each expert's share of the layer's pairs.
    pub fn shares(&self) -> Vec<Vec<f64>> {
        self.counts()
            .iter()
            .map(|c| shares_of(&c.iter().map(|&n| n as f64).collect::<Vec<_>>()))
            .collect()
    }
}

impl MatmulObserver for ExpertUsage {
    fn observe(&self, _: &Weight<'_>, _: &[f32], _: usize) {}

    fn observe_expert(
        &self,
        w: &Weight<'_>,
        expert: usize,
        n_expert: usize,
        _: &[f32],
        n_tok: usize,
    ) {
        // Every routed pair passes through the expert's up projection exactly once.
        let Some((il, "ffn_up_exps")) = block_role(&w.name) else {
            return;
        };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(layer) = counts.get_mut(il) {
            if layer.len() < n_expert {
                layer.resize(n_expert, 0);
            }
            if let Some(c) = layer.get_mut(expert) {
                *c += n_tok as u64;
            }
        }
    }
}

fn shares_of(counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    counts.iter().map(|&c| c / total.max(1.0)).collect()
}

/// Per layer, each expert's share of the routed (token, slot) pairs recorded in `im` (the
/// counts of `blk.N.ffn_up_exps.weight`); empty for a layer without that entry.
pub fn expert_shares(im: &Imatrix, n_layer: usize) -> Vec<Vec<f64>> {
    (0..n_layer)
        .map(|il| {
            im.get(&format!("blk.{il}.ffn_up_exps.weight"))
                .map(|e| shares_of(&e.counts.iter().map(|&c| c as f64).collect::<Vec<_>>()))
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points near each of the unit directions `dirs` (dimension `dim`), interleaved.
    fn clusters(dim: usize, dirs: &[usize], n: usize) -> Vec<f32> {
        let mut rng = Rng::new(1, "points");
        let mut out = Vec::new();
        for _ in 0..n {
            for &d in dirs {
                let mut p: Vec<f32> = (0..dim).map(|_| 0.1 * rng.normal() as f32).collect();
                p[d] += 1.0;
                out.extend(p);
            }
        }
        out
    }

    fn spec(n_expert: usize, n_expert_used: usize) -> RoutedSpec {
        RoutedSpec {
            n_expert,
            n_expert_used,
            ..RoutedSpec::default()
        }
    }

    #[test]
    fn names_parse_into_block_and_role() {
        assert_eq!(block_role("blk.12.ffn_gate.weight"), Some((12, "ffn_gate")));
        assert_eq!(
            block_role("blk.0.ffn_up_exps.weight"),
            Some((0, "ffn_up_exps"))
        );
        assert_eq!(block_role("output.weight"), None);
        assert_eq!(block_role("blk.x.ffn_gate.weight"), None);
    }

    #[test]
    fn kmeans_finds_separated_directions_deterministically() {
        let dim = 8;
        let mut pts = clusters(dim, &[0, 3, 5], 40);
        for r in pts.chunks_exact_mut(dim) {
            normalize(r);
        }
        let run = |seed| spherical_kmeans(&pts, dim, 3, 30, &mut Rng::new(seed, "k"));
        let c = run(7);
        assert_eq!(c, run(7));
        let mut found: Vec<usize> = c
            .iter()
            .map(|v| (0..dim).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap())
            .collect();
        found.sort_unstable();
        assert_eq!(found, vec![0, 3, 5]);
        for v in &c {
            assert!((dot(v, v) - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn router_rows_grow_with_their_cluster_and_route_by_direction() {
        let dim = 8;
        // Direction 0 three times as common as direction 4.
        let mut pts = clusters(dim, &[0, 0, 0, 4], 30);
        pts.iter_mut().for_each(|v| *v *= 3.0);
        let even = fit_router(
            &pts,
            dim,
            0,
            &RoutedSpec {
                popularity: 0.0,
                ..spec(2, 1)
            },
        );
        let popular = fit_router(&pts, dim, 0, &spec(2, 1));
        let norms =
            |r: &[f32]| -> Vec<f64> { r.chunks_exact(dim).map(|v| dot(v, v).sqrt()).collect() };
        let (n_even, n_pop) = (norms(&even), norms(&popular));
        // router_gain / mean |x| with |x| about 3.
        assert!((n_even[0] - n_even[1]).abs() < 1e-5);
        assert!((n_even[0] - 8.0 / 3.0).abs() < 0.15, "{n_even:?}");
        // The row pointing along direction 0 is the common cluster's.
        let big = if popular[0] > popular[dim] { 0 } else { 1 };
        assert!(popular[big * dim] > 0.9 * n_pop[big] as f32);
        assert!(n_pop[big] > n_pop[1 - big]);
        // A point along direction 4 goes to the small cluster's expert all the same.
        let mut x = vec![0f32; dim];
        x[4] = 3.0;
        let logits: Vec<f32> = popular
            .chunks_exact(dim)
            .map(|r| dot(r, &x) as f32)
            .collect();
        assert_eq!(top_k(&logits, 1), vec![1 - big]);
    }

    #[test]
    fn experts_damp_the_units_their_tokens_use_less() {
        let (dim, n_ff) = (4, 3);
        // Tokens along direction 0 use unit 0, tokens along 1 use unit 1; unit 2 is used by all.
        let mut ffn_in = Vec::new();
        let mut down_in = Vec::new();
        for t in 0..20 {
            let d = t % 2;
            let mut x = vec![0f32; dim];
            x[d] = 1.0;
            ffn_in.extend(&x);
            let mut a = vec![0f32; n_ff];
            a[d] = 2.0;
            a[2] = 1.0;
            down_in.extend(a);
        }
        let mut router = vec![0f32; 2 * dim];
        router[0] = 1.0;
        router[dim + 1] = 1.0;
        let s = specialize(&ffn_in, &down_in, &router, dim, n_ff, &spec(2, 1));
        // Expert 0: unit 0 used twice as much as on average, unit 1 never, unit 2 as usual.
        assert_eq!(s[0], vec![1.0, 0.0, 1.0]);
        assert_eq!(s[1], vec![0.0, 1.0, 1.0]);
        let exact = RoutedSpec {
            specialization: 0.0,
            ..spec(2, 1)
        };
        let s = specialize(&ffn_in, &down_in, &router, dim, n_ff, &exact);
        assert!(s.iter().flatten().all(|&v| v == 1.0));
    }

    #[test]
    fn expert_usage_counts_routed_pairs_per_layer() {
        let usage = ExpertUsage::new(2);
        let w = |name: &str| {
            Weight::new(
                name,
                GgmlType::F32,
                4,
                1,
                std::borrow::Cow::Owned(vec![0u8; 16]),
            )
            .unwrap()
        };
        usage.observe_expert(&w("blk.1.ffn_up_exps.weight"), 2, 4, &[], 3);
        usage.observe_expert(&w("blk.1.ffn_up_exps.weight"), 0, 4, &[], 1);
        usage.observe_expert(&w("blk.1.ffn_gate_exps.weight"), 0, 4, &[], 5);
        usage.observe_expert(&w("blk.7.ffn_up_exps.weight"), 0, 4, &[], 5);
        assert_eq!(usage.counts(), vec![vec![], vec![1, 0, 3, 0]]);
        assert_eq!(usage.shares()[1], vec![0.25, 0.0, 0.75, 0.0]);
    }
}
