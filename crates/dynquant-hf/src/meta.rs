//! `general.*` values the converter derives: the model name from the folder name and the size
//! label from the parameter count (gguf-py `Metadata.id_to_title`, `size_label`).

use crate::arch::OutTensor;

/// Title-cases a model id as gguf-py's `id_to_title`: '-' becomes ' ', all-lowercase words are
/// title-cased (`str.title`: a letter is upper-cased after a non-letter) unless they are
/// version numbers (`v1.2`) or start with a digit.
pub fn id_to_title(id: &str) -> String {
    let words: Vec<String> = id
        .trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let has_cased = w.chars().any(|c| c.is_lowercase() || c.is_uppercase());
            let is_lower = has_cased && !w.chars().any(char::is_uppercase);
            let is_version = {
                let b = w.as_bytes();
                (b.first() == Some(&b'v')
                    && w.len() > 1
                    && w[1..]
                        .split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())))
                    || b.first().is_some_and(u8::is_ascii_digit)
            };
            if is_lower && !is_version {
                let mut out = String::new();
                let mut prev_cased = false;
                for c in w.chars() {
                    let cased = c.is_lowercase() || c.is_uppercase();
                    if cased && !prev_cased {
                        out.extend(c.to_uppercase());
                    } else {
                        out.extend(c.to_lowercase());
                    }
                    prev_cased = cased;
                }
                out
            } else {
                w.to_string()
            }
        })
        .collect();
    words.join(" ")
}

/// What the converter reads out of a model id (`<org>/<name>` or a folder name) with gguf-py's
/// naming heuristic (`Metadata.get_model_id_components`): the dash-separated parts are
/// annotated as version (`v3`, `1.5`), quantization type (`q4_k`, `bf16`), size (`7B`, `8x7B`,
/// `small`, ...; a size far from the real parameter count is a finetune such as a context
/// length) or finetune (`chat`, `instruct`, `vision`, `lora`); leading unannotated or version
/// parts form the basename. An id with no size, finetune or version is "too ambiguous" and
/// yields nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdComponents {
    /// `general.organization` (title-cased by the caller).
    pub organization: Option<String>,
    /// `general.basename`.
    pub basename: Option<String>,
    /// `general.finetune`.
    pub finetune: Option<String>,
    /// `general.version`.
    pub version: Option<String>,
    /// `general.size_label`.
    pub size_label: Option<String>,
}

fn all_ascii_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `(v|iter)?\d+([.]\d+)*`, case-insensitive, whole part.
fn is_version(p: &str) -> bool {
    let l = p.to_ascii_lowercase();
    let rest = l
        .strip_prefix("iter")
        .or_else(|| l.strip_prefix('v'))
        .unwrap_or(&l);
    rest.split('.').all(all_ascii_digits)
}

/// `i?q\d(_\w)*|b?fp?(16|32)`, case-insensitive, whole part.
fn is_quant_type(p: &str) -> bool {
    let l = p.to_ascii_lowercase();
    let q = l.strip_prefix('i').unwrap_or(&l);
    if let Some(r) = q.strip_prefix('q') {
        let b = r.as_bytes();
        if b.first().is_some_and(u8::is_ascii_digit) {
            // (_\w)*: pairs of '_' and one word character
            let tail = &b[1..];
            return tail.len() % 2 == 0
                && tail
                    .chunks(2)
                    .all(|c| c[0] == b'_' && (c[1].is_ascii_alphanumeric() || c[1] == b'_'));
        }
    }
    let f = l.strip_prefix('b').unwrap_or(&l);
    let Some(f) = f.strip_prefix('f') else {
        return false;
    };
    let f = f.strip_prefix('p').unwrap_or(f);
    f == "16" || f == "32"
}

/// `(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)`, case-insensitive.
fn is_size(p: &str) -> bool {
    let l = p.to_ascii_lowercase();
    if matches!(
        l.as_str(),
        "small" | "mini" | "medium" | "large" | "xl" | "xxl"
    ) {
        return true;
    }
    let b = l.as_bytes();
    let mut i = 0;
    // optional prefix: 'a' or digits+'x'
    if b.first() == Some(&b'a') {
        i = 1;
    } else {
        let d = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if d > 0 && b.get(d) == Some(&b'x') {
            i = d + 1;
        }
    }
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let n = digits(i);
    if n == 0 {
        return false;
    }
    i += n;
    if matches!(b.get(i), Some(b'.') | Some(b'_')) && digits(i + 1) > 0 {
        i += 1 + digits(i + 1);
    }
    if !matches!(b.get(i), Some(b'k' | b'm' | b'b' | b't')) {
        return false;
    }
    i += 1;
    if b.get(i).is_some_and(|c| c.is_ascii_digit()) {
        i += 1;
    }
    i == b.len()
}

