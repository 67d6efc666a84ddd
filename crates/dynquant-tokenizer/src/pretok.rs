//! Pre-tokenization for BPE vocabularies: the text is cut into words before merging, the way
//! llama.cpp's `unicode_regex_split` does it.
//!
//! llama.cpp applies a list of regular expressions in turn; each one cuts every piece left by the
//! previous one into its matches *and* the unmatched gaps between them (nothing is dropped). The
//! GPT-2 and Llama-3 expressions are implemented there as hand-written scanners, the others run
//! through `std::regex` on a "collapsed" text where every non-ASCII code point is replaced by one
//! byte standing for its Unicode category. The scanners here reproduce both behaviours: they work
//! on code points with the same category flags (general category + `White_Space`), and the
//! lookahead `\s+(?!\S)` is bounded by the current piece, as in llama.cpp.

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// Category flags of a code point, with llama.cpp's bit layout (`unicode_cpt_flags`). A position
/// outside the current piece has no flags at all (0), which the scanners use as "end of piece".
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Flags(u16);

impl Flags {
    const UNDEFINED: u16 = 0x0001;
    const NUMBER: u16 = 0x0002;
    const LETTER: u16 = 0x0004;
    const SEPARATOR: u16 = 0x0008;
    const MARK: u16 = 0x0010;
    const PUNCTUATION: u16 = 0x0020;
    const SYMBOL: u16 = 0x0040;
    const CONTROL: u16 = 0x0080;
    const WHITESPACE: u16 = 0x0100;

    pub(crate) fn of(c: char) -> Flags {
        let cat = match get_general_category(c) {
            G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter => Self::LETTER,
            G::DecimalNumber | G::LetterNumber | G::OtherNumber => Self::NUMBER,
            G::NonspacingMark | G::SpacingMark | G::EnclosingMark => Self::MARK,
            G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation => Self::PUNCTUATION,
            G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol => Self::SYMBOL,
            G::SpaceSeparator | G::LineSeparator | G::ParagraphSeparator => Self::SEPARATOR,
            G::Control | G::Format | G::PrivateUse | G::Surrogate => Self::CONTROL,
            _ => Self::UNDEFINED,
        };
        // llama.cpp's whitespace set is Unicode's White_Space property (9-13, 32, 0x85, 0xA0, ...).
        let ws = if c.is_whitespace() {
            Self::WHITESPACE
        } else {
            0
        };
        Flags(cat | ws)
    }
    fn any(self) -> bool {
        self.0 != 0
    }
    fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    fn is_punct(self) -> bool {
        self.0 & Self::PUNCTUATION != 0
    }
    fn is_ws(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
}

/// One pre-tokenization step (one of llama.cpp's regular expressions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// Llama-3's expression (`(?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`)
    /// with at most `n` digits per number (3 for Llama-3, 1 for Qwen2).
    Llama3 { max_digits: usize },
    /// `\p{N}`: every number code point on its own.
    EachNumber,
    /// `\p{N}+`
    NumberRuns,
    /// `[\p{P}\$\+<=>\^~\|]+`
    PunctRuns,
    /// `[0-9][0-9][0-9]`
    AsciiDigitTriples,
    /// Kimi-K2's expression (`tokenization_kimi.py`): Han runs on their own, then Llama-3's
    /// alternatives with Han code points taken out of the letter words, contractions glued to the
    /// end of the word instead of standing alone, and at most 3 digits per number.
    KimiK2,
    /// GPT-4o's o200k expression as llama.cpp runs it (its `GPT4O` rewrite, on the collapsed
    /// text): cased letter words (`[^a-z]` letters then `[^A-Z]` letters) with contractions
    /// glued on, at most 3 digits per number, and punctuation runs taking `[\r\n/]*` after them.
    Gpt4o,
}

/// The pre-tokenizer steps for a `tokenizer.ggml.pre` value (llama.cpp `llm_tokenizer_bpe`), or
/// `None` when it is not supported here.
pub(crate) fn steps_for(pre: PreType) -> Vec<Step> {
    match pre {
        PreType::Default => vec![
            Step::PunctRuns,
            Step::Gpt2,
            Step::NumberRuns,
            Step::AsciiDigitTriples,
        ],
        PreType::Gpt2 => vec![Step::Gpt2],
        PreType::Smollm => vec![Step::EachNumber, Step::Gpt2],
        PreType::Llama3 => vec![Step::Llama3 { max_digits: 3 }],
        PreType::Qwen2 => vec![Step::Llama3 { max_digits: 1 }],
        PreType::KimiK2 => vec![Step::KimiK2],
        PreType::Gpt4o => vec![Step::Gpt4o],
    }
}

