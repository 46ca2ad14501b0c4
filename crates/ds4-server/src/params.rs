//! Generation fields of a request body (spec §1.5): sampling, max tokens,
//! stop sequences, streaming options. Wrong JSON types are rejected with a
//! message naming the field; `null` counts as absent.

use ds4_chat::Json;

use crate::error::{ApiError, ApiKind};

/// Generation-related fields as sent by the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenFields {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    pub stop: Vec<String>,
}

fn num(v: &Json, field: &str, api: ApiKind) -> Result<Option<f64>, ApiError> {
    match v {
        Json::Null => Ok(None),
        Json::Number(_) => match v.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(ApiError::bad_request(
                api,
                format!("invalid JSON request: {field} must be a finite number"),
            )),
        },
        _ => Err(ApiError::bad_request(
            api,
            format!("invalid JSON request: {field} must be a number"),
        )),
    }
}

fn int(v: &Json, field: &str, api: ApiKind) -> Result<Option<i64>, ApiError> {
    Ok(num(v, field, api)?.map(|x| x.clamp(i64::MIN as f64, i64::MAX as f64) as i64))
}

fn boolean(v: &Json, field: &str, api: ApiKind) -> Result<Option<bool>, ApiError> {
    match v {
        Json::Null => Ok(None),
        Json::Bool(b) => Ok(Some(*b)),
        _ => Err(ApiError::bad_request(
            api,
            format!("invalid JSON request: {field} must be a boolean"),
        )),
    }
}

