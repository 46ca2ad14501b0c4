//! SIMD dot kernels of the CPU backend: the crate's f32 dot (AVX form
//! bit-identical to the scalar one) and the fused AVX2 block-format × f32
//! dots (Q8_0, Q2_K, IQ2_XXS; one-token and 4-token forms, bit-identical).

#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx_dot() {
        // SAFETY: AVX checked at run time.
        return unsafe { dot_avx(a, b) };
    }
    dot_scalar(a, b)
}

/// Whether [`dot`] uses its AVX form (x86_64 with AVX, unless
/// `DS4_QUANT_NO_SIMD` switches SIMD off).
#[cfg(target_arch = "x86_64")]
#[inline]
fn avx_dot() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        std::env::var_os("DS4_QUANT_NO_SIMD").is_none() && is_x86_feature_detected!("avx")
    })
}

/// [`dot_scalar`] with the 8 lanes in one AVX register: the same separate
/// multiply and add per lane (no FMA) and the same final combination, so the
/// result is bit-identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dot_avx(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / 8;
    let mut acc = _mm256_setzero_ps();
    for c in 0..chunks {
        let va = _mm256_loadu_ps(a.as_ptr().add(c * 8));
        let vb = _mm256_loadu_ps(b.as_ptr().add(c * 8));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(va, vb));
    }
    let mut l = [0f32; 8];
    _mm256_storeu_ps(l.as_mut_ptr(), acc);
    let mut s = 0f32;
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7])) + s
}

#[inline]
pub(crate) fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let o = c * 8;
        for l in 0..8 {
            acc[l] += a[o + l] * b[o + l];
        }
    }
    let mut s = 0f32;
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + s
}

/// Whether the fused AVX2 Q8_0 × f32 dot is used (x86_64 with AVX2 + FMA,
/// unless ds4-quant's SIMD is switched off with `DS4_QUANT_NO_SIMD`).
#[inline]
pub(crate) fn q8_0_fused() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            ds4_quant::kernels::simd_available()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Horizontal f64 sum of 8 f32 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_f64(s: std::arch::x86_64::__m256) -> f64 {
    use std::arch::x86_64::*;
    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s));
    let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(s));
    let s2 = _mm256_add_pd(lo, hi);
    let s1 = _mm_add_pd(_mm256_castpd256_pd128(s2), _mm256_extractf128_pd::<1>(s2));
    _mm_cvtsd_f64(_mm_add_sd(s1, _mm_unpackhi_pd(s1, s1)))
}

/// One Q8_0 weight row · f32 activations without a dequantised copy: each
/// weight is `i8 · d` in f32 exactly as ds4-quant's dequantisation computes
/// it, multiplied-added into f32 lanes that are flushed to an f64 sum every
/// 256 values (8 blocks), like ds4-quant's f32 dot.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn q8_0_dot_avx2(row: &[u8], x: &[f32]) -> f32 {
    q8_0_dot_n::<1>(row, [x])[0]
}

/// [`q8_0_dot_avx2`] for `N` activation rows sharing each decoded weight:
/// every token sees exactly the operations of the one-token call, so the
/// results are bit-identical to it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q8_0_dot_n<const N: usize>(row: &[u8], xs: [&[f32]; N]) -> [f32; N] {
    use std::arch::x86_64::*;
    let len = xs[0].len();
    // the pointer reads below stay inside `row` (whole blocks) and every x:
    // checked here, a mismatch gives NaN
    if !row.len().is_multiple_of(34) || xs.iter().any(|x| x.len() != row.len() / 34 * 32) {
        return [f32::NAN; N];
    }
    let nb = len / 32;
    let mut total = [0f64; N];
    let mut b = 0;
    while b < nb {
        let end = (b + 8).min(nb);
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        while b < end {
            let blk = row.as_ptr().add(b * 34);
            let d = half::f16::from_bits(u16::from_le_bytes([*blk, *blk.add(1)])).to_f32();
            let dv = _mm256_set1_ps(d);
            let q = blk.add(2);
            for g in 0..4 {
                let qi = _mm_loadl_epi64(q.add(g * 8) as *const __m128i);
                let w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(qi)), dv);
                for t in 0..N {
                    let xv = _mm256_loadu_ps(xs[t].as_ptr().add(b * 32 + g * 8));
                    if g % 2 == 0 {
                        acc0[t] = _mm256_fmadd_ps(w, xv, acc0[t]);
                    } else {
                        acc1[t] = _mm256_fmadd_ps(w, xv, acc1[t]);
                    }
                }
            }
            b += 1;
        }
        for t in 0..N {
            total[t] += hsum_f64(_mm256_add_ps(acc0[t], acc1[t]));
        }
    }
    total.map(|v| v as f32)
}

