//! API request adapters: OpenAI chat completions, Anthropic messages and
//! OpenAI Responses bodies → the neutral [`Conversation`] plus thinking controls
//! (spec §2.2 input normalization, §2.5 thinking selection; server-and-cli §1.3, §1.5).

use crate::json::Json;
use crate::model::{ContentBlock, Conversation, Message, ThinkMode, ToolCall, ToolContent};
use crate::ChatError;

/// Model id served by ds4.
pub const MODEL_ID: &str = "deepseek-v4-flash";
/// Alias that turns thinking off (unless an explicit control says otherwise).
pub const MODEL_ALIAS_CHAT: &str = "deepseek-chat";
/// Alias that turns thinking on (unless an explicit control says otherwise).
pub const MODEL_ALIAS_REASONER: &str = "deepseek-reasoner";

/// Which wire API a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAiChat,
    Anthropic,
    Responses,
}

/// Reasoning effort names of spec §2.5 after mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// `none`: thinking off.
    None,
    /// `xhigh`, `high`, `medium`, `low`, `minimal`.
    High,
    /// `max`.
    Max,
}

/// Parses an effort name (spec §2.5). `Ok(None)` for JSON null.
pub fn parse_effort(v: &Json, field: &str) -> Result<Option<Effort>, ChatError> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) => match s.as_str() {
            "max" => Ok(Some(Effort::Max)),
            "xhigh" | "high" | "medium" | "low" | "minimal" => Ok(Some(Effort::High)),
            "none" => Ok(Some(Effort::None)),
            other => Err(ChatError::invalid(format!(
                "{field}: unknown reasoning effort {other:?} (expected none, minimal, low, medium, high, xhigh or max)"
            ))),
        },
        _ => Err(ChatError::invalid(format!("{field} must be a string or null"))),
    }
}

/// The thinking-related controls found in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThinkingControls {
    /// Set by an explicit control (`thinking`, `think`, Responses non-null `reasoning.effort`).
    pub enabled: Option<bool>,
    pub effort: Option<Effort>,
    /// Whether an explicit control was present (disables the model-alias rule).
    pub explicit: bool,
}

impl ThinkingControls {
    /// Resolves the final think mode (spec §2.5): default on/high; the model
    /// alias applies only without an explicit control; Max is downgraded to
    /// High when `ctx` < 393216.
    pub fn resolve(&self, model: &str, ctx: usize) -> ThinkMode {
        let mut enabled = self.enabled.unwrap_or(true);
        if !self.explicit {
            if model == MODEL_ALIAS_CHAT {
                enabled = false;
            } else if model == MODEL_ALIAS_REASONER {
                enabled = true;
            }
        }
        let mode = if !enabled || self.effort == Some(Effort::None) {
            ThinkMode::Off
        } else if self.effort == Some(Effort::Max) {
            ThinkMode::Max
        } else {
            ThinkMode::High
        };
        mode.for_context(ctx)
    }
}

/// A request reduced to what rendering and output parsing need.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub api: Api,
    /// The `model` field as sent (default `deepseek-v4-flash`).
    pub model: String,
    /// Messages and tool schemas. `conversation.tools` is empty when no tools
    /// were given or `tool_choice` is none.
    pub conversation: Conversation,
    pub thinking: ThinkingControls,
    /// Tools were declared but disabled by `tool_choice: none`.
    pub tools_disabled: bool,
    /// Responses `reasoning.summary` opted in to reasoning output.
    pub reasoning_summary: bool,
}

impl ChatRequest {
    /// Think mode for a server context size.
    pub fn think_mode(&self, ctx: usize) -> ThinkMode {
        self.thinking.resolve(&self.model, ctx)
    }

    /// Tools are active (schemas rendered, DSML greedy forcing, stop at tool end).
    pub fn tools_active(&self) -> bool {
        !self.conversation.tools.is_empty()
    }
}

fn obj<'a>(v: &'a Json, what: &str) -> Result<&'a [(String, Json)], ChatError> {
    v.as_object()
        .ok_or_else(|| ChatError::invalid(format!("{what} must be a JSON object")))
}

fn opt_str(v: Option<&Json>, what: &str) -> Result<Option<String>, ChatError> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ChatError::invalid(format!("{what} must be a string"))),
    }
}

