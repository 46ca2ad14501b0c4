//! Prompt rendering in DeepSeek's official V4 format (`encoding_dsv4.encode_messages`,
//! spec §2.1). The golden cases' `rendered` field is the normative output.

use crate::json::Json;
use crate::model::{Conversation, Message, ThinkMode, ToolCall};
use crate::replay::ToolMemory;

pub const BOS: &str = "<｜begin▁of▁sentence｜>";
pub const EOS: &str = "<｜end▁of▁sentence｜>";
pub const USER: &str = "<｜User｜>";
pub const ASSISTANT: &str = "<｜Assistant｜>";
pub const THINK_START: &str = "<think>";
pub const THINK_END: &str = "</think>";
pub const DSML: &str = "｜DSML｜";

/// The Think Max prefix written right after BOS (476 bytes).
pub const REASONING_EFFORT_MAX: &str = "Reasoning Effort: Absolute maximum with no shortcuts permitted.\nYou MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\nExplicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

/// Official tools block text before the schema lines.
pub const TOOLS_PRE: &str = "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools by writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"$TOOL_NAME\">\n<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n...\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"$TOOL_NAME2\">\n...\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>\n\nString parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\nIf thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.\n\nOtherwise, output directly after </think> with tool calls or final response.\n\n### Available Tool Schemas\n\n";
/// Official tools block text after the schema lines.
pub const TOOLS_POST: &str =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";

const RESPONSE_FORMAT_PRE: &str =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

/// Renders a conversation and tokenizes the prompt (added tokens written in the
/// text, e.g. `<｜User｜>` or `｜DSML｜`, become their single ids; no escaping exists).
pub fn render_prompt_tokens(
    conv: &Conversation,
    mode: ThinkMode,
    opts: RenderOptions<'_>,
    tokenizer: &ds4_tokenizer::Tokenizer,
) -> (String, Vec<u32>) {
    let text = render_prompt(conv, mode, opts);
    let ids = tokenizer.encode(&text);
    (text, ids)
}

/// The `/v1/completions` prompt (ds4 wraps the raw prompt as a chat turn, spec §2.2):
/// `BOS + [Think Max prefix] + "You are a helpful assistant" + USER + prompt +
/// ASSISTANT + <think>|</think>`. There is no period after "assistant".
pub fn render_completion_prompt(prompt: &str, mode: ThinkMode) -> String {
    let mut s = String::from(BOS);
    if mode == ThinkMode::Max {
        s.push_str(REASONING_EFFORT_MAX);
    }
    s.push_str("You are a helpful assistant");
    s.push_str(USER);
    s.push_str(prompt);
    s.push_str(ASSISTANT);
    s.push_str(if mode.is_thinking() {
        THINK_START
    } else {
        THINK_END
    });
    s
}

/// Options for [`render_prompt`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions<'a> {
    /// Exact-DSML replay memory: an assistant message whose calls all map to
    /// one remembered block is rendered with those exact bytes.
    pub replay: Option<&'a ToolMemory>,
}

/// The official tools block for a list of function objects.
pub fn tools_block(tools: &[Json]) -> String {
    let mut s = String::from(TOOLS_PRE);
    for (i, t) in tools.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&t.to_python());
    }
    s.push_str(TOOLS_POST);
    s
}

/// The DSML parameters of one call, official layout: the arguments parsed
/// like Python `json.loads`; anything that is not a JSON object becomes a
/// single `arguments` string parameter.
fn dsml_params(arguments: &str) -> String {
    let parsed = Json::parse(arguments).ok();
    let members = parsed.as_ref().and_then(|v| v.python_members());
    let mut lines: Vec<String> = Vec::new();
    match members {
        Some(members) => {
            for (k, v) in members {
                let (is_str, val) = match v {
                    Json::String(s) => ("true", s.clone()),
                    other => ("false", other.to_python()),
                };
                lines.push(format!(
                    "<{DSML}parameter name=\"{k}\" string=\"{is_str}\">{val}</{DSML}parameter>"
                ));
            }
        }
        None => lines.push(format!(
            "<{DSML}parameter name=\"arguments\" string=\"true\">{arguments}</{DSML}parameter>"
        )),
    }
    lines.join("\n")
}

