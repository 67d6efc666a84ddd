//! Recipes are data: an ordered list of rules, first match wins, each with a `why`.
//!
//! Format (TOML):
//!
//! ```toml
//! name = "ud-iq1_s"
//! description = "DeepSeek-R1 1.58-bit dynamic quant"
//! default = "q4_K"            # type of quantizable tensors no rule matches
//!
//! [[rules]]
//! roles = ["ffn_down_exps"]   # any of these roles (see `Role::name`)
//! moe_layers = "0-2"          # the first three MoE layers (index among MoE layers)
//! type = "iq2_xxs"
//! why = "down_proj is the most sensitive projection, most of all early"
//! ```
//!
//! Match fields (all optional; every field given must match): `roles` (list of role names),
//! `name` (regex on the tensor name), `layers` (block indices: `"0-2"`, `"3-"`, `"-5"`, `"7"`,
//! or comma lists of those), `moe_layers` (the same over the index among MoE layers),
//! `depth` (fraction of depth `"0.0-0.25"`, half-open, of `layer / block_count`). Errors name
//! the line.
//!
//! **Recipes as constraints.** Planned with a target (`--target-size`, `--target-bpw`,
//! `--target-kld`), a recipe constrains the allocator instead of choosing every type: a rule
//! with `type` pins its tensors, a rule with `min` and/or `max` (instead of `type`) bounds them
//! by bits per weight (`min = "q4_K"`: never below Q4_K's 4.5 bpw), and tensors no rule matches
//! are free. `default` is then not used, and may be left out of a recipe meant only as
//! constraints; bounds need a target, and a recipe without `default` too.

use std::ops::RangeInclusive;

use dynquant_gguf::types::GgmlType;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use toml::Spanned;

use crate::role::{Role, TensorClass};

/// A recipe error, pointing at its line.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}:{line}: {message}")]
pub struct RecipeError {
    /// File name or preset name.
    pub source_name: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One set of layer indices: a union of inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSet(Vec<RangeInclusive<u32>>);

impl LayerSet {
    /// Parses `"0-2"`, `"3-"`, `"-5"`, `"7"`, `"0-2,10,20-"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            let num = |t: &str| -> Result<u32, String> {
                t.trim().parse::<u32>().map_err(|_| {
                    format!("bad layer range '{s}' (expected e.g. \"0-2\", \"3-\", \"-5\", \"7\")")
                })
            };
            let r = match part.split_once('-') {
                Some(("", hi)) => 0..=num(hi)?,
                Some((lo, "")) => num(lo)?..=u32::MAX,
                Some((lo, hi)) => num(lo)?..=num(hi)?,
                None => {
                    let n = num(part)?;
                    n..=n
                }
            };
            if r.start() > r.end() {
                return Err(format!("empty layer range '{part}'"));
            }
            ranges.push(r);
        }
        Ok(LayerSet(ranges))
    }

    /// Whether `l` is in the set.
    pub fn contains(&self, l: u32) -> bool {
        self.0.iter().any(|r| r.contains(&l))
    }
}

/// What a rule matches.
#[derive(Debug, Clone, Default)]
pub struct Match {
    /// Any of these roles.
    pub roles: Option<Vec<Role>>,
    /// Tensor-name regex.
    pub name: Option<Regex>,
    /// Block indices.
    pub layers: Option<LayerSet>,
    /// Indices among MoE blocks.
    pub moe_layers: Option<LayerSet>,
    /// Fraction of depth `[lo, hi)`.
    pub depth: Option<(f64, f64)>,
}

impl Match {
    /// Whether a tensor matches.
    pub fn matches(&self, name: &str, class: &TensorClass, n_layer: u32) -> bool {
        if let Some(roles) = &self.roles {
            if !roles.contains(&class.role) {
                return false;
            }
        }
        if let Some(re) = &self.name {
            if !re.is_match(name) {
                return false;
            }
        }
        if let Some(set) = &self.layers {
            if !class.layer.is_some_and(|l| set.contains(l)) {
                return false;
            }
        }
        if let Some(set) = &self.moe_layers {
            if !class.moe_index.is_some_and(|l| set.contains(l)) {
                return false;
            }
        }
        if let Some((lo, hi)) = self.depth {
            let Some(l) = class.layer else { return false };
            let f = f64::from(l) / f64::from(n_layer.max(1));
            if !(f >= lo && f < hi) {
                return false;
            }
        }
        true
    }
}

