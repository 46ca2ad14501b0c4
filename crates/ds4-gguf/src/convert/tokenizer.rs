//! `tokenizer.json` (Hugging Face `tokenizers` BPE, as in DeepSeek's repository) →
//! the `tokenizer.ggml.*` records (spec gguf-layout.md §1.5), a generated placeholder
//! vocabulary for tiny test models, and the inverse for the exporter.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use super::ConvertError;
use crate::{Value, ValueType};

/// GGUF token types (llama.cpp `llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

pub const BOS: &str = "<｜begin▁of▁sentence｜>";
pub const EOS: &str = "<｜end▁of▁sentence｜>";
/// The seven strings ds4 looks up by text (spec §1.5), BOS and EOS first.
pub const REQUIRED_SPECIALS: [&str; 7] = [
    BOS,
    EOS,
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
    "</think>",
    "｜DSML｜",
];

/// Where the vocabulary came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabSource {
    /// The checkpoint's tokenizer.json.
    Tokenizer,
    /// Generated: the tokenizer is larger than config.json's vocab_size (a tiny test model).
    Placeholder,
}

/// The tokenizer records of a GGUF file (the converter's and [`crate::synth`]'s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: u32,
    pub eos: u32,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
    pub source: VocabSource,
}

impl Vocab {
    /// The `tokenizer.*` key/value records (llama.cpp's gpt2 tokenizer keys, spec §1.5),
    /// in writing order. `token_type` is left out when it does not have one entry per
    /// token; `padding_token_id` and `chat_template` only when set.
    pub fn kvs(&self) -> Vec<(String, Value)> {
        let mut v = vec![
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.pre".to_string(),
                Value::String("joyai-llm".into()),
            ),
            (
                "tokenizer.ggml.tokens".to_string(),
                Value::string_array(self.tokens.clone()),
            ),
        ];
        if self.token_types.len() == self.tokens.len() {
            v.push((
                "tokenizer.ggml.token_type".to_string(),
                Value::i32_array(&self.token_types),
            ));
        }
        v.extend([
            (
                "tokenizer.ggml.merges".to_string(),
                Value::string_array(self.merges.clone()),
            ),
            (
                "tokenizer.ggml.bos_token_id".to_string(),
                Value::U32(self.bos),
            ),
            (
                "tokenizer.ggml.eos_token_id".to_string(),
                Value::U32(self.eos),
            ),
        ]);
        if let Some(p) = self.pad {
            v.push(("tokenizer.ggml.padding_token_id".to_string(), Value::U32(p)));
        }
        v.extend([
            (
                "tokenizer.ggml.add_bos_token".to_string(),
                Value::Bool(self.add_bos),
            ),
            (
                "tokenizer.ggml.add_eos_token".to_string(),
                Value::Bool(self.add_eos),
            ),
        ]);
        if let Some(t) = &self.chat_template {
            v.push((
                "tokenizer.chat_template".to_string(),
                Value::String(t.clone()),
            ));
        }
        v
    }
}

