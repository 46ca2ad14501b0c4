//! `ds4-server`: serve DeepSeek V4 Flash over OpenAI / Anthropic compatible HTTP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;

use ds4_engine::ds4::{demo, load, BackendChoice, Ds4Tokenizer, LoadOptions};
use ds4_engine::{Engine, EngineConfig, Model};
use ds4_server::{loading_gate, router, AppState, ServerConfig, ALIAS_TARGETS};

#[derive(Parser, Debug)]
#[command(
    name = "ds4-server",
    version,
    about = "OpenAI / Anthropic compatible server for DeepSeek V4 Flash"
)]
struct Args {
    /// Model GGUF file. Without it the server runs an embedded demo model
    /// (tiny synthetic weights, real tokenizer) whose output is noise.
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    model: Option<PathBuf>,
    /// Context size in tokens (allocated at startup).
    #[arg(short = 'c', long = "ctx", default_value_t = 32768, value_parser = clap::value_parser!(u64).range(1..))]
    ctx: u64,
    /// Default max output tokens when the client gives none.
    #[arg(short = 'n', long = "tokens", default_value_t = 393216, value_parser = clap::value_parser!(u64).range(1..))]
    tokens: u64,
    /// Bind address (IPv4 or IPv6 literal, or `localhost`).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Send CORS headers (Access-Control-Allow-Origin: *) on every response.
    #[arg(long)]
    cors: bool,
    /// Append a human-readable trace of every request to FILE (truncated at start).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Require this key as `Authorization: Bearer KEY` or `x-api-key: KEY`.
    #[arg(long = "api-key", value_name = "KEY")]
    api_key: Option<String>,
    /// Accept NAME as a model id: NAME[=deepseek-chat|deepseek-reasoner|deepseek-v4-flash]
    /// (default target deepseek-v4-flash). Repeatable.
    #[arg(long = "alias", value_name = "NAME[=TARGET]")]
    alias: Vec<String>,
    /// Maximum request body size in MiB.
    #[arg(long = "max-body-mb", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_body_mb: u64,
    /// Maximum number of messages (or Responses input items) per request.
    #[arg(long = "max-messages", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_messages: u64,
    /// Prefill chunk size in tokens.
    #[arg(long = "prefill-chunk", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    prefill_chunk: u64,
    /// Sequences decoded together: KV session slots, each of --ctx tokens;
    /// requests beyond them wait in the queue.
    #[arg(long = "batched-session", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    batched_session: u64,
    /// Requests that may wait for a session slot (0 = no limit); past it OpenAI routes
    /// answer 429 and Anthropic 529, with Retry-After.
    #[arg(long = "max-queue", default_value_t = 0)]
    max_queue: u64,
    /// Do not replay the exact sampled DSML of earlier tool calls.
    #[arg(long = "disable-exact-dsml-tool-replay")]
    disable_exact_dsml_tool_replay: bool,
    /// Run on the CUDA GPU (fails with a clear message when there is none).
    #[arg(long, conflicts_with_all = ["cpu", "backend"])]
    cuda: bool,
    /// Run on the CPU.
    #[arg(long, conflicts_with = "backend")]
    cpu: bool,
    /// Backend by name: cpu or cuda (default: cuda where a GPU is present).
    #[arg(long, value_name = "NAME", value_parser = ["cpu", "cuda"])]
    backend: Option<String>,
    /// Tool memory size (ids).
    #[arg(long = "tool-memory-max-ids", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    tool_memory_max_ids: u64,
}

macro_rules! log {
    ($($t:tt)*) => { ds4_server::log_line(&format!($($t)*)) };
}

fn parse_aliases(list: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for a in list {
        let (name, target) = match a.split_once('=') {
            Some((n, t)) => (n.trim(), t.trim()),
            None => (a.trim(), "deepseek-v4-flash"),
        };
        if name.is_empty() {
            return Err(format!("--alias {a:?}: empty name"));
        }
        if !ALIAS_TARGETS.contains(&target) {
            return Err(format!(
                "--alias {a:?}: target must be one of {}",
                ALIAS_TARGETS.join(", ")
            ));
        }
        out.push((name.to_string(), target.to_string()));
    }
    Ok(out)
}

fn parse_host(h: &str) -> Result<IpAddr, String> {
    if h == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    h.parse::<IpAddr>()
        .map_err(|_| format!("--host {h:?} is not an IP address"))
}

