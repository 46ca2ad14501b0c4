//! POST /v1/messages (Anthropic Messages; spec §1.8, §1.9, chat-and-tools §3.6.2).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use ds4_chat::parser::{Event as PEvent, FinishReason, OutputParser, ParserOptions};
use ds4_engine::{Finish, Usage};

use crate::error::ApiKind;
use crate::jsonw::J;
use crate::openai::{finish_reason, parse_outcome, ParsedStream};
use crate::sse::{self, Projector};
use crate::{
    check_auth, json_ok, off_thread, parse_json, random_hex, read_body, remember_tools,
    render_chat, start_chat, tokenize_prompt, ApiError, AppState, Outcome,
};

/// Anthropic `stop_reason` and `stop_sequence` (the matched client stop
/// sequence, else null). Complete tool calls take precedence.
pub fn stop_reason(engine: &Finish, parsed: Option<FinishReason>) -> (&'static str, J) {
    match (finish_reason(engine, parsed), engine) {
        ("tool_calls", _) => ("tool_use", J::Null),
        ("length", _) => ("max_tokens", J::Null),
        (_, Finish::StopSequence(seq)) => ("stop_sequence", J::from(seq.as_str())),
        _ => ("end_turn", J::Null),
    }
}

/// A new Anthropic message id (`msg_` + 24 hex digits).
pub fn message_id() -> String {
    format!("msg_{}", random_hex(12))
}

pub fn usage_anthropic(u: &Usage, with_output: bool) -> J {
    let r = u.cached_tokens.min(u.prompt_tokens);
    let w = u.cache_write_tokens();
    let mut j = J::obj().with("input_tokens", u.prompt_tokens - r - w);
    if with_output {
        j.push("output_tokens", u.completion_tokens);
    } else {
        j.push("output_tokens", 0i64);
    }
    j.with("cache_read_input_tokens", r)
        .with("cache_creation_input_tokens", w)
}

/// Tool input JSON text (a compact object) as a raw JSON value.
fn input_json(args: &str) -> J {
    if ds4_chat::Json::parse(args)
        .map(|v| v.as_object().is_some())
        .unwrap_or(false)
    {
        J::Raw(args.to_string())
    } else {
        J::obj()
    }
}

