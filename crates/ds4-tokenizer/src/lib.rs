//! ds4-tokenizer: the byte-level BPE tokenizer of DeepSeek V4.
//!
//! Encoding matches the Hugging Face `tokenizers` library running DeepSeek's
//! `tokenizer.json` (with `add_special_tokens=False`) exactly; see
//! `/work/shared/spec/chat-and-tools.md` §1 and the oracle tests in `tests/`.
//!
//! * [`TokenizerData`] is the vocabulary as a GGUF file stores it (`tokenizer.ggml.tokens`,
//!   `tokenizer.ggml.token_type`, `tokenizer.ggml.merges`); [`TokenizerData::embedded_v4`]
//!   is the real 129280-token vocabulary compiled into the crate.
//! * [`Tokenizer`] encodes text to ids and decodes ids to raw bytes.
//! * [`StreamDecoder`] / [`Utf8Stream`] turn a stream of ids/bytes into complete UTF-8 text.

mod bpe;
pub mod bytelevel;
mod classes;
mod data;
mod pretok;
mod stream;
mod strtab;

use std::collections::HashMap;
use std::fmt;

pub use data::{token_type, TokenizerData};
pub use stream::{utf8_stream_safe_len, StreamDecoder, Utf8Stream};

/// Error building a tokenizer from vocabulary data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizerError {
    msg: String,
}

impl TokenizerError {
    pub(crate) fn new(msg: impl Into<String>) -> TokenizerError {
        TokenizerError { msg: msg.into() }
    }
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for TokenizerError {}

const NONE: u32 = u32::MAX;

#[derive(Clone)]
/// Trie over the UTF-8 bytes of the added tokens (leftmost-longest matching).
struct AddedTrie {
    first: [bool; 256],
    /// node -> sorted (byte, child)
    children: Vec<Vec<(u8, u32)>>,
    /// node -> token id or NONE
    token: Vec<u32>,
}

impl AddedTrie {
    fn new() -> AddedTrie {
        AddedTrie {
            first: [false; 256],
            children: vec![Vec::new()],
            token: vec![NONE],
        }
    }

    fn insert(&mut self, s: &[u8], id: u32) {
        if s.is_empty() {
            return;
        }
        self.first[s[0] as usize] = true;
        let mut node = 0usize;
        for &b in s {
            node = match self.children[node].binary_search_by_key(&b, |x| x.0) {
                Ok(k) => self.children[node][k].1 as usize,
                Err(k) => {
                    let child = self.children.len() as u32;
                    self.children.push(Vec::new());
                    self.token.push(NONE);
                    self.children[node].insert(k, (b, child));
                    child as usize
                }
            };
        }
        // First token with a given string wins (lowest id).
        if self.token[node] == NONE {
            self.token[node] = id;
        }
    }

