//! Chat templates (`tokenizer.chat_template`) rendered with minijinja, set up the way Hugging
//! Face `transformers` and llama.cpp render them: `trim_blocks` and `lstrip_blocks` on, Python
//! string/dict methods (`.strip()`, `.startswith()`, `.items()`, ...) through minijinja-contrib's
//! pycompat, loop controls, `tojson`, `raise_exception(msg)` failing the render, and
//! `strftime_now(fmt)` (UTC).
//!
//! Templates come from model files, so rendering is sandboxed: minijinja has no file, environment
//! or network access (no loader is set, so `include`/`import`/`extends` find nothing); execution is
//! bounded by fuel ([`TEMPLATE_FUEL`] instructions), recursion by minijinja's own limit, and the
//! output by [`MAX_TEMPLATE_OUTPUT`] bytes. A template that runs past a bound fails with
//! [`TokenizerError::Template`]. Fuel counts instructions, and one instruction can loop or
//! allocate without end (sequence repetition, doubling in a loop), so on Linux the render also
//! runs in a child process with memory, CPU and wall-clock limits ([`crate::sandbox`]); running
//! past one of those is [`TokenizerError::TemplateSandbox`].

use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

use crate::{Tokenizer, TokenizerError};

/// Instructions one render may execute (minijinja fuel). Real chat templates use a few hundred
/// per message; this allows conversations of tens of thousands of messages and stops a template
/// that loops forever within a fraction of a second.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// Bytes one render may produce (real prompts are kilobytes).
pub const MAX_TEMPLATE_OUTPUT: usize = 16 << 20;

/// An output that accepts [`MAX_TEMPLATE_OUTPUT`] bytes, then refuses.
struct CappedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_TEMPLATE_OUTPUT {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One chat message: `role` ("system", "user", "assistant", ...) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: String,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role` with `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> Result<String, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(strftime_utc(&fmt, secs))
}

/// A small `strftime` for UTC times: %Y %m %d %e %H %M %S %B %b %A %a %j %p %I %y %%.
pub(crate) fn strftime_utc(fmt: &str, unix_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let is_leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(m - 1) as usize] + d + i64::from(m > 2 && is_leap(y));
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('I') => out.push_str(&format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 })),
            Some('p') => out.push_str(if h < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mi:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('b') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('A') => out.push_str(DAYS[(days % 7) as usize]),
            Some('a') => out.push_str(&DAYS[(days % 7) as usize][..3]),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

fn template_error(e: Error) -> TokenizerError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    TokenizerError::Template(msg)
}

impl Tokenizer {
    /// Renders the model's chat template (`tokenizer.chat_template`) for `messages`;
    /// `add_generation_prompt` appends the assistant turn opener. `bos_token` and `eos_token`
    /// are the texts of the vocabulary's BOS/EOS tokens.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self.chat_template().ok_or(TokenizerError::NoChatTemplate)?;
        self.render_chat_template(template, messages, add_generation_prompt)
    }

    /// [`Tokenizer::apply_chat_template`] for several conversations at once: one sandboxed
    /// render (one child process on Linux) for all of them. The first error in order fails
    /// the whole batch.
    pub fn apply_chat_template_batch(
        &self,
        conversations: &[&[ChatMessage]],
        add_generation_prompt: bool,
    ) -> Result<Vec<String>, TokenizerError> {
        let template = self.chat_template().ok_or(TokenizerError::NoChatTemplate)?;
        self.render_chat_template_batch(template, conversations, add_generation_prompt)
    }

    /// Renders an explicit Jinja chat `template` (e.g. one the model lacks) with this
    /// vocabulary's `bos_token`/`eos_token`, like [`Tokenizer::apply_chat_template`].
    pub fn render_chat_template(
        &self,
        template: &str,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let mut texts =
            self.render_chat_template_batch(template, &[messages], add_generation_prompt)?;
        Ok(texts.pop().unwrap_or_default())
    }

    /// [`Tokenizer::render_chat_template`] for several conversations in one sandboxed render.
    ///
    /// On Linux the template runs in a forked child process under [`crate::sandbox`]'s limits
    /// (memory, CPU and wall-clock time), because some templates grow without bound inside a
    /// single engine instruction, where fuel cannot stop them; running past a limit is
    /// [`TokenizerError::TemplateSandbox`]. Elsewhere it renders in process, bounded by fuel and
    /// the output cap only.
    pub fn render_chat_template_batch(
        &self,
        template: &str,
        conversations: &[&[ChatMessage]],
        add_generation_prompt: bool,
    ) -> Result<Vec<String>, TokenizerError> {
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        #[cfg(target_os = "linux")]
        {
            let replies = crate::sandbox::run(|| {
                conversations
                    .iter()
                    .map(|messages| {
                        self.render_chat_template_in_process(
                            template,
                            messages,
                            add_generation_prompt,
                        )
                        .map_err(|e| match e {
                            TokenizerError::Template(msg) => msg,
                            other => other.to_string(),
                        })
                    })
                    .collect()
            })?;
            if replies.len() != conversations.len() {
                return Err(crate::sandbox::SandboxError::Exit(0).into());
            }
            replies
                .into_iter()
                .map(|r| r.map_err(TokenizerError::Template))
                .collect()
        }
        #[cfg(not(target_os = "linux"))]
        conversations
            .iter()
            .map(|messages| {
                self.render_chat_template_in_process(template, messages, add_generation_prompt)
            })
            .collect()
    }

    /// The render itself, in this process: fuel, recursion limit and output cap, and a panic
    /// of the engine turned into an error.
    fn render_chat_template_in_process(
        &self,
        template: &str,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        // minijinja can panic on hostile templates (2.24: `seq * n` multiplies the length
        // unchecked, a panic where overflow checks are on); a template from a model file must
        // end in an error, never take the process down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.render_chat_template_unguarded(template, messages, add_generation_prompt)
        }))
        .unwrap_or_else(|_| {
            Err(TokenizerError::Template(
                "the chat template crashed the template engine".into(),
            ))
        })
    }

    fn render_chat_template_unguarded(
        &self,
        template: &str,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_template("chat", template).map_err(template_error)?;
        let tmpl = env.get_template("chat").map_err(template_error)?;
        let text = |id: Option<u32>| id.and_then(|i| self.token_text(i)).unwrap_or("").to_owned();
        let mut out = CappedOutput {
            bytes: Vec::new(),
            overflowed: false,
        };
        let rendered = tmpl.render_captured_to(
            context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => text(self.bos()),
                eos_token => text(self.eos()),
            },
            &mut out,
        );
        if out.overflowed {
            return Err(TokenizerError::Template(format!(
                "the chat template's output exceeds {MAX_TEMPLATE_OUTPUT} bytes"
            )));
        }
        rendered.map_err(template_error)?;
        String::from_utf8(out.bytes)
            .map_err(|_| TokenizerError::Template("the chat template's output is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::strftime_utc;

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC (a Thursday, day 60).
        assert_eq!(
            strftime_utc("%Y-%m-%d %H:%M:%S %a %A %b %B %j %%", 1_709_211_909),
            "2024-02-29 13:05:09 Thu Thursday Feb February 060 %"
        );
        assert_eq!(strftime_utc("%d %b %Y", 0), "01 Jan 1970");
    }
}
