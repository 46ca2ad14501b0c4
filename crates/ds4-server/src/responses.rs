//! POST /v1/responses (OpenAI Responses; spec §1.8, §1.9, chat-and-tools §3.6.3).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use ds4_chat::parser::{Event as PEvent, OutputParser, ParserOptions};
use ds4_chat::Json;
use ds4_engine::{Finish, Usage};

use crate::error::ApiKind;
use crate::jsonw::J;
use crate::openai::{finish_reason, parse_outcome, ParsedStream};
use crate::sse::{self, Projector};
use crate::{
    check_auth, json_ok, now_secs, off_thread, random_hex, remember_tools, start_chat, ApiError,
    AppState, Outcome, Prepared,
};

pub fn usage_responses(u: &Usage) -> J {
    J::obj()
        .with("input_tokens", u.prompt_tokens)
        .with(
            "input_tokens_details",
            J::obj()
                .with("cached_tokens", u.cached_tokens)
                .with("cache_write_tokens", u.cache_write_tokens()),
        )
        .with("output_tokens", u.completion_tokens)
        .with(
            "output_tokens_details",
            J::obj().with("reasoning_tokens", u.reasoning_tokens),
        )
        .with("total_tokens", u.prompt_tokens + u.completion_tokens)
}

/// Overall status from the OpenAI-style finish reason.
fn status_of(fr: &str) -> &'static str {
    match fr {
        "length" => "incomplete",
        "error" => "failed",
        _ => "completed",
    }
}

pub async fn responses(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match inner(st, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn inner(st: Arc<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let api = ApiKind::Responses;
    check_auth(&st, &headers, api)?;
    let started = start_chat(
        &st,
        body,
        api,
        "/v1/responses",
        ds4_chat::responses,
        |json, api| {
            for k in ["previous_response_id", "conversation"] {
                if !matches!(json.get(k), None | Some(Json::Null)) {
                    return Err(ApiError::bad_request(
                        api,
                        format!("{k} is not supported; replay full input instead"),
                    ));
                }
            }
            Ok(WireNames::from_request(json))
        },
    )
    .await?;
    let (p, trace, handle, names) = (
        started.prepared,
        started.trace,
        started.handle,
        started.extra,
    );
    st.next_id();
    let ids = Ids::new();
    let created = now_secs();
    let mut opts = ParserOptions::new(p.mode.is_thinking(), p.tools_active);
    opts.id_prefix = "call_".into();
    if p.fields.stream {
        let proj = ResponsesStream {
            st: st.clone(),
            ids,
            created,
            model: p.model.clone(),
            summary: p.reasoning_summary,
            names,
            parser: OutputParser::new(opts),
            seq: 0,
            next_output: 0,
            reasoning: None,
            message: None,
            reasoning_text: String::new(),
            message_text: String::new(),
            reasoning_done: false,
        };
        return Ok(sse::stream(st.clone(), &p, handle, Box::new(proj), trace).await);
    }
    let o = sse::collect(&st, &p, handle, trace).await?;
    let st2 = st.clone();
    let body = off_thread(api, move || {
        Ok(response_body(&st2, &p, &o, &ids, &names, created))
    })
    .await?;
    Ok(json_ok(body, false))
}

/// The non-streaming response object of a finished generation.
fn response_body(
    st: &AppState,
    p: &Prepared,
    o: &Outcome,
    ids: &Ids,
    names: &WireNames,
    created: i64,
) -> J {
    let (finish, pf, msg) = parse_outcome(st, o, p.mode.is_thinking(), p.tools_active, "call_");
    let fr = finish_reason(&finish, pf);
    let mut output = Vec::new();
    let item_status = if fr == "length" || fr == "error" {
        "incomplete"
    } else {
        "completed"
    };
    if p.reasoning_summary && !msg.reasoning.is_empty() {
        output.push(reasoning_item(&ids.rs, item_status, &msg.reasoning));
    }
    if !msg.content.is_empty() {
        output.push(message_item(&ids.msg, item_status, Some(&msg.content)));
    }
    for c in &msg.tool_calls {
        output.push(call_item(
            names,
            &format!("fc_{}", random_hex(12)),
            item_status,
            &c.name,
            &c.id,
            &c.arguments,
        ));
    }
    response_object(
        &ids.resp,
        created,
        &p.model,
        status_of(fr),
        output,
        Some(&o.usage),
    )
}

/// How parsed call names map back to Responses wire items.
#[derive(Debug, Clone, Default)]
pub struct WireNames {
    /// Flattened `ns + name` → (namespace, name).
    namespaced: Vec<(String, String, String)>,
    /// A `{"type":"tool_search"}` tool was declared.
    tool_search: bool,
}

impl WireNames {
    pub fn from_request(body: &Json) -> WireNames {
        let mut w = WireNames::default();
        let Some(tools) = body.get("tools").and_then(Json::as_array) else {
            return w;
        };
        for t in tools {
            match t.get("type").and_then(Json::as_str) {
                Some("namespace") => {
                    let ns = t.get("name").and_then(Json::as_str).unwrap_or("");
                    for it in t.get("tools").and_then(Json::as_array).unwrap_or(&[]) {
                        let name = it
                            .get("name")
                            .or_else(|| it.get("function").and_then(|f| f.get("name")))
                            .and_then(Json::as_str)
                            .unwrap_or("");
                        w.namespaced.push((
                            format!("{ns}{name}"),
                            ns.to_string(),
                            name.to_string(),
                        ));
                    }
                }
                Some("tool_search") => w.tool_search = true,
                _ => {}
            }
        }
        w
    }

    fn lookup(&self, flat: &str) -> (String, Option<String>) {
        match self.namespaced.iter().find(|(f, _, _)| f == flat) {
            Some((_, ns, name)) => (name.clone(), Some(ns.clone())),
            None => (flat.to_string(), None),
        }
    }

    fn is_tool_search(&self, flat: &str) -> bool {
        self.tool_search
            && flat == "tool_search"
            && !self.namespaced.iter().any(|(f, _, _)| f == flat)
    }
}

/// Output item of one call (function_call, or tool_search_call).
fn call_item(w: &WireNames, fc_id: &str, status: &str, flat: &str, call_id: &str, args: &str) -> J {
    if w.is_tool_search(flat) {
        let a = if ds4_chat::Json::parse(args)
            .map(|v| v.as_object().is_some())
            .unwrap_or(false)
        {
            J::Raw(args.to_string())
        } else {
            J::obj()
        };
        return J::obj()
            .with("id", fc_id)
            .with("type", "tool_search_call")
            .with("status", status)
            .with("call_id", call_id)
            .with("execution", "client")
            .with("arguments", a);
    }
    let (name, ns) = w.lookup(flat);
    let mut j = J::obj()
        .with("id", fc_id)
        .with("type", "function_call")
        .with("status", status)
        .with("name", name);
    if let Some(ns) = ns {
        j.push("namespace", ns);
    }
    j.with("call_id", call_id).with("arguments", args)
}

struct Ids {
    resp: String,
    rs: String,
    msg: String,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            resp: format!("resp_{}", random_hex(12)),
            rs: format!("rs_{}", random_hex(12)),
            msg: format!("msg_{}", random_hex(12)),
        }
    }
}

