//! Tensor roles from GGUF tensor names.
//!
//! Names follow llama.cpp's `LLM_TENSOR_NAMES` (`src/llama-arch.cpp`): non-block tensors
//! (`token_embd`, `output`, `output_norm`) and block tensors `blk.N.<part>.<weight|bias>`.
//! One parser serves weights and imatrix entries alike, so the two cannot drift apart.

use dynquant_gguf::TensorInfo;

/// What a tensor does in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `token_embd`: token embedding (a row lookup, never a matmul input for imatrix).
    TokenEmbd,
    /// `output`: the LM head.
    Output,
    /// Attention query (`attn_q`), or DeepSeek lite models' full query.
    AttnQ,
    /// Attention key (`attn_k`).
    AttnK,
    /// Attention value (`attn_v`).
    AttnV,
    /// Fused QKV (`attn_qkv`).
    AttnQkv,
    /// Attention output projection (`attn_output`).
    AttnOutput,
    /// MLA query down-projection (`attn_q_a`).
    AttnQA,
    /// MLA query up-projection (`attn_q_b`).
    AttnQB,
    /// MLA joint KV down-projection with rope part (`attn_kv_a_mqa`).
    AttnKvAMqa,
    /// Legacy MLA KV up-projection (`attn_kv_b`).
    AttnKvB,
    /// MLA absorbed key up-projection (`attn_k_b`, 3-D per head).
    AttnKB,
    /// MLA absorbed value up-projection (`attn_v_b`, 3-D per head).
    AttnVB,
    /// Per-head attention sinks (`attn_sinks`, gpt-oss): a learned logit joining each head's
    /// softmax.
    AttnSinks,
    /// Dense FFN gate (`ffn_gate`).
    FfnGate,
    /// Dense FFN up (`ffn_up`).
    FfnUp,
    /// Dense FFN down (`ffn_down`).
    FfnDown,
    /// Routed experts' gates (`ffn_gate_exps`, 3-D).
    ExpertGate,
    /// Routed experts' ups (`ffn_up_exps`, 3-D).
    ExpertUp,
    /// Routed experts' downs (`ffn_down_exps`, 3-D).
    ExpertDown,
    /// Fused routed gate+up (`ffn_gate_up_exps`, 3-D).
    ExpertGateUp,
    /// Shared expert gate (`ffn_gate_shexp`).
    SharedGate,
    /// Shared expert up (`ffn_up_shexp`).
    SharedUp,
    /// Shared expert down (`ffn_down_shexp`).
    SharedDown,
    /// MoE router (`ffn_gate_inp`), and the shared expert's gate (`ffn_gate_inp_shexp`).
    Router,
    /// The router's bias: DeepSeek's expert selection bias (`exp_probs_b`,
    /// e_score_correction_bias), gpt-oss's router logit bias (`ffn_gate_inp.bias`).
    RouterBias,
    /// A matrix of a NextN / multi-token-prediction block (GLM-4.5's last block): its
    /// `nextn.{eh_proj,embed_tokens,shared_head_head}` and the block's attention and FFN
    /// matrices. llama.cpp skips the block when it evaluates the model, so no importance matrix
    /// covers it: it must get types that need none.
    Nextn,
    /// Any normalization weight (`*_norm`).
    Norm,
    /// Any bias vector (`*.bias`) other than the router bias.
    Bias,
    /// Anything else (position embeddings, rope factors, vision parts...).
    Other,
}

