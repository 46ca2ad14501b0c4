//! Streaming driver: turns engine events into SSE frames through a per-API
//! [`Projector`], sends `: keepalive` comments during long prefills and stops
//! the job when the client goes away (the stream, and with it the job handle,
//! is dropped by the HTTP layer when a write fails).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use ds4_engine::{Event, Finish, JobHandle, Usage};

use crate::{engine_error, trace_end_off_thread, AppState, Outcome, Prepared};

/// Per-API conversion of generation progress into SSE frames.
pub trait Projector: Send + 'static {
    /// Frames when generation starts (after prefill).
    fn start(&mut self, usage: &Usage) -> Vec<String>;
    /// Frames for newly generated text.
    fn text(&mut self, s: &str) -> Vec<String>;
    /// Final frames (including `[DONE]` where the API has it).
    fn finish(&mut self, finish: &Finish, usage: &Usage) -> Vec<String>;
    /// Frames reporting a failure after the SSE headers were sent.
    fn error(&mut self, msg: &str) -> Vec<String>;
}

/// `data: JSON\n\n`.
pub fn data(json: &str) -> String {
    format!("data: {json}\n\n")
}

/// `event: NAME\ndata: JSON\n\n`.
pub fn event(name: &str, json: &str) -> String {
    format!("event: {name}\ndata: {json}\n\n")
}

struct StreamState {
    st: Arc<AppState>,
    handle: JobHandle,
    proj: Box<dyn Projector>,
    queue: VecDeque<String>,
    pending: Option<Event>,
    done: bool,
    last_keepalive: Option<Instant>,
    outcome: Outcome,
    trace: Option<u64>,
    /// The job finished: its trace record is still to be written.
    trace_due: bool,
    started: bool,
}

impl StreamState {
    fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::Prefill { .. } => {
                let due = match self.last_keepalive {
                    None => true,
                    Some(t) => t.elapsed() >= self.st.cfg.keepalive_interval,
                };
                if due {
                    self.last_keepalive = Some(Instant::now());
                    self.queue.push_back(": keepalive\n\n".to_string());
                }
            }
            Event::Started {
                prompt_tokens,
                cached_tokens,
                source,
            } => {
                self.started = true;
                self.outcome.source = source.as_str();
                self.outcome.usage = Usage {
                    prompt_tokens,
                    cached_tokens,
                    ..Usage::default()
                };
                let u = self.outcome.usage;
                self.queue.extend(self.proj.start(&u));
            }
            Event::Text(t) => {
                self.outcome.text.push_str(&t);
                self.queue.extend(self.proj.text(&t));
            }
            Event::Done { finish, usage } => {
                self.outcome.usage = usage;
                self.outcome.finish = Some(finish.clone());
                self.queue.extend(self.proj.finish(&finish, &usage));
                self.done = true;
                self.trace_due = true;
            }
            Event::Failed(e) => {
                self.queue.extend(self.proj.error(&e.to_string()));
                self.done = true;
            }
        }
    }
}

fn sse_response(body: Body) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Wait for the job to leave the queue, then stream it. A failure before
/// anything was sent becomes a plain HTTP error.
pub async fn stream(
    st: Arc<AppState>,
    p: &Prepared,
    mut handle: JobHandle,
    proj: Box<dyn Projector>,
    trace: Option<u64>,
) -> Response {
    let first = handle.events.recv().await;
    let first = match first {
        None => {
            return crate::ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                p.api,
                "generation aborted",
            )
            .into_response()
        }
        Some(Event::Failed(e)) => return engine_error(p.api, e).into_response(),
        Some(ev) => ev,
    };
    let state = StreamState {
        st,
        handle,
        proj,
        queue: VecDeque::new(),
        pending: Some(first),
        done: false,
        last_keepalive: None,
        outcome: Outcome::default(),
        trace,
        trace_due: false,
        started: false,
    };
    let s = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(f) = s.queue.pop_front() {
                return Some((Ok::<Bytes, Infallible>(Bytes::from(f)), s));
            }
            if s.done {
                return None;
            }
            let ev = match s.pending.take() {
                Some(e) => Some(e),
                None => s.handle.events.recv().await,
            };
            match ev {
                Some(ev) => {
                    s.handle_event(ev);
                    if s.trace_due {
                        s.trace_due = false;
                        let o = std::mem::take(&mut s.outcome);
                        s.outcome = trace_end_off_thread(&s.st, s.trace, o).await;
                    }
                }
                None => {
                    // The worker dropped the job without a final event.
                    let frames = if s.started {
                        s.proj.finish(
                            &Finish::Error("generation aborted".into()),
                            &s.outcome.usage,
                        )
                    } else {
                        s.proj.error("generation aborted")
                    };
                    s.queue.extend(frames);
                    s.done = true;
                }
            }
        }
    });
    sse_response(Body::from_stream(s))
}

/// Run a job to completion (non-streaming). Returns the outcome, or the
/// HTTP error for a failure before generation.
pub async fn collect(
    st: &Arc<AppState>,
    p: &Prepared,
    mut handle: JobHandle,
    trace: Option<u64>,
) -> Result<Outcome, crate::ApiError> {
    let mut o = Outcome::default();
    while let Some(ev) = handle.events.recv().await {
        match ev {
            Event::Prefill { .. } => {}
            Event::Started {
                prompt_tokens,
                cached_tokens,
                source,
            } => {
                o.source = source.as_str();
                o.usage = Usage {
                    prompt_tokens,
                    cached_tokens,
                    ..Usage::default()
                };
            }
            Event::Text(t) => o.text.push_str(&t),
            Event::Done { finish, usage } => {
                o.finish = Some(finish);
                o.usage = usage;
                return Ok(trace_end_off_thread(st, trace, o).await);
            }
            Event::Failed(e) => return Err(engine_error(p.api, e)),
        }
    }
    Err(crate::ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        p.api,
        "generation aborted",
    ))
}
