//! Presets: what `--recipe NAME` can name. A preset is either a recipe of rules (one of the
//! recipes shipped in the binary, or `basic-<type>`) or one of llama.cpp's mixes, whose
//! choices depend on the whole model (counters over layers, expert and head counts) and so
//! are not a list of rules. [`Preset`] holds either and plans each its own way;
//! [`preset_table`] lists them all, and help texts, error messages and `docs/recipes.md` are
//! made from it.

use dynquant_gguf::types::GgmlType;

use crate::inventory::Inventory;
use crate::llamacpp::{mix_listing, mix_name, plan_llamacpp, Ftype};
use crate::planner::{plan, Plan, PlanError, PlanOptions};
use crate::recipe::{Recipe, RecipeError};

/// The recipes shipped in the binary: name and TOML text.
const SHIPPED: [(&str, &str); 4] = [
    ("ud-iq1_s", include_str!("../presets/ud-iq1_s.toml")),
    ("ud-iq1_m", include_str!("../presets/ud-iq1_m.toml")),
    ("ud-iq2_xxs", include_str!("../presets/ud-iq2_xxs.toml")),
    ("ud-q2_k_xl", include_str!("../presets/ud-q2_k_xl.toml")),
];

/// The name pattern of the one-type presets.
const BASIC_PREFIX: &str = "basic-";

/// What a preset (or a recipe file) plans with.
#[derive(Debug, Clone)]
pub enum Preset {
    /// An ordered list of rules, first match wins ([`crate::planner::plan`]).
    Rules(Recipe),
    /// A llama.cpp mix, planned as llama-quantize chooses
    /// ([`crate::llamacpp::plan_llamacpp`]).
    Mix(Ftype),
}

impl Preset {
    /// The preset called `name` (case-insensitive): a llama.cpp mix (`q4_k_m`), `basic-<type>`,
    /// or a shipped recipe (`ud-iq1_s`); `None` for any other name.
    pub fn named(name: &str) -> Option<Result<Preset, RecipeError>> {
        let lower = name.to_ascii_lowercase();
        if let Some(ftype) = Ftype::from_name(&lower) {
            return Some(Ok(Preset::Mix(ftype)));
        }
        if let Some(ty) = lower.strip_prefix(BASIC_PREFIX) {
            return ty
                .parse::<GgmlType>()
                .ok()
                .map(|t| Ok(Preset::Rules(Recipe::basic(t))));
        }
        SHIPPED
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(n, text)| Recipe::parse(text, n).map(Preset::Rules))
    }

    /// The name written to plans and to `dynquant.recipe` (`ud-iq1_s`, `q4_k_m`).
    pub fn name(&self) -> String {
        match self {
            Preset::Rules(r) => r.name.clone(),
            Preset::Mix(f) => mix_name(*f),
        }
    }

    /// The text that defines it, hashed into `dynquant.recipe.sha256`: a recipe's TOML, or a
    /// mix's listing of llama.cpp's rules ([`mix_listing`]).
    pub fn source(&self) -> String {
        match self {
            Preset::Rules(r) => r.source.clone(),
            Preset::Mix(f) => mix_listing(*f),
        }
    }

    /// The line of [`Preset::source`] that holds rule `index` of a
    /// [`Decision::Rule`](crate::planner::Decision::Rule).
    pub fn rule_line(&self, index: usize) -> usize {
        match self {
            Preset::Rules(r) => r.rules.get(index).map_or(0, |rule| rule.line),
            Preset::Mix(_) => index + 2,
        }
    }

    /// Plans every tensor of `inv`.
    pub fn plan(&self, inv: &Inventory, opts: &PlanOptions) -> Result<Plan, PlanError> {
        match self {
            Preset::Rules(r) => plan(inv, r, opts),
            Preset::Mix(f) => plan_llamacpp(inv, *f, opts),
        }
    }

    /// `general.file_type` of a quant made from `plan`: a mix's own ftype, otherwise the file
    /// type of the plan's dominant type ([`Plan::dominant_file_type`]).
    pub fn file_type(&self, plan: &Plan) -> u32 {
        match self {
            Preset::Mix(f) => f.id(),
            Preset::Rules(_) => plan.dominant_file_type(),
        }
    }
}

/// The kinds of preset, as the table groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetFamily {
    /// A recipe shipped in the binary (`ud-iq1_s`, ...).
    Shipped,
    /// `basic-<type>`: every quantizable tensor at one type.
    Basic,
    /// A llama.cpp mix (`q4_k_m`, ...).
    Mix,
}

/// One row of the preset table.
#[derive(Debug, Clone)]
pub struct PresetInfo {
    /// The name, or for `basic-<type>` the pattern.
    pub name: String,
    /// Its kind.
    pub family: PresetFamily,
    /// One line on what it is.
    pub description: String,
}

/// Every preset: the shipped recipes, `basic-<type>` (one row for all types), then llama.cpp's
/// mixes in `enum llama_ftype` order.
pub fn preset_table() -> Vec<PresetInfo> {
    let mut rows: Vec<PresetInfo> = SHIPPED
        .iter()
        .map(|(name, text)| PresetInfo {
            name: name.to_string(),
            family: PresetFamily::Shipped,
            // The shipped files parse (tested); a failure would show as an empty line here.
            description: Recipe::parse(text, name)
                .map(|r| r.description)
                .unwrap_or_default(),
        })
        .collect();
    rows.push(PresetInfo {
        name: format!("{BASIC_PREFIX}<type>"),
        family: PresetFamily::Basic,
        description: "every quantizable tensor at one ggml type (llama-quantize --pure), e.g. \
                      basic-iq1_s"
            .into(),
    });
    rows.extend(Ftype::ALL.iter().map(|&f| PresetInfo {
        name: mix_name(f),
        family: PresetFamily::Mix,
        description: format!(
            "llama.cpp's {} mix (default type {})",
            f.name(),
            f.default_type()
        ),
    }));
    rows
}