impl Role {
    /// The recipe-file spelling of this role.
    pub fn name(self) -> &'static str {
        use Role::*;
        match self {
            TokenEmbd => "token_embd",
            Output => "output",
            AttnQ => "attn_q",
            AttnK => "attn_k",
            AttnV => "attn_v",
            AttnQkv => "attn_qkv",
            AttnOutput => "attn_output",
            AttnQA => "attn_q_a",
            AttnQB => "attn_q_b",
            AttnKvAMqa => "attn_kv_a_mqa",
            AttnKvB => "attn_kv_b",
            AttnKB => "attn_k_b",
            AttnVB => "attn_v_b",
            AttnSinks => "attn_sinks",
            FfnGate => "ffn_gate",
            FfnUp => "ffn_up",
            FfnDown => "ffn_down",
            ExpertGate => "ffn_gate_exps",
            ExpertUp => "ffn_up_exps",
            ExpertDown => "ffn_down_exps",
            ExpertGateUp => "ffn_gate_up_exps",
            SharedGate => "ffn_gate_shexp",
            SharedUp => "ffn_up_shexp",
            SharedDown => "ffn_down_shexp",
            Router => "router",
            RouterBias => "router_bias",
            Nextn => "nextn",
            Norm => "norm",
            Bias => "bias",
            Other => "other",
        }
    }

    /// Every role, for help texts and recipe validation.
    pub const ALL: [Role; 30] = {
        use Role::*;
        [
            TokenEmbd,
            Output,
            AttnQ,
            AttnK,
            AttnV,
            AttnQkv,
            AttnOutput,
            AttnQA,
            AttnQB,
            AttnKvAMqa,
            AttnKvB,
            AttnKB,
            AttnVB,
            AttnSinks,
            FfnGate,
            FfnUp,
            FfnDown,
            ExpertGate,
            ExpertUp,
            ExpertDown,
            ExpertGateUp,
            SharedGate,
            SharedUp,
            SharedDown,
            Router,
            RouterBias,
            Nextn,
            Norm,
            Bias,
            Other,
        ]
    };

    /// Parses a recipe-file role name.
    pub fn from_name(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// Whether the role belongs to attention.
    pub fn is_attention(self) -> bool {
        use Role::*;
        matches!(
            self,
            AttnQ
                | AttnK
                | AttnV
                | AttnQkv
                | AttnOutput
                | AttnQA
                | AttnQB
                | AttnKvAMqa
                | AttnKvB
                | AttnKB
                | AttnVB
        )
    }

    /// Whether the role is a routed-expert tensor (3-D, one matrix per expert).
    pub fn is_routed_expert(self) -> bool {
        matches!(
            self,
            Role::ExpertGate | Role::ExpertUp | Role::ExpertDown | Role::ExpertGateUp
        )
    }

    /// Whether the role is a shared-expert tensor.
    pub fn is_shared_expert(self) -> bool {
        matches!(self, Role::SharedGate | Role::SharedUp | Role::SharedDown)
    }
}

/// Whether a block holds routed experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A block with a dense FFN.
    Dense,
    /// A block with routed experts.
    Moe,
}

/// A tensor's role and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorClass {
    /// Role.
    pub role: Role,
    /// Block index, for `blk.N.*` tensors.
    pub layer: Option<u32>,
    /// Kind of the block (None outside blocks).
    pub layer_kind: Option<LayerKind>,
    /// Index of the block among MoE blocks (0 for the first MoE layer), for MoE blocks.
    pub moe_index: Option<u32>,
    /// Expert count of a routed-expert tensor (its third dimension).
    pub n_expert: Option<u64>,
}