/// What a rule does to the tensors it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// `type = "..."`: this type (with a target: pinned to it).
    Pin(GgmlType),
    /// `min`/`max`: bounds on the allocator's choice, by bits per weight; needs a target.
    Bounds {
        /// Never fewer bits per weight than this type.
        min: Option<GgmlType>,
        /// Never more bits per weight than this type.
        max: Option<GgmlType>,
    },
}

impl RuleAction {
    /// The type a rule assigns, or `None` for bounds.
    pub fn pinned(self) -> Option<GgmlType> {
        match self {
            RuleAction::Pin(ty) => Some(ty),
            RuleAction::Bounds { .. } => None,
        }
    }
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What it matches.
    pub matcher: Match,
    /// The type it assigns, or the bounds it sets.
    pub action: RuleAction,
    /// Why (printed in plans).
    pub why: String,
    /// 1-based line in the recipe source.
    pub line: usize,
}

/// A parsed recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// Type for quantizable tensors no rule matches (`None` in a recipe meant only as
    /// constraints for a target).
    pub default: Option<GgmlType>,
    /// Rules, in order; first match wins.
    pub rules: Vec<Rule>,
    /// The recipe text it was parsed from (hashed into output metadata).
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    name: String,
    #[serde(default)]
    description: String,
    default: Option<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    roles: Option<Vec<Spanned<String>>>,
    name: Option<Spanned<String>>,
    layers: Option<Spanned<String>>,
    moe_layers: Option<Spanned<String>>,
    depth: Option<Spanned<String>>,
    #[serde(rename = "type")]
    ty: Option<Spanned<String>>,
    min: Option<Spanned<String>>,
    max: Option<Spanned<String>>,
    why: String,
}