/// gguf-py's model-id heuristic (see [`IdComponents`]); `total_params` is the model's
/// parameter count (sizes far from it are taken for finetunes).
pub fn model_id_components(id: &str, total_params: u64) -> IdComponents {
    if id.contains(' ') {
        return IdComponents::default();
    }
    let (org, full) = match id.split_once('/') {
        Some((o, n)) => (Some(o).filter(|o| !o.is_empty() && !o.starts_with('.')), n),
        None => (None, id),
    };
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    #[derive(Default, Clone)]
    struct T {
        basename: bool,
        size: bool,
        finetune: bool,
        version: bool,
        qtype: bool,
    }
    impl T {
        fn empty(&self) -> bool {
            !(self.basename || self.size || self.finetune || self.version || self.qtype)
        }
        fn count(&self) -> usize {
            [
                self.basename,
                self.size,
                self.finetune,
                self.version,
                self.qtype,
            ]
            .iter()
            .filter(|b| **b)
            .count()
        }
    }
    let mut types = vec![T::default(); parts.len()];
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if is_version(&part) {
            types[i].version = true;
        } else if is_quant_type(&part) {
            types[i].qtype = true;
            parts[i] = part.to_uppercase();
        } else if i > 0 && is_size(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            let n = p.len();
            if p[n - 1].is_ascii_digit() && n >= 2 {
                // bloom-7b1 -> 7.1b
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.push('.');
                p.push(b);
                p.push(a);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_ascii_digit() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            let mut text: String = p.iter().collect();
            if total_params != 0 {
                let last = *p.last().unwrap_or(&' ');
                let scale = " KMBT".find(last);
                let num: String = p[..p.len() - 1].iter().collect();
                if let (Ok(x), Some(scale)) = (num.parse::<f64>(), scale) {
                    let label = x * 1000f64.powi(scale as i32);
                    let total = total_params as f64;
                    if (label - total).abs() > (7 * total_params / 8) as f64 {
                        types[i].finetune = true;
                        let lower = last.to_ascii_lowercase();
                        text = format!("{num}{lower}");
                    }
                }
            }
            if types[i].empty() {
                types[i].size = true;
            }
            parts[i] = text;
        } else if i > 0
            && matches!(
                part.to_ascii_lowercase().as_str(),
                "chat" | "instruct" | "vision" | "lora"
            )
        {
            types[i].finetune = true;
        }
    }
    if parts
        .iter()
        .zip(&types)
        .any(|(p, t)| t.size && p.chars().any(|c| c.is_ascii_digit()))
    {
        for (p, t) in parts.iter().zip(types.iter_mut()) {
            if t.size && p.chars().all(char::is_alphabetic) {
                t.size = false;
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(types.iter_mut()) {
        let alpha_first = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.empty() && alpha_first) || t.version) {
            t.basename = true;
        } else {
            at_start = false;
            if t.empty() {
                t.finetune = true;
            }
        }
    }
    for t in types.iter_mut().rev() {
        if t.basename && t.count() > 1 {
            t.basename = false;
        } else {
            break;
        }
    }
    let join = |f: &dyn Fn(&T) -> bool| {
        let v: Vec<&str> = parts
            .iter()
            .zip(&types)
            .filter(|(_, t)| f(t))
            .map(|(p, _)| p.as_str())
            .collect();
        (!v.is_empty()).then(|| v.join("-"))
    };
    let mut basename = join(&|t| t.basename);
    let size_label = {
        let mut seen: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&types) {
            if t.size && !seen.contains(&p.as_str()) {
                seen.push(p);
            }
        }
        (!seen.is_empty()).then(|| seen.join("-"))
    };
    let finetune = join(&|t| t.finetune);
    let version = join(&|t| t.version && !t.basename);
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    IdComponents {
        organization: org.map(str::to_string),
        basename,
        finetune,
        version,
        size_label,
    }
}

/// gguf-py `model_weight_count_rounded_notation` with two significant integer digits.
fn rounded(n: u64) -> String {
    let n = n as f64;
    let (x, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let int_digits = {
        let r = x.round_ties_even() as u64;
        if r == 0 {
            0
        } else {
            r.to_string().len()
        }
    };
    let fix = 2usize.saturating_sub(int_digits);
    format!("{x:.fix$}{suffix}")
}

/// Total parameters of the converted tensors.
pub fn total_params(tensors: &[OutTensor]) -> u64 {
    tensors.iter().map(|t| t.numel() as u64).sum()
}

/// The size label of the converted tensors: `N` parameters, or `<experts>x<per-expert model>`
/// for MoE models (tensors named `*_exps.*` with 3 dimensions count once per expert).
pub fn size_label(tensors: &[OutTensor]) -> String {
    let (mut total, mut shared, mut expert) = (0u64, 0u64, 0u64);
    let (mut expert_sum, mut n_expert_tensors) = (0u64, 0u64);
    for t in tensors {
        let size = t.numel() as u64;
        if t.name.contains("_exps.") && t.shape.len() >= 3 {
            let count = t.shape[t.shape.len() - 3] as u64;
            expert += size / count.max(1);
            expert_sum += count;
            n_expert_tensors += 1;
        } else {
            shared += size;
        }
        total += size;
    }
    match expert_sum.checked_div(n_expert_tensors) {
        Some(count) => format!("{count}x{}", rounded(shared + expert)),
        None => rounded(total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_match_the_converter() {
        assert_eq!(id_to_title("llama-bpe"), "Llama Bpe");
        assert_eq!(id_to_title("deepseek-v3-fp8"), "Deepseek v3 Fp8");
        assert_eq!(id_to_title("qwen3moe"), "Qwen3Moe");
        assert_eq!(id_to_title("Qwen2.5-0.5B"), "Qwen2.5 0.5B");
    }

    #[test]
    fn rounded_notation() {
        assert_eq!(rounded(1_700_000), "1.7M");
        assert_eq!(rounded(135_000_000), "135M");
        assert_eq!(rounded(671_000_000_000), "671B");
    }
}
