//! The worker: one thread owns the model and the live session and runs jobs
//! from a FIFO queue one at a time.
//!
//! Batching is not implemented; the queue/worker split is kept so that a
//! scheduler can later pop several jobs and decode them together.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::sampling::{sample, Rng, SamplingParams};
use crate::text::{utf8_safe_len, StopList};
use crate::{EngineError, Model, Session, Tokenizer};

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Context size of the live session (tokens).
    pub ctx: usize,
    /// Prefill chunk (tokens); chunks are aligned to absolute multiples.
    pub prefill_chunk: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ctx: 32768,
            prefill_chunk: 2048,
        }
    }
}

/// Where the reused part of the prompt came from (trace field `cache_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSource {
    /// Cold prefill.
    None,
    /// The live tokens are a prefix of the request's tokens.
    MemoryToken,
    /// The live text is a byte prefix of the rendered prompt.
    MemoryText,
    /// The prompt extends the visible alias remembered by the previous job
    /// (its text as the client will replay it, e.g. without hidden reasoning).
    ThinkingVisible,
}

impl CacheSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheSource::None => "none",
            CacheSource::MemoryToken => "memory-token",
            CacheSource::MemoryText => "memory-text",
            CacheSource::ThinkingVisible => "thinking-visible",
        }
    }
}

/// Token accounting of one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Effective prompt length (reused + newly prefilled).
    pub prompt_tokens: usize,
    /// Tokens reused from the live session.
    pub cached_tokens: usize,
    /// Generated tokens, excluding a final EOS.
    pub completion_tokens: usize,
}

impl Usage {
    /// Tokens prefilled for this request (`prompt - cached`).
    pub fn cache_write_tokens(&self) -> usize {
        self.prompt_tokens.saturating_sub(self.cached_tokens)
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// EOS sampled.
    Eos,
    /// A stop sequence matched (text cut before it): the matched sequence.
    StopSequence(String),
    /// max_tokens reached or context full.
    Length,
    /// The controller saw the end of a tool-call block.
    ToolCalls,
    /// Decode failure or shutdown.
    Error(String),
    /// The client went away (event receiver dropped or cancel flag set).
    Cancelled,
}

/// What the engine reports to the submitter, in order:
/// `Prefill*`, `Started`, `Text*`, `Done` — or a single `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Chunked prefill progress (at start and after every chunk, only when
    /// the new part spans more than one chunk).
    Prefill { done: usize, total: usize },
    /// Prefill finished; generation begins.
    Started {
        prompt_tokens: usize,
        cached_tokens: usize,
        source: CacheSource,
    },
    /// Generated text, UTF-8 safe and never containing a stop sequence.
    Text(String),
    /// Generation ended. `Text` events concatenated are the final text.
    Done { finish: Finish, usage: Usage },
    /// The job failed before generation started.
    Failed(EngineError),
}

/// Decision of a [`GenControl`] after looking at the generated text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Keep going; `greedy` forces temperature 0 for the next token.
    Continue { greedy: bool },
    /// Stop now with this finish reason.
    Stop(Finish),
}

/// Per-request hook run on the worker thread: the DSML sampling guard and
/// tool-call end detection live here.
pub trait GenControl: Send {
    /// Called with the whole raw generated text before every sampling step
    /// (first with an empty slice) and decides greedy forcing or a stop.
    fn observe(&mut self, text: &[u8]) -> Control;
}

/// Computes, from the generated text and the finish reason, the text a
/// client will render for the resulting live state when it differs from the
/// KV's own text (e.g. reasoning dropped from history). `None`: no alias.
pub type VisibleFn = Box<dyn FnOnce(&[u8], &Finish) -> Option<String> + Send>;

/// A generation job.
pub struct GenRequest {
    /// Rendered prompt text (used for the text-prefix cache fallback).
    pub prompt_text: String,
    /// Tokens of `prompt_text`.
    pub prompt_tokens: Vec<u32>,
    pub params: SamplingParams,
    /// Upper bound on generated tokens (further clamped to the context).
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub control: Option<Box<dyn GenControl>>,
    /// Remember a visible alias of the live state after this job.
    pub visible: Option<VisibleFn>,
}

