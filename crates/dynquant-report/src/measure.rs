//! A quant's next-token distributions against the base's, position by position over the base
//! file's chunks: the summary statistics of `dynquant kld` plus the whole percentile curve and
//! perplexity's standard error.

use dynquant_engine::eval::{for_each_scored_with, PplAccumulator, ScoredWith};
use dynquant_engine::evaluation::{Evaluator, Progress};
use dynquant_engine::kld::{tokenizer_sha256, Base, KldAccumulator, KldPosition};
use dynquant_engine::ops::log_softmax;
use dynquant_engine::EngineError;
use dynquant_gguf::GgufModel;

use crate::error::{ReportError, Result};
use crate::report::{CurvePoint, KldSummary};

/// Percentiles at which the KL-divergence curve is sampled.
pub fn curve_percentiles() -> Vec<f64> {
    let mut p: Vec<f64> = (0..=98).map(f64::from).collect();
    p.extend([99.0, 99.5, 99.9, 100.0]);
    p
}

/// What one comparison measured.
#[derive(Debug, Clone, PartialEq)]
pub struct KldMeasurement {
    /// Summary statistics.
    pub summary: KldSummary,
    /// KL divergence at [`curve_percentiles`].
    pub curve: Vec<CurvePoint>,
    /// The base's perplexity over the same positions.
    pub ppl_base: f64,
}

/// The value at percentile `pct` of sorted values (nearest rank, as `KldStats` takes them).
fn percentile(sorted: &[f64], pct: f64) -> f64 {
    let n = sorted.len();
    sorted[((pct / 100.0 * (n - 1) as f64).round() as usize).min(n - 1)]
}

/// Compares the model of `ev` (loaded from `gguf`) with `base`; a base of another tokenizer or
/// vocabulary is refused. Progress as [`Evaluator::kld`] reports it.
pub fn measure_kld(
    ev: &Evaluator<'_>,
    gguf: &GgufModel,
    base: &Base,
    mut progress: impl FnMut(Progress),
) -> Result<KldMeasurement> {
    let model = ev.model();
    base.check_compatible(&tokenizer_sha256(gguf), None, model.n_vocab)?;
    let h = &base.header;
    let chunking = ev.chunking(h.ctx, Some(h.chunks));
    if chunking.n_chunks(base.tokens.len()) != h.chunks {
        return Err(ReportError::Invalid(format!(
            "{}: its tokens do not give {} chunks",
            base.path.display(),
            h.chunks
        )));
    }
    progress(Progress::Start {
        n_tokens: base.tokens.len(),
        n_chunks: h.chunks,
    });
    let mut acc = KldAccumulator::default();
    let mut ppl = PplAccumulator::default();
    let mut klds = Vec::with_capacity(base.positions.len());
    // each scored position compared on the thread pool, then accumulated in order; chunk `i`'s
    // positions `first..ctx - 1` follow the earlier chunks' `per_chunk` each in the base
    let first = h.ctx / 2;
    let per_chunk = h.ctx - 1 - first;
    let score = |i: usize, j: usize, logits: &[f32], next: u32| {
        let p = base.positions.get(i * per_chunk + j - first)?;
        Some(KldPosition::new(p, &log_softmax(logits), next))
    };
    for_each_scored_with(model, &base.tokens, &chunking, score, |ev| {
        match ev {
            ScoredWith::Position { value, .. } => {
                let v = value.ok_or_else(|| {
                    EngineError::Invalid("the base file has too few positions".into())
                })?;
                klds.push(v.kld());
                ppl.add(v.logp_next());
                acc.push(v);
            }
            ScoredWith::ChunkDone(i) => progress(Progress::Chunk {
                chunk: i,
                value: acc.stats().map(|s| s.kld_mean),
            }),
        }
        Ok(())
    })?;
    let s = acc
        .stats()
        .ok_or_else(|| ReportError::Invalid("no positions compared".into()))?;
    klds.sort_by(f64::total_cmp);
    let curve = curve_percentiles()
        .into_iter()
        .map(|pct| CurvePoint {
            pct,
            kld: percentile(&klds, pct),
        })
        .collect();
    Ok(KldMeasurement {
        summary: KldSummary {
            mean: s.kld_mean,
            mean_err: s.kld_err,
            median: s.kld_median,
            p90: s.kld_p90,
            p99: s.kld_p99,
            p999: s.kld_p999,
            max: s.kld_max,
            top1: s.same_top,
            rms_dp: s.rms_dp,
            ppl: s.ppl,
            ppl_err: ppl.ppl_err(),
        },
        curve,
        ppl_base: s.ppl_base,
    })
}