/// GPT-2 byte-level code point of a byte (spec §1.5): 33..126, 161..172, 174..255 map
/// to themselves, the other 68 bytes in increasing order to U+0100, U+0101, ...
pub fn byte_to_char(b: u8) -> char {
    let printable = |x: u8| (33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174;
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(0x100 + rank).unwrap_or('?')
}

/// Does an added token that is not flagged special still look like a control token
/// (`<|...|>` / `<｜...｜>`), as llama.cpp's converter classifies it.
fn looks_special(t: &str) -> bool {
    (t.starts_with("<|") && t.ends_with("|>")) || (t.starts_with("<｜") && t.ends_with("｜>"))
}

fn tok_err(p: String) -> ConvertError {
    ConvertError::Tokenizer(p)
}

/// Read the token string a tokenizer_config.json entry names (`"X"` or `{"content": "X"}`).
fn config_token(v: Option<&Json>) -> Option<&str> {
    match v? {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

/// Build the vocabulary for a model of `vocab_size` tokens.
///
/// * tokenizer.json size (largest id + 1) ≤ `vocab_size`: its tokens, ids above its
///   size and holes filled with `[PAD<id>]` (type UNUSED);
/// * larger: a generated placeholder vocabulary ([`placeholder_vocab`]) — a tiny test
///   model cannot hold the real vocabulary.
///
/// `config_bos`/`config_eos` are config.json's ids; without them the BOS/EOS strings
/// are looked up. `tokenizer_config` is the optional tokenizer_config.json text.
pub fn build_vocab(
    tokenizer_json: &str,
    tokenizer_config: Option<&str>,
    vocab_size: u32,
    config_bos: Option<u64>,
    config_eos: Option<u64>,
) -> Result<Vocab, ConvertError> {
    let root: Json = serde_json::from_str(tokenizer_json)
        .map_err(|e| tok_err(format!("tokenizer.json is not valid JSON: {e}")))?;
    let model = root
        .get("model")
        .and_then(|m| m.as_object())
        .ok_or_else(|| tok_err("tokenizer.json: missing object \"model\"".into()))?;
    match model.get("type").and_then(|t| t.as_str()) {
        Some("BPE") | None => {}
        Some(t) => {
            return Err(tok_err(format!(
                "tokenizer.json: model type {t:?}, expected \"BPE\" (byte-level BPE)"
            )))
        }
    }
    let vocab_obj = model
        .get("vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| tok_err("tokenizer.json: missing object \"model.vocab\"".into()))?;

    let mut by_id: BTreeMap<u64, (String, i32)> = BTreeMap::new();
    for (tok, id) in vocab_obj {
        let id = id.as_u64().ok_or_else(|| {
            tok_err(format!(
                "tokenizer.json: vocab entry {tok:?} has id {id}, not an integer"
            ))
        })?;
        if let Some((prev, _)) = by_id.insert(id, (tok.clone(), token_type::NORMAL)) {
            return Err(tok_err(format!(
                "tokenizer.json: tokens {prev:?} and {tok:?} share id {id}"
            )));
        }
    }
    if let Some(added) = root.get("added_tokens") {
        let added = added
            .as_array()
            .ok_or_else(|| tok_err("tokenizer.json: \"added_tokens\" is not an array".into()))?;
        for a in added {
            let id = a.get("id").and_then(|v| v.as_u64()).ok_or_else(|| {
                tok_err(format!("tokenizer.json: added token {a} has no integer id"))
            })?;
            let content = a.get("content").and_then(|v| v.as_str()).ok_or_else(|| {
                tok_err(format!(
                    "tokenizer.json: added token {id} has no string content"
                ))
            })?;
            let special = a.get("special").and_then(|v| v.as_bool()).unwrap_or(false);
            let ty = if special || looks_special(content) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
            match by_id.get(&id) {
                Some((prev, _)) if prev != content => {
                    return Err(tok_err(format!(
                        "tokenizer.json: added token {content:?} reuses id {id} of vocab token {prev:?}"
                    )))
                }
                _ => {
                    by_id.insert(id, (content.to_string(), ty));
                }
            }
        }
    }
    let size = by_id.keys().next_back().map_or(0, |&m| m + 1);
    if size > vocab_size as u64 {
        return placeholder_vocab(vocab_size);
    }

    let mut tokens = Vec::with_capacity(vocab_size as usize);
    let mut types = Vec::with_capacity(vocab_size as usize);
    for i in 0..vocab_size as u64 {
        match by_id.remove(&i) {
            Some((t, ty)) => {
                tokens.push(t);
                types.push(ty);
            }
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(token_type::UNUSED);
            }
        }
    }

    let mut merges = Vec::new();
    if let Some(m) = model.get("merges") {
        let m = m
            .as_array()
            .ok_or_else(|| tok_err("tokenizer.json: \"model.merges\" is not an array".into()))?;
        merges.reserve(m.len());
        for (i, e) in m.iter().enumerate() {
            let s = match e {
                // Older tokenizers: "LEFT RIGHT".
                Json::String(s) => {
                    if s.split(' ').count() != 2 {
                        return Err(tok_err(format!(
                            "tokenizer.json: merge {i} {s:?} is not \"LEFT RIGHT\""
                        )));
                    }
                    s.clone()
                }
                // Newer tokenizers: ["LEFT", "RIGHT"].
                Json::Array(p) if p.len() == 2 && p.iter().all(|x| x.is_string()) => {
                    let l = p[0].as_str().unwrap_or_default();
                    let r = p[1].as_str().unwrap_or_default();
                    if l.contains(' ') || r.contains(' ') {
                        return Err(tok_err(format!(
                            "tokenizer.json: merge {i} [{l:?}, {r:?}] contains a space, which the GGUF \"LEFT RIGHT\" form cannot hold"
                        )));
                    }
                    format!("{l} {r}")
                }
                other => {
                    return Err(tok_err(format!(
                        "tokenizer.json: merge {i} is {other}, expected \"LEFT RIGHT\" or [LEFT, RIGHT]"
                    )))
                }
            };
            merges.push(s);
        }
    }

    let find = |s: &str| tokens.iter().position(|t| t == s);
    for s in REQUIRED_SPECIALS {
        if find(s).is_none() {
            return Err(tok_err(format!(
                "tokenizer.json lacks the token {s:?}, which ds4 requires"
            )));
        }
    }
    let tcfg: Option<Json> = match tokenizer_config {
        Some(t) => Some(
            serde_json::from_str(t)
                .map_err(|e| tok_err(format!("tokenizer_config.json is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    // tokenizer_config.json's token string wins (it names the token itself), then
    // config.json's id, then the DeepSeek string.
    let pick_id = |cfg_id: Option<u64>, key: &str, default: &str| -> Result<u32, ConvertError> {
        let named = tcfg.as_ref().and_then(|c| config_token(c.get(key)));
        let id = match (named, cfg_id) {
            (Some(s), _) => find(s)
                .ok_or_else(|| tok_err(format!("{key} {s:?} is not in the vocabulary")))?
                as u64,
            (None, Some(i)) => i,
            (None, None) => find(default)
                .ok_or_else(|| tok_err(format!("{key} {default:?} is not in the vocabulary")))?
                as u64,
        };
        if id >= vocab_size as u64 {
            return Err(tok_err(format!(
                "{key} id {id} is outside the vocabulary of {vocab_size} tokens"
            )));
        }
        Ok(id as u32)
    };
    let bos = pick_id(config_bos, "bos_token", BOS)?;
    let eos = pick_id(config_eos, "eos_token", EOS)?;
    let pad = match tcfg.as_ref().and_then(|c| config_token(c.get("pad_token"))) {
        Some(p) => Some(
            find(p).ok_or_else(|| tok_err(format!("pad_token {p:?} is not in the vocabulary")))?
                as u32,
        ),
        None => None,
    };
    let flag = |k: &str| {
        tcfg.as_ref()
            .and_then(|c| c.get(k))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    let chat_template = tcfg
        .as_ref()
        .and_then(|c| c.get("chat_template"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(Vocab {
        tokens,
        token_types: types,
        merges,
        bos,
        eos,
        pad,
        add_bos: flag("add_bos_token"),
        add_eos: flag("add_eos_token"),
        chat_template,
        source: VocabSource::Tokenizer,
    })
}

/// Smallest placeholder vocabulary: 256 byte tokens + the 7 specials.
pub const MIN_PLACEHOLDER_VOCAB: u32 = REQUIRED_SPECIALS.len() as u32 + 256;

/// A generated vocabulary of `vocab_size` tokens for tiny test models, laid out as
/// [`crate::synth`] does: BOS (0), EOS (1), the 256 byte-level single-byte tokens
/// (ids 2..257, in byte order), the other five special strings (258..262), then
/// `<｜place▁holder▁no▁N｜>` fillers; no merges; padding = EOS.
pub fn placeholder_vocab(vocab_size: u32) -> Result<Vocab, ConvertError> {
    placeholder(vocab_size).ok_or_else(|| {
        tok_err(format!(
            "vocab_size {vocab_size} is smaller than the tokenizer and too small for a placeholder vocabulary (needs at least {MIN_PLACEHOLDER_VOCAB}: 7 special tokens + 256 byte tokens)"
        ))
    })
}

/// The placeholder vocabulary of [`placeholder_vocab`] (shared with [`crate::synth`]);
/// None when `vocab_size` is below [`MIN_PLACEHOLDER_VOCAB`].
pub(crate) fn placeholder(vocab_size: u32) -> Option<Vocab> {
    if vocab_size < MIN_PLACEHOLDER_VOCAB {
        return None;
    }
    let n = vocab_size as usize;
    let mut tokens: Vec<String> = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for s in &REQUIRED_SPECIALS[..2] {
        tokens.push(s.to_string());
        types.push(token_type::CONTROL);
    }
    for b in 0..=255u8 {
        tokens.push(byte_to_char(b).to_string());
        types.push(token_type::NORMAL);
    }
    for s in &REQUIRED_SPECIALS[2..] {
        tokens.push(s.to_string());
        types.push(token_type::USER_DEFINED);
    }
    for i in 0..n - MIN_PLACEHOLDER_VOCAB as usize {
        tokens.push(format!("<｜place▁holder▁no▁{i}｜>"));
        types.push(token_type::USER_DEFINED);
    }
    Some(Vocab {
        tokens,
        token_types: types,
        merges: Vec::new(),
        bos: 0,
        eos: 1,
        pad: Some(1),
        add_bos: false,
        add_eos: false,
        chat_template: None,
        source: VocabSource::Placeholder,
    })
}

/// Read the tokenizer records of a GGUF file (for the exporter).
pub fn vocab_from_metadata(md: &[(String, Value)]) -> Result<Vocab, ConvertError> {
    let get = |k: &str| md.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let strings = |k: &str| -> Result<Vec<String>, ConvertError> {
        match get(k) {
            Some(Value::Array(ValueType::String, v)) => Ok(v
                .iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()),
            Some(other) => Err(tok_err(format!(
                "GGUF key {k} is {}, expected an array of strings",
                crate::layout::type_desc(other)
            ))),
            None => Err(tok_err(format!("GGUF key {k} is missing"))),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = match get("tokenizer.ggml.merges") {
        None => Vec::new(),
        Some(_) => strings("tokenizer.ggml.merges")?,
    };
    let token_types = match get("tokenizer.ggml.token_type") {
        Some(Value::Array(_, v)) if v.len() == tokens.len() => v
            .iter()
            .map(|x| match x {
                Value::I32(i) => *i,
                Value::U32(u) => *u as i32,
                _ => token_type::NORMAL,
            })
            .collect(),
        _ => vec![token_type::NORMAL; tokens.len()],
    };
    let id = |k: &str, default: &str| -> u32 {
        match get(k) {
            Some(Value::U32(v)) => *v,
            Some(Value::I32(v)) if *v >= 0 => *v as u32,
            _ => tokens.iter().position(|t| t == default).unwrap_or(0) as u32,
        }
    };
    let flag = |k: &str| matches!(get(k), Some(Value::Bool(true)));
    Ok(Vocab {
        bos: id("tokenizer.ggml.bos_token_id", BOS),
        eos: id("tokenizer.ggml.eos_token_id", EOS),
        pad: match get("tokenizer.ggml.padding_token_id") {
            Some(Value::U32(v)) => Some(*v),
            Some(Value::I32(v)) if *v >= 0 => Some(*v as u32),
            _ => None,
        },
        add_bos: flag("tokenizer.ggml.add_bos_token"),
        add_eos: flag("tokenizer.ggml.add_eos_token"),
        chat_template: get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        tokens,
        token_types,
        merges,
        source: VocabSource::Tokenizer,
    })
}

/// A `tokenizer.json` holding a vocabulary: CONTROL / USER_DEFINED tokens become
/// `added_tokens` (special = CONTROL), everything else goes into `model.vocab`.
pub fn tokenizer_json(v: &Vocab) -> Json {
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, (t, &ty)) in v.tokens.iter().zip(&v.token_types).enumerate() {
        if ty == token_type::CONTROL || ty == token_type::USER_DEFINED {
            added.push(json!({
                "id": i,
                "content": t,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": ty != token_type::CONTROL,
                "special": ty == token_type::CONTROL,
            }));
        } else {
            vocab.insert(t.clone(), json!(i));
        }
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "vocab": vocab,
            "merges": v.merges,
        }
    })
}

/// A `tokenizer_config.json` for [`tokenizer_json`]'s output.
pub fn tokenizer_config_json(v: &Vocab) -> Json {
    let mut o = json!({
        "add_bos_token": v.add_bos,
        "add_eos_token": v.add_eos,
        "bos_token": v.tokens.get(v.bos as usize),
        "eos_token": v.tokens.get(v.eos as usize),
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(p) = v.pad.and_then(|p| v.tokens.get(p as usize)) {
        o.as_object_mut()
            .expect("object")
            .insert("pad_token".into(), json!(p));
    }
    if let Some(t) = &v.chat_template {
        o.as_object_mut()
            .expect("object")
            .insert("chat_template".into(), json!(t));
    }
    o
}
