//! Wire shapes of every route against the echo test double.

mod common;

use common::*;
use serde_json::{json, Value};

const WEATHER_TOOL: &str = r#"{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}}}"#;

fn weather_tools() -> Value {
    json!([serde_json::from_str::<Value>(WEATHER_TOOL).unwrap()])
}

fn anthropic_tools() -> Value {
    json!([{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}}}}])
}

fn call_script() -> String {
    format!(
        "Checking.{}",
        dsml_call(
            "get_weather",
            &[("city", "Paris", true), ("days", "3", false)]
        )
    )
}

#[test]
fn models_routes() {
    let mut c = cfg(4096);
    c.aliases = vec![("claude-sonnet-4".into(), "deepseek-chat".into())];
    let s = start(c);
    let r = get(s.addr, "/v1/models");
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["object"], "list");
    let ids: Vec<&str> = j["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            "deepseek-v4-flash",
            "deepseek-chat",
            "deepseek-reasoner",
            "claude-sonnet-4"
        ]
    );
    assert_eq!(j["data"][0]["context_length"], 4096);
    assert_eq!(j["data"][0]["top_provider"]["max_completion_tokens"], 4096);
    assert!(r.text().starts_with(r#"{"object":"list","data":[{"id":"deepseek-v4-flash","object":"model","created":1767225600,"owned_by":"ds4.c""#));
    assert!(r.text().ends_with("}\n"));
    let m = get(s.addr, "/v1/models/deepseek-v4-flash");
    assert_eq!(m.status, 200);
    assert_eq!(m.json()["id"], "deepseek-v4-flash");
    assert_eq!(
        get(s.addr, "/v1/models/claude-sonnet-4").json()["id"],
        "claude-sonnet-4"
    );
    let nf = get(s.addr, "/v1/models/gpt-4");
    assert_eq!(nf.status, 404);
    assert_eq!(nf.json()["error"]["code"], "model_not_found");
    let h = get(s.addr, "/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
}

#[test]
fn chat_non_streaming_plain() {
    let s = start(cfg(4096));
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:Hello there"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    assert!(
        t.starts_with(r#"{"id":"chatcmpl-1","object":"chat.completion","created":"#),
        "{t}"
    );
    assert!(t.ends_with("}\n"));
    let j = r.json();
    assert_eq!(j["model"], "deepseek-chat");
    let m = &j["choices"][0]["message"];
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["content"], "Hello there");
    assert!(m.get("reasoning_content").is_none());
    assert!(m.get("tool_calls").is_none());
    assert_eq!(j["choices"][0]["finish_reason"], "stop");
    let u = &j["usage"];
    assert_eq!(u["completion_tokens"], 11);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 11
    );
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        u["prompt_tokens_details"]["cache_write_tokens"],
        u["prompt_tokens"]
    );
    // Key order of the choice and usage objects.
    assert!(t.contains(r#""choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":"#));
}

#[test]
fn chat_thinking_splits_reasoning() {
    let s = start(cfg(4096));
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"messages":[{"role":"user","content":"ECHO:Let me think.</think>The answer is 4."}]}),
    );
    let j = r.json();
    let m = &j["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], "Let me think.");
    assert_eq!(m["content"], "The answer is 4.");
    // deepseek-chat turns thinking off: the tag is plain content then.
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-reasoner","thinking":{"type":"disabled"},"messages":[{"role":"user","content":"ECHO:abc"}]}),
    );
    assert_eq!(r.json()["choices"][0]["message"]["content"], "abc");
}

#[test]
fn chat_length_and_stop() {
    let s = start(cfg(4096));
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","max_tokens":4,"messages":[{"role":"user","content":"ECHO:abcdefgh"}]}),
    );
    let j = r.json();
    assert_eq!(j["choices"][0]["message"]["content"], "abcd");
    assert_eq!(j["choices"][0]["finish_reason"], "length");
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","stop":["ef"],"messages":[{"role":"user","content":"ECHO:abcdefgh"}]}),
    );
    let j = r.json();
    assert_eq!(j["choices"][0]["message"]["content"], "abcd");
    assert_eq!(j["choices"][0]["finish_reason"], "stop");
}

