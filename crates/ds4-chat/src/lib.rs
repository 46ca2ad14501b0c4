//! ds4-chat: the DeepSeek V4 chat format.
//!
//! - [`render_prompt`] / [`render_prompt_tokens`]: a neutral [`Conversation`] →
//!   the exact prompt of DeepSeek's **official** encoder (`encoding_dsv4.py`;
//!   byte-identical to every `chat-golden` case), including Think Max (only
//!   when the context is ≥ [`THINK_MAX_MIN_CONTEXT`]), tool schemas re-serialized
//!   like Python `json.dumps`, reasoning drop/keep, tool-result merging and sorting.
//! - [`openai_chat`], [`anthropic_messages`], [`responses`] (or [`parse_request`]):
//!   API bodies → [`ChatRequest`] (conversation + thinking controls of spec §2.5).
//! - [`OutputParser`]: incremental parser over generated token bytes →
//!   [`Event`]s (reasoning / text deltas, tool call start / argument fragments /
//!   end, finish). [`SamplingGuard`] / [`OutputParser::decode_state`]: greedy
//!   decoding inside DSML structure (spec §3.7).
//! - [`ToolMemory`]: exact-DSML replay (id → sampled block), used by
//!   [`RenderOptions::replay`].
//! - [`dump_prompt`]: `ds4 --dump-prompt REQUEST.json [--ctx N]`.
//!
//! JSON is handled by the small [`json`] module instead of serde_json, because
//! the official format needs Python semantics (exact big integers, float `repr`,
//! duplicate keys "last value, first position", `NaN`/`Infinity`) while the wire
//! format needs the raw number spellings and every duplicate.
//!
//! Checked against the official encoder itself on random conversations
//! (`tests/official_random.rs`, fixture from `tools/chat-oracle/gen_cases.py`):
//! byte-identical prompts, and the parser recovers what the official
//! `parse_message_from_completion_text` recovers from well-formed output.
//!
//! Deliberate differences from ds4-server (spec §2.2/§3.3), all toward the
//! official format or toward losing no data:
//! - prompts follow the official encoder (spec §2.1), not `render_chat_prompt_text`;
//!   OpenAI `developer` messages are system messages; Anthropic tools map to the
//!   function shape `{"name","description","parameters"}`;
//! - `content: null` is empty text for every role (the official encoder writes
//!   a null tool result as `None` and raises on a null user message);
//!   content-part arrays are flattened by concatenating their text parts;
//! - history tool-call arguments that are JSON but not an object are a request
//!   error (the official encoder raises); non-string arguments render as one
//!   JSON `arguments` parameter (as the official encoder does);
//! - the parser parses DSML whether or not tools are active and never streams
//!   DSML as text; text after the first `</think>` is answer text; like the
//!   official parser it does no entity decoding and keeps the content before
//!   `"\n\n<｜DSML｜tool_calls>"` byte for byte;
//! - a `string="false"` value that is not JSON is passed on as a JSON string
//!   (with an [`Event::Warning`]) instead of turning the arguments into `{}`;
//! - on a length cutoff inside reasoning, the reasoning stays reasoning.

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

/// Parses a request body of the given API.
pub fn parse_request(api: Api, body: &[u8]) -> Result<ChatRequest, ChatError> {
    let body = Json::parse_bytes(body)?;
    match api {
        Api::OpenAiChat => openai_chat(&body),
        Api::Anthropic => anthropic_messages(&body),
        Api::Responses => responses(&body),
    }
}

impl ChatRequest {
    /// Output-parser options for this request at the resolved think mode
    /// (`toolu_` ids for Anthropic, `call_` otherwise).
    pub fn parser_options(&self, mode: ThinkMode) -> ParserOptions {
        ParserOptions {
            thinking: mode.is_thinking(),
            tools_active: self.tools_active(),
            id_prefix: if self.api == Api::Anthropic {
                "toolu_"
            } else {
                "call_"
            }
            .to_string(),
        }
    }

    /// Renders this request's prompt.
    pub fn render(&self, mode: ThinkMode, replay: Option<&ToolMemory>) -> String {
        render_prompt(&self.conversation, mode, RenderOptions { replay })
    }
}
