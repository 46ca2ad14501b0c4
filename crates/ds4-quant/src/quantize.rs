//! Reference quantizers. Lengths are checked by the caller (`quantize_row`).
//!
//! * F16, BF16, Q8_0, Q8_K follow ggml's reference rounding bit for bit.
//! * Q2_K and Q4_K: each sub-block gets an affine fit `x ≈ a·q − b` (`a, b ≥ 0`) chosen by a
//!   small search over the quantization step followed by a least-squares refit; the sub-block
//!   `a`s and `b`s are then quantized against f16 super-scales (4 bits for Q2_K, 6 bits for
//!   Q4_K) and every element is re-rounded with the final, decoded `a` and `b`.
//! * IQ2_XXS: per 8 elements the signs come from the data (when the count of negatives is odd
//!   the smallest-magnitude element's sign is flipped, the format stores even parity); the
//!   magnitude pattern is the best of the 256 grid points by brute force for the group scale;
//!   the per-32 scale is searched, then coded in 4 bits against an f16 super-scale.

use crate::act::quantize_q8_k;
use crate::dequant::q4k_scale_min;
use crate::fconv::{f16_to_f32, f32_to_bf16, f32_to_f16};
use crate::tables::IQ2XXS_GRID;
use crate::{GgmlType, QuantError};

pub(crate) fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => {
            for (c, &x) in dst.chunks_exact_mut(4).zip(src) {
                c.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (c, &x) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&f32_to_f16(x).to_le_bytes());
            }
        }
        GgmlType::Bf16 => {
            for (c, &x) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&f32_to_bf16(x).to_le_bytes());
            }
        }
        GgmlType::I32 => {
            for (i, (c, &x)) in dst.chunks_exact_mut(4).zip(src).enumerate() {
                if x.fract() != 0.0 || !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
                    return Err(QuantError::Value {
                        ty,
                        index: i,
                        reason: "not an integer in the i32 range",
                    });
                }
                c.copy_from_slice(&(x as i32).to_le_bytes());
            }
        }
        GgmlType::Q8_0 | GgmlType::Q2K | GgmlType::Q4K | GgmlType::Iq2Xxs | GgmlType::Q8K => {
            if let Some(i) = src.iter().position(|x| !x.is_finite()) {
                return Err(QuantError::Value {
                    ty,
                    index: i,
                    reason: "not a finite number",
                });
            }
            let be = ty.block_elems();
            let bb = ty.block_bytes();
            for (bi, (x, y)) in src
                .chunks_exact(be)
                .zip(dst.chunks_exact_mut(bb))
                .enumerate()
            {
                let r = match ty {
                    GgmlType::Q8_0 => quantize_q8_0_block(x, y),
                    GgmlType::Q2K => quantize_q2_k_block(x, y),
                    GgmlType::Q4K => quantize_q4_k_block(x, y),
                    GgmlType::Iq2Xxs => quantize_iq2_xxs_block(x, y),
                    _ => {
                        y.copy_from_slice(&quantize_q8_k(x).to_bytes());
                        Ok(())
                    }
                };
                r.map_err(|reason| QuantError::Value {
                    ty,
                    index: bi * be,
                    reason,
                })?;
            }
        }
    }
    Ok(())
}

/// Stores `v` as f16 and returns the decoded value; errors when it overflows.
fn put_f16(y: &mut [u8], off: usize, v: f32) -> Result<f32, &'static str> {
    let h = f32_to_f16(v);
    let back = f16_to_f32(h);
    if !back.is_finite() {
        return Err("block scale exceeds the f16 range");
    }
    y[off..off + 2].copy_from_slice(&h.to_le_bytes());
    Ok(back)
}

fn quantize_q8_0_block(x: &[f32], y: &mut [u8]) -> Result<(), &'static str> {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (o, &v) in y[2..34].iter_mut().zip(x) {
        // f32 round half away from zero; |v·id| <= 127 up to one rounding
        *o = ((v * id).round().clamp(-128.0, 127.0) as i8) as u8;
    }
    put_f16(y, 0, d)?;
    Ok(())
}

