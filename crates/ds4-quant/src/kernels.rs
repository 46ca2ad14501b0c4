//! Fast dot products and a single-threaded matrix-vector product for the CPU forward pass.
//!
//! On x86_64 with AVX2 + FMA + F16C (detected at run time) the dots use SIMD; elsewhere (or with
//! `DS4_QUANT_NO_SIMD` set) they fall back to the scalar [`reference`](crate::reference). The quantized dots (Q8_0·Q8_0, Q2_K/Q4_K/
//! IQ2_XXS·Q8_K) compute the same exact integer block sums and the same f32 operations in the
//! same order as the reference, so they are **bit-identical** to it. The f32-activation dots
//! (F32/F16/BF16 weights) accumulate in f32 lanes, flushed to f64 every 256 elements; they agree
//! with the f64 reference to well under 1e-6 of `Σ|w·x|`.

use crate::act::{quantize_q8_0_act, quantize_q8_k, Q8KRow, Q8_0Row};
use crate::reference::{self, check_f32, check_q8_0, check_q8k};
use crate::{GgmlType, QuantError};

/// An activation row prepared for one weight type (see [`prepare_activation`]).
#[derive(Clone, Debug)]
pub enum Activation<'a> {
    /// For Q2_K, Q4_K and IQ2_XXS weights.
    Q8K(Q8KRow),
    /// For Q8_0 weights.
    Q8_0(Q8_0Row),
    /// For F32, F16, BF16 (and any other) weights: used as is.
    F32(&'a [f32]),
}

/// The activation form `matvec` uses for weight type `ty`: Q2_K/Q4_K/IQ2_XXS → Q8_K, Q8_0 →
/// Q8_0 activation, everything else → the f32 values themselves.
pub fn prepare_activation(ty: GgmlType, x: &[f32]) -> Activation<'_> {
    match ty {
        GgmlType::Q2K | GgmlType::Q4K | GgmlType::Iq2Xxs => Activation::Q8K(quantize_q8_k(x)),
        GgmlType::Q8_0 => Activation::Q8_0(quantize_q8_0_act(x)),
        _ => Activation::F32(x),
    }
}

/// `y[r] = Σ_c W[r, c]·x[c]` for a row-major weight matrix of `rows` rows of `cols` elements of
/// type `ty` (each row `row_bytes(ty, cols)` bytes). The activation is quantized once (see
/// [`prepare_activation`]). Single-threaded: to parallelise, prepare the activation once and
/// call [`matvec_prepared`] on row ranges.
pub fn matvec(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), QuantError> {
    if x.len() != cols {
        return Err(QuantError::Length {
            what: "activation vector",
            expected: cols,
            got: x.len(),
        });
    }
    check_matrix(ty, weights, rows, cols, y)?;
    let act = prepare_activation(ty, x);
    matvec_prepared(ty, weights, rows, cols, &act, y)
}

fn check_weights(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
) -> Result<usize, QuantError> {
    let rb = crate::check_row(ty, cols)?;
    let expected = rb.checked_mul(rows).ok_or(QuantError::Length {
        what: "weight matrix",
        expected: usize::MAX,
        got: weights.len(),
    })?;
    if weights.len() != expected {
        return Err(QuantError::Length {
            what: "weight matrix",
            expected,
            got: weights.len(),
        });
    }
    Ok(rb)
}

fn check_matrix(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    y: &[f32],
) -> Result<usize, QuantError> {
    let rb = check_weights(ty, weights, rows, cols)?;
    if y.len() != rows {
        return Err(QuantError::Length {
            what: "output vector",
            expected: rows,
            got: y.len(),
        });
    }
    Ok(rb)
}

/// [`matvec`] with an activation prepared by [`prepare_activation`] for the same `ty`.
pub fn matvec_prepared(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    act: &Activation<'_>,
    y: &mut [f32],
) -> Result<(), QuantError> {
    let rb = check_matrix(ty, weights, rows, cols, y)?;
    let dot = bind(ty, cols, act)?;
    if cols == 0 {
        y.fill(0.0); // empty dot products
        return Ok(());
    }
    for (w, o) in weights.chunks_exact(rb).zip(y.iter_mut()) {
        *o = dot.dot(w);
    }
    Ok(())
}