/// Most bytes a compiled tensor-name pattern may take (the `regex` crate's default is 10 MiB):
/// names are short and real patterns compile to a few KiB, so a pattern from a recipe file or
/// `--tensor-type` that needs more (e.g. nested counted repetitions) is refused at once instead of
/// taking time and memory to build.
pub const NAME_PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a tensor-name pattern (recipe `name = "..."`, `--tensor-type REGEX=TYPE`) within
/// [`NAME_PATTERN_SIZE_LIMIT`] and a nesting depth of 64. Matching with the `regex` crate is
/// linear in the name's length whatever the pattern, so a compiled pattern cannot blow up later.
pub fn tensor_name_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(NAME_PATTERN_SIZE_LIMIT)
        .dfa_size_limit(NAME_PATTERN_SIZE_LIMIT)
        .nest_limit(64)
        .build()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn parse_depth(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("bad depth '{s}' (expected e.g. \"0.0-0.25\")");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let (lo, hi): (f64, f64) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo >= hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

impl Recipe {
    /// Parses a recipe; `source_name` is used in error messages.
    pub fn parse(text: &str, source_name: &str) -> Result<Recipe, RecipeError> {
        let err = |offset: usize, message: String| RecipeError {
            source_name: source_name.to_string(),
            line: line_of(text, offset),
            message,
        };
        let raw: RawRecipe = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            err(offset, e.message().to_string())
        })?;
        let parse_type = |s: &Spanned<String>| {
            s.get_ref()
                .parse::<GgmlType>()
                .map_err(|e| err(s.span().start, e.to_string()))
        };
        let default = raw.default.as_ref().map(parse_type).transpose()?;
        let mut rules = Vec::with_capacity(raw.rules.len());
        for spanned in &raw.rules {
            let r = spanned.get_ref();
            let mut m = Match::default();
            if let Some(roles) = &r.roles {
                let mut out = Vec::new();
                for role in roles {
                    out.push(Role::from_name(role.get_ref()).ok_or_else(|| {
                        let known: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
                        err(
                            role.span().start,
                            format!(
                                "unknown role '{}' (known: {})",
                                role.get_ref(),
                                known.join(", ")
                            ),
                        )
                    })?);
                }
                m.roles = Some(out);
            }
            if let Some(re) = &r.name {
                m.name = Some(
                    tensor_name_pattern(re.get_ref())
                        .map_err(|e| err(re.span().start, format!("bad regex: {e}")))?,
                );
            }
            if let Some(l) = &r.layers {
                m.layers = Some(LayerSet::parse(l.get_ref()).map_err(|e| err(l.span().start, e))?);
            }
            if let Some(l) = &r.moe_layers {
                m.moe_layers =
                    Some(LayerSet::parse(l.get_ref()).map_err(|e| err(l.span().start, e))?);
            }
            if let Some(d) = &r.depth {
                m.depth = Some(parse_depth(d.get_ref()).map_err(|e| err(d.span().start, e))?);
            }
            let action = match (&r.ty, &r.min, &r.max) {
                (Some(ty), None, None) => RuleAction::Pin(parse_type(ty)?),
                (None, None, None) => {
                    return Err(err(
                        spanned.span().start,
                        "a rule needs `type`, or `min`/`max` bounds".into(),
                    ))
                }
                (Some(ty), _, _) => {
                    return Err(err(
                        ty.span().start,
                        "a rule has either `type` or `min`/`max` bounds, not both".into(),
                    ))
                }
                (None, min, max) => {
                    let min = min.as_ref().map(parse_type).transpose()?;
                    let max = max.as_ref().map(parse_type).transpose()?;
                    if let (Some(lo), Some(hi)) = (min, max) {
                        if lo.info().bpw() > hi.info().bpw() {
                            return Err(err(
                                spanned.span().start,
                                format!("min {lo} has more bits per weight than max {hi}"),
                            ));
                        }
                    }
                    RuleAction::Bounds { min, max }
                }
            };
            rules.push(Rule {
                matcher: m,
                action,
                why: r.why.clone(),
                line: line_of(text, spanned.span().start),
            });
        }
        Ok(Recipe {
            name: raw.name,
            description: raw.description,
            default,
            rules,
            source: text.to_string(),
        })
    }

    /// `basic-<type>`: every quantizable tensor at one type (llama-quantize's `--pure`).
    pub fn basic(ty: GgmlType) -> Recipe {
        let name = format!("basic-{}", ty.name().to_lowercase());
        Recipe {
            source: format!("name = \"{name}\"\ndefault = \"{}\"\n", ty.name()),
            description: format!("every quantizable tensor at {ty} (llama-quantize --pure)"),
            name,
            default: Some(ty),
            rules: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_sets() {
        let s = LayerSet::parse("0-2, 7,10-").unwrap();
        assert!(s.contains(0) && s.contains(2) && s.contains(7) && s.contains(99));
        assert!(!s.contains(3) && !s.contains(9));
        assert!(LayerSet::parse("-5").unwrap().contains(5));
        for bad in ["", "a-b", "5-2", "1-2-3"] {
            assert!(LayerSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_point_at_the_line() {
        let cases = [
            ("name = \"x\"\ndefault = \"q4_K\"\n[[rules]]\ntype = \"q9_k\"\nwhy = \"\"\n", 4, "unknown ggml type"),
            ("name = \"x\"\ndefault = \"q4_K\"\n[[rules]]\nname = \"(\"\ntype = \"q4_0\"\nwhy = \"\"\n", 4, "bad regex"),
            ("name = \"x\"\ndefault = \"q4_K\"\n[[rules]]\nroles = [\"attn\"]\ntype = \"q4_0\"\nwhy = \"\"\n", 4, "unknown role"),
            ("name = \"x\"\ndefault = \"q4_K\"\n[[rules]]\nlayers = \"5-2\"\ntype = \"q4_0\"\nwhy = \"\"\n", 4, "empty layer range"),
            ("name = \"x\"\ndefault = \"q4_K\"\n[[rules]]\nlayer = \"1\"\ntype = \"q4_0\"\nwhy = \"\"\n", 4, "unknown field"),
        ];
        for (text, line, msg) in cases {
            let e = Recipe::parse(text, "r.toml").unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.to_string().contains(msg), "{e}");
            assert!(e.to_string().starts_with(&format!("r.toml:{line}:")), "{e}");
        }
    }

    #[test]
    fn name_patterns_are_size_limited() {
        assert!(tensor_name_pattern(r"blk\.(1[0-9]|2[0-5])\.ffn_down").is_ok());
        let huge = tensor_name_pattern("(?:a{100}){100}{100}")
            .unwrap_err()
            .to_string();
        assert!(huge.contains("size limit"), "{huge}");
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(tensor_name_pattern(&deep).is_err());
        let text = "name = \"t\"\ndefault = \"q4_K\"\n[[rules]]\nname = \"(?:x{100}){100}{100}\"\ntype = \"q4_K\"\nwhy = \"w\"\n";
        let e = Recipe::parse(text, "t").unwrap_err().to_string();
        assert!(e.contains("bad regex") && e.contains("size limit"), "{e}");
    }
}