    /// Longest added token starting at `i`: (byte length, id).
    #[inline]
    fn longest_at(&self, s: &[u8], i: usize) -> Option<(usize, u32)> {
        let mut node = 0usize;
        let mut best = None;
        let mut j = i;
        while j < s.len() {
            let ch = &self.children[node];
            match ch.binary_search_by_key(&s[j], |x| x.0) {
                Ok(k) => node = ch[k].1 as usize,
                Err(_) => break,
            }
            j += 1;
            if self.token[node] != NONE {
                best = Some((j - i, self.token[node]));
            }
        }
        best
    }
}

/// Byte-level BPE tokenizer. Immutable after construction; `Send + Sync`.
#[derive(Clone)]
pub struct Tokenizer {
    /// Token strings (GPT-2 byte-level form) with a string -> lowest id index.
    tokens: strtab::StrTable,
    /// Decoded bytes of every token, flattened: token `i` is `bytes[offs[i]..offs[i+1]]`.
    bytes: Vec<u8>,
    offs: Vec<u32>,
    added: AddedTrie,
    is_added: Vec<bool>,
    /// Initial BPE symbol of every byte.
    byte_sym: [u32; 256],
    /// Token id of the single-character token of every byte, or NONE.
    byte_token: [u32; 256],
    /// BPE symbols beyond the vocabulary (merge parts/results missing from the token
    /// list, only in incomplete vocabularies): their bytes, for per-byte fallback.
    extra_syms: Vec<Vec<u8>>,
    merges: bpe::Merges,
    bos: u32,
    eos: u32,
    pad: Option<u32>,
}

/// Strings ds4 needs as single tokens; always recognised in text when the vocabulary has
/// them (see [`Tokenizer::from_data`]).
pub const DS4_REQUIRED_TOKENS: [&str; 7] = [
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
    "</think>",
    "｜DSML｜",
];

fn looks_special(s: &str) -> bool {
    (s.starts_with("<|") && s.ends_with("|>") && s.len() >= 4)
        || (s.starts_with("<｜") && s.ends_with("｜>") && s.len() >= 7)
}

impl Tokenizer {
    /// Builds a tokenizer from GGUF-style vocabulary data.
    ///
    /// * Token strings are GPT-2 byte-level strings; a token's bytes are its characters
    ///   mapped through the byte alphabet, or its own UTF-8 bytes when some character is
    ///   outside the alphabet (Hugging Face `ByteLevel` decoder semantics).
    /// * Tokens of type CONTROL (3) or USER_DEFINED (4) are "added tokens": they are
    ///   recognised in text by [`Tokenizer::encode`] (leftmost-longest, before
    ///   pre-tokenization). With no token types at all (`token_types` empty) the added
    ///   tokens are the ones that look special (`<｜…｜>`, `<|…|>`). The 7 strings of
    ///   [`DS4_REQUIRED_TOKENS`] are always added tokens when present (ds4 recognises them
    ///   whatever the types say; for the real vocabulary this agrees with tokenizer.json).
    /// * Merges whose parts or result are not in the token list still take part in BPE; a
    ///   final symbol that is not a token is emitted as the tokens of its single bytes, and
    ///   a byte without a single-character token is dropped (like `tokenizers` without
    ///   `unk_token`). Use [`Tokenizer::missing_byte_tokens`] to check a vocabulary.
    pub fn from_data(d: &TokenizerData) -> Result<Tokenizer, TokenizerError> {
        let tokens: Vec<&str> = d.tokens.iter().map(String::as_str).collect();
        let merges: Vec<&str> = d.merges.iter().map(String::as_str).collect();
        let types = if d.token_types.is_empty() {
            None
        } else {
            Some(d.token_types.as_slice())
        };
        Self::build(&tokens, types, &merges, d.bos_id, d.eos_id, d.pad_id)
    }