/// Several activation rows against one weight matrix (e.g. the tokens of a prefill batch):
/// `y[t·rows + r] = Σ_c W[r, c]·x_t[c]`, with `acts[t]` prepared by [`prepare_activation`].
/// Each weight row is read once and used for every token while it is in L1, so memory traffic is
/// that of one matvec. Values are bit-identical to calling [`matvec_prepared`] per token.
pub fn matmul_prepared(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    acts: &[Activation<'_>],
    y: &mut [f32],
) -> Result<(), QuantError> {
    let n_tok = acts.len();
    let expected = rows.checked_mul(n_tok).ok_or(QuantError::Length {
        what: "output matrix",
        expected: usize::MAX,
        got: y.len(),
    })?;
    if y.len() != expected {
        return Err(QuantError::Length {
            what: "output matrix",
            expected,
            got: y.len(),
        });
    }
    let rb = check_weights(ty, weights, rows, cols)?;
    let dots = acts
        .iter()
        .map(|a| bind(ty, cols, a))
        .collect::<Result<Vec<_>, _>>()?;
    if cols == 0 {
        y.fill(0.0);
        return Ok(());
    }
    // quantized activations: each weight block is decoded once per 4 tokens
    let q8k: Vec<&Q8KRow> = dots
        .iter()
        .filter_map(|d| match d {
            Bound::Q8K(_, a) => Some(*a),
            _ => None,
        })
        .collect();
    let q80: Vec<&Q8_0Row> = dots
        .iter()
        .filter_map(|d| match d {
            Bound::Q80(_, a) => Some(*a),
            _ => None,
        })
        .collect();
    type Multi<'b> = Box<dyn Fn(&[u8], usize) -> [f32; MULTI] + 'b>;
    let multi: Option<Multi<'_>> = match (q8k_fn4(ty), q8_0_fn4()) {
        (Some(f), _) if q8k.len() == n_tok => Some(Box::new(move |w: &[u8], t: usize| {
            f(w, [q8k[t], q8k[t + 1], q8k[t + 2], q8k[t + 3]])
        })),
        (_, Some(f)) if q80.len() == n_tok => Some(Box::new(move |w: &[u8], t: usize| {
            f(w, [q80[t], q80[t + 1], q80[t + 2], q80[t + 3]])
        })),
        _ => None,
    };
    let full = if multi.is_some() {
        n_tok / MULTI * MULTI
    } else {
        0
    };
    for (r, w) in weights.chunks_exact(rb).enumerate() {
        if let Some(m) = &multi {
            for t0 in (0..full).step_by(MULTI) {
                let v = m(w, t0);
                for (k, val) in v.into_iter().enumerate() {
                    y[(t0 + k) * rows + r] = val;
                }
            }
        }
        for (t, dot) in dots.iter().enumerate().skip(full) {
            y[t * rows + r] = dot.dot(w);
        }
    }
    Ok(())
}

/// [`matmul_prepared`] from `n_tok = xs.len() / cols` f32 activation rows stored token-major.
pub fn matmul(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    xs: &[f32],
    y: &mut [f32],
) -> Result<(), QuantError> {
    if cols == 0 || !xs.len().is_multiple_of(cols) {
        return Err(QuantError::Length {
            what: "activation matrix (a multiple of cols)",
            expected: cols * (xs.len() / cols.max(1)),
            got: xs.len(),
        });
    }
    let acts: Vec<Activation<'_>> = xs
        .chunks_exact(cols)
        .map(|x| prepare_activation(ty, x))
        .collect();
    matmul_prepared(ty, weights, rows, cols, &acts, y)
}