/// The preset names in one line for help texts and error messages:
/// `ud-iq1_s, ..., basic-<type>, or a llama.cpp mix (q4_0, ..., mxfp4_moe)`.
pub fn preset_names() -> String {
    let table = preset_table();
    let names = |family: PresetFamily| -> Vec<&str> {
        table
            .iter()
            .filter(|p| p.family == family)
            .map(|p| p.name.as_str())
            .collect()
    };
    let mut own = names(PresetFamily::Shipped);
    own.extend(names(PresetFamily::Basic));
    format!(
        "{}, or a llama.cpp mix ({})",
        own.join(", "),
        names(PresetFamily::Mix).join(", ")
    )
}

/// The preset table as the Markdown table `docs/recipes.md` carries.
pub fn preset_table_markdown() -> String {
    let mut s = String::from("| preset | what it is |\n|---|---|\n");
    for p in preset_table() {
        s.push_str(&format!("| `{}` | {} |\n", p.name, p.description));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Decision;
    use crate::RULES;
    use dynquant_gguf::{Metadata, TensorInfo, Value};

    #[test]
    fn every_table_row_names_a_preset() {
        for p in preset_table() {
            let name = p.name.replace("<type>", "q4_k");
            let preset = Preset::named(&name).unwrap().unwrap();
            assert_eq!(preset.name(), name);
            match (p.family, &preset) {
                (PresetFamily::Mix, Preset::Mix(f)) => assert_eq!(mix_name(*f), name),
                (PresetFamily::Shipped, Preset::Rules(r)) => assert!(!r.rules.is_empty()),
                (PresetFamily::Basic, Preset::Rules(r)) => assert!(r.rules.is_empty()),
                other => panic!("{other:?}"),
            }
            assert!(!p.description.is_empty(), "{}", p.name);
        }
        assert_eq!(preset_table().len(), SHIPPED.len() + 1 + Ftype::ALL.len());
        assert!(preset_names().contains("ud-iq1_s, ud-iq1_m"));
        assert!(preset_names().contains("basic-<type>, or a llama.cpp mix (q4_0, q4_1"));
    }

    #[test]
    fn presets_parse() {
        for (name, _) in SHIPPED {
            let Preset::Rules(r) = Preset::named(name).unwrap().unwrap() else {
                panic!("{name} is not a recipe")
            };
            assert_eq!(r.name, name);
            assert!(!r.rules.is_empty());
        }
        let Some(Ok(Preset::Rules(basic))) = Preset::named("basic-iq1_s") else {
            panic!("basic-iq1_s")
        };
        assert_eq!(basic.default, Some(GgmlType::IQ1_S));
        assert!(Preset::named("nope").is_none());
        assert!(Preset::named("basic-nope").is_none());
        assert!(matches!(
            Preset::named("Q4_K_M"),
            Some(Ok(Preset::Mix(Ftype::Q4_K_M)))
        ));
    }

    fn llama(n_layer: u32) -> Inventory {
        let mut md = Metadata::new();
        md.set("general.architecture", Value::String("llama".into()));
        md.set("llama.block_count", Value::U32(n_layer));
        md.set("llama.attention.head_count", Value::U32(32));
        md.set("llama.attention.head_count_kv", Value::U32(8));
        let mut tensors = Vec::new();
        for l in 0..n_layer {
            for (n, s) in [
                ("attn_v", vec![4096, 1024]),
                ("ffn_down", vec![14336, 4096]),
            ] {
                tensors.push(
                    TensorInfo::new(format!("blk.{l}.{n}.weight"), s, GgmlType::F16).unwrap(),
                );
            }
        }
        Inventory {
            metadata: md,
            tensors,
        }
    }

    #[test]
    fn a_mix_plans_as_llama_cpp_and_cites_its_listing() {
        let inv = llama(8);
        let preset = Preset::named("q2_k").unwrap().unwrap();
        let p = preset.plan(&inv, &PlanOptions::default()).unwrap();
        let v = p
            .tensors
            .iter()
            .find(|t| t.name == "blk.0.attn_v.weight")
            .unwrap();
        assert_eq!(v.target, GgmlType::Q4_K);
        match v.decision {
            Decision::Rule(i) => {
                assert_eq!(RULES[i].ty, GgmlType::Q4_K);
                let line = preset.rule_line(i);
                let source = preset.source();
                let text = source.lines().nth(line - 1).unwrap();
                assert!(text.starts_with(&format!("# rule {i}:")), "{text}");
            }
            ref d => panic!("{d:?}"),
        }
        assert_eq!(preset.file_type(&p), Ftype::Q2_K.id());
        assert!(p.description.ends_with("(no imatrix)"), "{}", p.description);
    }

    #[test]
    fn the_imatrix_changes_iq3_xxs_ffn_down_as_in_llama_cpp() {
        // llama.cpp's IQ3_XXS mix raises ffn_down to Q4_K/Q3_K only without an imatrix.
        let inv = llama(8);
        let preset = Preset::Mix(Ftype::IQ3_XXS);
        let down = |has_imatrix: bool| {
            let opts = PlanOptions {
                has_imatrix,
                ..PlanOptions::default()
            };
            let p = preset.plan(&inv, &opts).unwrap();
            p.tensors
                .iter()
                .filter(|t| t.name.contains("ffn_down"))
                .map(|t| t.target)
                .collect::<Vec<_>>()
        };
        assert!(down(false).iter().all(|t| *t != GgmlType::IQ3_XXS));
        assert!(down(true).iter().all(|t| *t == GgmlType::IQ3_XXS));
    }
}
