//! POST /v1/chat/completions and /v1/completions (spec §1.8, §1.9).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use ds4_chat::parser::{
    EndCause, Event as PEvent, FinishReason, OutputParser, ParsedMessage, ParserOptions,
};
use ds4_chat::Json;
use ds4_engine::{Finish, Usage};

use crate::error::ApiKind;
use crate::jsonw::J;
use crate::sse::{self, Projector};
use crate::{
    check_auth, finish_prepare, json_ok, now_secs, off_thread, parse_gen_fields, parse_json,
    read_body, remember_tools, request_model, start_chat, submit, trace_begin, ApiError, AppState,
    Outcome, Prepared,
};

/// Engine finish → parser end cause.
pub fn end_cause(f: &Finish) -> EndCause {
    if *f == Finish::Length {
        EndCause::Length
    } else {
        EndCause::Stop
    }
}

/// Final OpenAI finish reason from the engine's finish and the parser's.
pub fn finish_reason(engine: &Finish, parsed: Option<FinishReason>) -> &'static str {
    match engine {
        Finish::Error(_) | Finish::Cancelled => "error",
        _ => match parsed {
            Some(FinishReason::ToolCalls) => "tool_calls",
            Some(FinishReason::Length) => "length",
            Some(FinishReason::Error) => "error",
            Some(FinishReason::Stop) => "stop",
            None => {
                if *engine == Finish::Length {
                    "length"
                } else {
                    "stop"
                }
            }
        },
    }
}

pub fn parsed_finish(events: &[PEvent], msg: &ParsedMessage) -> Option<FinishReason> {
    events
        .iter()
        .rev()
        .find_map(|e| {
            if let PEvent::Finish { reason, .. } = e {
                Some(*reason)
            } else {
                None
            }
        })
        .or(msg.finish.as_ref().map(|f| f.0))
}

/// A stream encoder fed through the DSML output parser: `frames` turns parser events
/// into the API's SSE frames; the provided methods drive the parser for
/// [`Projector::text`] and [`Projector::finish`].
pub trait ParsedStream {
    fn parser(&mut self) -> &mut OutputParser;
    fn frames(&mut self, evs: Vec<PEvent>, out: &mut Vec<String>);

    /// Frames for newly generated text.
    fn text_frames(&mut self, s: &str) -> Vec<String> {
        let evs = self.parser().push(s.as_bytes());
        let mut out = Vec::new();
        self.frames(evs, &mut out);
        out
    }

    /// Ends the parse: frames for its last events and the parser's finish reason.
    fn finish_frames(&mut self, finish: &Finish) -> (Vec<String>, Option<FinishReason>) {
        let evs = self.parser().finish_with(end_cause(finish));
        let pf = parsed_finish(&evs, self.parser().message());
        let mut out = Vec::new();
        self.frames(evs, &mut out);
        (out, pf)
    }
}

pub fn usage_openai(u: &Usage) -> J {
    J::obj()
        .with("prompt_tokens", u.prompt_tokens)
        .with("completion_tokens", u.completion_tokens)
        .with("total_tokens", u.prompt_tokens + u.completion_tokens)
        .with(
            "prompt_tokens_details",
            J::obj()
                .with("cached_tokens", u.cached_tokens)
                .with("cache_write_tokens", u.cache_write_tokens()),
        )
        .with(
            "completion_tokens_details",
            J::obj().with("reasoning_tokens", u.reasoning_tokens),
        )
}

/// `event: error` frame of the OpenAI-style APIs.
pub fn openai_error_frame(msg: &str) -> String {
    sse::event(
        "error",
        &J::obj()
            .with(
                "error",
                J::obj().with("message", msg).with("type", "server_error"),
            )
            .to_json(),
    )
}

