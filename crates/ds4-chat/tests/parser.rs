//! Output parser: official grammar, lenient variants, streaming invariants.

use ds4_chat::render::dsml_block;
use ds4_chat::{
    DecodeState, EndCause, Event, FinishReason, Json, OutputParser, ParsedMessage, ParserOptions,
    SamplingGuard, ToolCall,
};

const OPEN: &str = "<｜DSML｜tool_calls>";
const CLOSE: &str = "</｜DSML｜tool_calls>";

fn counter_ids() -> Box<dyn FnMut() -> String + Send> {
    let mut n = 0;
    Box::new(move || {
        n += 1;
        format!("call_{n}")
    })
}

fn parser(thinking: bool, tools: bool) -> OutputParser {
    OutputParser::with_id_generator(ParserOptions::new(thinking, tools), counter_ids())
}

/// Feeds `chunks` and finishes; returns the events and the message.
fn run_chunks(
    thinking: bool,
    tools: bool,
    chunks: &[&[u8]],
    cause: EndCause,
) -> (Vec<Event>, ParsedMessage) {
    let mut p = parser(thinking, tools);
    let mut ev = Vec::new();
    for c in chunks {
        ev.extend(p.push(c));
    }
    ev.extend(p.finish_with(cause));
    (ev, p.into_message())
}

fn run(thinking: bool, text: &str) -> (Vec<Event>, ParsedMessage) {
    run_chunks(thinking, true, &[text.as_bytes()], EndCause::Stop)
}

/// Merges consecutive deltas of the same kind so that differently split
/// streams can be compared.
fn normalize(ev: &[Event]) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in ev {
        match (out.last_mut(), e) {
            (Some(Event::ReasoningDelta(a)), Event::ReasoningDelta(b)) => a.push_str(b),
            (Some(Event::TextDelta(a)), Event::TextDelta(b)) => a.push_str(b),
            (
                Some(Event::ToolCallArgs { index: i, delta: a }),
                Event::ToolCallArgs { index: j, delta: b },
            ) if i == j => a.push_str(b),
            _ => out.push(e.clone()),
        }
    }
    out
}

/// Rebuilds the raw output from the events (the leading `<think>` the parser
/// skips is not included).
fn reconstruct(ev: &[Event]) -> String {
    let mut s = String::new();
    for e in ev {
        match e {
            Event::ReasoningDelta(d) | Event::TextDelta(d) => s.push_str(d),
            Event::ReasoningEnd => s.push_str("</think>"),
            Event::ToolCallsDone { raw_dsml, .. } => s.push_str(raw_dsml),
            _ => {}
        }
    }
    s
}

/// Every split of `text` into two pushes, and a byte-per-push feed, give the
/// same normalized events as one push; and no byte is lost.
fn assert_split_invariant(thinking: bool, text: &str) {
    let b = text.as_bytes();
    let (whole, _) = run_chunks(thinking, true, &[b], EndCause::Stop);
    let whole = normalize(&whole);
    for i in 0..=b.len() {
        let (ev, _) = run_chunks(thinking, true, &[&b[..i], &b[i..]], EndCause::Stop);
        assert_eq!(normalize(&ev), whole, "split at {i} of {text:?}");
    }
    let bytes: Vec<&[u8]> = b.chunks(1).collect();
    let (ev, _) = run_chunks(thinking, true, &bytes, EndCause::Stop);
    assert_eq!(normalize(&ev), whole, "byte-wise feed of {text:?}");
    let rebuilt = reconstruct(&whole);
    let expect = if thinking {
        text.strip_prefix("<think>").unwrap_or(text)
    } else {
        text
    };
    assert_eq!(rebuilt, expect, "bytes lost");
    // Per-call argument fragments concatenate to the final arguments.
    let mut frags: std::collections::BTreeMap<usize, String> = Default::default();
    for e in &whole {
        match e {
            Event::ToolCallArgs { index, delta } => {
                frags.entry(*index).or_default().push_str(delta)
            }
            Event::ToolCallEnd { index, arguments } => {
                assert_eq!(frags.get(index), Some(arguments))
            }
            _ => {}
        }
    }
}