/// One Q2_K weight row · f32 activations, fused: each weight is
/// `d·(s&15)·q − dmin·(s>>4)` in f32 as ds4-quant dequantises it, multiplied-
/// added into f32 lanes flushed to f64 once per 256-value block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn q2_k_dot_avx2(row: &[u8], x: &[f32]) -> f32 {
    q2_k_dot_n::<1>(row, [x])[0]
}

/// [`q2_k_dot_avx2`] for `N` activation rows (bit-identical per token).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q2_k_dot_n<const N: usize>(row: &[u8], xs: [&[f32]; N]) -> [f32; N] {
    use std::arch::x86_64::*;
    let nb = xs[0].len() / 256;
    // whole blocks of `row` and of every x (checked: a mismatch gives NaN)
    if row.len() != nb * 84 || xs.iter().any(|x| x.len() != nb * 256) {
        return [f32::NAN; N];
    }
    let three = _mm256_set1_epi32(3);
    let mut total = [0f64; N];
    for b in 0..nb {
        let blk = &row[b * 84..(b + 1) * 84];
        let d = half::f16::from_bits(u16::from_le_bytes([blk[80], blk[81]])).to_f32();
        let dmin = half::f16::from_bits(u16::from_le_bytes([blk[82], blk[83]])).to_f32();
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        for n in 0..2 {
            for j in 0..4 {
                let shift = _mm256_set1_epi32(2 * j as i32);
                for h in 0..4 {
                    let sc = blk[8 * n + 2 * j + h / 2];
                    let dl = _mm256_set1_ps(d * (sc & 0xF) as f32);
                    let ml = _mm256_set1_ps(dmin * (sc >> 4) as f32);
                    let qb =
                        _mm_loadl_epi64(blk.as_ptr().add(16 + 32 * n + 8 * h) as *const __m128i);
                    let q =
                        _mm256_and_si256(_mm256_srlv_epi32(_mm256_cvtepu8_epi32(qb), shift), three);
                    let w = _mm256_sub_ps(_mm256_mul_ps(dl, _mm256_cvtepi32_ps(q)), ml);
                    let off = b * 256 + 128 * n + 32 * j + 8 * h;
                    for t in 0..N {
                        let xv = _mm256_loadu_ps(xs[t].as_ptr().add(off));
                        if h % 2 == 0 {
                            acc0[t] = _mm256_fmadd_ps(w, xv, acc0[t]);
                        } else {
                            acc1[t] = _mm256_fmadd_ps(w, xv, acc1[t]);
                        }
                    }
                }
            }
        }
        for t in 0..N {
            total[t] += hsum_f64(_mm256_add_ps(acc0[t], acc1[t]));
        }
    }
    total.map(|v| v as f32)
}

/// One IQ2_XXS weight row · f32 activations, fused: each weight is
/// `±d·(0.5+s)·0.25·grid` in f32 as ds4-quant dequantises it, multiplied-added
/// into f32 lanes flushed to f64 once per 256-value block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn iq2_xxs_dot_avx2(row: &[u8], x: &[f32]) -> f32 {
    iq2_xxs_dot_n::<1>(row, [x])[0]
}