/// Flattens OpenAI-style content: string, null → "", or an array whose string
/// items and objects' `"text"` members are concatenated with no separator
/// (images and other parts are dropped).
fn flatten_content(v: Option<&Json>, what: &str) -> Result<String, ChatError> {
    match v {
        None | Some(Json::Null) => Ok(String::new()),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(Json::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                match p {
                    Json::String(s) => out.push_str(s),
                    Json::Object(_) => {
                        if let Some(Json::String(t)) = p.get("text") {
                            out.push_str(t);
                        }
                    }
                    _ => {}
                }
            }
            Ok(out)
        }
        Some(_) => Err(ChatError::invalid(format!(
            "{what} must be a string, an array of content parts or null"
        ))),
    }
}

/// Tool-result content: a string stays text; an array becomes blocks
/// (text parts and `[Unsupported <type>]` for the rest, as the official encoder).
fn tool_content(v: Option<&Json>, what: &str) -> Result<ToolContent, ChatError> {
    match v {
        None | Some(Json::Null) => Ok(ToolContent::Text(String::new())),
        Some(Json::String(s)) => Ok(ToolContent::Text(s.clone())),
        Some(Json::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    Json::String(s) => blocks.push(ContentBlock {
                        kind: "text".into(),
                        text: s.clone(),
                    }),
                    Json::Object(_) => {
                        let kind = match p.get("type") {
                            Some(Json::String(t)) => t.clone(),
                            _ => "text".to_string(),
                        };
                        // Responses/OpenAI text part flavours count as text.
                        let kind = match kind.as_str() {
                            "input_text" | "output_text" => "text".to_string(),
                            _ => kind,
                        };
                        let text = match p.get("text") {
                            Some(Json::String(t)) => t.clone(),
                            _ => String::new(),
                        };
                        blocks.push(ContentBlock { kind, text });
                    }
                    _ => {
                        return Err(ChatError::invalid(format!(
                            "{what}: content parts must be strings or objects"
                        )))
                    }
                }
            }
            Ok(ToolContent::Blocks(blocks))
        }
        // Raw JSON output (Responses allows it): its compact text.
        Some(other) => Ok(ToolContent::Text(other.to_compact())),
    }
}

/// Arguments given as a JSON string (used as is) or as a raw JSON value (its
/// compact text). Text that is JSON but not an object (`[1, 2]`, `"s"`, `3`,
/// `null`) is rejected: the official encoder cannot render it (it raises),
/// while non-JSON text renders as one `arguments` string parameter.
fn arguments_text(v: Option<&Json>, what: &str) -> Result<String, ChatError> {
    let text = match v {
        None | Some(Json::Null) => return Ok("{}".to_string()),
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_compact(),
    };
    match Json::parse(&text) {
        Ok(Json::Object(_)) | Err(_) => Ok(text),
        Ok(other) => {
            let kind = match other {
                Json::Array(_) => "an array",
                Json::String(_) => "a string",
                Json::Number(_) => "a number",
                Json::Bool(_) => "a boolean",
                _ => "null",
            };
            Err(ChatError::invalid(format!(
                "{what} must be a JSON object, not {kind}"
            )))
        }
    }
}

/// Normalizes one tool definition to the official function object
/// `{"name", "description", "parameters", …}`.
fn normalize_tool(t: &Json, what: &str) -> Result<Json, ChatError> {
    let members = obj(t, what)?;
    if let Some(f @ Json::Object(_)) = t.get("function") {
        if !matches!(f.get("name"), Some(Json::String(_))) {
            return Err(ChatError::invalid(format!(
                "{what}.function.name must be a string"
            )));
        }
        return Ok(f.clone());
    }
    let Some(Json::String(_)) = t.get("name") else {
        return Err(ChatError::invalid(format!("{what} has no function name")));
    };
    if let Some(schema) = t.get("input_schema") {
        // Anthropic shape → official function shape.
        let mut out = vec![(
            "name".to_string(),
            t.get("name").cloned().unwrap_or(Json::Null),
        )];
        if let Some(d) = t.get("description") {
            out.push(("description".into(), d.clone()));
        }
        out.push(("parameters".into(), schema.clone()));
        return Ok(Json::Object(out));
    }
    // Flat function (Responses style): the object without its "type".
    Ok(Json::Object(
        members
            .iter()
            .filter(|(k, _)| k != "type")
            .cloned()
            .collect(),
    ))
}