/// A weight-row dot bound to one validated activation.
enum Bound<'a> {
    Q8K(Q8KFn, &'a Q8KRow),
    Q80(Q80Fn, &'a Q8_0Row),
    F32(GgmlType, &'a [f32]),
}

impl Bound<'_> {
    #[inline]
    fn dot(&self, w: &[u8]) -> f32 {
        match self {
            Bound::Q8K(f, a) => f(w, a),
            Bound::Q80(f, a) => f(w, a),
            Bound::F32(ty, x) => dot_f32_unchecked(*ty, w, x),
        }
    }
}

/// Validates an activation for `cols`-wide rows of `ty` (the matrix itself is checked by
/// `check_matrix`) and picks the kernel.
fn bind<'a>(ty: GgmlType, cols: usize, act: &'a Activation<'_>) -> Result<Bound<'a>, QuantError> {
    let len = match act {
        Activation::Q8K(a) => a.len(),
        Activation::Q8_0(a) => a.len(),
        Activation::F32(x) => x.len(),
    };
    if len != cols {
        return Err(QuantError::Length {
            what: "activation",
            expected: cols,
            got: len,
        });
    }
    Ok(match act {
        Activation::Q8K(a) => {
            if !matches!(ty, GgmlType::Q2K | GgmlType::Q4K | GgmlType::Iq2Xxs) {
                return Err(QuantError::Unsupported {
                    ty,
                    op: "matvec with a Q8_K activation",
                });
            }
            Bound::Q8K(q8k_fn(ty), a)
        }
        Activation::Q8_0(a) => {
            if ty != GgmlType::Q8_0 {
                return Err(QuantError::Unsupported {
                    ty,
                    op: "matvec with a Q8_0 activation",
                });
            }
            Bound::Q80(q8_0_fn(), a)
        }
        Activation::F32(x) => Bound::F32(ty, x),
    })
}

/// Fast Q2_K / Q4_K / IQ2_XXS · Q8_K dot (bit-identical to [`reference::vec_dot_q8k`]);
/// NaN on a length or type mismatch.
pub fn vec_dot_q8k(ty: GgmlType, w_row: &[u8], a: &Q8KRow) -> f32 {
    if check_q8k(ty, w_row, a).is_err() {
        return f32::NAN;
    }
    q8k_fn(ty)(w_row, a)
}

/// Fast Q8_0 · Q8_0-activation dot (bit-identical to [`reference::vec_dot_q8_0`]); NaN on mismatch.
pub fn vec_dot_q8_0(w_row: &[u8], a: &Q8_0Row) -> f32 {
    if check_q8_0(w_row, a).is_err() {
        return f32::NAN;
    }
    q8_0_fn()(w_row, a)
}

/// Fast dot of a weight row with f32 activations (SIMD for F32/F16/BF16, the reference for the
/// block formats); NaN on mismatch.
pub fn vec_dot_f32(ty: GgmlType, w_row: &[u8], x: &[f32]) -> f32 {
    if check_f32(ty, w_row, x.len()).is_err() {
        return f32::NAN;
    }
    dot_f32_unchecked(ty, w_row, x)
}

/// [`vec_dot_q8k`] with an error instead of NaN on a length or type mismatch.
pub fn try_vec_dot_q8k(ty: GgmlType, w_row: &[u8], a: &Q8KRow) -> Result<f32, QuantError> {
    check_q8k(ty, w_row, a)?;
    Ok(q8k_fn(ty)(w_row, a))
}

/// [`vec_dot_q8_0`] with an error instead of NaN on a length mismatch.
pub fn try_vec_dot_q8_0(w_row: &[u8], a: &Q8_0Row) -> Result<f32, QuantError> {
    check_q8_0(w_row, a)?;
    Ok(q8_0_fn()(w_row, a))
}

/// [`vec_dot_f32`] with an error instead of NaN on a length mismatch.
pub fn try_vec_dot_f32(ty: GgmlType, w_row: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    check_f32(ty, w_row, x.len())?;
    Ok(dot_f32_unchecked(ty, w_row, x))
}

type Q8KFn = fn(&[u8], &Q8KRow) -> f32;
type Q80Fn = fn(&[u8], &Q8_0Row) -> f32;

/// Whether the AVX2 paths are in use: x86_64 with AVX2, FMA and F16C, unless the environment
/// variable `DS4_QUANT_NO_SIMD` is set (read once) to force the scalar fallback.
pub fn simd_available() -> bool {
    static SIMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SIMD.get_or_init(|| {
        if std::env::var_os("DS4_QUANT_NO_SIMD").is_some() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

fn q8k_fn(ty: GgmlType) -> Q8KFn {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY (every `unsafe` call of an x86 kernel in this file): the CPU
        // has AVX2, FMA and F16C (`simd_available`), the kernels' only
        // precondition; they check the slice lengths themselves.
        return match ty {
            GgmlType::Q2K => |w, a| unsafe { x86::dot_q2k_n::<1>(w, [a])[0] },
            GgmlType::Q4K => |w, a| unsafe { x86::dot_q4k_n::<1>(w, [a])[0] },
            _ => |w, a| unsafe { x86::dot_iq2xxs_n::<1>(w, [a])[0] },
        };
    }
    match ty {
        GgmlType::Q2K => |w, a| reference::vec_dot_q8k(GgmlType::Q2K, w, a),
        GgmlType::Q4K => |w, a| reference::vec_dot_q8k(GgmlType::Q4K, w, a),
        _ => |w, a| reference::vec_dot_q8k(GgmlType::Iq2Xxs, w, a),
    }
}

/// Tokens per pass of the multi-row kernels.
const MULTI: usize = 4;
type Q8KFn4 = fn(&[u8], [&Q8KRow; MULTI]) -> [f32; MULTI];
type Q80Fn4 = fn(&[u8], [&Q8_0Row; MULTI]) -> [f32; MULTI];

/// The 4-row Q8_0 kernel, when SIMD is in use.
fn q8_0_fn4() -> Option<Q80Fn4> {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: see q8k_fn.
        return Some(|w, a| unsafe { x86::dot_q8_0_n::<MULTI>(w, a) });
    }
    None
}

/// The 4-row Q8_K kernel for `ty`, when SIMD is in use.
fn q8k_fn4(ty: GgmlType) -> Option<Q8KFn4> {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: see q8k_fn.
        return match ty {
            GgmlType::Q2K => Some(|w, a| unsafe { x86::dot_q2k_n::<MULTI>(w, a) }),
            GgmlType::Q4K => Some(|w, a| unsafe { x86::dot_q4k_n::<MULTI>(w, a) }),
            GgmlType::Iq2Xxs => Some(|w, a| unsafe { x86::dot_iq2xxs_n::<MULTI>(w, a) }),
            _ => None,
        };
    }
    let _ = ty;
    None
}

fn q8_0_fn() -> Q80Fn {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: see q8k_fn.
        return |w, a| unsafe { x86::dot_q8_0_n::<1>(w, [a])[0] };
    }
    reference::vec_dot_q8_0
}