fn reasoning_item(id: &str, status: &str, text: &str) -> J {
    let summary = if text.is_empty() && status == "in_progress" {
        J::Arr(vec![])
    } else {
        J::Arr(vec![J::obj()
            .with("type", "summary_text")
            .with("text", text)])
    };
    J::obj()
        .with("id", id)
        .with("type", "reasoning")
        .with("status", status)
        .with("summary", summary)
}

fn output_text_part(text: &str) -> J {
    J::obj()
        .with("type", "output_text")
        .with("text", text)
        .with("annotations", J::Arr(vec![]))
}

fn message_item(id: &str, status: &str, text: Option<&str>) -> J {
    let content = match text {
        Some(t) => J::Arr(vec![output_text_part(t)]),
        None => J::Arr(vec![]),
    };
    J::obj()
        .with("id", id)
        .with("type", "message")
        .with("status", status)
        .with("role", "assistant")
        .with("content", content)
}

fn response_object(
    id: &str,
    created: i64,
    model: &str,
    status: &str,
    output: Vec<J>,
    usage: Option<&Usage>,
) -> J {
    let mut j = J::obj()
        .with("id", id)
        .with("object", "response")
        .with("created_at", created)
        .with("status", status)
        .with("model", model);
    match status {
        "incomplete" => j.push("incomplete_details", J::obj().with("reason", "max_tokens")),
        "failed" => j.push(
            "error",
            J::obj()
                .with("code", "server_error")
                .with("message", "generation failed"),
        ),
        _ => {}
    }
    j.push("output", J::Arr(output));
    if let Some(u) = usage {
        j.push("usage", usage_responses(u));
    }
    j
}