/// A `tool_choice` forcing a named function (OpenAI `{"type":"function",
/// "function":{"name":..}}`, Anthropic `{"type":"tool","name":..}`) must name
/// one of the (normalized) `tools`.
fn check_forced_tool(choice: Option<&Json>, tools: &[Json]) -> Result<(), ChatError> {
    let Some(c @ Json::Object(_)) = choice else {
        return Ok(());
    };
    if !matches!(
        c.get("type").and_then(Json::as_str),
        Some("function" | "tool")
    ) {
        return Ok(());
    }
    let Some(name) = c
        .get("function")
        .and_then(|f| f.get("name"))
        .or_else(|| c.get("name"))
    else {
        return Err(ChatError::invalid("tool_choice names no function"));
    };
    let Some(name) = name.as_str() else {
        return Err(ChatError::invalid(
            "tool_choice's function name must be a string",
        ));
    };
    if tools
        .iter()
        .any(|t| t.get("name").and_then(Json::as_str) == Some(name))
    {
        return Ok(());
    }
    Err(ChatError::invalid(format!(
        "tool_choice names the function {name:?}, which is not in tools"
    )))
}

fn parse_tools_array(v: Option<&Json>, what: &str) -> Result<Vec<Json>, ChatError> {
    match v {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, t)| normalize_tool(t, &format!("{what}[{i}]")))
            .collect(),
        Some(_) => Err(ChatError::invalid(format!("{what} must be an array"))),
    }
}

/// `thinking` (bool, null or `{"type": "enabled"|"disabled"}`) and `think` (bool).
fn read_thinking_fields(body: &Json, c: &mut ThinkingControls) -> Result<(), ChatError> {
    match body.get("thinking") {
        None | Some(Json::Null) => {}
        Some(Json::Bool(b)) => {
            c.enabled = Some(*b);
            c.explicit = true;
        }
        Some(t @ Json::Object(_)) => {
            c.explicit = true;
            match t.get("type").and_then(Json::as_str) {
                Some("enabled") => c.enabled = Some(true),
                Some("disabled") => c.enabled = Some(false),
                _ => {}
            }
        }
        Some(_) => {
            return Err(ChatError::invalid(
                "thinking must be a boolean or an object",
            ))
        }
    }
    match body.get("think") {
        None | Some(Json::Null) => {}
        Some(Json::Bool(b)) => {
            c.enabled = Some(*b);
            c.explicit = true;
        }
        Some(_) => return Err(ChatError::invalid("think must be a boolean")),
    }
    Ok(())
}

fn model_of(body: &Json) -> Result<String, ChatError> {
    Ok(opt_str(body.get("model"), "model")?.unwrap_or_else(|| MODEL_ID.to_string()))
}

fn response_format_of(v: Option<&Json>) -> Option<Json> {
    match v {
        None | Some(Json::Null) => None,
        // The default plain-text format adds no schema; an empty object is
        // falsy for the official encoder.
        Some(rf) if rf.get("type").and_then(Json::as_str) == Some("text") => None,
        Some(Json::Object(m)) if m.is_empty() => None,
        Some(rf) => Some(rf.clone()),
    }
}

