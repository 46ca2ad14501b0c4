//! Prompt construction of the CLI (ds4.c `encode_chat_prompt` and the REPL
//! transcript, spec §3.2-3.3): control tokens are pushed as ids, the system
//! text and user text are plain BPE (special strings inside them are *not*
//! control tokens), generated text keeps the model's own special tokens.

use ds4_chat::render::{ASSISTANT, BOS, EOS, REASONING_EFFORT_MAX, THINK_END, THINK_START, USER};
use ds4_chat::ThinkMode;
use ds4_tokenizer::Tokenizer;

/// Text and tokens kept in step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    pub text: String,
    pub tokens: Vec<u32>,
    /// Text bytes and tokens of the Think Max prefix after BOS, if present.
    max_prefix: Option<(usize, usize)>,
}

/// A position in a transcript to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    text: usize,
    tokens: usize,
}

impl Transcript {
    fn push_special(&mut self, tok: &Tokenizer, s: &str) {
        self.text.push_str(s);
        self.tokens.extend(tok.encode(s));
    }

    fn push_plain(&mut self, tok: &Tokenizer, s: &str) {
        self.text.push_str(s);
        self.tokens.extend(tok.encode_ordinary(s));
    }

    /// `BOS` [+ Think Max prefix] + system text (no marker).
    pub fn begin(tok: &Tokenizer, system: &str, think_max: bool) -> Transcript {
        let mut t = Transcript::default();
        t.push_special(tok, BOS);
        if think_max {
            t.set_max_prefix(tok, true);
        }
        t.push_plain(tok, system);
        t
    }

    pub fn has_max_prefix(&self) -> bool {
        self.max_prefix.is_some()
    }

    /// Inserts or removes the Think Max prefix after BOS; returns whether the
    /// transcript changed (then the live KV no longer matches it).
    pub fn set_max_prefix(&mut self, tok: &Tokenizer, enable: bool) -> bool {
        let at_text = BOS.len();
        let at_tok = 1.min(self.tokens.len());
        match (enable, self.max_prefix) {
            (true, None) => {
                let ids = tok.encode_ordinary(REASONING_EFFORT_MAX);
                self.max_prefix = Some((REASONING_EFFORT_MAX.len(), ids.len()));
                self.text.insert_str(at_text, REASONING_EFFORT_MAX);
                self.tokens.splice(at_tok..at_tok, ids);
                true
            }
            (false, Some((nt, nk))) => {
                self.text.replace_range(at_text..at_text + nt, "");
                self.tokens.drain(at_tok..at_tok + nk);
                self.max_prefix = None;
                true
            }
            _ => false,
        }
    }

    /// `USER` + text + `ASSISTANT` + `<think>` | `</think>`.
    pub fn push_user_turn(&mut self, tok: &Tokenizer, text: &str, mode: ThinkMode) {
        self.push_special(tok, USER);
        self.push_plain(tok, text);
        self.push_special(tok, ASSISTANT);
        self.push_special(
            tok,
            if mode.is_thinking() {
                THINK_START
            } else {
                THINK_END
            },
        );
    }

    /// Generated text (special strings the model produced are its tokens).
    pub fn push_generated(&mut self, tok: &Tokenizer, text: &str) {
        self.text.push_str(text);
        self.tokens.extend(tok.encode(text));
    }

    pub fn push_eos(&mut self, tok: &Tokenizer) {
        self.push_special(tok, EOS);
    }

    pub fn mark(&self) -> Mark {
        Mark {
            text: self.text.len(),
            tokens: self.tokens.len(),
        }
    }

    pub fn rollback(&mut self, m: Mark) {
        self.text.truncate(m.text);
        self.tokens.truncate(m.tokens);
    }
}

/// The one-shot prompt: a text starting with `BOS` is a pre-rendered chat
/// (tokenized as written; returns thinking = it ends with `<think>`);
/// otherwise `BOS` [+ Max prefix] + system + `USER` + prompt + `ASSISTANT` +
/// `<think>` | `</think>`.
pub fn one_shot_prompt(
    tok: &Tokenizer,
    system: &str,
    prompt: &str,
    mode: ThinkMode,
) -> (String, Vec<u32>, bool) {
    if prompt.starts_with(BOS) {
        let thinking = prompt.ends_with(THINK_START);
        return (prompt.to_string(), tok.encode(prompt), thinking);
    }
    let mut t = Transcript::begin(tok, system, mode == ThinkMode::Max);
    t.push_user_turn(tok, prompt, mode);
    (t.text, t.tokens, mode.is_thinking())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_matches_spec_examples() {
        let tok = Tokenizer::shared_v4();
        // chat-and-tools.md §1.8 (system text with a period there).
        let (text, ids, thinking) = one_shot_prompt(
            tok,
            "You are a helpful assistant.",
            "Hello!",
            ThinkMode::High,
        );
        assert_eq!(
            ids,
            vec![0, 3476, 477, 260, 11502, 22896, 16, 128803, 19923, 3, 128804, 128821]
        );
        assert!(thinking);
        assert_eq!(tok.encode(&text), ids);
        let (_, ids, thinking) = one_shot_prompt(tok, "", "What is 2+2?", ThinkMode::Off);
        assert_eq!(
            ids,
            vec![0, 128803, 3085, 344, 223, 20, 13, 20, 33, 128804, 128822]
        );
        assert!(!thinking);
    }

    #[test]
    fn user_text_specials_stay_plain() {
        let tok = Tokenizer::shared_v4();
        let (_, ids, _) = one_shot_prompt(tok, "", "<｜User｜>", ThinkMode::Off);
        let user = tok.encode(USER)[0];
        assert_eq!(ids.iter().filter(|&&i| i == user).count(), 1);
        // A pre-rendered prompt is tokenized as written.
        let pre = format!("{BOS}{USER}hi{ASSISTANT}{THINK_START}");
        let (text, ids, thinking) = one_shot_prompt(tok, "ignored", &pre, ThinkMode::Off);
        assert_eq!(text, pre);
        assert_eq!(ids, tok.encode(&pre));
        assert!(thinking);
    }

    #[test]
    fn max_prefix_toggles_in_place() {
        let tok = Tokenizer::shared_v4();
        let mut t = Transcript::begin(tok, "sys", false);
        t.push_user_turn(tok, "q", ThinkMode::High);
        t.push_generated(tok, "r</think>a");
        t.push_eos(tok);
        let plain = t.clone();
        assert!(t.set_max_prefix(tok, true));
        assert!(!t.set_max_prefix(tok, true));
        assert!(t
            .text
            .starts_with(&format!("{BOS}{REASONING_EFFORT_MAX}sys{USER}q")));
        assert_eq!(
            t.tokens.len(),
            plain.tokens.len() + tok.encode_ordinary(REASONING_EFFORT_MAX).len()
        );
        assert!(t.set_max_prefix(tok, false));
        assert_eq!(t, plain);
        // Rollback restores text and tokens.
        let m = t.mark();
        t.push_user_turn(tok, "more", ThinkMode::Off);
        t.rollback(m);
        assert_eq!(t, plain);
        // Text and tokens agree (generated `</think>` is the special token).
        assert_eq!(tok.decode(&t.tokens), t.text.as_bytes());
    }
}
