//! Queueing, concurrency, disconnects and prefill keepalives.

mod common;

use std::io::{BufRead, Read, Write};
use std::time::Duration;

use common::*;
use ds4_engine::EngineConfig;
use serde_json::json;

#[test]
fn thirty_two_concurrent_streams_complete() {
    let s = start(cfg(8192));
    let addr = s.addr;
    let threads: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || {
                let path = ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/completions"][i % 4];
                let body = json!({"model":"deepseek-chat","stream":true,"max_tokens":200,
                    "messages":[{"role":"user","content":format!("ECHO:client {i} done")}],
                    "input":format!("ECHO:client {i} done"),"prompt":format!("ECHO:client {i} done")});
                let r = post(addr, path, &body);
                assert_eq!(r.status, 200, "{}", r.text());
                let ev = sse_json(&r.text());
                let mut text = String::new();
                for e in &ev {
                    if let Some(c) = e["choices"].get(0) {
                        if let Some(t) = c["delta"]["content"].as_str() {
                            text.push_str(t);
                        }
                        if let Some(t) = c["text"].as_str() {
                            text.push_str(t);
                        }
                    }
                    if e["type"] == "content_block_delta" {
                        text.push_str(e["delta"]["text"].as_str().unwrap_or(""));
                    }
                    if e["type"] == "response.output_text.delta" {
                        text.push_str(e["delta"].as_str().unwrap());
                    }
                }
                assert_eq!(text, format!("client {i} done"), "client {i} via {path}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let h = get(addr, "/health").json();
    assert_eq!(h["jobs_done"], 32);
    assert_eq!(h["jobs_cancelled"], 0);
}

#[test]
fn disconnect_mid_stream_frees_the_worker() {
    let s = start(cfg(1 << 16));
    let body = json!({"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":"LOOP:"}]});
    let (status, mut r) = open_stream(s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200);
    // Read until some generated content arrived.
    let mut content_chunks = 0;
    while content_chunks < 8 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.starts_with("data: ") && line.contains(r#""content":"#) {
            content_chunks += 1;
        }
    }
    drop(r);
    // The worker notices on its next write and stops within one decode step.
    let h = wait_health(s.addr, |h| h["jobs_cancelled"] == 1 && h["busy"] == false);
    assert!(h["steps_after_last_cancel"].as_u64().unwrap() <= 1, "{h}");
    assert!(h["decode_steps"].as_u64().unwrap() < 60000, "{h}");
    // And the next request is served.
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:next"}]}),
    );
    assert_eq!(r.json()["choices"][0]["message"]["content"], "next");
}

#[test]
fn queued_request_runs_after_the_busy_one() {
    let s = start(cfg(4096));
    s.model.gate.enable();
    let addr = s.addr;
    let a = std::thread::spawn(move || {
        post(
            addr,
            "/v1/chat/completions",
            &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:first"}]}),
        )
    });
    wait_health(addr, |h| h["busy"] == true);
    let b = std::thread::spawn(move || {
        post(
            addr,
            "/v1/chat/completions",
            &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:second"}]}),
        )
    });
    wait_health(addr, |h| h["queued"] == 1);
    s.model.gate.disable();
    assert_eq!(
        a.join().unwrap().json()["choices"][0]["message"]["content"],
        "first"
    );
    assert_eq!(
        b.join().unwrap().json()["choices"][0]["message"]["content"],
        "second"
    );
}

#[test]
fn with_two_slots_a_request_is_answered_while_another_streams() {
    // a context the endless stream cannot fill during the test
    let s = start_slots(cfg(1 << 22), 2);
    let body = json!({"model":"deepseek-chat","stream":true,
        "messages":[{"role":"user","content":"LOOP:"}]});
    let (status, mut forever) = open_stream(s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200);
    let mut first = [0u8; 64];
    forever.read_exact(&mut first).unwrap();
    let h = wait_health(s.addr, |h| h["active"] == 1);
    assert_eq!(h["slots"], 2);
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:served"}]}),
    );
    assert_eq!(r.json()["choices"][0]["message"]["content"], "served");
    // the endless stream is still being generated, and still reads
    let h = wait_health(s.addr, |h| h["jobs_done"] == 1);
    assert_eq!(
        (h["busy"].clone(), h["queued"].clone()),
        (json!(true), json!(0))
    );
    forever.read_exact(&mut first).unwrap();
    drop(forever);
    wait_health(s.addr, |h| h["busy"] == false && h["jobs_cancelled"] == 1);
}

#[test]
fn long_prefill_sends_keepalive_comments() {
    let mut c = cfg(8192);
    c.keepalive_interval = Duration::ZERO;
    let s = start_with(c, 16);
    let body = json!({"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":format!("{} ECHO:ok", "z".repeat(100))}]});
    let (status, mut r) = open_stream(s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200);
    let mut raw = Vec::new();
    r.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let first_data = text.find("data: ").unwrap();
    assert!(text[..first_data].contains(": keepalive\n\n"), "{text}");
    let ev = sse_json(&text);
    let content: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "ok");
}

