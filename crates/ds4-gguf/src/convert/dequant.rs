//! Element decoders of the DeepSeek checkpoint formats and row-wise f32 sources
//! (spec gguf-layout.md §4.3).

use super::safetensors::{Dtype, TensorInfo};
use super::ConvertError;

/// FP8 E4M3 ("fn" variant: no infinities) → f32.
/// `x & 0x7F == 0x7F` (NaN) decodes to 0.0, as the reference converter does.
pub fn e4m3_to_f32(x: u8) -> f32 {
    let sign = if x & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let a = x & 0x7F;
    if a == 0x7F {
        return 0.0;
    }
    let e = (a >> 3) as i32;
    let m = (a & 7) as f32;
    let v = if e == 0 {
        // Subnormal: m · 2^-9 (exact in f32).
        m * f32::from_bits((127 - 9) << 23)
    } else {
        (1.0 + m / 8.0) * f32::from_bits(((e - 7 + 127) as u32) << 23)
    };
    sign * v
}

/// FP8 E8M0 (power-of-two scale) → f32: `2^(e-127)`; `e = 0` gives the f32 with
/// bits 0x00400000 (= 2^-127), as the reference converter does.
pub fn e8m0_to_f32(e: u8) -> f32 {
    if e == 0 {
        f32::from_bits(0x0040_0000)
    } else {
        f32::from_bits((e as u32) << 23)
    }
}

/// FP4 E2M1 nibble values (bit 3 = sign).
pub const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// FP4 E2M1 nibble → f32.
pub fn e2m1_to_f32(nibble: u8) -> f32 {
    E2M1[(nibble & 0xF) as usize]
}

pub use ds4_quant::{bf16_to_f32, f16_to_f32};

fn le_u16(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[2 * i], b[2 * i + 1]])
}

/// A checkpoint tensor seen as `rows × cols` f32 values (`cols` = last HF dim).
pub enum Source<'a> {
    /// F32 / F16 / BF16 / F64 / F8_E4M3 without scale (only F8 if allowed by the caller).
    Plain {
        dtype: Dtype,
        data: &'a [u8],
        rows: usize,
        cols: usize,
    },
    /// FP8 E4M3 weight `[rows, cols]` with E8M0 block scales `[rows/br, cols/bc]`.
    Fp8 {
        w: &'a [u8],
        s: &'a [u8],
        rows: usize,
        cols: usize,
        br: usize,
        bc: usize,
    },
    /// Packed FP4 E2M1 weight (`I8 [rows, cols/2]`) with E8M0 scales `[rows, cols/32]`.
    Fp4 {
        w: &'a [u8],
        s: &'a [u8],
        rows: usize,
        cols: usize,
    },
}

/// Rows × cols of an HF shape: cols = last dim (1 for a scalar), rows = the rest.
pub fn rows_cols(shape: &[u64]) -> (usize, usize) {
    match shape.split_last() {
        None => (1, 1),
        Some((&c, rest)) => (rest.iter().product::<u64>() as usize, c as usize),
    }
}