/// Parse a finished generation (non-streaming).
/// Parse a collected (non-streaming) outcome and remember its tool blocks: the engine's
/// finish (Eos when absent), the parser's finish reason and the parsed message.
pub fn parse_outcome(
    st: &AppState,
    o: &Outcome,
    thinking: bool,
    tools_active: bool,
    id_prefix: &str,
) -> (Finish, Option<FinishReason>, ParsedMessage) {
    let finish = o.finish.clone().unwrap_or(Finish::Eos);
    let mut opts = ParserOptions::new(thinking, tools_active);
    opts.id_prefix = id_prefix.to_string();
    let (events, msg) = OutputParser::parse_all(opts, o.text.as_bytes(), end_cause(&finish));
    remember_tools(st, &msg.raw_blocks);
    let pf = parsed_finish(&events, &msg);
    (finish, pf, msg)
}

// ---------------------------------------------------------------- chat

pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let api = ApiKind::Chat;
    match chat_inner(st, headers, body, api).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(
    st: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
    api: ApiKind,
) -> Result<Response, ApiError> {
    check_auth(&st, &headers, api)?;
    let started = start_chat(
        &st,
        body,
        api,
        "/v1/chat/completions",
        ds4_chat::openai_chat,
        |_, _| Ok(()),
    )
    .await?;
    let (p, trace, handle) = (started.prepared, started.trace, started.handle);
    let id = format!("chatcmpl-{}", st.next_id());
    let created = now_secs();
    if p.fields.stream {
        let mut opts = ParserOptions::new(p.mode.is_thinking(), p.tools_active);
        opts.id_prefix = "call_".into();
        let proj = ChatStream {
            st: st.clone(),
            id,
            created,
            model: p.model.clone(),
            parser: OutputParser::new(opts),
            include_usage: p.fields.include_usage,
        };
        return Ok(sse::stream(st.clone(), &p, handle, Box::new(proj), trace).await);
    }
    let o = sse::collect(&st, &p, handle, trace).await?;
    let (thinking, tools) = (p.mode.is_thinking(), p.tools_active);
    let st2 = st.clone();
    let body = off_thread(api, move || {
        Ok(chat_body(&st2, &id, created, &p.model, thinking, tools, &o))
    })
    .await?;
    Ok(json_ok(body, true))
}

fn chat_body(
    st: &AppState,
    id: &str,
    created: i64,
    model: &str,
    thinking: bool,
    tools: bool,
    o: &Outcome,
) -> J {
    let (finish, pf, msg) = parse_outcome(st, o, thinking, tools, "call_");
    let fr = finish_reason(&finish, pf);
    let mut m = J::obj()
        .with("role", "assistant")
        .with("content", msg.content.as_str());
    if !msg.reasoning.is_empty() {
        m.push("reasoning_content", msg.reasoning.as_str());
    }
    if !msg.tool_calls.is_empty() {
        let calls: Vec<J> = msg
            .tool_calls
            .iter()
            .map(|c| {
                J::obj()
                    .with("id", c.id.as_str())
                    .with("type", "function")
                    .with(
                        "function",
                        J::obj()
                            .with("name", c.name.as_str())
                            .with("arguments", c.arguments.as_str()),
                    )
            })
            .collect();
        m.push("tool_calls", J::Arr(calls));
    }
    J::obj()
        .with("id", id)
        .with("object", "chat.completion")
        .with("created", created)
        .with("model", model)
        .with(
            "choices",
            J::Arr(vec![J::obj()
                .with("index", 0i64)
                .with("message", m)
                .with("finish_reason", fr)]),
        )
        .with("usage", usage_openai(&o.usage))
}

struct ChatStream {
    st: Arc<AppState>,
    id: String,
    created: i64,
    model: String,
    parser: OutputParser,
    include_usage: bool,
}

impl ChatStream {
    fn chunk(&self, delta: J, finish: Option<&str>) -> String {
        let choice = J::obj()
            .with("index", 0i64)
            .with("delta", delta)
            .with("finish_reason", finish.map(J::from).unwrap_or(J::Null));
        sse::data(
            &J::obj()
                .with("id", self.id.as_str())
                .with("object", "chat.completion.chunk")
                .with("created", self.created)
                .with("model", self.model.as_str())
                .with("choices", J::Arr(vec![choice]))
                .to_json(),
        )
    }
}

