//! ds4-bench: prefill / generation throughput at growing context frontiers
//! (spec/server-and-cli.md §5; flags, defaults, method and CSV of ds4.c's
//! `ds4_bench.c`).
//!
//! One fixed token sequence (the prompt file, tokenised once) is walked to the
//! frontiers ctx-start, ctx-start + step-incr (or ×step-mul), …, ctx-max. At each
//! frontier only the newest interval is prefilled (timed); then, from an
//! identical copy of the session state (untimed), exactly gen-tokens tokens are
//! decoded greedily, never choosing EOS (timed); the copy is then dropped and the
//! live session goes on to the next frontier.
//!
//! The snapshot is an in-memory deep copy of the session (`Session: Clone`),
//! taken and dropped outside the timed regions, like ds4.c's snapshot/restore.
//!
//! Differences from ds4.c: backends are cuda and cpu (cuda by default where a GPU is present);
//! `--numerics exact|official` picks the session numerics; `--demo` uses the
//! embedded demo model instead of a GGUF file. Usage errors exit with status 2
//! (as ds4.c), every other failure with 1.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use ds4_gguf::{GgufFile, Value};
use ds4_model::{Backend, Cpu, Cuda, GgufSource, Model, Numerics, Session, Want};
use ds4_tokenizer::{Tokenizer, TokenizerData};

const DEFAULT_MODEL: &str = "ds4flash.gguf";
const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";
/// Tokens per forward call while prefilling (ds4.c's prefill chunk).
const PREFILL_CHUNK: usize = 2048;
/// Raw sliding window of the ds4 session payload (ds4.c `DS4_N_SWA`), capped by the
/// model's own window.
const PAYLOAD_RAW_WINDOW: usize = 128;

const USAGE: &str = "Usage: ds4-bench --prompt-file FILE [options]

Benchmarks instantaneous prefill and generation throughput at context
frontiers such as 2048, 4096, 6144, ... . Generation is always greedy,
runs for exactly --gen-tokens tokens, and skips EOS so every row is
comparable.

Input:
  --prompt-file FILE
      Raw benchmark text. The fixed token sequence is sliced at each frontier.
  --chat-prompt-file FILE
      Render FILE as one no-thinking chat user message, then slice that sequence.
  -sys, --system TEXT
      System prompt used only with --chat-prompt-file.
      Default: \"You are a helpful assistant.\"

Model and backend:
  -m, --model FILE       GGUF model path. Default: ds4flash.gguf
  --demo                 Use the embedded demo model (tiny random weights, real
                         tokenizer) instead of a GGUF file.
  --metal | --cuda | --cpu | --backend NAME
      Select the backend: cuda or cpu (default: cuda where a GPU and its
                         driver are present, else cpu; metal does not exist).
  -t, --threads N        CPU threads (rayon pool). Default: all cores.
  --numerics MODE        exact | official (default official).
  --quality              Prefer exact kernels where applicable (no effect on the
                         CPU backend, which has one kernel set).
  --warm-weights         Touch mapped tensor pages before benchmarking.

Sweep:
  --ctx-start N          First measured frontier. Default: 2048
  --ctx-max N            Last measured frontier. Default: 32768
  --ctx-alloc N          Allocated context. Default: ctx-max + gen-tokens + 1
  --step-mul F           Multiplicative step. Default: 1
  --step-incr N          Linear step when --step-mul is 1. Default: 2048
  --gen-tokens N         Greedy decode tokens per frontier (alias --tokens, -n).
                         Default: 128

Output:
  --csv FILE             Write CSV there instead of stdout.
  -h, --help             Show this help.
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendKind {
    /// CUDA where a GPU and its driver are present, else the CPU.
    Auto,
    Metal,
    Cuda,
    Cpu,
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Metal => "metal",
            BackendKind::Cuda => "cuda",
            BackendKind::Cpu => "cpu",
        }
    }
}