fn official(calls: &[(&str, &str)]) -> String {
    let calls: Vec<ToolCall> = calls
        .iter()
        .map(|(n, a)| ToolCall {
            id: String::new(),
            name: n.to_string(),
            arguments: a.to_string(),
        })
        .collect();
    dsml_block(&calls)
}

#[test]
fn official_grammar_thinking_with_call() {
    let block = official(&[("bash", r#"{"command":"ls -la","timeout":10}"#)]);
    let text = format!("Need ls.</think>Let me check.{block}");
    let (ev, m) = run(true, &text);
    assert_eq!(m.reasoning, "Need ls.");
    assert!(m.reasoning_complete);
    assert_eq!(m.content, "Let me check.");
    assert_eq!(m.tool_calls.len(), 1);
    assert_eq!(m.tool_calls[0].name, "bash");
    assert_eq!(m.tool_calls[0].id, "call_1");
    assert_eq!(
        m.tool_calls[0].arguments,
        r#"{"command":"ls -la","timeout":10}"#
    );
    assert_eq!(
        m.raw_blocks,
        vec![(vec!["call_1".to_string()], block.clone())]
    );
    assert_eq!(m.finish, Some((FinishReason::ToolCalls, None)));
    assert!(matches!(
        ev.last(),
        Some(Event::Finish {
            reason: FinishReason::ToolCalls,
            ..
        })
    ));
    assert_split_invariant(true, &text);
}

#[test]
fn parallel_calls_indexes_and_ids() {
    let block = official(&[
        ("get_weather", r#"{"location":"Rome"}"#),
        (
            "get_weather",
            r#"{"location":"Paris","days":[1,2],"opts":{"a":null}}"#,
        ),
    ]);
    let text = format!("r</think>{block}");
    let (ev, m) = run(true, &text);
    let starts: Vec<(usize, String)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::ToolCallStart { index, id, .. } => Some((*index, id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        vec![(0, "call_1".to_string()), (1, "call_2".to_string())]
    );
    assert_eq!(
        m.tool_calls[1].arguments,
        r#"{"location":"Paris","days":[1,2],"opts":{"a":null}}"#
    );
    assert_eq!(m.content, "");
    assert_split_invariant(true, &text);
}

#[test]
fn missing_think_end_is_all_reasoning() {
    // Length cutoff inside reasoning: everything streamed so far is reasoning.
    let (ev, m) = run_chunks(true, true, &[b"still thinking </thi"], EndCause::Length);
    assert_eq!(m.reasoning, "still thinking </thi");
    assert!(!m.reasoning_complete);
    assert_eq!(m.content, "");
    assert!(matches!(
        ev.last(),
        Some(Event::Finish {
            reason: FinishReason::Length,
            ..
        })
    ));
}

#[test]
fn think_end_twice_and_leading_think() {
    let text = "<think>a</think>b</think>c";
    let (_, m) = run(true, text);
    assert_eq!(m.reasoning, "a");
    assert_eq!(m.content, "b</think>c");
    assert_split_invariant(true, text);
}

#[test]
fn dsml_inside_reasoning_is_not_executed() {
    let block = official(&[("bash", r#"{"command":"rm -rf /"}"#)]);
    let text = format!("maybe {block} no</think>Done.");
    let (_, m) = run(true, &text);
    assert!(m.tool_calls.is_empty());
    assert_eq!(m.reasoning, format!("maybe {block} no"));
    assert_eq!(m.content, "Done.");
    assert_split_invariant(true, &text);
}

#[test]
fn chat_mode_has_no_reasoning() {
    let text = "x</think>y";
    let (_, m) = run(false, text);
    assert_eq!(m.reasoning, "");
    assert_eq!(m.content, "x</think>y");
}

#[test]
fn separator_variants_and_trailing_text() {
    for sep in ["\n\n", "", "\n\n\n \t", " "] {
        let body = format!(
            "{OPEN}\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n</｜DSML｜invoke>\n{CLOSE}"
        );
        let text = format!("Hi.{sep}{body}");
        let (_, m) = run(false, &text);
        assert_eq!(m.content, "Hi.", "sep {sep:?}");
        assert_eq!(m.raw_blocks[0].1, format!("{sep}{body}"));
        assert_eq!(m.tool_calls[0].arguments, r#"{"a":"x"}"#);
        assert_split_invariant(false, &text);
    }
    // Text after the closing tag is kept as text (never lost).
    let text = format!("{}after", official(&[("f", "{}")]));
    let (_, m) = run(false, &text);
    assert_eq!(m.content, "after");
    assert_eq!(m.tool_calls[0].arguments, "{}");
}

#[test]
fn short_and_plain_styles() {
    let short = "ok\n\n<DSML｜tool_calls>\n<DSML｜invoke name=\"bash\">\n<DSML｜parameter name=\"command\" string=\"true\">ls -la</DSML｜parameter>\n</DSML｜invoke>\n</DSML｜tool_calls>";
    let plain = "ok<tool_calls><invoke name=\"bash\"><parameter name=\"command\" string=\"true\">ls -la</parameter></invoke></tool_calls>";
    for text in [short, plain] {
        let (_, m) = run(false, text);
        assert_eq!(m.content, "ok");
        assert_eq!(m.tool_calls[0].name, "bash");
        assert_eq!(m.tool_calls[0].arguments, r#"{"command":"ls -la"}"#);
        assert_split_invariant(false, text);
    }
}

#[test]
fn missing_string_attribute_and_nested_params() {
    let text = format!(
        "{OPEN}<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"s\">  plain &amp; simple</｜DSML｜parameter>\
<｜DSML｜parameter name=\"obj\">\n<｜DSML｜parameter name=\"k\" string=\"false\">1</｜DSML｜parameter>\
<｜DSML｜parameter name=\"t\">v</｜DSML｜parameter>\n</｜DSML｜parameter>\
<｜DSML｜parameter name=\"z\" string=\"false\"> [1, 2] </｜DSML｜parameter></｜DSML｜invoke>{CLOSE}"
    );
    let (_, m) = run(false, &text);
    assert_eq!(
        m.tool_calls[0].arguments,
        r#"{"s":"  plain &amp; simple","obj":{"k":1,"t":"v"},"z":[1,2]}"#
    );
    assert_split_invariant(false, &text);
}

/// The official parser does no entity decoding: names and values are verbatim
/// (a value may itself be HTML such as `&amp;`).
#[test]
fn entities_stay_verbatim() {
    let text = format!(
        "{OPEN}<｜DSML｜invoke name=\"a&amp;b\"><｜DSML｜parameter name=\"q&quot;\" string=\"true\">x &lt;/｜DSML｜parameter> &nbsp; &&</｜DSML｜parameter></｜DSML｜invoke>{CLOSE}"
    );
    let (_, m) = run(false, &text);
    assert_eq!(m.tool_calls[0].name, "a&amp;b");
    assert_eq!(
        m.tool_calls[0].arguments,
        r#"{"q&quot;":"x &lt;/｜DSML｜parameter> &nbsp; &&"}"#
    );
    assert_split_invariant(false, &text);
}

/// Names holding `"` or `>` and content ending in whitespace, as the official
/// encoder writes them (regression: the name used to stop at the first `"`/`>`
/// and the content lost its trailing whitespace).
#[test]
fn official_names_with_quotes_and_brackets_and_verbatim_content() {
    let calls = [
        ToolCall {
            id: "c1".into(),
            name: "a\">b".into(),
            arguments: r#"{"<k>": 1, "a\"b": "v", "x\" string=\"y": true}"#.into(),
        },
        ToolCall {
            id: "c2".into(),
            name: "<f>".into(),
            arguments: "{}".into(),
        },
    ];
    let text = format!("done \n{}", dsml_block(&calls));
    for thinking in [false, true] {
        let full = if thinking {
            format!("why</think>{text}")
        } else {
            text.clone()
        };
        let (_, m) = run(thinking, &full);
        assert_eq!(m.content, "done \n");
        assert_eq!(m.tool_calls.len(), 2, "{full:?}");
        assert_eq!(m.tool_calls[0].name, "a\">b");
        assert_eq!(
            m.tool_calls[0].arguments,
            r#"{"<k>":1,"a\"b":"v","x\" string=\"y":true}"#
        );
        assert_eq!(m.tool_calls[1].name, "<f>");
        assert_eq!(m.tool_calls[1].arguments, "{}");
        assert_split_invariant(thinking, &full);
    }
}

#[test]
fn malformed_block_falls_back_to_text() {
    let text = format!("Hi\n\n{OPEN}\n<｜DSML｜invoke>\n</｜DSML｜invoke>\n{CLOSE} tail");
    let (ev, m) = run(false, &text);
    assert!(m.tool_calls.is_empty());
    assert_eq!(m.content, text);
    assert!(ev.iter().any(|e| matches!(e, Event::DsmlInvalid { .. })));
    assert_eq!(
        m.finish,
        Some((FinishReason::Stop, Some("invalid tool call".to_string())))
    );
    assert_split_invariant(false, &text);
    // Garbage between tags.
    let text = format!("{OPEN}\nhello <｜DSML｜invoke name=\"f\"></｜DSML｜invoke>{CLOSE}");
    let (_, m) = run(false, &text);
    assert!(m.tool_calls.is_empty());
    assert_eq!(m.content, text);
    assert_split_invariant(false, &text);
}

#[test]
fn malformed_block_then_valid_block() {
    let good = official(&[("f", r#"{"a":1}"#)]);
    let text = format!("{OPEN}oops{good}");
    let (_, m) = run(false, &text);
    assert_eq!(m.content, format!("{OPEN}oops"));
    assert_eq!(m.tool_calls.len(), 1);
    assert_eq!(m.tool_calls[0].arguments, r#"{"a":1}"#);
    assert_split_invariant(false, &text);
}

#[test]
fn unterminated_block_is_an_error() {
    let text = format!(
        "Hi{OPEN}\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">x"
    );
    let (ev, m) = run(false, &text);
    assert!(m.tool_calls.is_empty());
    assert_eq!(m.content, text);
    assert!(matches!(
        ev.last(),
        Some(Event::Finish {
            reason: FinishReason::Error,
            ..
        })
    ));
    // Cut by length: reported as length.
    let (_, m) = run_chunks(false, true, &[text.as_bytes()], EndCause::Length);
    assert_eq!(m.finish.unwrap().0, FinishReason::Length);
    // A completed call inside an unterminated block is void too.
    let text = format!("{OPEN}<｜DSML｜invoke name=\"f\"></｜DSML｜invoke>");
    let (_, m) = run(false, &text);
    assert!(m.tool_calls.is_empty());
    assert_eq!(m.content, text);
}

#[test]
fn invalid_json_value_becomes_string_with_warning() {
    let text = format!(
        "{OPEN}<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"n\" string=\"false\">10s</｜DSML｜parameter>\
<｜DSML｜parameter name=\"e\" string=\"false\">  </｜DSML｜parameter>\
<｜DSML｜parameter name=\"x\" string=\"maybe\">1e5</｜DSML｜parameter></｜DSML｜invoke>{CLOSE}"
    );
    let (_, m) = run(false, &text);
    assert_eq!(m.tool_calls[0].arguments, r#"{"n":"10s","e":null,"x":1e5}"#);
    assert_eq!(m.warnings.len(), 1);
    assert!(Json::parse(&m.tool_calls[0].arguments).is_ok());
}

#[test]
fn dsml_without_active_tools_is_still_parsed() {
    let text = format!("a{}", official(&[("f", r#"{"a":"b"}"#)]));
    let (_, m) = run_chunks(false, false, &[text.as_bytes()], EndCause::Stop);
    assert_eq!(m.tool_calls.len(), 1);
    assert_eq!(m.finish.unwrap().0, FinishReason::ToolCalls);
}

#[test]
fn streaming_holds_partial_markers_and_utf8() {
    let mut p = parser(true, true);
    // Partial UTF-8 (🎉 = F0 9F 8E 89) and partial </think>.
    assert_eq!(
        p.push(b"a\xF0\x9F\x8E"),
        vec![Event::ReasoningDelta("a".into())]
    );
    assert_eq!(
        p.push(b"\x89</th"),
        vec![Event::ReasoningDelta("🎉".into())]
    );
    assert_eq!(
        p.push(b"ink>Hi"),
        vec![Event::ReasoningEnd, Event::TextDelta("Hi".into())]
    );
    // Whitespace and a partial tool marker are never emitted early.
    assert_eq!(p.push(b" \n\n"), vec![]);
    assert_eq!(p.push("<｜DS".as_bytes()), vec![]);
    // The official marker is "\n\n" + tag: the space before it is content.
    // The invoke header ends at the next tag (a name may hold `"` or `>`).
    assert_eq!(
        p.push("ML｜tool_calls>\n<｜DSML｜invoke name=\"f\">".as_bytes()),
        vec![Event::TextDelta(" ".into())]
    );
    assert_eq!(p.decode_state(), DecodeState::Structural);
    let ev = p.push("\n<｜DSML｜parameter name=\"a\" string=\"true\">x &am".as_bytes());
    assert_eq!(
        ev,
        vec![
            Event::ToolCallStart {
                index: 0,
                id: "call_1".into(),
                name: "f".into()
            },
            Event::ToolCallArgs {
                index: 0,
                delta: "{".into()
            },
            Event::ToolCallArgs {
                index: 0,
                delta: "\"a\":\"".into()
            },
            Event::ToolCallArgs {
                index: 0,
                delta: "x &am".into()
            }
        ]
    );
    assert_eq!(p.decode_state(), DecodeState::StringBody);
    // Entities are not decoded (official parser); a partial closing tag is held.
    assert_eq!(
        p.push(b"p; y</"),
        vec![Event::ToolCallArgs {
            index: 0,
            delta: "p; y".into()
        }]
    );
    assert_eq!(p.decode_state(), DecodeState::Structural);
    let ev = p.push("｜DSML｜parameter>".as_bytes());
    assert_eq!(
        ev,
        vec![Event::ToolCallArgs {
            index: 0,
            delta: "\"".into()
        }]
    );
    p.push("<｜DSML｜parameter name=\"j\" string=\"false\">{\"k\": \"v".as_bytes());
    assert_eq!(p.decode_state(), DecodeState::JsonString);
    p.push(b"\", ");
    assert_eq!(p.decode_state(), DecodeState::JsonStructural);
    p.push("\"n\": 1}</｜DSML｜parameter></｜DSML｜invoke>".as_bytes());
    assert!(!p.should_stop());
    let ev = p.push(CLOSE.as_bytes());
    assert!(matches!(ev.last(), Some(Event::ToolCallsDone { .. })));
    assert!(p.should_stop());
    assert_eq!(p.decode_state(), DecodeState::Outside);
    p.finish();
    let m = p.into_message();
    assert_eq!(m.content, "Hi ");
    assert_eq!(
        m.tool_calls[0].arguments,
        r#"{"a":"x &amp; y","j":{"k":"v","n":1}}"#
    );
    assert_eq!(
        m.raw_blocks[0].1.chars().take(3).collect::<String>(),
        "\n\n<"
    );
}

#[test]
fn sampling_guard_only_with_active_tools() {
    let mut g = SamplingGuard::new(false, false);
    g.push(format!("{OPEN}<｜DSML｜invoke name=\"f\">").as_bytes());
    assert!(!g.greedy());
    let mut g = SamplingGuard::new(true, true);
    // DSML quoted in reasoning does not trigger greedy decoding.
    g.push(format!("think {OPEN}").as_bytes());
    assert!(!g.greedy());
    g.push(format!("</think>{OPEN}").as_bytes());
    assert!(g.greedy());
    assert_eq!(g.temperature(0.7), 0.0);
    g.push("<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"a\" string=\"true\">".as_bytes());
    assert!(!g.greedy());
    assert_eq!(g.temperature(0.7), 0.7);
    g.push("v</｜DSML｜parameter></｜DSML｜invoke></｜DSML｜tool_calls>".as_bytes());
    assert!(g.should_stop());
    assert!(!g.greedy());
}

#[test]
fn text_without_markers_streams_immediately() {
    let mut p = parser(false, true);
    assert_eq!(
        p.push("Hello wörld".as_bytes()),
        vec![Event::TextDelta("Hello wörld".into())]
    );
    assert_eq!(p.push(b" a < b"), vec![Event::TextDelta(" a < b".into())]);
    assert_eq!(p.push(b" <"), vec![]);
    assert_eq!(p.push(b"t"), vec![]); // could still become <tool_calls>
    assert_eq!(p.push(b"x"), vec![Event::TextDelta(" <tx".into())]);
    assert_eq!(p.push(b"\n"), vec![]);
    let ev = p.finish();
    assert_eq!(ev[0], Event::TextDelta("\n".into()));
    assert!(matches!(
        ev[1],
        Event::Finish {
            reason: FinishReason::Stop,
            error: None
        }
    ));
}

#[test]
fn random_ids_have_the_documented_shape() {
    let mut p = OutputParser::new(ParserOptions {
        id_prefix: "toolu_".into(),
        ..ParserOptions::new(false, true)
    });
    let mut ids = Vec::new();
    p.push(official(&[("f", "{}"), ("g", "{}")]).as_bytes());
    for c in &p.message().tool_calls {
        ids.push(c.id.clone());
    }
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let hex = id.strip_prefix("toolu_").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
    assert_ne!(ids[0], ids[1]);
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

const FRAGMENTS: &[&str] = &[
    "<｜DSML｜tool_calls>",
    "</｜DSML｜tool_calls>",
    "<｜DSML｜invoke",
    "</｜DSML｜invoke>",
    "<｜DSML｜parameter",
    "</｜DSML｜parameter>",
    " name=\"f\"",
    " name=\"a&amp;\"",
    " string=\"true\"",
    " string=\"false\"",
    ">",
    "\n",
    "\n\n",
    " ",
    "<DSML｜tool_calls>",
    "<DSML｜invoke",
    "</DSML｜parameter>",
    "<tool_calls>",
    "<invoke",
    "</invoke>",
    "<parameter",
    "</parameter>",
    "</tool_calls>",
    "<think>",
    "</think>",
    "&amp;",
    "&lt;",
    "&",
    "&am",
    "<",
    "</",
    "<｜",
    "｜",
    "x",
    "é",
    "😀",
    "中文",
    "{",
    "}",
    "[1,",
    "\"",
    "\\",
    "1",
    "true",
    "null",
    ":",
];

/// Random soups of DSML fragments: the parser never panics, loses no byte, and
/// emits the same (merged) events for any split of the input.
#[test]
fn fuzz_fragment_soup_split_invariant() {
    let mut r = Rng(0xDEADBEEF);
    let (mut with_calls, mut with_invalid) = (0, 0);
    for _ in 0..400 {
        let text: String = if r.below(2) == 0 {
            let n = r.below(40);
            (0..n)
                .map(|_| FRAGMENTS[r.below(FRAGMENTS.len())])
                .collect()
        } else {
            // A valid block with a few random mutations.
            let mut t = format!(
                "r</think>c{}",
                official(&[
                    ("f", r#"{"a":"x &amp; y","n":[1,{"b":null}]}"#),
                    ("g", "{}")
                ])
            );
            for _ in 0..r.below(4) {
                let mut at = r.below(t.len() + 1);
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                if r.below(2) == 0 {
                    t.insert_str(at, FRAGMENTS[r.below(FRAGMENTS.len())]);
                } else {
                    let mut end = (at + 1 + r.below(8)).min(t.len());
                    while !t.is_char_boundary(end) {
                        end += 1;
                    }
                    t.replace_range(at..end, "");
                }
            }
            t
        };
        let thinking = r.below(2) == 0;
        let b = text.as_bytes();
        let (whole, m) = run_chunks(thinking, true, &[b], EndCause::Stop);
        let whole = normalize(&whole);
        let expect = if thinking {
            text.strip_prefix("<think>").unwrap_or(&text)
        } else {
            &text
        };
        assert_eq!(reconstruct(&whole), expect, "bytes lost: {text:?}");
        assert!(matches!(whole.last(), Some(Event::Finish { .. })));
        for c in &m.tool_calls {
            assert!(
                Json::parse(&c.arguments).is_ok(),
                "{text:?}: {}",
                c.arguments
            );
        }
        with_calls += usize::from(!m.tool_calls.is_empty());
        with_invalid += usize::from(m.warnings.iter().any(|w| w.contains("tool call")));
        for _ in 0..8 {
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut i = 0;
            while i < b.len() {
                let k = (i + 1 + r.below(9)).min(b.len());
                chunks.push(&b[i..k]);
                i = k;
            }
            let (ev, _) = run_chunks(thinking, true, &chunks, EndCause::Stop);
            assert_eq!(normalize(&ev), whole, "{text:?} split as {chunks:?}");
        }
    }
    // Both the success and the fallback paths were exercised.
    assert!(
        with_calls > 40 && with_invalid > 40,
        "{with_calls} {with_invalid}"
    );
}

#[test]
fn invalid_utf8_never_panics() {
    let soup: &[&[u8]] = &[
        b"\xff",
        b"\xf0\x9f",
        b"</think>\xe4",
        b"\xb8",
        b"<\xed\xa0\x80>",
        "<｜DSML｜tool_calls>".as_bytes(),
        b"\xc3",
    ];
    let (ev, m) = run_chunks(true, true, soup, EndCause::Length);
    assert!(matches!(ev.last(), Some(Event::Finish { .. })));
    assert!(m.content.contains('\u{FFFD}'));
    assert_eq!(m.reasoning, "\u{FFFD}\u{FFFD}");
}

#[test]
fn large_json_value_fed_token_by_token() {
    let items: Vec<String> = (0..5000)
        .map(|i| format!("{{\"i\": {i}, \"s\": \"v{i}\"}}"))
        .collect();
    let value = format!("[{}]", items.join(", "));
    let text = format!(
        "{OPEN}<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"xs\" string=\"false\">{value}</｜DSML｜parameter></｜DSML｜invoke>{CLOSE}"
    );
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(3).collect();
    let (_, m) = run_chunks(false, true, &chunks, EndCause::Stop);
    let expect = format!("{{\"xs\":{}}}", value.replace(' ', ""));
    assert_eq!(m.tool_calls[0].arguments, expect);
}

/// The invoke header runs to the first parameter tag (or invoke end), as in
/// the official parser, even when it holds DSML-like text (expected values
/// from the official `parse_message_from_completion_text`). Regression: the
/// header used to stop at the next `<｜DSML｜invoke`.
#[test]
fn invoke_header_runs_to_the_first_parameter_tag() {
    let text = "r</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let (_, m) = run(true, text);
    assert_eq!(m.reasoning, "r");
    assert_eq!(m.content, "");
    assert_eq!(m.tool_calls.len(), 1);
    assert_eq!(
        m.tool_calls[0].name,
        "f\">\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"g"
    );
    assert_eq!(m.tool_calls[0].arguments, r#"{"a":"1"}"#);
    assert_split_invariant(true, text);
}