impl<'a> Source<'a> {
    /// A plain float tensor; `name` is for errors.
    pub fn plain(
        name: &str,
        info: &TensorInfo,
        data: &'a [u8],
    ) -> Result<Source<'a>, ConvertError> {
        match info.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 => {}
            other => {
                return Err(ConvertError::Tensor {
                    name: name.to_string(),
                    problem: format!(
                        "dtype {other} cannot be converted to float here (expected F32, F16, BF16 or F64{})",
                        if matches!(other, Dtype::F8E4M3) {
                            ", or F8_E4M3 with a .scale sibling"
                        } else {
                            ""
                        }
                    ),
                })
            }
        }
        let (rows, cols) = rows_cols(&info.shape);
        Ok(Source::Plain {
            dtype: info.dtype,
            data,
            rows,
            cols,
        })
    }

    /// A dense FP8 weight with its block-scale tensor.
    pub fn fp8(
        name: &str,
        w: (&TensorInfo, &'a [u8]),
        s: (&TensorInfo, &'a [u8]),
        block: (usize, usize),
    ) -> Result<Source<'a>, ConvertError> {
        let err = |p: String| ConvertError::Tensor {
            name: name.to_string(),
            problem: p,
        };
        if w.0.dtype != Dtype::F8E4M3 {
            return Err(err(format!(
                "FP8 weight has dtype {}, expected F8_E4M3",
                w.0.dtype
            )));
        }
        if s.0.dtype != Dtype::F8E8M0 {
            return Err(err(format!(
                "FP8 block scale has dtype {}, expected F8_E8M0",
                s.0.dtype
            )));
        }
        if w.0.shape.len() != 2 || s.0.shape.len() != 2 {
            return Err(err(format!(
                "FP8 weight {:?} and scale {:?} must both be 2-D",
                w.0.shape, s.0.shape
            )));
        }
        let (rows, cols) = (w.0.shape[0] as usize, w.0.shape[1] as usize);
        let (br, bc) = block;
        if br == 0 || bc == 0 || rows % br != 0 || cols % bc != 0 {
            return Err(err(format!(
                "FP8 weight shape [{rows}, {cols}] is not divisible by the {br}x{bc} scale block"
            )));
        }
        if s.0.shape != [(rows / br) as u64, (cols / bc) as u64] {
            return Err(err(format!(
                "FP8 block scale has shape {:?}, expected [{}, {}] for weight [{rows}, {cols}] and {br}x{bc} blocks",
                s.0.shape,
                rows / br,
                cols / bc
            )));
        }
        Ok(Source::Fp8 {
            w: w.1,
            s: s.1,
            rows,
            cols,
            br,
            bc,
        })
    }

    /// A packed FP4 expert weight with its per-32 scales.
    pub fn fp4(
        name: &str,
        w: (&TensorInfo, &'a [u8]),
        s: (&TensorInfo, &'a [u8]),
    ) -> Result<Source<'a>, ConvertError> {
        let err = |p: String| ConvertError::Tensor {
            name: name.to_string(),
            problem: p,
        };
        if !matches!(w.0.dtype, Dtype::I8 | Dtype::U8) {
            return Err(err(format!(
                "FP4 expert weight has dtype {}, expected I8 (packed E2M1 pairs)",
                w.0.dtype
            )));
        }
        if s.0.dtype != Dtype::F8E8M0 {
            return Err(err(format!(
                "FP4 expert scale has dtype {}, expected F8_E8M0",
                s.0.dtype
            )));
        }
        if w.0.shape.len() != 2 || s.0.shape.len() != 2 {
            return Err(err(format!(
                "FP4 weight {:?} and scale {:?} must both be 2-D",
                w.0.shape, s.0.shape
            )));
        }
        let rows = w.0.shape[0] as usize;
        let cols = 2 * w.0.shape[1] as usize;
        if !cols.is_multiple_of(32) {
            return Err(err(format!(
                "FP4 weight holds {cols} columns per row, not divisible by the 32-element scale block"
            )));
        }
        if s.0.shape != [rows as u64, (cols / 32) as u64] {
            return Err(err(format!(
                "FP4 scale has shape {:?}, expected [{rows}, {}] for {cols} unpacked columns",
                s.0.shape,
                cols / 32
            )));
        }
        Ok(Source::Fp4 {
            w: w.1,
            s: s.1,
            rows,
            cols,
        })
    }

    pub fn rows(&self) -> usize {
        match self {
            Source::Plain { rows, .. } | Source::Fp8 { rows, .. } | Source::Fp4 { rows, .. } => {
                *rows
            }
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Source::Plain { cols, .. } | Source::Fp8 { cols, .. } | Source::Fp4 { cols, .. } => {
                *cols
            }
        }
    }

    /// Decode rows `r0..r0 + out.len()/cols` into `out`.
    pub fn read_rows(&self, r0: usize, out: &mut [f32]) {
        let cols = self.cols();
        debug_assert_eq!(out.len() % cols.max(1), 0);
        let e0 = r0 * cols;
        match *self {
            Source::Plain { dtype, data, .. } => match dtype {
                Dtype::F32 => {
                    for (i, o) in out.iter_mut().enumerate() {
                        let j = 4 * (e0 + i);
                        *o = f32::from_le_bytes(data[j..j + 4].try_into().expect("4"));
                    }
                }
                Dtype::F64 => {
                    for (i, o) in out.iter_mut().enumerate() {
                        let j = 8 * (e0 + i);
                        *o = f64::from_le_bytes(data[j..j + 8].try_into().expect("8")) as f32;
                    }
                }
                Dtype::F16 => {
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = f16_to_f32(le_u16(data, e0 + i));
                    }
                }
                Dtype::BF16 => {
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = bf16_to_f32(le_u16(data, e0 + i));
                    }
                }
                _ => unreachable!("Source::plain admits only float dtypes"),
            },
            Source::Fp8 {
                w, s, cols, br, bc, ..
            } => {
                let scols = cols / bc;
                for (k, orow) in out.chunks_exact_mut(cols).enumerate() {
                    let r = r0 + k;
                    let wrow = &w[r * cols..(r + 1) * cols];
                    let srow = &s[(r / br) * scols..(r / br + 1) * scols];
                    for (b, (ob, wb)) in orow
                        .chunks_exact_mut(bc)
                        .zip(wrow.chunks_exact(bc))
                        .enumerate()
                    {
                        let sc = e8m0_to_f32(srow[b]);
                        for (o, &x) in ob.iter_mut().zip(wb) {
                            *o = e4m3_to_f32(x) * sc;
                        }
                    }
                }
            }
            Source::Fp4 { w, s, cols, .. } => {
                let nb = cols / 32;
                for (k, orow) in out.chunks_exact_mut(cols).enumerate() {
                    let r = r0 + k;
                    let wrow = &w[r * (cols / 2)..(r + 1) * (cols / 2)];
                    let srow = &s[r * nb..(r + 1) * nb];
                    for (b, (ob, wb)) in orow
                        .chunks_exact_mut(32)
                        .zip(wrow.chunks_exact(16))
                        .enumerate()
                    {
                        let sc = e8m0_to_f32(srow[b]);
                        for (j, &byte) in wb.iter().enumerate() {
                            ob[2 * j] = e2m1_to_f32(byte & 0xF) * sc;
                            ob[2 * j + 1] = e2m1_to_f32(byte >> 4) * sc;
                        }
                    }
                }
            }
        }
    }
}

