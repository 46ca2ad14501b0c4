//! Dot products against dequantize-then-dot in f64.
//!
//! Expectation: `E = Σ_i f64(deq(w)_i) · f64(deq(a)_i)` where `deq(a)` is the dequantized Q8_K /
//! Q8_0 activation (so the test isolates the dot from the activation quantization) or the f32
//! activation itself. Tolerance: `|got − E| <= 1e-5 · Σ_i |deq(w)_i · deq(a)_i|` (relative to the
//! magnitude of the terms; a relative error against `E` alone is meaningless when terms cancel).
//! The fast kernels must be bit-identical to the reference for the quantized dots and within
//! 1e-6 of `Σ|w·x|` for the f32-activation dots.

mod common;
use common::Rng;
use ds4_quant::{
    dequantize_row, f32_to_f16, kernels, quantize_q8_0_act, quantize_q8_k, quantize_row, reference,
    row_bytes, GgmlType,
};

/// A random weight row: either quantized from Gaussian data or arbitrary block bytes with sane
/// f16 scales (exercises bit patterns a quantizer never writes, e.g. int8 −128, every grid point).
fn weight_row(ty: GgmlType, n: usize, r: &mut Rng, raw: bool) -> Vec<u8> {
    let mut w = vec![0u8; row_bytes(ty, n)];
    if !raw
        || matches!(
            ty,
            GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 | GgmlType::I32
        )
    {
        let x = r.gauss_vec(n, 0.05);
        let x: Vec<f32> = if ty == GgmlType::I32 {
            x.iter().map(|v| (v * 1e4).round()).collect()
        } else {
            x
        };
        quantize_row(ty, &x, &mut w).unwrap();
        return w;
    }
    w = r.bytes(w.len());
    let bb = ty.block_bytes();
    let scale_offsets: &[usize] = match ty {
        GgmlType::Q8_0 | GgmlType::Iq2Xxs => &[0],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q4K => &[0, 2],
        _ => &[],
    };
    for blk in w.chunks_exact_mut(bb) {
        for &o in scale_offsets {
            let s = (r.uniform() * 0.01 + 1e-4) as f32 * if r.uniform() < 0.2 { -1.0 } else { 1.0 };
            blk[o..o + 2].copy_from_slice(&f32_to_f16(s).to_le_bytes());
        }
        if ty == GgmlType::Q8K {
            blk[0..4].copy_from_slice(&(r.gauss() as f32 * 0.01).to_le_bytes());
        }
    }
    w
}

fn deq(ty: GgmlType, w: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, w, &mut out).unwrap();
    out
}

fn expect(w: &[f32], a: &[f32]) -> (f64, f64) {
    let e = w.iter().zip(a).map(|(&x, &y)| x as f64 * y as f64).sum();
    let m = w
        .iter()
        .zip(a)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum();
    (e, m)
}

fn close(got: f32, e: f64, mag: f64, tol: f64, what: &str) {
    let err = (got as f64 - e).abs();
    assert!(
        err <= tol * mag + 1e-30,
        "{what}: got {got:e}, expected {e:e}, |err| {err:e} > {tol:e}·{mag:e}"
    );
}

#[test]
fn q8k_dots_match_dequantized_dot() {
    let mut r = Rng::new(42);
    for ty in [GgmlType::Q2K, GgmlType::Q4K, GgmlType::Iq2Xxs] {
        for (trial, n) in [256usize, 512, 4096, 2048, 256 * 7].into_iter().enumerate() {
            for raw in [false, true] {
                let w = weight_row(ty, n, &mut r, raw);
                let sigma = [1.0, 1e-3, 50.0, 0.2, 7.0][trial];
                let x = r.gauss_vec(n, sigma);
                let a = quantize_q8_k(&x);
                let (e, mag) = expect(&deq(ty, &w, n), &a.dequantize());
                let got_ref = reference::vec_dot_q8k(ty, &w, &a);
                close(
                    got_ref,
                    e,
                    mag,
                    1e-5,
                    &format!("{ty} reference n={n} raw={raw}"),
                );
                let got_fast = kernels::vec_dot_q8k(ty, &w, &a);
                assert_eq!(
                    got_fast.to_bits(),
                    got_ref.to_bits(),
                    "{ty} kernel vs reference n={n} raw={raw}"
                );
                assert_eq!(
                    ds4_quant::vec_dot_q8k(ty, &w, &a).to_bits(),
                    got_ref.to_bits()
                );
                assert_eq!(reference::try_vec_dot_q8k(ty, &w, &a), Ok(got_ref));
            }
        }
    }
}

