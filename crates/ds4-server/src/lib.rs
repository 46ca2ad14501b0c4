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
pub mod responses;
pub mod sse;

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use ds4_chat::parser::SamplingGuard;
use ds4_chat::{ChatError, ChatRequest, Json, Message, RenderOptions, ThinkMode, ToolMemory};
use ds4_engine::{
    Control, Engine, EngineError, Finish, GenControl, GenRequest, JobHandle, SamplingParams,
    VisibleFn,
};

pub use error::{ApiError, ApiKind};
use jsonw::J;
use params::{parse_gen_fields, GenFields};

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

async fn cors_layer(
    State(st): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut r = if req.method() == Method::OPTIONS {
        // OPTIONS on any path: 204, no body (CORS preflight).
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
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

/// Read the body (size limit), parse JSON, require an object.
pub async fn read_json(
    st: &AppState,
    body: Body,
    api: ApiKind,
) -> Result<(Json, Vec<u8>), ApiError> {
    let limit = st.cfg.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_big = std::error::Error::source(&e)
                .map(|s| s.to_string().contains("length limit"))
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            return Err(if too_big {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    api,
                    format!("request body too large: the limit is {limit} bytes"),
                )
            } else {
                ApiError::bad_request(api, format!("bad HTTP request: {e}"))
            });
        }
    };
    let v = Json::parse_bytes(&bytes)
        .map_err(|e| ApiError::bad_request(api, format!("invalid JSON request: {e}")))?;
    if v.as_object().is_none() {
        return Err(ApiError::bad_request(
            api,
            "invalid JSON request: the body must be a JSON object",
        ));
    }
    Ok((v, bytes.to_vec()))
}

pub fn chat_error(api: ApiKind, e: ChatError) -> ApiError {
    ApiError::bad_request(api, e.to_string())
}

/// Model name of a body (default `deepseek-v4-flash`) and its resolved target.
pub fn request_model(
    st: &AppState,
    body: &Json,
    api: ApiKind,
) -> Result<(String, String), ApiError> {
    let name = match body.get("model") {
        None | Some(Json::Null) => MODEL_ID.to_string(),
        Some(Json::String(s)) => s.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                api,
                "invalid JSON request: model must be a string",
            ))
        }
    };
    match st.resolve_model(&name) {
        Some(t) => {
            let t = t.to_string();
            Ok((name, t))
        }
        None => Err(unknown_model(api, &name)),
    }
}

/// A request ready for the engine.
pub struct Prepared {
    pub api: ApiKind,
    /// Model name echoed in responses.
    pub model: String,
    pub mode: ThinkMode,
    pub tools_active: bool,
    /// The history holds tool calls or tool results (reasoning is kept).
    pub tool_history: bool,
    pub reasoning_summary: bool,
    pub prompt_text: String,
    pub prompt_tokens: Vec<u32>,
    pub fields: GenFields,
    /// Raw request body (trace).
    pub raw: Vec<u8>,
}

/// A chat-kind request validated and rendered, not yet tokenised.
pub struct Rendered {
    /// Model name echoed in responses.
    pub model: String,
    pub mode: ThinkMode,
    pub tools_active: bool,
    /// The history holds tool calls or tool results (reasoning is kept).
    pub tool_history: bool,
    pub reasoning_summary: bool,
    pub prompt_text: String,
    pub fields: GenFields,
}

/// Shared request preparation for the chat-kind APIs: model check, adapter,
/// count limit, rendering, tokenisation, context and max_tokens checks.
pub fn prepare_chat(
    st: &AppState,
    body: &Json,
    raw: Vec<u8>,
    api: ApiKind,
    adapt: fn(&Json) -> Result<ChatRequest, ChatError>,
) -> Result<Prepared, ApiError> {
    let r = render_chat(st, body, api, adapt)?;
    let mut p = finish_prepare(
        st,
        api,
        r.model,
        r.mode,
        r.tools_active,
        r.reasoning_summary,
        r.prompt_text,
        r.fields,
        raw,
    )?;
    p.tool_history = r.tool_history;
    Ok(p)
}

