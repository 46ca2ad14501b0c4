//! Error matrix: every bad input gets the documented status and the calling
//! API's error shape, and the server keeps serving.

mod common;

use common::*;
use serde_json::{json, Value};

fn assert_openai_error(r: &Resp, status: u16, msg_part: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    let e = &j["error"];
    assert!(e["message"].as_str().unwrap().contains(msg_part), "{j}");
    assert!(e["type"].is_string());
    assert_eq!(j.as_object().unwrap().len(), 1);
    j
}

fn assert_anthropic_error(r: &Resp, status: u16, etype: &str, msg_part: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let j = r.json();
    assert_eq!(j["type"], "error");
    assert_eq!(j["error"]["type"], etype, "{j}");
    assert!(
        j["error"]["message"].as_str().unwrap().contains(msg_part),
        "{j}"
    );
    j
}

fn raw_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body,
    )
}

fn still_serving(s: &TestServer) {
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:ok"}]}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "ok");
}

#[test]
fn malformed_and_mistyped_requests() {
    let s = start(cfg(4096));
    let chat = "/v1/chat/completions";
    let j = assert_openai_error(
        &raw_post(s.addr, chat, b"{\"messages\": ["),
        400,
        "invalid JSON request",
    );
    assert_eq!(j["error"]["type"], "invalid_request_error");
    assert_openai_error(&raw_post(s.addr, chat, b"[1,2]"), 400, "JSON object");
    assert_openai_error(&raw_post(s.addr, chat, b""), 400, "invalid JSON request");
    // Invalid UTF-8 inside a string.
    assert_openai_error(
        &raw_post(
            s.addr,
            chat,
            b"{\"messages\":[{\"role\":\"user\",\"content\":\"a\xff\xfeb\"}]}",
        ),
        400,
        "invalid JSON request",
    );
    // Wrong types.
    let r = post(
        s.addr,
        chat,
        &json!({"messages":[{"role":"user","content":"x"}],"temperature":"hot"}),
    );
    assert_openai_error(&r, 400, "temperature");
    assert_openai_error(
        &post(s.addr, chat, &json!({"messages":"hello"})),
        400,
        "messages",
    );
    assert_openai_error(
        &post(
            s.addr,
            chat,
            &json!({"messages":[{"role":"user","content":"x"}],"stream":"yes"}),
        ),
        400,
        "stream",
    );
    assert_openai_error(
        &post(
            s.addr,
            chat,
            &json!({"messages":[{"role":"user","content":"x"}],"model":7}),
        ),
        400,
        "model",
    );
    assert_openai_error(
        &post(
            s.addr,
            chat,
            &json!({"messages":[{"role":"user","content":"x"}],"reasoning_effort":"extreme"}),
        ),
        400,
        "extreme",
    );
    assert_openai_error(
        &post(
            s.addr,
            chat,
            &json!({"messages":[{"role":"user","content":"x"}],"max_tokens":"5"}),
        ),
        400,
        "max_tokens",
    );
    // Missing and empty.
    assert_openai_error(
        &post(s.addr, chat, &json!({"model":"deepseek-chat"})),
        400,
        "missing messages",
    );
    assert_openai_error(
        &post(s.addr, chat, &json!({"messages":[]})),
        400,
        "must not be empty",
    );
    assert_openai_error(
        &post(s.addr, "/v1/responses", &json!({"model":"deepseek-chat"})),
        400,
        "missing input",
    );
    assert_openai_error(
        &post(s.addr, "/v1/completions", &json!({"max_tokens":3})),
        400,
        "missing prompt",
    );
    assert_openai_error(
        &post(
            s.addr,
            "/v1/responses",
            &json!({"input":"x","previous_response_id":"resp_1"}),
        ),
        400,
        "previous_response_id is not supported",
    );
    // Anthropic shape on /v1/messages.
    assert_anthropic_error(
        &raw_post(s.addr, "/v1/messages", b"{nope"),
        400,
        "invalid_request_error",
        "invalid JSON request",
    );
    assert_anthropic_error(
        &post(s.addr, "/v1/messages", &json!({"max_tokens":5})),
        400,
        "invalid_request_error",
        "missing messages",
    );
    assert_anthropic_error(
        &post(
            s.addr,
            "/v1/messages",
            &json!({"max_tokens":5,"top_k":"x","messages":[{"role":"user","content":"x"}]}),
        ),
        400,
        "invalid_request_error",
        "top_k",
    );
    still_serving(&s);
}

