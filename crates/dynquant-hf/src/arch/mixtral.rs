//! `MixtralForCausalLM` -> `llama` with experts: `block_sparse_moe.experts.<e>.w1/w2/w3`
//! stacked into `ffn_gate_exps` / `ffn_down_exps` / `ffn_up_exps` (in that order, once a
//! layer's experts are all read), the router as `ffn_gate_inp`.

use dynquant_gguf::Metadata;

use super::checkpoint::{attention, embeddings, AttnParts, Dims, TensorList};
use super::llama::{llama_extra, llama_map};
use super::{expert_of, Arch, Mapped, Params};
use crate::config::Config;
use crate::error::{HfError, Result};

pub(crate) struct Mixtral;

impl Arch for Mixtral {
    fn generated(&self, cfg: &Config) -> Result<Vec<super::OutTensor>> {
        super::llama::llama3_rope_freqs(cfg)
    }
    fn gguf_arch(&self) -> &'static str {
        "llama"
    }
    fn extra_params(&self, cfg: &Config, p: &Params, md: &mut Metadata) -> Result<()> {
        llama_extra(cfg, p, md)
    }
    fn map(&self, name: &str, layer: Option<usize>, cfg: &Config) -> Result<Mapped> {
        if let Some((expert, proj)) = expert_of(name, ".block_sparse_moe.experts.") {
            let proj = match proj.as_str() {
                "w1" => "w1",
                "w2" => "w2",
                "w3" => "w3",
                _ => return Err(HfError::UnmappedTensor(name.into())),
            };
            let layer = layer.ok_or_else(|| HfError::UnmappedTensor(name.into()))?;
            return Ok(Mapped::Expert {
                layer,
                proj,
                expert,
            });
        }
        llama_map(name, cfg)
    }
    fn expert_projs(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("w1", "ffn_gate_exps"),
            ("w2", "ffn_down_exps"),
            ("w3", "ffn_up_exps"),
        ]
    }
    fn n_experts(&self, cfg: &Config) -> Result<usize> {
        Ok(cfg.req_u64(&["num_local_experts"])? as usize)
    }
    fn prefers_spm(&self) -> bool {
        true
    }
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>> {
        let d = Dims::of(cfg)?;
        let n_exp = cfg.req_u64(&["num_local_experts"])? as usize;
        let ff = cfg.req_u64(&["intermediate_size"])? as usize;
        let mut out = TensorList::default();
        embeddings(cfg, &d, &mut out);
        for l in 0..d.n_layer {
            attention(l, &d, AttnParts::default(), &mut out);
            let moe = format!("model.layers.{l}.block_sparse_moe");
            out.add(format!("{moe}.gate.weight"), &[n_exp, d.hidden]);
            for e in 0..n_exp {
                let x = format!("{moe}.experts.{e}");
                out.add(format!("{x}.w1.weight"), &[ff, d.hidden]);
                out.add(format!("{x}.w2.weight"), &[d.hidden, ff]);
                out.add(format!("{x}.w3.weight"), &[ff, d.hidden]);
            }
        }
        Ok(out.0)
    }
}