#[test]
fn q8_0_dots_match_dequantized_dot() {
    let mut r = Rng::new(43);
    for (trial, n) in [32usize, 64, 4096, 1024 + 32, 8192].into_iter().enumerate() {
        for raw in [false, true] {
            let w = weight_row(GgmlType::Q8_0, n, &mut r, raw);
            let x = r.gauss_vec(n, [1.0, 1e-2, 30.0, 0.5, 3.0][trial]);
            let a = quantize_q8_0_act(&x);
            let (e, mag) = expect(&deq(GgmlType::Q8_0, &w, n), &a.dequantize());
            let got_ref = reference::vec_dot_q8_0(&w, &a);
            close(
                got_ref,
                e,
                mag,
                1e-5,
                &format!("Q8_0 reference n={n} raw={raw}"),
            );
            let got_fast = kernels::vec_dot_q8_0(&w, &a);
            assert_eq!(
                got_fast.to_bits(),
                got_ref.to_bits(),
                "Q8_0 kernel vs reference n={n}"
            );
        }
    }
    // int8 −128 weights against ±127 activations: the SIMD path must not saturate
    let mut w = vec![0u8; 34];
    w[0..2].copy_from_slice(&f32_to_f16(1.0).to_le_bytes());
    w[2..].fill(0x80);
    let x = vec![-1.0f32; 32];
    let a = quantize_q8_0_act(&x);
    assert_eq!(
        reference::vec_dot_q8_0(&w, &a),
        32.0 * 128.0 * 127.0 * (1.0 / 127.0)
    );
    assert_eq!(
        kernels::vec_dot_q8_0(&w, &a).to_bits(),
        reference::vec_dot_q8_0(&w, &a).to_bits()
    );
}

#[test]
fn f32_activation_dots_match_dequantized_dot() {
    let mut r = Rng::new(44);
    let all = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Bf16,
        GgmlType::I32,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q4K,
        GgmlType::Iq2Xxs,
        GgmlType::Q8K,
    ];
    for ty in all {
        let sizes: &[usize] = if ty.block_elems() == 1 {
            &[1, 7, 31, 256, 300, 4096, 4096 + 13]
        } else {
            &[256, 4096]
        };
        for &n in sizes {
            for raw in [false, true] {
                let w = weight_row(ty, n, &mut r, raw);
                let x = r.gauss_vec(n, 2.0);
                let (e, mag) = expect(&deq(ty, &w, n), &x);
                let got_ref = reference::vec_dot_f32(ty, &w, &x);
                close(
                    got_ref,
                    e,
                    mag,
                    1e-5,
                    &format!("{ty} reference f32 dot n={n}"),
                );
                let got_fast = kernels::vec_dot_f32(ty, &w, &x);
                close(
                    got_fast,
                    got_ref as f64,
                    mag,
                    1e-6,
                    &format!("{ty} kernel f32 dot n={n}"),
                );
                close(
                    got_fast,
                    e,
                    mag,
                    1e-5,
                    &format!("{ty} kernel f32 dot vs f64 n={n}"),
                );
            }
        }
    }
}

#[test]
fn matvec_matches_row_dots() {
    let mut r = Rng::new(45);
    let cases = [
        (GgmlType::Q2K, 512),
        (GgmlType::Q4K, 1024),
        (GgmlType::Iq2Xxs, 512),
        (GgmlType::Q8_0, 4096),
        (GgmlType::F16, 300),
        (GgmlType::F32, 64),
        (GgmlType::Bf16, 1000),
    ];
    for (ty, cols) in cases {
        let rows = 9;
        let mut wm = Vec::new();
        for _ in 0..rows {
            wm.extend(weight_row(ty, cols, &mut r, false));
        }
        let x = r.gauss_vec(cols, 1.0);
        let mut y = vec![0f32; rows];
        kernels::matvec(ty, &wm, rows, cols, &x, &mut y).unwrap();
        let rb = row_bytes(ty, cols);
        let act = kernels::prepare_activation(ty, &x);
        for (i, yv) in y.iter().enumerate() {
            let w = &wm[i * rb..(i + 1) * rb];
            let expect_row = match &act {
                kernels::Activation::Q8K(a) => reference::vec_dot_q8k(ty, w, a),
                kernels::Activation::Q8_0(a) => reference::vec_dot_q8_0(w, a),
                kernels::Activation::F32(x) => kernels::vec_dot_f32(ty, w, x),
            };
            assert_eq!(yv.to_bits(), expect_row.to_bits(), "{ty} row {i}");
            // and the result approximates the unquantized-activation product
            let (e, mag) = expect(&deq(ty, w, cols), &x);
            close(
                *yv,
                e,
                mag,
                0.05,
                &format!("{ty} row {i} vs f32 activation"),
            );
        }
        // a row range through matvec_prepared gives the same values
        let mut y2 = vec![0f32; 4];
        kernels::matvec_prepared(ty, &wm[2 * rb..6 * rb], 4, cols, &act, &mut y2).unwrap();
        assert_eq!(&y2, &y[2..6]);
    }
}

