//! Every GPU check of the CUDA backend in one run (bench/gpu-run.sh calls it):
//!
//! `gpu_check correctness`  — CUDA logits against the CPU reference on tiny
//!   models (f32 oracle fixtures A and B incl. B's 2200-token indexer
//!   pruning; synthetic q2 / q4 / f16 GGUFs that exercise every quant
//!   kernel), prefill + 64 decode steps, exact and official numerics; chunked
//!   prefill vs token-by-token on the GPU; a batch of 4 sequences at
//!   different positions vs each alone. Prints one line per check and exits
//!   non-zero on a failure.
//! `gpu_check speed FILE [ctx...]` — load a full-shape GGUF on the GPU,
//!   prefill / decode timings at the given contexts.

use ds4_gguf::layout::Recipe;
use ds4_gguf::synth::{synth_main_to, SynthConfig};
use ds4_gguf::GgufFile;
use ds4_model::{tiny, Backend, Cpu, Cuda, Model, Numerics, SeqStep, Want};
use std::time::Instant;

fn argmax(v: &[f32]) -> usize {
    let mut b = 0;
    for i in 1..v.len() {
        if v[i] > v[b] {
            b = i;
        }
    }
    b
}

/// (max |Δ| / max |ref|, argmax agreement) over rows of `vocab`.
fn cmp(a: &[f32], b: &[f32], vocab: usize) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let m = b.iter().fold(0f32, |x, y| x.max(y.abs())).max(1e-30);
    let d = a.iter().zip(b).fold(0f32, |x, (p, q)| x.max((p - q).abs()));
    let rows = a.len() / vocab;
    let agree = (0..rows)
        .filter(|&r| {
            argmax(&a[r * vocab..(r + 1) * vocab]) == argmax(&b[r * vocab..(r + 1) * vocab])
        })
        .count();
    (d / m, agree as f32 / rows.max(1) as f32)
}

struct Report {
    fails: usize,
}

impl Report {
    fn check(&mut self, name: &str, rel: f32, agree: f32, bound: f32, min_agree: f32) {
        let ok = rel <= bound && agree >= min_agree && rel.is_finite();
        if !ok {
            self.fails += 1;
        }
        println!(
            "{} {name}: rel {rel:.3e} (bound {bound:.0e}), argmax {:.2}% (min {:.0}%)",
            if ok { "PASS" } else { "FAIL" },
            agree * 100.0,
            min_agree * 100.0
        );
    }
}

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