/// Parses an OpenAI `/v1/chat/completions` body.
pub fn openai_chat(body: &Json) -> Result<ChatRequest, ChatError> {
    obj(body, "request body")?;
    let Some(msgs) = body.get("messages") else {
        return Err(ChatError::invalid("missing messages"));
    };
    let msgs = msgs
        .as_array()
        .ok_or_else(|| ChatError::invalid("messages must be an array"))?;
    let mut conv = Conversation::default();
    for (i, m) in msgs.iter().enumerate() {
        let what = format!("messages[{i}]");
        obj(m, &what)?;
        let role =
            opt_str(m.get("role"), &format!("{what}.role"))?.unwrap_or_else(|| "user".into());
        let msg = match role.as_str() {
            "system" | "developer" => Message::System {
                content: flatten_content(m.get("content"), &format!("{what}.content"))?,
                // Message-level, as the official encoder reads it: any truthy value.
                response_format: m
                    .get("response_format")
                    .filter(|rf| rf.python_truthy())
                    .cloned(),
            },
            "user" => Message::User {
                content: flatten_content(m.get("content"), &format!("{what}.content"))?,
            },
            "assistant" => {
                let mut calls = Vec::new();
                match m.get("tool_calls") {
                    None | Some(Json::Null) => {}
                    Some(Json::Array(tcs)) => {
                        for (j, tc) in tcs.iter().enumerate() {
                            let w = format!("{what}.tool_calls[{j}]");
                            obj(tc, &w)?;
                            let f = tc.get("function").unwrap_or(&Json::Null);
                            let name = opt_str(f.get("name"), &format!("{w}.function.name"))?
                                .ok_or_else(|| {
                                    ChatError::invalid(format!("{w}.function.name is missing"))
                                })?;
                            calls.push(ToolCall {
                                id: opt_str(tc.get("id"), &format!("{w}.id"))?.unwrap_or_default(),
                                name,
                                arguments: match f.get("arguments") {
                                    // Not a string (an object, array, null, …): the
                                    // official encoder cannot `json.loads` it and
                                    // renders it as one JSON `arguments` parameter.
                                    Some(v) if !matches!(v, Json::String(_)) => {
                                        Json::Object(vec![("arguments".to_string(), v.clone())])
                                            .to_compact()
                                    }
                                    v => arguments_text(v, &format!("{w}.function.arguments"))?,
                                },
                            });
                        }
                    }
                    Some(_) => {
                        return Err(ChatError::invalid(format!(
                            "{what}.tool_calls must be an array"
                        )))
                    }
                }
                let reasoning = match m.get("reasoning_content") {
                    None | Some(Json::Null) => None,
                    r => Some(flatten_content(r, &format!("{what}.reasoning_content"))?),
                };
                Message::Assistant {
                    content: flatten_content(m.get("content"), &format!("{what}.content"))?,
                    reasoning,
                    tool_calls: calls,
                }
            }
            "tool" | "function" => Message::Tool {
                tool_call_id: opt_str(m.get("tool_call_id"), &format!("{what}.tool_call_id"))?,
                content: tool_content(m.get("content"), &format!("{what}.content"))?,
            },
            other => {
                return Err(ChatError::invalid(format!(
                    "{what}: unknown role {other:?}"
                )))
            }
        };
        conv.messages.push(msg);
    }
    if let Some(rf) = response_format_of(body.get("response_format")) {
        conv.response_format = Some(rf);
    }
    let tools = parse_tools_array(body.get("tools"), "tools")?;
    check_forced_tool(body.get("tool_choice"), &tools)?;
    let tools_disabled = match body.get("tool_choice") {
        Some(Json::String(s)) => s == "none",
        Some(t @ Json::Object(_)) => t.get("type").and_then(Json::as_str) == Some("none"),
        _ => false,
    };
    let has_tools = !tools.is_empty();
    if !tools_disabled {
        conv.tools = tools;
    }
    let mut thinking = ThinkingControls::default();
    read_thinking_fields(body, &mut thinking)?;
    if let Some(e) = body.get("reasoning_effort") {
        if let Some(e) = parse_effort(e, "reasoning_effort")? {
            thinking.effort = Some(e);
        }
    }
    Ok(ChatRequest {
        api: Api::OpenAiChat,
        model: model_of(body)?,
        conversation: conv,
        thinking,
        tools_disabled: tools_disabled && has_tools,
        reasoning_summary: false,
    })
}

