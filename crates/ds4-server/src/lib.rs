//! ds4-server: OpenAI / Anthropic / Responses compatible HTTP front end of
//! the ds4 engine (spec server-and-cli.md §1, §2.1-2.3, §4).
//!
//! [`router`] builds the axum application around a running [`Engine`]; the
//! `ds4-server` binary adds flag parsing and model loading.

pub mod anthropic;
pub mod error;
pub mod jsonw;
pub mod openai;
pub mod params;
pub mod prepare;
pub mod responses;
pub mod sse;

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use ds4_chat::ToolMemory;
use ds4_engine::{Engine, EngineError, Finish};

pub use error::{ApiError, ApiKind};
use jsonw::J;
use params::parse_gen_fields;
pub use prepare::{
    chat_error, finish_prepare, off_thread, parse_json, prepare_chat, read_body, render_chat,
    replay_snapshot, request_model, start_chat, submit, tokenize_prompt, Prepared, Rendered,
    Started,
};

/// The canonical model id.
pub const MODEL_ID: &str = "deepseek-v4-flash";
/// `created` of the model objects (2026-01-01, as ds4).
pub const MODEL_CREATED: i64 = 1_767_225_600;
/// Built-in alias targets (also accepted as request model ids).
pub const ALIAS_TARGETS: [&str; 3] = ["deepseek-v4-flash", "deepseek-chat", "deepseek-reasoner"];

/// Server configuration (flags of spec §4 plus our additions).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Context size (tokens) of the engine session.
    pub ctx: usize,
    /// `-n/--tokens`: max output tokens when the client gives none.
    pub default_max_tokens: usize,
    pub cors: bool,
    /// `--api-key`: required as `Authorization: Bearer` or `x-api-key`.
    pub api_key: Option<String>,
    /// Extra accepted model names → target id (one of [`ALIAS_TARGETS`]).
    pub aliases: Vec<(String, String)>,
    /// Maximum request body size in bytes.
    pub max_body_bytes: usize,
    /// Maximum number of messages / input items per request.
    pub max_messages: usize,
    /// Minimum interval between `: keepalive` comments during prefill.
    pub keepalive_interval: Duration,
    /// `--trace FILE`.
    pub trace: Option<std::path::PathBuf>,
    /// Serving the embedded demo model (noise output).
    pub demo: bool,
    /// Tool memory limits (ids, bytes); 0 ids disables exact DSML replay.
    pub tool_memory_max_ids: usize,
    /// Log one line per finished request on stderr.
    pub log_requests: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ctx: 32768,
            default_max_tokens: 393_216,
            cors: false,
            api_key: None,
            aliases: Vec::new(),
            max_body_bytes: 64 << 20,
            max_messages: 100_000,
            keepalive_interval: Duration::from_secs(5),
            trace: None,
            demo: false,
            tool_memory_max_ids: ds4_chat::replay::DEFAULT_MAX_IDS,
            log_requests: false,
        }
    }
}

/// Shared state of all handlers.
pub struct AppState {
    pub engine: Engine,
    pub cfg: ServerConfig,
    pub tool_memory: Mutex<ToolMemory>,
    counter: AtomicU64,
    trace: Option<Mutex<std::fs::File>>,
    trace_seq: AtomicU64,
}

impl AppState {
    pub fn new(engine: Engine, cfg: ServerConfig) -> std::io::Result<Arc<AppState>> {
        let trace = match &cfg.trace {
            Some(p) => Some(Mutex::new(std::fs::File::create(p)?)),
            None => None,
        };
        let tool_memory =
            ToolMemory::new(cfg.tool_memory_max_ids, ds4_chat::replay::DEFAULT_MAX_BYTES);
        Ok(Arc::new(AppState {
            engine,
            cfg,
            tool_memory: Mutex::new(tool_memory),
            counter: AtomicU64::new(0),
            trace,
            trace_seq: AtomicU64::new(0),
        }))
    }

    /// Next per-process response number (1, 2, …).
    pub fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Resolve a request model name to its target id, or None if unknown.
    pub fn resolve_model(&self, name: &str) -> Option<&str> {
        if let Some(t) = ALIAS_TARGETS.iter().find(|t| **t == name) {
            return Some(t);
        }
        self.cfg
            .aliases
            .iter()
            .find(|(a, _)| a == name)
            .map(|(_, t)| t.as_str())
    }

    /// `--trace` is on.
    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    /// Append a record to the trace file (if enabled).
    pub fn trace(&self, record: &str) {
        if let Some(f) = &self.trace {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let _ = f.write_all(record.as_bytes());
            let _ = f.flush();
        }
    }
}

