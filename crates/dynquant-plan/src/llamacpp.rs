//! llama.cpp's own mixes (`Q4_K_M`, `IQ1_S`, ...), reproducing llama-quantize's per-tensor
//! type choice exactly (`src/llama-quant.cpp` @80fb11ac, `docs/llamacpp-mixes.md`).
//!
//! The mixture rules are data: [`RULES`] is an ordered table of (branch, stage, ftypes,
//! condition, type, why). Conditions are named predicates ([`Cond`]) over llama.cpp's
//! quantization state: `use_more_bits`, the running counters of attn_v-like and FFN tensors,
//! `n_expert`, `n_gqa`, the architecture, whether an imatrix is given.
//!
//! How one tensor is decided (llama.cpp's `llama_tensor_get_type`):
//! 1. [`keep_reason`] (llama.cpp's `tensor_allows_quantization`) or keep the source type;
//! 2. `--token-embedding-type` / `--output-tensor-type` win outright (no fallback);
//! 3. start from the ftype's default type; if it is not quantized, stop;
//! 4. `--tensor-type` patterns (first match wins, marks the tensor manual);
//! 5. otherwise the mixture: the first [`BRANCHES`] entry whose category and ftype set
//!    match is the branch (llama.cpp's outer `if / else if` chain); in each of its stages the
//!    first matching rule sets the type (later stages see the type set by earlier ones);
//!    then the branch's counter advances;
//! 6. the shape fallback (`docs/formats.md` §5).
//!
//! Tensors are visited in the loader's order (layer parsed from `blk.%d.`, -1 outside blocks,
//! then the name), which is the order the counters see; the plan lists them in inventory order.
//!
//! A mix is not a recipe of rules (its counters depend on the whole model); `Preset`
//! (`preset.rs`, which uses this module, not the other way) holds either, and plans a mix here.

use dynquant_gguf::types::{file_type_by_id, GgmlType};
use dynquant_gguf::{TensorInfo, Value};

use crate::inventory::Inventory;
use crate::planner::{fallback_target, Decision, Plan, PlanError, PlanOptions, TensorPlan};
use crate::quantizable::keep_reason;
use crate::role::parse_name;

macro_rules! ftypes {
    ($($v:ident = $id:literal),* $(,)?) => {
        /// llama.cpp file types that have a mixture (`enum llama_ftype`).
        #[allow(non_camel_case_types, missing_docs)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Ftype { $($v),* }

        impl Ftype {
            /// Every supported ftype.
            pub const ALL: &'static [Ftype] = &[$(Ftype::$v),*];

            /// `enum llama_ftype` value.
            pub fn id(self) -> u32 {
                match self { $(Ftype::$v => $id),* }
            }
        }
    };
}

ftypes! {
    Q4_0 = 2, Q4_1 = 3, Q8_0 = 7, Q5_0 = 8, Q5_1 = 9, Q2_K = 10, Q3_K_S = 11, Q3_K_M = 12,
    Q3_K_L = 13, Q4_K_S = 14, Q4_K_M = 15, Q5_K_S = 16, Q5_K_M = 17, Q6_K = 18, IQ2_XXS = 19,
    IQ2_XS = 20, Q2_K_S = 21, IQ3_XS = 22, IQ3_XXS = 23, IQ1_S = 24, IQ4_NL = 25, IQ3_S = 26,
    IQ3_M = 27, IQ2_S = 28, IQ2_M = 29, IQ4_XS = 30, IQ1_M = 31, TQ1_0 = 36, TQ2_0 = 37,
    MXFP4_MOE = 38,
}

impl Ftype {
    /// llama-quantize's name (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        file_type_by_id(self.id()).map_or("?", |f| f.name)
    }

    /// `llama_ftype_get_default_type`.
    pub fn default_type(self) -> GgmlType {
        file_type_by_id(self.id())
            .and_then(|f| f.default_type)
            .expect("every mix ftype has a default type")
    }

    /// By name, case-insensitively (`q4_k_m`).
    pub fn from_name(name: &str) -> Option<Ftype> {
        Ftype::ALL
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// By `enum llama_ftype` value.
    pub fn from_id(id: u32) -> Option<Ftype> {
        Ftype::ALL.iter().copied().find(|f| f.id() == id)
    }
}

/// llama.cpp's `tensor_category` (`tensor_get_category`, tested in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// `output.weight` (exact).
    Output,
    /// `token_embd.weight`, `per_layer_token_embd.weight` (exact).
    TokenEmbd,
    /// `attn_qkv.weight`.
    AttnQkv,
    /// `attn_kv_b.weight`.
    AttnKvB,
    /// `attn_v.weight`.
    AttnV,
    /// `attn_k.weight`.
    AttnK,
    /// `attn_q.weight`.
    AttnQ,
    /// `attn_output.weight`.
    AttnOutput,
    /// `ffn_up*`.
    FfnUp,
    /// `ffn_gate*`.
    FfnGate,
    /// `ffn_down*`.
    FfnDown,
    /// Everything else (DeepSeek's `attn_q_a`, `attn_k_b`, ...).
    Other,
}

impl Category {
    /// `tensor_get_category`: substring matches in llama.cpp's order.
    pub fn of(name: &str) -> Category {
        use Category::*;
        if name == "output.weight" {
            return Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return TokenEmbd;
        }
        let table = [
            ("attn_qkv.weight", AttnQkv),
            ("attn_kv_b.weight", AttnKvB),
            ("attn_v.weight", AttnV),
            ("attn_k.weight", AttnK),
            ("attn_q.weight", AttnQ),
            ("attn_output.weight", AttnOutput),
            ("ffn_up", FfnUp),
            ("ffn_gate", FfnGate),
            ("ffn_down", FfnDown),
        ];
        table
            .iter()
            .find(|(s, _)| name.contains(s))
            .map_or(Other, |&(_, c)| c)
    }