/// Role and layer from a tensor name alone.
pub fn parse_name(name: &str) -> (Role, Option<u32>) {
    let (layer, rest) = match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        Some((n, rest)) => match n.parse::<u32>() {
            Ok(l) => (Some(l), rest),
            Err(_) => (None, name),
        },
        None => (None, name),
    };
    let (base, suffix) = rest.rsplit_once('.').unwrap_or((rest, ""));
    use Role::*;
    if suffix == "bias" {
        return (
            if base == "exp_probs_b" || base == "ffn_gate_inp" {
                RouterBias
            } else {
                Bias
            },
            layer,
        );
    }
    if base.ends_with("_norm") || base == "norm" {
        return (Norm, layer);
    }
    if let Some(part) = base.strip_prefix("nextn.") {
        return (
            if matches!(part, "enorm" | "hnorm") {
                Norm
            } else {
                Nextn
            },
            layer,
        );
    }
    let role = match base {
        "token_embd" => TokenEmbd,
        "output" => Output,
        "attn_q" => AttnQ,
        "attn_k" => AttnK,
        "attn_v" => AttnV,
        "attn_qkv" => AttnQkv,
        "attn_output" => AttnOutput,
        "attn_q_a" => AttnQA,
        "attn_q_b" => AttnQB,
        "attn_kv_a_mqa" => AttnKvAMqa,
        "attn_kv_b" => AttnKvB,
        "attn_k_b" => AttnKB,
        "attn_v_b" => AttnVB,
        "attn_sinks" => AttnSinks,
        "ffn_gate" => FfnGate,
        "ffn_up" => FfnUp,
        "ffn_down" => FfnDown,
        "ffn_gate_exps" => ExpertGate,
        "ffn_up_exps" => ExpertUp,
        "ffn_down_exps" => ExpertDown,
        "ffn_gate_up_exps" => ExpertGateUp,
        "ffn_gate_shexp" => SharedGate,
        "ffn_up_shexp" => SharedUp,
        "ffn_down_shexp" => SharedDown,
        "ffn_gate_inp" | "ffn_gate_inp_shexp" => Router,
        "exp_probs_b" => RouterBias,
        _ => Other,
    };
    (role, layer)
}

