//! Writes a synthetic two-shard Llama checkpoint whose embedding is one large BF16 tensor, for
//! measuring that conversion streams (scripts/hf-rss.sh). Data is written in chunks, never
//! held whole.
//!
//! Usage: synth_checkpoint OUT_DIR [VOCAB] (default vocab 262144 x hidden 2048 = 1 GiB BF16)

use std::io::Write;
use std::path::Path;

fn write_shard(path: &Path, tensors: &[(&str, Vec<usize>)], seed: u64) -> std::io::Result<u64> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, shape) in tensors {
        let n: usize = shape.iter().product::<usize>() * 2;
        header.insert(
            (*name).into(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    f.write_all(&(h.len() as u64).to_le_bytes())?;
    f.write_all(&h)?;
    let mut state = seed | 1;
    let mut buf = Vec::with_capacity(1 << 20);
    for (_, shape) in tensors {
        let mut left: usize = shape.iter().product();
        while left > 0 {
            let n = left.min(1 << 19);
            buf.clear();
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Uniform in about [-0.03, 0.03], as bf16.
                let x = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.06;
                buf.extend_from_slice(&((x.to_bits() >> 16) as u16).to_le_bytes());
            }
            f.write_all(&buf)?;
            left -= n;
        }
    }
    f.flush()?;
    Ok((8 + h.len() + off) as u64)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .expect("usage: synth_checkpoint OUT_DIR [VOCAB]");
    let vocab: usize = args.next().map_or(262_144, |v| v.parse().expect("vocab"));
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    let (hidden, ff, heads, kv, hd) = (2048usize, 512usize, 16usize, 8usize, 128usize);
    let shard1 = [("model.embed_tokens.weight", vec![vocab, hidden])];
    let l = |s: &str| format!("model.layers.0.{s}");
    let names2: Vec<(String, Vec<usize>)> = vec![
        (l("input_layernorm.weight"), vec![hidden]),
        (l("mlp.down_proj.weight"), vec![hidden, ff]),
        (l("mlp.gate_proj.weight"), vec![ff, hidden]),
        (l("mlp.up_proj.weight"), vec![ff, hidden]),
        (l("post_attention_layernorm.weight"), vec![hidden]),
        (l("self_attn.k_proj.weight"), vec![kv * hd, hidden]),
        (l("self_attn.o_proj.weight"), vec![hidden, heads * hd]),
        (l("self_attn.q_proj.weight"), vec![heads * hd, hidden]),
        (l("self_attn.v_proj.weight"), vec![kv * hd, hidden]),
        ("model.norm.weight".into(), vec![hidden]),
    ];
    let shard2: Vec<(&str, Vec<usize>)> = names2
        .iter()
        .map(|(n, s)| (n.as_str(), s.clone()))
        .collect();
    let f1 = "model-00001-of-00002.safetensors";
    let f2 = "model-00002-of-00002.safetensors";
    let s1 = write_shard(&out.join(f1), &shard1, 1)?;
    let s2 = write_shard(&out.join(f2), &shard2, 2)?;
    let mut map = serde_json::Map::new();
    for (n, _) in &shard1 {
        map.insert((*n).into(), f1.into());
    }
    for (n, _) in &shard2 {
        map.insert((*n).into(), f2.into());
    }
    let index = serde_json::json!({"metadata": {"total_size": s1 + s2}, "weight_map": map});
    std::fs::write(
        out.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index)?,
    )?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": 1,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "vocab_size": vocab, "tie_word_embeddings": true, "bos_token_id": 0, "eos_token_id": 1,
        "torch_dtype": "bfloat16"
    });
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    // A minimal byte-level BPE tokenizer: ids past it are padded as [PAD<i>] by the converter.
    let mut vocab_map = serde_json::Map::new();
    vocab_map.insert("<s>".into(), 0.into());
    vocab_map.insert("</s>".into(), 1.into());
    for b in 0..256u32 {
        vocab_map.insert(format!("<0x{b:02X}>"), (2 + b).into());
    }
    let tok = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "<s>", "special": true, "normalized": false},
            {"id": 1, "content": "</s>", "special": true, "normalized": false}
        ],
        "model": {"type": "BPE", "vocab": vocab_map, "merges": []}
    });
    std::fs::write(out.join("tokenizer.json"), serde_json::to_string(&tok)?)?;
    println!("{} ({} + {} bytes)", out.display(), s1, s2);
    Ok(())
}
