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