/// Least-squares affine fit `x ≈ a·q − b` with `q ∈ [0, nmax]` integers, `a ≥ 0`, `b ≥ 0`.
/// Returns (a, b).
fn fit_affine(x: &[f32], nmax: u8) -> (f32, f32) {
    let n = x.len() as f64;
    let xmax = x.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
    let xmin = x.iter().fold(0f32, |m, &v| m.min(v)) as f64; // offset never above 0
    if xmax <= xmin {
        return (0.0, (-xmin) as f32);
    }
    let nm = nmax as f64;
    let sx: f64 = x.iter().map(|&v| v as f64).sum();
    let err_of = |a: f64, c: f64| -> f64 {
        x.iter()
            .map(|&v| {
                let q = if a > 0.0 {
                    ((v as f64 - c) / a).round().clamp(0.0, nm)
                } else {
                    0.0
                };
                let e = a * q + c - v as f64;
                e * e
            })
            .sum()
    };
    // candidate: plain min/max mapping
    let mut best = ((xmax - xmin) / nm, xmin);
    let mut best_err = err_of(best.0, best.1);
    let consider = |iscale: f64, best: &mut (f64, f64), best_err: &mut f64| {
        let (mut sq, mut sq2, mut sqx) = (0f64, 0f64, 0f64);
        for &v in x {
            let q = (iscale * (v as f64 - xmin)).round().clamp(0.0, nm);
            sq += q;
            sq2 += q * q;
            sqx += q * v as f64;
        }
        let det = n * sq2 - sq * sq;
        if det <= 0.0 {
            return;
        }
        let mut a = (n * sqx - sq * sx) / det;
        let mut c = (sq2 * sx - sq * sqx) / det;
        if c > 0.0 {
            c = 0.0;
            a = sqx / sq2;
        }
        if a <= 0.0 {
            return;
        }
        let e = err_of(a, c);
        if e < *best_err {
            *best_err = e;
            *best = (a, c);
        }
    };
    for step in 0..=24 {
        let iscale = (nm - 1.0 + step as f64 / 12.0) / (xmax - xmin);
        consider(iscale, &mut best, &mut best_err);
    }
    // one refinement pass around the best fit (q re-derived from it)
    for _ in 0..2 {
        let (a, c) = best;
        let (mut sq, mut sq2, mut sqx) = (0f64, 0f64, 0f64);
        for &v in x {
            let q = ((v as f64 - c) / a).round().clamp(0.0, nm);
            sq += q;
            sq2 += q * q;
            sqx += q * v as f64;
        }
        let det = n * sq2 - sq * sq;
        if det <= 0.0 {
            break;
        }
        let mut a2 = (n * sqx - sq * sx) / det;
        let mut c2 = (sq2 * sx - sq * sqx) / det;
        if c2 > 0.0 {
            c2 = 0.0;
            a2 = sqx / sq2;
        }
        if a2 <= 0.0 {
            break;
        }
        let e = err_of(a2, c2);
        if e < best_err {
            best_err = e;
            best = (a2, c2);
        } else {
            break;
        }
    }
    (best.0 as f32, (-best.1) as f32)
}

/// Quantizes sub-block scales to `bits` against a super-scale; returns (decoded super, codes).
fn code_scales(
    v: &[f32],
    bits: u32,
    y: &mut [u8],
    off: usize,
) -> Result<(f32, Vec<u8>), &'static str> {
    let qmax = ((1u32 << bits) - 1) as f32;
    let vmax = v.iter().fold(0f32, |m, &s| m.max(s));
    let d = put_f16(y, off, vmax / qmax)?;
    let codes = v
        .iter()
        .map(|&s| {
            if d > 0.0 {
                (s / d).round().clamp(0.0, qmax) as u8
            } else {
                0
            }
        })
        .collect();
    Ok((d, codes))
}

#[inline]
fn requant(v: f32, a: f32, b: f32, nmax: u8) -> u8 {
    if a > 0.0 {
        ((v + b) / a).round().clamp(0.0, nmax as f32) as u8
    } else {
        0
    }
}

