//! A one-layer F32 llama model (no attention) whose two FFN matrices have any size: a model
//! larger than the quantize memory bound, so a measurement shows the bound does not grow with
//! the model. Values are generated and written a slab at a time, so writing it needs little
//! memory whatever its size.

use std::path::Path;

use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{keys, GgufWriter, Metadata, OutputTarget, TensorInfo, Value, WriteOptions};

use crate::rng::Rng;
use crate::{Result, SynthError};

/// Width of the residual stream.
const N_EMBD: u64 = 4096;
/// Vocabulary size (the embedding has no output head; the model only needs to be quantized).
const N_VOCAB: u64 = 256;
/// Values generated and written per slab.
const SLAB: u64 = 1 << 20;

/// Writes the model to `out` (replacing any file there) with FFN matrices of about `ffn_mib`
/// MiB each as F32 (rounded down to a multiple of 256 rows); returns the bytes written.
pub fn write_big_llama(out: &Path, ffn_mib: u64) -> Result<u64> {
    let n_ff = (ffn_mib << 20) / (4 * N_EMBD);
    if n_ff < 256 {
        return Err(SynthError::BadSpec(format!(
            "FFN matrices of {ffn_mib} MiB have fewer than 256 rows of {N_EMBD}"
        )));
    }
    let n_ff = n_ff / 256 * 256;
    let arch = "llama";
    let mut md = Metadata::new();
    md.set(keys::general::ARCHITECTURE, Value::String(arch.into()));
    md.set(
        keys::general::NAME,
        Value::String("dynquant big-model".into()),
    );
    md.set(keys::general::FILE_TYPE, Value::U32(0));
    for (k, v) in [
        ("block_count", 1),
        ("context_length", 2048),
        ("embedding_length", N_EMBD as u32),
        ("feed_forward_length", n_ff as u32),
        ("attention.head_count", 32),
        ("attention.head_count_kv", 32),
    ] {
        md.set(format!("{arch}.{k}"), Value::U32(v));
    }
    md.set(
        format!("{arch}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    );
    let tensors = vec![
        ("token_embd.weight", vec![N_EMBD, N_VOCAB]),
        ("blk.0.ffn_norm.weight", vec![N_EMBD]),
        ("blk.0.ffn_up.weight", vec![N_EMBD, n_ff]),
        ("blk.0.ffn_down.weight", vec![n_ff, N_EMBD]),
        ("output_norm.weight", vec![N_EMBD]),
    ];
    let infos = tensors
        .iter()
        .map(|(n, s)| TensorInfo::new(n.to_string(), s.clone(), GgmlType::F32))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = WriteOptions {
        overwrite: true,
        protected_inputs: Vec::new(),
    };
    let mut w = GgufWriter::create(&OutputTarget::Single(out.to_path_buf()), md, infos, &opts)?;
    let mut buf = Vec::with_capacity(4 * SLAB as usize);
    for (name, shape) in &tensors {
        let n: u64 = shape.iter().product();
        let mut rng = Rng::new(7, name);
        let mut done = 0;
        while done < n {
            let k = (n - done).min(SLAB);
            buf.clear();
            for _ in 0..k {
                // Norms 1, matrix entries uniform in ±0.02.
                let v = if shape.len() == 1 {
                    1.0
                } else {
                    ((rng.uniform() - 0.5) * 0.04) as f32
                };
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write(name, &buf)?;
            done += k;
        }
    }
    Ok(w.finish()?.bytes)
}