pub fn add_cors(h: &mut HeaderMap) {
    h.insert(
        HeaderName::from_static("access-control-allow-origin"),
        HeaderValue::from_static("*"),
    );
    h.insert(
        HeaderName::from_static("access-control-allow-methods"),
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        HeaderName::from_static("access-control-allow-headers"),
        HeaderValue::from_static("*"),
    );
}

/// Build the application router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/health", get(health))
        .fallback(fallback)
        .method_not_allowed_fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors_layer,
        ))
        .with_state(state)
}

/// The router served while the model loads, so the port is taken (and a clash reported) before
/// a load that can take minutes. Until `ready` holds the application router every route answers
/// 503: `/health` with `{"status":"loading"}`, the rest with an `unavailable_error`. Afterwards
/// every request goes to the application router.
pub fn loading_gate(ready: Arc<std::sync::OnceLock<Router>>, cors: bool) -> Router {
    use tower::ServiceExt as _;
    Router::new().fallback(move |req: axum::extract::Request| {
        let ready = ready.clone();
        async move {
            if let Some(app) = ready.get() {
                return app.clone().oneshot(req).await.into_response();
            }
            if req.uri().path() != "/health" {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ApiKind::Other,
                    "The model is still loading; retry when /health says ok.",
                )
                .etype("unavailable_error")
                .retry_after("5");
                e.cors = cors;
                return e.into_response();
            }
            let body = J::obj().with("status", "loading").with("model", MODEL_ID);
            let mut r = error::json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_json(), cors);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    })
}

async fn cors_layer(
    State(st): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut r = if req.method() == Method::OPTIONS {
        // OPTIONS on any path: 204, no body (CORS preflight).
        StatusCode::NO_CONTENT.into_response()
    } else {
        let route = st
            .cfg
            .log_requests
            .then(|| (req.method().clone(), req.uri().path().to_string()));
        let r = next.run(req).await;
        if let Some((method, path)) =
            route.filter(|_| r.status().is_client_error() || r.status().is_server_error())
        {
            // One line per refused request: status, route, reason.
            let reason = r
                .extensions()
                .get::<error::RejectReason>()
                .map(|e| e.0.as_str())
                .unwrap_or_else(|| r.status().canonical_reason().unwrap_or("error"));
            log_line(&format!(
                "request rejected: {} {method} {path}: {}",
                r.status().as_u16(),
                reason.replace('\n', "\\n").replace('\r', "\\r")
            ));
        }
        r
    };
    if st.cfg.cors {
        add_cors(r.headers_mut());
    }
    r
}

async fn fallback() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, ApiKind::Other, "unknown endpoint").into_response()
}

/// Check `--api-key` (Bearer or x-api-key).
pub fn check_auth(st: &AppState, headers: &HeaderMap, api: ApiKind) -> Result<(), ApiError> {
    let Some(key) = &st.cfg.api_key else {
        return Ok(());
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let xkey = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    // constant-time comparison (only the length can be learned from timing)
    let matches = |given: Option<&str>| {
        given.is_some_and(|g| {
            bool::from(subtle::ConstantTimeEq::ct_eq(g.as_bytes(), key.as_bytes()))
        })
    };
    if matches(bearer) | matches(xkey) {
        return Ok(());
    }
    let msg = if bearer.is_none() && xkey.is_none() {
        "missing API key: send Authorization: Bearer KEY or x-api-key: KEY"
    } else {
        "invalid API key"
    };
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, api, msg);
    if api != ApiKind::Anthropic {
        e = e.etype("invalid_request_error").code("invalid_api_key");
    }
    Err(e)
}

fn model_object(id: &str, ctx: usize, default_max: usize) -> J {
    J::obj()
        .with("id", id)
        .with("object", "model")
        .with("created", MODEL_CREATED)
        .with("owned_by", "ds4.c")
        .with("name", "DeepSeek V4 Flash")
        .with("context_length", ctx)
        .with(
            "top_provider",
            J::obj()
                .with("context_length", ctx)
                .with("max_completion_tokens", default_max.min(ctx))
                .with("is_moderated", false),
        )
        .with(
            "supported_parameters",
            J::Arr(
                [
                    "tools",
                    "tool_choice",
                    "max_tokens",
                    "temperature",
                    "top_p",
                    "top_k",
                    "min_p",
                    "stop",
                    "seed",
                    "stream",
                    "reasoning_effort",
                ]
                .iter()
                .map(|s| J::from(*s))
                .collect(),
            ),
        )
}

fn json_ok(body: J, newline: bool) -> Response {
    let mut s = body.to_json();
    if newline {
        s.push('\n');
    }
    error::json_response(StatusCode::OK, s, false)
}

fn model_ids(st: &AppState) -> Vec<String> {
    let mut ids: Vec<String> = ALIAS_TARGETS.iter().map(|s| s.to_string()).collect();
    for (a, _) in &st.cfg.aliases {
        if !ids.contains(a) {
            ids.push(a.clone());
        }
    }
    ids
}

