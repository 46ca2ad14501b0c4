//! ds4-chat: DeepSeek V4 chat format — prompt rendering (official encoder),
//! API adapters, incremental DSML/thinking output parser, sampling guard and
//! exact-DSML replay memory.

pub mod adapters;
pub mod json;
pub mod model;
pub mod parser;
pub mod render;
pub mod replay;

pub use adapters::{
    anthropic_messages, openai_chat, responses, Api, ChatRequest, Effort, ThinkingControls,
};
pub use json::Json;
pub use model::{
    ContentBlock, Conversation, Message, ThinkMode, ToolCall, ToolContent, THINK_MAX_MIN_CONTEXT,
};
pub use parser::{
    DecodeState, EndCause, Event, FinishReason, OutputParser, ParsedMessage, ParsedToolCall,
    ParserOptions, SamplingGuard,
};
pub use render::{render_prompt, render_prompt_tokens, RenderOptions};
pub use replay::ToolMemory;

/// Errors of request parsing and rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatError {
    /// The body is not valid JSON.
    Json(json::JsonError),
    /// The request is well-formed JSON but not an acceptable request; the
    /// message names the offending field.
    InvalidRequest(String),
}

impl ChatError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        ChatError::InvalidRequest(msg.into())
    }
}

impl std::fmt::Display for ChatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatError::Json(e) => write!(f, "invalid JSON request: {e}"),
            ChatError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
        }
    }
}

impl std::error::Error for ChatError {}

impl From<json::JsonError> for ChatError {
    fn from(e: json::JsonError) -> Self {
        ChatError::Json(e)
    }
}

/// `ds4 --dump-prompt REQUEST.json [--ctx N]`: renders an OpenAI
/// chat-completions request body (model alias, messages, tools, thinking
/// controls) to the exact prompt text for a server context of `ctx` tokens.
pub fn dump_prompt(request_json: &[u8], ctx: usize) -> Result<String, ChatError> {
    let body = Json::parse_bytes(request_json)?;
    let req = openai_chat(&body)?;
    let mode = req.think_mode(ctx);
    Ok(render_prompt(
        &req.conversation,
        mode,
        RenderOptions::default(),
    ))
}