struct ResponsesStream {
    st: Arc<AppState>,
    ids: Ids,
    created: i64,
    model: String,
    summary: bool,
    names: WireNames,
    parser: OutputParser,
    seq: u64,
    next_output: usize,
    /// Output index of the reasoning item, once added.
    reasoning: Option<usize>,
    message: Option<usize>,
    reasoning_text: String,
    message_text: String,
    reasoning_done: bool,
}

impl ResponsesStream {
    fn emit(&mut self, ty: &str, rest: J, out: &mut Vec<String>) {
        let mut j = J::obj().with("type", ty).with("sequence_number", self.seq);
        self.seq += 1;
        if let J::Obj(m) = rest {
            for (k, v) in m {
                j.push(&k, v);
            }
        }
        out.push(sse::data(&j.to_json()));
    }
}

impl ParsedStream for ResponsesStream {
    fn parser(&mut self) -> &mut OutputParser {
        &mut self.parser
    }

    fn frames(&mut self, evs: Vec<PEvent>, out: &mut Vec<String>) {
        for e in evs {
            match e {
                PEvent::ReasoningDelta(s) if !s.is_empty() && self.summary => {
                    let oi = match self.reasoning {
                        Some(i) => i,
                        None => {
                            let i = self.next_output;
                            self.next_output += 1;
                            self.reasoning = Some(i);
                            let item = reasoning_item(&self.ids.rs, "in_progress", "");
                            self.emit(
                                "response.output_item.added",
                                J::obj().with("output_index", i).with("item", item),
                                out,
                            );
                            let rs = self.ids.rs.clone();
                            self.emit(
                                "response.reasoning_summary_part.added",
                                J::obj()
                                    .with("item_id", rs)
                                    .with("output_index", i)
                                    .with("summary_index", 0i64)
                                    .with(
                                        "part",
                                        J::obj().with("type", "summary_text").with("text", ""),
                                    ),
                                out,
                            );
                            i
                        }
                    };
                    self.reasoning_text.push_str(&s);
                    let rs = self.ids.rs.clone();
                    self.emit(
                        "response.reasoning_summary_text.delta",
                        J::obj()
                            .with("item_id", rs)
                            .with("output_index", oi)
                            .with("summary_index", 0i64)
                            .with("delta", s),
                        out,
                    );
                }
                PEvent::ReasoningEnd => self.reasoning_done = true,
                PEvent::TextDelta(s) if !s.is_empty() => {
                    let oi = match self.message {
                        Some(i) => i,
                        None => {
                            let i = self.next_output;
                            self.next_output += 1;
                            self.message = Some(i);
                            let item = message_item(&self.ids.msg, "in_progress", None);
                            self.emit(
                                "response.output_item.added",
                                J::obj().with("output_index", i).with("item", item),
                                out,
                            );
                            let mid = self.ids.msg.clone();
                            self.emit(
                                "response.content_part.added",
                                J::obj()
                                    .with("item_id", mid)
                                    .with("output_index", i)
                                    .with("content_index", 0i64)
                                    .with("part", output_text_part("")),
                                out,
                            );
                            i
                        }
                    };
                    self.message_text.push_str(&s);
                    let mid = self.ids.msg.clone();
                    self.emit(
                        "response.output_text.delta",
                        J::obj()
                            .with("item_id", mid)
                            .with("output_index", oi)
                            .with("content_index", 0i64)
                            .with("delta", s),
                        out,
                    );
                }
                _ => {}
            }
        }
    }
}

impl Projector for ResponsesStream {
    fn start(&mut self, _u: &Usage) -> Vec<String> {
        let mut out = Vec::new();
        let r = J::obj()
            .with("id", self.ids.resp.as_str())
            .with("object", "response")
            .with("created_at", self.created)
            .with("status", "in_progress")
            .with("model", self.model.as_str())
            .with("output", J::Arr(vec![]));
        // The official lifecycle: created, then in_progress, both with the empty response.
        self.emit(
            "response.created",
            J::obj().with("response", r.clone()),
            &mut out,
        );
        self.emit(
            "response.in_progress",
            J::obj().with("response", r),
            &mut out,
        );
        out
    }

    fn text(&mut self, s: &str) -> Vec<String> {
        self.text_frames(s)
    }