#[derive(Clone, Debug)]
struct BenchConfig {
    model_path: Option<PathBuf>,
    demo: bool,
    prompt_path: Option<PathBuf>,
    chat_prompt_path: Option<PathBuf>,
    system: String,
    csv_path: Option<PathBuf>,
    backend: BackendKind,
    threads: Option<usize>,
    ctx_start: usize,
    ctx_max: usize,
    ctx_alloc: usize,
    step_incr: usize,
    gen_tokens: usize,
    step_mul: f64,
    warm_weights: bool,
    quality: bool,
    numerics: Numerics,
}

/// Outcome of option parsing that ends the program before benchmarking.
enum Stop {
    /// `-h`: usage on stdout, status 0.
    Help,
    /// Bad command line: message (and usage when asked) on stderr, status 2.
    Usage { msg: String, show_usage: bool },
}

fn usage_err(msg: impl Into<String>) -> Stop {
    Stop::Usage {
        msg: msg.into(),
        show_usage: false,
    }
}

/// ds4.c `parse_int`: a decimal integer in 1..=INT_MAX.
fn parse_int(s: &str, opt: &str) -> Result<usize, Stop> {
    match s.parse::<i64>() {
        Ok(v) if v > 0 && v <= i32::MAX as i64 => Ok(v as usize),
        _ => Err(usage_err(format!("invalid value for {opt}: {s}"))),
    }
}

/// ds4.c `parse_double_arg`: any finite number.
fn parse_double(s: &str, opt: &str) -> Result<f64, Stop> {
    match s.trim_start().parse::<f64>() {
        Ok(v) if v.is_finite() && !s.is_empty() => Ok(v),
        _ => Err(usage_err(format!("invalid value for {opt}: {s}"))),
    }
}

fn parse_backend(s: &str, opt: &str) -> Result<BackendKind, Stop> {
    match s {
        "metal" => Ok(BackendKind::Metal),
        "cuda" => Ok(BackendKind::Cuda),
        "cpu" => Ok(BackendKind::Cpu),
        _ => Err(usage_err(format!(
            "invalid value for {opt}: {s}\nds4-bench: valid backends are: metal, cuda, cpu"
        ))),
    }
}

