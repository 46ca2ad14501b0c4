//! Encode throughput benchmark (one thread).
//!
//! Usage: cargo run -p ds4-tokenizer --release --example bench_encode [-- FILE...]
//! Without files it uses the mixed-text part of the seeded oracle corpus (no code point
//! sweeps). Prints MB/s for `encode` (and `decode`).

#[path = "../tests/corpus_gen/mod.rs"]
mod corpus_gen;

use ds4_tokenizer::Tokenizer;
use std::time::Instant;

/// On-CPU time of this thread in seconds (Linux schedstat), to get numbers that do not
/// depend on other load on the machine; `None` elsewhere.
fn thread_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn main() {
    let t0 = Instant::now();
    let tok = Tokenizer::embedded_v4();
    eprintln!(
        "load embedded tokenizer: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let files: Vec<String> = std::env::args().skip(1).collect();
    let mut inputs: Vec<(String, Vec<String>)> = Vec::new();
    if files.is_empty() {
        let specials: Vec<String> = tok
            .added_token_ids()
            .into_iter()
            .filter_map(|id| tok.token_string(id).map(str::to_string))
            .collect();
        let docs: Vec<String> = corpus_gen::corpus(&specials)
            .into_iter()
            .filter(|d| d.kind != "sweep")
            .map(|d| d.text)
            .collect();
        inputs.push(("seeded mixed corpus".into(), docs));
    }
    for f in files {
        match std::fs::read(&f) {
            Ok(b) => inputs.push((f, vec![String::from_utf8_lossy(&b).into_owned()])),
            Err(e) => {
                eprintln!("cannot read {f}: {e}");
                std::process::exit(1);
            }
        }
    }
    for (name, docs) in inputs {
        let bytes: usize = docs.iter().map(|d| d.len()).sum();
        let mut best = f64::MAX;
        let mut best_cpu = f64::MAX;
        let mut n_ids = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let c0 = thread_cpu_s();
            n_ids = 0;
            for d in &docs {
                n_ids += std::hint::black_box(tok.encode(d)).len();
            }
            best = best.min(t.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (c0, thread_cpu_s()) {
                best_cpu = best_cpu.min(b - a);
            }
        }
        let all: Vec<Vec<u32>> = docs.iter().map(|d| tok.encode(d)).collect();
        let t = Instant::now();
        let mut out = 0;
        for ids in &all {
            out += std::hint::black_box(tok.decode(ids)).len();
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "{name}: {:.2} MB, {n_ids} ids; encode {:.2} MB/s wall, {:.2} MB/s on-CPU \
             (best of 5); decode {:.0} MB/s",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / best,
            bytes as f64 / 1e6 / best_cpu,
            out as f64 / 1e6 / dt
        );
    }
}