    /// attn_v-like (`category_is_attn_v`): attn_v, attn_qkv, attn_kv_b.
    pub fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// The counters of `quantize_state_impl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// `i_attention_wv` (attn_v-like tensors seen so far).
    AttnV,
    /// `i_ffn_down`.
    FfnDown,
    /// `i_ffn_gate`.
    FfnGate,
    /// `i_ffn_up`.
    FfnUp,
}

/// Named conditions of llama.cpp's mixture code.
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    /// Always.
    Always,
    /// `n_gqa() >= n` (`n_head / n_head_kv` of layer 0; 0 when `n_head_kv` is 0).
    GqaAtLeast(u32),
    /// `hparams.n_expert >= n`.
    ExpertsAtLeast(u32),
    /// `hparams.n_expert == n`.
    ExpertsEq(u32),
    /// `model.type == LLM_TYPE_70B` (llama with 80 layers and GQA).
    Is70B,
    /// `model.arch == ...` (GGUF architecture name).
    Arch(&'static str),
    /// An imatrix is given (`qs.has_imatrix`).
    HasImatrix,
    /// `use_more_bits(i_attention_wv, n_attention_wv)`.
    UseMoreBitsAttnV,
    /// `i_attention_wv < n`.
    AttnVCounterBelow(i64),
    /// `i_ffn_down < n_ffn_down / 8` (the counter, not the layer).
    FfnDownCounterBelowEighth,
    /// `use_more_bits(i_layer, n_layer)` with the FFN layer of `layer_info`.
    UseMoreBitsLayer,
    /// `i_layer < n_layer / d`.
    LayerBelow(i64),
    /// `n_layer / 8 <= i_layer < 7 * n_layer / 8`.
    MiddleLayers,
    /// The row length does not divide the current type's block (`nx % qk_k != 0`).
    RowMisfitsCurrent,
    /// The type chosen so far is one of these.
    CurrentIn(&'static [GgmlType]),
    /// The type chosen so far is not this one.
    CurrentIsNot(GgmlType),
    /// The tensor has more than one matrix (`ne[2] > 1`).
    Is3D,
    /// The tensor's category is one of these.
    CatIn(&'static [Category]),
    /// Not the inner condition.
    Not(&'static Cond),
    /// All of these.
    All(&'static [Cond]),
    /// Any of these.
    Any(&'static [Cond]),
}

/// `use_more_bits(i, n)`: the first and last eighth and every third layer in between.
pub fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The model facts the mixture reads (`llama_hparams`, `llm_type`).
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// `general.architecture`.
    pub arch: String,
    /// `hparams.n_layer_all` (`{arch}.block_count`).
    pub n_layer: i64,
    /// Heads of layer 0.
    pub n_head: u64,
    /// KV heads of layer 0.
    pub n_head_kv: u64,
    /// `hparams.n_expert`.
    pub n_expert: u64,
}

impl ModelFacts {
    /// From an inventory's metadata (the keys llama.cpp's `load_hparams` reads).
    pub fn from_inventory(inv: &Inventory) -> ModelFacts {
        let arch = inv.architecture().unwrap_or("").to_string();
        let first = |key: &str| -> Option<u64> {
            let v = inv.metadata.get(&format!("{arch}.{key}"))?;
            match v {
                Value::Array(a) => a.get(0).and_then(|v| v.as_u64()),
                v => v.as_u64(),
            }
        };
        let n_layer = first("block_count").map_or_else(
            || {
                inv.tensors
                    .iter()
                    .filter_map(|t| parse_name(&t.name).1)
                    .max()
                    .map_or(0, |l| i64::from(l) + 1)
            },
            |n| n as i64,
        );
        let n_head = first("attention.head_count").unwrap_or(0);
        ModelFacts {
            n_layer,
            n_head,
            n_head_kv: first("attention.head_count_kv").unwrap_or(n_head),
            n_expert: first("expert_count").unwrap_or(0),
            arch,
        }
    }

    /// `hparams.n_gqa()`.
    pub fn n_gqa(&self) -> u64 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// `model.type == LLM_TYPE_70B`: llama's loader sets it for 80 layers with GQA (the only
    /// case `llama_quant_model_from_metadata` models too).
    pub fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_head != self.n_head_kv
    }
}

/// What a condition is evaluated against.
struct Ctx<'a> {
    model: &'a ModelFacts,
    has_imatrix: bool,
    n_attention_wv: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    /// `(i_layer, n_layer)` from `layer_info`, for FFN branches.
    layer: Option<(i64, i64)>,
    row: u64,
    ne2: u64,
    cat: Category,
    current: GgmlType,
}

impl Cond {
    fn holds(&self, c: &Ctx<'_>) -> bool {
        let layer = || c.layer.expect("FFN-layer condition outside an FFN branch");
        match *self {
            Cond::Always => true,
            Cond::GqaAtLeast(n) => c.model.n_gqa() >= u64::from(n),
            Cond::ExpertsAtLeast(n) => c.model.n_expert >= u64::from(n),
            Cond::ExpertsEq(n) => c.model.n_expert == u64::from(n),
            Cond::Is70B => c.model.is_70b(),
            Cond::Arch(a) => c.model.arch == a,
            Cond::HasImatrix => c.has_imatrix,
            Cond::UseMoreBitsAttnV => use_more_bits(c.i_attention_wv, c.n_attention_wv),
            Cond::AttnVCounterBelow(n) => c.i_attention_wv < n,
            Cond::FfnDownCounterBelowEighth => c.i_ffn_down < c.model.n_layer / 8,
            Cond::UseMoreBitsLayer => {
                let (i, n) = layer();
                use_more_bits(i, n)
            }
            Cond::LayerBelow(d) => {
                let (i, n) = layer();
                i < n / d
            }
            Cond::MiddleLayers => {
                let (i, n) = layer();
                i >= n / 8 && i < 7 * n / 8
            }
            Cond::RowMisfitsCurrent => !c.row.is_multiple_of(c.current.block_size()),
            Cond::CurrentIn(set) => set.contains(&c.current),
            Cond::CurrentIsNot(t) => c.current != t,
            Cond::Is3D => c.ne2 > 1,
            Cond::CatIn(set) => set.contains(&c.cat),
            Cond::Not(inner) => !inner.holds(c),
            Cond::All(all) => all.iter().all(|x| x.holds(c)),
            Cond::Any(any) => any.iter().any(|x| x.holds(c)),
        }
    }
}

/// The branches of `llama_tensor_get_type_impl`'s outer `if / else if` chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchId {
    /// `output.weight`, and `token_embd` when embeddings are tied.
    Output,
    /// MXFP4_MOE: 3-D tensors MXFP4, the rest Q8_0.
    Mxfp4,
    /// `token_embd.weight` (untied).
    TokenEmbd,
    /// Very-low-bit ftypes, attn_v-like tensors.
    LowBitAttnV,
    /// Very-low-bit ftypes, attn_k.
    LowBitAttnK,
    /// Very-low-bit ftypes, ffn_down*.
    LowBitFfnDown,
    /// Very-low-bit ftypes, attn_output.
    LowBitAttnOutput,
    /// Very-low-bit ftypes, anything else (no rule).
    LowBitOther,
    /// attn_v-like (attn_v, attn_qkv, attn_kv_b).
    AttnV,
    /// attn_k.
    AttnK,
    /// attn_q.
    AttnQ,
    /// ffn_down*.
    FfnDown,
    /// attn_output.
    AttnOutput,
    /// ffn_gate*.
    FfnGate,
    /// ffn_up*.
    FfnUp,
}

/// One branch: which tensors and ftypes select it, and which counter it advances.
#[derive(Debug, Clone, Copy)]
pub struct Branch {
    /// Id.
    pub id: BranchId,
    /// Name in `why` texts.
    pub name: &'static str,
    /// Categories (empty: any). The output branch also takes a tied `token_embd`.
    pub cats: &'static [Category],
    /// Ftypes (empty: any).
    pub ftypes: &'static [Ftype],
    /// The FFN layer comes from `layer_info` over this counter.
    pub layer_from: Option<Counter>,
    /// Counter advanced after the decision.
    pub advances: Option<Counter>,
}

/// One mixture rule.
#[derive(Debug, Clone, Copy)]
pub struct MixRule {
    /// Branch.
    pub branch: BranchId,
    /// Stage within the branch: in each stage the first matching rule applies.
    pub stage: u8,
    /// Ftypes it applies to (empty: any).
    pub ftypes: &'static [Ftype],
    /// Condition.
    pub when: Cond,
    /// Type it sets.
    pub ty: GgmlType,
    /// Why, as llama.cpp's code or comments say.
    pub why: &'static str,
}

use Category as C;
use Ftype as F;
use GgmlType as T;

const LOW_BIT: &[Ftype] = &[
    F::IQ2_XXS,
    F::IQ2_XS,
    F::IQ1_S,
    F::IQ2_S,
    F::IQ2_M,
    F::IQ1_M,
];
const ATTN_V_LIKE: &[Category] = &[C::AttnV, C::AttnQkv, C::AttnKvB];

/// The branches, in llama.cpp's order: the first that matches is the tensor's branch.
#[rustfmt::skip]
pub const BRANCHES: &[Branch] = &[
    br(BranchId::Output, "output", &[C::Output], &[], None, None),
    br(BranchId::Mxfp4, "MXFP4_MOE", &[], &[F::MXFP4_MOE], None, None),
    br(BranchId::TokenEmbd, "token_embd", &[C::TokenEmbd], &[], None, None),
    br(BranchId::LowBitAttnV, "very-low-bit attn_v-like", ATTN_V_LIKE, LOW_BIT, None, Some(Counter::AttnV)),
    br(BranchId::LowBitAttnK, "very-low-bit attn_k", &[C::AttnK], LOW_BIT, None, None),
    br(BranchId::LowBitFfnDown, "very-low-bit ffn_down", &[C::FfnDown], LOW_BIT, None, Some(Counter::FfnDown)),
    br(BranchId::LowBitAttnOutput, "very-low-bit attn_output", &[C::AttnOutput], LOW_BIT, None, None),
    br(BranchId::LowBitOther, "very-low-bit", &[], LOW_BIT, None, None),
    br(BranchId::AttnV, "attn_v-like", ATTN_V_LIKE, &[], None, Some(Counter::AttnV)),
    br(BranchId::AttnK, "attn_k", &[C::AttnK], &[], None, None),
    br(BranchId::AttnQ, "attn_q", &[C::AttnQ], &[], None, None),
    br(BranchId::FfnDown, "ffn_down", &[C::FfnDown], &[], Some(Counter::FfnDown), Some(Counter::FfnDown)),
    br(BranchId::AttnOutput, "attn_output", &[C::AttnOutput], &[], None, None),
    // attn_qkv has its own branch in llama.cpp (Q3_K_M/Q3_K_L/IQ3_M Q4_K, Q4_K_M Q5_K, Q5_K_M
    // Q6_K) but it is unreachable: attn_qkv is attn_v-like and takes the attn_v branch.
    br(BranchId::FfnGate, "ffn_gate", &[C::FfnGate], &[], Some(Counter::FfnGate), Some(Counter::FfnGate)),
    br(BranchId::FfnUp, "ffn_up", &[C::FfnUp], &[], Some(Counter::FfnUp), Some(Counter::FfnUp)),
];

const fn br(
    id: BranchId,
    name: &'static str,
    cats: &'static [Category],
    ftypes: &'static [Ftype],
    layer_from: Option<Counter>,
    advances: Option<Counter>,
) -> Branch {
    Branch {
        id,
        name,
        cats,
        ftypes,
        layer_from,
        advances,
    }
}

const fn r(
    branch: BranchId,
    stage: u8,
    ftypes: &'static [Ftype],
    when: Cond,
    ty: GgmlType,
    why: &'static str,
) -> MixRule {
    MixRule {
        branch,
        stage,
        ftypes,
        when,
        ty,
        why,
    }
}

use BranchId as B;
use Cond::*;

const FALCON: Cond = Arch("falcon");
const NOT_FALCON: Cond = Not(&FALCON);
const NO_IMATRIX: Cond = Not(&HasImatrix);

/// The mixture rules of `llama_tensor_get_type_impl`, in order.
#[rustfmt::skip]
pub const RULES: &[MixRule] = &[
    // output.weight (and a tied token_embd)
    r(B::Output, 0, &[F::MXFP4_MOE], Always, T::Q8_0, "MXFP4_MOE: output Q8_0"),
    r(B::Output, 0, &[], Any(&[FALCON, RowMisfitsCurrent]), T::Q8_0, "output: Falcon, or the row does not fit the default type's block: Q8_0"),
    r(B::Output, 0, &[F::IQ2_XXS, F::IQ2_XS, F::IQ3_XXS, F::IQ1_S, F::IQ2_S, F::IQ2_M, F::IQ1_M], Always, T::Q5_K, "output: very-low-bit ftypes and IQ3_XXS: Q5_K"),
    r(B::Output, 0, &[], CurrentIsNot(T::Q8_0), T::Q6_K, "output: Q6_K (unless already Q8_0)"),
    // MXFP4_MOE
    r(B::Mxfp4, 0, &[], All(&[Is3D, Any(&[Not(&Arch("bailingmoe3")), CatIn(&[C::FfnUp, C::FfnGate, C::FfnDown])])]), T::MXFP4, "MXFP4_MOE: tensors with ne[2] > 1 MXFP4 (BailingMoE3: experts only)"),
    r(B::Mxfp4, 0, &[], Always, T::Q8_0, "MXFP4_MOE: 2-D tensors Q8_0"),
    // token_embd (untied)
    r(B::TokenEmbd, 0, &[F::IQ2_XXS, F::IQ2_XS, F::IQ1_S, F::IQ1_M], Always, T::Q2_K, "token_embd: IQ2_XXS/IQ2_XS/IQ1_S/IQ1_M Q2_K"),
    r(B::TokenEmbd, 0, &[F::IQ2_S, F::IQ2_M, F::IQ3_XXS], Always, T::IQ3_S, "token_embd: IQ2_S/IQ2_M/IQ3_XXS IQ3_S"),
    r(B::TokenEmbd, 0, &[F::TQ1_0, F::TQ2_0], Always, T::Q4_K, "token_embd: TQ1_0/TQ2_0 Q4_K"),
    // very-low-bit ftypes
    r(B::LowBitAttnV, 0, &[], Any(&[GqaAtLeast(4), ExpertsAtLeast(4)]), T::Q4_K, "very-low-bit attn_v-like: n_gqa >= 4 or n_expert >= 4: Q4_K"),
    r(B::LowBitAttnV, 0, &[F::IQ2_S, F::IQ2_M], Always, T::IQ3_S, "very-low-bit attn_v-like: IQ2_S/IQ2_M IQ3_S"),
    r(B::LowBitAttnV, 0, &[], Always, T::Q2_K, "very-low-bit attn_v-like: Q2_K"),
    r(B::LowBitAttnK, 0, &[], ExpertsEq(8), T::Q4_K, "very-low-bit attn_k: n_expert == 8: Q4_K"),
    r(B::LowBitFfnDown, 0, &[F::IQ2_S, F::IQ2_M], FfnDownCounterBelowEighth, T::IQ3_S, "very-low-bit ffn_down: counter i_ffn_down < n_layer/8: IQ3_S"),
    r(B::LowBitFfnDown, 0, &[], FfnDownCounterBelowEighth, T::Q2_K, "very-low-bit ffn_down: counter i_ffn_down < n_layer/8: Q2_K"),
    r(B::LowBitAttnOutput, 0, &[], ExpertsEq(8), T::Q5_K, "very-low-bit attn_output: n_expert == 8: Q5_K"),
    r(B::LowBitAttnOutput, 0, &[F::IQ1_S, F::IQ1_M], Always, T::IQ2_XXS, "very-low-bit attn_output: IQ1_S/IQ1_M IQ2_XXS"),
    r(B::LowBitAttnOutput, 0, &[F::IQ2_S, F::IQ2_M], Always, T::IQ3_S, "very-low-bit attn_output: IQ2_S/IQ2_M IQ3_S"),
    // attn_v-like
    r(B::AttnV, 0, &[F::Q2_K], GqaAtLeast(4), T::Q4_K, "attn_v: Q2_K with n_gqa >= 4: Q4_K"),
    r(B::AttnV, 0, &[F::Q2_K], Always, T::Q3_K, "attn_v: Q2_K: Q3_K"),
    r(B::AttnV, 0, &[F::Q2_K_S], GqaAtLeast(4), T::Q4_K, "attn_v: Q2_K_S with n_gqa >= 4: Q4_K"),
    r(B::AttnV, 0, &[F::IQ3_XXS], GqaAtLeast(4), T::Q4_K, "attn_v: IQ3_XXS with n_gqa >= 4: Q4_K"),
    r(B::AttnV, 0, &[F::IQ3_XXS], NO_IMATRIX, T::IQ3_S, "attn_v: IQ3_XXS without imatrix: IQ3_S"),
    r(B::AttnV, 0, &[F::IQ3_XXS], Always, T::IQ3_XXS, "attn_v: IQ3_XXS with imatrix: IQ3_XXS"),
    r(B::AttnV, 0, &[F::IQ3_XS, F::IQ3_S], GqaAtLeast(4), T::Q4_K, "attn_v: IQ3_XS/IQ3_S with n_gqa >= 4: Q4_K"),
    r(B::AttnV, 0, &[F::IQ3_M], Always, T::Q4_K, "attn_v: IQ3_M: Q4_K"),
    r(B::AttnV, 0, &[F::Q3_K_M], AttnVCounterBelow(2), T::Q5_K, "attn_v: Q3_K_M, first two (i_attention_wv < 2): Q5_K"),
    r(B::AttnV, 0, &[F::Q3_K_M], Always, T::Q4_K, "attn_v: Q3_K_M: Q4_K"),
    r(B::AttnV, 0, &[F::Q3_K_L], Always, T::Q5_K, "attn_v: Q3_K_L: Q5_K"),
    r(B::AttnV, 0, &[F::IQ4_NL, F::IQ4_XS], GqaAtLeast(4), T::Q5_K, "attn_v: IQ4_NL/IQ4_XS with n_gqa >= 4: Q5_K"),
    r(B::AttnV, 0, &[F::Q4_K_M, F::Q5_K_M], UseMoreBitsAttnV, T::Q6_K, "attn_v: Q4_K_M/Q5_K_M, use_more_bits(i_attention_wv, n_attention_wv): Q6_K"),
    r(B::AttnV, 0, &[F::Q4_K_S], AttnVCounterBelow(4), T::Q5_K, "attn_v: Q4_K_S, first four (i_attention_wv < 4): Q5_K"),
    r(B::AttnV, 1, &[], All(&[Is70B, CurrentIn(&[T::Q3_K, T::Q4_K])]), T::Q5_K, "attn_v: 70B (8 heads share attn_v): Q3_K/Q4_K -> Q5_K"),
    r(B::AttnV, 2, &[], ExpertsEq(8), T::Q8_0, "attn_v: n_expert == 8: Q8_0 (trades ~128MB)"),
    // attn_k, attn_q
    r(B::AttnK, 0, &[], ExpertsEq(8), T::Q8_0, "attn_k: n_expert == 8: Q8_0"),
    r(B::AttnK, 0, &[F::IQ3_XS], Always, T::IQ3_XXS, "attn_k: IQ3_XS: IQ3_XXS"),
    r(B::AttnK, 0, &[F::IQ3_XXS], Always, T::IQ2_S, "attn_k: IQ3_XXS: IQ2_S"),
    r(B::AttnQ, 0, &[F::IQ3_XS], Always, T::IQ3_XXS, "attn_q: IQ3_XS: IQ3_XXS"),
    r(B::AttnQ, 0, &[F::IQ3_XXS], Always, T::IQ2_S, "attn_q: IQ3_XXS: IQ2_S"),
    // ffn_down (layer from layer_info)
    r(B::FfnDown, 0, &[F::Q2_K], Always, T::Q3_K, "ffn_down: Q2_K: Q3_K"),
    r(B::FfnDown, 0, &[F::Q2_K_S], LayerBelow(8), T::Q4_K, "ffn_down: Q2_K_S, layer < n/8: Q4_K"),
    r(B::FfnDown, 0, &[F::Q2_K_S], Always, T::Q2_K, "ffn_down: Q2_K_S: unchanged"),
    r(B::FfnDown, 0, &[F::IQ3_XXS], All(&[NO_IMATRIX, LayerBelow(8)]), T::Q4_K, "ffn_down: IQ3_XXS without imatrix, layer < n/8: Q4_K"),
    r(B::FfnDown, 0, &[F::IQ3_XXS], NO_IMATRIX, T::Q3_K, "ffn_down: IQ3_XXS without imatrix: Q3_K"),
    r(B::FfnDown, 0, &[F::Q3_K_M], LayerBelow(16), T::Q5_K, "ffn_down: Q3_K_M, layer < n/16: Q5_K"),
    r(B::FfnDown, 0, &[F::Q3_K_M], Any(&[NOT_FALCON, UseMoreBitsLayer]), T::Q4_K, "ffn_down: Q3_K_M: Q4_K (Falcon: use_more_bits only)"),
    r(B::FfnDown, 0, &[F::Q3_K_M], Always, T::Q3_K, "ffn_down: Q3_K_M, Falcon: Q3_K"),
    r(B::FfnDown, 0, &[F::IQ3_M], Any(&[LayerBelow(8), All(&[ExpertsEq(8), UseMoreBitsLayer])]), T::Q4_K, "ffn_down: IQ3_M, layer < n/8 (or n_expert == 8 and use_more_bits): Q4_K"),
    r(B::FfnDown, 0, &[F::Q3_K_L], FALCON, T::Q4_K, "ffn_down: Q3_K_L, Falcon: Q4_K"),
    r(B::FfnDown, 0, &[F::Q3_K_L], Always, T::Q5_K, "ffn_down: Q3_K_L: Q5_K"),
    r(B::FfnDown, 0, &[F::Q4_K_M], All(&[FALCON, LayerBelow(16)]), T::Q6_K, "ffn_down: Q4_K_M, Falcon, layer < n/16: Q6_K"),
    r(B::FfnDown, 0, &[F::Q4_K_M], All(&[FALCON, UseMoreBitsLayer]), T::Q5_K, "ffn_down: Q4_K_M, Falcon, use_more_bits: Q5_K"),
    r(B::FfnDown, 0, &[F::Q4_K_M], FALCON, T::Q4_K, "ffn_down: Q4_K_M, Falcon: Q4_K"),
    r(B::FfnDown, 0, &[F::Q4_K_M], UseMoreBitsLayer, T::Q6_K, "ffn_down: Q4_K_M, use_more_bits(layer, n_layer): Q6_K"),
    r(B::FfnDown, 0, &[F::Q4_K_M], Always, T::Q4_K, "ffn_down: Q4_K_M: unchanged"),
    r(B::FfnDown, 0, &[F::IQ4_NL, F::IQ4_XS], All(&[LayerBelow(8), NO_IMATRIX]), T::Q5_K, "ffn_down: IQ4_NL/IQ4_XS without imatrix, layer < n/8: Q5_K"),
    r(B::FfnDown, 0, &[F::Q5_K_M], UseMoreBitsLayer, T::Q6_K, "ffn_down: Q5_K_M, use_more_bits(layer, n_layer): Q6_K"),
    r(B::FfnDown, 0, &[F::Q4_K_S], All(&[NOT_FALCON, LayerBelow(8)]), T::Q5_K, "ffn_down: Q4_K_S, layer < n/8: Q5_K"),
    r(B::FfnDown, 0, &[F::Q4_0], All(&[HasImatrix, LayerBelow(8)]), T::Q4_1, "ffn_down: Q4_0 with imatrix, layer < n/8: Q4_1 (guard against craziness)"),
    r(B::FfnDown, 0, &[F::Q5_0], All(&[HasImatrix, LayerBelow(8)]), T::Q5_1, "ffn_down: Q5_0 with imatrix, layer < n/8: Q5_1 (guard against craziness)"),
    // attn_output
    r(B::AttnOutput, 0, &[F::Q2_K, F::IQ3_XS, F::IQ3_XXS, F::Q3_K_S, F::Q3_K_M, F::IQ4_NL, F::Q4_K_S, F::Q4_K_M, F::IQ3_S, F::IQ3_M, F::IQ4_XS], All(&[NOT_FALCON, ExpertsEq(8)]), T::Q5_K, "attn_output: n_expert == 8: Q5_K"),
    r(B::AttnOutput, 0, &[F::Q2_K], All(&[NOT_FALCON, Not(&ExpertsEq(8))]), T::Q3_K, "attn_output: Q2_K: Q3_K"),
    r(B::AttnOutput, 0, &[F::IQ3_XXS], All(&[NOT_FALCON, Not(&ExpertsEq(8))]), T::IQ3_S, "attn_output: IQ3_XXS: IQ3_S"),
    r(B::AttnOutput, 0, &[F::Q3_K_M], All(&[NOT_FALCON, Not(&ExpertsEq(8))]), T::Q4_K, "attn_output: Q3_K_M: Q4_K"),
    r(B::AttnOutput, 0, &[F::Q3_K_L], All(&[NOT_FALCON, Not(&ExpertsEq(8))]), T::Q5_K, "attn_output: Q3_K_L: Q5_K"),
    r(B::AttnOutput, 0, &[F::IQ3_M], All(&[NOT_FALCON, Not(&ExpertsEq(8))]), T::Q4_K, "attn_output: IQ3_M: Q4_K"),
    r(B::AttnOutput, 0, &[F::Q3_K_L], FALCON, T::Q4_K, "attn_output: Q3_K_L, Falcon: Q4_K"),
    // ffn_gate, ffn_up (layer from layer_info)
    r(B::FfnGate, 0, &[F::IQ3_XS], MiddleLayers, T::IQ3_XXS, "ffn_gate: IQ3_XS, n/8 <= layer < 7n/8: IQ3_XXS"),
    r(B::FfnUp, 0, &[F::IQ3_XS], MiddleLayers, T::IQ3_XXS, "ffn_up: IQ3_XS, n/8 <= layer < 7n/8: IQ3_XXS"),
];

/// The loader's order (`weight_name_comparer`): layer from `blk.%d.` (-1 outside), then name.
pub fn loader_order(tensors: &[TensorInfo]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..tensors.len()).collect();
    idx.sort_by(|&a, &b| {
        let key = |t: &TensorInfo| (sscanf_layer(&t.name).unwrap_or(-1), t.name.clone());
        key(&tensors[a]).cmp(&key(&tensors[b]))
    });
    idx
}