/// Callers have checked `w_row.len() == row_bytes(ty, x.len())` and the block multiple (a
/// mismatch gives NaN, never a read out of bounds: the SIMD kernels check lengths too).
fn dot_f32_unchecked(ty: GgmlType, w_row: &[u8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: see q8k_fn.
        match ty {
            GgmlType::F32 => return unsafe { x86::dot_f32(w_row, x) },
            GgmlType::F16 => return unsafe { x86::dot_f16(w_row, x) },
            GgmlType::Bf16 => return unsafe { x86::dot_bf16(w_row, x) },
            _ => {}
        }
    }
    reference::vec_dot_f32(ty, w_row, x)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::act::{Q8KRow, Q8_0Row};
    use crate::dequant::{q4k_scale_min, rd_f16};
    use crate::reference::combine_k;
    use crate::tables::{IQ2XXS_GRID, KSIGNS64};
    use std::arch::x86_64::*;

    // Safety of the kernels below: each is `unsafe` only because it needs
    // AVX2, FMA and F16C (callers check `simd_available()`); every slice
    // length its raw-pointer reads rely on is checked at its top, and a
    // mismatch gives NaN rather than a read out of bounds.

    /// Every Q8_K activation row holds `nb` blocks (256 quants, a scale and
    /// 16 block sums each).
    fn q8k_rows_fit<const N: usize>(nb: usize, a: &[&Q8KRow; N]) -> bool {
        a.iter()
            .all(|r| r.qs.len() >= 256 * nb && r.d.len() >= nb && r.bsums.len() >= 16 * nb)
    }

    /// Every Q8_0 activation row holds `nb` blocks (32 quants and a scale each).
    fn q80_rows_fit<const N: usize>(nb: usize, a: &[&Q8_0Row; N]) -> bool {
        a.iter().all(|r| r.qs.len() >= 32 * nb && r.d.len() >= nb)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum_ps_f64(v: __m256) -> f64 {
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        let s = _mm256_add_pd(lo, hi);
        let s2 = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
        _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    /// Q8_0 · Q8_0 activation for N activation rows (N = 1 for a plain dot; every N gives the
    /// reference's bits). Lengths checked by the caller.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q8_0_n<const N: usize>(w: &[u8], a: [&Q8_0Row; N]) -> [f32; N] {
        // the reads below stay inside `w` (whole blocks) and inside every
        // activation row (checked here, so no caller has to be trusted)
        if !w.len().is_multiple_of(34) || !q80_rows_fit(w.len() / 34, &a) {
            return [f32::NAN; N];
        }
        let ones = _mm256_set1_epi16(1);
        let mut acc = [0f32; N];
        for (b, blk) in w.chunks_exact(34).enumerate() {
            let wv = load(blk.as_ptr().add(2));
            // |w| (as u8) times x·sign(w); |x| <= 127, so the i16 pair sums cannot saturate
            let aw = _mm256_sign_epi8(wv, wv);
            let dw = rd_f16(blk, 0);
            for t in 0..N {
                let xv = load((a[t].qs.as_ptr() as *const u8).add(32 * b));
                let sx = _mm256_sign_epi8(xv, wv);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
                acc[t] += dw * a[t].d[b] * hsum_i32(p) as f32;
            }
        }
        acc
    }

    // The Q8_K dots take N activation rows at once (N = 1 for a plain dot): the weight block is
    // decoded once and applied to every row. Integer block sums are exact and the per-block f32
    // operations are those of the reference, in the same order, for each row independently, so
    // every N gives bit-identical results.

    /// Q4_K · Q8_K for N activation rows. Lengths checked by the caller.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4k_n<const N: usize>(w: &[u8], a: [&Q8KRow; N]) -> [f32; N] {
        // the reads below stay inside `w` (whole blocks) and inside every
        // activation row (checked here, so no caller has to be trusted)
        if !w.len().is_multiple_of(144) || !q8k_rows_fit(w.len() / 144, &a) {
            return [f32::NAN; N];
        }
        let m4 = _mm256_set1_epi8(0x0F);
        let mut acc = [0f32; N];
        for (b, blk) in w.chunks_exact(144).enumerate() {
            let scales = &blk[4..16];
            let mut sc = [0i16; 8];
            let mut mn = [0i32; 8];
            for j in 0..8 {
                let (s, m) = q4k_scale_min(scales, j);
                sc[j] = s as i16;
                mn[j] = m as i32;
            }
            let mut sumv = [_mm256_setzero_si256(); N];
            let qs = blk.as_ptr().add(16);
            for p in 0..4 {
                let q4 = load(qs.add(32 * p));
                let lo = _mm256_and_si256(q4, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
                let slo = _mm256_set1_epi16(sc[2 * p]);
                let shi = _mm256_set1_epi16(sc[2 * p + 1]);
                for t in 0..N {
                    let q8 = (a[t].qs.as_ptr() as *const u8).add(256 * b + 64 * p);
                    let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load(q8)), slo);
                    let phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load(q8.add(32))), shi);
                    sumv[t] = _mm256_add_epi32(sumv[t], _mm256_add_epi32(plo, phi));
                }
            }
            let (d, dmin) = (rd_f16(blk, 0), rd_f16(blk, 2));
            for t in 0..N {
                let bs = &a[t].bsums[16 * b..16 * b + 16];
                let mut summ = 0i32;
                for j in 0..8 {
                    summ += mn[j] * (bs[2 * j] as i32 + bs[2 * j + 1] as i32);
                }
                acc[t] += combine_k(a[t].d[b], d, dmin, hsum_i32(sumv[t]), summ);
            }
        }
        acc
    }

    /// Q2_K · Q8_K for N activation rows. Lengths checked by the caller.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q2k_n<const N: usize>(w: &[u8], a: [&Q8KRow; N]) -> [f32; N] {
        // the reads below stay inside `w` (whole blocks) and inside every
        // activation row (checked here, so no caller has to be trusted)
        if !w.len().is_multiple_of(84) || !q8k_rows_fit(w.len() / 84, &a) {
            return [f32::NAN; N];
        }
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0x0F);
        let mut acc = [0f32; N];
        for (b, blk) in w.chunks_exact(84).enumerate() {
            let bp = blk.as_ptr();
            let sc8 = _mm_loadu_si128(bp as *const __m128i);
            // mins: Σ_s (scales[s] >> 4)·bsums[s] as one i16 madd per row
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sc8), m4));
            // scales as bytes in both 128-bit halves; per (n, j) a shuffle broadcasts the pair
            // (scale[2m] in the low half, scale[2m+1] in the high half) as i16 lanes
            let scb = _mm256_broadcastsi128_si256(_mm_and_si128(sc8, m4));
            let mut sumv = [_mm256_setzero_si256(); N];
            macro_rules! step {
                ($qv:expr, $n:expr, $j:expr, $sh:literal) => {{
                    let q = _mm256_and_si256(_mm256_srli_epi16::<$sh>($qv), m3);
                    let m = (8 * $n + 2 * $j) as i8;
                    let idx = _mm256_setr_epi8(
                        m,
                        -128,
                        m,
                        -128,
                        m,
                        -128,
                        m,
                        -128,
                        m,
                        -128,
                        m,
                        -128,
                        m,
                        -128,
                        m,
                        -128,
                        m + 1,
                        -128,
                        m + 1,
                        -128,
                        m + 1,
                        -128,
                        m + 1,
                        -128,
                        m + 1,
                        -128,
                        m + 1,
                        -128,
                        m + 1,
                        -128,
                        m + 1,
                        -128,
                    );
                    let sv = _mm256_shuffle_epi8(scb, idx);
                    for t in 0..N {
                        let q8 = (a[t].qs.as_ptr() as *const u8).add(256 * b + 128 * $n + 32 * $j);
                        let p = _mm256_maddubs_epi16(q, load(q8));
                        sumv[t] = _mm256_add_epi32(sumv[t], _mm256_madd_epi16(p, sv));
                    }
                }};
            }
            for n in 0..2 {
                let qv = load(bp.add(16 + 32 * n));
                step!(qv, n, 0, 0);
                step!(qv, n, 1, 2);
                step!(qv, n, 2, 4);
                step!(qv, n, 3, 6);
            }
            let (d, dmin) = (rd_f16(blk, 80), rd_f16(blk, 82));
            for t in 0..N {
                let bsv = _mm256_loadu_si256(a[t].bsums.as_ptr().add(16 * b) as *const __m256i);
                let summ = hsum_i32(_mm256_madd_epi16(mins, bsv));
                acc[t] += combine_k(a[t].d[b], d, dmin, hsum_i32(sumv[t]), summ);
            }
        }
        acc
    }

    /// IQ2_XXS · Q8_K for N activation rows. Lengths checked by the caller.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_iq2xxs_n<const N: usize>(w: &[u8], a: [&Q8KRow; N]) -> [f32; N] {
        // the reads below stay inside `w` (whole blocks) and inside every
        // activation row (checked here, so no caller has to be trusted)
        if !w.len().is_multiple_of(66) || !q8k_rows_fit(w.len() / 66, &a) {
            return [f32::NAN; N];
        }
        let grid = IQ2XXS_GRID.as_ptr();
        let ks = KSIGNS64.as_ptr();
        let mut acc = [0f32; N];
        for (b, blk) in w.chunks_exact(66).enumerate() {
            let bp = blk.as_ptr().add(2);
            let mut sumv = [_mm256_setzero_si256(); N];
            for g in 0..8 {
                let a0 = (bp.add(8 * g) as *const u32).read_unaligned();
                let a1 = (bp.add(8 * g + 4) as *const u32).read_unaligned();
                let gv = _mm256_set_epi64x(
                    *grid.add((a0 >> 24) as usize) as i64,
                    *grid.add(((a0 >> 16) & 0xFF) as usize) as i64,
                    *grid.add(((a0 >> 8) & 0xFF) as usize) as i64,
                    *grid.add((a0 & 0xFF) as usize) as i64,
                );
                let sv = _mm256_set_epi64x(
                    *ks.add(((a1 >> 21) & 0x7F) as usize) as i64,
                    *ks.add(((a1 >> 14) & 0x7F) as usize) as i64,
                    *ks.add(((a1 >> 7) & 0x7F) as usize) as i64,
                    *ks.add((a1 & 0x7F) as usize) as i64,
                );
                let ls = _mm256_set1_epi16((2 * (a1 >> 28) + 1) as i16);
                for t in 0..N {
                    let q8 = (a[t].qs.as_ptr() as *const u8).add(256 * b + 32 * g);
                    let ys = _mm256_sign_epi8(load(q8), sv);
                    let p = _mm256_maddubs_epi16(gv, ys);
                    sumv[t] = _mm256_add_epi32(sumv[t], _mm256_madd_epi16(p, ls));
                }
            }
            let dw = rd_f16(blk, 0);
            for t in 0..N {
                acc[t] += dw * a[t].d[b] * hsum_i32(sumv[t]) as f32;
            }
        }
        acc.map(|v| 0.125 * v)
    }

    /// Shared loop of the f32-activation dots: `load(i)` gives 8 weights as f32 at element `i`.
    #[inline(always)]
    unsafe fn dot_lanes(
        n: usize,
        x: &[f32],
        load8: impl Fn(usize) -> __m256,
        tail: impl Fn(usize) -> f32,
    ) -> f32 {
        let xp = x.as_ptr();
        let mut total = 0f64;
        let mut i = 0;
        while i + 256 <= n {
            let mut a0 = _mm256_setzero_ps();
            let mut a1 = _mm256_setzero_ps();
            let mut a2 = _mm256_setzero_ps();
            let mut a3 = _mm256_setzero_ps();
            let end = i + 256;
            while i < end {
                a0 = _mm256_fmadd_ps(load8(i), _mm256_loadu_ps(xp.add(i)), a0);
                a1 = _mm256_fmadd_ps(load8(i + 8), _mm256_loadu_ps(xp.add(i + 8)), a1);
                a2 = _mm256_fmadd_ps(load8(i + 16), _mm256_loadu_ps(xp.add(i + 16)), a2);
                a3 = _mm256_fmadd_ps(load8(i + 24), _mm256_loadu_ps(xp.add(i + 24)), a3);
                i += 32;
            }
            total += hsum_ps_f64(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        }
        let mut a0 = _mm256_setzero_ps();
        while i + 8 <= n {
            a0 = _mm256_fmadd_ps(load8(i), _mm256_loadu_ps(xp.add(i)), a0);
            i += 8;
        }
        total += hsum_ps_f64(a0);
        while i < n {
            total += tail(i) as f64 * x[i] as f64;
            i += 1;
        }
        total as f32
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
        // dot_lanes reads x.len() values of x and of w (4 bytes each)
        if w.len() != 4 * x.len() {
            return f32::NAN;
        }
        let wp = w.as_ptr() as *const f32;
        dot_lanes(
            x.len(),
            x,
            |i| _mm256_loadu_ps(wp.add(i)),
            |i| f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        // dot_lanes reads x.len() values of x and of w (2 bytes each)
        if w.len() != 2 * x.len() {
            return f32::NAN;
        }
        let wp = w.as_ptr();
        dot_lanes(
            x.len(),
            x,
            |i| _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i) as *const __m128i)),
            |i| crate::fconv::f16_to_f32(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        // dot_lanes reads x.len() values of x and of w (2 bytes each)
        if w.len() != 2 * x.len() {
            return f32::NAN;
        }
        let wp = w.as_ptr();
        dot_lanes(
            x.len(),
            x,
            |i| {
                let h = _mm_loadu_si128(wp.add(2 * i) as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            },
            |i| crate::fconv::bf16_to_f32(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])),
        )
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The SIMD kernels check their own slice lengths: a short activation or
    /// a partial weight block gives NaN, not a read out of bounds (the public
    /// functions check first, so only a direct call can get here).
    #[test]
    fn simd_kernels_reject_short_inputs() {
        if !simd_available() {
            eprintln!("skipped: no AVX2/FMA/F16C here");
            return;
        }
        let x = vec![0.5f32; 512];
        let a = quantize_q8_k(&x);
        let short = quantize_q8_k(&x[..256]);
        let a0 = quantize_q8_0_act(&x);
        let short0 = quantize_q8_0_act(&x[..256]);
        // SAFETY: simd_available() holds; lengths are what is under test.
        unsafe {
            for (ty, blk) in [
                (GgmlType::Q2K, 84),
                (GgmlType::Q4K, 144),
                (GgmlType::Iq2Xxs, 66),
            ] {
                let w = vec![0u8; 2 * blk];
                let f = match ty {
                    GgmlType::Q2K => x86::dot_q2k_n::<1>,
                    GgmlType::Q4K => x86::dot_q4k_n::<1>,
                    _ => x86::dot_iq2xxs_n::<1>,
                };
                assert!(!f(&w, [&a])[0].is_nan(), "{ty}");
                assert!(f(&w, [&short])[0].is_nan(), "{ty}: short activation");
                assert!(f(&w[..blk + 1], [&a])[0].is_nan(), "{ty}: partial block");
            }
            let w0 = vec![0u8; 16 * 34];
            assert!(!x86::dot_q8_0_n::<1>(&w0, [&a0])[0].is_nan());
            assert!(x86::dot_q8_0_n::<1>(&w0, [&short0])[0].is_nan());
            assert!(x86::dot_f16(&[0u8; 6], &x[..4]).is_nan());
            assert!(x86::dot_f32(&[0u8; 16], &x[..4]) == 0.0);
            assert!(x86::dot_bf16(&[0u8; 8], &x[..8]).is_nan());
        }
    }
}
