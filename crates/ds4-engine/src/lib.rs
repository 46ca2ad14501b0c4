//! ds4-engine: the worker that owns the model and its KV session slots, a
//! FIFO job queue, continuous batching of the active jobs (one batched
//! evaluation per step), sampling, stop conditions, cancellation and
//! live-prefix reuse per slot.
//!
//! The model and tokenizer are reached through the narrow traits [`Model`],
//! [`Session`] and [`Tokenizer`] so that the engine does not depend on a
//! particular backend. The engine knows nothing about HTTP or chat formats:
//! callers pass rendered prompt text + tokens and receive [`Event`]s.

pub mod ds4;
pub mod engine;
pub mod sampling;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
mod worker;

pub use engine::{
    CacheSource, CancelFlag, Control, Engine, EngineConfig, EngineStats, Event, Finish, GenControl,
    GenRequest, JobHandle, Usage, VisibleFn,
};
pub use sampling::{Rng, SamplingParams};

/// Errors reported by a model backend or by the engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("Prompt has {n_prompt} tokens, but the configured context size is {n_ctx} tokens")]
    ContextOverflow { n_prompt: usize, n_ctx: usize },
    #[error("model error: {0}")]
    Model(String),
    #[error("server shutting down")]
    ShuttingDown,
    /// `EngineConfig::max_queue` jobs already wait for a slot.
    #[error("too many queued requests ({queued} waiting for a session slot); retry later")]
    QueueFull { queued: usize },
}

/// One sequence's evaluation state (KV cache + position) on a model.
pub trait Session: Send + 'static {
    /// Number of tokens evaluated so far (the KV position).
    fn n_tokens(&self) -> usize;
    /// Evaluate `tokens` at the current position, extending the state. With
    /// `want_logits`, return the logits (vocab-sized) after the last token.
    fn eval(&mut self, tokens: &[u32], want_logits: bool) -> Result<Option<Vec<f32>>, EngineError>;
    /// Forget everything (position 0).
    fn reset(&mut self);
    /// Memory used by the state, in bytes (for logs and health output).
    fn state_bytes(&self) -> usize;
    /// The concrete session, for a [`Model::eval_batch`] that evaluates
    /// several of its own sessions in one call (`None`: not offered).
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// One sequence's part of a batched evaluation: `tokens` at the session's
/// current position, with the logits after the last one when `want_logits`.
pub struct BatchStep<'a> {
    pub session: &'a mut dyn Session,
    pub tokens: &'a [u32],
    pub want_logits: bool,
}

/// A loaded model able to create sessions.
pub trait Model: Send {
    fn vocab_size(&self) -> usize;
    /// Create a session able to hold `ctx` tokens.
    fn new_session(&self, ctx: usize) -> Result<Box<dyn Session>, EngineError>;
    /// Human-readable description for logs.
    fn describe(&self) -> String {
        "model".to_string()
    }
    /// Evaluate several independent sessions, one result per step in order
    /// (as [`Session::eval`] gives it). A model may run them as one batched
    /// forward; the default evaluates them one after another.
    fn eval_batch(
        &self,
        steps: &mut [BatchStep<'_>],
    ) -> Vec<Result<Option<Vec<f32>>, EngineError>> {
        steps
            .iter_mut()
            .map(|s| s.session.eval(s.tokens, s.want_logits))
            .collect()
    }
}

/// Text <-> token mapping used by the engine (special-token aware encoding).
pub trait Tokenizer: Send + Sync {
    /// Encode rendered prompt text; the special strings become single tokens.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Raw bytes of one token (special tokens give their literal text).
    fn token_bytes(&self, id: u32) -> Vec<u8>;
    /// End-of-sentence id (stops generation; never evaluated).
    fn eos_id(&self) -> u32;
}