fn parse_options(args: &[String]) -> Result<BenchConfig, Stop> {
    let mut c = BenchConfig {
        model_path: None,
        demo: false,
        prompt_path: None,
        chat_prompt_path: None,
        system: DEFAULT_SYSTEM.to_string(),
        csv_path: None,
        backend: BackendKind::Auto,
        threads: None,
        ctx_start: 2048,
        ctx_max: 32768,
        ctx_alloc: 0,
        step_incr: 2048,
        gen_tokens: 128,
        step_mul: 1.0,
        warm_weights: false,
        quality: false,
        numerics: Numerics::Official,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let mut value = || -> Result<&str, Stop> {
            i += 1;
            args.get(i)
                .map(String::as_str)
                .ok_or_else(|| usage_err(format!("{arg} requires an argument")))
        };
        match arg {
            "-h" | "--help" => return Err(Stop::Help),
            "-m" | "--model" => c.model_path = Some(PathBuf::from(value()?)),
            "--demo" => c.demo = true,
            "--prompt-file" => c.prompt_path = Some(PathBuf::from(value()?)),
            "--chat-prompt-file" => c.chat_prompt_path = Some(PathBuf::from(value()?)),
            "-sys" | "--system" => c.system = value()?.to_string(),
            "--ctx-start" => c.ctx_start = parse_int(value()?, arg)?,
            "--ctx-max" => c.ctx_max = parse_int(value()?, arg)?,
            "--ctx-alloc" => c.ctx_alloc = parse_int(value()?, arg)?,
            "--step-incr" => c.step_incr = parse_int(value()?, arg)?,
            "--step-mul" => c.step_mul = parse_double(value()?, arg)?,
            "--gen-tokens" | "--tokens" | "-n" => c.gen_tokens = parse_int(value()?, arg)?,
            "--csv" => c.csv_path = Some(PathBuf::from(value()?)),
            "-t" | "--threads" => c.threads = Some(parse_int(value()?, arg)?),
            "--backend" => c.backend = parse_backend(value()?, arg)?,
            "--metal" => c.backend = BackendKind::Metal,
            "--cuda" => c.backend = BackendKind::Cuda,
            "--cpu" => c.backend = BackendKind::Cpu,
            "--quality" => c.quality = true,
            "--warm-weights" => c.warm_weights = true,
            "--numerics" => {
                let v = value()?;
                c.numerics = v.parse().map_err(|_| {
                    usage_err(format!(
                        "invalid value for {arg}: {v} (expected exact or official)"
                    ))
                })?;
            }
            _ => {
                return Err(Stop::Usage {
                    msg: format!("unknown option: {arg}"),
                    show_usage: true,
                })
            }
        }
        i += 1;
    }

    if c.prompt_path.is_some() == c.chat_prompt_path.is_some() {
        return Err(usage_err(
            "specify exactly one of --prompt-file or --chat-prompt-file",
        ));
    }
    if c.demo && c.model_path.is_some() {
        return Err(usage_err("--demo and -m/--model are mutually exclusive"));
    }
    if c.ctx_start > c.ctx_max {
        return Err(usage_err("--ctx-start must be <= --ctx-max"));
    }
    if c.step_mul < 1.0 {
        return Err(usage_err("--step-mul must be >= 1"));
    }
    if c.ctx_max > i32::MAX as usize - c.gen_tokens - 1 {
        return Err(usage_err("requested context is too large"));
    }
    if c.ctx_alloc == 0 {
        c.ctx_alloc = c.ctx_max + c.gen_tokens + 1;
    }
    if c.ctx_alloc <= c.ctx_max + c.gen_tokens {
        return Err(usage_err(
            "--ctx-alloc must be greater than ctx-max + gen-tokens",
        ));
    }
    Ok(c)
}

/// ds4.c `next_frontier`.
fn next_frontier(c: &BenchConfig, cur: usize) -> usize {
    if cur >= c.ctx_max {
        return c.ctx_max;
    }
    let next = if c.step_mul == 1.0 {
        cur.saturating_add(c.step_incr)
    } else {
        let v = (cur as f64 * c.step_mul).ceil();
        let n = if v > i32::MAX as f64 {
            c.ctx_max
        } else {
            v as usize
        };
        if n <= cur {
            cur + 1
        } else {
            n
        }
    };
    next.min(c.ctx_max)
}

/// The frontier schedule: ctx-start, next_frontier(...), ..., ctx-max.
fn frontiers(c: &BenchConfig) -> Vec<usize> {
    let mut v = vec![c.ctx_start];
    let mut f = c.ctx_start;
    while f < c.ctx_max {
        f = next_frontier(c, f);
        v.push(f);
    }
    v
}

/// A loaded model and its tokenizer.
struct Engine<B: Backend> {
    model: Arc<Model<B>>,
    tok: Tokenizer,
    describe: String,
}

fn string_array(f: &GgufFile, key: &str) -> Result<Vec<String>> {
    let v = f
        .get(key)
        .ok_or_else(|| anyhow!("metadata key {key} is missing"))?;
    let (_, items) = v
        .as_array()
        .ok_or_else(|| anyhow!("metadata key {key} is not an array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{key}[{i}] is not a string"))
        })
        .collect()
}

fn token_types(f: &GgufFile) -> Result<Vec<i32>> {
    const KEY: &str = "tokenizer.ggml.token_type";
    let Some(v) = f.get(KEY) else {
        return Ok(Vec::new());
    };
    let (_, items) = v
        .as_array()
        .ok_or_else(|| anyhow!("metadata key {KEY} is not an array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, x)| match *x {
            Value::I32(t) => Ok(t),
            Value::U32(t) => Ok(t as i32),
            _ => Err(anyhow!("{KEY}[{i}] is not an integer")),
        })
        .collect()
}