pub async fn messages(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match inner(st, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn inner(st: Arc<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let api = ApiKind::Anthropic;
    check_auth(&st, &headers, api)?;
    let started = start_chat(
        &st,
        body,
        api,
        "/v1/messages",
        ds4_chat::anthropic_messages,
        |_, _| Ok(()),
    )
    .await?;
    let (p, trace, handle) = (started.prepared, started.trace, started.handle);
    // The per-process response counter advances as for every chat-kind
    // request (as the Responses route does), so OpenAI ids keep their numbers.
    st.next_id();
    let id = message_id();
    if p.fields.stream {
        let mut opts = ParserOptions::new(p.mode.is_thinking(), p.tools_active);
        opts.id_prefix = "toolu_".into();
        let proj = MessagesStream {
            st: st.clone(),
            id,
            model: p.model.clone(),
            parser: OutputParser::new(opts),
            next_index: 0,
            open: None,
            thinking_sent: false,
            text_sent: false,
            tools_sent: 0,
            live_tool_indices: Vec::new(),
        };
        return Ok(sse::stream(st.clone(), &p, handle, Box::new(proj), trace).await);
    }
    let o = sse::collect(&st, &p, handle, trace).await?;
    let (thinking, tools) = (p.mode.is_thinking(), p.tools_active);
    let st2 = st.clone();
    let body = off_thread(api, move || {
        Ok(message_body(&st2, &id, &p.model, thinking, tools, &o))
    })
    .await?;
    Ok(json_ok(body, true))
}

/// POST /v1/messages/count_tokens: the body of `/v1/messages` (max_tokens
/// not needed), rendered as `/v1/messages` renders it; answers
/// `{"input_tokens": N}` with N the prompt's token count. A prompt longer
/// than the context is counted, not refused (the client asks to find out).
pub async fn count_tokens(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let api = ApiKind::Anthropic;
    let r = async {
        check_auth(&st, &headers, api)?;
        let bytes = read_body(&st, body, api).await?;
        let st2 = st.clone();
        let n = off_thread(api, move || {
            let json = parse_json(&bytes, api)?;
            let r = render_chat(&st2, &json, api, ds4_chat::anthropic_messages)?;
            drop(json);
            Ok(tokenize_prompt(&st2, &r.prompt_text).len())
        })
        .await?;
        Ok::<_, ApiError>(json_ok(J::obj().with("input_tokens", n), true))
    };
    match r.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn message_body(
    st: &AppState,
    id: &str,
    model: &str,
    thinking: bool,
    tools: bool,
    o: &Outcome,
) -> J {
    let (finish, pf, msg) = parse_outcome(st, o, thinking, tools, "toolu_");
    let (sr, seq) = stop_reason(&finish, pf);
    let mut content = Vec::new();
    if !msg.reasoning.is_empty() {
        content.push(
            J::obj()
                .with("type", "thinking")
                .with("thinking", msg.reasoning.as_str())
                .with("signature", id),
        );
    }
    if !msg.content.is_empty() {
        content.push(
            J::obj()
                .with("type", "text")
                .with("text", msg.content.as_str()),
        );
    }
    for c in &msg.tool_calls {
        content.push(
            J::obj()
                .with("type", "tool_use")
                .with("id", c.id.as_str())
                .with("name", c.name.as_str())
                .with("input", input_json(&c.arguments)),
        );
    }
    if content.is_empty() || (content.len() == 1 && !msg.reasoning.is_empty()) {
        content.push(J::obj().with("type", "text").with("text", ""));
    }
    J::obj()
        .with("id", id)
        .with("type", "message")
        .with("role", "assistant")
        .with("model", model)
        .with("content", J::Arr(content))
        .with("stop_reason", sr)
        .with("stop_sequence", seq)
        .with("usage", usage_anthropic(&o.usage, true))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking(usize),
    Text(usize),
    Tool(usize),
}

struct MessagesStream {
    st: Arc<AppState>,
    id: String,
    model: String,
    parser: OutputParser,
    next_index: usize,
    open: Option<Open>,
    thinking_sent: bool,
    text_sent: bool,
    tools_sent: usize,
    /// Parser call indices streamed live (completed).
    live_tool_indices: Vec<usize>,
}

impl MessagesStream {
    fn ev(name: &str, j: J) -> String {
        sse::event(name, &j.to_json())
    }

    fn start_block(&mut self, block: J, kind: fn(usize) -> Open, out: &mut Vec<String>) -> usize {
        self.close(out);
        let k = self.next_index;
        self.next_index += 1;
        out.push(Self::ev(
            "content_block_start",
            J::obj()
                .with("type", "content_block_start")
                .with("index", k)
                .with("content_block", block),
        ));
        self.open = Some(kind(k));
        k
    }

    fn delta(&self, k: usize, d: J) -> String {
        Self::ev(
            "content_block_delta",
            J::obj()
                .with("type", "content_block_delta")
                .with("index", k)
                .with("delta", d),
        )
    }

    fn stop(k: usize) -> String {
        Self::ev(
            "content_block_stop",
            J::obj().with("type", "content_block_stop").with("index", k),
        )
    }

    fn close(&mut self, out: &mut Vec<String>) {
        match self.open.take() {
            Some(Open::Thinking(k)) => {
                out.push(
                    self.delta(
                        k,
                        J::obj()
                            .with("type", "signature_delta")
                            .with("signature", self.id.as_str()),
                    ),
                );
                out.push(Self::stop(k));
            }
            Some(Open::Text(k)) | Some(Open::Tool(k)) => out.push(Self::stop(k)),
            None => {}
        }
    }
}

impl ParsedStream for MessagesStream {
    fn parser(&mut self) -> &mut OutputParser {
        &mut self.parser
    }

    fn frames(&mut self, evs: Vec<PEvent>, out: &mut Vec<String>) {
        for e in evs {
            match e {
                PEvent::ReasoningDelta(s) if !s.is_empty() => {
                    let k = match self.open {
                        Some(Open::Thinking(k)) => k,
                        _ => self.start_block(
                            J::obj()
                                .with("type", "thinking")
                                .with("thinking", "")
                                .with("signature", ""),
                            Open::Thinking,
                            out,
                        ),
                    };
                    self.thinking_sent = true;
                    out.push(self.delta(
                        k,
                        J::obj().with("type", "thinking_delta").with("thinking", s),
                    ));
                }
                PEvent::ReasoningEnd => {
                    if matches!(self.open, Some(Open::Thinking(_))) {
                        self.close(out);
                    }
                }
                PEvent::TextDelta(s) if !s.is_empty() => {
                    let k = match self.open {
                        Some(Open::Text(k)) => k,
                        _ => self.start_block(
                            J::obj().with("type", "text").with("text", ""),
                            Open::Text,
                            out,
                        ),
                    };
                    self.text_sent = true;
                    out.push(self.delta(k, J::obj().with("type", "text_delta").with("text", s)));
                }
                PEvent::ToolCallStart { id, name, .. } => {
                    self.start_block(
                        J::obj()
                            .with("type", "tool_use")
                            .with("id", id)
                            .with("name", name)
                            .with("input", J::obj()),
                        Open::Tool,
                        out,
                    );
                    self.tools_sent += 1;
                }
                PEvent::ToolCallArgs { delta, .. } if !delta.is_empty() => {
                    if let Some(Open::Tool(k)) = self.open {
                        out.push(
                            self.delta(
                                k,
                                J::obj()
                                    .with("type", "input_json_delta")
                                    .with("partial_json", delta),
                            ),
                        );
                    }
                }
                PEvent::ToolCallEnd { index, .. } => {
                    if matches!(self.open, Some(Open::Tool(_))) {
                        self.close(out);
                        self.live_tool_indices.push(index);
                    }
                }
                PEvent::DsmlInvalid { .. } => {
                    if matches!(self.open, Some(Open::Tool(_))) {
                        self.close(out);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Projector for MessagesStream {
    fn start(&mut self, u: &Usage) -> Vec<String> {
        let msg = J::obj()
            .with("id", self.id.as_str())
            .with("type", "message")
            .with("role", "assistant")
            .with("model", self.model.as_str())
            .with("content", J::Arr(vec![]))
            .with("stop_reason", J::Null)
            .with("stop_sequence", J::Null)
            .with("usage", usage_anthropic(u, false));
        vec![Self::ev(
            "message_start",
            J::obj().with("type", "message_start").with("message", msg),
        )]
    }

    fn text(&mut self, s: &str) -> Vec<String> {
        self.text_frames(s)
    }

    fn finish(&mut self, finish: &Finish, usage: &Usage) -> Vec<String> {
        let (mut out, pf) = self.finish_frames(finish);
        self.close(&mut out);
        // Calls not streamed live are sent whole.
        let msg = self.parser.message().clone();
        for c in &msg.tool_calls {
            if self.live_tool_indices.contains(&c.index) {
                continue;
            }
            let k = self.start_block(
                J::obj()
                    .with("type", "tool_use")
                    .with("id", c.id.as_str())
                    .with("name", c.name.as_str())
                    .with("input", J::obj()),
                Open::Tool,
                &mut out,
            );
            out.push(
                self.delta(
                    k,
                    J::obj()
                        .with("type", "input_json_delta")
                        .with("partial_json", c.arguments.as_str()),
                ),
            );
            self.close(&mut out);
            self.tools_sent += 1;
        }
        if self.thinking_sent && !self.text_sent && msg.tool_calls.is_empty() {
            self.start_block(
                J::obj().with("type", "text").with("text", ""),
                Open::Text,
                &mut out,
            );
            self.close(&mut out);
        }
        remember_tools(&self.st, &msg.raw_blocks);
        let (sr, seq) = stop_reason(finish, pf);
        out.push(Self::ev(
            "message_delta",
            J::obj()
                .with("type", "message_delta")
                .with(
                    "delta",
                    J::obj().with("stop_reason", sr).with("stop_sequence", seq),
                )
                .with(
                    "usage",
                    J::obj().with("output_tokens", usage.completion_tokens),
                ),
        ));
        out.push(Self::ev(
            "message_stop",
            J::obj().with("type", "message_stop"),
        ));
        out
    }

    fn error(&mut self, msg: &str) -> Vec<String> {
        vec![Self::ev(
            "error",
            J::obj().with("type", "error").with(
                "error",
                J::obj().with("type", "api_error").with("message", msg),
            ),
        )]
    }
}