/// `sscanf(name, "blk.%d.", &l)`.
fn sscanf_layer(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let end = rest
        .char_indices()
        .find(|&(i, ch)| !(ch.is_ascii_digit() || (i == 0 && (ch == '-' || ch == '+'))))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

/// The rule index in [`RULES`] of a decision.
fn rule_index(rule: &MixRule) -> usize {
    RULES
        .iter()
        .position(|x| std::ptr::eq(x, rule))
        .expect("rule from RULES")
}

/// Plans `inv` with llama.cpp's `ftype` mix; `opts.has_imatrix` is llama.cpp's
/// `qs.has_imatrix`. Rows cite the rule that set the type ([`Decision::Rule`] indexes
/// [`RULES`]; rule `i` is line `i + 2` of [`mix_listing`]).
pub fn plan_llamacpp(inv: &Inventory, ftype: Ftype, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let model = ModelFacts::from_inventory(inv);
    let tensors = &inv.tensors;
    let cats: Vec<Category> = tensors.iter().map(|t| Category::of(&t.name)).collect();
    let n_attention_wv = cats.iter().filter(|c| c.is_attn_v()).count() as i64;
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let default = ftype.default_type();
    let n_expert_max1 = model.n_expert.max(1);
    let mut counters = [0i64; 4];
    let ci = |c: Counter| c as usize;
    let mut rows: Vec<Option<TensorPlan>> = vec![None; tensors.len()];

    for i in loader_order(tensors) {
        let t = &tensors[i];
        let cat = cats[i];
        let (role, layer) = parse_name(&t.name);
        let row = t.row_len();
        let (requested, decision, why, fallback) = if let Some(reason) =
            keep_reason(&t.name, &t.shape)
        {
            (
                t.ggml_type,
                Decision::Kept(reason),
                reason.to_string(),
                false,
            )
        } else if let (Some(ty), Category::TokenEmbd) = (opts.token_embedding_type, cat) {
            (
                ty,
                Decision::SpecialOverride,
                "--token-embedding-type".into(),
                false,
            )
        } else if let (Some(ty), Category::Output) = (opts.output_tensor_type, cat) {
            (
                ty,
                Decision::SpecialOverride,
                "--output-tensor-type".into(),
                false,
            )
        } else if !default.info().quantized {
            (
                default,
                Decision::Default,
                format!("{} default type", ftype.name()),
                false,
            )
        } else if let Some((k, ty)) = opts.override_for(&t.name) {
            (
                ty,
                Decision::Override(k),
                format!("--tensor-type override #{}", k + 1),
                true,
            )
        } else if let (true, Some(ty), Category::TokenEmbd) = (tied, opts.output_tensor_type, cat) {
            // A tied token_embd takes --output-tensor-type inside the mixture code.
            (
                ty,
                Decision::SpecialOverride,
                "--output-tensor-type (tied embeddings)".into(),
                true,
            )
        } else {
            let mix_cat = if tied && cat == Category::TokenEmbd {
                Category::Output
            } else {
                cat
            };
            let branch = BRANCHES.iter().find(|b| {
                (b.cats.is_empty() || b.cats.contains(&mix_cat))
                    && (b.ftypes.is_empty() || b.ftypes.contains(&ftype))
            });
            let mut current = default;
            let mut fired: Option<&MixRule> = None;
            let mut chain = Vec::new();
            if let Some(b) = branch {
                let layer_pos = match b.layer_from {
                    None => None,
                    Some(_) if n_expert_max1 > 1 => {
                        let err = |reason: String| PlanError::Layer {
                            name: t.name.clone(),
                            reason,
                        };
                        let l = sscanf_layer(&t.name)
                            .ok_or_else(|| err("Failed to determine layer".into()))?;
                        if l < 0 || l >= model.n_layer {
                            return Err(err(format!(
                                "Bad layer {l}. Must be in [0, {})",
                                model.n_layer
                            )));
                        }
                        Some((l, model.n_layer))
                    }
                    Some(c) => Some((counters[ci(c)], model.n_layer)),
                };
                let stages = RULES
                    .iter()
                    .filter(|x| x.branch == b.id)
                    .map(|x| x.stage)
                    .max()
                    .map_or(0, |s| s + 1);
                for stage in 0..stages {
                    let ctx = Ctx {
                        model: &model,
                        has_imatrix: opts.has_imatrix,
                        n_attention_wv,
                        i_attention_wv: counters[ci(Counter::AttnV)],
                        i_ffn_down: counters[ci(Counter::FfnDown)],
                        layer: layer_pos,
                        row,
                        ne2: t.shape.get(2).copied().unwrap_or(1),
                        cat,
                        current,
                    };
                    if let Some(rule) = RULES.iter().find(|x| {
                        x.branch == b.id
                            && x.stage == stage
                            && (x.ftypes.is_empty() || x.ftypes.contains(&ftype))
                            && x.when.holds(&ctx)
                    }) {
                        current = rule.ty;
                        fired = Some(rule);
                        chain.push(rule.why);
                    }
                }
                if let Some(c) = b.advances {
                    counters[ci(c)] += 1;
                }
            }
            match fired {
                Some(rule) => (
                    current,
                    Decision::Rule(rule_index(rule)),
                    format!("llama.cpp {}: {}", ftype.name(), chain.join("; then ")),
                    true,
                ),
                None => (
                    current,
                    Decision::Default,
                    format!("llama.cpp {}: default type, no mixture rule", ftype.name()),
                    true,
                ),
            }
        };
        let target = if fallback {
            fallback_target(&t.name, requested, row)?
        } else {
            requested
        };
        if !target.info().weight_type {
            return Err(PlanError::NotAWeightType {
                name: t.name.clone(),
                ty: target,
            });
        }
        let bytes = target
            .row_bytes(row)
            .unwrap_or(0)
            .saturating_mul(t.n_rows());
        rows[i] = Some(TensorPlan {
            name: t.name.clone(),
            shape: t.shape.clone(),
            role,
            layer,
            source: t.ggml_type,
            requested,
            target,
            bytes,
            decision,
            why,
            predicted_kld: None,
        });
    }
    let tensors: Vec<TensorPlan> = rows.into_iter().map(|r| r.expect("every tensor")).collect();
    Ok(Plan {
        recipe: mix_name(ftype),
        description: mix_description(ftype, opts.has_imatrix),
        total_bytes: tensors.iter().map(|t| t.bytes).sum(),
        total_params: inv.n_params(),
        tensors,
        unused_rules: Vec::new(),
    })
}

/// A mix's preset name (`q4_k_m`).
pub fn mix_name(ftype: Ftype) -> String {
    ftype.name().to_ascii_lowercase()
}

/// A mix's one-line description, which says whether the imatrix branch was taken.
pub fn mix_description(ftype: Ftype, has_imatrix: bool) -> String {
    format!(
        "llama.cpp's {} mix, as llama-quantize chooses it ({})",
        ftype.name(),
        if has_imatrix {
            "with an imatrix"
        } else {
            "no imatrix"
        }
    )
}

/// A mix written out as text: a title line, then rule `i` of [`RULES`] on line `i + 2` (plans
/// cite rules by that line). It is the mix's recipe text, hashed into the
/// `dynquant.recipe.sha256` key of every quant made with it, so its wording is frozen: a change
/// changes those outputs (the title still names the function that planned mixes when the
/// text was introduced).
pub fn mix_listing(ftype: Ftype) -> String {
    let mut text = format!(
        "# llama.cpp mix {} (llama-quant.cpp @80fb11ac); plan with dynquant_plan::llamacpp::plan_recipe\n",
        ftype.name()
    );
    for (i, x) in RULES.iter().enumerate() {
        let names: Vec<&str> = x.ftypes.iter().map(|f| f.name()).collect();
        text.push_str(&format!(
            "# rule {i}: branch {:?} stage {} ftypes [{}] when {:?} -> {}: {}\n",
            x.branch,
            x.stage,
            names.join(","),
            x.when,
            x.ty.name(),
            x.why
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynquant_gguf::Metadata;

    #[test]
    fn use_more_bits_matches_the_doc_tables() {
        let sel = |n: i64| -> Vec<i64> { (0..n).filter(|&i| use_more_bits(i, n)).collect() };
        assert_eq!(sel(18), vec![0, 1, 4, 7, 10, 13, 15, 16, 17]);
        assert_eq!(
            sel(30),
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
        assert_eq!(sel(61).len(), 30);
    }

    #[test]
    fn categories_follow_llama_order() {
        assert_eq!(Category::of("blk.0.attn_kv_b.weight"), Category::AttnKvB);
        assert_eq!(Category::of("blk.0.attn_k_b.weight"), Category::Other);
        assert_eq!(
            Category::of("blk.0.ffn_down_exps.weight"),
            Category::FfnDown
        );
        assert_eq!(Category::of("blk.0.ffn_gate_inp.weight"), Category::FfnGate);
        assert_eq!(Category::of("output.weight"), Category::Output);
    }

    #[test]
    fn every_rule_belongs_to_a_branch_and_names_are_unique() {
        for x in RULES {
            assert!(BRANCHES.iter().any(|b| b.id == x.branch), "{x:?}");
        }
        for f in Ftype::ALL {
            assert_eq!(Ftype::from_name(&f.name().to_lowercase()), Some(*f));
            // The listing cites rule i on line i + 2.
            let listing = mix_listing(*f);
            let lines: Vec<&str> = listing.lines().collect();
            assert_eq!(lines.len(), RULES.len() + 1);
            assert!(lines[1 + 5].starts_with("# rule 5:"), "{}", lines[6]);
        }
    }

    fn model(n_layer: u64, tied: bool) -> Inventory {
        let mut md = Metadata::new();
        md.set("general.architecture", Value::String("llama".into()));
        md.set("llama.block_count", Value::U32(n_layer as u32));
        md.set("llama.attention.head_count", Value::U32(32));
        md.set("llama.attention.head_count_kv", Value::U32(8));
        let f16 = GgmlType::F16;
        let mut t = vec![TensorInfo::new("token_embd.weight", vec![4096, 1000], f16).unwrap()];
        if !tied {
            t.push(TensorInfo::new("output.weight", vec![4096, 1000], f16).unwrap());
        }
        for l in 0..n_layer {
            for (n, s) in [
                ("attn_norm", vec![4096]),
                ("attn_q", vec![4096, 4096]),
                ("attn_k", vec![4096, 1024]),
                ("attn_v", vec![4096, 1024]),
                ("attn_output", vec![4096, 4096]),
                ("ffn_gate", vec![4096, 14336]),
                ("ffn_up", vec![4096, 14336]),
                ("ffn_down", vec![14336, 4096]),
            ] {
                let ty = if s.len() == 1 { GgmlType::F32 } else { f16 };
                t.push(TensorInfo::new(format!("blk.{l}.{n}.weight"), s, ty).unwrap());
            }
        }
        Inventory {
            metadata: md,
            tensors: t,
        }
    }

    #[test]
    fn q4_k_m_on_a_llama_shape() {
        let inv = model(32, false);
        let p = plan_llamacpp(&inv, Ftype::Q4_K_M, &PlanOptions::default()).unwrap();
        let ty = |n: &str| p.tensors.iter().find(|t| t.name == n).unwrap().target;
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
        assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q6_K);
        assert_eq!(ty("blk.4.attn_v.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.6.ffn_down.weight"), GgmlType::Q6_K);
        assert_eq!(ty("blk.7.ffn_down.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
        let v0 = p
            .tensors
            .iter()
            .find(|t| t.name == "blk.0.attn_v.weight")
            .unwrap();
        assert!(v0.why.contains("use_more_bits"), "{}", v0.why);
        // Tied embeddings take the output rule.
        let p = plan_llamacpp(&model(32, true), Ftype::Q4_K_M, &PlanOptions::default()).unwrap();
        assert_eq!(p.tensors[0].target, GgmlType::Q6_K);
    }
}