impl ParsedStream for ChatStream {
    fn parser(&mut self) -> &mut OutputParser {
        &mut self.parser
    }

    fn frames(&mut self, evs: Vec<PEvent>, out: &mut Vec<String>) {
        for e in evs {
            match e {
                PEvent::ReasoningDelta(s) if !s.is_empty() => {
                    out.push(self.chunk(J::obj().with("reasoning_content", s), None))
                }
                PEvent::TextDelta(s) if !s.is_empty() => {
                    out.push(self.chunk(J::obj().with("content", s), None))
                }
                PEvent::ToolCallStart { index, id, name } => {
                    let tc = J::obj()
                        .with("index", index)
                        .with("id", id)
                        .with("type", "function")
                        .with(
                            "function",
                            J::obj().with("name", name).with("arguments", ""),
                        );
                    out.push(self.chunk(J::obj().with("tool_calls", J::Arr(vec![tc])), None));
                }
                PEvent::ToolCallArgs { index, delta } if !delta.is_empty() => {
                    let tc = J::obj()
                        .with("index", index)
                        .with("function", J::obj().with("arguments", delta));
                    out.push(self.chunk(J::obj().with("tool_calls", J::Arr(vec![tc])), None));
                }
                _ => {}
            }
        }
    }
}

impl Projector for ChatStream {
    fn start(&mut self, _u: &Usage) -> Vec<String> {
        vec![self.chunk(J::obj().with("role", "assistant"), None)]
    }

    fn text(&mut self, s: &str) -> Vec<String> {
        self.text_frames(s)
    }

    fn finish(&mut self, finish: &Finish, usage: &Usage) -> Vec<String> {
        let (mut out, pf) = self.finish_frames(finish);
        remember_tools(&self.st, &self.parser.message().raw_blocks);
        out.push(self.chunk(J::obj(), Some(finish_reason(finish, pf))));
        if self.include_usage {
            out.push(sse::data(
                &J::obj()
                    .with("id", self.id.as_str())
                    .with("object", "chat.completion.chunk")
                    .with("created", self.created)
                    .with("model", self.model.as_str())
                    .with("choices", J::Arr(vec![]))
                    .with("usage", usage_openai(usage))
                    .to_json(),
            ));
        }
        out.push("data: [DONE]\n\n".into());
        out
    }

    fn error(&mut self, msg: &str) -> Vec<String> {
        vec![openai_error_frame(msg)]
    }
}

// ---------------------------------------------------------------- completions