fn id_key(f: &GgufFile, key: &str, tokens: &[String], name: &str) -> Result<u32> {
    match f.get(key) {
        Some(v) => v
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| anyhow!("metadata key {key} is not a UINT32 token id")),
        None => tokens
            .iter()
            .position(|t| t == name)
            .map(|i| i as u32)
            .ok_or_else(|| anyhow!("metadata key {key} is missing and no token is {name:?}")),
    }
}

/// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` keys (what ds4.c uses).
fn tokenizer_from_gguf(f: &GgufFile) -> Result<Tokenizer> {
    let tokens = string_array(f, "tokenizer.ggml.tokens")?;
    let merges = match f.get("tokenizer.ggml.merges") {
        Some(_) => string_array(f, "tokenizer.ggml.merges")?,
        None => Vec::new(),
    };
    let bos_id = id_key(
        f,
        "tokenizer.ggml.bos_token_id",
        &tokens,
        ds4_chat::render::BOS,
    )?;
    let eos_id = id_key(
        f,
        "tokenizer.ggml.eos_token_id",
        &tokens,
        ds4_chat::render::EOS,
    )?;
    let pad_id = f
        .get("tokenizer.ggml.padding_token_id")
        .and_then(Value::as_u64)
        .and_then(|x| u32::try_from(x).ok());
    let data = TokenizerData {
        token_types: token_types(f)?,
        tokens,
        merges,
        bos_id,
        eos_id,
        pad_id,
    };
    Tokenizer::from_data(&data).map_err(|e| anyhow!("{}", e.message()))
}

/// Read one byte of every page of the mapped file (ds4.c `--warm-weights`).
fn touch_pages(f: &GgufFile) -> u8 {
    let bytes = f.bytes();
    let mut acc = 0u8;
    let mut i = f.data_start() as usize;
    while i < bytes.len() {
        acc ^= bytes[i];
        i += 4096;
    }
    std::hint::black_box(acc)
}

/// The demo model on the CPU.
fn open_demo() -> Result<Engine<Cpu>> {
    let m = ds4_engine::ds4::demo().map_err(|e| anyhow!("{e}"))?;
    let tok = Tokenizer::embedded_v4();
    let ds4_engine::ds4::AnyModel::Cpu(model) = m.inner().clone() else {
        bail!("the demo model is built on the CPU");
    };
    Ok(Engine {
        model,
        tok,
        describe: "embedded demo model (tiny random weights)".to_string(),
    })
}

fn open_engine<B: Backend>(c: &BenchConfig, be: B) -> Result<Engine<B>> {
    let path = c
        .model_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
    let (f, cfg) = ds4_model::gguf::open_validated(&path)?;
    let tok = tokenizer_from_gguf(&f)
        .with_context(|| format!("{}: reading the tokenizer", path.display()))?;
    if tok.vocab_size() != cfg.vocab {
        bail!(
            "{}: the tokenizer has {} tokens but the model vocabulary is {}",
            path.display(),
            tok.vocab_size(),
            cfg.vocab
        );
    }
    if c.warm_weights {
        let t0 = Instant::now();
        f.prefetch()
            .with_context(|| format!("{}: prefetching the mapping", path.display()))?;
        touch_pages(&f);
        eprintln!(
            "ds4-bench: warmed {:.2} GiB of weights in {:.2} s",
            f.file_len() as f64 / (1u64 << 30) as f64,
            t0.elapsed().as_secs_f64()
        );
    }
    let src = GgufSource::new(f);
    let model = Model::bind(be, cfg, &src, None)
        .with_context(|| format!("{}: binding weights", path.display()))?;
    Ok(Engine {
        model: Arc::new(model),
        tok,
        describe: path.display().to_string(),
    })
}

fn special_id(tok: &Tokenizer, s: &str) -> Result<u32> {
    tok.token_id(s)
        .ok_or_else(|| anyhow!("the vocabulary has no token {s:?}"))
}

