//! Matrix-vector throughput per weight type (plain std::time, no harness).
//!
//! `cargo bench -p ds4-quant --bench matvec [-- QUICK]`
//! Prints, per type, GB/s of weight bytes streamed by `kernels::matvec` (single thread, activation
//! quantization included) and by the scalar reference dot for comparison. Rates are per second of
//! this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), since wall time on a shared machine mostly
//! measures the other processes; the wall-time rate of the fast path is printed as well. The last
//! column is the CPU time per token of `kernels::matmul` over 8 tokens (weights read once).

use ds4_quant::{kernels, quantize_row, reference, row_bytes, GgmlType};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn weights(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32
    };
    // quantize a few distinct rows, then tile them (quantizing 30 MB of IQ2_XXS would be slow)
    let distinct = 16.min(rows);
    let rb = row_bytes(ty, cols);
    let mut base = vec![0u8; distinct * rb];
    for r in 0..distinct {
        let x: Vec<f32> = (0..cols).map(|_| next() * 0.1).collect();
        quantize_row(ty, &x, &mut base[r * rb..(r + 1) * rb]).unwrap();
    }
    let mut w = Vec::with_capacity(rows * rb);
    for r in 0..rows {
        w.extend_from_slice(&base[(r % distinct) * rb..(r % distinct + 1) * rb]);
    }
    w
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clock id is a constant supported by Linux
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Returns (CPU seconds, wall seconds) per call.
fn time<F: FnMut()>(min: Duration, mut f: F) -> (f64, f64) {
    f(); // warm up
    let mut iters = 0u32;
    let t = Instant::now();
    let c0 = thread_cpu_seconds();
    while t.elapsed() < min || iters < 3 {
        f();
        iters += 1;
    }
    let cpu = thread_cpu_seconds() - c0;
    (cpu / iters as f64, t.elapsed().as_secs_f64() / iters as f64)
}

fn main() {
    let quick = std::env::args().any(|a| a == "QUICK");
    let min = Duration::from_millis(if quick { 200 } else { 1000 });
    println!("SIMD kernels: {}", kernels::simd_available());
    println!(
        "{:<8} {:>6} {:>6} {:>7} {:>10} {:>10} {:>12} {:>12} {:>14}",
        "type",
        "rows",
        "cols",
        "MB",
        "cpu ms",
        "GB/s fast",
        "GB/s scalar",
        "wall GB/s",
        "8-tok ms/tok"
    );
    let cases = [
        (GgmlType::Q8_0, 4096),
        (GgmlType::Q2K, 2048),
        (GgmlType::Q4K, 4096),
        (GgmlType::Iq2Xxs, 4096),
        (GgmlType::F16, 4096),
        (GgmlType::Bf16, 4096),
        (GgmlType::F32, 4096),
    ];
    for (ty, cols) in cases {
        let rb = row_bytes(ty, cols);
        let target = if quick { 8 << 20 } else { 64 << 20 };
        let rows = (target / rb).max(1);
        let w = weights(ty, rows, cols, 0x1234_5678 + cols as u64);
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut y = vec![0f32; rows];
        let (t_fast, w_fast) = time(min, || {
            kernels::matvec(ty, black_box(&w), rows, cols, black_box(&x), &mut y).unwrap();
            black_box(&y);
        });
        let act = kernels::prepare_activation(ty, &x);
        let (t_ref, _) = time(min, || {
            for (r, o) in y.iter_mut().enumerate() {
                let wr = &w[r * rb..(r + 1) * rb];
                *o = match &act {
                    kernels::Activation::Q8K(a) => reference::vec_dot_q8k(ty, wr, a),
                    kernels::Activation::Q8_0(a) => reference::vec_dot_q8_0(wr, a),
                    kernels::Activation::F32(x) => reference::vec_dot_f32(ty, wr, x),
                };
            }
            black_box(&y);
        });
        let n_tok = 8;
        let xs: Vec<f32> = (0..n_tok * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut ys = vec![0f32; n_tok * rows];
        let (t_mm, _) = time(min, || {
            kernels::matmul(ty, black_box(&w), rows, cols, black_box(&xs), &mut ys).unwrap();
            black_box(&ys);
        });
        let bytes = w.len() as f64;
        println!(
            "{:<8} {:>6} {:>6} {:>7.1} {:>10.3} {:>10.2} {:>12.2} {:>12.2} {:>14.3}",
            ty.name(),
            rows,
            cols,
            bytes / 1e6,
            t_fast * 1e3,
            bytes / t_fast / 1e9,
            bytes / t_ref / 1e9,
            bytes / w_fast / 1e9,
            t_mm * 1e3 / n_tok as f64
        );
    }
}