#[test]
fn disconnect_while_waiting_for_a_non_streaming_answer_frees_the_worker() {
    let s = start(cfg(1 << 14));
    let body = json!({"model":"deepseek-chat","messages":[{"role":"user","content":"LOOP:"}]});
    let b = body.to_string();
    let mut sock = std::net::TcpStream::connect(s.addr).unwrap();
    write!(
        sock,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    // The generation is running (LOOP never ends before the context fills).
    wait_health(s.addr, |h| {
        h["busy"] == true && h["decode_steps"].as_u64().unwrap() > 10
    });
    sock.shutdown(std::net::Shutdown::Both).unwrap();
    drop(sock);
    let h = wait_health(s.addr, |h| h["busy"] == false);
    assert_eq!(h["jobs_cancelled"], 1, "{h}");
    assert!(h["steps_after_last_cancel"].as_u64().unwrap() <= 1, "{h}");
}

#[test]
fn prefill_failure_before_and_after_sse_headers() {
    // Short prompt (single chunk): the failure comes before any byte was
    // sent, so it is a plain HTTP 500 in the API's shape.
    let s = start(cfg(8192));
    let body = json!({"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":"EVAL_FAIL"}]});
    let r = post(s.addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 500);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("EVAL_FAIL"));
    // Long prompt in 16-token chunks: headers went out with the first
    // keepalive, so the failure is an SSE error event.
    let mut c = cfg(8192);
    c.keepalive_interval = Duration::ZERO;
    let s = start_with(c, 16);
    let body = json!({"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":format!("{} EVAL_FAIL", "q".repeat(100))}]});
    let r = post(s.addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200);
    let ev = sse_events(&r.text());
    assert_eq!(ev[0].0, "comment");
    let (name, data) = ev.last().unwrap();
    assert_eq!(name, "error");
    let j: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(j["error"]["type"], "server_error");
    let body = json!({"model":"deepseek-chat","stream":true,"max_tokens":10,"messages":[{"role":"user","content":format!("{} EVAL_FAIL", "q".repeat(100))}]});
    let r = post(s.addr, "/v1/messages", &body);
    let (name, data) = sse_events(&r.text()).last().unwrap().clone();
    assert_eq!(name, "error");
    let j: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(j["type"], "error");
    assert_eq!(j["error"]["type"], "api_error");
    // The server keeps serving.
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:fine"}]}),
    );
    assert_eq!(r.json()["choices"][0]["message"]["content"], "fine");
}

#[test]
fn streaming_stop_sequence_is_never_sent() {
    let s = start(cfg(4096));
    let body = json!({"model":"deepseek-chat","stream":true,"stop":["STOP"],"messages":[{"role":"user","content":"ECHO:keep this STOP not this"}]});
    let r = post(s.addr, "/v1/chat/completions", &body);
    let text = r.text();
    assert!(!text.contains("STO"), "{text}");
    let ev = sse_json(&text);
    let content: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "keep this ");
    let fin = ev
        .iter()
        .find(|e| !e["choices"][0]["finish_reason"].is_null())
        .unwrap();
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
}

#[test]
fn past_max_queue_openai_routes_answer_429_and_anthropic_529_with_retry_after() {
    let ecfg = EngineConfig {
        ctx: 4096,
        max_queue: 1,
        ..EngineConfig::default()
    };
    let s = start_engine(cfg(4096), ecfg, 4);
    let loop_body = json!({"model":"deepseek-chat","stream":true,"max_tokens":3000,
        "messages":[{"role":"user","content":"LOOP:"}]});
    // One request holds the slot, a second waits in the queue.
    let (st, running) = open_stream(s.addr, "/v1/chat/completions", &loop_body);
    assert_eq!(st, 200);
    wait_health(s.addr, |h| h["active"] == 1);
    let addr = s.addr;
    let waiting = std::thread::spawn(move || {
        post(
            addr,
            "/v1/chat/completions",
            &json!({"model":"deepseek-chat","max_tokens":2,
                "messages":[{"role":"user","content":"ECHO:ok"}]}),
        )
    });
    wait_health(s.addr, |h| h["queued"] == 1);
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"x"}]}),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let r = post(
        s.addr,
        "/v1/messages",
        &json!({"max_tokens":4,"messages":[{"role":"user","content":"x"}]}),
    );
    assert_eq!(r.status, 529, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    // Once the running request goes, the waiting one is served.
    drop(running);
    let w = waiting.join().unwrap();
    assert_eq!(w.status, 200, "{}", w.text());
}