/// Anthropic system text (the top-level `system` field or the content of a
/// `role: "system"` message): a string, or an array of strings and text
/// blocks joined with `"\n"` unless the text so far already ends in one;
/// parts starting with `"x-anthropic-"` (billing headers) are dropped.
fn anthropic_system_text(v: &Json, what: &str) -> Result<String, ChatError> {
    let parts = match v {
        Json::String(s) => return Ok(s.clone()),
        Json::Array(parts) => parts,
        _ => {
            return Err(ChatError::invalid(format!(
                "{what} must be a string or an array"
            )))
        }
    };
    let mut sys = String::new();
    for (j, p) in parts.iter().enumerate() {
        let text = match p {
            Json::String(s) => s.as_str(),
            Json::Object(_) => match p.get("type").and_then(Json::as_str) {
                None | Some("text") => p.get("text").and_then(Json::as_str).unwrap_or(""),
                Some(t) => {
                    return Err(ChatError::invalid(format!(
                        "{what}[{j}]: block type {t:?} is not supported here (only text blocks)"
                    )))
                }
            },
            _ => {
                return Err(ChatError::invalid(format!(
                    "{what} parts must be strings or text blocks"
                )))
            }
        };
        if text.starts_with("x-anthropic-") {
            continue;
        }
        if !sys.is_empty() && !sys.ends_with('\n') {
            sys.push('\n');
        }
        sys.push_str(text);
    }
    Ok(sys)
}

/// Parses an Anthropic `/v1/messages` body.
pub fn anthropic_messages(body: &Json) -> Result<ChatRequest, ChatError> {
    obj(body, "request body")?;
    let Some(msgs) = body.get("messages") else {
        return Err(ChatError::invalid("missing messages"));
    };
    let msgs = msgs
        .as_array()
        .ok_or_else(|| ChatError::invalid("messages must be an array"))?;
    let mut conv = Conversation::default();
    match body.get("system") {
        None | Some(Json::Null) => {}
        Some(v) => conv
            .messages
            .push(Message::system(anthropic_system_text(v, "system")?)),
    }
    for (i, m) in msgs.iter().enumerate() {
        let what = format!("messages[{i}]");
        obj(m, &what)?;
        let role =
            opt_str(m.get("role"), &format!("{what}.role"))?.unwrap_or_else(|| "user".into());
        let is_assistant = match role.as_str() {
            "assistant" => true,
            "user" => false,
            // Recent Claude Code sends system turns in the middle of the
            // history: rendered in place, as the official encoder renders a
            // system message at that position.
            "system" => {
                let content = match m.get("content") {
                    None | Some(Json::Null) => String::new(),
                    Some(v) => anthropic_system_text(v, &format!("{what}.content"))?,
                };
                conv.messages.push(Message::system(content));
                continue;
            }
            other => {
                return Err(ChatError::invalid(format!(
                    "{what}: unknown role {other:?}"
                )))
            }
        };
        let blocks: Vec<Json> = match m.get("content") {
            None | Some(Json::Null) => vec![],
            Some(Json::String(s)) => vec![Json::Object(vec![
                ("type".into(), Json::String("text".into())),
                ("text".into(), Json::String(s.clone())),
            ])],
            Some(Json::Array(a)) => a.clone(),
            Some(_) => {
                return Err(ChatError::invalid(format!(
                    "{what}.content must be a string or an array"
                )))
            }
        };
        if is_assistant {
            let mut content = String::new();
            let mut reasoning: Option<String> = None;
            let mut calls = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let w = format!("{what}.content[{j}]");
                match b.get("type").and_then(Json::as_str) {
                    Some("text") => {
                        content.push_str(b.get("text").and_then(Json::as_str).unwrap_or(""))
                    }
                    Some("thinking") => reasoning
                        .get_or_insert_with(String::new)
                        .push_str(b.get("thinking").and_then(Json::as_str).unwrap_or("")),
                    Some("tool_use") => calls.push(ToolCall {
                        id: opt_str(b.get("id"), &format!("{w}.id"))?.unwrap_or_default(),
                        name: opt_str(b.get("name"), &format!("{w}.name"))?
                            .ok_or_else(|| ChatError::invalid(format!("{w}.name is missing")))?,
                        arguments: match b.get("input") {
                            None | Some(Json::Null) => "{}".into(),
                            Some(v) => v.to_compact(),
                        },
                    }),
                    _ => {}
                }
            }
            conv.messages.push(Message::Assistant {
                content,
                reasoning,
                tool_calls: calls,
            });
        } else {
            // Each text block and each tool_result becomes its own neutral
            // message; the official merge joins them into one user turn.
            let mut any = false;
            for (j, b) in blocks.iter().enumerate() {
                let w = format!("{what}.content[{j}]");
                match b.get("type").and_then(Json::as_str) {
                    Some("text") => {
                        any = true;
                        conv.messages.push(Message::user(
                            b.get("text")
                                .and_then(Json::as_str)
                                .unwrap_or("")
                                .to_string(),
                        ));
                    }
                    Some("tool_result") => {
                        any = true;
                        conv.messages.push(Message::Tool {
                            tool_call_id: opt_str(
                                b.get("tool_use_id"),
                                &format!("{w}.tool_use_id"),
                            )?,
                            content: tool_content(b.get("content"), &format!("{w}.content"))?,
                        });
                    }
                    _ => {}
                }
            }
            if !any {
                conv.messages.push(Message::user(String::new()));
            }
        }
    }
    let tools = parse_tools_array(body.get("tools"), "tools")?;
    check_forced_tool(body.get("tool_choice"), &tools)?;
    let tools_disabled = match body.get("tool_choice") {
        Some(t @ Json::Object(_)) => t.get("type").and_then(Json::as_str) == Some("none"),
        Some(Json::String(s)) => s == "none",
        _ => false,
    };
    let has_tools = !tools.is_empty();
    if !tools_disabled {
        conv.tools = tools;
    }
    let mut thinking = ThinkingControls::default();
    read_thinking_fields(body, &mut thinking)?;
    if let Some(oc) = body.get("output_config") {
        if let Some(e) = oc.get("effort") {
            if let Some(e) = parse_effort(e, "output_config.effort")? {
                thinking.effort = Some(e);
            }
        }
    }
    if let Some(e) = body.get("reasoning_effort") {
        if let Some(e) = parse_effort(e, "reasoning_effort")? {
            thinking.effort = Some(e);
        }
    }
    Ok(ChatRequest {
        api: Api::Anthropic,
        model: model_of(body)?,
        conversation: conv,
        thinking,
        tools_disabled: tools_disabled && has_tools,
        reasoning_summary: false,
    })
}

