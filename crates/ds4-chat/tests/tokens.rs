//! Token-level checks against the real DeepSeek V4 tokenizer.

use ds4_chat::json::Json;
use ds4_chat::render::{dsml_block, ASSISTANT, BOS, DSML, EOS, THINK_END, THINK_START, USER};
use ds4_chat::{
    dump_prompt, render_prompt_tokens, EndCause, Event, Message, OutputParser, ParserOptions,
    RenderOptions, ThinkMode, ToolCall, THINK_MAX_MIN_CONTEXT,
};
use ds4_tokenizer::Tokenizer;
use std::sync::OnceLock;

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(Tokenizer::embedded_v4)
}

fn ids_of(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as u32)
        .collect()
}

#[test]
fn golden_token_ids_match_reference_tokenizer() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".json") || !name.as_bytes()[0].is_ascii_digit() {
            continue;
        }
        let case = Json::parse_bytes(&std::fs::read(&p).unwrap()).unwrap();
        // Re-render from the request and tokenize: must equal the reference ids.
        let mut req = vec![(
            "messages".to_string(),
            case.get("messages").unwrap().clone(),
        )];
        req.push(("tools".into(), case.get("tools").unwrap().clone()));
        if case.get("thinking_mode").unwrap().as_str() == Some("chat") {
            req.push(("model".into(), Json::String("deepseek-chat".into())));
        }
        if let Some(e) = case.get("reasoning_effort").unwrap().as_str() {
            req.push(("reasoning_effort".into(), Json::String(e.into())));
        }
        let text = dump_prompt(
            Json::Object(req).to_compact().as_bytes(),
            THINK_MAX_MIN_CONTEXT,
        )
        .unwrap();
        assert_eq!(
            text,
            case.get("rendered").unwrap().as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            tok().encode(&text),
            ids_of(case.get("token_ids").unwrap()),
            "{name}"
        );
        n += 1;
    }
    assert_eq!(n, 39);
}

#[test]
fn protocol_markers_are_single_special_tokens() {
    let expect = [
        (BOS, 0u32),
        (EOS, 1),
        (USER, 128803),
        (ASSISTANT, 128804),
        (THINK_START, 128821),
        (THINK_END, 128822),
        (DSML, 128825),
    ];
    for (marker, id) in expect {
        assert_eq!(tok().encode(marker), vec![id], "{marker}");
        assert_eq!(tok().token_id(marker), Some(id));
        assert_eq!(tok().decode(&[id]), marker.as_bytes());
    }
    // In a rendered prompt with a tool call every marker occurrence is one id.
    let conv = ds4_chat::Conversation {
        messages: vec![
            Message::system("sys"),
            Message::user("hi <think> </think> <｜User｜>"),
            Message::Assistant {
                content: "ok".into(),
                reasoning: Some("r".into()),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments: r#"{"a":1}"#.into(),
                }],
            },
            Message::tool("c1", "res"),
        ],
        tools: vec![Json::parse(r#"{"name":"f","parameters":{"type":"object"}}"#).unwrap()],
        response_format: None,
    };
    let (text, ids) = render_prompt_tokens(&conv, ThinkMode::High, RenderOptions::default(), tok());
    for (marker, id) in expect {
        let in_text = text.matches(marker).count();
        let in_ids = ids.iter().filter(|&&x| x == id).count();
        assert_eq!(in_text, in_ids, "{marker}");
        assert!(
            in_text > 0 || marker == EOS || marker == BOS && in_text == 1,
            "{marker}"
        );
    }
    assert_eq!(ids[0], 0);
    assert_eq!(*ids.last().unwrap(), 128821);
    // The DSML open tag tokenizes as in spec §1.2.
    assert_eq!(
        tok().encode("<｜DSML｜tool_calls>"),
        vec![30, 128825, 72461, 4941, 12548, 32]
    );
}

/// xorshift64* PRNG (deterministic, dependency-free).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const POOL: &[&str] = &[
    "a", "Z", "0", "7", " ", "  ", "\n", "\r\n", "\t", "\"", "\\", "/", "<", ">", "&", "'", "{",
    "}", "[", "]", ":", ",", "é", "ß", "中", "文", "ア", "😀", "🎉", "\u{301}", "\u{200f}",
    "\u{a0}", "\u{3000}", "\u{2028}", "！", "…", "①", "x<y", "a&&b", "</", "<｜", "｜", "DSML",
    "=\"", "\u{1}", "\u{7f}", "null", "1e5",
];

fn rand_string(r: &mut Rng) -> String {
    let n = r.below(12);
    let mut s: String = (0..n).map(|_| POOL[r.below(POOL.len())]).collect();
    // Values the official (unescaped) format cannot carry are excluded:
    // entity spellings (decoded by the lenient parser) and closing tags.
    for bad in [
        "&amp;",
        "&lt;",
        "&gt;",
        "&quot;",
        "&apos;",
        "</｜DSML｜parameter>",
    ] {
        s = s.replace(bad, "");
    }
    s
}

fn rand_value(r: &mut Rng, depth: usize) -> Json {
    match r.below(if depth > 2 { 5 } else { 7 }) {
        0 => Json::Null,
        1 => Json::Bool(r.below(2) == 0),
        2 => Json::Number(format!("{}", r.next() as i64 >> r.below(60))),
        3 => {
            let v = (r.next() as i64 as f64) / 2f64.powi(r.below(90) as i32);
            Json::Number(ds4_chat::json::python_float_repr(v))
        }
        4 => Json::String(rand_string(r)),
        5 => Json::Array((0..r.below(4)).map(|_| rand_value(r, depth + 1)).collect()),
        _ => Json::Object(
            (0..r.below(4))
                .map(|i| {
                    (
                        format!("k{i}{}", rand_string(r).replace('"', "")),
                        rand_value(r, depth + 1),
                    )
                })
                .collect(),
        ),
    }
}