/// [`iq2_xxs_dot_avx2`] for `N` activation rows (bit-identical per token).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn iq2_xxs_dot_n<const N: usize>(row: &[u8], xs: [&[f32]; N]) -> [f32; N] {
    use ds4_quant::tables::{IQ2XXS_GRID, KSIGNS_IQ2XS};
    use std::arch::x86_64::*;
    let nb = xs[0].len() / 256;
    // whole blocks of `row` and of every x (checked: a mismatch gives NaN)
    if row.len() != nb * 66 || xs.iter().any(|x| x.len() != nb * 256) {
        return [f32::NAN; N];
    }
    let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let sign = _mm256_set1_epi32(i32::MIN);
    let mut total = [0f64; N];
    for b in 0..nb {
        let blk = &row[b * 66..(b + 1) * 66];
        let d = half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        for g in 0..8 {
            let o = 2 + 8 * g;
            let a1 = u32::from_le_bytes([blk[o + 4], blk[o + 5], blk[o + 6], blk[o + 7]]);
            let db = _mm256_set1_ps(d * (0.5 + (a1 >> 28) as f32) * 0.25);
            for k in 0..4 {
                let grid = IQ2XXS_GRID[blk[o + k] as usize];
                let signs = KSIGNS_IQ2XS[((a1 >> (7 * k)) & 0x7F) as usize];
                let gv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(grid as i64)));
                let v = _mm256_mul_ps(db, gv);
                let neg = _mm256_cmpeq_epi32(
                    _mm256_and_si256(_mm256_set1_epi32(signs as i32), bits),
                    bits,
                );
                let w = _mm256_xor_ps(v, _mm256_castsi256_ps(_mm256_and_si256(neg, sign)));
                let off = b * 256 + 32 * g + 8 * k;
                for t in 0..N {
                    let xv = _mm256_loadu_ps(xs[t].as_ptr().add(off));
                    if k % 2 == 0 {
                        acc0[t] = _mm256_fmadd_ps(w, xv, acc0[t]);
                    } else {
                        acc1[t] = _mm256_fmadd_ps(w, xv, acc1[t]);
                    }
                }
            }
        }
        for t in 0..N {
            total[t] += hsum_f64(_mm256_add_ps(acc0[t], acc1[t]));
        }
    }
    total.map(|v| v as f32)
}

/// Four tokens at once through the fused kernel of `ty`, if there is one.
#[inline]
pub(crate) fn fused4(ty: ds4_quant::GgmlType, raw: &[u8], xs: [&[f32]; 4]) -> Option<[f32; 4]> {
    #[cfg(target_arch = "x86_64")]
    if q8_0_fused() {
        // SAFETY: AVX2 + FMA checked at run time; `raw` is a whole row of
        // `xs[t].len()` values of `ty` (checked at bind).
        unsafe {
            return match ty {
                ds4_quant::GgmlType::Q8_0 => Some(q8_0_dot_n::<4>(raw, xs)),
                ds4_quant::GgmlType::Q2K => Some(q2_k_dot_n::<4>(raw, xs)),
                ds4_quant::GgmlType::Iq2Xxs => Some(iq2_xxs_dot_n::<4>(raw, xs)),
                _ => None,
            };
        }
    }
    let _ = (ty, raw, xs);
    None
}

