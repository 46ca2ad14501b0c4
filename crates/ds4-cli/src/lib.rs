//! The `ds4` command line (spec server-and-cli.md §3, §6): one-shot
//! generation, interactive chat, diagnostics dumps and the model downloader.

pub mod args;
pub mod chat;
pub mod download;
pub mod dump;
pub mod gen;
pub mod memcheck;
pub mod printer;
pub mod repl;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use ds4_chat::{ThinkMode, THINK_MAX_MIN_CONTEXT};
use ds4_engine::{EngineError, Finish, SamplingParams};
use ds4_tokenizer::Tokenizer;

use args::{BackendName, Cli, DownloadCli, ThinkFlag};

/// A failure with its exit status (2 = usage, 1 = runtime).
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub error: anyhow::Error,
}

fn usage_err(e: impl Into<anyhow::Error>) -> Exit {
    Exit {
        code: 2,
        error: e.into(),
    }
}

fn runtime(e: impl Into<anyhow::Error>) -> Exit {
    Exit {
        code: 1,
        error: e.into(),
    }
}

/// Entry point: returns the process exit status.
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let result = if args.get(1).is_some_and(|a| a == "download") {
        run_download(&args[2..])
    } else {
        match Cli::try_parse_from(args::normalize_args(args)) {
            Ok(cli) => run(cli),
            Err(e) => {
                let _ = e.print();
                return e.exit_code();
            }
        }
    };
    match result {
        Ok(()) => 0,
        Err(Exit { code, error }) => {
            eprintln!("ds4: {error:#}");
            code
        }
    }
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn run_download(rest: &[OsString]) -> Result<(), Exit> {
    let mut argv = vec![OsString::from("ds4 download")];
    argv.extend(rest.iter().cloned());
    let d = match DownloadCli::try_parse_from(argv) {
        Ok(d) => d,
        Err(e) => {
            let _ = e.print();
            // download_model.sh: help exits 0, any usage error 1.
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let target: download::Target = d.target.parse().map_err(usage_err)?;
    let token = download::resolve_token(d.token.as_deref(), &env_var);
    if let Some((_, src)) = &token {
        let from = match src {
            download::TokenSource::Flag => "--token".to_string(),
            download::TokenSource::Env => "HF_TOKEN".to_string(),
            download::TokenSource::Cache(p) => p.display().to_string(),
        };
        eprintln!("ds4: using the Hugging Face token from {from}");
    }
    let cwd = std::env::current_dir().map_err(runtime)?;
    let out_dir = match env_var("DS4_GGUF_DIR").filter(|s| !s.is_empty()) {
        Some(d) => cwd.join(d),
        None => cwd.join("gguf"),
    };
    let opts = download::DownloadOptions {
        target,
        token: token.map(|(t, _)| t),
        out_dir,
        link_dir: cwd,
        base_url: env_var("DS4_HF_BASE_URL")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| download::DEFAULT_BASE_URL.to_string()),
        retries: d.retries,
        retry_delay: std::time::Duration::from_secs(2),
        progress: true,
    };
    download::download(&opts).map_err(runtime)?;
    eprintln!();
    eprintln!("Done.");
    Ok(())
}

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChoice {
    File(PathBuf),
    Demo,
}

/// `-m FILE` if given; else `./ds4flash.gguf` if it exists; else the demo model.
pub fn choose_model(explicit: Option<&Path>) -> Result<ModelChoice> {
    if let Some(p) = explicit {
        if !p.exists() {
            bail!("cannot open model {}: no such file", p.display());
        }
        return Ok(ModelChoice::File(p.to_path_buf()));
    }
    let def = Path::new(download::MODEL_LINK);
    if def.exists() {
        return Ok(ModelChoice::File(def.to_path_buf()));
    }
    if let Ok(target) = std::fs::read_link(def) {
        bail!(
            "./{} is a broken link to {} (re-run ds4 download, or pass -m FILE)",
            download::MODEL_LINK,
            target.display()
        );
    }
    Ok(ModelChoice::Demo)
}

pub const DEMO_NOTICE: &str = "\
ds4: ************************************************************************
ds4: NO MODEL: no -m FILE given and ./ds4flash.gguf does not exist.
ds4: Using the EMBEDDED DEMO MODEL: tiny RANDOM weights with the real
ds4: tokenizer. Its output is noise. Get a real model with
ds4:     ds4 download q2-imatrix      (or q4-imatrix, see ds4 download --help)
ds4: ************************************************************************";

fn think_mode(cli: &Cli) -> ThinkMode {
    let requested = match cli.think_flag() {
        ThinkFlag::Off => ThinkMode::Off,
        ThinkFlag::High => ThinkMode::High,
        ThinkFlag::Max => ThinkMode::Max,
    };
    let eff = requested.for_context(cli.ctx as usize);
    if requested == ThinkMode::Max && eff != ThinkMode::Max {
        eprintln!(
            "ds4: warning: --think-max needs --ctx >= {THINK_MAX_MIN_CONTEXT}; using normal thinking"
        );
    }
    eff
}

fn setup_threads(cli: &Cli) -> Result<()> {
    let n = match cli.threads {
        Some(n) => n as usize,
        None => match env_var("DS4_THREADS") {
            Some(s) => match s.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => bail!("invalid DS4_THREADS value {s:?} (expected a positive integer)"),
            },
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(12),
        },
    };
    // The global pool may already exist (e.g. in-process tests): keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("ds4-cpu-{i}"))
        .build_global();
    Ok(())
}