fn quantize_q2_k_block(x: &[f32], y: &mut [u8]) -> Result<(), &'static str> {
    let fits: Vec<(f32, f32)> = x.chunks_exact(16).map(|s| fit_affine(s, 3)).collect();
    let a: Vec<f32> = fits.iter().map(|f| f.0).collect();
    let b: Vec<f32> = fits.iter().map(|f| f.1).collect();
    let (d, sc) = code_scales(&a, 4, y, 80)?;
    let (dmin, m) = code_scales(&b, 4, y, 82)?;
    for s in 0..16 {
        y[s] = sc[s] | (m[s] << 4);
    }
    y[16..80].fill(0);
    for (i, &v) in x.iter().enumerate() {
        let s = i / 16;
        let q = requant(v, d * sc[s] as f32, dmin * m[s] as f32, 3);
        let (n, j, l) = (i / 128, (i % 128) / 32, i % 32);
        y[16 + 32 * n + l] |= q << (2 * j);
    }
    Ok(())
}

fn quantize_q4_k_block(x: &[f32], y: &mut [u8]) -> Result<(), &'static str> {
    let fits: Vec<(f32, f32)> = x.chunks_exact(32).map(|s| fit_affine(s, 15)).collect();
    let a: Vec<f32> = fits.iter().map(|f| f.0).collect();
    let b: Vec<f32> = fits.iter().map(|f| f.1).collect();
    let (d, sc) = code_scales(&a, 6, y, 0)?;
    let (dmin, m) = code_scales(&b, 6, y, 2)?;
    let scales = &mut y[4..16];
    for j in 0..4 {
        scales[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        scales[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        scales[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
    }
    debug_assert!((0..8).all(|j| q4k_scale_min(&y[4..16], j) == (sc[j], m[j])));
    y[16..144].fill(0);
    for (i, &v) in x.iter().enumerate() {
        let j = i / 32;
        let q = requant(v, d * sc[j] as f32, dmin * m[j] as f32, 15);
        let (p, l) = (i / 64, i % 32);
        y[16 + 32 * p + l] |= if j % 2 == 0 { q } else { q << 4 };
    }
    Ok(())
}

/// Grid magnitudes as f32 (by entry and, for vectorisable scans, by element) and squared norms.
struct Grid {
    g: [[f32; 8]; 256],
    by_elem: [[f32; 256]; 8],
    norm2: [f32; 256],
}

fn grid() -> &'static Grid {
    static G: std::sync::OnceLock<Grid> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        let mut g = [[0f32; 8]; 256];
        let mut by_elem = [[0f32; 256]; 8];
        let mut norm2 = [0f32; 256];
        for k in 0..256 {
            let bytes = IQ2XXS_GRID[k].to_le_bytes();
            for j in 0..8 {
                g[k][j] = bytes[j] as f32;
                by_elem[j][k] = bytes[j] as f32;
            }
            norm2[k] = g[k].iter().map(|v| v * v).sum();
        }
        Grid { g, by_elem, norm2 }
    })
}

/// Signed targets of 8 elements: the sign pattern (even parity) and `t_j = ±|x_j|` as encoded.
fn iq2_signs(x: &[f32]) -> (u8, [f32; 8]) {
    let mut neg = 0u8;
    for (j, &v) in x.iter().enumerate() {
        if v < 0.0 {
            neg |= 1 << j;
        }
    }
    if neg.count_ones() % 2 == 1 {
        let jmin = (0..8)
            .min_by(|&a, &b| x[a].abs().total_cmp(&x[b].abs()))
            .unwrap_or(0);
        neg ^= 1 << jmin;
    }
    let mut t = [0f32; 8];
    for j in 0..8 {
        t[j] = if neg & (1 << j) != 0 { -x[j] } else { x[j] };
    }
    (neg, t)
}

/// Best grid point for targets `t` at scale `s`: minimises Σ (t − s·g)², returns (index, t·g).
fn best_grid(t: &[f32; 8], s: f32) -> (u8, f32) {
    let gr = grid();
    let mut tg = [0f32; 256];
    for j in 0..8 {
        let tj = t[j];
        for (acc, &g) in tg.iter_mut().zip(&gr.by_elem[j]) {
            *acc += tj * g;
        }
    }
    // Σ(t − s g)² = Σt² − 2 s t·g + s² |g|²; Σt² is the same for every k
    let mut best = (0u8, 0f32);
    let mut best_cost = f32::INFINITY;
    for k in 0..256 {
        let cost = s * s * gr.norm2[k] - 2.0 * s * tg[k];
        if cost < best_cost {
            best_cost = cost;
            best = (k as u8, tg[k]);
        }
    }
    best
}