/// The canonical (official) tool-calls block, including the leading `"\n\n"`.
pub fn dsml_block(calls: &[ToolCall]) -> String {
    let invokes: Vec<String> = calls
        .iter()
        .map(|c| {
            format!(
                "<{DSML}invoke name=\"{}\">\n{}\n</{DSML}invoke>",
                c.name,
                dsml_params(&c.arguments)
            )
        })
        .collect();
    format!(
        "\n\n<{DSML}tool_calls>\n{}\n</{DSML}tool_calls>",
        invokes.join("\n")
    )
}

/// Internal message after the official merge step.
enum Block<'a> {
    Text(&'a str),
    ToolResult { id: &'a str, content: String },
}

enum OMsg<'a> {
    System {
        content: &'a str,
        tools: bool,
        response_format: Option<&'a Json>,
    },
    User {
        blocks: Vec<Block<'a>>,
    },
    Assistant {
        content: &'a str,
        reasoning: Option<&'a str>,
        calls: &'a [ToolCall],
    },
}

/// Renders a conversation to the exact prompt text of the official encoder.
///
/// Tools and the request-level `response_format` attach to the first system
/// message (the latter replacing that message's own); if there is none, an
/// empty system message is assumed at the start. Other system messages keep
/// their own `response_format`, as in the official encoder.
pub fn render_prompt(conv: &Conversation, mode: ThinkMode, opts: RenderOptions<'_>) -> String {
    let thinking = mode.is_thinking();
    let has_tools = !conv.tools.is_empty();
    let needs_system = has_tools || conv.response_format.is_some();
    let first_system = conv
        .messages
        .iter()
        .position(|m| matches!(m, Message::System { .. }));

    // Step 1: attach tools, merge tool results and consecutive users.
    let mut msgs: Vec<OMsg<'_>> = Vec::with_capacity(conv.messages.len() + 1);
    if needs_system && first_system.is_none() {
        msgs.push(OMsg::System {
            content: "",
            tools: has_tools,
            response_format: conv.response_format.as_ref(),
        });
    }
    for (idx, m) in conv.messages.iter().enumerate() {
        match m {
            Message::System {
                content,
                response_format,
            } => {
                let attach = needs_system && first_system == Some(idx);
                let rf = match &conv.response_format {
                    Some(req) if attach => Some(req),
                    _ => response_format.as_ref(),
                };
                msgs.push(OMsg::System {
                    content,
                    tools: attach && has_tools,
                    response_format: rf,
                });
            }
            Message::User { content } => {
                if let Some(OMsg::User { blocks }) = msgs.last_mut() {
                    blocks.push(Block::Text(content));
                } else {
                    msgs.push(OMsg::User {
                        blocks: vec![Block::Text(content)],
                    });
                }
            }
            Message::Tool {
                tool_call_id,
                content,
            } => {
                let b = Block::ToolResult {
                    id: tool_call_id.as_deref().unwrap_or(""),
                    content: content.render(),
                };
                if let Some(OMsg::User { blocks }) = msgs.last_mut() {
                    blocks.push(b);
                } else {
                    msgs.push(OMsg::User { blocks: vec![b] });
                }
            }
            Message::Assistant {
                content,
                reasoning,
                tool_calls,
            } => msgs.push(OMsg::Assistant {
                content,
                reasoning: reasoning.as_deref(),
                calls: tool_calls,
            }),
        }
    }

    // Step 2: sort tool results by the call order of the latest assistant with calls.
    let mut order: Vec<&str> = Vec::new();
    for m in msgs.iter_mut() {
        match m {
            OMsg::Assistant { calls, .. } if !calls.is_empty() => {
                order = calls.iter().map(|c| c.id.as_str()).collect();
            }
            OMsg::User { blocks } => {
                let n_tools = blocks
                    .iter()
                    .filter(|b| matches!(b, Block::ToolResult { .. }))
                    .count();
                if n_tools > 1 && order.iter().any(|id| !id.is_empty()) {
                    let pos = |id: &str| -> usize {
                        // Python dict semantics: the last occurrence of an id wins.
                        if id.is_empty() {
                            return 0;
                        }
                        order.iter().rposition(|o| *o == id).unwrap_or(0)
                    };
                    let mut tool_blocks: Vec<Block<'_>> = Vec::with_capacity(n_tools);
                    let mut slots: Vec<bool> = Vec::with_capacity(blocks.len());
                    let mut rest: Vec<Block<'_>> = Vec::new();
                    for b in blocks.drain(..) {
                        if matches!(b, Block::ToolResult { .. }) {
                            slots.push(true);
                            tool_blocks.push(b);
                        } else {
                            slots.push(false);
                            rest.push(b);
                        }
                    }
                    tool_blocks.sort_by_key(|b| match b {
                        Block::ToolResult { id, .. } => pos(id),
                        Block::Text(_) => 0,
                    });
                    let mut t = tool_blocks.into_iter();
                    let mut r = rest.into_iter();
                    for is_tool in slots {
                        let next = if is_tool { t.next() } else { r.next() };
                        if let Some(b) = next {
                            blocks.push(b);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // Steps 3-4: reasoning is dropped before the last user turn unless tools exist.
    let drop = !has_tools;
    let last_user = msgs.iter().rposition(|m| matches!(m, OMsg::User { .. }));
    let after_last_user = |i: usize| last_user.is_none_or(|l| i > l);

    // Step 5: emit.
    let mut out = String::from(BOS);
    let n = msgs.len();
    for (i, m) in msgs.iter().enumerate() {
        if i == 0 && mode == ThinkMode::Max {
            out.push_str(REASONING_EFFORT_MAX);
        }
        match m {
            OMsg::System {
                content,
                tools,
                response_format,
            } => {
                out.push_str(content);
                if *tools {
                    out.push_str("\n\n");
                    out.push_str(&tools_block(&conv.tools));
                }
                if let Some(rf) = response_format {
                    out.push_str("\n\n");
                    out.push_str(RESPONSE_FORMAT_PRE);
                    out.push_str(&rf.to_python());
                }
            }
            OMsg::User { blocks } => {
                out.push_str(USER);
                for (j, b) in blocks.iter().enumerate() {
                    if j > 0 {
                        out.push_str("\n\n");
                    }
                    match b {
                        Block::Text(t) => out.push_str(t),
                        Block::ToolResult { content, .. } => {
                            out.push_str("<tool_result>");
                            out.push_str(content);
                            out.push_str("</tool_result>");
                        }
                    }
                }
            }
            OMsg::Assistant {
                content,
                reasoning,
                calls,
            } => {
                if thinking && (!drop || after_last_user(i)) {
                    out.push_str(reasoning.unwrap_or(""));
                    out.push_str(THINK_END);
                }
                out.push_str(content);
                if !calls.is_empty() {
                    match opts.replay.and_then(|mem| mem.block_for_calls(calls)) {
                        Some(raw) => out.push_str(&raw),
                        None => out.push_str(&dsml_block(calls)),
                    }
                }
                out.push_str(EOS);
            }
        }
        // Transition to the assistant turn.
        let next_is_assistant_or_end = i + 1 >= n || matches!(msgs[i + 1], OMsg::Assistant { .. });
        if next_is_assistant_or_end && matches!(m, OMsg::User { .. }) {
            out.push_str(ASSISTANT);
            let open = thinking && (!drop || last_user.is_none_or(|l| i >= l));
            out.push_str(if open { THINK_START } else { THINK_END });
        }
    }
    out
}
