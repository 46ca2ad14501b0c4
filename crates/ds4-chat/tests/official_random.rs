//! Random conversations rendered by DeepSeek's official encoder
//! (`tests/fixtures/official_random.json`, produced by
//! `tools/chat-oracle/gen_cases.py`): our renderer must reproduce every one
//! byte for byte from the OpenAI request body, and our output parser must
//! recover what the official parser recovers from the official rendering of
//! each assistant message (reasoning, content, DSML tool calls) as model output.

use ds4_chat::json::Json;
use ds4_chat::render::EOS;
use ds4_chat::{
    openai_chat, EndCause, OutputParser, ParserOptions, ThinkMode, THINK_MAX_MIN_CONTEXT,
};

fn fixture() -> Json {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/official_random.json"
    );
    Json::parse_bytes(&std::fs::read(path).unwrap()).unwrap()
}

/// The OpenAI request body of a case: its raw `body` plus the thinking
/// controls of (`mode`, `effort`), as a client would send them.
fn request(case: &Json) -> Json {
    request_with(case, false)
}

/// As [`request`]; with `via_alias` thinking on/off comes from the model
/// alias (`deepseek-reasoner` / `deepseek-chat`) instead of `thinking`.
fn request_with(case: &Json, via_alias: bool) -> Json {
    let body = Json::parse(case.get("body").unwrap().as_str().unwrap()).unwrap();
    let Json::Object(mut members) = body else {
        panic!("body is not an object")
    };
    let chat = case.get("mode").unwrap().as_str() == Some("chat");
    let model = match (via_alias, chat) {
        (false, _) => "deepseek-v4-flash",
        (true, true) => "deepseek-chat",
        (true, false) => "deepseek-reasoner",
    };
    members.push(("model".into(), Json::String(model.into())));
    if chat && !via_alias {
        members.push((
            "thinking".into(),
            Json::Object(vec![("type".into(), Json::String("disabled".into()))]),
        ));
    }
    if let Some(e) = case.get("effort").and_then(Json::as_str) {
        members.push(("reasoning_effort".into(), Json::String(e.into())));
    }
    Json::Object(members)
}

fn expected_mode(case: &Json) -> ThinkMode {
    match (
        case.get("mode").unwrap().as_str().unwrap(),
        case.get("effort").and_then(Json::as_str),
    ) {
        ("chat", _) => ThinkMode::Off,
        (_, Some("max")) => ThinkMode::Max,
        _ => ThinkMode::High,
    }
}

#[test]
fn random_conversations_render_like_the_official_encoder() {
    let fx = fixture();
    let cases = fx.get("cases").unwrap().as_array().unwrap();
    assert!(cases.len() >= 200, "fixture has {} cases", cases.len());
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let id = case.get("id").unwrap().to_compact();
        let req = match openai_chat(&request_with(case, n % 2 == 1)) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("case {id}: request rejected: {e}"));
                continue;
            }
        };
        let mode = req.think_mode(THINK_MAX_MIN_CONTEXT);
        assert_eq!(mode, expected_mode(case), "case {id}");
        let got = req.render(mode, None);
        let want = case.get("rendered").unwrap().as_str().unwrap();
        if got != want {
            let at = got
                .char_indices()
                .zip(want.chars())
                .find(|((_, a), b)| a != b)
                .map(|((i, _), _)| i)
                .unwrap_or(got.len().min(want.len()));
            let lo = got[..at].char_indices().rev().nth(60).map_or(0, |(i, _)| i);
            failures.push(format!(
                "case {id}: first difference at byte {at}\n got …{:?}\nwant …{:?}",
                &got[lo..],
                &want[lo.min(want.len())..]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Compares tool-call arguments as JSON values with exact number spellings.
fn same_arguments(ours: &str, official: &str) -> bool {
    match (Json::parse(ours), Json::parse(official)) {
        (Ok(a), Ok(b)) => a.to_compact() == b.to_compact(),
        _ => false,
    }
}

#[test]
fn parser_recovers_what_the_official_parser_recovers() {
    let fx = fixture();
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in fx.get("cases").unwrap().as_array().unwrap() {
        let id = case.get("id").unwrap().to_compact();
        let thinking = case.get("mode").unwrap().as_str() != Some("chat");
        let Some(parses) = case.get("parses").and_then(Json::as_array) else {
            continue;
        };
        for p in parses {
            if p.get("error").is_some() {
                continue; // not well-formed for the official parser
            }
            let text = p.get("text").unwrap().as_str().unwrap();
            // The engine stops at the EOS token; its text never reaches the parser.
            let out = text
                .strip_suffix(EOS)
                .expect("official output ends with EOS");
            for split in [None, Some(1usize), Some(7)] {
                let mut parser = OutputParser::new(ParserOptions::new(thinking, true));
                match split {
                    None => {
                        parser.push(out.as_bytes());
                    }
                    Some(n) => {
                        for chunk in out.as_bytes().chunks(n) {
                            parser.push(chunk);
                        }
                    }
                }
                parser.finish_with(EndCause::Stop);
                let msg = parser.into_message();
                let want_calls = p.get("calls").unwrap().as_array().unwrap();
                let mut problems = Vec::new();
                if msg.content != p.get("content").unwrap().as_str().unwrap() {
                    problems.push(format!("content {:?}", msg.content));
                }
                if thinking && msg.reasoning != p.get("reasoning").unwrap().as_str().unwrap() {
                    problems.push(format!("reasoning {:?}", msg.reasoning));
                }
                if msg.tool_calls.len() != want_calls.len() {
                    problems.push(format!("{} calls", msg.tool_calls.len()));
                } else {
                    for (c, w) in msg.tool_calls.iter().zip(want_calls) {
                        let w = w.as_array().unwrap();
                        let (name, args) = (w[0].as_str().unwrap(), w[1].as_str().unwrap());
                        if c.name != name || !same_arguments(&c.arguments, args) {
                            problems.push(format!(
                                "call {:?} {:?}, want {name:?} {args:?}",
                                c.name, c.arguments
                            ));
                        }
                    }
                }
                if !problems.is_empty() {
                    failures.push(format!(
                        "case {id} split {split:?}: {}\n text {out:?}",
                        problems.join("; ")
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 100, "only {checked} parses checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} parses differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Requests the official encoder raises on (all of them history tool calls
/// whose arguments are JSON but not an object) are clear request errors here.
#[test]
fn oracle_errors_are_request_errors() {
    let fx = fixture();
    let errors = fx.get("errors").unwrap().as_array().unwrap();
    assert!(!errors.is_empty());
    for case in errors {
        let id = case.get("id").unwrap().to_compact();
        let oracle = case.get("error").unwrap().as_str().unwrap();
        assert!(
            oracle.starts_with("AttributeError: '") && oracle.contains("has no attribute 'items'"),
            "case {id}: new kind of oracle error {oracle:?}: decide how to map it"
        );
        match openai_chat(&request(case)) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(".function.arguments must be a JSON object"),
                    "case {id}: {msg}"
                );
            }
            Ok(_) => panic!("case {id}: accepted, but the official encoder raises {oracle:?}"),
        }
    }
}