pub async fn completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match completions_inner(st, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn completions_inner(
    st: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let api = ApiKind::Completions;
    check_auth(&st, &headers, api)?;
    let bytes = read_body(&st, body, api).await?;
    let st2 = st.clone();
    let (p, trace, handle) = off_thread(api, move || {
        let json = parse_json(&bytes, api)?;
        let raw = if st2.tracing() {
            bytes.to_vec()
        } else {
            Vec::new()
        };
        let p = prepare_completion(&st2, &json, raw)?;
        drop(json);
        let trace = trace_begin(&st2, &p, "/v1/completions");
        let handle = submit(&st2, &p, false)?;
        Ok((p, trace, handle))
    })
    .await?;
    let id = format!("cmpl-{}", st.next_id());
    let created = now_secs();
    if p.fields.stream {
        let proj = CompletionStream {
            id,
            created,
            model: p.model.clone(),
            include_usage: p.fields.include_usage,
        };
        return Ok(sse::stream(st.clone(), &p, handle, Box::new(proj), trace).await);
    }
    let o = sse::collect(&st, &p, handle, trace).await?;
    let finish = o.finish.clone().unwrap_or(Finish::Eos);
    let fr = finish_reason(&finish, None);
    let body = J::obj()
        .with("id", id)
        .with("object", "text_completion")
        .with("created", created)
        .with("model", p.model.as_str())
        .with(
            "choices",
            J::Arr(vec![J::obj()
                .with("text", o.text.as_str())
                .with("index", 0i64)
                .with("finish_reason", fr)]),
        )
        .with("usage", usage_openai(&o.usage));
    Ok(json_ok(body, true))
}

/// Validate and render a `/v1/completions` body (chat-wrapped prompt) and
/// tokenise it (CPU-heavy: runs inside [`off_thread`]).
fn prepare_completion(st: &AppState, json: &Json, raw: Vec<u8>) -> Result<Prepared, ApiError> {
    let api = ApiKind::Completions;
    let (model, target) = request_model(st, json, api)?;
    let prompt = match json.get("prompt") {
        None | Some(Json::Null) => return Err(ApiError::bad_request(api, "missing prompt")),
        Some(Json::String(s)) => s.clone(),
        Some(Json::Array(a)) => a.first().and_then(|v| v.as_str()).unwrap_or("").to_string(),
        Some(_) => {
            return Err(ApiError::bad_request(
                api,
                "invalid JSON request: prompt must be a string or an array",
            ))
        }
    };
    let fields = parse_gen_fields(json, api)?;
    // Chat-wrapped prompt: reuse the chat adapter for thinking controls.
    let mut members: Vec<(String, Json)> = vec![(
        "messages".into(),
        Json::Array(vec![
            Json::Object(vec![
                ("role".into(), Json::String("system".into())),
                (
                    "content".into(),
                    Json::String("You are a helpful assistant".into()),
                ),
            ]),
            Json::Object(vec![
                ("role".into(), Json::String("user".into())),
                ("content".into(), Json::String(prompt)),
            ]),
        ]),
    )];
    for k in ["thinking", "think", "reasoning_effort"] {
        if let Some(v) = json.get(k) {
            members.push((k.into(), v.clone()));
        }
    }
    let req =
        ds4_chat::openai_chat(&Json::Object(members)).map_err(|e| crate::chat_error(api, e))?;
    let mode = req.thinking.resolve(&target, st.engine.ctx());
    let prompt_text =
        ds4_chat::render_prompt(&req.conversation, mode, ds4_chat::RenderOptions::default());
    finish_prepare(st, api, model, mode, false, false, prompt_text, fields, raw)
}

struct CompletionStream {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
}

impl CompletionStream {
    fn chunk(&self, choices: Vec<J>, usage: Option<&Usage>) -> String {
        let mut j = J::obj()
            .with("id", self.id.as_str())
            .with("object", "text_completion")
            .with("created", self.created)
            .with("model", self.model.as_str())
            .with("choices", J::Arr(choices));
        if let Some(u) = usage {
            j.push("usage", usage_openai(u));
        }
        sse::data(&j.to_json())
    }
}

impl Projector for CompletionStream {
    fn start(&mut self, _u: &Usage) -> Vec<String> {
        Vec::new()
    }
    fn text(&mut self, s: &str) -> Vec<String> {
        if s.is_empty() {
            return Vec::new();
        }
        vec![self.chunk(
            vec![J::obj()
                .with("text", s)
                .with("index", 0i64)
                .with("finish_reason", J::Null)],
            None,
        )]
    }
    fn finish(&mut self, finish: &Finish, usage: &Usage) -> Vec<String> {
        let mut out = vec![self.chunk(
            vec![J::obj()
                .with("text", "")
                .with("index", 0i64)
                .with("finish_reason", finish_reason(finish, None))],
            None,
        )];
        if self.include_usage {
            out.push(self.chunk(vec![], Some(usage)));
        }
        out.push("data: [DONE]\n\n".into());
        out
    }
    fn error(&mut self, msg: &str) -> Vec<String> {
        vec![openai_error_frame(msg)]
    }
}
