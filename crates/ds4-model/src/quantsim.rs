//! Quantisation-simulation primitives of the official numerics mode
//! (spec/model.md §3.4, §3.7, Appendix A): FP8 e4m3fn and FP4 e2m1 round
//! trips with power-of-two block scales, the Sylvester Hadamard transform and
//! f16 rounding of stored KV rows.

/// Largest finite e4m3fn magnitude.
pub const E4M3_MAX: f32 = 448.0;
/// Largest e2m1 magnitude.
pub const E2M1_MAX: f32 = 6.0;

/// Round a magnitude already clamped to [0, 448] to the nearest e4m3fn value,
/// ties to the code with an even mantissa.
pub fn e4m3fn_round(x: f32) -> f32 {
    let s = x.signum();
    let a = x.abs().min(E4M3_MAX);
    if a == 0.0 || a.is_nan() {
        return if a.is_nan() { 0.0 } else { 0.0 * s };
    }
    // Spacing of representable values around `a`: subnormals (a < 2^-6) step 2^-9,
    // otherwise 2^(e-3) for a in [2^e, 2^(e+1)).
    let step = if a < 2f32.powi(-6) {
        2f32.powi(-9)
    } else {
        let e = a.log2().floor() as i32;
        // guard against log2 rounding at exact powers of two
        let e = if 2f32.powi(e + 1) <= a {
            e + 1
        } else if 2f32.powi(e) > a {
            e - 1
        } else {
            e
        };
        2f32.powi(e - 3)
    };
    s * round_half_even_scaled(a, step)
}

/// Round a magnitude clamped to [0, 6] to the nearest e2m1 value
/// {0, 0.5, 1, 1.5, 2, 3, 4, 6}, ties to the even code.
pub fn e2m1_round(x: f32) -> f32 {
    const VALS: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    let s = x.signum();
    let a = x.abs().min(E2M1_MAX);
    if a.is_nan() {
        return 0.0;
    }
    let mut best = 0usize;
    for i in 1..8 {
        let d_best = (a - VALS[best]).abs();
        let d = (a - VALS[i]).abs();
        // strictly closer wins; on an exact tie pick the even code
        if d < d_best || (d == d_best && i % 2 == 0) {
            best = i;
        }
    }
    s * VALS[best]
}

/// `round(a / step) * step` with ties to even multiples (step a power of two, so exact).
fn round_half_even_scaled(a: f32, step: f32) -> f32 {
    let q = a / step; // exact: step is a power of two and no overflow
    let f = q.floor();
    let diff = q - f;
    let r = if diff > 0.5 || (diff == 0.5 && (f as i64) % 2 != 0) {
        f + 1.0
    } else {
        f
    };
    r * step
}

/// Power-of-two scale `2^ceil(log2(amax / max))` (ds4.c form, spec §8 item 20).
fn pow2_scale(amax: f32, max: f32) -> f32 {
    let e = (amax / max).log2().ceil();
    2f32.powi(e as i32)
}

/// FP8 e4m3fn round trip of `x` in blocks of 64, each block with its own
/// power-of-two scale (spec §3.4). `x.len()` must be a multiple of 64.
pub fn fp8_round_trip(x: &mut [f32]) {
    for block in x.chunks_mut(64) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-4);
        let s = pow2_scale(amax, E4M3_MAX);
        for v in block.iter_mut() {
            *v = e4m3fn_round((*v / s).clamp(-E4M3_MAX, E4M3_MAX)) * s;
        }
    }
}

/// FP4 e2m1 round trip in blocks of 32 with power-of-two scales (Appendix A).
pub fn fp4_round_trip(x: &mut [f32]) {
    let floor = 6.0 * 2f32.powi(-126);
    for block in x.chunks_mut(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs())).max(floor);
        let s = pow2_scale(amax, E2M1_MAX);
        for v in block.iter_mut() {
            *v = e2m1_round((*v / s).clamp(-E2M1_MAX, E2M1_MAX)) * s;
        }
    }
}

/// Normalised Sylvester Hadamard transform in place (`x.len()` a power of two):
/// `x <- H x / sqrt(n)` with `H_ab = (-1)^popcount(a & b)`.
pub fn hadamard_inplace(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two());
    let mut stride = 1;
    while stride < n {
        for base in (0..n).step_by(2 * stride) {
            for i in base..base + stride {
                let (a, b) = (x[i], x[i + stride]);
                x[i] = a + b;
                x[i + stride] = a - b;
            }
        }
        stride *= 2;
    }
    let scale = (1.0 / (n as f64).sqrt()) as f32;
    for v in x.iter_mut() {
        *v *= scale;
    }
}