fn stop_list(v: &Json, field: &str, api: ApiKind) -> Result<Vec<String>, ApiError> {
    match v {
        Json::Null => Ok(Vec::new()),
        Json::String(s) => Ok(if s.is_empty() {
            Vec::new()
        } else {
            vec![s.clone()]
        }),
        Json::Array(a) => Ok(a
            .iter()
            .filter_map(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()),
        _ => Err(ApiError::bad_request(
            api,
            format!("invalid JSON request: {field} must be a string or an array of strings"),
        )),
    }
}

/// A number as the official APIs print it in their messages (500, 2.5).
fn shown(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// `x` within `lo..=hi`, else the 400 the official API gives: OpenAI's
/// `Invalid 'temperature': decimal above maximum value. ...` with its param
/// and code, Anthropic's `temperature: range: 0..1`.
fn in_range(x: f64, field: &'static str, lo: f64, hi: f64, api: ApiKind) -> Result<(), ApiError> {
    if (lo..=hi).contains(&x) {
        return Ok(());
    }
    if api == ApiKind::Anthropic {
        return Err(ApiError::bad_request(
            api,
            format!("{field}: range: {}..{}", shown(lo), shown(hi)),
        ));
    }
    let (what, code, bound) = if x > hi {
        (
            "above maximum",
            "decimal_above_max_value",
            format!("<= {}", shown(hi)),
        )
    } else {
        (
            "below minimum",
            "decimal_below_min_value",
            format!(">= {}", shown(lo)),
        )
    };
    Err(ApiError::bad_request(
        api,
        format!(
            "Invalid '{field}': decimal {what} value. Expected a value {bound}, but got {} instead.",
            shown(x)
        ),
    )
    .param(field)
    .code(code))
}

/// Read the generation fields accepted by `api` from a request object.
pub fn parse_gen_fields(body: &Json, api: ApiKind) -> Result<GenFields, ApiError> {
    let Some(members) = body.as_object() else {
        return Err(ApiError::bad_request(
            api,
            "invalid JSON request: the body must be a JSON object",
        ));
    };
    let mut g = GenFields::default();
    for (k, v) in members {
        let k = k.as_str();
        match (api, k) {
            (_, "max_tokens")
            | (ApiKind::Chat, "max_completion_tokens")
            | (ApiKind::Responses, "max_output_tokens") => {
                if let Some(n) = int(v, k, api)? {
                    g.max_tokens = Some(n);
                }
            }
            (_, "temperature") => {
                let x = num(v, k, api)?;
                if let Some(x) = x {
                    // OpenAI 0..2, Anthropic 0..1
                    let hi = if api == ApiKind::Anthropic { 1.0 } else { 2.0 };
                    in_range(x, "temperature", 0.0, hi, api)?;
                }
                g.temperature = x.map(|x| x as f32).or(g.temperature)
            }
            (_, "top_p") => {
                let x = num(v, k, api)?;
                if let Some(x) = x {
                    in_range(x, "top_p", 0.0, 1.0, api)?;
                }
                g.top_p = x.map(|x| x as f32).or(g.top_p)
            }
            (ApiKind::Chat | ApiKind::Completions | ApiKind::Anthropic, "top_k") => {
                g.top_k = int(v, k, api)?
                    .map(|x| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                    .or(g.top_k)
            }
            (ApiKind::Chat | ApiKind::Completions, "min_p") => {
                g.min_p = num(v, k, api)?.map(|x| x as f32).or(g.min_p)
            }
            (ApiKind::Chat | ApiKind::Completions, "seed") => {
                if let Some(x) = num(v, k, api)? {
                    // ds4: a JSON number > 0, truncated to u64; others mean "random".
                    g.seed = if x >= 1.0 {
                        Some(x.min(u64::MAX as f64) as u64)
                    } else {
                        None
                    };
                }
            }
            (_, "stream") => g.stream = boolean(v, k, api)?.unwrap_or(false),
            (ApiKind::Chat | ApiKind::Completions, "stream_options") => match v {
                Json::Null => {}
                Json::Object(_) => {
                    if let Some(iu) = v.get("include_usage") {
                        g.include_usage =
                            boolean(iu, "stream_options.include_usage", api)?.unwrap_or(false);
                    }
                }
                _ => {
                    return Err(ApiError::bad_request(
                        api,
                        "invalid JSON request: stream_options must be an object",
                    ));
                }
            },
            (ApiKind::Chat | ApiKind::Completions, "stop")
            | (ApiKind::Anthropic, "stop_sequences") => {
                g.stop = stop_list(v, k, api)?;
            }
            _ => {}
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str, api: ApiKind) -> Result<GenFields, ApiError> {
        parse_gen_fields(&Json::parse(s).unwrap(), api)
    }

    #[test]
    fn chat_fields_parse() {
        let g = p(
            r#"{"max_tokens":5,"max_completion_tokens":7,"temperature":0,"top_p":0.5,"top_k":3,"min_p":0.1,"seed":42,"stream":true,"stream_options":{"include_usage":true},"stop":["a","",1,"bb"]}"#,
            ApiKind::Chat,
        )
        .unwrap();
        assert_eq!(g.max_tokens, Some(7));
        assert_eq!(g.temperature, Some(0.0));
        assert_eq!(g.top_k, Some(3));
        assert_eq!(g.seed, Some(42));
        assert!(g.stream && g.include_usage);
        assert_eq!(g.stop, vec!["a".to_string(), "bb".to_string()]);
    }

    #[test]
    fn wrong_types_are_rejected_with_field_name() {
        let e = p(r#"{"temperature":"1"}"#, ApiKind::Chat).unwrap_err();
        assert!(e.message.contains("temperature"), "{}", e.message);
        assert!(p(r#"{"stream":1}"#, ApiKind::Anthropic).is_err());
        assert!(p(r#"{"stop":5}"#, ApiKind::Chat).is_err());
        assert!(p(r#"[1]"#, ApiKind::Chat).is_err());
    }

    #[test]
    fn per_api_field_sets() {
        // Anthropic has no min_p/seed, uses stop_sequences; Responses reads max_output_tokens.
        let g = p(
            r#"{"min_p":"x","seed":"y","stop":3,"stop_sequences":["Z"]}"#,
            ApiKind::Anthropic,
        )
        .unwrap();
        assert_eq!(g.stop, vec!["Z".to_string()]);
        let g = p(r#"{"max_output_tokens":9}"#, ApiKind::Responses).unwrap();
        assert_eq!(g.max_tokens, Some(9));
    }
}
