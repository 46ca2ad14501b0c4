//! quantize → dequantize error bounds.
//!
//! Exact bounds (derived from the format) for Q8_0, Q8_K, the Q8_0 activation form, F16, BF16.
//! Statistical bounds for Q2_K, Q4_K, IQ2_XXS on Gaussian data, relative RMS error
//! `sqrt(Σ(x−y)² / Σx²)` over 64 blocks, for each of 8 seeds. Measured with this crate's
//! quantizers (8 seeds): Q2_K 0.2646–0.2673, Q4_K 0.0707–0.0713, IQ2_XXS 0.3281–0.3316,
//! Q8_0 0.0053–0.0054. The asserted bounds leave ~7 % margin.

mod common;
use common::Rng;
use ds4_quant::{
    bf16_to_f32, dequantize_row, f16_to_f32, f32_to_bf16, f32_to_f16, quantize_q8_0_act,
    quantize_q8_k, quantize_row, row_bytes, GgmlType,
};

fn roundtrip(ty: GgmlType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![0u8; row_bytes(ty, x.len())];
    quantize_row(ty, x, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(ty, &q, &mut y).unwrap();
    (q, y)
}

fn rel_rms(x: &[f32], y: &[f32]) -> f64 {
    let e2: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let s2: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (e2 / s2).sqrt()
}

fn check_rms(ty: GgmlType, bound: f64) {
    for seed in 0..8u64 {
        let mut r = Rng::new(seed * 1000 + 7);
        // vary the overall scale per seed: the bound is scale-free
        let sigma = [1.0, 0.02, 30.0, 1e-3, 1.0, 5.0, 0.3, 100.0][seed as usize];
        let x = r.gauss_vec(256 * 64, sigma);
        let (_, y) = roundtrip(ty, &x);
        let e = rel_rms(&x, &y);
        assert!(
            e < bound,
            "{ty} seed {seed}: relative RMS error {e:.4} >= {bound}"
        );
    }
}

#[test]
fn q4_k_gaussian_error() {
    check_rms(GgmlType::Q4K, 0.077);
}

#[test]
fn q2_k_gaussian_error() {
    check_rms(GgmlType::Q2K, 0.285);
}

#[test]
fn iq2_xxs_gaussian_error() {
    check_rms(GgmlType::Iq2Xxs, 0.355);
}

#[test]
fn q8_0_gaussian_error() {
    check_rms(GgmlType::Q8_0, 0.0058);
}

#[test]
fn q8_0_elementwise_bound() {
    // q = round(x/d32) with d32 = amax/127, stored d16 = f16(d32):
    // |x − d16·q| <= d32/2 + |d32 − d16|·|q| (+ f32 rounding)
    for seed in 0..4u64 {
        let mut r = Rng::new(seed);
        let x: Vec<f32> = (0..32 * 200)
            .map(|i| (r.gauss() * (1.0 + (i / 32) as f64 * 0.37)) as f32)
            .collect();
        let (q, y) = roundtrip(GgmlType::Q8_0, &x);
        for b in 0..200 {
            let xs = &x[32 * b..32 * b + 32];
            let d32 = xs.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let d16 = f16_to_f32(u16::from_le_bytes([q[34 * b], q[34 * b + 1]]));
            for i in 0..32 {
                let qi = (q[34 * b + 2 + i] as i8) as f32;
                let err = (xs[i] - y[32 * b + i]).abs();
                let bound = d32 * 0.5 * (1.0 + 1e-6) + (d32 - d16).abs() * qi.abs() + 1e-30;
                assert!(err <= bound, "block {b} elem {i}: err {err:e} > {bound:e}");
                // and the classic d/2 bound up to the f16 rounding of d (127·2^-11 relative)
                assert!(err <= d16 * (0.5 + 127.0 / 2048.0) * (1.0 + 1e-6));
            }
        }
    }
}

#[test]
fn q8_k_elementwise_bound() {
    for seed in 0..4u64 {
        let mut r = Rng::new(100 + seed);
        let x: Vec<f32> = (0..256 * 16)
            .map(|i| (r.gauss() * 10f64.powi((i / 256) % 7 - 3)) as f32)
            .collect();
        let a = quantize_q8_k(&x);
        let y = a.dequantize();
        for (i, (xv, yv)) in x.iter().zip(&y).enumerate() {
            let d = a.d()[i / 256].abs();
            assert!((xv - yv).abs() <= d * 0.5 * (1.0 + 1e-5), "elem {i}");
        }
        for b in 0..16 {
            for j in 0..16 {
                let s: i32 = a.qs()[256 * b + 16 * j..256 * b + 16 * j + 16]
                    .iter()
                    .map(|&q| q as i32)
                    .sum();
                assert_eq!(s, a.bsums()[16 * b + j] as i32);
            }
            // the largest element maps to ∓127 exactly
            assert_eq!(
                a.qs()[256 * b..256 * b + 256]
                    .iter()
                    .map(|q| q.unsigned_abs())
                    .max(),
                Some(127)
            );
        }
    }
}

#[test]
fn q8_0_activation_elementwise_bound() {
    let mut r = Rng::new(5);
    let x: Vec<f32> = (0..32 * 100 + 17)
        .map(|_| (r.gauss() * 3.0) as f32)
        .collect();
    let a = quantize_q8_0_act(&x);
    assert_eq!(a.len(), x.len());
    assert_eq!(a.blocks(), 101);
    let y = a.dequantize();
    for (i, xv) in x.iter().enumerate() {
        let d = a.d()[i / 32];
        assert!((xv - y[i]).abs() <= d * 0.5 * (1.0 + 1e-5), "elem {i}");
    }
    assert!(
        y[x.len()..].iter().all(|&v| v == 0.0),
        "padding must be zero"
    );
}

#[test]
fn f16_bf16_relative_bounds() {
    let mut r = Rng::new(9);
    for _ in 0..20000 {
        let x = (r.gauss() * 10f64.powf(r.uniform() * 8.0 - 4.0)) as f32;
        let h = f16_to_f32(f32_to_f16(x));
        if x.abs() >= 6.103_515_6e-5 {
            assert!((h - x).abs() <= x.abs() * (1.0 / 2048.0), "f16 {x:e}");
        } else {
            assert!((h - x).abs() <= 2f32.powi(-25)); // half a subnormal step
        }
        let b = bf16_to_f32(f32_to_bf16(x));
        assert!((b - x).abs() <= x.abs() * (1.0 / 256.0), "bf16 {x:e}");
    }
}

#[test]
fn special_inputs() {
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q4K,
        GgmlType::Iq2Xxs,
        GgmlType::Q8K,
    ] {
        // all zeros are exact
        let z = vec![0f32; 512];
        let (_, y) = roundtrip(ty, &z);
        assert!(y.iter().all(|&v| v == 0.0), "{ty} zeros");
        // a one-hot block: the linear/affine formats keep the peak within 10 %. IQ2_XXS cannot
        // represent 0 (smallest magnitude 8·db), so its MSE-optimal group scale balances the 31
        // zeros against the peak: s = 3·43/(43² + 31·8²) and the peak decodes near 43·s ≈ 1.45.
        let mut x = vec![0f32; 256];
        x[37] = -3.0;
        let (_, y) = roundtrip(ty, &x);
        if ty == GgmlType::Iq2Xxs {
            let s_opt = 3.0 * 43.0 / (43.0f32 * 43.0 + 31.0 * 64.0);
            assert!(
                (y[37] + 43.0 * s_opt).abs() <= 0.1 * 43.0 * s_opt,
                "{ty} peak {}",
                y[37]
            );
            assert!(rel_rms(&x, &y) < 0.9);
        } else {
            assert!((y[37] + 3.0).abs() <= 0.3, "{ty} peak {}", y[37]);
        }
    }
    // affine K-quants represent constant blocks (positive: via the scale; negative: via the min)
    for ty in [GgmlType::Q2K, GgmlType::Q4K] {
        for c in [0.75f32, -0.75] {
            let x = vec![c; 256];
            let (_, y) = roundtrip(ty, &x);
            assert!(
                y.iter().all(|v| (v - c).abs() <= 0.75 / 512.0),
                "{ty} constant {c}: {}",
                y[0]
            );
        }
    }
    // non-negative data (the min term is then 0) and data with an outlier
    let mut r = Rng::new(11);
    for ty in [GgmlType::Q2K, GgmlType::Q4K, GgmlType::Iq2Xxs] {
        let x: Vec<f32> = (0..4096).map(|_| r.gauss().abs() as f32).collect();
        let (_, y) = roundtrip(ty, &x);
        let bound = match ty {
            GgmlType::Q4K => 0.06,
            GgmlType::Q2K => 0.25,
            _ => 0.40,
        };
        assert!(
            rel_rms(&x, &y) < bound,
            "{ty} abs-gauss {}",
            rel_rms(&x, &y)
        );
        let mut x = r.gauss_vec(4096, 1.0);
        x[1000] = 40.0;
        let (_, y) = roundtrip(ty, &x);
        if ty == GgmlType::Iq2Xxs {
            // one scale per 32 and no zero level: the MSE-optimal scale does not stretch to the
            // outlier (31 neighbours would pay ≥ 8·db each), but the outlier stays the largest
            // value of its group, with its sign
            let gmax = y[992..1024].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(y[1000] > 0.0 && y[1000] == gmax, "{ty} outlier {}", y[1000]);
        } else {
            assert!((y[1000] - 40.0).abs() < 4.0, "{ty} outlier {}", y[1000]);
        }
    }
}

#[test]
fn i32_roundtrip_and_f32_identity() {
    let x = [0f32, -1.0, 2_147_483_520.0, -2_147_483_648.0, 123.0];
    let (q, y) = roundtrip(GgmlType::I32, &x);
    assert_eq!(i32::from_le_bytes(q[12..16].try_into().unwrap()), i32::MIN);
    assert_eq!(y, x);
    let mut r = Rng::new(3);
    let x = r.gauss_vec(100, 1.0);
    let (_, y) = roundtrip(GgmlType::F32, &x);
    assert_eq!(x, y);
}