/// Responses tools: flat functions, wrapped functions, namespaces (flattened to
/// `ns + name`) and `tool_search`. Hosted tools without a function name are skipped.
fn responses_tools(v: Option<&Json>, out: &mut Vec<Json>) -> Result<(), ChatError> {
    let tools = match v {
        None | Some(Json::Null) => return Ok(()),
        Some(Json::Array(a)) => a,
        Some(_) => return Err(ChatError::invalid("tools must be an array")),
    };
    for (i, t) in tools.iter().enumerate() {
        let what = format!("tools[{i}]");
        obj(t, &what)?;
        match t.get("type").and_then(Json::as_str) {
            Some("namespace") => {
                let ns = t.get("name").and_then(Json::as_str).unwrap_or("");
                let inner = t.get("tools").and_then(Json::as_array).unwrap_or(&[]);
                for (j, it) in inner.iter().enumerate() {
                    let f = normalize_tool(it, &format!("{what}.tools[{j}]"))?;
                    let name = f.get("name").and_then(Json::as_str).unwrap_or("");
                    let mut members =
                        vec![("name".to_string(), Json::String(format!("{ns}{name}")))];
                    if let Some(d) = f.get("description") {
                        members.push(("description".into(), d.clone()));
                    }
                    if let Some(p) = f.get("parameters") {
                        members.push(("parameters".into(), p.clone()));
                    }
                    out.push(Json::Object(members));
                }
            }
            Some("tool_search") => {
                // As ds4 synthesizes it (defaults when the client gives none).
                let description = match t.get("description") {
                    Some(d @ Json::String(_)) => d.clone(),
                    _ => Json::String("Search available tools.".into()),
                };
                let parameters = match t.get("parameters") {
                    Some(p @ Json::Object(_)) => p.clone(),
                    _ => Json::Object(vec![
                        ("type".into(), Json::String("object".into())),
                        ("properties".into(), Json::Object(vec![])),
                    ]),
                };
                out.push(Json::Object(vec![
                    ("name".to_string(), Json::String("tool_search".into())),
                    ("description".into(), description),
                    ("parameters".into(), parameters),
                ]));
            }
            _ => {
                if t.get("function").is_some() || t.get("name").is_some() {
                    out.push(normalize_tool(t, &what)?);
                }
            }
        }
    }
    Ok(())
}

