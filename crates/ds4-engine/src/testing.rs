//! Test doubles (feature `testing`): a byte-level tokenizer that knows the
//! seven DeepSeek V4 special strings, and a deterministic "echo" model.
//!
//! These are NOT the product's demo model. They exist so that the engine and
//! the server can be tested without weights:
//!
//! * If the last user turn (text after the last `<｜User｜>` before the last
//!   `<｜Assistant｜>`) contains `ECHO:`, the model generates exactly the text
//!   after it (up to the assistant marker, or up to `</tool_result>` when the
//!   directive sits in a tool result), token by token, then EOS.
//! * If it contains `LOOP:`, the model generates `tick ` forever.
//! * Evaluating text that contains `EVAL_FAIL` fails (a model error).
//! * Otherwise it generates 4..=19 pseudo-random lowercase letters chosen by a
//!   hash of the context, then EOS.
//!
//! Every logit vector depends only on the evaluated token list, so a
//! prefix-reused session must produce exactly what a cold one produces.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::{EngineError, Model, Session, Tokenizer};

pub const BOS: &str = "<｜begin▁of▁sentence｜>";
pub const EOS: &str = "<｜end▁of▁sentence｜>";
pub const USER: &str = "<｜User｜>";
pub const ASSISTANT: &str = "<｜Assistant｜>";
pub const THINK: &str = "<think>";
pub const END_THINK: &str = "</think>";
pub const DSML: &str = "｜DSML｜";

const SPECIALS: [&str; 7] = [BOS, EOS, USER, ASSISTANT, THINK, END_THINK, DSML];
const BYTE_BASE: u32 = 16;
/// Single token for "\n\n" (makes re-tokenisation differ from sampled tokens).
pub const NEWLINE2_ID: u32 = BYTE_BASE + 256;
pub const TEST_VOCAB: usize = NEWLINE2_ID as usize + 1;

/// Byte-level tokenizer with the DeepSeek special strings as single tokens
/// (ids 0..=6; EOS = 1) and one merge ("\n\n").
#[derive(Debug, Default, Clone)]
pub struct TestTokenizer;

impl Tokenizer for TestTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        let b = text.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        'outer: while i < b.len() {
            for (id, s) in SPECIALS.iter().enumerate() {
                if b[i..].starts_with(s.as_bytes()) {
                    out.push(id as u32);
                    i += s.len();
                    continue 'outer;
                }
            }
            if b[i..].starts_with(b"\n\n") {
                out.push(NEWLINE2_ID);
                i += 2;
                continue;
            }
            out.push(BYTE_BASE + b[i] as u32);
            i += 1;
        }
        out
    }

    fn token_bytes(&self, id: u32) -> Vec<u8> {
        if (id as usize) < SPECIALS.len() {
            SPECIALS[id as usize].as_bytes().to_vec()
        } else if id == NEWLINE2_ID {
            b"\n\n".to_vec()
        } else if (BYTE_BASE..BYTE_BASE + 256).contains(&id) {
            vec![(id - BYTE_BASE) as u8]
        } else {
            Vec::new()
        }
    }

    fn eos_id(&self) -> u32 {
        1
    }
}

/// Permit gate: when enabled, every `eval` call waits for one permit.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<(bool, usize)>,
    cv: Condvar,
}

impl Gate {
    pub fn enable(&self) {
        self.state.lock().unwrap().0 = true;
    }
    pub fn disable(&self) {
        self.state.lock().unwrap().0 = false;
        self.cv.notify_all();
    }
    pub fn permit(&self, n: usize) {
        self.state.lock().unwrap().1 += n;
        self.cv.notify_all();
    }
    fn wait(&self) {
        let mut g = self.state.lock().unwrap();
        while g.0 && g.1 == 0 {
            g = self.cv.wait(g).unwrap();
        }
        if g.0 {
            g.1 -= 1;
        }
    }
}

/// Counters shared by the model and the test.
#[derive(Debug, Default)]
pub struct ModelCounters {
    pub evals: AtomicUsize,
    pub tokens: AtomicUsize,
    pub sessions: AtomicUsize,
}

/// The deterministic echo model (see module docs).
#[derive(Clone, Default)]
pub struct EchoModel {
    pub gate: Arc<Gate>,
    pub counters: Arc<ModelCounters>,
}