/// Classifies every tensor of a model: roles, layers, and which layers are MoE (a layer is
/// MoE when it holds routed-expert tensors), with each MoE layer's index among MoE layers.
/// A block holding `nextn.*` tensors is a NextN block: its attention and FFN matrices are
/// [`Role::Nextn`] too, and it is not counted among the MoE layers.
pub fn classify(tensors: &[TensorInfo]) -> Vec<TensorClass> {
    let mut parsed: Vec<(Role, Option<u32>)> =
        tensors.iter().map(|t| parse_name(&t.name)).collect();
    let nextn_layers: Vec<u32> = parsed
        .iter()
        .filter(|(r, _)| *r == Role::Nextn)
        .filter_map(|(_, l)| *l)
        .collect();
    for (role, layer) in parsed.iter_mut() {
        let in_nextn = layer.is_some_and(|l| nextn_layers.contains(&l));
        let matrix = role.is_attention()
            || role.is_routed_expert()
            || role.is_shared_expert()
            || matches!(role, Role::FfnGate | Role::FfnUp | Role::FfnDown);
        if in_nextn && matrix {
            *role = Role::Nextn;
        }
    }
    let mut moe_layers: Vec<u32> = parsed
        .iter()
        .filter(|(r, _)| r.is_routed_expert())
        .filter_map(|(_, l)| *l)
        .collect();
    moe_layers.sort_unstable();
    moe_layers.dedup();
    parsed
        .into_iter()
        .zip(tensors)
        .map(|((role, layer), t)| {
            let moe_index = layer.and_then(|l| moe_layers.binary_search(&l).ok().map(|i| i as u32));
            TensorClass {
                role,
                layer,
                layer_kind: layer.map(|_| {
                    if moe_index.is_some() {
                        LayerKind::Moe
                    } else {
                        LayerKind::Dense
                    }
                }),
                moe_index,
                n_expert: role
                    .is_routed_expert()
                    .then(|| t.shape.get(2).copied())
                    .flatten(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynquant_gguf::types::GgmlType;

    #[test]
    fn names_parse_to_roles() {
        let cases = [
            ("token_embd.weight", Role::TokenEmbd, None),
            ("output.weight", Role::Output, None),
            ("output_norm.weight", Role::Norm, None),
            ("blk.0.attn_q.weight", Role::AttnQ, Some(0)),
            ("blk.12.attn_kv_a_mqa.weight", Role::AttnKvAMqa, Some(12)),
            ("blk.3.attn_k_b.weight", Role::AttnKB, Some(3)),
            ("blk.3.attn_kv_b.weight", Role::AttnKvB, Some(3)),
            ("blk.3.attn_q_a_norm.weight", Role::Norm, Some(3)),
            ("blk.4.ffn_down_exps.weight", Role::ExpertDown, Some(4)),
            ("blk.4.ffn_up_shexp.weight", Role::SharedUp, Some(4)),
            ("blk.4.ffn_gate_inp.weight", Role::Router, Some(4)),
            ("blk.4.exp_probs_b.bias", Role::RouterBias, Some(4)),
            ("blk.1.attn_q.bias", Role::Bias, Some(1)),
            // gpt-oss.
            ("blk.1.attn_sinks.weight", Role::AttnSinks, Some(1)),
            ("blk.1.ffn_gate_inp.bias", Role::RouterBias, Some(1)),
            ("blk.1.ffn_up_exps.bias", Role::Bias, Some(1)),
            ("blk.1.post_attention_norm.weight", Role::Norm, Some(1)),
            ("blk.1.attn_k_norm.weight", Role::Norm, Some(1)),
            ("rope_freqs.weight", Role::Other, None),
            ("blk.3.nextn.eh_proj.weight", Role::Nextn, Some(3)),
            ("blk.3.nextn.shared_head_head.weight", Role::Nextn, Some(3)),
            ("blk.3.nextn.enorm.weight", Role::Norm, Some(3)),
            ("blk.3.nextn.shared_head_norm.weight", Role::Norm, Some(3)),
        ];
        for (name, role, layer) in cases {
            assert_eq!(parse_name(name), (role, layer), "{name}");
        }
        for r in Role::ALL {
            assert_eq!(Role::from_name(r.name()), Some(r));
        }
    }

    #[test]
    fn moe_layers_are_found_from_expert_tensors() {
        let t = |n: &str, shape: Vec<u64>| TensorInfo::new(n, shape, GgmlType::F32).unwrap();
        let tensors = vec![
            t("blk.0.ffn_down.weight", vec![64, 32]),
            t("blk.1.ffn_down_exps.weight", vec![64, 32, 8]),
            t("blk.1.attn_q.weight", vec![32, 32]),
            t("blk.2.ffn_gate_exps.weight", vec![32, 64, 8]),
        ];
        let c = classify(&tensors);
        assert_eq!(c[0].layer_kind, Some(LayerKind::Dense));
        assert_eq!(c[1].layer_kind, Some(LayerKind::Moe));
        assert_eq!(c[1].moe_index, Some(0));
        assert_eq!(c[1].n_expert, Some(8));
        assert_eq!(c[2].layer_kind, Some(LayerKind::Moe));
        assert_eq!(c[3].moe_index, Some(1));
    }

    #[test]
    fn a_nextn_block_is_nextn_throughout_and_not_a_moe_layer() {
        let t = |n: &str, shape: Vec<u64>| TensorInfo::new(n, shape, GgmlType::F32).unwrap();
        let tensors = vec![
            t("blk.1.ffn_down_exps.weight", vec![64, 32, 8]),
            t("blk.2.nextn.eh_proj.weight", vec![64, 32]),
            t("blk.2.ffn_down_exps.weight", vec![64, 32, 8]),
            t("blk.2.attn_q.weight", vec![32, 32]),
            t("blk.2.ffn_up_shexp.weight", vec![32, 64]),
            t("blk.2.ffn_gate_inp.weight", vec![32, 8]),
            t("blk.2.attn_q.bias", vec![32]),
        ];
        let c = classify(&tensors);
        let roles: Vec<Role> = c.iter().map(|c| c.role).collect();
        use Role::*;
        assert_eq!(
            roles,
            [ExpertDown, Nextn, Nextn, Nextn, Nextn, Router, Bias]
        );
        assert_eq!(c[0].moe_index, Some(0));
        assert_eq!(c[2].layer_kind, Some(LayerKind::Dense));
        assert_eq!(c[2].n_expert, None);
    }
}
