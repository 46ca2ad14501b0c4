//! Model loading and generation through the ds4-engine worker (the same
//! FIFO worker, sampler, stop handling and live-prefix reuse as the server).

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use ds4_engine::ds4::{Ds4Model, Ds4Tokenizer, LoadOptions};
use ds4_engine::{Engine, EngineConfig, Event, Finish, GenRequest, SamplingParams, Usage};

use crate::printer::Printer;

/// A loaded model, shareable between successive engines (`/ctx N` starts a
/// new engine on the same weights).
#[derive(Clone)]
pub struct Loaded {
    pub model: Arc<Ds4Model>,
    pub path: Option<PathBuf>,
    pub is_demo: bool,
}

/// Runs `f` on a thread while a spinner with the elapsed time is shown on
/// stderr (only when stderr is a terminal).
pub fn with_spinner<T: Send>(msg: &str, f: impl FnOnce() -> T + Send) -> T {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(msg.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    let out = std::thread::scope(|s| s.spawn(f).join());
    bar.finish_and_clear();
    match out {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Loads a model file (validated, weights mapped read-only).
pub fn load_file(
    path: &Path,
    numerics: ds4_model::Numerics,
    backend: ds4_engine::ds4::BackendChoice,
) -> Result<Loaded> {
    let t0 = Instant::now();
    let opts = LoadOptions {
        numerics,
        mtp: None,
        backend,
    };
    let msg = format!("ds4: loading {}", path.display());
    let model =
        with_spinner(&msg, || ds4_engine::ds4::load(path, &opts)).map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "ds4: loaded {} in {:.2} s",
        path.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(Loaded {
        model: Arc::new(model),
        path: Some(path.to_path_buf()),
        is_demo: false,
    })
}

/// Builds the embedded demo model.
pub fn load_demo() -> Result<Loaded> {
    let model = with_spinner(
        "ds4: building the embedded demo model",
        ds4_engine::ds4::demo,
    )
    .map_err(|e| anyhow!("{e}"))?;
    Ok(Loaded {
        model: Arc::new(model),
        path: None,
        is_demo: true,
    })
}

/// `--warm-weights`: reads the whole file once so its pages are resident,
/// with a progress bar.
pub fn warm_file(path: &Path) -> Result<()> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "ds4: warming weights {bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Starts an engine with a session of `ctx` tokens.
pub fn start_engine(loaded: &Loaded, ctx: usize) -> Result<Engine> {
    let cfg = EngineConfig {
        ctx,
        prefill_chunk: 512,
        ..EngineConfig::default()
    };
    Engine::start(
        Box::new(loaded.model.as_ref().clone()),
        Arc::new(Ds4Tokenizer::embedded()),
        cfg,
    )
    .map_err(|e| anyhow!("starting the engine: {e}"))
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEnd {
    /// Generation ran (and ended for `finish`).
    Done { finish: Finish, usage: Usage },
    /// Cancelled before the first token (during prefill or queueing).
    CancelledBeforeStart,
    /// The prompt could not be processed.
    Failed(String),
}

/// Result of one generation.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The generated text (concatenated engine text events).
    pub text: String,
    pub end: TurnEnd,
    pub prefill_secs: f64,
    pub gen_secs: f64,
    pub prefill_tokens: usize,
    /// Prompt tokens reused from the live session.
    pub cached_tokens: usize,
    /// Effective prompt length.
    pub prompt_tokens: usize,
}

/// Prefill progress on stderr, ds4's `processing N input tokens: a/N (p%)`.
struct Progress {
    tty: bool,
    shown: bool,
}

impl Progress {
    fn update(&mut self, done: usize, total: usize, base: usize) {
        let n = total.saturating_sub(base);
        if n == 0 {
            return;
        }
        let d = done.saturating_sub(base).min(n);
        let pct = 100.0 * d as f64 / n as f64;
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(
                e,
                "\rprocessing {n} input tokens: {d}/{n} ({pct:.1}%)\x1b[K"
            );
            if d >= n {
                let _ = writeln!(e);
            }
        } else {
            let _ = writeln!(e, "processing {n} input tokens: {d}/{n} ({pct:.1}%)");
        }
        self.shown = d < n;
        let _ = e.flush();
    }

    fn end(&mut self) {
        if self.tty && self.shown {
            eprintln!();
        }
        self.shown = false;
    }
}

/// Submits one job and streams its text into `printer`. When `interrupt`
/// becomes true the job is cancelled (Ctrl+C in interactive mode).
pub fn run_turn<W: Write>(
    engine: &Engine,
    prompt_text: String,
    prompt_tokens: Vec<u32>,
    params: SamplingParams,
    max_tokens: usize,
    printer: &mut Printer<W>,
    interrupt: Option<&Arc<AtomicBool>>,
) -> Result<Turn> {
    let t0 = Instant::now();
    let n_prompt = prompt_tokens.len();
    let mut turn = Turn {
        text: String::new(),
        end: TurnEnd::CancelledBeforeStart,
        prefill_secs: 0.0,
        gen_secs: 0.0,
        prefill_tokens: n_prompt,
        cached_tokens: 0,
        prompt_tokens: n_prompt,
    };
    let mut handle = match engine.submit(GenRequest {
        prompt_text,
        prompt_tokens,
        params,
        max_tokens,
        stop: Vec::new(),
        control: None,
        visible: None,
    }) {
        Ok(h) => h,
        Err(e) => {
            turn.end = TurnEnd::Failed(e.to_string());
            return Ok(turn);
        }
    };
    // A watcher turns the interrupt flag into a job cancellation.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = interrupt.map(|flag| {
        let flag = flag.clone();
        let done = done.clone();
        let cancel = handle.cancel_flag();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if flag.load(Ordering::SeqCst) {
                    cancel.cancel();
                    break;
                }
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    });
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        shown: false,
    };
    let mut started: Option<Instant> = None;
    let mut base = 0usize;
    let result: Result<()> = loop {
        let Some(ev) = handle.events.blocking_recv() else {
            // The worker dropped the job: cancelled before generation.
            progress.end();
            break Ok(());
        };
        match ev {
            Event::Prefill { done, total } => progress.update(done, total, base),
            Event::Started {
                prompt_tokens,
                cached_tokens,
                ..
            } => {
                progress.end();
                base = cached_tokens;
                turn.prefill_tokens = prompt_tokens - cached_tokens;
                turn.cached_tokens = cached_tokens;
                turn.prompt_tokens = prompt_tokens;
                turn.prefill_secs = t0.elapsed().as_secs_f64();
                started = Some(Instant::now());
            }
            Event::Text(s) => {
                if let Err(e) = printer.push(s.as_bytes()) {
                    break Err(anyhow!(e).context("writing the output"));
                }
                turn.text.push_str(&s);
            }
            Event::Done { finish, usage } => {
                turn.end = TurnEnd::Done { finish, usage };
                break Ok(());
            }
            Event::Failed(e) => {
                progress.end();
                turn.end = TurnEnd::Failed(e.to_string());
                break Ok(());
            }
        }
    };
    done.store(true, Ordering::SeqCst);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    if let Some(s) = started {
        turn.gen_secs = s.elapsed().as_secs_f64();
    }
    let flushed = printer.finish();
    result?;
    flushed.context("writing the output")?;
    Ok(turn)
}

/// `ds4: prefill: X t/s, generation: Y t/s`.
pub fn rates_line(turn: &Turn) -> String {
    let gen = match &turn.end {
        TurnEnd::Done { usage, .. } => usage.completion_tokens,
        _ => 0,
    };
    let pre = if turn.prefill_secs > 0.0 {
        turn.prefill_tokens as f64 / turn.prefill_secs
    } else {
        0.0
    };
    let g = if turn.gen_secs > 0.0 {
        gen as f64 / turn.gen_secs
    } else {
        0.0
    };
    format!("ds4: prefill: {pre:.2} t/s, generation: {g:.2} t/s")
}