fn prompt_text(cli: &Cli) -> Result<Option<String>> {
    if let Some(p) = &cli.prompt {
        return Ok(Some(p.clone()));
    }
    if let Some(f) = &cli.prompt_file {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("{} is not valid UTF-8 text", f.display()))?;
        return Ok(Some(text));
    }
    Ok(None)
}

/// ds4.c's host memory check before loading. On the CUDA backend the weights
/// and context go to device memory, which the CUDA loader checks itself
/// (with the numbers) before copying anything, so host RAM is not checked.
fn memory_check(cli: &Cli, path: &Path, backend: ds4_engine::ds4::BackendChoice) -> Result<()> {
    use ds4_engine::ds4::BackendChoice;
    let est = memcheck::estimate(path, cli.ctx)?;
    let gpu = match backend {
        BackendChoice::Cuda => true,
        BackendChoice::Auto => ds4_engine::ds4::cuda_devices() > 0,
        BackendChoice::Cpu => false,
    };
    eprintln!(
        "{}",
        memcheck::describe_context(&est, if gpu { "cuda" } else { "cpu" })
    );
    if cli.no_mem_check || gpu {
        return Ok(());
    }
    match memcheck::read_available() {
        Some(avail) => {
            eprintln!("{}", memcheck::describe_check(&est, avail));
            memcheck::check(&est, avail)
        }
        None => {
            eprintln!("ds4: warning: available memory unknown; skipping the memory check");
            Ok(())
        }
    }
}

fn print_summary(loaded: &gen::Loaded) -> Result<()> {
    use ds4_engine::Model;
    let mut out = std::io::stdout().lock();
    writeln!(out, "model: {}", loaded.model.describe())?;
    let cfg = &loaded.model.inner().cfg();
    if let Some(p) = &loaded.path {
        let f = ds4_gguf::GgufFile::open(p).with_context(|| format!("opening {}", p.display()))?;
        let weights: u64 = f.tensors().iter().map(|t| t.n_bytes).sum();
        writeln!(out, "file: {} ({} bytes)", p.display(), f.file_len())?;
        writeln!(out, "tensors: {} ({} bytes)", f.tensors().len(), weights)?;
        let mut types: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
        for t in f.tensors() {
            let name = t
                .ggml_type
                .map(|g| g.to_string())
                .unwrap_or_else(|| "unknown".to_string());
            let e = types.entry(name).or_default();
            e.0 += 1;
            e.1 += t.n_bytes;
        }
        for (ty, (n, b)) in types {
            writeln!(out, "  {ty:>8}: {n} tensors, {b} bytes")?;
        }
    }
    writeln!(
        out,
        "layers: {}  dim: {}  heads: {} x {}  experts: {} ({} used)  vocab: {}",
        cfg.n_layers,
        cfg.dim,
        cfg.n_heads,
        cfg.head_dim,
        cfg.n_experts,
        cfg.n_experts_used,
        cfg.vocab
    )?;
    writeln!(
        out,
        "window: {}  compress ratios: {:?}  mtp: {}",
        cfg.window,
        cfg.compress_ratios,
        loaded.model.inner().has_mtp()
    )?;
    Ok(())
}

