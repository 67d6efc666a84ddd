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