fn backend_choice(a: &Args) -> BackendChoice {
    if a.cuda || a.backend.as_deref() == Some("cuda") {
        BackendChoice::Cuda
    } else if a.cpu || a.backend.as_deref() == Some("cpu") {
        BackendChoice::Cpu
    } else {
        BackendChoice::Auto
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        log!("ds4-server: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let aliases = parse_aliases(&args.alias)?;
    let ip = parse_host(&args.host)?;
    let ctx = usize::try_from(args.ctx).map_err(|_| "--ctx too large".to_string())?;
    if backend_choice(&args) == BackendChoice::Cuda {
        ds4_engine::ds4::require_cuda().map_err(|e| e.to_string())?;
    }
    // Take the port first: a clash is reported now, not after a load of minutes, and
    // meanwhile every route answers 503 with /health saying "loading".
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let addr = SocketAddr::new(ip, args.port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    log!("ds4-server: listening on http://{bound} (loading the model)");
    let ready: Arc<OnceLock<axum::Router>> = Arc::new(OnceLock::new());
    let live: Arc<OnceLock<Engine>> = Arc::new(OnceLock::new());
    let gate = loading_gate(ready.clone(), args.cors);
    let live_sd = live.clone();
    let server = rt.spawn(async move {
        let shutdown = async move {
            wait_signal().await;
            let Some(eng) = live_sd.get().cloned() else {
                log!("ds4-server: signal while loading the model, exiting");
                std::process::exit(130);
            };
            log!("ds4-server: shutting down (a second signal exits at once)");
            tokio::spawn(async {
                wait_signal().await;
                std::process::exit(130);
            });
            // Fail queued jobs and stop the running one; responses finish with `error`.
            let _ = tokio::task::spawn_blocking(move || eng.shutdown()).await;
        };
        axum::serve(listener, gate)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| format!("server error: {e}"))
    });
    let tokenizer = Arc::new(Ds4Tokenizer::embedded());
    let (model, demo): (Box<dyn Model>, bool) = match &args.model {
        Some(p) => (
            Box::new(
                load(
                    p,
                    &LoadOptions {
                        backend: backend_choice(&args),
                        ..LoadOptions::default()
                    },
                )
                .map_err(|e| e.to_string())?,
            ),
            false,
        ),
        None => {
            let t = std::time::Instant::now();
            let m = demo().map_err(|e| e.to_string())?;
            log!(
                "ds4-server: built the demo model in {:.2} s",
                t.elapsed().as_secs_f64()
            );
            (Box::new(m), true)
        }
    };
    if demo {
        for line in [
            "************************************************************************",
            "* DEMO MODEL: no -m given, serving tiny SYNTHETIC weights.             *",
            "* The tokenizer is real but every generated token is NOISE.            *",
            "* Start with -m ds4flash.gguf to serve DeepSeek V4 Flash.              *",
            "************************************************************************",
        ] {
            log!("{line}");
        }
    }
    log!(
        "ds4-server: model {} ctx={} vocab={}",
        model.describe(),
        ctx,
        model.vocab_size()
    );
    let engine = Engine::start(
        model,
        tokenizer,
        EngineConfig {
            ctx,
            prefill_chunk: usize::try_from(args.prefill_chunk).unwrap_or(2048),
            slots: usize::try_from(args.batched_session).unwrap_or(1),
            max_queue: usize::try_from(args.max_queue).unwrap_or(usize::MAX),
            ..EngineConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let cfg = ServerConfig {
        ctx,
        default_max_tokens: usize::try_from(args.tokens).unwrap_or(usize::MAX),
        cors: args.cors,
        api_key: args.api_key.clone(),
        aliases,
        max_body_bytes: usize::try_from(args.max_body_mb.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX),
        max_messages: usize::try_from(args.max_messages).unwrap_or(usize::MAX),
        keepalive_interval: Duration::from_secs(5),
        trace: args.trace.clone(),
        demo,
        tool_memory_max_ids: if args.disable_exact_dsml_tool_replay {
            0
        } else {
            usize::try_from(args.tool_memory_max_ids).unwrap_or(usize::MAX)
        },
        log_requests: true,
    };
    let state = AppState::new(engine.clone(), cfg).map_err(|e| format!("--trace: {e}"))?;
    let app = router(state);
    let _ = live.set(engine);
    let _ = ready.set(app);
    log!("ds4-server: ready on http://{bound}");
    rt.block_on(server)
        .map_err(|e| format!("server task: {e}"))??;
    Ok(())
}

async fn wait_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