#[test]
fn chat_tool_calls_non_streaming() {
    let s = start(cfg(8192));
    let script = format!("{}\nTHIS IS NEVER GENERATED", call_script());
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","tools":weather_tools(),"messages":[{"role":"user","content":format!("ECHO:{script}")}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let c = &j["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["message"]["content"], "Checking.");
    let tc = &c["message"]["tool_calls"][0];
    let id = tc["id"].as_str().unwrap();
    assert!(id.starts_with("call_") && id.len() == 37, "{id}");
    assert_eq!(tc["type"], "function");
    assert_eq!(tc["function"]["name"], "get_weather");
    assert_eq!(tc["function"]["arguments"], r#"{"city":"Paris","days":3}"#);
    // Generation stopped at the end of the tool block.
    let generated = call_script();
    let n_tokens =
        ds4_engine::Tokenizer::encode(&ds4_engine::testing::TestTokenizer, &generated).len();
    assert!(j["usage"]["completion_tokens"].as_u64().unwrap() as usize >= n_tokens);
    assert!(!r.text().contains("NEVER"));
}

#[test]
fn chat_streaming_with_reasoning_tools_and_usage() {
    let s = start(cfg(8192));
    let script = format!("Thinking hard.</think>{}", call_script());
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"stream":true,"stream_options":{"include_usage":true},"tools":weather_tools(),
                "messages":[{"role":"user","content":format!("ECHO:{script}")}]}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let body = r.text();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let ev = sse_json(&body);
    for e in &ev {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert!(e["id"].as_str().unwrap().starts_with("chatcmpl-"));
    }
    assert_eq!(ev[0]["choices"][0]["delta"], json!({"role":"assistant"}));
    let mut reasoning = String::new();
    let mut content = String::new();
    let mut args = String::new();
    let mut header = None;
    let mut finish = None;
    for e in &ev[1..] {
        if e["choices"].as_array().unwrap().is_empty() {
            continue;
        }
        let d = &e["choices"][0]["delta"];
        if let Some(x) = d.get("reasoning_content") {
            assert!(content.is_empty(), "reasoning after content");
            reasoning.push_str(x.as_str().unwrap());
        }
        if let Some(x) = d.get("content") {
            content.push_str(x.as_str().unwrap());
        }
        if let Some(tc) = d.get("tool_calls") {
            let tc = &tc[0];
            assert_eq!(tc["index"], 0);
            if tc.get("id").is_some() {
                assert_eq!(tc["type"], "function");
                assert_eq!(tc["function"]["arguments"], "");
                header = Some(tc.clone());
            } else {
                args.push_str(tc["function"]["arguments"].as_str().unwrap());
            }
        }
        if !e["choices"][0]["finish_reason"].is_null() {
            assert_eq!(d, &json!({}));
            finish = Some(e["choices"][0]["finish_reason"].clone());
        }
    }
    assert_eq!(reasoning, "Thinking hard.");
    assert_eq!(content, "Checking.");
    assert_eq!(header.unwrap()["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city":"Paris","days":3})
    );
    assert_eq!(finish.unwrap(), "tool_calls");
    let last = ev.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(last["usage"]["prompt_tokens_details"]["cached_tokens"].is_number());
    assert!(!body.contains("DSML"));
    assert!(!body.contains("think>"));
}

#[test]
fn completions_raw_text() {
    let s = start(cfg(4096));
    let r = post(
        s.addr,
        "/v1/completions",
        &json!({"prompt":"ECHO:r1</think>ok","max_tokens":100}),
    );
    let j = r.json();
    assert!(
        r.text()
            .starts_with(r#"{"id":"cmpl-1","object":"text_completion""#),
        "{}",
        r.text()
    );
    assert_eq!(j["choices"][0]["text"], "r1</think>ok");
    assert_eq!(j["choices"][0]["finish_reason"], "stop");
    let r = post(
        s.addr,
        "/v1/completions",
        &json!({"prompt":["ECHO:xy"],"stream":true,"stream_options":{"include_usage":true},"think":false}),
    );
    let body = r.text();
    let ev = sse_json(&body);
    let text: String = ev
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "xy");
    let fin = ev
        .iter()
        .find(|e| {
            e["choices"]
                .get(0)
                .map(|c| !c["finish_reason"].is_null())
                .unwrap_or(false)
        })
        .unwrap();
    assert_eq!(fin["choices"][0]["text"], "");
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    assert!(
        ev.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            == 2
    );
    assert!(body.ends_with("data: [DONE]\n\n"));
}

