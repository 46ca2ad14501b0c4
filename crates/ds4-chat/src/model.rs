//! The neutral conversation model every API adapter produces and the renderer consumes.

use crate::json::Json;

/// One tool call made by the assistant.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Client-visible call id (`call_…`, `toolu_…`); may be empty.
    pub id: String,
    pub name: String,
    /// Arguments as JSON text (normally an object). Non-JSON text is allowed
    /// and rendered as a single `arguments` string parameter.
    pub arguments: String,
}

/// One part of a tool result given as a list of blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentBlock {
    /// Block type (`text`, `image`, …).
    pub kind: String,
    /// The text of a `text` block.
    pub text: String,
}

/// Content of a tool result.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolContent {
    Text(String),
    /// Official rendering: text blocks joined with `"\n\n"`, other blocks as
    /// `[Unsupported <type>]`.
    Blocks(Vec<ContentBlock>),
}

impl ToolContent {
    /// The text the official encoder puts inside `<tool_result>…</tool_result>`.
    pub fn render(&self) -> String {
        match self {
            ToolContent::Text(s) => s.clone(),
            ToolContent::Blocks(blocks) => blocks
                .iter()
                .map(|b| {
                    if b.kind == "text" {
                        b.text.clone()
                    } else {
                        format!("[Unsupported {}]", b.kind)
                    }
                })
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
}

/// A conversation message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    System {
        content: String,
        /// The official encoder's message-level `response_format`, rendered
        /// after this message's text exactly as given (any Python-truthy value,
        /// `{"type": "text"}` included).
        response_format: Option<Json>,
    },
    User {
        content: String,
    },
    Assistant {
        content: String,
        /// `None` and `Some("")` render the same (`</think>` alone) when kept.
        reasoning: Option<String>,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        tool_call_id: Option<String>,
        content: ToolContent,
    },
}

impl Message {
    pub fn system(s: impl Into<String>) -> Self {
        Message::System {
            content: s.into(),
            response_format: None,
        }
    }
    pub fn user(s: impl Into<String>) -> Self {
        Message::User { content: s.into() }
    }
    pub fn assistant(s: impl Into<String>) -> Self {
        Message::Assistant {
            content: s.into(),
            reasoning: None,
            tool_calls: Vec::new(),
        }
    }
    pub fn tool(id: impl Into<String>, s: impl Into<String>) -> Self {
        Message::Tool {
            tool_call_id: Some(id.into()),
            content: ToolContent::Text(s.into()),
        }
    }
    pub fn role(&self) -> &'static str {
        match self {
            Message::System { .. } => "system",
            Message::User { .. } => "user",
            Message::Assistant { .. } => "assistant",
            Message::Tool { .. } => "tool",
        }
    }
}

/// A conversation plus request-level rendering inputs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// Tool schemas: each is the *function object* (`{"name", "description",
    /// "parameters", …}`), re-serialized with Python `json.dumps` when rendered.
    /// Empty = no tools block (also used for `tool_choice: "none"`).
    pub tools: Vec<Json>,
    /// Request-level `response_format` (the OpenAI body field; `{"type":
    /// "text"}` and `{}` are already filtered out by the adapter). Rendered
    /// after the first system message's text, in place of that message's own
    /// `response_format`; with no system message an empty one is inserted.
    pub response_format: Option<Json>,
}

/// Think mode after all request controls are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkMode {
    /// Chat (non-thinking): the prompt ends with `</think>`.
    Off,
    /// Thinking, effort high: the prompt ends with `<think>`.
    High,
    /// Thinking with the Think Max prefix.
    Max,
}

/// Think Max needs at least this context size (384 × 1024 tokens), otherwise
/// it is downgraded to High.
pub const THINK_MAX_MIN_CONTEXT: usize = 393_216;

impl ThinkMode {
    pub fn is_thinking(self) -> bool {
        !matches!(self, ThinkMode::Off)
    }

    /// Applies the context rule: Max below [`THINK_MAX_MIN_CONTEXT`] becomes High.
    pub fn for_context(self, ctx: usize) -> ThinkMode {
        if self == ThinkMode::Max && ctx < THINK_MAX_MIN_CONTEXT {
            ThinkMode::High
        } else {
            self
        }
    }
}