/// Shared cancellation flag of one job.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The submitter's side of a job. Dropping it cancels the job.
pub struct JobHandle {
    pub events: UnboundedReceiver<Event>,
    cancel: CancelFlag,
}

impl JobHandle {
    pub fn cancel_flag(&self) -> CancelFlag {
        self.cancel.clone()
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Job {
    req: GenRequest,
    tx: UnboundedSender<Event>,
    cancel: CancelFlag,
    seq: u64,
}

impl Job {
    fn gone(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }
}

/// Counters readable from any thread.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub jobs_submitted: AtomicU64,
    pub jobs_done: AtomicU64,
    pub jobs_cancelled: AtomicU64,
    pub jobs_failed: AtomicU64,
    /// Decode steps (single-token evals after a sampled token) over all jobs.
    pub decode_steps: AtomicU64,
    /// Decode steps run by the most recent cancelled job after its
    /// cancellation was requested (0 or 1 when cancellation is prompt).
    pub steps_after_last_cancel: AtomicU64,
    pub queued: AtomicUsize,
    pub busy: AtomicBool,
    pub live_tokens: AtomicUsize,
    pub state_bytes: AtomicUsize,
}

impl EngineStats {
    /// Count a cancelled job that ran `steps` decode steps after its cancellation.
    fn record_cancel(&self, steps: u64) {
        self.jobs_cancelled.fetch_add(1, Ordering::SeqCst);
        self.steps_after_last_cancel.store(steps, Ordering::SeqCst);
    }
}

struct Inner {
    queue: Mutex<VecDeque<Job>>,
    cv: Condvar,
    shutdown: AtomicBool,
    stats: EngineStats,
    seq: AtomicU64,
}

/// Handle to the running engine (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    tokenizer: Arc<dyn Tokenizer>,
    cfg: EngineConfig,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Engine {
    /// Start the worker thread. The session is created on it.
    pub fn start(
        model: Box<dyn Model>,
        tokenizer: Arc<dyn Tokenizer>,
        cfg: EngineConfig,
    ) -> Result<Engine, EngineError> {
        if cfg.ctx == 0 {
            return Err(EngineError::Model("context size must be > 0".into()));
        }
        if cfg.prefill_chunk == 0 {
            return Err(EngineError::Model("prefill chunk must be > 0".into()));
        }
        let session = model.new_session(cfg.ctx)?;
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            stats: EngineStats::default(),
            seq: AtomicU64::new(0),
        });
        let mut worker = Worker {
            inner: inner.clone(),
            tokenizer: tokenizer.clone(),
            cfg: cfg.clone(),
            _model: model,
            session,
            live_tokens: Vec::new(),
            live_text: Vec::new(),
            live_logits: None,
            live_alias: None,
        };
        let handle = std::thread::Builder::new()
            .name("ds4-worker".into())
            .spawn(move || worker.run())
            .map_err(|e| EngineError::Model(format!("cannot spawn worker thread: {e}")))?;
        Ok(Engine {
            inner,
            tokenizer,
            cfg,
            worker: Arc::new(Mutex::new(Some(handle))),
        })
    }

    pub fn tokenizer(&self) -> &Arc<dyn Tokenizer> {
        &self.tokenizer
    }

    pub fn ctx(&self) -> usize {
        self.cfg.ctx
    }

    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Queue a job (FIFO). Fails with `ContextOverflow` when the prompt
    /// cannot fit and with `ShuttingDown` after [`Engine::shutdown`].
    pub fn submit(&self, req: GenRequest) -> Result<JobHandle, EngineError> {
        if self.inner.shutdown.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        if req.prompt_tokens.len() >= self.cfg.ctx {
            return Err(EngineError::ContextOverflow {
                n_prompt: req.prompt_tokens.len(),
                n_ctx: self.cfg.ctx,
            });
        }
        let (tx, rx) = unbounded_channel();
        let cancel = CancelFlag::default();
        let job = Job {
            req,
            tx,
            cancel: cancel.clone(),
            seq: self.inner.seq.fetch_add(1, Ordering::SeqCst),
        };
        {
            let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push_back(job);
            self.inner.stats.queued.store(q.len(), Ordering::SeqCst);
        }
        self.inner
            .stats
            .jobs_submitted
            .fetch_add(1, Ordering::SeqCst);
        self.inner.cv.notify_one();
        Ok(JobHandle { events: rx, cancel })
    }

    /// Stop accepting jobs, stop the running one (finish `Error`), fail the
    /// queued ones and join the worker.
    pub fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.cv.notify_all();
        let h = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