/// Prefill `n_pre` tokens then greedy-free decode of the remaining ones
/// (teacher forced), logits of every position.
fn run<B: Backend>(
    m: &Model<B>,
    num: Numerics,
    ids: &[u32],
    n_pre: usize,
    chunk: usize,
) -> Vec<f32> {
    let mut s = m.session_ctx(num, ids.len() + 8).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < n_pre {
        let e = (at + chunk).min(n_pre);
        out.extend(m.forward(&mut s, &ids[at..e], Want::All).unwrap());
        at = e;
    }
    for &t in &ids[n_pre..] {
        out.extend(m.forward(&mut s, &[t], Want::Last).unwrap());
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn check_model(
    r: &mut Report,
    name: &str,
    cpu: &Model<Cpu>,
    gpu: &Model<Cuda>,
    n_pre: usize,
    n_dec: usize,
    bound: f32,
    min_agree: f32,
) {
    let v = cpu.cfg.vocab;
    let ids = tokens(n_pre + n_dec, v, 7);
    for num in [Numerics::Exact, Numerics::Official] {
        let want = run(cpu, num, &ids, n_pre, 512);
        let got = run(gpu, num, &ids, n_pre, 512);
        let (rel, agree) = cmp(&got, &want, v);
        // official numerics round to FP8 / FP4 grids: a last-bit difference
        // before a rounding step can move a value by one grid step
        // (bounds measured on an H200, bench/RESULTS.md 2026-12-03)
        let (b, min) = match (num, bound < 1e-3) {
            (Numerics::Official, true) => (0.2, 0.98),
            (Numerics::Official, false) => (0.5, 0.85),
            _ => (bound, min_agree),
        };
        r.check(
            &format!("{name} {num:?} prefill {n_pre} + decode {n_dec} vs CPU"),
            rel,
            agree,
            b,
            min,
        );
    }
    // chunked prefill equals token-by-token decoding on the GPU
    let n = (n_pre + n_dec).min(300);
    let whole = run(gpu, Numerics::Exact, &ids[..n], n, 512);
    let odd = run(gpu, Numerics::Exact, &ids[..n], n, 37);
    let tok = run(gpu, Numerics::Exact, &ids[..n], 0, 1);
    let (rel, agree) = cmp(&odd, &whole, v);
    r.check(
        &format!("{name} GPU chunks of 37 vs one chunk"),
        rel,
        agree,
        bound,
        min_agree,
    );
    let (rel, agree) = cmp(&tok, &whole, v);
    r.check(
        &format!("{name} GPU token-by-token vs one chunk"),
        rel,
        agree,
        bound,
        min_agree,
    );
    // a batch of 4 sequences at different positions equals each alone
    let lens = [5usize, 33, 130, 257];
    let seqs: Vec<Vec<u32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &l)| tokens(l + 3, v, 100 + i as u64))
        .collect();
    let mut alone = Vec::new();
    let mut sess = Vec::new();
    for (s, &l) in seqs.iter().zip(&lens) {
        let mut a = gpu.session_ctx(Numerics::Exact, 512).unwrap();
        gpu.forward(&mut a, &s[..l], Want::None).unwrap();
        let mut b = gpu.session_ctx(Numerics::Exact, 512).unwrap();
        gpu.forward(&mut b, &s[..l], Want::None).unwrap();
        alone.push(gpu.forward(&mut a, &s[l..], Want::All).unwrap());
        sess.push(b);
    }
    let mut steps: Vec<SeqStep<Cuda>> = sess
        .iter_mut()
        .zip(&seqs)
        .zip(&lens)
        .map(|((s, ids), &l)| SeqStep {
            session: s,
            ids: &ids[l..],
            want: Want::All,
        })
        .collect();
    let batched = gpu.forward_batch(&mut steps).unwrap();
    let a: Vec<f32> = alone.concat();
    let b: Vec<f32> = batched.concat();
    let (rel, agree) = cmp(&b, &a, v);
    r.check(
        &format!("{name} batch of 4 sequences vs alone"),
        rel,
        agree,
        1e-4,
        1.0,
    );
}

fn synth_model(recipe: Recipe, head_dim: u32) -> (GgufFile, ds4_model::Config) {
    let mut sc = SynthConfig::tiny();
    sc.recipe = recipe;
    sc.model.head_dim = head_dim;
    sc.model.value_length = head_dim;
    sc.seed = 11;
    let (bytes, _) = synth_main_to(&sc, Vec::new()).unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    let mc = ds4_gguf::layout::ModelConfig::from_gguf(&f).unwrap();
    let cfg = ds4_model::gguf::config_from_layout(&mc).unwrap();
    (f, cfg)
}

fn correctness() -> usize {
    let mut fails = 0;
    // f32-accumulation kernels everywhere, then the cuBLAS f16-operand prefill path
    for (mode, min_rows, bound, agree) in [
        ("matvec", "0", 1e-4f32, 0.99f32),
        // f16 operands; on the random tiny models the indexer then picks a few
        // other rows, moving logits by up to 0.42 of max |logit| (measured)
        ("gemm", "32", 0.5, 0.95),
    ] {
        std::env::set_var("DS4_CUDA_GEMM_MIN", min_rows);
        println!("== path: {mode} (DS4_CUDA_GEMM_MIN={min_rows})");
        fails += correctness_path(bound, agree);
    }
    println!("{} failed", fails);
    fails
}