async fn list_models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_auth(&st, &headers, ApiKind::Other) {
        return e.into_response();
    }
    let data: Vec<J> = model_ids(&st)
        .iter()
        .map(|id| model_object(id, st.cfg.ctx, st.cfg.default_max_tokens))
        .collect();
    json_ok(
        J::obj().with("object", "list").with("data", J::Arr(data)),
        true,
    )
}

async fn get_model(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = check_auth(&st, &headers, ApiKind::Other) {
        return e.into_response();
    }
    if st.resolve_model(&id).is_none() {
        return unknown_model(ApiKind::Other, &id).into_response();
    }
    json_ok(
        model_object(&id, st.cfg.ctx, st.cfg.default_max_tokens),
        true,
    )
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let s = st.engine.stats();
    let body = J::obj()
        .with("status", "ok")
        .with("model", MODEL_ID)
        .with("demo", st.cfg.demo)
        .with("ctx", st.cfg.ctx)
        .with("busy", s.busy.load(Ordering::SeqCst))
        .with("slots", st.engine.slots())
        .with("active", s.active.load(Ordering::SeqCst))
        .with("queued", s.queued.load(Ordering::SeqCst))
        .with("live_tokens", s.live_tokens.load(Ordering::SeqCst))
        .with("jobs_submitted", s.jobs_submitted.load(Ordering::SeqCst))
        .with("jobs_done", s.jobs_done.load(Ordering::SeqCst))
        .with("jobs_cancelled", s.jobs_cancelled.load(Ordering::SeqCst))
        .with("jobs_failed", s.jobs_failed.load(Ordering::SeqCst))
        .with("decode_steps", s.decode_steps.load(Ordering::SeqCst))
        .with(
            "steps_after_last_cancel",
            s.steps_after_last_cancel.load(Ordering::SeqCst),
        );
    json_ok(body, true)
}

pub fn unknown_model(api: ApiKind, id: &str) -> ApiError {
    let msg = format!("The model `{id}` does not exist (served: deepseek-v4-flash, deepseek-chat, deepseek-reasoner or an --alias)");
    let e = ApiError::new(StatusCode::NOT_FOUND, api, msg);
    if api == ApiKind::Anthropic {
        e
    } else {
        e.param("model").code("model_not_found")
    }
}

pub fn engine_error(api: ApiKind, e: EngineError) -> ApiError {
    match e {
        EngineError::ContextOverflow { n_prompt, n_ctx } => {
            ApiError::context_overflow(api, n_prompt, n_ctx)
        }
        EngineError::ShuttingDown => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, api, "server shutting down")
        }
        EngineError::Model(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, api, m),
        // --max-queue: OpenAI's rate-limit answer, Anthropic's overloaded one.
        e @ EngineError::QueueFull { .. } if api == ApiKind::Anthropic => ApiError::new(
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            api,
            e.to_string(),
        )
        .etype("overloaded_error")
        .retry_after("1"),
        e @ EngineError::QueueFull { .. } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, api, e.to_string())
                .etype("rate_limit_error")
                .code("rate_limit_exceeded")
                .retry_after("1")
        }
    }
}

/// `MMDD HH:MM:SS ` (UTC) log prefix, as ds4's log lines.
pub fn log_stamp() -> String {
    log_stamp_at(now_secs().max(0) as u64)
}

/// [`log_stamp`] for a given Unix time.
pub fn log_stamp_at(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{m:02}{d:02} {:02}:{:02}:{:02} ",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One timestamped line on stderr.
pub fn log_line(msg: &str) {
    eprintln!("{}{msg}", log_stamp());
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if getrandom::fill(&mut b).is_err() {
        // Fall back to a hash of time and a counter (ids only need uniqueness).
        static C: AtomicU64 = AtomicU64::new(0);
        let mut x = now_secs() as u64
            ^ C.fetch_add(1, Ordering::SeqCst)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for v in b.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x as u8;
        }
    }
    b.iter().map(|v| format!("{v:02x}")).collect()
}

/// Start a trace record for a request.
pub fn trace_begin(st: &AppState, p: &Prepared, route: &str) -> Option<u64> {
    st.trace.as_ref()?;
    let k = st.trace_seq.fetch_add(1, Ordering::SeqCst) + 1;
    let rec = format!(
        "===== request {k} {} =====\nroute={route} model={} think={:?} tools={} stream={} max_tokens={:?} temperature={:?} top_p={:?} top_k={:?} min_p={:?} seed={:?} stop={:?}\n--- request json ---\n{}\n--- rendered prompt ({} tokens) ---\n{}\n",
        now_secs(),
        p.model,
        p.mode,
        p.tools_active,
        p.fields.stream,
        p.fields.max_tokens,
        p.fields.temperature,
        p.fields.top_p,
        p.fields.top_k,
        p.fields.min_p,
        p.fields.seed,
        p.fields.stop,
        String::from_utf8_lossy(&p.raw),
        p.prompt_tokens.len(),
        p.prompt_text
    );
    st.trace(&rec);
    Some(k)
}

