//! The `ds4-server` binary without -m serves the embedded demo model.

mod common;

#[path = "common/bin.rs"]
mod bin;

use common::*;
use serde_json::json;

#[test]
fn demo_model_serves_every_route_and_shuts_down_cleanly() {
    let b = bin::spawn(&["--ctx", "4096", "--alias", "my-agent=deepseek-chat"]);
    let log = b.log.join("");
    assert!(log.contains("DEMO MODEL"), "{log}");
    assert!(log.contains("NOISE"), "{log}");
    let h = get(b.addr, "/health").json();
    assert_eq!(h["demo"], true);
    assert_eq!(h["ctx"], 4096);
    let r = post(
        b.addr,
        "/v1/chat/completions",
        &json!({"model":"my-agent","max_tokens":5,"messages":[{"role":"user","content":"Hello"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["model"], "my-agent");
    assert!(j["usage"]["completion_tokens"].as_u64().unwrap() <= 5);
    // The real tokenizer: BOS + <｜User｜> + "Hello" + <｜Assistant｜> + </think>.
    assert_eq!(j["usage"]["prompt_tokens"], 5);
    let r = post(
        b.addr,
        "/v1/messages",
        &json!({"max_tokens":4,"stream":true,"messages":[{"role":"user","content":"Hi"}]}),
    );
    let ev = sse_events(&r.text());
    assert_eq!(ev.first().unwrap().0, "message_start");
    assert_eq!(ev.last().unwrap().0, "message_stop");
    let r = post(
        b.addr,
        "/v1/responses",
        &json!({"input":"Hi","max_output_tokens":3}),
    );
    assert_eq!(r.status, 200);
    let r = post(
        b.addr,
        "/v1/completions",
        &json!({"prompt":"Hi","max_tokens":3}),
    );
    assert!(r.json()["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
    assert_eq!(
        post(
            b.addr,
            "/v1/chat/completions",
            &json!({"model":"nope","messages":[{"role":"user","content":"x"}]})
        )
        .status,
        404
    );
    assert_eq!(b.terminate(), Some(0));
}

#[test]
fn bad_flags_exit_with_status_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ds4-server"))
        .args(["--ctx", "zero"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ds4-server"))
        .args(["--alias", "x=gpt-4", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("target must be one of"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ds4-server"))
        .args(["-m", "/nonexistent.gguf", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
}

#[test]
fn a_taken_port_is_reported_before_the_model_loads() {
    let b = bin::spawn(&["--ctx", "4096"]);
    // The log says the port is bound while loading, then ready.
    let log = b.log.join("");
    let listening = log.find("(loading the model)").expect(&log);
    assert!(
        listening < log.find("built the demo model").expect(&log),
        "{log}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ds4-server"))
        .args(["--port", &b.addr.port().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{}", b.addr.port())),
        "{err}"
    );
    // The clash ends the second server before it builds any model.
    assert!(!err.contains("built the demo model"), "{err}");
    assert_eq!(b.terminate(), Some(0));
}

#[test]
fn every_refused_request_gets_one_log_line_with_status_route_and_reason() {
    let b = bin::spawn(&["--ctx", "4096"]);
    let r = post(
        b.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","temperature":500,"messages":[{"role":"user","content":"x"}]}),
    );
    assert_eq!(r.status, 400);
    let line = b
        .wait_log("request rejected: 400 POST /v1/chat/completions: ")
        .expect("a log line for the 400");
    // The reason is the error message the client got.
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(line.trim_end().ends_with(&msg), "{line} / {msg}");
    assert_eq!(get(b.addr, "/v2/nothing").status, 404);
    assert!(b
        .wait_log("request rejected: 404 GET /v2/nothing: ")
        .is_some());
    // A served request is not logged as rejected.
    let before = b.later.lock().unwrap().len();
    assert_eq!(get(b.addr, "/health").status, 200);
    let after = b.later.lock().unwrap()[before..].concat();
    assert!(!after.contains("rejected"), "{after}");
    assert_eq!(b.terminate(), Some(0));
}

#[test]
fn sigterm_ends_an_in_flight_stream_with_finish_error() {
    use std::io::{BufRead, Read};
    let b = bin::spawn(&["--ctx", "4096"]);
    let body = json!({"model":"deepseek-chat","stream":true,"max_tokens":3000,"messages":[{"role":"user","content":"Tell me a long story"}]});
    let (status, mut r) = open_stream(b.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200);
    // Wait for generated content, then ask the server to stop.
    let mut chunks = 0;
    while chunks < 3 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.starts_with("data: ") && line.contains("\"content\"") {
            chunks += 1;
        }
    }
    let child_id = b.child.id();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child_id.to_string())
        .status();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains(r#""finish_reason":"error""#), "{rest}");
    assert!(rest.contains("data: [DONE]"), "{rest}");
    // One signal: a clean exit once the in-flight response is done (a
    // second signal would exit at once with 130).
    assert_eq!(b.wait(), Some(0));
}