/// The pre-tokenizer families supported (llama.cpp `llama_vocab_pre_type`, the subset here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreType {
    /// `default` (and a missing `tokenizer.ggml.pre`)
    Default,
    /// `gpt-2` and the other names llama.cpp maps to the GPT-2 expression
    Gpt2,
    /// `smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`, `minerva-7b`: digits split first, then GPT-2
    Smollm,
    /// `llama3`, `llama-v3`, `llama-bpe`, `falcon3`, `pixtral`, ...
    Llama3,
    /// `qwen2`, `deepseek-r1-qwen`, `stablelm2`, `megrez`, `hunyuan`: Llama-3 with single digits
    Qwen2,
    /// `kimi-k2`: Kimi-K2's tiktoken expression, Han runs split out (llama.cpp `KIMI_K2`)
    KimiK2,
    /// `gpt-4o`, `llama4`, `minimax-m2`, `kanana2`, `talkie`: the o200k expression (llama.cpp
    /// `GPT4O`, `MINIMAX_M2`)
    Gpt4o,
}

/// Splits `text` into pre-tokenized words (as `&str` slices of `text`), in order.
pub(crate) fn split<'a>(text: &'a str, steps: &[Step]) -> Vec<&'a str> {
    let cpts: Vec<char> = text.chars().collect();
    let flags: Vec<Flags> = cpts.iter().map(|&c| Flags::of(c)).collect();
    let mut lens: Vec<usize> = vec![cpts.len()];
    for step in steps {
        lens = apply(*step, &cpts, &flags, &lens);
    }
    // Code-point lengths back to byte slices.
    let mut out = Vec::with_capacity(lens.len());
    let mut byte = 0usize;
    let mut cp = 0usize;
    for len in lens {
        let start = byte;
        for c in &cpts[cp..cp + len] {
            byte += c.len_utf8();
        }
        cp += len;
        if byte > start {
            out.push(&text[start..byte]);
        }
    }
    out
}

fn apply(step: Step, cpts: &[char], flags: &[Flags], lens: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(lens.len().max(cpts.len() / 4));
    let mut start = 0usize;
    for &len in lens {
        let piece = Piece {
            cpts: &cpts[start..start + len],
            flags: &flags[start..start + len],
        };
        match step {
            Step::Gpt2 => piece.gpt2(&mut out),
            Step::Llama3 { max_digits } => piece.llama3(max_digits, &mut out),
            Step::EachNumber => piece.class_matches(&mut out, collapsed_number, false),
            Step::NumberRuns => piece.class_matches(&mut out, collapsed_number, true),
            Step::PunctRuns => piece.class_matches(&mut out, collapsed_punct_or_listed, true),
            Step::AsciiDigitTriples => piece.ascii_digit_triples(&mut out),
            Step::KimiK2 => piece.o200k(O200kRules::KIMI_K2, &mut out),
            Step::Gpt4o => piece.o200k(O200kRules::GPT4O, &mut out),
        }
        start += len;
    }
    out
}

/// `\p{N}` as llama.cpp's collapsed-text regex sees it: ASCII digits, or a non-ASCII code point
/// that is not whitespace and whose category is a number.
fn collapsed_number(c: char, f: Flags) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        !f.is_ws() && f.is_number()
    }
}

/// `[\p{P}\$\+<=>\^~\|]` on the collapsed text: ASCII punctuation as llama.cpp lists it
/// (`!-#%-*,-/:-;?-@[-]_{}`), the listed symbols, or a non-ASCII punctuation code point.
fn collapsed_punct_or_listed(c: char, f: Flags) -> bool {
    if c.is_ascii() {
        matches!(c, '!'..='#' | '%'..='*' | ','..='/' | ':'..=';' | '?'..='@' | '['..=']' | '_' | '{' | '}')
            || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
    } else {
        !f.is_ws() && f.is_punct()
    }
}

struct Piece<'a> {
    cpts: &'a [char],
    flags: &'a [Flags],
}

/// Emits piece lengths the way llama.cpp's `_add_token` does (empty pieces are dropped).
struct Emitter<'o> {
    out: &'o mut Vec<usize>,
    prev_end: usize,
}

impl Emitter<'_> {
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

