//! Request preparation: reading and parsing the body, validating, rendering
//! and tokenising the prompt, and submitting it to the engine.
//!
//! Everything CPU-heavy here (JSON parsing of bodies up to `max_body_bytes`,
//! adapters, rendering, tokenisation, trace records) runs on tokio's blocking
//! pool through [`off_thread`] / [`start_chat`], never on an async worker
//! thread, so one expensive request cannot stall other streams or `/health`.
//! The tool memory's lock is held only for the id lookups ([`replay_snapshot`])
//! and inserts ([`crate::remember_tools`]), never while rendering.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;

use ds4_chat::parser::SamplingGuard;
use ds4_chat::{ChatError, ChatRequest, Json, Message, RenderOptions, ThinkMode, ToolMemory};
use ds4_engine::{Control, Finish, GenControl, GenRequest, JobHandle, SamplingParams, VisibleFn};

use crate::params::{parse_gen_fields, GenFields};
use crate::{engine_error, trace_begin, unknown_model, ApiError, ApiKind, AppState, MODEL_ID};

/// Run CPU-heavy request work on tokio's blocking pool and wait for it
/// without occupying an async worker thread. A panic in `f` becomes a 500.
pub async fn off_thread<T, F>(api: ApiKind, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            api,
            format!("request preparation failed: {e}"),
        )),
    }
}

/// Read the body up to the size limit (413 beyond it). Parsing is separate
/// ([`parse_json`]) so that it can run off the async threads.
pub async fn read_body(st: &AppState, body: Body, api: ApiKind) -> Result<Bytes, ApiError> {
    let limit = st.cfg.max_body_bytes;
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_big = std::error::Error::source(&e)
                .map(|s| s.to_string().contains("length limit"))
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            Err(if too_big {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    api,
                    format!("request body too large: the limit is {limit} bytes"),
                )
            } else {
                ApiError::bad_request(api, format!("bad HTTP request: {e}"))
            })
        }
    }
}

/// Parse a request body; it must be a JSON object (CPU-heavy for big bodies:
/// call it inside [`off_thread`]).
pub fn parse_json(bytes: &[u8], api: ApiKind) -> Result<Json, ApiError> {
    let v = Json::parse_bytes(bytes)
        .map_err(|e| ApiError::bad_request(api, format!("invalid JSON request: {e}")))?;
    if v.as_object().is_none() {
        return Err(ApiError::bad_request(
            api,
            "invalid JSON request: the body must be a JSON object",
        ));
    }
    Ok(v)
}

/// A chat-kind request accepted by the engine.
pub struct Started<X> {
    pub prepared: Prepared,
    pub trace: Option<u64>,
    pub handle: JobHandle,
    /// What the route's `check` extracted from the body.
    pub extra: X,
}

/// The whole front half of a chat-kind route: read the body, then on the
/// blocking pool parse it, run the route's own `check` (extra validation and
/// values it needs from the body), prepare, start the trace record and submit.
pub async fn start_chat<X: Send + 'static>(
    st: &Arc<AppState>,
    body: Body,
    api: ApiKind,
    route: &'static str,
    adapt: fn(&Json) -> Result<ChatRequest, ChatError>,
    check: fn(&Json, ApiKind) -> Result<X, ApiError>,
) -> Result<Started<X>, ApiError> {
    let bytes = read_body(st, body, api).await?;
    let st = st.clone();
    off_thread(api, move || {
        let json = parse_json(&bytes, api)?;
        let extra = check(&json, api)?;
        let raw = if st.tracing() {
            bytes.to_vec()
        } else {
            Vec::new()
        };
        let prepared = prepare_chat(&st, &json, raw, api, adapt)?;
        drop(json);
        let trace = trace_begin(&st, &prepared, route);
        let handle = submit(&st, &prepared, true)?;
        Ok(Started {
            prepared,
            trace,
            handle,
            extra,
        })
    })
    .await
}

/// Tool memory entries for the calls the conversation replays: the lock is
/// held for these hash lookups only; rendering then reads the snapshot.
pub fn replay_snapshot(st: &AppState, req: &ChatRequest) -> Option<ToolMemory> {
    if st.cfg.tool_memory_max_ids == 0 {
        return None;
    }
    let ids = req.conversation.messages.iter().flat_map(|m| match m {
        Message::Assistant { tool_calls, .. } => tool_calls.as_slice(),
        _ => &[],
    });
    let ids: Vec<&str> = ids.map(|c| c.id.as_str()).collect();
    if ids.is_empty() {
        return None;
    }
    let found = {
        let mem = st.tool_memory.lock().unwrap_or_else(|e| e.into_inner());
        mem.lookup(ids)
    };
    Some(ToolMemory::from_entries(found))
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
    /// Raw request body, for the trace record (empty when `--trace` is off).
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
    let replay = replay_snapshot(st, &req);
    let opts = RenderOptions {
        replay: replay.as_ref(),
    };
    let prompt_text = ds4_chat::render_prompt(&req.conversation, mode, opts);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_thread_runs_the_work_and_turns_a_panic_into_a_500() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ok = rt.block_on(off_thread(ApiKind::Chat, || Ok(41 + 1)));
        assert_eq!(ok.unwrap(), 42);
        let refused: Result<(), ApiError> = rt.block_on(off_thread(ApiKind::Chat, || {
            Err(ApiError::bad_request(ApiKind::Chat, "no"))
        }));
        assert_eq!(refused.unwrap_err().status, StatusCode::BAD_REQUEST);
        let panicked: Result<(), ApiError> =
            rt.block_on(off_thread(ApiKind::Anthropic, || panic!("boom")));
        let e = panicked.unwrap_err();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.api, ApiKind::Anthropic);
        assert!(
            e.message.contains("request preparation failed"),
            "{}",
            e.message
        );
    }

    #[test]
    fn parse_json_refuses_invalid_and_non_object_bodies() {
        let e = parse_json(b"{\"a\":", ApiKind::Chat).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with("invalid JSON request"),
            "{}",
            e.message
        );
        let e = parse_json(b"[1]", ApiKind::Chat).unwrap_err();
        assert!(e.message.contains("must be a JSON object"), "{}", e.message);
        assert!(parse_json(b"{\"a\":1}", ApiKind::Chat).is_ok());
    }
}