#[test]
fn anthropic_non_streaming_thinking_and_tool_use() {
    let s = start(cfg(8192));
    let script = format!("Plan.</think>{}", call_script());
    let r = post(
        s.addr,
        "/v1/messages",
        &json!({"model":"deepseek-v4-flash","max_tokens":500,"tools":anthropic_tools(),
                "messages":[{"role":"user","content":format!("ECHO:{script}")}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["type"], "message");
    assert_eq!(j["role"], "assistant");
    let id = j["id"].as_str().unwrap();
    let c = j["content"].as_array().unwrap();
    assert_eq!(
        c[0],
        json!({"type":"thinking","thinking":"Plan.","signature":id})
    );
    assert_eq!(c[1], json!({"type":"text","text":"Checking."}));
    assert_eq!(c[2]["type"], "tool_use");
    assert!(c[2]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(c[2]["input"], json!({"city":"Paris","days":3}));
    assert_eq!(j["stop_reason"], "tool_use");
    assert_eq!(j["stop_sequence"], Value::Null);
    let u = &j["usage"];
    assert_eq!(u["input_tokens"], 0);
    assert!(u["cache_creation_input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(u["cache_read_input_tokens"], 0);
    // Only thinking → an empty text block is appended; max_tokens → stop_reason.
    let r = post(
        s.addr,
        "/v1/messages",
        &json!({"max_tokens":3,"messages":[{"role":"user","content":"ECHO:abcdef"}]}),
    );
    let j = r.json();
    assert_eq!(j["stop_reason"], "max_tokens");
    assert_eq!(
        j["content"],
        json!([{"type":"thinking","thinking":"abc","signature":j["id"]},{"type":"text","text":""}])
    );
}

#[test]
fn anthropic_streaming_event_sequence() {
    let s = start(cfg(8192));
    let script = format!("Plan.</think>{}", call_script());
    let r = post(
        s.addr,
        "/v1/messages",
        &json!({"max_tokens":500,"stream":true,"tools":anthropic_tools(),
                "messages":[{"role":"user","content":format!("ECHO:{script}")}]}),
    );
    let body = r.text();
    let ev = sse_events(&body);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let data: Vec<Value> = ev
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (i, (n, _)) in ev.iter().enumerate() {
        assert_eq!(data[i]["type"].as_str().unwrap(), n);
    }
    // Blocks: thinking(0), text(1), tool_use(2), each started, delta'd, stopped in order.
    let starts: Vec<&Value> = data
        .iter()
        .filter(|d| d["type"] == "content_block_start")
        .collect();
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[0]["index"], 0);
    assert_eq!(
        starts[0]["content_block"],
        json!({"type":"thinking","thinking":"","signature":""})
    );
    assert_eq!(starts[1]["content_block"], json!({"type":"text","text":""}));
    assert_eq!(starts[2]["content_block"]["type"], "tool_use");
    assert_eq!(starts[2]["content_block"]["input"], json!({}));
    let mut thinking = String::new();
    let mut text = String::new();
    let mut pj = String::new();
    let mut sig = None;
    for d in &data {
        if d["type"] == "content_block_delta" {
            let x = &d["delta"];
            match x["type"].as_str().unwrap() {
                "thinking_delta" => thinking.push_str(x["thinking"].as_str().unwrap()),
                "signature_delta" => sig = Some(x["signature"].clone()),
                "text_delta" => text.push_str(x["text"].as_str().unwrap()),
                "input_json_delta" => pj.push_str(x["partial_json"].as_str().unwrap()),
                t => panic!("unexpected delta {t}"),
            }
        }
    }
    assert_eq!(thinking, "Plan.");
    assert_eq!(text, "Checking.");
    assert_eq!(
        serde_json::from_str::<Value>(&pj).unwrap(),
        json!({"city":"Paris","days":3})
    );
    assert_eq!(sig.unwrap(), data[0]["message"]["id"]);
    let md = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(
        md["delta"],
        json!({"stop_reason":"tool_use","stop_sequence":null})
    );
    assert!(md["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(data[0]["message"]["usage"]["output_tokens"], 0);
    assert_eq!(data[0]["message"]["content"], json!([]));
}

#[test]
fn responses_non_streaming_and_streaming() {
    let s = start(cfg(8192));
    let rtools = json!([{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}}}}]);
    let script = format!("Plan.</think>{}", call_script());
    let body = json!({"input":format!("ECHO:{script}"),"tools":rtools,"reasoning":{"effort":"high","summary":"auto"}});
    let r = post(s.addr, "/v1/responses", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().ends_with('\n'));
    let j = r.json();
    assert!(j["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(j["object"], "response");
    assert_eq!(j["status"], "completed");
    let out = j["output"].as_array().unwrap();
    assert_eq!(out[0]["type"], "reasoning");
    assert_eq!(
        out[0]["summary"],
        json!([{"type":"summary_text","text":"Plan."}])
    );
    assert_eq!(out[1]["type"], "message");
    assert_eq!(
        out[1]["content"],
        json!([{"type":"output_text","text":"Checking.","annotations":[]}])
    );
    assert_eq!(out[2]["type"], "function_call");
    assert_eq!(out[2]["name"], "get_weather");
    assert!(out[2]["call_id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(out[2]["arguments"], r#"{"city":"Paris","days":3}"#);
    // Reasoning: the generated "Plan." and the think-end token, a part of the output.
    let reasoning =
        ds4_engine::Tokenizer::encode(&ds4_engine::testing::TestTokenizer, "Plan.</think>").len();
    assert_eq!(
        j["usage"]["output_tokens_details"]["reasoning_tokens"],
        reasoning
    );
    assert!(j["usage"]["output_tokens"].as_u64().unwrap() > reasoning as u64);

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let r = post(s.addr, "/v1/responses", &sb);
    let ev = sse_json(&r.text());
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["sequence_number"], i);
    }
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "response.created");
    assert_eq!(types[1], "response.in_progress");
    assert_eq!(ev[1]["response"]["status"], "in_progress");
    assert_eq!(ev[1]["response"]["id"], ev[0]["response"]["id"]);
    assert_eq!(*types.last().unwrap(), "response.completed");
    let pos = |t: &str| {
        types
            .iter()
            .position(|x| *x == t)
            .unwrap_or_else(|| panic!("no {t} in {types:?}"))
    };
    assert!(pos("response.reasoning_summary_text.delta") < pos("response.output_text.delta"));
    assert!(pos("response.output_text.done") < pos("response.function_call_arguments.delta"));
    let fin = &ev.last().unwrap()["response"];
    assert_eq!(fin["output"].as_array().unwrap().len(), 3);
    assert_eq!(
        fin["output"][2]["arguments"],
        r#"{"city":"Paris","days":3}"#
    );
    let text: String = ev
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "Checking.");
    // Without summary opt-in no reasoning item is produced.
    let r = post(
        s.addr,
        "/v1/responses",
        &json!({"input":"ECHO:r.</think>hi"}),
    );
    let j = r.json();
    assert_eq!(j["output"].as_array().unwrap().len(), 1);
    assert_eq!(j["output"][0]["type"], "message");
    // Length → incomplete.
    let r = post(
        s.addr,
        "/v1/responses",
        &json!({"input":"ECHO:abcdef","max_output_tokens":2,"reasoning":{"effort":"none"}}),
    );
    let j = r.json();
    assert_eq!(j["status"], "incomplete");
    assert_eq!(j["incomplete_details"], json!({"reason":"max_tokens"}));
}

#[test]
fn extended_conversation_reuses_live_kv() {
    let s = start(cfg(8192));
    let first = json!({"model":"deepseek-chat","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"ECHO:First answer."}]});
    let j1 = post(s.addr, "/v1/chat/completions", &first).json();
    assert_eq!(j1["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let answer = j1["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let second = json!({"model":"deepseek-chat","messages":[
        {"role":"system","content":"Be brief."},
        {"role":"user","content":"ECHO:First answer."},
        {"role":"assistant","content":answer},
        {"role":"user","content":"ECHO:Second."}]});
    let j2 = post(s.addr, "/v1/chat/completions", &second).json();
    assert_eq!(j2["choices"][0]["message"]["content"], "Second.");
    let p1 = j1["usage"]["prompt_tokens"].as_u64().unwrap();
    let c1 = j1["usage"]["completion_tokens"].as_u64().unwrap();
    let cached = j2["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(cached, p1 + c1, "{j2}");
    assert_eq!(
        j2["usage"]["prompt_tokens_details"]["cache_write_tokens"]
            .as_u64()
            .unwrap(),
        j2["usage"]["prompt_tokens"].as_u64().unwrap() - cached
    );
}

#[test]
fn thinking_conversation_reuses_live_kv_over_dropped_reasoning() {
    let s = start(cfg(8192));
    let first = json!({"messages":[{"role":"user","content":"ECHO:secret reasoning</think>Visible answer."}]});
    let j1 = post(s.addr, "/v1/chat/completions", &first).json();
    let m1 = &j1["choices"][0]["message"];
    assert_eq!(m1["reasoning_content"], "secret reasoning");
    // The client replays content only (reasoning is dropped by the renderer anyway).
    let second = json!({"messages":[
        {"role":"user","content":"ECHO:secret reasoning</think>Visible answer."},
        {"role":"assistant","content":m1["content"]},
        {"role":"user","content":"ECHO:more</think>Second."}]});
    let j2 = post(s.addr, "/v1/chat/completions", &second).json();
    assert_eq!(j2["choices"][0]["message"]["content"], "Second.");
    let live = j1["usage"]["prompt_tokens"].as_u64().unwrap()
        + j1["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        j2["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        live,
        "{j2}"
    );
}

#[test]
fn tool_turn_is_replayed_exactly_and_reuses_live_kv() {
    let s = start(cfg(8192));
    let user = format!("ECHO:{}", call_script());
    let j1 = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","tools":weather_tools(),"messages":[{"role":"user","content":user}]}),
    )
    .json();
    let m1 = j1["choices"][0]["message"].clone();
    let id = m1["tool_calls"][0]["id"].as_str().unwrap().to_string();
    let second = json!({"model":"deepseek-chat","tools":weather_tools(),"messages":[
        {"role":"user","content":user},
        m1,
        {"role":"tool","tool_call_id":id,"content":"ECHO:Sunny."}]});
    let j2 = post(s.addr, "/v1/chat/completions", &second).json();
    assert_eq!(j2["choices"][0]["message"]["content"], "Sunny.");
    let live = j1["usage"]["prompt_tokens"].as_u64().unwrap()
        + j1["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        j2["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        live,
        "{j2}"
    );
}

#[test]
fn trace_file_records_requests() {
    let path = std::env::temp_dir().join(format!("ds4-trace-test-{}.txt", std::process::id()));
    let mut c = cfg(4096);
    c.trace = Some(path.clone());
    let s = start(c);
    post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","messages":[{"role":"user","content":"ECHO:traced"}]}),
    );
    post(
        s.addr,
        "/v1/messages",
        &json!({"max_tokens":20,"stream":true,"messages":[{"role":"user","content":"ECHO:again"}]}),
    );
    let t = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(t.contains("===== request 1 "), "{t}");
    assert!(t.contains("===== end request 1 ====="), "{t}");
    assert!(t.contains("===== end request 2 ====="), "{t}");
    assert!(t.contains("route=/v1/chat/completions"));
    assert!(
        t.contains("<｜User｜>ECHO:traced<｜Assistant｜></think>"),
        "{t}"
    );
    assert!(t.contains("cache_source=none"));
    assert!(t.contains("--- generated text ---\ntraced\n"));
}

#[test]
fn responses_restore_namespaces_and_tool_search_calls() {
    let s = start(cfg(8192));
    let tools = json!([
        {"type":"namespace","name":"mcp__fs__","tools":[{"type":"function","name":"read","parameters":{"type":"object","properties":{"path":{"type":"string"}}}}]},
        {"type":"tool_search","description":"search tools"}]);
    let block = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"mcp__fs__read\">\n<｜DSML｜parameter name=\"path\" string=\"true\">/etc</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"tool_search\">\n<｜DSML｜parameter name=\"query\" string=\"true\">git</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let body = json!({"model":"deepseek-chat","tools":tools,"input":format!("ECHO:{block}")});
    let r = post(s.addr, "/v1/responses", &body);
    let j = r.json();
    let out = j["output"].as_array().unwrap();
    assert_eq!(out.len(), 2, "{j}");
    assert_eq!(out[0]["type"], "function_call");
    assert_eq!(out[0]["name"], "read");
    assert_eq!(out[0]["namespace"], "mcp__fs__");
    assert_eq!(out[0]["arguments"], r#"{"path":"/etc"}"#);
    assert!(
        r.text().contains(
            r#""status":"completed","name":"read","namespace":"mcp__fs__","call_id":"call_"#
        ),
        "{}",
        r.text()
    );
    assert_eq!(out[1]["type"], "tool_search_call");
    assert_eq!(out[1]["execution"], "client");
    assert_eq!(out[1]["arguments"], json!({"query":"git"}));
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let ev = sse_json(&post(s.addr, "/v1/responses", &sb).text());
    let arg_events = ev
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.done")
        .collect::<Vec<_>>();
    assert_eq!(arg_events.len(), 1);
    assert_eq!(arg_events[0]["name"], "read");
    assert_eq!(arg_events[0]["namespace"], "mcp__fs__");
    let fin = &ev.last().unwrap()["response"]["output"];
    assert_eq!(fin[1]["type"], "tool_search_call");
}

#[test]
fn anthropic_thinking_tool_round_trip_reuses_live_kv() {
    let s = start(cfg(8192));
    let user = format!("ECHO:Need the weather.</think>{}", call_script());
    let first = json!({"max_tokens":500,"tools":anthropic_tools(),"messages":[{"role":"user","content":user}]});
    let j1 = post(s.addr, "/v1/messages", &first).json();
    assert_eq!(j1["stop_reason"], "tool_use");
    let id = j1["content"][2]["id"].as_str().unwrap().to_string();
    let second = json!({"max_tokens":500,"tools":anthropic_tools(),"messages":[
        {"role":"user","content":user},
        {"role":"assistant","content":j1["content"]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":id,"content":"ECHO:ok.</think>Sunny."}]}]});
    let j2 = post(s.addr, "/v1/messages", &second).json();
    assert_eq!(j2["content"][1]["text"], "Sunny.", "{j2}");
    let live = j1["usage"]["cache_creation_input_tokens"].as_u64().unwrap()
        + j1["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(
        j2["usage"]["cache_read_input_tokens"].as_u64().unwrap(),
        live,
        "{j2}"
    );
}

#[test]
fn responses_thinking_tool_round_trip_reuses_live_kv() {
    let s = start(cfg(8192));
    let rtools = json!([{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}}}}]);
    let user = format!("ECHO:Need the weather.</think>{}", call_script());
    let first = json!({"tools":rtools,"reasoning":{"summary":"auto"},"input":[{"role":"user","content":user}]});
    let j1 = post(s.addr, "/v1/responses", &first).json();
    let out = j1["output"].as_array().unwrap().clone();
    assert_eq!(out.len(), 3, "{j1}");
    let call_id = out[2]["call_id"].as_str().unwrap().to_string();
    let mut input = vec![json!({"role":"user","content":user})];
    input.extend(out);
    input.push(
        json!({"type":"function_call_output","call_id":call_id,"output":"ECHO:ok.</think>Sunny."}),
    );
    let j2 = post(
        s.addr,
        "/v1/responses",
        &json!({"tools":rtools,"reasoning":{"summary":"auto"},"input":input}),
    )
    .json();
    assert_eq!(j2["output"][1]["content"][0]["text"], "Sunny.", "{j2}");
    let live = j1["usage"]["input_tokens"].as_u64().unwrap()
        + j1["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(
        j2["usage"]["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        live,
        "{j2}"
    );
}

#[test]
fn thinking_tool_turn_replayed_without_reasoning_reuses_live_kv() {
    let s = start(cfg(8192));
    let user = format!("ECHO:Private plan.</think>{}", call_script());
    let j1 = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"tools":weather_tools(),"messages":[{"role":"user","content":user}]}),
    )
    .json();
    let mut m1 = j1["choices"][0]["message"].clone();
    assert_eq!(m1["reasoning_content"], "Private plan.");
    // Most chat clients drop reasoning_content when they replay.
    m1.as_object_mut().unwrap().remove("reasoning_content");
    let id = m1["tool_calls"][0]["id"].as_str().unwrap().to_string();
    let second = json!({"tools":weather_tools(),"messages":[
        {"role":"user","content":user}, m1,
        {"role":"tool","tool_call_id":id,"content":"ECHO:ok.</think>Sunny."}]});
    let j2 = post(s.addr, "/v1/chat/completions", &second).json();
    assert_eq!(j2["choices"][0]["message"]["content"], "Sunny.", "{j2}");
    let live = j1["usage"]["prompt_tokens"].as_u64().unwrap()
        + j1["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        j2["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        live,
        "{j2}"
    );
    // Responses without a reasoning summary: the client never saw the reasoning.
    let s = start(cfg(8192));
    let rtools = json!([{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}}}}]);
    let j1 = post(
        s.addr,
        "/v1/responses",
        &json!({"tools":rtools,"input":[{"role":"user","content":user}]}),
    )
    .json();
    let out = j1["output"].as_array().unwrap().clone();
    assert_eq!(out.len(), 2, "{j1}");
    let call_id = out[1]["call_id"].as_str().unwrap().to_string();
    let mut input = vec![json!({"role":"user","content":user})];
    input.extend(out);
    input.push(
        json!({"type":"function_call_output","call_id":call_id,"output":"ECHO:ok.</think>Sunny."}),
    );
    let j2 = post(
        s.addr,
        "/v1/responses",
        &json!({"tools":rtools,"input":input}),
    )
    .json();
    assert_eq!(j2["output"][0]["content"][0]["text"], "Sunny.", "{j2}");
    let live = j1["usage"]["input_tokens"].as_u64().unwrap()
        + j1["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(
        j2["usage"]["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        live,
        "{j2}"
    );
}

/// The rendered prompt of trace record `k` (1-based) of a trace file's text.
fn traced_prompt(trace: &str, k: usize) -> String {
    let rec = trace
        .split(&format!("===== request {k} "))
        .nth(1)
        .unwrap_or_else(|| panic!("no request {k} in {trace}"));
    let after = rec.split("--- rendered prompt (").nth(1).unwrap();
    let prompt = after.split_once(" tokens) ---\n").unwrap().1;
    prompt
        .split_once("\n--- cache decision ---")
        .unwrap()
        .0
        .to_string()
}

fn trace_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ds4-{name}-{}.txt", std::process::id()))
}

#[test]
fn anthropic_mid_conversation_system_renders_as_official_encoder() {
    // Golden case 15 (DeepSeek's official encoder): a second system message
    // in the middle of the history is rendered in place, after the EOS.
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ds4-chat/tests/golden/15_multiple_system.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let official = golden["rendered"].as_str().unwrap();
    assert_eq!(golden["thinking_mode"], "chat");
    let path = trace_path("mid-system");
    let mut c = cfg(4096);
    c.trace = Some(path.clone());
    let s = start(c);
    let turns = json!([{"role":"user","content":"Q1"},{"role":"assistant","content":"A1"}]);
    let bodies = [
        // Top-level system, mid-conversation system with string content.
        json!({"model":"deepseek-chat","max_tokens":5,"system":"Rule A.","messages":[
            turns[0], turns[1], {"role":"system","content":"Rule B."}, {"role":"user","content":"Q2"}]}),
        // Content as an array of text blocks (as Claude Code sends it).
        json!({"model":"deepseek-chat","max_tokens":5,"system":[{"type":"text","text":"Rule A."}],"messages":[
            turns[0], turns[1],
            {"role":"system","content":[{"type":"text","text":"Rule B.","cache_control":{"type":"ephemeral"}}]},
            {"role":"user","content":"Q2"}]}),
        // Both system turns inside messages.
        json!({"model":"deepseek-chat","max_tokens":5,"messages":[
            {"role":"system","content":"Rule A."}, turns[0], turns[1],
            {"role":"system","content":"Rule B."}, {"role":"user","content":"Q2"}]}),
    ];
    for (i, b) in bodies.iter().enumerate() {
        let r = post(s.addr, "/v1/messages", b);
        assert_eq!(r.status, 200, "body {i}: {}", r.text());
    }
    // Thinking mode, built from the spec (§2.1): the old reasoning is dropped
    // before the last user turn, the system text stays in place.
    let r = post(
        s.addr,
        "/v1/messages",
        &json!({"max_tokens":5,"messages":[{"role":"user","content":"Q1"},
            {"role":"assistant","content":[{"type":"thinking","thinking":"r1","signature":"x"},{"type":"text","text":"A1"}]},
            {"role":"system","content":[{"type":"text","text":"Rule B."},{"type":"text","text":"Rule C."}]},
            {"role":"user","content":"Q2"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    for k in 1..=3 {
        assert_eq!(traced_prompt(&t, k), official, "request {k}");
    }
    assert_eq!(
        traced_prompt(&t, 4),
        "<｜begin▁of▁sentence｜><｜User｜>Q1<｜Assistant｜></think>A1<｜end▁of▁sentence｜>Rule B.\nRule C.<｜User｜>Q2<｜Assistant｜><think>"
    );
}

#[test]
fn anthropic_stop_sequence_is_reported() {
    let s = start(cfg(4096));
    let body = |stream: bool| {
        json!({"model":"deepseek-chat","max_tokens":50,"stream":stream,"stop_sequences":["zz","de","cd"],
               "messages":[{"role":"user","content":"ECHO:abcdefgh"}]})
    };
    let r = post(s.addr, "/v1/messages", &body(false));
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["content"], json!([{"type":"text","text":"ab"}]));
    assert_eq!(j["stop_reason"], "stop_sequence");
    assert_eq!(j["stop_sequence"], "cd");
    let ev = sse_json(&post(s.addr, "/v1/messages", &body(true)).text());
    let md = ev.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(
        md["delta"],
        json!({"stop_reason":"stop_sequence","stop_sequence":"cd"})
    );
    let text: String = ev
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "ab");
    // Stop sequences given but never matched: end_turn, null.
    let r = post(
        s.addr,
        "/v1/messages",
        &json!({"model":"deepseek-chat","max_tokens":50,"stop_sequences":["zz"],
                "messages":[{"role":"user","content":"ECHO:abc"}]}),
    );
    let j = r.json();
    assert_eq!(j["content"], json!([{"type":"text","text":"abc"}]));
    assert_eq!(j["stop_reason"], "end_turn");
    assert_eq!(j["stop_sequence"], Value::Null);
    // OpenAI keeps its finish_reason "stop".
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"model":"deepseek-chat","stop":["cd"],"messages":[{"role":"user","content":"ECHO:abcdefgh"}]}),
    );
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");
}

fn is_message_id(id: &str) -> bool {
    id.strip_prefix("msg_").is_some_and(|h| {
        h.len() == 24
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[test]
fn anthropic_message_ids_are_msg_ids() {
    let s = start(cfg(4096));
    let body = json!({"max_tokens":5,"messages":[{"role":"user","content":"ECHO:hi"}]});
    let a = post(s.addr, "/v1/messages", &body).json();
    let id_a = a["id"].as_str().unwrap().to_string();
    assert!(is_message_id(&id_a), "{id_a}");
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let ev = sse_json(&post(s.addr, "/v1/messages", &sbody).text());
    assert_eq!(ev[0]["type"], "message_start");
    let id_b = ev[0]["message"]["id"].as_str().unwrap();
    assert!(is_message_id(id_b), "{id_b}");
    assert_ne!(id_a, id_b);
    // OpenAI ids keep the per-process counter (two Anthropic requests before).
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({"messages":[{"role":"user","content":"ECHO:x"}]}),
    );
    assert_eq!(r.json()["id"], "chatcmpl-3");
}

#[test]
fn anthropic_count_tokens_matches_messages_usage() {
    let path = trace_path("count-tokens");
    let mut c = cfg(4096);
    c.trace = Some(path.clone());
    let s = start(c);
    let body = json!({"model":"deepseek-chat","system":[{"type":"text","text":"You are terse."}],
        "tools":anthropic_tools(),
        "messages":[{"role":"user","content":"Q1"},{"role":"assistant","content":"A1"},
            {"role":"system","content":"Be brief."},{"role":"user","content":"ECHO:fine"}]});
    // No max_tokens needed.
    let r = post(s.addr, "/v1/messages/count_tokens", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j.as_object().unwrap().len(), 1, "{j}");
    let n = j["input_tokens"].as_u64().unwrap();
    let mut mbody = body.clone();
    mbody["max_tokens"] = json!(20);
    let m = post(s.addr, "/v1/messages", &mbody).json();
    assert_eq!(m["content"][0]["text"], "fine");
    let u = &m["usage"];
    let prompt = u["input_tokens"].as_u64().unwrap()
        + u["cache_read_input_tokens"].as_u64().unwrap()
        + u["cache_creation_input_tokens"].as_u64().unwrap();
    assert_eq!(n, prompt);
    // The count is the tokenizer's count of the exact rendered prompt.
    let t = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let rendered = traced_prompt(&t, 1);
    assert!(rendered.contains("<｜end▁of▁sentence｜>Be brief.<｜User｜>ECHO:fine"));
    use ds4_engine::Tokenizer as _;
    assert_eq!(
        n as usize,
        ds4_engine::testing::TestTokenizer.encode(&rendered).len()
    );
    assert!(t.contains(&format!("--- rendered prompt ({n} tokens) ---")));
}
