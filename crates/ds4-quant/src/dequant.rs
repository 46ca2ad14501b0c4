//! Block dequantization (spec: gguf-layout.md §3). Lengths are checked by the caller.
//!
//! Every product below is exact in f32 (the integer factors are small), so only the final
//! subtraction of the K-quants rounds; the operation order follows gguf-py so results are
//! bit-identical to it.

use crate::fconv::{bf16_to_f32, f16_to_f32};
use crate::tables::{IQ2XXS_GRID, KSIGNS_IQ2XS};
use crate::GgmlType;

#[inline]
pub(crate) fn rd_f16(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// Q4_K sub-block scale and min `j` (ggml `get_scale_min_k4`).
#[inline]
pub(crate) fn q4k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

pub(crate) fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::I32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32;
            }
        }
        GgmlType::F16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::Bf16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in dst.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
                dequant_q8_0_block(b, y);
            }
        }
        GgmlType::Q2K => {
            for (y, b) in dst.chunks_exact_mut(256).zip(src.chunks_exact(84)) {
                dequant_q2_k_block(b, y);
            }
        }
        GgmlType::Q4K => {
            for (y, b) in dst.chunks_exact_mut(256).zip(src.chunks_exact(144)) {
                dequant_q4_k_block(b, y);
            }
        }
        GgmlType::Iq2Xxs => {
            for (y, b) in dst.chunks_exact_mut(256).zip(src.chunks_exact(66)) {
                dequant_iq2_xxs_block(b, y);
            }
        }
        GgmlType::Q8K => {
            for (y, b) in dst.chunks_exact_mut(256).zip(src.chunks_exact(292)) {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                for (o, &q) in y.iter_mut().zip(&b[4..260]) {
                    *o = d * (q as i8) as f32;
                }
            }
        }
    }
}

#[inline]
pub(crate) fn dequant_q8_0_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    for (o, &q) in y.iter_mut().zip(&b[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

#[inline]
pub(crate) fn dequant_q2_k_block(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = rd_f16(b, 80);
    let dmin = rd_f16(b, 82);
    for (i, o) in y.iter_mut().enumerate().take(256) {
        let n = i / 128;
        let j = (i % 128) / 32;
        let l = i % 32;
        let q = (qs[32 * n + l] >> (2 * j)) & 3;
        let s = scales[i / 16];
        let dl = d * (s & 0xF) as f32;
        let ml = dmin * (s >> 4) as f32;
        *o = dl * q as f32 - ml;
    }
}

#[inline]
pub(crate) fn dequant_q4_k_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    let dmin = rd_f16(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for j in 0..8 {
        let (sc, m) = q4k_scale_min(scales, j);
        let dl = d * sc as f32;
        let ml = dmin * m as f32;
        let p = j / 2;
        for l in 0..32 {
            let byte = qs[32 * p + l];
            let q = if j % 2 == 0 { byte & 0xF } else { byte >> 4 };
            y[32 * j + l] = dl * q as f32 - ml;
        }
    }
}

#[inline]
pub(crate) fn dequant_iq2_xxs_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    for g in 0..8 {
        let o = 2 + 8 * g;
        let a1 = u32::from_le_bytes([b[o + 4], b[o + 5], b[o + 6], b[o + 7]]);
        let db = d * (0.5 + (a1 >> 28) as f32) * 0.25;
        for k in 0..4 {
            let grid = IQ2XXS_GRID[b[o + k] as usize].to_le_bytes();
            let signs = KSIGNS_IQ2XS[((a1 >> (7 * k)) & 0x7F) as usize];
            for j in 0..8 {
                let v = db * grid[j] as f32;
                y[32 * g + 8 * k + j] = if signs & (1 << j) != 0 { -v } else { v };
            }
        }
    }
}