/// The bytes of an f32 slice (native little-endian on every supported target).
#[inline]
pub(crate) fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: u8 has no alignment or validity requirements; same memory, 4x the length.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused kernels check their slice lengths themselves: a partial
    /// weight block or an x of another length gives NaN, never a read out of
    /// bounds.
    #[test]
    fn fused_dots_reject_mismatched_lengths() {
        if !q8_0_fused() {
            return; // no AVX2 + FMA here: the fused kernels are never used
        }
        let x = vec![0.25f32; 512];
        // SAFETY: q8_0_fused() checked AVX2 + FMA; the lengths are under test.
        unsafe {
            let row = vec![0u8; 16 * 34];
            assert!(!q8_0_dot_avx2(&row, &x).is_nan());
            assert!(q8_0_dot_avx2(&row[..15 * 34 + 1], &x).is_nan());
            assert!(q8_0_dot_avx2(&row, &x[..480]).is_nan());
            assert!(q8_0_dot_n::<2>(&row, [&x, &x[..256]])[1].is_nan());
            let row = vec![0u8; 2 * 84];
            assert!(!q2_k_dot_avx2(&row, &x).is_nan());
            assert!(q2_k_dot_avx2(&row[..84], &x).is_nan());
            assert!(q2_k_dot_n::<2>(&row, [&x, &x[..256]])[0].is_nan());
            let row = vec![0u8; 2 * 66];
            assert!(!iq2_xxs_dot_avx2(&row, &x).is_nan());
            assert!(iq2_xxs_dot_avx2(&row[..100], &x).is_nan());
            assert!(iq2_xxs_dot_n::<2>(&row, [&x, &x[..256]])[0].is_nan());
        }
    }

    /// The fused Q8_0 × f32 dot agrees with ds4-quant's reference (block
    /// dequantisation, f64 sum) to f32 accumulation error, for row lengths
    /// that are and are not a multiple of the 8-block flush span.
    #[test]
    fn fused_q8_0_dot_matches_reference() {
        if !q8_0_fused() {
            return; // no AVX2 + FMA here: the fused kernel is never used
        }
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for blocks in [1usize, 7, 8, 9, 13, 128] {
            let mut row = Vec::with_capacity(blocks * 34);
            for _ in 0..blocks {
                let d = ds4_quant::f32_to_f16(((rnd() % 1000) as f32 + 1.0) * 1e-5);
                row.extend_from_slice(&d.to_le_bytes());
                row.extend((0..32).map(|_| rnd() as u8));
            }
            let x: Vec<f32> = (0..blocks * 32)
                .map(|_| (rnd() % 20001) as f32 / 10000.0 - 1.0)
                .collect();
            let want = ds4_quant::reference::vec_dot_f32(ds4_quant::GgmlType::Q8_0, &row, &x);
            let mut w = vec![0f32; x.len()];
            ds4_quant::dequantize_row(ds4_quant::GgmlType::Q8_0, &row, &mut w).unwrap();
            let mag: f64 = w.iter().zip(&x).map(|(a, b)| (a * b).abs() as f64).sum();
            // SAFETY: q8_0_fused() checked AVX2 + FMA; row holds `blocks` whole blocks.
            let got = unsafe { q8_0_dot_avx2(&row, &x) };
            assert!(
                ((got - want) as f64).abs() <= 1e-6 * mag,
                "{blocks} blocks: {got} vs {want} (Σ|wx| = {mag})"
            );
        }
    }

    /// The fused Q2_K and IQ2_XXS dots agree with ds4-quant's reference.
    #[test]
    fn fused_q2_k_and_iq2_xxs_dots_match_reference() {
        if !q8_0_fused() {
            return;
        }
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for ty in [ds4_quant::GgmlType::Q2K, ds4_quant::GgmlType::Iq2Xxs] {
            for blocks in [1usize, 3, 16] {
                let n = blocks * 256;
                let rb = ds4_quant::row_bytes(ty, n);
                let mut row: Vec<u8> = (0..rb).map(|_| rnd() as u8).collect();
                for b in 0..blocks {
                    // finite scales: d (and dmin) as small positive f16s
                    let (d_off, bsz) = if ty == ds4_quant::GgmlType::Q2K {
                        (80, 84)
                    } else {
                        (0, 66)
                    };
                    for k in 0..if ty == ds4_quant::GgmlType::Q2K { 2 } else { 1 } {
                        let h = ds4_quant::f32_to_f16(((rnd() % 1000) as f32 + 1.0) * 1e-4);
                        let o = b * bsz + d_off + 2 * k;
                        row[o..o + 2].copy_from_slice(&h.to_le_bytes());
                    }
                }
                let x: Vec<f32> = (0..n)
                    .map(|_| (rnd() % 20001) as f32 / 10000.0 - 1.0)
                    .collect();
                let want = ds4_quant::reference::vec_dot_f32(ty, &row, &x);
                let mut w = vec![0f32; n];
                ds4_quant::dequantize_row(ty, &row, &mut w).unwrap();
                let mag: f64 = w.iter().zip(&x).map(|(a, b)| (a * b).abs() as f64).sum();
                // SAFETY: AVX2 + FMA checked; whole blocks.
                let got = unsafe {
                    if ty == ds4_quant::GgmlType::Q2K {
                        q2_k_dot_avx2(&row, &x)
                    } else {
                        iq2_xxs_dot_avx2(&row, &x)
                    }
                };
                assert!(
                    ((got - want) as f64).abs() <= 1e-6 * mag,
                    "{ty} {blocks} blocks: {got} vs {want} (Σ|wx| = {mag})"
                );
            }
        }
    }

    /// The AVX f32 dot is bit-identical to the scalar one (lengths with and
    /// without a tail, values of mixed magnitude).
    #[test]
    fn avx_dot_equals_scalar_dot() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in [0usize, 1, 7, 8, 9, 255, 256, 1000] {
            let a: Vec<f32> = (0..n)
                .map(|_| ((rnd() % 2001) as f32 - 1000.0) * 10f32.powi((rnd() % 7) as i32 - 3))
                .collect();
            let b: Vec<f32> = (0..n).map(|_| (rnd() % 20001) as f32 / 1e4 - 1.0).collect();
            assert_eq!(
                dot(&a, &b).to_bits(),
                dot_scalar(&a, &b).to_bits(),
                "n = {n}"
            );
        }
    }

    /// The 4-token fused kernels give bit for bit the one-token results (so a
    /// prefill batch and token-by-token decoding round identically).
    #[test]
    fn four_token_fused_dots_equal_one_token_dots() {
        if !q8_0_fused() {
            return;
        }
        let mut seed = 0x853c49e6748fea9bu64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (ty, d_offs, bsz) in [
            (ds4_quant::GgmlType::Q8_0, &[0usize][..], 34usize),
            (ds4_quant::GgmlType::Q2K, &[80, 82][..], 84),
            (ds4_quant::GgmlType::Iq2Xxs, &[0][..], 66),
        ] {
            let n = 768;
            let rb = ds4_quant::row_bytes(ty, n);
            let mut row: Vec<u8> = (0..rb).map(|_| rnd() as u8).collect();
            for b in 0..rb / bsz {
                for &o in d_offs {
                    let h = ds4_quant::f32_to_f16(((rnd() % 1000) as f32 + 1.0) * 1e-4);
                    row[b * bsz + o..b * bsz + o + 2].copy_from_slice(&h.to_le_bytes());
                }
            }
            let xs: Vec<Vec<f32>> = (0..4)
                .map(|_| (0..n).map(|_| (rnd() % 20001) as f32 / 1e4 - 1.0).collect())
                .collect();
            let four = fused4(ty, &row, [&xs[0], &xs[1], &xs[2], &xs[3]]).unwrap();
            for t in 0..4 {
                // SAFETY: AVX2 + FMA checked; whole blocks.
                let one = unsafe {
                    match ty {
                        ds4_quant::GgmlType::Q8_0 => q8_0_dot_avx2(&row, &xs[t]),
                        ds4_quant::GgmlType::Q2K => q2_k_dot_avx2(&row, &xs[t]),
                        _ => iq2_xxs_dot_avx2(&row, &xs[t]),
                    }
                };
                assert_eq!(four[t].to_bits(), one.to_bits(), "{ty} token {t}");
            }
        }
    }
}