/// Finish a trace record.
pub fn trace_end(st: &AppState, k: Option<u64>, outcome: &Outcome) {
    if st.cfg.log_requests {
        let u = &outcome.usage;
        log_line(&format!(
            "request done: ctx={}..{} ({}) gen={} finish={:?}",
            u.cached_tokens,
            u.prompt_tokens,
            outcome.source,
            u.completion_tokens,
            outcome.finish.as_ref().unwrap_or(&Finish::Eos)
        ));
    }
    let Some(k) = k else { return };
    let rec = format!(
        "--- cache decision ---\ncache_source={} prompt_tokens={} cached_tokens={}\n--- generated text ---\n{}\n--- finish ---\n{:?} completion_tokens={}\n===== end request {k} =====\n",
        outcome.source,
        outcome.usage.prompt_tokens,
        outcome.usage.cached_tokens,
        outcome.text,
        outcome.finish,
        outcome.usage.completion_tokens
    );
    st.trace(&rec);
}

/// [`trace_end`] on the blocking pool (file I/O and formatting of the whole
/// generated text stay off the async threads); hands the outcome back.
pub async fn trace_end_off_thread(st: &Arc<AppState>, k: Option<u64>, outcome: Outcome) -> Outcome {
    if k.is_none() && !st.cfg.log_requests {
        return outcome;
    }
    let st2 = st.clone();
    let o = outcome.clone();
    tokio::task::spawn_blocking(move || {
        trace_end(&st2, k, &o);
        o
    })
    .await
    .unwrap_or(outcome)
}

/// Summary of a finished job (for traces and final bodies).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub text: String,
    pub finish: Option<Finish>,
    pub usage: ds4_engine::Usage,
    pub source: &'static str,
}

/// The tool memory remembers each parsed call's exact DSML block.
pub fn remember_tools(st: &AppState, blocks: &[(Vec<String>, String)]) {
    if st.cfg.tool_memory_max_ids == 0 {
        return;
    }
    // Copy the blocks before taking the lock: it is held for the inserts only.
    let blocks: Vec<(&[String], std::sync::Arc<str>)> = blocks
        .iter()
        .filter(|(ids, raw)| !ids.is_empty() && !raw.is_empty())
        .map(|(ids, raw)| (ids.as_slice(), std::sync::Arc::from(raw.as_str())))
        .collect();
    if blocks.is_empty() {
        return;
    }
    let mut mem = st.tool_memory.lock().unwrap_or_else(|e| e.into_inner());
    for (ids, block) in blocks {
        mem.remember_shared(ids, block);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use axum::http::StatusCode;
    use tower::ServiceExt as _;

    async fn call(r: &axum::Router, method: &str, path: &str) -> (StatusCode, String, bool) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let retry = resp.headers().contains_key("retry-after");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), retry)
    }

    #[tokio::test]
    async fn loading_gate_answers_503_until_the_app_is_ready_then_forwards() {
        let ready = Arc::new(OnceLock::new());
        let gate = super::loading_gate(ready.clone(), false);
        let (s, b, retry) = call(&gate, "GET", "/health").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry);
        assert_eq!(b, r#"{"status":"loading","model":"deepseek-v4-flash"}"#);
        let (s, b, _) = call(&gate, "POST", "/v1/chat/completions").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(b.contains(r#""type":"unavailable_error""#), "{b}");
        let app = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "up" }))
            .route("/v1/x", axum::routing::post(|| async { "posted" }));
        assert!(ready.set(app).is_ok());
        assert_eq!(
            call(&gate, "GET", "/health").await,
            (StatusCode::OK, "up".into(), false)
        );
        assert_eq!(call(&gate, "POST", "/v1/x").await.1, "posted");
        // The app's own 404 / 405 come through unchanged.
        assert_eq!(call(&gate, "GET", "/nope").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            call(&gate, "GET", "/v1/x").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn log_stamp_matches_python_utc_strftime() {
        // python3: datetime.fromtimestamp(t, timezone.utc).strftime('%m%d %H:%M:%S ')
        assert_eq!(super::log_stamp_at(0), "0101 00:00:00 ");
        assert_eq!(super::log_stamp_at(951_782_400), "0229 00:00:00 ");
        assert_eq!(super::log_stamp_at(1_795_678_868), "1126 07:41:08 ");
        assert_eq!(super::log_stamp_at(4_107_542_399), "0228 23:59:59 ");
    }
}