/// The validating and rendering part of [`prepare_chat`]: model check,
/// required fields, generation fields, adapter, count limit, rendering and
/// tool-result checks (`/v1/messages/count_tokens` stops here).
pub fn render_chat(
    st: &AppState,
    body: &Json,
    api: ApiKind,
    adapt: fn(&Json) -> Result<ChatRequest, ChatError>,
) -> Result<Rendered, ApiError> {
    let (model, target) = request_model(st, body, api)?;
    // Required fields first, with ds4's messages.
    let required = match api {
        ApiKind::Responses => "input",
        _ => "messages",
    };
    match body.get(required) {
        None | Some(Json::Null) => {
            return Err(ApiError::bad_request(api, format!("missing {required}")))
        }
        Some(Json::Array(a)) => {
            if a.is_empty() && api != ApiKind::Responses {
                return Err(
                    ApiError::bad_request(api, format!("{required} must not be empty"))
                        .param("messages"),
                );
            }
            if a.len() > st.cfg.max_messages {
                return Err(ApiError::bad_request(
                    api,
                    format!(
                        "too many {required}: {} (the limit is {})",
                        a.len(),
                        st.cfg.max_messages
                    ),
                ));
            }
        }
        Some(Json::String(_)) if api == ApiKind::Responses => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                api,
                format!("invalid JSON request: {required} must be an array"),
            ));
        }
    }
    let fields = parse_gen_fields(body, api)?;
    let req = adapt(body).map_err(|e| chat_error(api, e))?;
    if api == ApiKind::Responses && req.conversation.messages.is_empty() {
        return Err(ApiError::bad_request(api, "input must not be empty").param("input"));
    }
    let mode = req.thinking.resolve(&target, st.engine.ctx());
    let tools_active = req.tools_active();
    let prompt_text = {
        let mem = st.tool_memory.lock().unwrap_or_else(|e| e.into_inner());
        let opts = RenderOptions {
            replay: if st.cfg.tool_memory_max_ids > 0 {
                Some(&mem)
            } else {
                None
            },
        };
        ds4_chat::render_prompt(&req.conversation, mode, opts)
    };
    validate_tool_results(api, &req)?;
    let tool_history = req.conversation.messages.iter().any(|m| match m {
        Message::Tool { .. } => true,
        Message::Assistant { tool_calls, .. } => !tool_calls.is_empty(),
        _ => false,
    });
    Ok(Rendered {
        model,
        mode,
        tools_active,
        tool_history,
        reasoning_summary: req.reasoning_summary,
        prompt_text,
        fields,
    })
}

/// The prompt's token ids, as the engine is given them.
pub fn tokenize_prompt(st: &AppState, prompt_text: &str) -> Vec<u32> {
    st.engine.tokenizer().encode(prompt_text)
}

#[allow(clippy::too_many_arguments)]
pub fn finish_prepare(
    st: &AppState,
    api: ApiKind,
    model: String,
    mode: ThinkMode,
    tools_active: bool,
    reasoning_summary: bool,
    prompt_text: String,
    fields: GenFields,
    raw: Vec<u8>,
) -> Result<Prepared, ApiError> {
    let prompt_tokens = tokenize_prompt(st, &prompt_text);
    let ctx = st.engine.ctx();
    if prompt_tokens.len() >= ctx {
        return Err(ApiError::context_overflow(api, prompt_tokens.len(), ctx));
    }
    if let Some(m) = fields.max_tokens {
        if m < 0 {
            return Err(
                ApiError::bad_request(api, format!("max_tokens must be >= 0 (got {m})"))
                    .param("max_tokens"),
            );
        }
        if m as u64 > ctx as u64 {
            return Err(ApiError::bad_request(
                api,
                format!("max_tokens is {m}, but the configured context size is {ctx} tokens"),
            )
            .param("max_tokens"));
        }
    }
    Ok(Prepared {
        api,
        model,
        mode,
        tools_active,
        tool_history: false,
        reasoning_summary,
        prompt_text,
        prompt_tokens,
        fields,
        raw,
    })
}

/// DSML sampling guard + tool-end stop, fed with the generated bytes.
struct GuardControl {
    guard: SamplingGuard,
    seen: usize,
}

impl GenControl for GuardControl {
    fn observe(&mut self, text: &[u8]) -> Control {
        if text.len() > self.seen {
            self.guard.push(&text[self.seen..]);
            self.seen = text.len();
        }
        if self.guard.should_stop() {
            Control::Stop(Finish::ToolCalls)
        } else {
            Control::Continue {
                greedy: self.guard.greedy(),
            }
        }
    }
}