struct Worker {
    inner: Arc<Inner>,
    tokenizer: Arc<dyn Tokenizer>,
    cfg: EngineConfig,
    _model: Box<dyn Model>,
    session: Box<dyn Session>,
    /// Tokens evaluated in the session.
    live_tokens: Vec<u32>,
    /// Bytes of `live_tokens`.
    live_text: Vec<u8>,
    /// Logits after the last live token.
    live_logits: Option<Vec<f32>>,
    /// Visible alias text of the live state, valid while the live length
    /// equals the stored position.
    live_alias: Option<(Vec<u8>, usize)>,
}

impl Worker {
    fn run(&mut self) {
        loop {
            let job = {
                let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(j) = q.pop_front() {
                        self.inner.stats.queued.store(q.len(), Ordering::SeqCst);
                        break Some(j);
                    }
                    if self.inner.shutdown.load(Ordering::SeqCst) {
                        break None;
                    }
                    q = self.inner.cv.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            let Some(job) = job else { return };
            if self.inner.shutdown.load(Ordering::SeqCst) {
                let _ = job.tx.send(Event::Failed(EngineError::ShuttingDown));
                self.inner.stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if job.gone() {
                self.inner.stats.record_cancel(0);
                continue;
            }
            self.inner.stats.busy.store(true, Ordering::SeqCst);
            // A panic in a hook or the model must not kill the worker: the
            // job's channel closes (its client sees an aborted generation),
            // the session is dropped and the queue keeps being served.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_job(job)));
            if r.is_err() {
                self.invalidate();
                self.inner.stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.stats.busy.store(false, Ordering::SeqCst);
            self.inner
                .stats
                .live_tokens
                .store(self.live_tokens.len(), Ordering::SeqCst);
            self.inner
                .stats
                .state_bytes
                .store(self.session.state_bytes(), Ordering::SeqCst);
        }
    }

    fn invalidate(&mut self) {
        self.session.reset();
        self.live_tokens.clear();
        self.live_text.clear();
        self.live_logits = None;
        self.live_alias = None;
    }

    /// Pick the reused prefix; returns (effective prompt, cached count, source).
    fn plan_prompt(&mut self, req: &GenRequest) -> (Vec<u32>, usize, CacheSource) {
        let live = &self.live_tokens;
        if !live.is_empty() && self.live_logits.is_some() {
            if live.len() <= req.prompt_tokens.len() && req.prompt_tokens[..live.len()] == live[..]
            {
                return (
                    req.prompt_tokens.clone(),
                    live.len(),
                    CacheSource::MemoryToken,
                );
            }
            let text = req.prompt_text.as_bytes();
            if let Some((alias, pos)) = &self.live_alias {
                if *pos == live.len() && text.len() > alias.len() && text.starts_with(alias) {
                    if let Ok(rest) = std::str::from_utf8(&text[alias.len()..]) {
                        let mut eff = live.clone();
                        eff.extend(self.tokenizer.encode(rest));
                        return (eff, live.len(), CacheSource::ThinkingVisible);
                    }
                }
            }
            if self.live_text.len() <= text.len()
                && text[..self.live_text.len()] == self.live_text[..]
            {
                // The rest always starts on a char boundary of the prompt
                // unless the live text ended inside a character.
                if let Ok(rest) = std::str::from_utf8(&text[self.live_text.len()..]) {
                    let mut eff = live.clone();
                    eff.extend(self.tokenizer.encode(rest));
                    return (eff, live.len(), CacheSource::MemoryText);
                }
            }
        }
        (req.prompt_tokens.clone(), 0, CacheSource::None)
    }

    fn run_job(&mut self, mut job: Job) {
        let inner = self.inner.clone();
        let stats = &inner.stats;
        let (eff, mut cached, mut source) = self.plan_prompt(&job.req);
        // Any job replaces the alias (a new one is set at its end if asked).
        self.live_alias = None;
        let ctx = self.cfg.ctx;
        if eff.len() >= ctx {
            let _ = job.tx.send(Event::Failed(EngineError::ContextOverflow {
                n_prompt: eff.len(),
                n_ctx: ctx,
            }));
            stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if source == CacheSource::None || self.session.n_tokens() != self.live_tokens.len() {
            self.invalidate();
            cached = 0;
            source = CacheSource::None;
        }

        // ---- prefill ----
        let total = eff.len();
        let chunk = self.cfg.prefill_chunk;
        let chunked = total - cached > chunk;
        if chunked {
            let _ = job.tx.send(Event::Prefill {
                done: cached,
                total,
            });
        }
        let mut pos = cached;
        let mut logits = if pos == total {
            self.live_logits.take()
        } else {
            None
        };
        while pos < total {
            if job.gone() {
                self.after_cancel_in_prefill(pos, &eff);
                return;
            }
            if self.inner.shutdown.load(Ordering::SeqCst) {
                let _ = job.tx.send(Event::Failed(EngineError::ShuttingDown));
                self.invalidate();
                stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let end = ((pos / chunk + 1) * chunk).min(total);
            let last = end == total;
            match self.session.eval(&eff[pos..end], last) {
                Ok(l) => {
                    for &t in &eff[pos..end] {
                        self.live_tokens.push(t);
                    }
                    if last {
                        logits = l;
                    }
                }
                Err(e) => {
                    self.invalidate();
                    let _ = job.tx.send(Event::Failed(e));
                    stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            pos = end;
            if chunked {
                let _ = job.tx.send(Event::Prefill { done: pos, total });
            }
        }
        // Live text: the decoded effective prompt. It equals the prompt text
        // except after a visible-alias continuation (the KV keeps hidden text).
        if source == CacheSource::ThinkingVisible {
            let rest = &eff[cached..];
            for &t in rest {
                self.live_text
                    .extend_from_slice(&self.tokenizer.token_bytes(t));
            }
        } else {
            self.live_text = job.req.prompt_text.as_bytes().to_vec();
        }
        let Some(mut logits) = logits else {
            self.invalidate();
            let _ = job.tx.send(Event::Failed(EngineError::Model(
                "model returned no logits after prefill".into(),
            )));
            stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
            return;
        };
        let mut usage = Usage {
            prompt_tokens: total,
            cached_tokens: cached,
            completion_tokens: 0,
        };
        let _ = job.tx.send(Event::Started {
            prompt_tokens: total,
            cached_tokens: cached,
            source,
        });

        // ---- decode ----
        let seed = job.req.params.seed.unwrap_or_else(|| random_seed(job.seq));
        let mut rng = Rng::new(seed);
        let stops = StopList::new(&job.req.stop);
        let max_gen = job.req.max_tokens.min(ctx - total);
        let eos = self.tokenizer.eos_id();
        let mut text: Vec<u8> = Vec::new();
        let mut sent = 0usize;
        let mut control = job.req.control.take();
        let mut finish = Finish::Length;
        let mut cancel_seen_steps: Option<u64> = None;
        let mut greedy = match control.as_mut().map(|c| c.observe(&text)) {
            Some(Control::Stop(f)) => {
                finish = f;
                None
            }
            Some(Control::Continue { greedy }) => Some(greedy),
            None => Some(false),
        };
        while let Some(g) = greedy {
            if usage.completion_tokens >= max_gen {
                finish = Finish::Length;
                break;
            }
            if job.gone() {
                finish = Finish::Cancelled;
                cancel_seen_steps = Some(0);
                break;
            }
            if self.inner.shutdown.load(Ordering::SeqCst) {
                finish = Finish::Error("shutdown requested".into());
                break;
            }
            let mut p = job.req.params;
            if g {
                p.temperature = 0.0;
            }
            let id = sample(&logits, &p, &mut rng);
            if id == eos {
                finish = Finish::Eos;
                break;
            }
            let before = text.len();
            text.extend_from_slice(&self.tokenizer.token_bytes(id));
            usage.completion_tokens += 1;
            if !stops.is_empty() {
                if let Some((at, seq)) = stops.find(&text, before) {
                    finish = Finish::StopSequence(seq.to_string());
                    text.truncate(at);
                    break;
                }
            }
            // Evaluate the sampled token so the live state includes it.
            let was_gone = job.gone();
            match self.session.eval(&[id], true) {
                Ok(Some(l)) => {
                    logits = l;
                    self.live_tokens.push(id);
                    self.live_text.extend_from_slice(&text[before..]);
                    stats.decode_steps.fetch_add(1, Ordering::SeqCst);
                    if was_gone {
                        cancel_seen_steps = Some(cancel_seen_steps.unwrap_or(0) + 1);
                    }
                }
                Ok(None) => {
                    finish = Finish::Error("model returned no logits".into());
                    self.invalidate();
                    break;
                }
                Err(e) => {
                    finish = Finish::Error(e.to_string());
                    self.invalidate();
                    break;
                }
            }
            greedy = match control.as_mut().map(|c| c.observe(&text)) {
                Some(Control::Stop(f)) => {
                    finish = f;
                    None
                }
                Some(Control::Continue { greedy }) => Some(greedy),
                None => Some(false),
            };
            // Stream what is safe: hold a possible partial stop sequence and
            // partial UTF-8.
            let limit = text.len().saturating_sub(stops.hold());
            let limit = utf8_safe_len(&text[..limit.max(sent)]).max(sent);
            if limit > sent {
                let s = String::from_utf8_lossy(&text[sent..limit]).into_owned();
                sent = limit;
                let _ = job.tx.send(Event::Text(s));
            }
        }
        if matches!(finish, Finish::StopSequence(_)) {
            // The live KV holds tokens past the cut point: invalidate it.
            self.invalidate();
        } else {
            self.live_logits = Some(logits);
            if let Some(f) = job.req.visible.take() {
                if let Some(alias) = f(&text, &finish) {
                    self.live_alias = Some((alias.into_bytes(), self.live_tokens.len()));
                }
            }
        }
        if text.len() > sent {
            let _ = job.tx.send(Event::Text(
                String::from_utf8_lossy(&text[sent..]).into_owned(),
            ));
        }
        if finish == Finish::Cancelled {
            stats.record_cancel(cancel_seen_steps.unwrap_or(0));
        } else {
            stats.jobs_done.fetch_add(1, Ordering::SeqCst);
        }
        let _ = job.tx.send(Event::Done { finish, usage });
    }

    fn after_cancel_in_prefill(&mut self, pos: usize, eff: &[u32]) {
        // The session holds eff[..pos]: a valid (shorter) live state whose
        // last logits are unknown, so it cannot be resumed; drop it.
        debug_assert!(pos <= eff.len());
        self.invalidate();
        self.inner.stats.record_cancel(0);
    }
}

fn random_seed(seq: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let s = t ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (&seq as *const u64 as u64);
    if s == 0 {
        1
    } else {
        s
    }
}