/// ds4.c `encode_chat_prompt` with thinking off: BOS, system text, `<｜User｜>`,
/// prompt, `<｜Assistant｜>`, `</think>` (texts BPE-encoded without recognising
/// special tokens, each on its own).
fn chat_prompt_tokens(tok: &Tokenizer, system: &str, prompt: &str) -> Result<Vec<u32>> {
    use ds4_chat::render::{ASSISTANT, THINK_END, USER};
    let mut out = vec![tok.bos_id()];
    if !system.is_empty() {
        out.extend(tok.encode_ordinary(system));
    }
    out.push(special_id(tok, USER)?);
    out.extend(tok.encode_ordinary(prompt));
    out.push(special_id(tok, ASSISTANT)?);
    out.push(special_id(tok, THINK_END)?);
    Ok(out)
}

/// Size in bytes of ds4's session payload ("DSV4", spec §2.6) for this state:
/// header, tokens, next-token logits, per-layer counts, raw rows, compressed rows
/// and compressor frontiers, indexer rows and frontiers.
fn payload_bytes<B: Backend>(model: &Model<B>, s: &Session<B>, ctx_alloc: usize) -> u64 {
    payload_size(
        &model.cfg,
        s.pos(),
        &s.compressed_rows(),
        &s.indexer_rows(),
        ctx_alloc,
    )
}

/// [`payload_bytes`] from the token count and per-layer row counts.
fn payload_size(
    c: &ds4_model::Config,
    n: usize,
    comp: &[usize],
    idx: &[usize],
    ctx_alloc: usize,
) -> u64 {
    let raw = n.min(c.window.min(PAYLOAD_RAW_WINDOW).min(ctx_alloc));
    let mut b = 13 * 4 + 4 * n + 4 * c.vocab + 2 * 4 * c.n_layers;
    for il in 0..c.n_layers {
        b += raw * c.head_dim * 4;
        let ratio = c.compress_ratios[il];
        if ratio == 0 {
            continue;
        }
        let k = if ratio == 4 { 2 } else { 1 };
        b += comp[il] * c.head_dim * 4 + 2 * k * c.head_dim * k * ratio * 4;
        if ratio == 4 {
            b += idx[il] * c.idx_dim * 4 + 2 * k * c.idx_dim * k * ratio * 4;
        }
    }
    b as u64
}

/// Extend `s` to `ids[..to]` in chunks of at most PREFILL_CHUNK tokens; returns
/// the next-token logits. `s` must hold a prefix of `ids` (never more than `to`).
fn sync<B: Backend>(
    model: &Model<B>,
    s: &mut Session<B>,
    ids: &[u32],
    to: usize,
) -> Result<Vec<f32>> {
    let from = s.pos();
    if from >= to {
        bail!("session holds {from} tokens, cannot sync to {to}");
    }
    let mut at = from;
    let mut logits = Vec::new();
    while at < to {
        let end = (at + PREFILL_CHUNK).min(to);
        let want = if end == to { Want::Last } else { Want::None };
        logits = model.forward(s, &ids[at..end], want)?;
        at = end;
    }
    Ok(logits)
}

/// Greedy choice: the highest logit other than `exclude` (first one on ties);
/// None when every candidate is NaN.
fn argmax_excluding(logits: &[f32], exclude: u32) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if i == exclude as usize || v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i as u32)
}

fn run(c: &BenchConfig) -> Result<()> {
    let kind = match c.backend {
        BackendKind::Metal => {
            bail!("the metal backend is not available in ds4-rs (use --cuda or --cpu)")
        }
        BackendKind::Cuda => {
            ds4_engine::ds4::require_cuda().map_err(|e| anyhow!("{e}"))?;
            BackendKind::Cuda
        }
        BackendKind::Auto if !c.demo && ds4_engine::ds4::cuda_devices() > 0 => BackendKind::Cuda,
        BackendKind::Auto => BackendKind::Cpu,
        BackendKind::Cpu => BackendKind::Cpu,
    };
    eprintln!(
        "ds4-bench: backend={} threads={} numerics={:?} ctx_alloc={} quality={}",
        kind.name(),
        rayon::current_num_threads(),
        c.numerics,
        c.ctx_alloc,
        c.quality
    );
    if c.demo {
        return run_on(c, open_demo()?);
    }
    match kind {
        BackendKind::Cuda => {
            let be = Cuda::open(0).map_err(|e| anyhow!("--cuda: {e:#}"))?;
            eprintln!("ds4-bench: {}", be.describe());
            run_on(c, open_engine(c, be)?)
        }
        _ => run_on(c, open_engine(c, Cpu)?),
    }
}