fn run(cli: Cli) -> Result<(), Exit> {
    if cli.server {
        return Err(usage_err(anyhow!("use ds4-server for the HTTP server")));
    }
    let ctx = cli.ctx as usize;
    // Diagnostics that need no model.
    if let Some(req) = &cli.dump_prompt {
        let text = dump::dump_prompt(req, ctx).map_err(runtime)?;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(runtime)?;
        return Ok(());
    }
    let prompt = prompt_text(&cli).map_err(usage_err)?;
    let tok = Tokenizer::shared_v4();
    if cli.dump_tokens {
        let Some(p) = &prompt else {
            return Err(usage_err(anyhow!(
                "--dump-tokens requires -p or --prompt-file"
            )));
        };
        let mut out = std::io::stdout().lock();
        dump::dump_tokens(tok, p, &mut out)
            .and_then(|_| out.flush())
            .map_err(runtime)?;
        return Ok(());
    }
    let backend = match cli.backend().map_err(|e| usage_err(anyhow!(e)))? {
        BackendName::Cpu => ds4_engine::ds4::BackendChoice::Cpu,
        BackendName::Auto => ds4_engine::ds4::BackendChoice::Auto,
        BackendName::Cuda => {
            ds4_engine::ds4::require_cuda().map_err(|e| runtime(anyhow!("{e}")))?;
            ds4_engine::ds4::BackendChoice::Cuda
        }
        BackendName::Metal => {
            return Err(runtime(anyhow!(
                "the metal backend is not available in ds4-rs (use --cuda or --cpu)"
            )))
        }
    };
    setup_threads(&cli).map_err(usage_err)?;
    let choice = choose_model(cli.model.as_deref()).map_err(runtime)?;
    let numerics: ds4_model::Numerics = cli.numerics.map(Into::into).unwrap_or_default();

    if let Some(out) = &cli.dump_logits {
        let ModelChoice::File(path) = &choice else {
            return Err(runtime(anyhow!(
                "--dump-logits needs a model file (-m FILE)"
            )));
        };
        let ids_file = cli
            .prompt_tokens
            .as_ref()
            .ok_or_else(|| usage_err(anyhow!("--dump-logits requires --prompt-tokens FILE")))?;
        let text = std::fs::read_to_string(ids_file)
            .with_context(|| format!("reading {}", ids_file.display()))
            .map_err(runtime)?;
        let ids = dump::parse_ids(&text, tok.vocab_size())
            .with_context(|| format!("{}", ids_file.display()))
            .map_err(runtime)?;
        memory_check(&cli, path, backend).map_err(runtime)?;
        dump::dump_logits(path, &ids, numerics, out).map_err(runtime)?;
        eprintln!(
            "ds4: wrote logits of {} positions to {}",
            ids.len(),
            out.display()
        );
        return Ok(());
    }
    if cli.prompt_tokens.is_some() {
        return Err(usage_err(anyhow!(
            "--prompt-tokens is only used with --dump-logits"
        )));
    }

    let loaded = match &choice {
        ModelChoice::File(path) => {
            memory_check(&cli, path, backend).map_err(runtime)?;
            let l = gen::load_file(path, numerics, backend).map_err(runtime)?;
            if cli.warm_weights {
                gen::warm_file(path).map_err(runtime)?;
            }
            l
        }
        ModelChoice::Demo => {
            eprintln!("{DEMO_NOTICE}");
            if cli.tokens.is_none() {
                eprintln!(
                    "ds4: On the demo model each answer stops after {} tokens (-n N to change).",
                    args::DEMO_TOKENS
                );
            }
            gen::load_demo().map_err(runtime)?
        }
    };

    if cli.inspect {
        return print_summary(&loaded).map_err(runtime);
    }

    let n_tokens = cli.max_tokens(loaded.is_demo) as usize;
    let mode = think_mode(&cli);
    let params = SamplingParams {
        temperature: cli.temp,
        top_p: cli.top_p,
        top_k: cli.top_k,
        min_p: cli.min_p,
        seed: cli.seed,
    };

    if let Some(f) = &cli.perplexity_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))
            .map_err(runtime)?;
        let r =
            dump::perplexity(loaded.model.as_ref(), tok, &text, ctx, n_tokens).map_err(runtime)?;
        println!("{}", r.line());
        return Ok(());
    }

    if let Some(out) = &cli.dump_logprobs {
        let Some(p) = &prompt else {
            return Err(usage_err(anyhow!(
                "--dump-logprobs requires -p or --prompt-file"
            )));
        };
        let (_, ids, _) = chat::one_shot_prompt(tok, &cli.system, p, mode);
        let steps = dump::dump_logprobs(
            loaded.model.as_ref(),
            tok,
            &ids,
            ctx,
            n_tokens,
            cli.logprobs_top_k as usize,
            out,
        )
        .map_err(runtime)?;
        eprintln!("ds4: wrote {steps} steps to {}", out.display());
        return Ok(());
    }

    match prompt {
        Some(p) => one_shot(&cli, &loaded, &p, mode, params, n_tokens),
        None => repl::run(
            loaded,
            repl::ReplConfig {
                system: cli.system.clone(),
                mode,
                ctx,
                max_tokens: n_tokens,
                params,
                history: repl::default_history(),
            },
        )
        .map_err(runtime),
    }
}

