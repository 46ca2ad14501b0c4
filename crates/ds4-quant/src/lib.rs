//! GGML tensor element types and quant block formats used by the DeepSeek V4
//! Flash GGUF files (spec: shared/spec/gguf-layout.md §3).
//!
//! * [`dequantize_row`] / [`quantize_row`]: whole rows of any supported type;
//! * [`quantize_q8_k`] / [`quantize_q8_0_act`]: activation rows quantized once and reused;
//! * [`reference`]: scalar dot products (the definition), [`kernels`]: fast versions and
//!   [`kernels::matvec`].

#![allow(clippy::needless_range_loop)] // index loops mirror the block layouts of the spec

use std::fmt;

mod act;
mod dequant;
mod fconv;
pub mod kernels;
mod quantize;
pub mod reference;
pub mod tables;

pub use act::{quantize_q8_0_act, quantize_q8_k, Q8KRow, Q8_0Row};
pub use fconv::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
pub use reference::{vec_dot_f32, vec_dot_q8_0, vec_dot_q8k};

/// A GGML tensor element type, by its GGUF id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q8_0,
    Q2K,
    Q4K,
    Q8K,
    Iq2Xxs,
    I32,
    Bf16,
}

impl GgmlType {
    pub const ALL: [GgmlType; 9] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q4K,
        GgmlType::Q8K,
        GgmlType::Iq2Xxs,
        GgmlType::I32,
        GgmlType::Bf16,
    ];

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q4K => 12,
            GgmlType::Q8K => 15,
            GgmlType::Iq2Xxs => 16,
            GgmlType::I32 => 26,
            GgmlType::Bf16 => 30,
        }
    }

    /// The type for a GGUF type id, if it is one this crate knows.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::I32 | GgmlType::Bf16 => 1,
            GgmlType::Q8_0 => 32,
            GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q8K | GgmlType::Iq2Xxs => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::I32 => 4,
            GgmlType::F16 | GgmlType::Bf16 => 2,
            GgmlType::Q8_0 => 34,
            GgmlType::Q2K => 84,
            GgmlType::Q4K => 144,
            GgmlType::Q8K => 292,
            GgmlType::Iq2Xxs => 66,
        }
    }

    /// Bytes taken by `n` elements (rounded up to whole blocks), or None on overflow.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let be = self.block_elems() as u64;
        n.checked_add(be - 1)
            .map(|x| x / be)
            .and_then(|blocks| blocks.checked_mul(self.block_bytes() as u64))
    }

    /// The name GGML / gguf-py use (e.g. "Q8_0", "IQ2_XXS").
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q8K => "Q8_K",
            GgmlType::Iq2Xxs => "IQ2_XXS",
            GgmlType::I32 => "I32",
            GgmlType::Bf16 => "BF16",
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a quant operation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuantError {
    /// A row length (in elements) is not a whole number of blocks of the type.
    NotBlockMultiple { ty: GgmlType, n: usize },
    /// A buffer has the wrong length.
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The operation is not defined for this type (e.g. a Q8_K dot with an F16 weight row).
    Unsupported { ty: GgmlType, op: &'static str },
    /// An input value cannot be encoded (NaN/inf into a block format, a non-integer into I32,
    /// a block scale beyond the f16 range).
    Value {
        ty: GgmlType,
        index: usize,
        reason: &'static str,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantError::NotBlockMultiple { ty, n } => write!(
                f,
                "row of {n} elements is not a multiple of the {ty} block size {}",
                ty.block_elems()
            ),
            QuantError::Length {
                what,
                expected,
                got,
            } => {
                write!(f, "{what} has length {got}, expected {expected}")
            }
            QuantError::Unsupported { ty, op } => write!(f, "{op} is not supported for {ty}"),
            QuantError::Value { ty, index, reason } => {
                write!(f, "cannot encode element {index} as {ty}: {reason}")
            }
        }
    }
}

impl std::error::Error for QuantError {}

/// Bytes taken by a row of `n` elements of `ty` (whole blocks; saturates on overflow).
pub fn row_bytes(ty: GgmlType, n: usize) -> usize {
    n.div_ceil(ty.block_elems())
        .saturating_mul(ty.block_bytes())
}

/// Checks that `n` elements are whole blocks and returns the byte length of the row.
pub(crate) fn check_row(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    if !n.is_multiple_of(ty.block_elems()) {
        return Err(QuantError::NotBlockMultiple { ty, n });
    }
    Ok(row_bytes(ty, n))
}

/// Dequantizes `dst.len()` elements of type `ty` from `src`, which must hold exactly
/// `row_bytes(ty, dst.len())` bytes; `dst.len()` must be a multiple of the block size.
/// I32 elements are converted with `as f32` (exact below 2^24 in magnitude).
/// Results are bit-identical to gguf-py 0.19.0 `gguf.quants.dequantize`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let expected = check_row(ty, dst.len())?;
    if src.len() != expected {
        return Err(QuantError::Length {
            what: "quantized source row",
            expected,
            got: src.len(),
        });
    }
    dequant::dequantize(ty, src, dst);
    Ok(())
}

/// Quantizes `src` (a multiple of the block size) into `dst` (exactly `row_bytes(ty, src.len())`
/// bytes) with the reference quantizer of `ty`. F16, BF16, Q8_0 and Q8_K are bit-identical to
/// ggml / gguf-py; Q2_K, Q4_K and IQ2_XXS use this crate's own error-minimising quantizers (not
/// bit-identical to ggml's; error bounds are tested in tests/roundtrip.rs). Block formats reject
/// NaN/inf inputs and scales beyond the f16 range; I32 accepts only integral values in range.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let expected = check_row(ty, src.len())?;
    if dst.len() != expected {
        return Err(QuantError::Length {
            what: "quantized destination row",
            expected,
            got: dst.len(),
        });
    }
    quantize::quantize(ty, src, dst)
}