#[test]
fn kernels_report_simd() {
    // informational: the bit-exact assertions above hold with or without SIMD
    eprintln!("SIMD kernels in use: {}", kernels::simd_available());
}

#[test]
fn arbitrary_bytes_never_panic_and_kernels_agree() {
    // fully random blocks, f16 scales included (NaN, inf, subnormal bit patterns)
    let mut r = Rng::new(46);
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q4K,
        GgmlType::Iq2Xxs,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::Bf16,
    ] {
        for _ in 0..50 {
            let n = if ty.block_elems() == 1 {
                1 + (r.next_u64() % 700) as usize
            } else {
                512
            };
            let w = r.bytes(row_bytes(ty, n));
            let mut d = vec![0f32; n];
            dequantize_row(ty, &w, &mut d).unwrap();
            let x = r.gauss_vec(n, 1.0);
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            match ty {
                GgmlType::Q8_0 => {
                    let a = quantize_q8_0_act(&x);
                    assert!(same(
                        kernels::vec_dot_q8_0(&w, &a),
                        reference::vec_dot_q8_0(&w, &a)
                    ));
                }
                GgmlType::F16 | GgmlType::Bf16 => {
                    let (fast, refd) = (
                        kernels::vec_dot_f32(ty, &w, &x),
                        reference::vec_dot_f32(ty, &w, &x),
                    );
                    let (_, mag) = expect(&d, &x);
                    // random bf16/f16 bits include NaN/inf and values near f32::MAX, where
                    // f32 lanes and the f64 reference may overflow differently: compare only
                    // where the terms are comfortably in range
                    if mag < 1e30 {
                        close(fast, refd as f64, mag, 1e-6, &format!("{ty} random bytes"));
                    }
                }
                _ => {
                    let a = quantize_q8_k(&x);
                    assert!(
                        same(
                            kernels::vec_dot_q8k(ty, &w, &a),
                            reference::vec_dot_q8k(ty, &w, &a)
                        ),
                        "{ty}"
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_matches_per_token_matvec() {
    let mut r = Rng::new(47);
    for (ty, cols) in [
        (GgmlType::Iq2Xxs, 512),
        (GgmlType::Q2K, 256),
        (GgmlType::Q4K, 512),
        (GgmlType::Q8_0, 96),
        (GgmlType::F16, 70),
        (GgmlType::F32, 33),
    ] {
        let rows = 7;
        let n_tok = 9; // two 4-token passes of the multi-row kernels plus one single
        let mut wm = Vec::new();
        for _ in 0..rows {
            wm.extend(weight_row(ty, cols, &mut r, false));
        }
        let xs = r.gauss_vec(cols * n_tok, 1.0);
        let mut y = vec![0f32; rows * n_tok];
        kernels::matmul(ty, &wm, rows, cols, &xs, &mut y).unwrap();
        for t in 0..n_tok {
            let mut yt = vec![0f32; rows];
            kernels::matvec(ty, &wm, rows, cols, &xs[t * cols..(t + 1) * cols], &mut yt).unwrap();
            let got: Vec<u32> = y[t * rows..(t + 1) * rows]
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let want: Vec<u32> = yt.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{ty} token {t}");
        }
        // no tokens is fine; bad shapes are errors
        assert!(kernels::matmul_prepared(ty, &wm, rows, cols, &[], &mut []).is_ok());
        assert!(kernels::matmul(ty, &wm, rows, cols, &xs[1..], &mut y).is_err());
        assert!(kernels::matmul(ty, &wm, rows, cols, &xs, &mut y[1..]).is_err());
    }
}