    fn build(
        tokens: &[&str],
        token_types: Option<&[i32]>,
        merge_list: &[&str],
        bos: u32,
        eos: u32,
        pad: Option<u32>,
    ) -> Result<Tokenizer, TokenizerError> {
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::new("tokenizer: the token list is empty"));
        }
        if n >= (NONE / 2) as usize {
            return Err(TokenizerError::new("tokenizer: too many tokens"));
        }
        if let Some(tt) = token_types {
            if tt.len() != n {
                return Err(TokenizerError::new(format!(
                    "tokenizer: {} token types for {} tokens",
                    tt.len(),
                    n
                )));
            }
        }
        for (what, id) in [("bos", Some(bos)), ("eos", Some(eos)), ("pad", pad)] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(TokenizerError::new(format!(
                        "tokenizer: {what} id {id} is outside the vocabulary of {n} tokens"
                    )));
                }
            }
        }
        let table = strtab::StrTable::new(tokens.iter().copied())
            .ok_or_else(|| TokenizerError::new("tokenizer: token strings too large"))?;
        let mut bytes = Vec::with_capacity(table_bytes_hint(tokens));
        let mut offs = Vec::with_capacity(n + 1);
        offs.push(0u32);
        let mut added = AddedTrie::new();
        let mut is_added = vec![false; n];
        for (i, t) in tokens.iter().enumerate() {
            bytelevel::append_token_bytes(t, &mut bytes);
            if bytes.len() > u32::MAX as usize {
                return Err(TokenizerError::new("tokenizer: token strings too large"));
            }
            offs.push(bytes.len() as u32);
            let is_add = DS4_REQUIRED_TOKENS.contains(t)
                || match token_types {
                    None => looks_special(t),
                    Some(tt) => matches!(tt[i], token_type::CONTROL | token_type::USER_DEFINED),
                };
            if is_add && !t.is_empty() {
                is_added[i] = true;
                added.insert(t.as_bytes(), i as u32);
            }
        }

        // BPE symbols: ids < n are tokens; others are interned extra strings (only for
        // vocabularies that lack merge parts or results).
        let mut extra_syms: Vec<Vec<u8>> = Vec::new();
        let mut extra_by_string: HashMap<String, u32> = HashMap::new();
        let mut intern = |a: &str, b: &str, extra_syms: &mut Vec<Vec<u8>>| -> u32 {
            if let Some(id) = table.find_concat(a, b) {
                return id;
            }
            let s = format!("{a}{b}");
            if let Some(&id) = extra_by_string.get(&s) {
                return id;
            }
            let id = (n + extra_syms.len()) as u32;
            extra_syms.push(bytelevel::token_string_to_bytes(&s));
            extra_by_string.insert(s, id);
            id
        };
        let mut byte_sym = [0u32; 256];
        let mut byte_token = [NONE; 256];
        for b in 0..256usize {
            let mut buf = [0u8; 4];
            let s = bytelevel::BYTE_TO_CHAR[b].encode_utf8(&mut buf);
            if let Some(id) = table.find(s) {
                byte_token[b] = id;
            }
            byte_sym[b] = intern(s, "", &mut extra_syms);
        }
        let mut merges = bpe::Merges::with_capacity(merge_list.len());
        for (rank, m) in merge_list.iter().enumerate() {
            let (l, r) = match m.split_once(' ') {
                Some((l, r)) if !l.is_empty() && !r.is_empty() && !r.contains(' ') => (l, r),
                _ => {
                    return Err(TokenizerError::new(format!(
                        "tokenizer: merge {rank} ({m:?}) is not of the form \"LEFT RIGHT\""
                    )))
                }
            };
            let ls = intern(l, "", &mut extra_syms);
            let rs = intern(r, "", &mut extra_syms);
            let res = intern(l, r, &mut extra_syms);
            if extra_syms.len() + n >= NONE as usize {
                return Err(TokenizerError::new("tokenizer: too many BPE symbols"));
            }
            merges.insert(ls, rs, rank as u32, res);
        }
        classes::warm_up();
        Ok(Tokenizer {
            tokens: table,
            bytes,
            offs,
            added,
            is_added,
            byte_sym,
            byte_token,
            extra_syms,
            merges,
            bos,
            eos,
            pad,
        })
    }

    /// The real DeepSeek V4 tokenizer (vocabulary embedded in the crate).
    pub fn embedded_v4() -> Tokenizer {
        let raw = data::embedded_v4_raw();
        let r =
            data::RawData::parse(&raw).expect("embedded DeepSeek V4 tokenizer asset is corrupt");
        let types: Vec<i32> = r.token_types.iter().map(|&t| t as i32).collect();
        Self::build(
            &r.tokens,
            Some(&types),
            &r.merges,
            r.bos_id,
            r.eos_id,
            r.pad_id,
        )
        .expect("embedded DeepSeek V4 vocabulary is valid")
    }

    /// A process-wide shared instance of [`Tokenizer::embedded_v4`] (built on first use).
    pub fn shared_v4() -> &'static Tokenizer {
        static T: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
        T.get_or_init(Tokenizer::embedded_v4)
    }

    /// Encodes text; added tokens (special tokens such as `<｜User｜>`, `<think>`,
    /// `｜DSML｜`) written in the text become their single ids, like Hugging Face
    /// `encode(text, add_special_tokens=False)`. No BOS/EOS is added.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 4);
        self.encode_into(text, &mut out);
        out
    }

    /// [`Tokenizer::encode`] appending to `out` (no merge crosses into what `out` holds).
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        let mut syms = Vec::new();
        let s = text.as_bytes();
        let mut seg = 0;
        let mut i = 0;
        while i < s.len() {
            if self.added.first[s[i] as usize] {
                if let Some((len, id)) = self.added.longest_at(s, i) {
                    // Matches start at a token's first byte, which is never a UTF-8
                    // continuation byte, so `i` is a char boundary.
                    self.encode_ordinary_into(&text[seg..i], out, &mut syms);
                    out.push(id);
                    i += len;
                    seg = i;
                    continue;
                }
            }
            i += 1;
        }
        self.encode_ordinary_into(&text[seg..], out, &mut syms);
    }

    /// Like [`Tokenizer::encode`], but fails instead of dropping bytes that an incomplete
    /// vocabulary cannot represent (never fails for a full byte-level vocabulary such as
    /// the real one).
    pub fn encode_checked(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let ids = self.encode(text);
        if self.byte_token.contains(&NONE) && self.decode(&ids) != text.as_bytes() {
            let missing = self.missing_byte_tokens();
            let bad = text.bytes().find(|b| missing.contains(b)).unwrap_or(0);
            return Err(TokenizerError::new(format!(
                "tokenizer: the vocabulary has no token for byte {bad:#04x} of the text"
            )));
        }
        Ok(ids)
    }

    /// Encodes text without recognising added tokens: `<｜User｜>` in the text is BPE-encoded
    /// as ordinary characters.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 4);
        let mut syms = Vec::new();
        self.encode_ordinary_into(text, &mut out, &mut syms);
        out
    }

    fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>, syms: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        pretok::pre_tokenize(text, &mut |piece: &[u8]| {
            self.bpe_piece(piece, out, syms);
        });
    }

    #[inline]
    fn bpe_piece(&self, piece: &[u8], out: &mut Vec<u32>, syms: &mut Vec<u32>) {
        syms.clear();
        syms.extend(piece.iter().map(|&b| self.byte_sym[b as usize]));
        self.merges.apply(syms);
        let n = self.tokens.len() as u32;
        for &s in syms.iter() {
            if s < n {
                out.push(s);
            } else {
                for &b in &self.extra_syms[(s - n) as usize] {
                    let t = self.byte_token[b as usize];
                    if t != NONE {
                        out.push(t);
                    }
                }
            }
        }
    }

    /// Concatenated bytes of the tokens (may end inside a UTF-8 sequence). Ids outside the
    /// vocabulary contribute nothing.
    pub fn decode(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if let Some(b) = self.token_bytes(id) {
                out.extend_from_slice(b);
            }
        }
        out
    }

    /// Bytes of one token, or `None` for an id outside the vocabulary.
    #[inline]
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        if i >= self.tokens.len() {
            return None;
        }
        Some(&self.bytes[self.offs[i] as usize..self.offs[i + 1] as usize])
    }

    /// Id of a token by its vocabulary string (e.g. `"<｜User｜>"`, `"Ġthe"`); the lowest id
    /// when a string occurs more than once.
    pub fn token_id(&self, token_text: &str) -> Option<u32> {
        self.tokens.find(token_text)
    }

    /// Vocabulary string of a token (GPT-2 byte-level form).
    pub fn token_string(&self, id: u32) -> Option<&str> {
        if (id as usize) < self.tokens.len() {
            Some(self.tokens.get_str(id))
        } else {
            None
        }
    }

    /// Whether `id` is an added token (recognised in text by [`Tokenizer::encode`]).
    pub fn is_added_token(&self, id: u32) -> bool {
        self.is_added.get(id as usize).copied().unwrap_or(false)
    }

    /// Ids of all added tokens, ascending.
    pub fn added_token_ids(&self) -> Vec<u32> {
        (0..self.tokens.len() as u32)
            .filter(|&i| self.is_added[i as usize])
            .collect()
    }

    /// Bytes that have no single-character token (empty for a complete byte-level
    /// vocabulary); such bytes are dropped when they cannot be merged into a token.
    pub fn missing_byte_tokens(&self) -> Vec<u8> {
        (0..=255u8)
            .filter(|&b| self.byte_token[b as usize] == NONE)
            .collect()
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
    pub fn bos_id(&self) -> u32 {
        self.bos
    }
    pub fn eos_id(&self) -> u32 {
        self.eos
    }
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }
    /// Number of distinct merge pairs.
    pub fn merge_count(&self) -> usize {
        self.merges.len()
    }
}

fn table_bytes_hint(tokens: &[&str]) -> usize {
    tokens.iter().map(|t| t.len()).sum()
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.merges.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn tokenizer_is_send_sync() {
        assert_send_sync::<Tokenizer>();
    }
}