/// Squared error of a 32-group at scale `s` with the best grid points; also the indices.
fn iq2_group_at(ts: &[[f32; 8]; 4], s: f32) -> (f32, [u8; 4]) {
    let gr = grid();
    let mut err = 0f32;
    let mut idx = [0u8; 4];
    for k in 0..4 {
        let (gi, tg) = best_grid(&ts[k], s);
        idx[k] = gi;
        let t2: f32 = ts[k].iter().map(|v| v * v).sum();
        err += t2 - 2.0 * s * tg + s * s * gr.norm2[gi as usize];
    }
    (err, idx)
}

fn quantize_iq2_xxs_block(x: &[f32], y: &mut [u8]) -> Result<(), &'static str> {
    let gr = grid();
    // search on the block scaled to max |x| = 1 (keeps the f32 cost sums in range for any
    // finite input); the super-scale is scaled back before coding
    let bmax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let xn: Vec<f32> = if bmax > 0.0 {
        x.iter().map(|v| v / bmax).collect()
    } else {
        x.to_vec()
    };
    let x = &xn[..];
    let mut ts = [[[0f32; 8]; 4]; 8];
    let mut signs = [[0u8; 4]; 8];
    let mut best_scale = [0f32; 8];
    for g in 0..8 {
        for k in 0..4 {
            let (neg, t) = iq2_signs(&x[32 * g + 8 * k..32 * g + 8 * k + 8]);
            signs[g][k] = neg;
            ts[g][k] = t;
        }
        let amax = x[32 * g..32 * g + 32]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 {
            continue;
        }
        let mut best = (f32::INFINITY, 0f32);
        for step in 0..=24 {
            let s0 = amax / (16.0 + 1.5 * step as f32);
            let (_, idx) = iq2_group_at(&ts[g], s0);
            // least-squares scale for the chosen grid points
            let (mut tg, mut gg) = (0f32, 0f32);
            for k in 0..4 {
                let gk = &gr.g[idx[k] as usize];
                for j in 0..8 {
                    tg += ts[g][k][j] * gk[j];
                }
                gg += gr.norm2[idx[k] as usize];
            }
            let s = (tg / gg).max(0.0);
            // error at s with the same grid points (re-choosing them could only lower it)
            let t2: f32 = ts[g].iter().flatten().map(|v| v * v).sum();
            let e = t2 - 2.0 * s * tg + s * s * gg;
            if e < best.0 {
                best = (e, s);
            }
        }
        best_scale[g] = best.1;
    }
    // super-scale: the largest group scale maps to code 15, db = d·(2s+1)/8
    let smax = best_scale.iter().fold(0f32, |m, &s| m.max(s));
    let d = put_f16(y, 0, smax * bmax * (8.0 / 31.0))?;
    // the decoded super-scale in the normalised domain
    let d = if bmax > 0.0 { d / bmax } else { 0.0 };
    for g in 0..8 {
        let mut code = 0u32;
        let mut idx = [0u8; 4];
        if d > 0.0 && d.is_finite() {
            let c0 = ((best_scale[g] * 8.0 / d - 1.0) / 2.0)
                .round()
                .clamp(0.0, 15.0) as i32;
            let mut best_e = f32::INFINITY;
            for c in (c0 - 1).max(0)..=(c0 + 1).min(15) {
                let db = d * (0.5 + c as f32) * 0.25;
                let (e, ix) = iq2_group_at(&ts[g], db);
                if e < best_e {
                    best_e = e;
                    code = c as u32;
                    idx = ix;
                }
            }
        }
        let mut a1 = code << 28;
        for k in 0..4 {
            a1 |= ((signs[g][k] & 0x7F) as u32) << (7 * k);
        }
        let o = 2 + 8 * g;
        y[o..o + 4].copy_from_slice(&idx);
        y[o + 4..o + 8].copy_from_slice(&a1.to_le_bytes());
    }
    Ok(())
}