impl Piece<'_> {
    fn cpt(&self, pos: usize) -> Option<char> {
        self.cpts.get(pos).copied()
    }
    fn fl(&self, pos: usize) -> Flags {
        self.flags.get(pos).copied().unwrap_or_default()
    }

    /// A contraction at `pos` (`'s 't 'm 'd 're 've 'll`), its length in code points.
    fn contraction(&self, pos: usize, fold_case: bool) -> Option<usize> {
        if self.cpt(pos)? != '\'' {
            return None;
        }
        let low = |c: Option<char>| {
            c.map(|c| {
                if fold_case {
                    c.to_lowercase().next().unwrap_or(c)
                } else {
                    c
                }
            })
        };
        let n1 = low(self.cpt(pos + 1))?;
        if matches!(n1, 's' | 't' | 'm' | 'd') {
            return Some(2);
        }
        let n2 = low(self.cpt(pos + 2))?;
        if matches!((n1, n2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
            return Some(3);
        }
        None
    }

    /// Whitespace run at `pos`: (count, end of the last `\r`/`\n` in it, if any).
    fn whitespace_run(&self, pos: usize) -> (usize, Option<usize>) {
        let mut n = 0;
        let mut last_nl = None;
        while self.fl(pos + n).is_ws() {
            if matches!(self.cpt(pos + n), Some('\r' | '\n')) {
                last_nl = Some(pos + n + 1);
            }
            n += 1;
        }
        (n, last_nl)
    }

    fn gpt2(&self, out: &mut Vec<usize>) {
        let n = self.cpts.len();
        let mut em = Emitter { out, prev_end: 0 };
        let mut pos = 0;
        while pos < n {
            let cpt = self.cpts[pos];
            let flags = self.flags[pos];
            if let Some(len) = self.contraction(pos, false) {
                pos += em.add(pos + len);
                continue;
            }
            let space = usize::from(cpt == ' ');
            let mut f2 = if cpt == ' ' { self.fl(pos + 1) } else { flags };
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
            let class = |f: Flags| -> u8 {
                if f.is_letter() {
                    1
                } else if f.is_number() {
                    2
                } else if !f.is_ws() && f.any() {
                    3
                } else {
                    0
                }
            };
            let c = class(f2);
            if c != 0 {
                pos += space;
                while class(f2) == c {
                    pos += 1;
                    f2 = self.fl(pos);
                }
                em.add(pos);
                continue;
            }
            let (nws, _) = self.whitespace_run(pos);
            // `\s+(?!\S)`: leave the last whitespace for the next word when one follows.
            if nws > 1 && pos + nws < n {
                pos += nws - 1;
                em.add(pos);
                continue;
            }
            if nws > 0 {
                pos += nws;
                em.add(pos);
                continue;
            }
            pos += 1;
            em.add(pos);
        }
    }

    fn llama3(&self, max_digits: usize, out: &mut Vec<usize>) {
        let n = self.cpts.len();
        let mut em = Emitter { out, prev_end: 0 };
        let mut pos = 0;
        while pos < n {
            let cpt = self.cpts[pos];
            let flags = self.flags[pos];
            if let Some(len) = self.contraction(pos, true) {
                pos += em.add(pos + len);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(cpt == '\r' || cpt == '\n' || flags.is_number())
                && (flags.is_letter() || self.fl(pos + 1).is_letter())
            {
                pos += 1;
                while self.fl(pos).is_letter() {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            // `\p{N}{1,max}`
            if flags.is_number() {
                let mut ini = pos;
                while self.fl(pos).is_number() {
                    pos += 1;
                    if pos - ini >= max_digits {
                        em.add(pos);
                        ini = pos;
                    }
                }
                em.add(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (llama.cpp tests the current code point's flags for
            // "any" here, which is always true inside the piece).
            let mut f2 = if cpt == ' ' { self.fl(pos + 1) } else { flags };
            let other = |f: Flags| !(f.is_ws() || f.is_letter() || f.is_number()) && f.any();
            if other(f2) && flags.any() {
                pos += usize::from(cpt == ' ');
                while other(f2) {
                    pos += 1;
                    f2 = self.fl(pos);
                }
                while matches!(self.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            let (nws, last_nl) = self.whitespace_run(pos);
            // `\s*[\r\n]+`
            if let Some(end) = last_nl {
                pos = end;
                em.add(pos);
                continue;
            }
            // `\s+(?!\S)`
            if nws > 1 && pos + nws < n {
                pos += nws - 1;
                em.add(pos);
                continue;
            }
            // `\s+`
            if nws > 0 {
                pos += nws;
                em.add(pos);
                continue;
            }
            pos += 1;
            em.add(pos);
        }
    }

    /// The o200k family's expression (Kimi-K2's and GPT-4o's), `rules` saying where they differ:
    /// `[\p{Han}]+` (Kimi-K2 only) `|[^\r\n\p{L}\p{N}]?<word>(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
    /// \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*` (GPT-4o: `[\r\n/]*`) `|\s*[\r\n]+|\s+(?!\S)|\s+`.
    fn o200k(&self, rules: O200kRules, out: &mut Vec<usize>) {
        let n = self.cpts.len();
        let mut em = Emitter { out, prev_end: 0 };
        let word_letter = |pos: usize| {
            self.fl(pos).is_letter() && !(rules.han_runs && self.cpt(pos).is_some_and(is_han))
        };
        let mut pos = 0;
        while pos < n {
            let cpt = self.cpts[pos];
            let flags = self.flags[pos];
            // `[\p{Han}]+`
            if rules.han_runs && is_han(cpt) {
                while self.cpt(pos).is_some_and(is_han) {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?<word>` and an optional contraction. A Han letter is a letter,
            // so it can be neither the leading code point nor (with `han_runs`) in the word.
            let may_lead = !(cpt == '\r' || cpt == '\n' || flags.is_letter() || flags.is_number());
            if word_letter(pos) || (may_lead && word_letter(pos + 1)) {
                if !word_letter(pos) {
                    pos += 1;
                }
                pos = if rules.cased_words {
                    self.cased_word_end(pos)
                } else {
                    let mut end = pos;
                    while word_letter(end) {
                        end += 1;
                    }
                    end
                };
                if let Some(len) = self.contraction(pos, true) {
                    pos += len;
                }
                em.add(pos);
                continue;
            }
            // `\p{N}{1,3}`
            if flags.is_number() {
                let mut ini = pos;
                while self.fl(pos).is_number() {
                    pos += 1;
                    if pos - ini >= 3 {
                        em.add(pos);
                        ini = pos;
                    }
                }
                em.add(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (or `[\r\n/]*`). Kimi-K2's scanner in llama.cpp leaves
            // code points of no category out of the run; GPT-4o's regex (collapsed text) does not.
            let mut f2 = if cpt == ' ' { self.fl(pos + 1) } else { flags };
            let other = |f: Flags| {
                !(f.is_ws() || f.is_letter() || f.is_number())
                    && (rules.uncategorized_is_other || f.any())
            };
            if other(f2) && (cpt != ' ' || pos + 1 < n) {
                pos += usize::from(cpt == ' ');
                while pos < n && other(f2) {
                    pos += 1;
                    f2 = self.fl(pos);
                }
                while matches!(self.cpt(pos), Some('\r' | '\n'))
                    || (rules.slash_after_punct && self.cpt(pos) == Some('/'))
                {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            let (nws, last_nl) = self.whitespace_run(pos);
            // `\s*[\r\n]+`
            if let Some(end) = last_nl {
                pos = end;
                em.add(pos);
                continue;
            }
            // `\s+(?!\S)`
            if nws > 1 && pos + nws < n {
                pos += nws - 1;
                em.add(pos);
                continue;
            }
            // `\s+`
            if nws > 0 {
                pos += nws;
                em.add(pos);
                continue;
            }
            pos += 1;
            em.add(pos);
        }
    }

    /// The end of GPT-4o's cased word starting at letter `start`, as the backtracking regex
    /// `((?=\p{L})[^a-z])*((?=\p{L})[^A-Z])+|((?=\p{L})[^a-z])+((?=\p{L})[^A-Z])*` finds it on
    /// llama.cpp's collapsed text, where a non-ASCII letter is neither `[a-z]` nor `[A-Z]` and so
    /// counts on both sides.
    fn cased_word_end(&self, start: usize) -> usize {
        let letter = |pos: usize| self.fl(pos).is_letter();
        let not_lower =
            |pos: usize| letter(pos) && !self.cpt(pos).is_some_and(|c| c.is_ascii_lowercase());
        let not_upper =
            |pos: usize| letter(pos) && !self.cpt(pos).is_some_and(|c| c.is_ascii_uppercase());
        let mut end = start;
        while not_lower(end) {
            end += 1;
        }
        if not_upper(end) {
            while not_upper(end) {
                end += 1;
            }
            return end;
        }
        // The upper part gives back code points until one can start the lower part; if none can
        // (all ASCII capitals), the second alternative takes the whole capital run.
        match (start..end).rev().find(|&p| not_upper(p)) {
            Some(p) => p + 1,
            None => end,
        }
    }

    /// A one-class expression (`[class]` or `[class]+`): matches and the gaps between them.
    fn class_matches(&self, out: &mut Vec<usize>, class: impl Fn(char, Flags) -> bool, runs: bool) {
        let n = self.cpts.len();
        let mut em = Emitter { out, prev_end: 0 };
        let mut pos = 0;
        while pos < n {
            if class(self.cpts[pos], self.flags[pos]) {
                em.add(pos);
                pos += 1;
                if runs {
                    while pos < n && class(self.cpts[pos], self.flags[pos]) {
                        pos += 1;
                    }
                }
                em.add(pos);
            } else {
                pos += 1;
            }
        }
        em.add(n);
    }

    /// `[0-9][0-9][0-9]`: non-overlapping triples of ASCII digits, left to right.
    fn ascii_digit_triples(&self, out: &mut Vec<usize>) {
        let n = self.cpts.len();
        let mut em = Emitter { out, prev_end: 0 };
        let mut pos = 0;
        while pos < n {
            if pos + 3 <= n && self.cpts[pos..pos + 3].iter().all(char::is_ascii_digit) {
                em.add(pos);
                pos += 3;
                em.add(pos);
            } else {
                pos += 1;
            }
        }
        em.add(n);
    }
}

/// Where the o200k-family expressions differ.
#[derive(Clone, Copy, Debug)]
pub(crate) struct O200kRules {
    /// `[\p{Han}]+` first, Han code points kept out of the letter words
    han_runs: bool,
    /// Words split by ASCII case (GPT-4o's two cased alternatives as llama.cpp rewrites them);
    /// without it a word is any letter run (Kimi-K2's scanner)
    cased_words: bool,
    /// Punctuation runs take `/` as well as `\r\n` after them
    slash_after_punct: bool,
    /// Code points of no Unicode category count as `[^\s\p{L}\p{N}]`
    uncategorized_is_other: bool,
}

impl O200kRules {
    const KIMI_K2: Self = Self {
        han_runs: true,
        cased_words: false,
        slash_after_punct: false,
        uncategorized_is_other: false,
    };
    const GPT4O: Self = Self {
        han_runs: false,
        cased_words: true,
        slash_after_punct: true,
        uncategorized_is_other: true,
    };
}

/// Han ideographs as llama.cpp's Kimi-K2 splitter counts them (`unicode_cpt_is_han`): the CJK
/// Unified Ideographs blocks (extensions A to F) and the compatibility ideographs, by block range.
fn is_han(c: char) -> bool {
    matches!(u32::from(c),
        0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xF900..=0xFAFF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2EBEF
        | 0x2F800..=0x2FA1F)
}

/// GPT-2's byte-to-unicode table (`bytes_to_unicode`): printable Latin-1 bytes map to
/// themselves, the others to U+0100 onward in byte order.
pub(crate) fn byte_to_unicode_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0u32..256 {
        let keep =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let cp = if keep {
            b
        } else {
            let cp = 256 + n;
            n += 1;
            cp
        };
        table[b as usize] = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, steps: &[Step]) -> Vec<String> {
        split(text, steps).into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn gpt2_splits_like_the_regex() {
        assert_eq!(
            words("Hello world's  end  \n 123!!", &[Step::Gpt2]),
            ["Hello", " world", "'s", " ", " end", "  \n", " 123", "!!"]
        );
    }

    #[test]
    fn smollm_splits_digits_first() {
        assert_eq!(
            words("a 123", &steps_for(PreType::Smollm)),
            ["a", " ", "1", "2", "3"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three() {
        assert_eq!(
            words("x 12345\r\n\nAB's", &steps_for(PreType::Llama3)),
            ["x", " ", "123", "45", "\r\n\n", "AB", "'s"]
        );
    }

    #[test]
    fn kimi_k2_splits_han_runs_and_keeps_contractions_on_words() {
        assert_eq!(
            words(
                "中文abc 日本語's it's 'x 12345\n\n",
                &steps_for(PreType::KimiK2)
            ),
            [
                "中文",
                "abc",
                " ",
                "日本語",
                "'s",
                " it's",
                " '",
                "x",
                " ",
                "123",
                "45",
                "\n\n"
            ]
        );
    }

    #[test]
    fn gpt4o_cuts_words_by_case_and_keeps_slashes_after_punctuation() {
        assert_eq!(
            words(
                "ABcdEF (éAB McDonald's x中y it'S !!\n/ 12345",
                &steps_for(PreType::Gpt4o)
            ),
            [
                "ABcd", "EF", " (", "é", "AB", " Mc", "Donald's", " x中y", " it'S", " !!\n/", " ",
                "123", "45"
            ]
        );
    }

    #[test]
    fn byte_table_is_a_bijection() {
        let t = byte_to_unicode_table();
        let mut seen = std::collections::HashSet::new();
        assert!(t.iter().all(|c| seen.insert(*c)));
        assert_eq!(t[b' ' as usize], '\u{120}');
        assert_eq!(t[b'a' as usize], 'a');
    }
}
