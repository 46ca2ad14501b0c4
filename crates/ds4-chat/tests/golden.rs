//! Every golden case (DeepSeek's official encoder output) must be reproduced
//! byte for byte from an OpenAI chat-completions request.

use ds4_chat::json::Json;
use ds4_chat::{dump_prompt, THINK_MAX_MIN_CONTEXT};
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn cases() -> Vec<(String, Json)> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.ends_with(".json") && n.as_bytes()[0].is_ascii_digit()
        })
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read(&p).unwrap();
        out.push((
            p.file_stem().unwrap().to_str().unwrap().to_string(),
            Json::parse_bytes(&text).unwrap(),
        ));
    }
    out
}

/// Builds an OpenAI request body for a case, with the thinking controls given
/// either explicitly (`thinking` / `reasoning_effort`) or through the model alias.
fn request(case: &Json, via_alias: bool) -> String {
    let mut members: Vec<(String, Json)> = Vec::new();
    let thinking = case.get("thinking_mode").unwrap().as_str().unwrap() == "thinking";
    let effort = case.get("reasoning_effort").unwrap().as_str();
    if via_alias {
        let model = if thinking {
            "deepseek-reasoner"
        } else {
            "deepseek-chat"
        };
        members.push(("model".into(), Json::String(model.into())));
    } else {
        members.push(("model".into(), Json::String("deepseek-v4-flash".into())));
        if !thinking {
            members.push((
                "thinking".into(),
                Json::Object(vec![("type".into(), Json::String("disabled".into()))]),
            ));
        }
    }
    if let Some(e) = effort {
        members.push(("reasoning_effort".into(), Json::String(e.into())));
    }
    members.push(("messages".into(), case.get("messages").unwrap().clone()));
    members.push(("tools".into(), case.get("tools").unwrap().clone()));
    Json::Object(members).to_compact()
}

#[test]
fn golden_cases_render_byte_identical() {
    let cases = cases();
    assert_eq!(cases.len(), 39);
    let mut failures = Vec::new();
    for (name, case) in &cases {
        let expected = case.get("rendered").unwrap().as_str().unwrap();
        for via_alias in [false, true] {
            let req = request(case, via_alias);
            let got = dump_prompt(req.as_bytes(), THINK_MAX_MIN_CONTEXT).unwrap();
            if got != expected {
                failures.push(format!(
                    "{name} (alias={via_alias}):\n got {got:?}\nwant {expected:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn think_max_downgraded_below_context_threshold() {
    for (name, case) in cases() {
        if case.get("reasoning_effort").unwrap().as_str() != Some("max")
            || case.get("thinking_mode").unwrap().as_str() != Some("thinking")
        {
            continue;
        }
        let req = request(&case, false);
        let full = dump_prompt(req.as_bytes(), THINK_MAX_MIN_CONTEXT).unwrap();
        let small = dump_prompt(req.as_bytes(), THINK_MAX_MIN_CONTEXT - 1).unwrap();
        assert!(
            full.contains(ds4_chat::render::REASONING_EFFORT_MAX),
            "{name}"
        );
        assert_eq!(
            small,
            full.replacen(ds4_chat::render::REASONING_EFFORT_MAX, "", 1),
            "{name}"
        );
    }
}