fn key(r: &mut Rng, i: usize) -> String {
    // Keys go into an attribute: no `"`.
    let k: String = rand_string(r).replace(['"', '>'], "");
    format!("{k}{i}")
}

#[test]
fn property_render_tokenize_parse_roundtrip() {
    let mut r = Rng(0x9E3779B97F4A7C15);
    for case in 0..300 {
        let ncalls = 1 + r.below(3);
        let calls: Vec<ToolCall> = (0..ncalls)
            .map(|c| {
                let members = (0..r.below(5))
                    .map(|i| (key(&mut r, i), rand_value(&mut r, 0)))
                    .collect();
                ToolCall {
                    id: format!("id{c}"),
                    name: format!("tool_{}", r.below(1000)),
                    arguments: Json::Object(members).to_compact(),
                }
            })
            .collect();
        // Content before a tool block loses trailing ASCII whitespace (the separator).
        let content = rand_string(&mut r)
            .replace('<', "")
            .trim_end_matches([' ', '\t', '\n', '\r'])
            .to_string();
        let thinking = r.below(2) == 0;
        let output = format!(
            "{}{}{}",
            if thinking { "reasoning…</think>" } else { "" },
            content,
            dsml_block(&calls)
        );
        // Tokenize like the model's output, then feed the parser token by token.
        let ids = tok().encode(&output);
        let mut p = OutputParser::new(ParserOptions::new(thinking, true));
        let mut ev = Vec::new();
        for id in &ids {
            ev.extend(p.push(tok().token_bytes(*id).unwrap()));
        }
        ev.extend(p.finish_with(EndCause::Stop));
        let m = p.into_message();
        assert_eq!(m.content, content, "case {case}: {output:?}");
        assert_eq!(
            m.tool_calls.len(),
            calls.len(),
            "case {case}: {output:?}\n{ev:?}"
        );
        for (got, want) in m.tool_calls.iter().zip(&calls) {
            assert_eq!(got.name, want.name);
            // The official renderer writes non-strings with Python json.dumps; the
            // parser returns compact JSON. Same value after Python normalization.
            let g = Json::parse(&got.arguments)
                .unwrap_or_else(|e| panic!("case {case}: {e}: {}", got.arguments));
            let w = Json::parse(&want.arguments).unwrap();
            assert_eq!(g.to_python(), w.to_python(), "case {case}: {output:?}");
        }
        assert_eq!(m.raw_blocks.len(), 1);
        assert_eq!(m.raw_blocks[0].1, dsml_block(&calls));
        assert!(m.warnings.is_empty(), "case {case}: {:?}", m.warnings);
    }
}

#[test]
fn property_token_stream_split_invariance() {
    // Feeding per token or per arbitrary byte chunk gives the same merged events.
    let mut r = Rng(42);
    for _ in 0..60 {
        let calls: Vec<ToolCall> = (0..1 + r.below(2))
            .map(|c| ToolCall {
                id: format!("{c}"),
                name: "f".into(),
                arguments: Json::Object(vec![
                    ("s".into(), Json::String(rand_string(&mut r))),
                    ("v".into(), rand_value(&mut r, 1)),
                ])
                .to_compact(),
            })
            .collect();
        let output = format!(
            "think {}</think>{}{}",
            rand_string(&mut r),
            rand_string(&mut r).replace('<', ""),
            dsml_block(&calls)
        );
        let ids = tok().encode(&output);
        let feed = |chunks: Vec<Vec<u8>>| {
            let mut n = 0;
            let mut p = OutputParser::with_id_generator(
                ParserOptions::new(true, true),
                Box::new(move || {
                    n += 1;
                    format!("id{n}")
                }),
            );
            let mut ev = Vec::new();
            for c in chunks {
                ev.extend(p.push(&c));
            }
            ev.extend(p.finish());
            merge(ev)
        };
        let per_token = feed(
            ids.iter()
                .map(|&i| tok().token_bytes(i).unwrap().to_vec())
                .collect(),
        );
        let bytes = output.as_bytes();
        let mut chunks = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let n = 1 + r.below(7);
            chunks.push(bytes[i..(i + n).min(bytes.len())].to_vec());
            i += n;
        }
        assert_eq!(feed(chunks), per_token, "{output:?}");
        assert_eq!(feed(vec![bytes.to_vec()]), per_token);
        // Split at every token position and at every byte position.
        let mut at = 0;
        for &id in &ids {
            at += tok().token_bytes(id).unwrap().len();
            assert_eq!(
                feed(vec![bytes[..at].to_vec(), bytes[at..].to_vec()]),
                per_token,
                "token split at {at}"
            );
        }
        for i in 0..=bytes.len() {
            assert_eq!(
                feed(vec![bytes[..i].to_vec(), bytes[i..].to_vec()]),
                per_token,
                "byte split at {i}"
            );
        }
    }
}

fn merge(ev: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in ev {
        match (out.last_mut(), &e) {
            (Some(Event::ReasoningDelta(a)), Event::ReasoningDelta(b)) => a.push_str(b),
            (Some(Event::TextDelta(a)), Event::TextDelta(b)) => a.push_str(b),
            (
                Some(Event::ToolCallArgs { index: i, delta: a }),
                Event::ToolCallArgs { index: j, delta: b },
            ) if i == j => a.push_str(b),
            _ => out.push(e),
        }
    }
    out
}