fn run_on<B: Backend>(c: &BenchConfig, engine: Engine<B>) -> Result<()> {
    let model = &*engine.model;
    let eos = engine.tok.eos_id();

    let text_path = c
        .prompt_path
        .as_ref()
        .or(c.chat_prompt_path.as_ref())
        .expect("checked by parse_options");
    let text = read_text(text_path)?;
    let prompt = if c.chat_prompt_path.is_some() {
        chat_prompt_tokens(&engine.tok, &c.system, &text)?
    } else {
        engine.tok.encode_ordinary(&text)
    };
    drop(text);
    if prompt.len() < c.ctx_max {
        bail!(
            "prompt has {} tokens, need at least --ctx-max={}",
            prompt.len(),
            c.ctx_max
        );
    }
    eprintln!(
        "ds4-bench: model {} ({} layers, dim {}, vocab {}), prompt {} tokens",
        engine.describe,
        model.cfg.n_layers,
        model.cfg.dim,
        model.cfg.vocab,
        prompt.len()
    );

    let mut out: Box<dyn Write> = match &c.csv_path {
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("failed to open {}", p.display()))?)
        }
        None => Box::new(io::stdout()),
    };
    let write_err = |e: io::Error| anyhow!("writing the CSV: {e}");
    writeln!(
        out,
        "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes"
    )
    .map_err(write_err)?;
    out.flush().map_err(write_err)?;

    let mut live = model.session_ctx(c.numerics, c.ctx_alloc)?;
    let mut previous = 0usize;
    for frontier in frontiers(c) {
        let t0 = Instant::now();
        let logits = sync(model, &mut live, &prompt, frontier)
            .with_context(|| format!("prefill to {frontier} failed"))?;
        let prefill_sec = t0.elapsed().as_secs_f64();
        for (name, n, ms) in model.be.profile_report().into_iter().take(12) {
            eprintln!(
                "ds4-bench: prof prefill {frontier}: {name:<18} {n:>7} launches {ms:>9.2} ms"
            );
        }
        let prefill_tokens = frontier - previous;
        let kv_bytes = payload_bytes(model, &live, c.ctx_alloc);

        // "Snapshot" (untimed): a deep copy of the live state. After the last
        // frontier the live session is not needed again, so it decodes itself.
        let mut copy;
        let (dec, mut next) = if frontier >= c.ctx_max {
            (&mut live, logits)
        } else {
            copy = live.try_clone(&model.be)?;
            (&mut copy, logits)
        };

        let t1 = Instant::now();
        for _ in 0..c.gen_tokens {
            if dec.pos() + 1 >= c.ctx_alloc {
                bail!("generation would exceed allocated context at frontier {frontier}");
            }
            let token = argmax_excluding(&next, eos)
                .ok_or_else(|| anyhow!("failed to choose non-EOS token at frontier {frontier}"))?;
            next = model
                .forward(dec, &[token], Want::Last)
                .with_context(|| format!("decode at frontier {frontier} failed"))?;
        }
        model.be.sync()?;
        let gen_sec = t1.elapsed().as_secs_f64();
        // "Restore": the copy is dropped at the end of this iteration; `live`
        // still stands at the frontier.

        let tps = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        writeln!(
            out,
            "{},{},{:.2},{},{:.2},{}",
            frontier,
            prefill_tokens,
            tps(prefill_tokens, prefill_sec),
            c.gen_tokens,
            tps(c.gen_tokens, gen_sec),
            kv_bytes
        )
        .map_err(write_err)?;
        out.flush().map_err(write_err)?;
        previous = frontier;
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to open {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{}: not valid UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_options(&args) {
        Ok(c) => c,
        Err(Stop::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(Stop::Usage { msg, show_usage }) => {
            eprintln!("ds4-bench: {msg}");
            if show_usage {
                eprint!("{USAGE}");
            }
            return ExitCode::from(2);
        }
    };
    if let Some(t) = cfg.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
        {
            eprintln!("ds4-bench: cannot set {t} threads: {e}");
            return ExitCode::from(1);
        }
    }
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ds4-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> BenchConfig {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse_options(&v) {
            Ok(c) => c,
            Err(_) => panic!("options {args:?} rejected"),
        }
    }

    #[test]
    fn defaults_are_ds4c() {
        let c = cfg(&["--prompt-file", "x"]);
        assert_eq!(
            (c.ctx_start, c.ctx_max, c.step_incr, c.gen_tokens),
            (2048, 32768, 2048, 128)
        );
        assert_eq!(c.ctx_alloc, 32768 + 128 + 1);
        assert_eq!(c.system, "You are a helpful assistant.");
        assert_eq!(c.step_mul, 1.0);
        assert_eq!(c.numerics, Numerics::Official);
        let f = frontiers(&c);
        assert_eq!(f.len(), 16);
        assert!(f.iter().enumerate().all(|(i, &x)| x == 2048 * (i + 1)));
    }

    #[test]
    fn multiplicative_schedule() {
        // By hand: 100, 150, 225, ceil(337.5) = 338, min(507, 400) = 400.
        let c = cfg(&[
            "--prompt-file",
            "x",
            "--ctx-start",
            "100",
            "--ctx-max",
            "400",
            "--step-mul",
            "1.5",
        ]);
        assert_eq!(frontiers(&c), vec![100, 150, 225, 338, 400]);
        // A factor too small to move an integer frontier still advances by one.
        let c = cfg(&[
            "--prompt-file",
            "x",
            "--ctx-start",
            "5",
            "--ctx-max",
            "8",
            "--step-mul",
            "1.000000000000001",
        ]);
        assert_eq!(frontiers(&c), vec![5, 6, 7, 8]);
        // ctx-start = ctx-max: one row.
        let c = cfg(&["--prompt-file", "x", "--ctx-start", "64", "--ctx-max", "64"]);
        assert_eq!(frontiers(&c), vec![64]);
    }

    /// Spec §2.6 worked check (the `kvcache_bytes` column of ds4's shipped
    /// `speed-bench/m4_max.csv`): 52 184 460 bytes at N = 2048 for the published
    /// shape, plus 28 188 672 bytes per further 2048 tokens.
    #[test]
    fn payload_size_matches_ds4_bench_csv() {
        let c = ds4_model::Config::flash();
        let at = |n: usize| {
            let rows = |div: usize| -> Vec<usize> {
                c.compress_ratios
                    .iter()
                    .map(|&r| {
                        if r == 0 || (div == 4 && r != 4) {
                            0
                        } else {
                            n / r
                        }
                    })
                    .collect()
            };
            payload_size(&c, n, &rows(0), &rows(4), 32768 + 128 + 1)
        };
        assert_eq!(at(2048), 52_184_460);
        for k in 1..16 {
            assert_eq!(at(2048 * (k + 1)) - at(2048 * k), 28_188_672);
        }
    }

    #[test]
    fn argmax_skips_excluded_and_nan() {
        assert_eq!(argmax_excluding(&[1.0, 5.0, 3.0], 1), Some(2));
        assert_eq!(argmax_excluding(&[f32::NAN, 2.0, 2.0], 9), Some(1));
        assert_eq!(argmax_excluding(&[f32::NAN, 7.0], 1), None);
    }
}