impl Model for EchoModel {
    fn vocab_size(&self) -> usize {
        TEST_VOCAB
    }
    fn new_session(&self, ctx: usize) -> Result<Box<dyn Session>, EngineError> {
        self.counters.sessions.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(EchoSession {
            ctx,
            tokens: Vec::new(),
            text: Vec::new(),
            model: self.clone(),
        }))
    }
    fn describe(&self) -> String {
        "echo test double".into()
    }
}

struct EchoSession {
    ctx: usize,
    tokens: Vec<u32>,
    text: Vec<u8>,
    model: EchoModel,
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

fn fnv(tokens: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &t in tokens {
        h ^= t as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl EchoSession {
    fn next_token(&self) -> u32 {
        let text = &self.text;
        let Some(a) = rfind(text, ASSISTANT.as_bytes()) else {
            return 1;
        };
        let mut start = a + ASSISTANT.len();
        for tag in [THINK, END_THINK] {
            if text[start..].starts_with(tag.as_bytes()) {
                start += tag.len();
                break;
            }
        }
        let user = rfind(&text[..a], USER.as_bytes())
            .map(|u| u + USER.len())
            .unwrap_or(0);
        let turn = &text[user..a];
        let generated = &text[start..];
        if let Some(e) = rfind(turn, b"ECHO:") {
            let mut script = &turn[e + 5..];
            // A directive inside a tool result ends at its closing tag.
            if let Some(end) = rfind(script, b"</tool_result>") {
                script = &script[..end];
            }
            if !script.starts_with(generated) {
                return 1;
            }
            let rest = &script[generated.len()..];
            if rest.is_empty() {
                return 1;
            }
            // Special strings are single tokens; everything else is emitted
            // byte by byte (so a multi-byte character spans several tokens
            // and "\n\n" is two tokens, unlike the tokenizer's merge).
            for (id, s) in SPECIALS.iter().enumerate() {
                if rest.starts_with(s.as_bytes()) {
                    return id as u32;
                }
            }
            return BYTE_BASE + rest[0] as u32;
        }
        if rfind(turn, b"LOOP:").is_some() {
            let pos = generated.len() % 5;
            return BYTE_BASE + b"tick "[pos] as u32;
        }
        let h = fnv(&self.tokens);
        let n_gen = self.tokens.len() - self.tokens.iter().rposition(|&t| t == 3).unwrap_or(0);
        let limit = 4 + (fnv(&self.tokens[..self.tokens.len() + 1 - n_gen]) % 16) as usize;
        if n_gen > limit {
            return 1;
        }
        BYTE_BASE + b'a' as u32 + (h % 26) as u32
    }
}

impl Session for EchoSession {
    fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    fn eval(&mut self, tokens: &[u32], want_logits: bool) -> Result<Option<Vec<f32>>, EngineError> {
        self.model.gate.wait();
        if self.tokens.len() + tokens.len() > self.ctx {
            return Err(EngineError::Model(format!(
                "eval past context: {} + {} > {}",
                self.tokens.len(),
                tokens.len(),
                self.ctx
            )));
        }
        let tok = TestTokenizer;
        for &t in tokens {
            if t as usize >= TEST_VOCAB {
                return Err(EngineError::Model(format!("token id {t} out of range")));
            }
            self.tokens.push(t);
            self.text.extend_from_slice(&tok.token_bytes(t));
        }
        if rfind(&self.text, b"EVAL_FAIL").is_some() {
            return Err(EngineError::Model(
                "test double: EVAL_FAIL evaluated".into(),
            ));
        }
        self.model.counters.evals.fetch_add(1, Ordering::SeqCst);
        self.model
            .counters
            .tokens
            .fetch_add(tokens.len(), Ordering::SeqCst);
        if !want_logits {
            return Ok(None);
        }
        let mut logits = vec![0.0f32; TEST_VOCAB];
        logits[self.next_token() as usize] = 30.0;
        Ok(Some(logits))
    }

    fn reset(&mut self) {
        self.tokens.clear();
        self.text.clear();
    }

    fn state_bytes(&self) -> usize {
        self.tokens.len() * 4
    }
}