/// Submit a prepared request to the engine.
pub fn submit(st: &AppState, p: &Prepared, chat_kind: bool) -> Result<JobHandle, ApiError> {
    let f = &p.fields;
    let params = if p.mode.is_thinking() {
        // Thinking modes ignore the client's sampling knobs (spec §1.4).
        SamplingParams {
            seed: f.seed,
            ..SamplingParams::default()
        }
    } else {
        let d = SamplingParams::default();
        SamplingParams {
            temperature: f.temperature.unwrap_or(d.temperature),
            top_p: f.top_p.unwrap_or(d.top_p),
            top_k: f.top_k.unwrap_or(d.top_k),
            min_p: f.min_p.unwrap_or(d.min_p),
            seed: f.seed,
        }
    };
    let control: Option<Box<dyn GenControl>> = if chat_kind && p.tools_active {
        Some(Box::new(GuardControl {
            guard: SamplingGuard::new(p.mode.is_thinking(), true),
            seen: 0,
        }))
    } else {
        None
    };
    let max_tokens = f
        .max_tokens
        .map(|m| m.max(0) as usize)
        .unwrap_or(st.cfg.default_max_tokens);
    let req = GenRequest {
        prompt_text: p.prompt_text.clone(),
        prompt_tokens: p.prompt_tokens.clone(),
        params,
        max_tokens,
        stop: f.stop.clone(),
        control,
        visible: if chat_kind { thinking_visible(p) } else { None },
    };
    st.engine.submit(req).map_err(|e| engine_error(p.api, e))
}

/// Every tool result of an Anthropic / Responses request must answer a call
/// that appears earlier in the same request (there is no server-side
/// conversation state to continue from; spec §1.5).
fn validate_tool_results(api: ApiKind, req: &ChatRequest) -> Result<(), ApiError> {
    if !matches!(api, ApiKind::Anthropic | ApiKind::Responses) {
        return Ok(());
    }
    let mut seen: Vec<&str> = Vec::new();
    for m in &req.conversation.messages {
        match m {
            Message::Assistant { tool_calls, .. } => {
                seen.extend(tool_calls.iter().map(|c| c.id.as_str()))
            }
            Message::Tool {
                tool_call_id: Some(id),
                ..
            } if !id.is_empty() && !seen.contains(&id.as_str()) => {
                let msg = if api == ApiKind::Anthropic {
                    format!("Anthropic continuation state is not available for tool_use_id {id}; retry by replaying the full messages history")
                } else {
                    format!("Responses continuation state is not available for call_id {id}; retry by replaying the full input history")
                };
                return Err(ApiError::bad_request(api, msg));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Spec §2.2 "thinking" binding, generalised. In thinking mode the client
/// usually replays an assistant turn without its reasoning; the live KV keeps
/// it. Remember the text the client will render so the next request
/// continues the live KV (the closing EOS is then prefilled with the suffix):
///
/// * tool-less conversation, EOS after `</think>`: old reasoning is dropped
///   by the renderer: `…<｜Assistant｜></think>content`;
/// * tool context (tools declared or tool history), tool call or EOS: the
///   turn renders as `…<｜Assistant｜><think></think>content<DSML block>`
///   (exact sampled block through the tool memory).
///
/// Clients that do replay the reasoning match the live text itself
/// (`memory-text`), so both kinds of client continue the KV.
fn thinking_visible(p: &Prepared) -> Option<VisibleFn> {
    use ds4_chat::render::{THINK_END, THINK_START};
    if !p.mode.is_thinking() {
        return None;
    }
    let tool_context = p.tools_active || p.tool_history;
    let prompt = p.prompt_text.clone();
    prompt.strip_suffix(THINK_START)?;
    Some(Box::new(move |text: &[u8], finish: &Finish| {
        let ok = match finish {
            Finish::Eos => true,
            Finish::ToolCalls => tool_context,
            _ => false,
        };
        if !ok {
            return None;
        }
        let t = text.strip_prefix(THINK_START.as_bytes()).unwrap_or(text);
        let end = THINK_END.as_bytes();
        let pos = t.windows(end.len()).position(|w| w == end)?;
        let rest = std::str::from_utf8(&t[pos + end.len()..]).ok()?;
        if tool_context {
            Some(format!("{prompt}{THINK_END}{rest}"))
        } else {
            let base = prompt.strip_suffix(THINK_START)?;
            Some(format!("{base}{THINK_END}{rest}"))
        }
    }))
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
    let mut mem = st.tool_memory.lock().unwrap_or_else(|e| e.into_inner());
    for (ids, raw) in blocks {
        if !ids.is_empty() {
            mem.remember(ids, raw);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_stamp_matches_python_utc_strftime() {
        // python3: datetime.fromtimestamp(t, timezone.utc).strftime('%m%d %H:%M:%S ')
        assert_eq!(super::log_stamp_at(0), "0101 00:00:00 ");
        assert_eq!(super::log_stamp_at(951_782_400), "0229 00:00:00 ");
        assert_eq!(super::log_stamp_at(1_795_678_868), "1126 07:41:08 ");
        assert_eq!(super::log_stamp_at(4_107_542_399), "0228 23:59:59 ");
    }
}