    fn finish(&mut self, finish: &Finish, usage: &Usage) -> Vec<String> {
        let (mut out, pf) = self.finish_frames(finish);
        let msg = self.parser.message().clone();
        remember_tools(&self.st, &msg.raw_blocks);
        let fr = finish_reason(finish, pf);
        let item_status = if fr == "length" || fr == "error" {
            "incomplete"
        } else {
            "completed"
        };
        // (index, item) of the final output list.
        let mut final_items: Vec<(usize, J)> = Vec::new();
        if let Some(oi) = self.reasoning {
            let rs = self.ids.rs.clone();
            let text = self.reasoning_text.clone();
            self.emit(
                "response.reasoning_summary_text.done",
                J::obj()
                    .with("item_id", rs.as_str())
                    .with("output_index", oi)
                    .with("summary_index", 0i64)
                    .with("text", text.as_str()),
                &mut out,
            );
            self.emit(
                "response.reasoning_summary_part.done",
                J::obj()
                    .with("item_id", rs.as_str())
                    .with("output_index", oi)
                    .with("summary_index", 0i64)
                    .with(
                        "part",
                        J::obj()
                            .with("type", "summary_text")
                            .with("text", text.as_str()),
                    ),
                &mut out,
            );
            let st = if self.reasoning_done {
                "completed"
            } else {
                "incomplete"
            };
            let item = reasoning_item(&rs, st, &text);
            self.emit(
                "response.output_item.done",
                J::obj().with("output_index", oi).with("item", item.clone()),
                &mut out,
            );
            final_items.push((oi, item));
        }
        if let Some(oi) = self.message {
            let mid = self.ids.msg.clone();
            let text = self.message_text.clone();
            self.emit(
                "response.output_text.done",
                J::obj()
                    .with("item_id", mid.as_str())
                    .with("output_index", oi)
                    .with("content_index", 0i64)
                    .with("text", text.as_str()),
                &mut out,
            );
            self.emit(
                "response.content_part.done",
                J::obj()
                    .with("item_id", mid.as_str())
                    .with("output_index", oi)
                    .with("content_index", 0i64)
                    .with("part", output_text_part(&text)),
                &mut out,
            );
            let item = message_item(&mid, item_status, Some(&text));
            self.emit(
                "response.output_item.done",
                J::obj().with("output_index", oi).with("item", item.clone()),
                &mut out,
            );
            final_items.push((oi, item));
        }
        for c in &msg.tool_calls {
            let oi = self.next_output;
            self.next_output += 1;
            let fc = format!("fc_{}", random_hex(12));
            let added = call_item(&self.names, &fc, "in_progress", &c.name, &c.id, "");
            self.emit(
                "response.output_item.added",
                J::obj().with("output_index", oi).with("item", added),
                &mut out,
            );
            if !self.names.is_tool_search(&c.name) {
                self.emit(
                    "response.function_call_arguments.delta",
                    J::obj()
                        .with("item_id", fc.as_str())
                        .with("output_index", oi)
                        .with("delta", c.arguments.as_str()),
                    &mut out,
                );
                let (name, ns) = self.names.lookup(&c.name);
                let mut done = J::obj()
                    .with("item_id", fc.as_str())
                    .with("output_index", oi)
                    .with("name", name);
                if let Some(ns) = ns {
                    done.push("namespace", ns);
                }
                self.emit(
                    "response.function_call_arguments.done",
                    done.with("arguments", c.arguments.as_str()),
                    &mut out,
                );
            }
            let item = call_item(&self.names, &fc, item_status, &c.name, &c.id, &c.arguments);
            self.emit(
                "response.output_item.done",
                J::obj().with("output_index", oi).with("item", item.clone()),
                &mut out,
            );
            final_items.push((oi, item));
        }
        final_items.sort_by_key(|(i, _)| *i);
        let status = status_of(fr);
        let resp = response_object(
            &self.ids.resp,
            self.created,
            &self.model,
            status,
            final_items.into_iter().map(|(_, j)| j).collect(),
            Some(usage),
        );
        let ty = match status {
            "incomplete" => "response.incomplete",
            "failed" => "response.failed",
            _ => "response.completed",
        };
        self.emit(ty, J::obj().with("response", resp), &mut out);
        out
    }

    fn error(&mut self, msg: &str) -> Vec<String> {
        vec![crate::openai::openai_error_frame(msg)]
    }
}
