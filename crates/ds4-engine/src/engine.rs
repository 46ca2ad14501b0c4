//! The engine's public types and handle: jobs go into a FIFO queue that the
//! worker thread (worker.rs) serves, up to one job per session slot at a time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::sampling::SamplingParams;
use crate::worker::Worker;
use crate::{EngineError, Model, Tokenizer};

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Context size of each session slot (tokens).
    pub ctx: usize,
    /// Prefill chunk (tokens); chunks are aligned to absolute multiples.
    pub prefill_chunk: usize,
    /// Session slots: jobs run together, one per slot, each step one batched
    /// evaluation over them (ds4.c's `--batched-session`; 1 = one at a time).
    pub slots: usize,
    /// Prefill tokens per step while some job is decoding (chunks aligned to
    /// multiples of it, shared by the waiting prompts oldest first), so that
    /// prompts joining the batch do not stall the others' tokens.
    pub batch_prefill_chunk: usize,
    /// Jobs that may wait for a slot (`--max-queue`; 0 = no limit). A job past it is refused
    /// with [`EngineError::QueueFull`].
    pub max_queue: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ctx: 32768,
            prefill_chunk: 2048,
            slots: 1,
            batch_prefill_chunk: 256,
            max_queue: 0,
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
    /// Of those, the reasoning: when the prompt ends with the think-start token, the tokens
    /// up to and including the generated think-end token (all of them if it never came).
    pub reasoning_tokens: usize,
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

pub(crate) struct Job {
    pub(crate) req: GenRequest,
    pub(crate) tx: UnboundedSender<Event>,
    pub(crate) cancel: CancelFlag,
    pub(crate) seq: u64,
}

impl Job {
    pub(crate) fn gone(&self) -> bool {
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
    /// Some job is running.
    pub busy: AtomicBool,
    /// Jobs running (at most one per session slot).
    pub active: AtomicUsize,
    /// Live tokens over all slots.
    pub live_tokens: AtomicUsize,
    /// State bytes over all slots.
    pub state_bytes: AtomicUsize,
}

impl EngineStats {
    /// Count a cancelled job that ran `steps` decode steps after its cancellation.
    pub(crate) fn record_cancel(&self, steps: u64) {
        self.jobs_cancelled.fetch_add(1, Ordering::SeqCst);
        self.steps_after_last_cancel.store(steps, Ordering::SeqCst);
    }
}

pub(crate) struct Inner {
    pub(crate) queue: Mutex<VecDeque<Job>>,
    pub(crate) cv: Condvar,
    pub(crate) shutdown: AtomicBool,
    pub(crate) stats: EngineStats,
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
        if cfg.prefill_chunk == 0 || cfg.batch_prefill_chunk == 0 {
            return Err(EngineError::Model("prefill chunk must be > 0".into()));
        }
        if cfg.slots == 0 {
            return Err(EngineError::Model("session slots must be > 0".into()));
        }
        let sessions = (0..cfg.slots)
            .map(|_| model.new_session(cfg.ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            stats: EngineStats::default(),
            seq: AtomicU64::new(0),
        });
        let mut worker = Worker::new(
            inner.clone(),
            tokenizer.clone(),
            cfg.clone(),
            model,
            sessions,
        );
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

    /// Session slots (jobs that can run together).
    pub fn slots(&self) -> usize {
        self.cfg.slots
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
            if self.cfg.max_queue > 0 {
                // Jobs cancelled while waiting leave at the next step; they hold no place.
                let waiting = q.iter().filter(|j| !j.cancel.is_cancelled()).count();
                if waiting >= self.cfg.max_queue {
                    return Err(EngineError::QueueFull { queued: waiting });
                }
            }
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

pub(crate) fn random_seed(seq: u64) -> u64 {
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