/// Round every value to the nearest f16 (ties to even) and back.
pub fn f16_round(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = half::f16::from_f32(*v).to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All finite non-negative e4m3fn values from the bit-level definition.
    fn e4m3_table() -> Vec<f32> {
        let mut v = Vec::new();
        for e in 0..16 {
            for m in 0..8 {
                if e == 15 && m == 7 {
                    continue; // NaN code
                }
                let val = if e == 0 {
                    m as f32 * 2f32.powi(-9)
                } else {
                    (1.0 + m as f32 / 8.0) * 2f32.powi(e - 7)
                };
                v.push(val);
            }
        }
        v
    }

    #[test]
    fn e4m3_values_are_fixed_points_and_max_is_448() {
        let t = e4m3_table();
        assert_eq!(*t.last().unwrap(), 448.0);
        for &v in &t {
            assert_eq!(e4m3fn_round(v), v);
            assert_eq!(e4m3fn_round(-v), -v);
        }
    }

    #[test]
    fn e4m3_rounds_to_nearest_ties_even() {
        let t = e4m3_table();
        // brute force nearest with ties to even code index (codes are consecutive, index parity = mantissa parity)
        let mut x = 0.0f32;
        while x <= 448.0 {
            let mut best = 0;
            for i in 1..t.len() {
                let (d, db) = ((x - t[i]).abs(), (x - t[best]).abs());
                if d < db || (d == db && i % 2 == 0) {
                    best = i;
                }
            }
            assert_eq!(e4m3fn_round(x), t[best], "x = {x}");
            x += 0.0371;
        }
        // known ties: 1.0625 lies between 1.0 (m=0) and 1.125 (m=1) -> 1.0
        assert_eq!(e4m3fn_round(1.0625), 1.0);
        // 1.1875 between 1.125 (m=1) and 1.25 (m=2) -> 1.25
        assert_eq!(e4m3fn_round(1.1875), 1.25);
        // 232 between 224 (m=6) and 240 (m=7) -> 224; 248 between 240 (m=7) and 256 (m=0) -> 256
        assert_eq!(e4m3fn_round(232.0), 224.0);
        assert_eq!(e4m3fn_round(248.0), 256.0);
        // subnormal ties: 2^-10 between 0 and 2^-9 -> 0; 3·2^-10 between 2^-9 and 2^-8 -> 2^-8
        assert_eq!(e4m3fn_round(2f32.powi(-10)), 0.0);
        assert_eq!(e4m3fn_round(3.0 * 2f32.powi(-10)), 2f32.powi(-8));
        // (all of the above agree with torch 2.15's float8_e4m3fn cast)
        assert_eq!(e4m3fn_round(1000.0), 448.0);
    }

    #[test]
    fn e2m1_known_values() {
        let cases = [
            (0.25, 0.0),
            (0.3, 0.5),
            (0.75, 1.0),
            (1.25, 1.0),
            (1.75, 2.0),
            (2.5, 2.0),
            (3.5, 4.0),
            (5.0, 4.0),
            (5.1, 6.0),
            (-2.6, -3.0),
            (7.0, 6.0),
        ];
        for (x, y) in cases {
            assert_eq!(e2m1_round(x), y, "x = {x}");
        }
    }

    #[test]
    fn fp8_round_trip_known_vector() {
        // block amax 3.0 -> scale 2^ceil(log2(3/448)) = 2^-7; values / s = 384 (exact), 12.8 -> 13, ...
        let mut x = vec![0f32; 64];
        x[0] = 3.0;
        x[1] = 0.1; // /2^-7 = 12.8 -> e4m3 step 1 in [8,16) -> 13 -> 0.1015625
        x[2] = -0.013; // 1.664 -> step 0.125 -> 1.625 -> 0.0126953125
        x[3] = 1.0; // 128 exact
        x[4] = 1.1; // 140.8 -> step 16 in [128,256) -> 144 -> 1.125
        fp8_round_trip(&mut x);
        assert_eq!(x[0], 3.0);
        assert_eq!(x[1], 0.1015625);
        assert_eq!(x[2], -0.0126953125);
        assert_eq!(x[3], 1.0);
        assert_eq!(x[4], 1.125);
        assert!(x[5..].iter().all(|&v| v == 0.0));
        // tiny block: amax floored at 1e-4
        let mut y = vec![1e-9f32; 64];
        fp8_round_trip(&mut y);
        assert!(y.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn fp4_round_trip_known_vector() {
        // amax 6 -> scale 1
        let mut x: Vec<f32> = vec![6.0, 0.2, 0.3, 2.4, -2.6, 4.9, 0.74, 1.3];
        x.resize(32, 0.0);
        fp4_round_trip(&mut x);
        assert_eq!(&x[..8], &[6.0, 0.0, 0.5, 2.0, -3.0, 4.0, 0.5, 1.5]);
        // amax 1.0 -> scale 2^ceil(log2(1/6)) = 2^-2 ; 0.3/0.25 = 1.2 -> 1.0 -> 0.25
        let mut y = vec![0f32; 32];
        y[0] = 1.0;
        y[1] = 0.3;
        fp4_round_trip(&mut y);
        assert_eq!(y[0], 1.0);
        assert_eq!(y[1], 0.25);
    }

    #[test]
    fn hadamard_matches_matrix_and_is_involution() {
        let n = 128;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let mut y = x.clone();
        hadamard_inplace(&mut y);
        for a in 0..n {
            let mut s = 0f64;
            for b in 0..n {
                let sign = if ((a & b) as u32).count_ones().is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                };
                s += sign * x[b] as f64;
            }
            let want = s / (n as f64).sqrt();
            assert!((y[a] as f64 - want).abs() < 1e-5, "row {a}");
        }
        hadamard_inplace(&mut y);
        for i in 0..n {
            assert!((y[i] - x[i]).abs() < 1e-5);
        }
    }

    #[test]
    fn f16_round_known() {
        let mut x = vec![1.0, 1.0 + 1.0 / 4096.0, 65504.0, 0.1];
        f16_round(&mut x);
        assert_eq!(x[0], 1.0);
        assert_eq!(x[1], 1.0); // a quarter ulp above 1.0
        assert_eq!(x[2], 65504.0);
        assert_eq!(x[3], 0.099_975_586);
    }
}