/// Integer tensor (I64 / I32 / I16 / I8 / U8 ...) → i32 with a range check.
pub fn ints_to_i32(
    name: &str,
    info: &TensorInfo,
    data: &[u8],
    range: std::ops::Range<i64>,
) -> Result<Vec<i32>, ConvertError> {
    let n = info.n_elements() as usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let v: i64 = match info.dtype {
            Dtype::I64 => i64::from_le_bytes(data[8 * i..8 * i + 8].try_into().expect("8")),
            Dtype::U64 => {
                let u = u64::from_le_bytes(data[8 * i..8 * i + 8].try_into().expect("8"));
                i64::try_from(u).unwrap_or(i64::MAX)
            }
            Dtype::I32 => i32::from_le_bytes(data[4 * i..4 * i + 4].try_into().expect("4")) as i64,
            Dtype::U32 => u32::from_le_bytes(data[4 * i..4 * i + 4].try_into().expect("4")) as i64,
            Dtype::I16 => i16::from_le_bytes([data[2 * i], data[2 * i + 1]]) as i64,
            Dtype::U16 => le_u16(data, i) as i64,
            Dtype::I8 => data[i] as i8 as i64,
            Dtype::U8 => data[i] as i64,
            other => {
                return Err(ConvertError::Tensor {
                    name: name.to_string(),
                    problem: format!("dtype {other} is not an integer type (expected I64 or I32)"),
                })
            }
        };
        if !range.contains(&v) {
            return Err(ConvertError::Tensor {
                name: name.to_string(),
                problem: format!(
                    "element {i} = {v} is outside the valid range [{}, {})",
                    range.start, range.end
                ),
            });
        }
        out.push(v as i32);
    }
    Ok(out)
}