fn responses_message_text(m: &Json, what: &str) -> Result<String, ChatError> {
    match m.get("content") {
        None | Some(Json::Null) => Ok(String::new()),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(Json::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let ty = p.get("type").and_then(Json::as_str);
                match ty {
                    Some(
                        "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text",
                    ) => match p.get("text") {
                        Some(Json::String(t)) => out.push_str(t),
                        None | Some(Json::Null) => {}
                        Some(_) => {
                            return Err(ChatError::invalid(format!(
                                "{what}.content[{j}].text must be a string"
                            )))
                        }
                    },
                    other => {
                        return Err(ChatError::invalid(format!(
                            "{what}.content[{j}]: unsupported content type {}",
                            other.unwrap_or("(none)")
                        )))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(ChatError::invalid(format!(
            "{what}.content must be a string or an array"
        ))),
    }
}

fn texts_of(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(|p| p.get("text").and_then(Json::as_str).map(str::to_string))
        .collect()
}

/// Parses an OpenAI `/v1/responses` body.
pub fn responses(body: &Json) -> Result<ChatRequest, ChatError> {
    obj(body, "request body")?;
    for key in ["previous_response_id", "conversation"] {
        if body.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ChatError::invalid(format!(
                "{key} is not supported; replay full input instead"
            )));
        }
    }
    let mut conv = Conversation::default();
    if let Some(instr) = opt_str(body.get("instructions"), "instructions")? {
        if !instr.is_empty() {
            conv.messages.push(Message::system(instr));
        }
    }
    let mut tools = Vec::new();
    responses_tools(body.get("tools"), &mut tools)?;
    let input = body
        .get("input")
        .ok_or_else(|| ChatError::invalid("missing input"))?;
    match input {
        Json::String(s) => conv.messages.push(Message::user(s.clone())),
        Json::Array(items) => {
            let mut pending_reasoning: Option<String> = None;
            // Whether the last pushed message is an assistant that later calls may join.
            let mut assistant_open = false;
            for (i, it) in items.iter().enumerate() {
                let what = format!("input[{i}]");
                obj(it, &what)?;
                if let Some(st) = it.get("status") {
                    if !st.is_null() && st.as_str() != Some("completed") {
                        return Err(ChatError::invalid(format!(
                            "{what}: status must be \"completed\""
                        )));
                    }
                }
                let ty = it.get("type").and_then(Json::as_str).unwrap_or("message");
                let call_name = match ty {
                    "function_call" | "custom_tool_call" => None,
                    "local_shell_call" => Some("local_shell"),
                    "web_search_call" => Some("web_search_call"),
                    "tool_search_call" => Some("tool_search"),
                    "image_generation_call" => Some("image_generation_call"),
                    _ => Some(""),
                };
                match ty {
                    "message" => {
                        let role = opt_str(it.get("role"), &format!("{what}.role"))?
                            .unwrap_or_else(|| "user".into());
                        let text = responses_message_text(it, &what)?;
                        match role.as_str() {
                            "system" | "developer" => conv.messages.push(Message::system(text)),
                            "user" => {
                                flush_reasoning(&mut conv, &mut pending_reasoning);
                                conv.messages.push(Message::user(text));
                                assistant_open = false;
                                continue;
                            }
                            "assistant" => {
                                conv.messages.push(Message::Assistant {
                                    content: text,
                                    reasoning: pending_reasoning.take(),
                                    tool_calls: Vec::new(),
                                });
                                assistant_open = true;
                                continue;
                            }
                            other => {
                                return Err(ChatError::invalid(format!(
                                    "{what}: unknown role {other:?}"
                                )))
                            }
                        }
                    }
                    "reasoning" => {
                        let mut parts = texts_of(it.get("summary"));
                        parts.extend(texts_of(it.get("content")));
                        let r = parts.join("\n");
                        match &mut pending_reasoning {
                            Some(p) => {
                                p.push('\n');
                                p.push_str(&r);
                            }
                            None => pending_reasoning = Some(r),
                        }
                        continue;
                    }
                    "function_call"
                    | "custom_tool_call"
                    | "local_shell_call"
                    | "web_search_call"
                    | "tool_search_call"
                    | "image_generation_call" => {
                        let id = match opt_str(it.get("call_id"), &format!("{what}.call_id"))? {
                            Some(id) => id,
                            None => {
                                opt_str(it.get("id"), &format!("{what}.id"))?.unwrap_or_default()
                            }
                        };
                        let name = match call_name {
                            Some(n) => n.to_string(),
                            None => {
                                let n = opt_str(it.get("name"), &format!("{what}.name"))?
                                    .ok_or_else(|| {
                                        ChatError::invalid(format!("{what}.name is missing"))
                                    })?;
                                match opt_str(it.get("namespace"), &format!("{what}.namespace"))? {
                                    Some(ns) => format!("{ns}{n}"),
                                    None => n,
                                }
                            }
                        };
                        let args = it
                            .get("arguments")
                            .or_else(|| it.get("input"))
                            .or_else(|| it.get("action"));
                        let call = ToolCall {
                            id,
                            name,
                            arguments: arguments_text(args, &format!("{what}.arguments"))?,
                        };
                        if assistant_open && pending_reasoning.is_none() {
                            if let Some(Message::Assistant { tool_calls, .. }) =
                                conv.messages.last_mut()
                            {
                                tool_calls.push(call);
                                continue;
                            }
                        }
                        conv.messages.push(Message::Assistant {
                            content: String::new(),
                            reasoning: pending_reasoning.take(),
                            tool_calls: vec![call],
                        });
                        assistant_open = true;
                        continue;
                    }
                    "compaction" | "context_compaction" => continue,
                    t if t.ends_with("_output") => {
                        flush_reasoning(&mut conv, &mut pending_reasoning);
                        if t == "tool_search_output" {
                            responses_tools(it.get("tools"), &mut tools)?;
                        }
                        let out = it.get("output").or_else(|| it.get("tools"));
                        conv.messages.push(Message::Tool {
                            tool_call_id: match opt_str(
                                it.get("call_id"),
                                &format!("{what}.call_id"),
                            )? {
                                Some(id) => Some(id),
                                None => opt_str(it.get("id"), &format!("{what}.id"))?,
                            },
                            content: tool_content(out, &format!("{what}.output"))?,
                        });
                    }
                    other => {
                        return Err(ChatError::invalid(format!(
                            "{what}: unsupported item type {other:?}"
                        )))
                    }
                }
                assistant_open = false;
            }
            flush_reasoning(&mut conv, &mut pending_reasoning);
        }
        _ => return Err(ChatError::invalid("input must be a string or an array")),
    }
    let tools_disabled = match body.get("tool_choice") {
        None | Some(Json::Null) => false,
        Some(Json::String(s)) if s == "auto" => false,
        Some(Json::String(s)) if s == "none" => true,
        Some(Json::String(s)) => {
            return Err(ChatError::invalid(format!("tool_choice={s} not supported")))
        }
        Some(_) => return Err(ChatError::invalid("forced tool_choice not supported")),
    };
    let has_tools = !tools.is_empty();
    if !tools_disabled {
        conv.tools = tools;
    }
    let mut thinking = ThinkingControls::default();
    let mut reasoning_summary = false;
    if let Some(r) = body.get("reasoning") {
        if !r.is_null() {
            obj(r, "reasoning")?;
            if let Some(e) = r.get("effort") {
                if let Some(e) = parse_effort(e, "reasoning.effort")? {
                    thinking.effort = Some(e);
                    thinking.explicit = true;
                }
            }
            reasoning_summary = matches!(
                r.get("summary").and_then(Json::as_str),
                Some("auto" | "concise" | "detailed")
            );
        }
    }
    Ok(ChatRequest {
        api: Api::Responses,
        model: model_of(body)?,
        conversation: conv,
        thinking,
        tools_disabled: tools_disabled && has_tools,
        reasoning_summary,
    })
}

fn flush_reasoning(conv: &mut Conversation, pending: &mut Option<String>) {
    if let Some(r) = pending.take() {
        conv.messages.push(Message::Assistant {
            content: String::new(),
            reasoning: Some(r),
            tool_calls: Vec::new(),
        });
    }
}
