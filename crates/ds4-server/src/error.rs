//! HTTP errors in the shape of the API that was called.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::jsonw::J;

/// Which wire API a route speaks (decides error shapes and event formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Chat,
    Completions,
    Responses,
    Anthropic,
    /// Non-generation routes (/v1/models, /health, unknown paths).
    Other,
}

/// Why a request was refused, carried from the error response to the request log.
#[derive(Debug, Clone)]
pub struct RejectReason(pub String);

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub api: ApiKind,
    pub message: String,
    /// Overrides the default error type for the status.
    pub etype: Option<&'static str>,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// Extra members after the standard ones (e.g. `n_prompt_tokens`).
    pub extra: Vec<(String, J)>,
    /// `Retry-After` header (seconds).
    pub retry_after: Option<&'static str>,
    pub cors: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, api: ApiKind, message: impl Into<String>) -> Self {
        ApiError {
            status,
            api,
            message: message.into(),
            etype: None,
            param: None,
            code: None,
            extra: Vec::new(),
            retry_after: None,
            cors: false,
        }
    }
    pub fn bad_request(api: ApiKind, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, api, message)
    }
    pub fn param(mut self, p: &'static str) -> Self {
        self.param = Some(p);
        self
    }
    pub fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }
    pub fn retry_after(mut self, seconds: &'static str) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    pub fn etype(mut self, t: &'static str) -> Self {
        self.etype = Some(t);
        self
    }
    pub fn extra(mut self, k: &str, v: impl Into<J>) -> Self {
        self.extra.push((k.to_string(), v.into()));
        self
    }

    /// 400 for a prompt that does not fit (`context_length_exceeded`).
    pub fn context_overflow(api: ApiKind, n_prompt: usize, n_ctx: usize) -> Self {
        let msg = format!(
            "Prompt has {n_prompt} tokens, but the configured context size is {n_ctx} tokens"
        );
        let mut e = Self::bad_request(api, msg)
            .param(match api {
                ApiKind::Responses => "input",
                ApiKind::Completions => "prompt",
                _ => "messages",
            })
            .code("context_length_exceeded");
        if api == ApiKind::Anthropic {
            e.param = None;
            e.code = None;
        }
        e.extra("n_prompt_tokens", n_prompt).extra("n_ctx", n_ctx)
    }

    fn default_type(&self) -> &'static str {
        let s = self.status.as_u16();
        if self.api == ApiKind::Anthropic {
            match s {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                503 | 529 => "overloaded_error",
                500..=599 => "api_error",
                _ => "invalid_request_error",
            }
        } else {
            match s {
                401 => "authentication_error",
                500..=599 => "server_error",
                _ => "invalid_request_error",
            }
        }
    }

    /// The JSON body (without trailing newline).
    pub fn body(&self) -> J {
        let t = self.etype.unwrap_or_else(|| self.default_type());
        if self.api == ApiKind::Anthropic {
            let mut inner = J::obj()
                .with("type", t)
                .with("message", self.message.as_str());
            for (k, v) in &self.extra {
                inner.push(k, v.clone());
            }
            J::obj().with("type", "error").with("error", inner)
        } else {
            let mut inner = J::obj()
                .with("message", self.message.as_str())
                .with("type", t);
            if let Some(p) = self.param {
                inner.push("param", p);
            }
            if let Some(c) = self.code {
                inner.push("code", c);
            }
            for (k, v) in &self.extra {
                inner.push(k, v.clone());
            }
            J::obj().with("error", inner)
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

pub fn json_response(status: StatusCode, body: String, cors: bool) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if cors {
        crate::add_cors(r.headers_mut());
    }
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.body().to_json();
        body.push('\n');
        let mut r = json_response(self.status, body, self.cors);
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(s));
        }
        r.extensions_mut().insert(RejectReason(self.message));
        r
    }
}
