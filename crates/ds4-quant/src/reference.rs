//! Scalar reference dot products: the definition the fast [`kernels`](crate::kernels) are tested
//! against. Integer partial sums are exact; per-block scale products and the accumulation across
//! blocks are f32 (as in ggml), except [`vec_dot_f32`], which accumulates in f64.
//!
//! The plain functions return `f32::NAN` on a length or type mismatch (they sit in inner loops);
//! the `try_` versions report the problem as an error.

use crate::act::{Q8KRow, Q8_0Row};
use crate::dequant::{self, q4k_scale_min, rd_f16};
use crate::tables::{IQ2XXS_GRID, KSIGNS_IQ2XS};
use crate::{row_bytes, GgmlType, QuantError};

/// Checks a weight row against a Q8_K activation row.
pub(crate) fn check_q8k(ty: GgmlType, w_row: &[u8], a: &Q8KRow) -> Result<(), QuantError> {
    if !matches!(ty, GgmlType::Q2K | GgmlType::Q4K | GgmlType::Iq2Xxs) {
        return Err(QuantError::Unsupported {
            ty,
            op: "dot product with a Q8_K activation",
        });
    }
    if !a.n.is_multiple_of(256) {
        return Err(QuantError::NotBlockMultiple {
            ty: GgmlType::Q8K,
            n: a.n,
        });
    }
    let expected = row_bytes(ty, a.n);
    if w_row.len() != expected {
        return Err(QuantError::Length {
            what: "weight row",
            expected,
            got: w_row.len(),
        });
    }
    Ok(())
}

/// Checks a Q8_0 weight row against a Q8_0 activation row.
pub(crate) fn check_q8_0(w_row: &[u8], a: &Q8_0Row) -> Result<(), QuantError> {
    if !a.n.is_multiple_of(32) {
        return Err(QuantError::NotBlockMultiple {
            ty: GgmlType::Q8_0,
            n: a.n,
        });
    }
    let expected = row_bytes(GgmlType::Q8_0, a.n);
    if w_row.len() != expected {
        return Err(QuantError::Length {
            what: "weight row",
            expected,
            got: w_row.len(),
        });
    }
    Ok(())
}

/// Checks a weight row of any type against `n` f32 activations.
pub(crate) fn check_f32(ty: GgmlType, w_row: &[u8], n: usize) -> Result<(), QuantError> {
    let expected = crate::check_row(ty, n)?;
    if w_row.len() != expected {
        return Err(QuantError::Length {
            what: "weight row",
            expected,
            got: w_row.len(),
        });
    }
    Ok(())
}

/// Dot of a Q2_K / Q4_K / IQ2_XXS weight row with a Q8_K activation row (NaN on mismatch).
pub fn vec_dot_q8k(ty: GgmlType, w_row: &[u8], a: &Q8KRow) -> f32 {
    try_vec_dot_q8k(ty, w_row, a).unwrap_or(f32::NAN)
}

/// Checked [`vec_dot_q8k`].
pub fn try_vec_dot_q8k(ty: GgmlType, w_row: &[u8], a: &Q8KRow) -> Result<f32, QuantError> {
    check_q8k(ty, w_row, a)?;
    let bb = ty.block_bytes();
    let mut acc = 0f32;
    for (b, blk) in w_row.chunks_exact(bb).enumerate() {
        let q8 = &a.qs[b * 256..b * 256 + 256];
        let bs = &a.bsums[b * 16..b * 16 + 16];
        acc += match ty {
            GgmlType::Q2K => q2k_block(blk, a.d[b], q8, bs),
            GgmlType::Q4K => q4k_block(blk, a.d[b], q8, bs),
            _ => iq2xxs_block(blk, a.d[b], q8),
        };
    }
    Ok(if ty == GgmlType::Iq2Xxs {
        0.125 * acc
    } else {
        acc
    })
}

/// Q2_K block contribution: `y.d·d·Σ sc·Σq·q8 − y.d·dmin·Σ m·bsum`.
#[inline]
pub(crate) fn q2k_block(blk: &[u8], yd: f32, q8: &[i8], bsums: &[i16]) -> f32 {
    let scales = &blk[0..16];
    let qs = &blk[16..80];
    let mut sumi = 0i32;
    let mut summ = 0i32;
    for s in 0..16 {
        let n = s / 8;
        let j = (s % 8) / 2;
        let l0 = (s % 2) * 16;
        let mut isum = 0i32;
        for l in l0..l0 + 16 {
            let q = ((qs[32 * n + l] >> (2 * j)) & 3) as i32;
            isum += q * q8[16 * s + l - l0] as i32;
        }
        sumi += (scales[s] & 0xF) as i32 * isum;
        summ += (scales[s] >> 4) as i32 * bsums[s] as i32;
    }
    combine_k(yd, rd_f16(blk, 80), rd_f16(blk, 82), sumi, summ)
}