#[test]
fn unknown_model_is_404_in_each_shape() {
    let s = start(cfg(4096));
    let msgs = json!([{"role":"user","content":"x"}]);
    for path in ["/v1/chat/completions", "/v1/responses", "/v1/completions"] {
        let body = json!({"model":"gpt-5","messages":msgs,"input":"x","prompt":"x"});
        let j = assert_openai_error(&post(s.addr, path, &body), 404, "gpt-5");
        assert_eq!(j["error"]["code"], "model_not_found");
        assert_eq!(j["error"]["param"], "model");
    }
    assert_anthropic_error(
        &post(
            s.addr,
            "/v1/messages",
            &json!({"model":"claude-x","max_tokens":5,"messages":msgs}),
        ),
        404,
        "not_found_error",
        "claude-x",
    );
    // An --alias makes the name acceptable, with its target's thinking rule.
    let mut c = cfg(4096);
    c.aliases = vec![("claude-x".into(), "deepseek-chat".into())];
    let s2 = start(c);
    let r = post(
        s2.addr,
        "/v1/messages",
        &json!({"model":"claude-x","max_tokens":50,"messages":[{"role":"user","content":"ECHO:a</think>b"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["model"], "claude-x");
    // deepseek-chat target: thinking off, so the tag is plain text.
    assert_eq!(j["content"], json!([{"type":"text","text":"a</think>b"}]));
    still_serving(&s);
}

#[test]
fn limits_body_size_messages_and_max_tokens() {
    let mut c = cfg(4096);
    c.max_body_bytes = 2000;
    c.max_messages = 3;
    let s = start(c);
    let big = json!({"messages":[{"role":"user","content":"x".repeat(5000)}]});
    let j = assert_openai_error(
        &post(s.addr, "/v1/chat/completions", &big),
        413,
        "too large",
    );
    assert!(j["error"]["message"].as_str().unwrap().contains("2000"));
    assert_anthropic_error(
        &post(s.addr, "/v1/messages", &big),
        413,
        "request_too_large",
        "too large",
    );
    let many = json!({"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"user","content":"d"}]});
    assert_openai_error(
        &post(s.addr, "/v1/chat/completions", &many),
        400,
        "too many messages",
    );
    let msgs = json!([{"role":"user","content":"x"}]);
    let j = assert_openai_error(
        &post(
            s.addr,
            "/v1/chat/completions",
            &json!({"messages":msgs,"max_tokens":5000}),
        ),
        400,
        "max_tokens is 5000",
    );
    assert!(j["error"]["message"].as_str().unwrap().contains("4096"));
    assert_openai_error(
        &post(
            s.addr,
            "/v1/chat/completions",
            &json!({"messages":msgs,"max_completion_tokens":-1}),
        ),
        400,
        "max_tokens",
    );
    assert_anthropic_error(
        &post(
            s.addr,
            "/v1/messages",
            &json!({"messages":msgs,"max_tokens":100000}),
        ),
        400,
        "invalid_request_error",
        "max_tokens",
    );
    still_serving(&s);
}

#[test]
fn context_overflow_names_the_numbers() {
    let s = start(cfg(256));
    let long = "y".repeat(400);
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"messages":[{"role":"user","content":long}]}),
    );
    let j = assert_openai_error(&r, 400, "configured context size is 256 tokens");
    let e = &j["error"];
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "messages");
    assert_eq!(e["n_ctx"], 256);
    let n = e["n_prompt_tokens"].as_u64().unwrap();
    assert!(n >= 400);
    assert_eq!(
        e["message"],
        format!("Prompt has {n} tokens, but the configured context size is 256 tokens")
    );
    let r = post(s.addr, "/v1/responses", &json!({"input":long}));
    assert_eq!(
        assert_openai_error(&r, 400, "Prompt has")["error"]["param"],
        "input"
    );
    let r = post(s.addr, "/v1/completions", &json!({"prompt":long}));
    assert_eq!(
        assert_openai_error(&r, 400, "Prompt has")["error"]["param"],
        "prompt"
    );
    let r = post(
        s.addr,
        "/v1/messages",
        &json!({"max_tokens":5,"messages":[{"role":"user","content":long}]}),
    );
    let j = assert_anthropic_error(&r, 400, "invalid_request_error", "Prompt has");
    assert_eq!(j["error"]["n_ctx"], 256);
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:fine"}]}),
    );
    assert_eq!(r.json()["choices"][0]["message"]["content"], "fine");
}

#[test]
fn api_key_auth() {
    let mut c = cfg(4096);
    c.api_key = Some("sekrit".into());
    let s = start(c);
    let body = json!({"model":"deepseek-chat","max_tokens":20,"messages":[{"role":"user","content":"ECHO:hi"}]}).to_string();
    let chat = "/v1/chat/completions";
    let r = request(s.addr, "POST", chat, &[], body.as_bytes());
    let j = assert_openai_error(&r, 401, "missing API key");
    assert_eq!(j["error"]["code"], "invalid_api_key");
    let r = request(
        s.addr,
        "POST",
        chat,
        &[("Authorization", "Bearer wrong")],
        body.as_bytes(),
    );
    assert_openai_error(&r, 401, "invalid API key");
    // prefixes, extensions and same-length near misses of the key (the
    // comparison is constant-time; lengths that differ are rejected too)
    for bad in ["sekri", "sekritt", "sekriT", "Sekrit"] {
        let auth = format!("Bearer {bad}");
        let r = request(
            s.addr,
            "POST",
            chat,
            &[("Authorization", &auth)],
            body.as_bytes(),
        );
        assert_openai_error(&r, 401, "invalid API key");
    }
    let r = request(
        s.addr,
        "POST",
        chat,
        &[("Authorization", "Bearer sekrit")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    let r = request(
        s.addr,
        "POST",
        "/v1/messages",
        &[("x-api-key", "nope")],
        body.as_bytes(),
    );
    assert_anthropic_error(&r, 401, "authentication_error", "invalid API key");
    let r = request(
        s.addr,
        "POST",
        "/v1/messages",
        &[("x-api-key", "sekrit")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(request(s.addr, "GET", "/v1/models", &[], b"").status, 401);
    assert_eq!(
        request(
            s.addr,
            "GET",
            "/v1/models",
            &[("Authorization", "Bearer sekrit")],
            b""
        )
        .status,
        200
    );
    // Health stays open for probes.
    assert_eq!(get(s.addr, "/health").status, 200);
}

#[test]
fn unknown_routes_options_and_cors() {
    let s = start(cfg(4096));
    let r = get(s.addr, "/v1/nothing");
    let j = assert_openai_error(&r, 404, "unknown endpoint");
    assert_eq!(j["error"]["type"], "invalid_request_error");
    assert_openai_error(
        &post(s.addr, "/v1/models", &json!({})),
        404,
        "unknown endpoint",
    );
    let r = request(s.addr, "OPTIONS", "/v1/chat/completions", &[], b"");
    assert_eq!(r.status, 204);
    assert!(r.header("access-control-allow-origin").is_none());
    let mut c = cfg(4096);
    c.cors = true;
    let s2 = start(c);
    let r = request(s2.addr, "OPTIONS", "/anything", &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );
    assert_eq!(r.header("access-control-allow-headers"), Some("*"));
    let r = post(s2.addr, "/v1/chat/completions", &json!({"messages":[]}));
    assert_eq!(r.status, 400);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = post(
        s2.addr,
        "/v1/chat/completions",
        &json!({"stream":true,"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:x"}]}),
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
}

#[test]
fn tool_results_must_answer_a_replayed_call() {
    let s = start(cfg(4096));
    let r = post(
        s.addr,
        "/v1/messages",
        &json!({"max_tokens":20,"messages":[
            {"role":"user","content":"hi"},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_missing","content":"x"}]}]}),
    );
    assert_anthropic_error(
        &r,
        400,
        "invalid_request_error",
        "tool_use_id toolu_missing",
    );
    let r = post(
        s.addr,
        "/v1/responses",
        &json!({"input":[{"type":"function_call_output","call_id":"call_missing","output":"x"}]}),
    );
    assert_openai_error(
        &r,
        400,
        "call_id call_missing; retry by replaying the full input history",
    );
    // With the call replayed the same results are accepted.
    let r = post(
        s.addr,
        "/v1/responses",
        &json!({"model":"deepseek-chat","input":[
            {"role":"user","content":"q"},
            {"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"},
            {"type":"function_call_output","call_id":"call_1","output":"ECHO:done"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output"][0]["content"][0]["text"], "done");
    still_serving(&s);
}

#[test]
fn bodies_between_axum_default_and_our_limit_are_accepted() {
    // 3 MiB is above axum's 2 MiB extractor default but below our 64 MiB:
    // the request must reach the context check (400), not a size error.
    let s = start(cfg(4096));
    let big = json!({"messages":[{"role":"user","content":"w ".repeat(3 << 19)}]});
    let j = assert_openai_error(
        &post(s.addr, "/v1/chat/completions", &big),
        400,
        "Prompt has",
    );
    assert_eq!(j["error"]["code"], "context_length_exceeded");
}

/// xorshift for deterministic mutations.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn mutated_bodies_never_crash_or_500() {
    let s = start(cfg(2048));
    let seeds: Vec<(&str, String)> = vec![
        ("/v1/chat/completions", json!({"model":"deepseek-chat","max_tokens":8,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"messages":[{"role":"system","content":"s"},{"role":"user","content":"ECHO:hi"},{"role":"assistant","content":"a","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},{"role":"tool","tool_call_id":"call_1","content":"r"}]}).to_string()),
        ("/v1/messages", json!({"model":"deepseek-chat","max_tokens":8,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":[{"type":"text","text":"ECHO:x"}]},{"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":[1,2]}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"ok"}]}]}]}).to_string()),
        ("/v1/responses", json!({"model":"deepseek-chat","max_output_tokens":8,"instructions":"i","input":[{"role":"user","content":[{"type":"input_text","text":"ECHO:x"}]},{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"o"}],"reasoning":{"effort":"low","summary":"auto"}}).to_string()),
        ("/v1/completions", json!({"model":"deepseek-chat","prompt":"ECHO:x","max_tokens":8,"stop":["q"],"seed":3}).to_string()),
    ];
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut statuses = std::collections::BTreeMap::new();
    for round in 0..120 {
        for (path, body) in &seeds {
            let mut b = body.as_bytes().to_vec();
            match next(&mut x) % 4 {
                0 => b.truncate((next(&mut x) as usize) % b.len()),
                1 => {
                    for _ in 0..1 + next(&mut x) % 4 {
                        let i = (next(&mut x) as usize) % b.len();
                        b[i] = (next(&mut x) % 256) as u8;
                    }
                }
                2 => {
                    // Swap a JSON scalar for another type.
                    let reps = [
                        "null",
                        "[]",
                        "{}",
                        "1e999",
                        "-1",
                        "\"\"",
                        "true",
                        "[[[[[]]]]]",
                    ];
                    let r = reps[(next(&mut x) as usize) % reps.len()];
                    let text = String::from_utf8_lossy(&b).into_owned();
                    let starts: Vec<usize> = text.match_indices(':').map(|(i, _)| i + 1).collect();
                    let at = starts[(next(&mut x) as usize) % starts.len()];
                    let end = text[at..]
                        .find([',', '}', ']'])
                        .map(|e| at + e)
                        .unwrap_or(text.len());
                    b = format!("{}{}{}", &text[..at], r, &text[end..]).into_bytes();
                }
                _ => {
                    let i = (next(&mut x) as usize) % b.len();
                    let j = (next(&mut x) as usize) % b.len();
                    let (i, j) = (i.min(j), i.max(j));
                    b.drain(i..j);
                }
            }
            let r = raw_post(s.addr, path, &b);
            assert!(
                r.status == 200 || (400..500).contains(&r.status),
                "round {round} {path}: {} {}",
                r.status,
                r.text()
            );
            if r.status != 200 {
                let j = r.json();
                assert!(j.get("error").is_some(), "{j}");
            }
            *statuses.entry(r.status).or_insert(0) += 1;
        }
    }
    assert!(statuses.len() > 1, "{statuses:?}");
    still_serving(&s);
}

#[test]
fn anthropic_system_turns_and_count_tokens_reject_bad_input() {
    let s = start(cfg(256));
    let msgs = "/v1/messages";
    let count = "/v1/messages/count_tokens";
    let user = json!({"role":"user","content":"q"});
    for (body, msg) in [
        (
            json!({"max_tokens":5,"messages":[user, {"role":"system","content":5}]}),
            "messages[1].content must be a string or an array",
        ),
        (
            json!({"max_tokens":5,"messages":[user, {"role":"system","content":[{"type":"image","source":{}}]}]}),
            "messages[1].content[0]: block type \"image\" is not supported here (only text blocks)",
        ),
        (
            json!({"max_tokens":5,"messages":[user, {"role":"system","content":[7]}]}),
            "messages[1].content parts must be strings or text blocks",
        ),
        (
            json!({"max_tokens":5,"messages":[{"role":"wizard","content":"x"}]}),
            "messages[0]: unknown role \"wizard\"",
        ),
        (json!({"max_tokens":5}), "missing messages"),
        (
            json!({"max_tokens":5,"messages":[user],"system":3}),
            "system must be a string or an array",
        ),
        (
            json!({"max_tokens":5,"model":"gpt-4","messages":[user]}),
            "does not exist",
        ),
    ] {
        let a = post(s.addr, msgs, &body);
        let b = post(s.addr, count, &body);
        assert_eq!((a.status, a.text()), (b.status, b.text()), "{body}");
        let etype = if a.status == 404 {
            "not_found_error"
        } else {
            "invalid_request_error"
        };
        let j = assert_anthropic_error(&b, a.status, etype, msg);
        assert!(a.status == 400 || a.status == 404, "{j}");
    }
    let j = assert_anthropic_error(
        &raw_post(s.addr, count, b"{\"messages\": ["),
        400,
        "invalid_request_error",
        "invalid JSON request",
    );
    assert_eq!(j["type"], "error");
    // A prompt longer than the context is counted (generation refuses it).
    let long = json!({"max_tokens":5,"messages":[{"role":"user","content":"y".repeat(400)}]});
    assert_eq!(post(s.addr, msgs, &long).status, 400);
    let r = post(s.addr, count, &long);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 400);
    still_serving(&s);
}

#[test]
fn out_of_range_sampling_values_get_the_official_apis_400s() {
    let s = start(cfg(4096));
    let msgs = json!([{"role":"user","content":"ECHO:ok"}]);
    for (field, value, expect) in [
        (
            "temperature",
            json!(500),
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 500 instead.",
        ),
        (
            "temperature",
            json!(-0.5),
            "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got -0.5 instead.",
        ),
        (
            "top_p",
            json!(2),
            "Invalid 'top_p': decimal above maximum value. Expected a value <= 1, but got 2 instead.",
        ),
    ] {
        for path in ["/v1/chat/completions", "/v1/completions", "/v1/responses"] {
            let mut body = match path {
                "/v1/completions" => json!({"model":"deepseek-chat","prompt":"hi"}),
                "/v1/responses" => json!({"model":"deepseek-chat","input":"hi"}),
                _ => json!({"model":"deepseek-chat","messages":msgs}),
            };
            body[field] = value.clone();
            let j = assert_openai_error(&post(s.addr, path, &body), 400, expect);
            assert_eq!(j["error"]["message"], expect, "{path}");
            assert_eq!(j["error"]["param"], field, "{path}");
            let code = if expect.contains("above") {
                "decimal_above_max_value"
            } else {
                "decimal_below_min_value"
            };
            assert_eq!(j["error"]["code"], code, "{path}");
        }
    }
    // Anthropic: temperature and top_p in 0..1
    for (field, value) in [("temperature", json!(1.5)), ("top_p", json!(-1))] {
        let mut body = json!({"model":"deepseek-chat","max_tokens":8,"messages":msgs});
        body[field] = value;
        let j = assert_anthropic_error(
            &post(s.addr, "/v1/messages", &body),
            400,
            "invalid_request_error",
            field,
        );
        assert_eq!(j["error"]["message"], format!("{field}: range: 0..1"));
    }
    // the bounds themselves are accepted
    let ok = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","messages":msgs,"temperature":2,"top_p":0}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = post(
        s.addr,
        "/v1/messages",
        &json!({"model":"deepseek-chat","max_tokens":8,"messages":msgs,"temperature":1,"top_p":1}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn a_tool_choice_naming_an_unknown_function_is_refused() {
    let s = start(cfg(4096));
    let msgs = json!([{"role":"user","content":"ECHO:ok"}]);
    let tools =
        json!([{"type":"function","function":{"name":"read_file","parameters":{"type":"object"}}}]);
    let body = |name: &str| {
        json!({"model":"deepseek-chat","messages":msgs,"tools":tools,
            "tool_choice":{"type":"function","function":{"name":name}}})
    };
    let r = post(s.addr, "/v1/chat/completions", &body("write_file"));
    assert_openai_error(&r, 400, "\"write_file\", which is not in tools");
    let ok = post(s.addr, "/v1/chat/completions", &body("read_file"));
    assert_eq!(ok.status, 200, "{}", ok.text());
    let atools = json!([{"name":"read_file","input_schema":{"type":"object"}}]);
    let abody = |name: &str| {
        json!({"model":"deepseek-chat","max_tokens":8,"messages":msgs,"tools":atools,
            "tool_choice":{"type":"tool","name":name}})
    };
    assert_anthropic_error(
        &post(s.addr, "/v1/messages", &abody("write_file")),
        400,
        "invalid_request_error",
        "not in tools",
    );
    let ok = post(s.addr, "/v1/messages", &abody("read_file"));
    assert_eq!(ok.status, 200, "{}", ok.text());
}