fn one_shot(
    cli: &Cli,
    loaded: &gen::Loaded,
    prompt: &str,
    mode: ThinkMode,
    params: SamplingParams,
    n_tokens: usize,
) -> Result<(), Exit> {
    let tok = Tokenizer::shared_v4();
    let ctx = cli.ctx as usize;
    let (text, ids, thinking) = chat::one_shot_prompt(tok, &cli.system, prompt, mode);
    if ids.len() + 1 >= ctx {
        return Err(runtime(EngineError::ContextOverflow {
            n_prompt: ids.len(),
            n_ctx: ctx,
        }));
    }
    let max_tokens = n_tokens.min(ctx - ids.len() - 1);
    let engine = gen::start_engine(loaded, ctx).map_err(runtime)?;
    let stdout = std::io::stdout();
    let color = stdout.is_terminal();
    let mut printer = printer::Printer::new(stdout.lock(), thinking, color);
    let turn = gen::run_turn(&engine, text, ids, params, max_tokens, &mut printer, None);
    drop(printer);
    engine.shutdown();
    let turn = turn.map_err(runtime)?;
    match &turn.end {
        gen::TurnEnd::Failed(msg) => {
            return Err(runtime(anyhow!("prompt processing failed: {msg}")))
        }
        gen::TurnEnd::CancelledBeforeStart => return Err(runtime(anyhow!("generation cancelled"))),
        gen::TurnEnd::Done {
            finish: Finish::Error(e),
            ..
        } => return Err(runtime(anyhow!("decode failed: {e}"))),
        gen::TurnEnd::Done { .. } => {}
    }
    eprintln!("{}", gen::rates_line(&turn));
    Ok(())
}