fn correctness_path(bound: f32, min_agree: f32) -> usize {
    let gpu_be = match Cuda::open(0) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIP: no usable GPU: {e:#}");
            return 0;
        }
    };
    println!("device: {}", gpu_be.describe());
    let mut r = Report { fails: 0 };
    // f32 oracle models A and B (B: real structure, indexer pruning past 2051 tokens)
    for (name, cfg, seed, n_pre, n_dec) in [
        ("tiny A f32", tiny::config_a(), 1u64, 100usize, 64usize),
        ("tiny B f32", tiny::config_b(), 2, 2200, 64),
    ] {
        let t0 = Instant::now();
        let m = tiny::generate(&cfg, seed).unwrap();
        let cpu = Model::bind(Cpu, cfg.clone(), &m.main, None).unwrap();
        let gpu = Model::bind(gpu_be.clone(), cfg.clone(), &m.main, None).unwrap();
        check_model(&mut r, name, &cpu, &gpu, n_pre, n_dec, bound, min_agree);
        println!("  ({name}: {:.1} s)", t0.elapsed().as_secs_f64());
    }
    // head_dim 512 (the published width) takes the 512-wide attention kernels
    for (name, recipe, hd) in [
        ("synth q2", Recipe::Q2, 128),
        ("synth q4", Recipe::Q4, 128),
        ("synth f16", Recipe::F16, 128),
        ("synth q2 head_dim 512", Recipe::Q2, 512),
    ] {
        let (f, cfg) = synth_model(recipe, hd);
        let src = ds4_model::GgufSource::new(f);
        let cpu = Model::bind(Cpu, cfg.clone(), &src, None).unwrap();
        let gpu = Model::bind(gpu_be.clone(), cfg.clone(), &src, None).unwrap();
        check_model(&mut r, name, &cpu, &gpu, 200, 64, bound, min_agree);
    }
    r.fails
}

/// Prefill `ids` in chunks of 2048 from the session's start (logits of the last only).
fn prefill(m: &Model<Cuda>, s: &mut ds4_model::Session<Cuda>, ids: &[u32]) {
    let mut at = 0;
    while at < ids.len() {
        let e = (at + 2048).min(ids.len());
        let want = if e == ids.len() {
            Want::Last
        } else {
            Want::None
        };
        m.forward(s, &ids[at..e], want).unwrap();
        at = e;
    }
}

