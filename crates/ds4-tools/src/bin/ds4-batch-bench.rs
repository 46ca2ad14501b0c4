//! Continuous-batching benchmark (issue 10): the engine with one session slot
//! against the engine with one slot per client, on the same loaded model in
//! one process. N clients submit distinct chat prompts at once and decode
//! greedily; reported are the aggregate generated tokens per second, one
//! client alone, and the time to first token of the last client.
//!
//! ds4-batch-bench [-m FILE.gguf] [--clients 16] [--gen-tokens 32]
//!                 [--prompt-words 40] [--ctx 1024] [-t THREADS] [--cuda]
//! Without -m it runs on the embedded demo model.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Parser;
use ds4_engine::ds4::{demo, load, BackendChoice, Ds4Model, Ds4Tokenizer, LoadOptions};
use ds4_engine::{Engine, EngineConfig, Event, GenRequest, SamplingParams, Tokenizer};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ds4-batch-bench",
    about = "Aggregate decode speed with and without continuous batching"
)]
struct Args {
    /// GGUF model file (default: the embedded demo model).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    clients: u64,
    /// Tokens each client generates (greedy; EOS ends a client early).
    #[arg(long = "gen-tokens", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    gen_tokens: u64,
    /// Words of filler in each client's prompt.
    #[arg(long = "prompt-words", default_value_t = 40)]
    prompt_words: usize,
    /// Context of each session slot.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(64..))]
    ctx: u64,
    /// CPU threads (rayon pool; default all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Run on the GPU.
    #[arg(long)]
    cuda: bool,
}

struct Run {
    tokens: usize,
    wall_s: f64,
    /// Seconds from the submissions to the last client's first token.
    last_ttft_s: f64,
    /// Seconds from the first client's first token to the last client's end
    /// (the decode window; later clients' prefills fall inside it).
    decode_s: f64,
}

fn prompt(i: usize, words: usize) -> String {
    let filler: Vec<String> = (0..words)
        .map(|w| format!("w{}", (i * 31 + w * 7) % 97))
        .collect();
    format!(
        "<｜begin▁of▁sentence｜><｜User｜>Client {i} asks about {}.<｜Assistant｜></think>",
        filler.join(" ")
    )
}

/// `clients` greedy requests submitted at once to an engine with `slots` slots.
fn run(
    model: &Ds4Model,
    tok: &Arc<Ds4Tokenizer>,
    a: &Args,
    clients: usize,
    slots: usize,
) -> Result<Run> {
    let engine = Engine::start(
        Box::new(model.clone()),
        tok.clone(),
        EngineConfig {
            ctx: a.ctx as usize,
            slots,
            ..EngineConfig::default()
        },
    )
    .map_err(|e| anyhow!("starting the engine: {e}"))?;
    let t0 = Instant::now();
    let handles = (0..clients)
        .map(|i| {
            let text = prompt(i, a.prompt_words);
            engine.submit(GenRequest {
                prompt_tokens: tok.encode(&text),
                prompt_text: text,
                params: SamplingParams {
                    temperature: 0.0,
                    ..Default::default()
                },
                max_tokens: a.gen_tokens as usize,
                stop: Vec::new(),
                control: None,
                visible: None,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("submitting: {e}"))?;
    let mut tokens = 0;
    let mut last_ttft = 0f64;
    // each client on its own thread, so that first-token times are seen when they happen
    let results: Vec<(usize, f64, f64)> = std::thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .map(|mut h| {
                s.spawn(move || -> Result<(usize, f64, f64)> {
                    let mut first = None;
                    while let Some(ev) = h.events.blocking_recv() {
                        match ev {
                            Event::Text(_) if first.is_none() => {
                                first = Some(t0.elapsed().as_secs_f64())
                            }
                            Event::Done { usage, .. } => {
                                let done = t0.elapsed().as_secs_f64();
                                return Ok((usage.completion_tokens, first.unwrap_or(done), done));
                            }
                            Event::Failed(e) => return Err(anyhow!("a client failed: {e}")),
                            _ => {}
                        }
                    }
                    Err(anyhow!("a client's events ended without Done"))
                })
            })
            .collect();
        joins
            .into_iter()
            .map(|j| j.join().map_err(|_| anyhow!("client thread panicked"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    let wall_s = t0.elapsed().as_secs_f64();
    let mut first_token = f64::INFINITY;
    let mut last_done = 0f64;
    for (n, ttft, done) in results {
        tokens += n;
        last_ttft = last_ttft.max(ttft);
        first_token = first_token.min(ttft);
        last_done = last_done.max(done);
    }
    engine.shutdown();
    Ok(Run {
        tokens,
        wall_s,
        last_ttft_s: last_ttft,
        decode_s: (last_done - first_token).max(1e-9),
    })
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| anyhow!("thread pool: {e}"))?;
    }
    let model = match &a.model {
        Some(p) => {
            let opts = LoadOptions {
                backend: if a.cuda {
                    BackendChoice::Cuda
                } else {
                    BackendChoice::Cpu
                },
                ..Default::default()
            };
            load(p, &opts).map_err(|e| anyhow!("{e}"))?
        }
        None => demo().map_err(|e| anyhow!("{e}"))?,
    };
    let tok = Arc::new(Ds4Tokenizer::embedded());
    let n = a.clients as usize;
    println!(
        "ds4-batch-bench: {} threads={} clients={n} gen_tokens={} ctx={}",
        a.model
            .as_ref()
            .map_or("demo model".into(), |p| p.display().to_string()),
        rayon::current_num_threads(),
        a.gen_tokens,
        a.ctx
    );
    // warm-up (weights paged in, first allocations), not reported
    let warm = Args {
        gen_tokens: 2,
        ..a.clone()
    };
    run(&model, &tok, &warm, 1, 1)?;
    let one = run(&model, &tok, &a, 1, 1)?;
    let serial = run(&model, &tok, &a, n, 1)?;
    let batched = run(&model, &tok, &a, n, n)?;
    let rate = |r: &Run| r.tokens as f64 / r.wall_s;
    let drate = |r: &Run| r.tokens as f64 / r.decode_s;
    println!("mode,clients,slots,tokens,wall_s,tok_per_s,decode_window_s,decode_tok_per_s,last_first_token_s");
    for (mode, c, s, r) in [
        ("alone", 1, 1, &one),
        ("one-slot", n, 1, &serial),
        ("batched", n, n, &batched),
    ] {
        println!(
            "{mode},{c},{s},{},{:.2},{:.2},{:.2},{:.2},{:.2}",
            r.tokens,
            r.wall_s,
            rate(r),
            r.decode_s,
            drate(r),
            r.last_ttft_s
        );
    }
    println!(
        "batched / one client alone: {:.2}x (tokens per wall second), {:.2}x (decode window); batched / one slot: {:.2}x; last client's first token {:.2} s -> {:.2} s",
        rate(&batched) / rate(&one),
        drate(&batched) / drate(&one),
        rate(&batched) / rate(&serial),
        serial.last_ttft_s,
        batched.last_ttft_s
    );
    Ok(())
}