#[inline]
pub(crate) fn combine_k(yd: f32, d: f32, dmin: f32, sumi: i32, summ: i32) -> f32 {
    let dall = yd * d;
    let dm = yd * dmin;
    dall * sumi as f32 - dm * summ as f32
}

/// Q4_K block contribution.
#[inline]
pub(crate) fn q4k_block(blk: &[u8], yd: f32, q8: &[i8], bsums: &[i16]) -> f32 {
    let scales = &blk[4..16];
    let qs = &blk[16..144];
    let mut sumi = 0i32;
    let mut summ = 0i32;
    for j in 0..8 {
        let (sc, m) = q4k_scale_min(scales, j);
        let p = j / 2;
        let mut isum = 0i32;
        for l in 0..32 {
            let byte = qs[32 * p + l];
            let q = if j % 2 == 0 { byte & 0xF } else { byte >> 4 } as i32;
            isum += q * q8[32 * j + l] as i32;
        }
        sumi += sc as i32 * isum;
        summ += m as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32);
    }
    combine_k(yd, rd_f16(blk, 0), rd_f16(blk, 2), sumi, summ)
}

/// IQ2_XXS block contribution before the final 0.125: `f16(d)·y.d·Σ_g (2s+1)·Σ grid·sign·q8`.
#[inline]
pub(crate) fn iq2xxs_block(blk: &[u8], yd: f32, q8: &[i8]) -> f32 {
    let mut sumi = 0i32;
    for g in 0..8 {
        let o = 2 + 8 * g;
        let a1 = u32::from_le_bytes([blk[o + 4], blk[o + 5], blk[o + 6], blk[o + 7]]);
        let mut gsum = 0i32;
        for k in 0..4 {
            let grid = IQ2XXS_GRID[blk[o + k] as usize].to_le_bytes();
            let signs = KSIGNS_IQ2XS[((a1 >> (7 * k)) & 0x7F) as usize];
            for j in 0..8 {
                let p = grid[j] as i32 * q8[32 * g + 8 * k + j] as i32;
                gsum += if signs & (1 << j) != 0 { -p } else { p };
            }
        }
        sumi += (2 * (a1 >> 28) as i32 + 1) * gsum;
    }
    rd_f16(blk, 0) * yd * sumi as f32
}

/// Dot of a Q8_0 weight row with a Q8_0 activation row (NaN on mismatch).
pub fn vec_dot_q8_0(w_row: &[u8], a: &Q8_0Row) -> f32 {
    try_vec_dot_q8_0(w_row, a).unwrap_or(f32::NAN)
}

/// Checked [`vec_dot_q8_0`].
pub fn try_vec_dot_q8_0(w_row: &[u8], a: &Q8_0Row) -> Result<f32, QuantError> {
    check_q8_0(w_row, a)?;
    let mut acc = 0f32;
    for (b, blk) in w_row.chunks_exact(34).enumerate() {
        let q8 = &a.qs[b * 32..b * 32 + 32];
        let isum: i32 = blk[2..34]
            .iter()
            .zip(q8)
            .map(|(&w, &x)| (w as i8) as i32 * x as i32)
            .sum();
        acc += rd_f16(blk, 0) * a.d[b] * isum as f32;
    }
    Ok(acc)
}

/// Dot of a weight row of any type with f32 activations, dequantizing block by block
/// (f64 accumulation). NaN on mismatch.
pub fn vec_dot_f32(ty: GgmlType, w_row: &[u8], x: &[f32]) -> f32 {
    try_vec_dot_f32(ty, w_row, x).unwrap_or(f32::NAN)
}

/// Checked [`vec_dot_f32`].
pub fn try_vec_dot_f32(ty: GgmlType, w_row: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    check_f32(ty, w_row, x.len())?;
    let be = ty.block_elems().max(64);
    let bytes = row_bytes(ty, be);
    let mut buf = vec![0f32; be];
    let mut acc = 0f64;
    for (xc, wc) in x.chunks(be).zip(w_row.chunks(bytes)) {
        let out = &mut buf[..xc.len()];
        dequant::dequantize(ty, wc, out);
        acc += out
            .iter()
            .zip(xc)
            .map(|(&w, &v)| w as f64 * v as f64)
            .sum::<f64>();
    }
    Ok(acc as f32)
}