fn speed(path: &str, ctxs: &[usize]) {
    let be = Cuda::open(0).expect("GPU");
    println!("device: {}", be.describe());
    let t = Instant::now();
    let mut z = 0u128;
    for _ in 0..100_000 {
        z = z.wrapping_add(Instant::now().duration_since(t).as_nanos());
    }
    println!(
        "host clock read: {:.0} ns ({z})",
        t.elapsed().as_nanos() as f64 / 100_000.0
    );
    let t0 = Instant::now();
    let m = ds4_model::load(be.clone(), std::path::Path::new(path), None).expect("load");
    let (free, total) = be.mem_info();
    println!(
        "loaded {path} in {:.1} s; GPU memory free {} / {} MiB",
        t0.elapsed().as_secs_f64(),
        free >> 20,
        total >> 20
    );
    let max = *ctxs.iter().max().unwrap();
    // real text tokens when DS4_PROMPT_FILE names one, else random ids
    let ids = match std::env::var("DS4_PROMPT_FILE") {
        Ok(p) => {
            let text = std::fs::read_to_string(&p).expect("prompt file");
            let mut v = ds4_tokenizer::Tokenizer::shared_v4().encode(&text);
            assert!(v.len() >= max, "prompt has {} tokens", v.len());
            v.truncate(max);
            println!("prompt: {} tokens of {p}", v.len());
            v
        }
        Err(_) => tokens(max, m.cfg.vocab, 3),
    };
    for &ctx in ctxs {
        let mut s = m.session_ctx(Numerics::Official, ctx + 256).unwrap();
        let t = Instant::now();
        prefill(&m, &mut s, &ids[..ctx]);
        be.sync().unwrap();
        let pre = t.elapsed().as_secs_f64();
        for (name, n, ms) in be.profile_report().unwrap().into_iter().take(14) {
            println!("  prof prefill {ctx}: {name:<18} {n:>7} launches {ms:>9.2} ms");
        }
        if ctx == ctxs[0] {
            // the 512-wide attention kernels against the generic one (checked
            // against the CPU on the tiny models), 8 decode steps from this state
            let mut worst = 0f32;
            let mut agree = 0;
            // exact numerics, so that no FP8 rounding or top-k set can amplify
            // a last-bit difference
            let mut a = m.session_ctx(Numerics::Exact, ctx + 256).unwrap();
            prefill(&m, &mut a, &ids[..ctx]);
            let mut b = a.try_clone(&be).unwrap();
            let mut tok = ids[1];
            for _ in 0..8 {
                let la = m.forward(&mut a, &[tok], Want::Last).unwrap();
                Cuda::set_attention_generic(true);
                let lb = m.forward(&mut b, &[tok], Want::Last).unwrap();
                Cuda::set_attention_generic(false);
                let (r, _) = cmp(&la, &lb, m.cfg.vocab);
                worst = worst.max(r);
                agree += (argmax(&la) == argmax(&lb)) as usize;
                tok = argmax(&lb) as u32;
            }
            println!(
                "ctx {ctx}: attention512_split vs attention_any over 8 decode steps (exact numerics): rel {worst:.2e}, argmax {agree}/8"
            );
        }
        // one decode step: wall clock against GPU time (host-bound if far apart)
        let t = Instant::now();
        let ev = be.timer().unwrap();
        let l = m.forward(&mut s, &[ids[0]], Want::Last).unwrap();
        let gpu_ms = be.timer_ms(ev).unwrap();
        println!(
            "ctx {ctx}: one decode step: wall {:.2} ms, GPU {gpu_ms:.2} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        let mut tok = argmax(&l) as u32;
        if std::env::var_os("DS4_NCU_STEP").is_some() {
            // one decode step inside the range `ncu --profile-from-start off` records
            be.profiler_range(true).unwrap();
            let l = m.forward(&mut s, &[tok], Want::Last).unwrap();
            be.profiler_range(false).unwrap();
            tok = argmax(&l) as u32;
        }
        let n_gen = 32;
        let w0 = be.sync_wait_s();
        let (l0, ls0) = be.host_stats();
        let (h0, o0) = be.host_detail();
        let t = Instant::now();
        for _ in 0..n_gen {
            let l = m.forward(&mut s, &[tok], Want::Last).unwrap();
            tok = argmax(&l) as u32;
        }
        let dec = t.elapsed().as_secs_f64();
        let wait = be.sync_wait_s() - w0;
        let (l1, ls1) = be.host_stats();
        let (h1, o1) = be.host_detail();
        let per: Vec<String> = (0..6)
            .map(|i| format!("{}", (h1[i] - h0[i]) / n_gen as u64))
            .collect();
        println!(
            "ctx {ctx}: launches per step by time inside cuLaunchKernel (<2/<4/<8/<16/<64/more us): {}; memset+copy calls {:.2} ms",
            per.join("/"),
            (o1 - o0) * 1e3 / n_gen as f64
        );
        println!(
            "ctx {ctx}: {} launches per decode step, {:.2} ms of host time inside cuLaunchKernel",
            (l1 - l0) / n_gen as u64,
            (ls1 - ls0) * 1e3 / n_gen as f64
        );
        if std::env::var_os("DS4_MV_AB").is_some() {
            // the same decode with the one-warp-per-row matvec kernels
            Cuda::set_matvec_old(true);
            let t = Instant::now();
            for _ in 0..n_gen {
                let l = m.forward(&mut s, &[tok], Want::Last).unwrap();
                tok = argmax(&l) as u32;
            }
            Cuda::set_matvec_old(false);
            println!(
                "ctx {ctx}: decode with the old matvec kernels {:.2} tok/s",
                n_gen as f64 / t.elapsed().as_secs_f64()
            );
        }
        println!(
            "ctx {ctx}: decode step {:.2} ms wall, host enqueue {:.2} ms, host waiting for the GPU {:.2} ms",
            dec * 1e3 / n_gen as f64,
            (dec - wait) * 1e3 / n_gen as f64,
            wait * 1e3 / n_gen as f64
        );
        for (name, n, ms) in be.profile_report().unwrap().into_iter().take(14) {
            println!("  prof ctx {ctx}: {name:<18} {n:>7} launches {ms:>9.2} ms");
        }
        println!(
            "ctx {ctx}: prefill {:.1} tok/s ({ctx} tokens in {pre:.2} s), decode {:.2} tok/s ({n_gen} tokens)",
            ctx as f64 / pre,
            n_gen as f64 / dec
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(|s| s.as_str()) {
        Some("correctness") => std::process::exit(if correctness() > 0 { 1 } else { 0 }),
        Some("mvbench") => {
            let be = Cuda::open(0).expect("GPU");
            println!("device: {}", be.describe());
            let bad = be.mvbench().expect("mvbench");
            println!("mvbench: {bad} cases off the CPU reference");
            std::process::exit(if bad > 0 { 1 } else { 0 });
        }
        Some("speed") => {
            let ctxs: Vec<usize> = args[3..].iter().map(|s| s.parse().unwrap()).collect();
            speed(&args[2], &ctxs);
        }
        _ => {
            eprintln!("usage: gpu_check correctness | mvbench | speed FILE CTX...");
            std::process::exit(2);
        }
    }
}
