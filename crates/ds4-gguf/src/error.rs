//! Errors of the GGUF reader and writer.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing a GGUF file.
///
/// Messages name the problem, the byte offset (for parse errors), the tensor or
/// key involved, and the expected versus found value.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error while writing GGUF: {0}")]
    Write(#[from] std::io::Error),
    #[error("file is too small to be GGUF: {len} bytes, need at least 32")]
    TooSmall { len: u64 },
    #[error(
        "not a GGUF file: magic bytes {:02x} {:02x} {:02x} {:02x} at byte 0, expected 47 47 55 46 (\"GGUF\")",
        found[0], found[1], found[2], found[3]
    )]
    BadMagic { found: [u8; 4] },
    #[error("only GGUF v3 is supported, found version {found} at byte 4")]
    UnsupportedVersion { found: u32 },
    #[error("truncated GGUF file at byte {offset}: {what} needs {need} bytes, only {left} left")]
    Truncated {
        offset: u64,
        what: &'static str,
        need: u64,
        left: u64,
    },
    #[error(
        "{what} count {count} at byte {offset} cannot fit: needs at least {need} bytes, only {left} left"
    )]
    CountTooLarge {
        offset: u64,
        what: &'static str,
        count: u64,
        need: u128,
        left: u64,
    },
    #[error("{what} at byte {offset}: {count} exceeds the limit of {limit}")]
    LimitExceeded {
        offset: u64,
        what: &'static str,
        count: u64,
        limit: u64,
    },
    #[error("unknown GGUF metadata value type {type_id} at byte {offset}")]
    UnknownValueType { offset: u64, type_id: u32 },
    #[error("invalid UTF-8 in {what} at byte {offset}: {source}")]
    InvalidUtf8 {
        offset: u64,
        what: &'static str,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error(
        "metadata array nesting is too deep at byte {offset}: depth {depth}, at most {max} allowed"
    )]
    NestingTooDeep { offset: u64, depth: u32, max: u32 },
    #[error("tensor {name}: n_dims {n_dims} at byte {offset} is unsupported, expected 1..=8")]
    BadDims {
        name: String,
        offset: u64,
        n_dims: u32,
    },
    #[error("tensor {name}: element count overflow, dims {dims:?}")]
    ElementCountOverflow { name: String, dims: Vec<u64> },
    #[error("tensor {name}: byte size overflow, {n_elements} elements of type {type_name}")]
    ByteSizeOverflow {
        name: String,
        n_elements: u64,
        type_name: &'static str,
    },
    #[error("tensor {name}: offset overflow, data start {data_start} + relative offset {offset}")]
    OffsetOverflow {
        name: String,
        data_start: u64,
        offset: u64,
    },
    #[error(
        "tensor {name} points outside the GGUF file: bytes [{start}, {end}) (offset {offset} from data start {data_start}), file is {file_len} bytes"
    )]
    OutOfBounds {
        name: String,
        offset: u64,
        data_start: u64,
        start: u64,
        end: u128,
        file_len: u64,
    },
    #[error("data section start overflows: end of tensor infos {end} aligned to {alignment}")]
    DataStartOverflow { end: u64, alignment: u64 },
    // ---- writer ----
    #[error("invalid alignment {alignment}: must be a non-zero power of two that fits in u32")]
    BadAlignment { alignment: u64 },
    #[error("metadata {key}: {problem}")]
    BadValue { key: String, problem: String },
    #[error("tensor {name}: {problem}")]
    BadTensor { name: String, problem: String },
    #[error(
        "too much tensor data: {extra} bytes past the end of the last tensor (expected {expected} bytes in total)"
    )]
    TooMuchData { expected: u64, extra: u64 },
    #[error(
        "incomplete tensor data: expected {expected} bytes in total, got {found} (tensor {tensor} is missing {missing} bytes)"
    )]
    IncompleteData {
        expected: u64,
        found: u64,
        tensor: String,
        missing: u64,
    },
    #[error("tensor {name}: data is {found} bytes, expected {expected}")]
    DataSizeMismatch {
        name: String,
        expected: u64,
        found: u64,
    },
    #[error("write_file: {found} data slices given for {expected} tensors")]
    DataCountMismatch { expected: usize, found: usize },
}
