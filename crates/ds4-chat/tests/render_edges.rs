//! Rendering edge cases (spec §6 items 1-12, 28), expected strings derived by
//! hand from the official encoder's rules (spec §2.1, §2.4).

use ds4_chat::json::Json;
use ds4_chat::render::{dsml_block, tools_block, ASSISTANT, BOS, EOS, REASONING_EFFORT_MAX, USER};
use ds4_chat::{
    anthropic_messages, dump_prompt, openai_chat, render_prompt, responses, ChatError,
    Conversation, EndCause, Message, OutputParser, ParserOptions, RenderOptions, ThinkMode,
    ToolCall, ToolMemory, THINK_MAX_MIN_CONTEXT,
};

const CTX: usize = THINK_MAX_MIN_CONTEXT;

fn dump(req: &str) -> String {
    dump_prompt(req.as_bytes(), CTX).unwrap_or_else(|e| panic!("{e}: {req}"))
}

fn err(req: &str) -> ChatError {
    dump_prompt(req.as_bytes(), CTX).unwrap_err()
}

const TOOL: &str = r#"{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}"#;

fn tools_f() -> String {
    tools_block(&[Json::parse(r#"{"name":"f","parameters":{"type":"object"}}"#).unwrap()])
}

#[test]
fn null_content_for_every_role() {
    let req = r#"{"model":"deepseek-chat","messages":[{"role":"system","content":null},{"role":"user","content":null},
        {"role":"assistant","content":null,"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c","content":null},{"role":"assistant","content":null}]}"#;
    let calls = [ToolCall {
        id: "c".into(),
        name: "f".into(),
        arguments: "{}".into(),
    }];
    let want = format!(
        "{BOS}{USER}{ASSISTANT}</think>{}{EOS}{USER}<tool_result></tool_result>{ASSISTANT}</think>{EOS}",
        dsml_block(&calls)
    );
    assert_eq!(dump(req), want);
}

#[test]
fn empty_system_with_and_without_tools() {
    let no_tools = r#"{"model":"deepseek-chat","messages":[{"role":"system","content":""},{"role":"user","content":"u"}]}"#;
    assert_eq!(dump(no_tools), format!("{BOS}{USER}u{ASSISTANT}</think>"));
    let tools = format!(
        r#"{{"model":"deepseek-chat","tools":[{TOOL}],"messages":[{{"role":"system","content":""}},{{"role":"user","content":"u"}}]}}"#
    );
    assert_eq!(
        dump(&tools),
        format!("{BOS}\n\n{}{USER}u{ASSISTANT}</think>", tools_f())
    );
    // No system message at all: tools go into an empty leading system message.
    let tools = format!(
        r#"{{"model":"deepseek-chat","tools":[{TOOL}],"messages":[{{"role":"user","content":"u"}}]}}"#
    );
    assert_eq!(
        dump(&tools),
        format!("{BOS}\n\n{}{USER}u{ASSISTANT}</think>", tools_f())
    );
}

#[test]
fn tools_attach_to_the_first_system_message_only() {
    let req = format!(
        r#"{{"model":"deepseek-chat","tools":[{TOOL}],"messages":[{{"role":"user","content":"q"}},{{"role":"system","content":"A"}},
        {{"role":"user","content":"r"}},{{"role":"developer","content":"B"}},{{"role":"user","content":"s"}}]}}"#
    );
    // Systems render in place with no separator; a user followed by a system gets no transition.
    let want = format!(
        "{BOS}{USER}qA\n\n{}{USER}rB{USER}s{ASSISTANT}</think>",
        tools_f()
    );
    assert_eq!(dump(&req), want);
}

#[test]
fn assistant_first_and_consecutive_assistants() {
    let req = r#"{"messages":[{"role":"assistant","content":"hi","reasoning_content":"r0"},{"role":"user","content":"q"}]}"#;
    // Thinking, drop on: the assistant before the last user keeps no reasoning, no Assistant marker.
    assert_eq!(dump(req), format!("{BOS}hi{EOS}{USER}q{ASSISTANT}<think>"));
    let req = r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a1"},{"role":"assistant","content":"a2","reasoning_content":"r2"}]}"#;
    assert_eq!(
        dump(req),
        format!("{BOS}{USER}q{ASSISTANT}<think></think>a1{EOS}r2</think>a2{EOS}")
    );
}

#[test]
fn tool_results_merging_and_sorting() {
    // Tool result without a preceding assistant joins the user turn.
    let req = r#"{"model":"deepseek-chat","messages":[{"role":"user","content":"q"},{"role":"tool","tool_call_id":"x","content":"r"}]}"#;
    assert_eq!(
        dump(req),
        format!("{BOS}{USER}q\n\n<tool_result>r</tool_result>{ASSISTANT}</think>")
    );
    // Unknown and missing ids sort to position 0 (stable); text blocks keep their slots.
    let req = r#"{"model":"deepseek-chat","messages":[{"role":"user","content":"q"},
        {"role":"assistant","content":"","tool_calls":[{"id":"a","function":{"name":"f","arguments":"{}"}},{"id":"b","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"b","content":"B"},{"role":"tool","tool_call_id":"zz","content":"Z"},
        {"role":"user","content":"T"},{"role":"tool","content":"N"},{"role":"tool","tool_call_id":"a","content":"A"}]}"#;
    let calls: Vec<ToolCall> = ["a", "b"]
        .iter()
        .map(|i| ToolCall {
            id: i.to_string(),
            name: "f".into(),
            arguments: "{}".into(),
        })
        .collect();
    let want = format!(
        "{BOS}{USER}q{ASSISTANT}</think>{}{EOS}{USER}<tool_result>Z</tool_result>\n\n<tool_result>N</tool_result>\n\nT\n\n<tool_result>A</tool_result>\n\n<tool_result>B</tool_result>{ASSISTANT}</think>",
        dsml_block(&calls)
    );
    assert_eq!(dump(req), want);
}

#[test]
fn thinking_controls() {
    let base = r#""messages":[{"role":"user","content":"q"}]"#;
    let think = format!("{BOS}{USER}q{ASSISTANT}<think>");
    let chat = format!("{BOS}{USER}q{ASSISTANT}</think>");
    let max = format!("{BOS}{REASONING_EFFORT_MAX}{USER}q{ASSISTANT}<think>");
    let cases = [
        ("", &think),
        (r#""model":"deepseek-v4-flash","#, &think),
        (r#""model":"deepseek-chat","#, &chat),
        (r#""model":"deepseek-reasoner","#, &think),
        (
            r#""model":"deepseek-chat","thinking":{"type":"enabled"},"#,
            &think,
        ),
        (r#""model":"deepseek-chat","think":true,"#, &think),
        (
            r#""model":"deepseek-reasoner","thinking":{"type":"disabled"},"#,
            &chat,
        ),
        (r#""model":"deepseek-reasoner","think":false,"#, &chat),
        (r#""thinking":false,"#, &chat),
        (
            r#""thinking":{"type":"disabled","budget_tokens":10},"#,
            &chat,
        ),
        (r#""reasoning_effort":"high","#, &think),
        (r#""reasoning_effort":"xhigh","#, &think),
        (r#""reasoning_effort":"minimal","#, &think),
        (r#""reasoning_effort":null,"#, &think),
        (r#""reasoning_effort":"none","#, &chat),
        (r#""reasoning_effort":"max","#, &max),
        (
            r#""reasoning_effort":"max","thinking":{"type":"disabled"},"#,
            &chat,
        ),
        // reasoning_effort is not an explicit control: the alias still applies.
        (
            r#""model":"deepseek-chat","reasoning_effort":"max","#,
            &chat,
        ),
        (
            r#""model":"deepseek-chat","reasoning_effort":"max","think":true,"#,
            &max,
        ),
    ];
    for (fields, want) in cases {
        let req = format!("{{{fields}{base}}}");
        assert_eq!(&dump(&req), want, "{req}");
    }
    // Max below the context threshold is high.
    let req = format!(r#"{{"reasoning_effort":"max",{base}}}"#);
    assert_eq!(dump_prompt(req.as_bytes(), CTX - 1).unwrap(), think);
    // Invalid effort → error naming the field.
    let e = err(&format!(r#"{{"reasoning_effort":"extreme",{base}}}"#));
    assert!(e.to_string().contains("reasoning_effort"), "{e}");
}

#[test]
fn reasoning_drop_and_keep() {
    let hist = r#"{"role":"user","content":"q1"},{"role":"assistant","content":"a1","reasoning_content":"r1"},{"role":"user","content":"q2"}"#;
    let no_tools = format!(r#"{{"messages":[{hist}]}}"#);
    assert_eq!(
        dump(&no_tools),
        format!("{BOS}{USER}q1{ASSISTANT}</think>a1{EOS}{USER}q2{ASSISTANT}<think>")
    );
    let tools =
        format!(r#"{{"tools":[{TOOL}],"messages":[{{"role":"system","content":"S"}},{hist}]}}"#);
    assert_eq!(
        dump(&tools),
        format!(
            "{BOS}S\n\n{}{USER}q1{ASSISTANT}<think>r1</think>a1{EOS}{USER}q2{ASSISTANT}<think>",
            tools_f()
        )
    );
    // tool_choice none: no tools block and reasoning is dropped again.
    let none = format!(
        r#"{{"tool_choice":"none","tools":[{TOOL}],"messages":[{{"role":"system","content":"S"}},{hist}]}}"#
    );
    assert_eq!(
        dump(&none),
        format!("{BOS}S{USER}q1{ASSISTANT}</think>a1{EOS}{USER}q2{ASSISTANT}<think>")
    );
    let req = openai_chat(&Json::parse(&none).unwrap()).unwrap();
    assert!(req.tools_disabled && !req.tools_active());
}

fn one_call_prompt(arguments: &str) -> String {
    let args = Json::String(arguments.to_string()).to_compact();
    let req = format!(
        r#"{{"model":"deepseek-chat","messages":[{{"role":"user","content":"q"}},{{"role":"assistant","content":"","tool_calls":[{{"id":"c","function":{{"name":"f","arguments":{args}}}}}]}}]}}"#
    );
    let p = dump(&req);
    let start =
        p.find("<｜DSML｜invoke name=\"f\">\n").unwrap() + "<｜DSML｜invoke name=\"f\">\n".len();
    let end = p.find("\n</｜DSML｜invoke>").unwrap();
    p[start..end].to_string()
}

fn param(name: &str, is_str: bool, v: &str) -> String {
    format!("<｜DSML｜parameter name=\"{name}\" string=\"{is_str}\">{v}</｜DSML｜parameter>")
}

#[test]
fn argument_normalization() {
    assert_eq!(
        one_call_prompt(
            r#"{"n":null,"b":true,"i":-0,"big":123456789012345678901234567890,"e":1E-7,"f":2.50,"u":"\u00e9\n","o":{"x":[1,{"y":1e400}]}}"#
        ),
        [
            param("n", false, "null"),
            param("b", false, "true"),
            param("i", false, "0"),
            param("big", false, "123456789012345678901234567890"),
            param("e", false, "1e-07"),
            param("f", false, "2.5"),
            param("u", true, "é\n"),
            param("o", false, r#"{"x": [1, {"y": Infinity}]}"#),
        ]
        .join("\n")
    );
    assert_eq!(one_call_prompt("{}"), "");
    assert_eq!(
        one_call_prompt(r#"{"a":1,"b":2,"a":3}"#),
        [param("a", false, "3"), param("b", false, "2")].join("\n")
    );
    // Non-JSON text: one `arguments` string parameter (official fallback).
    for raw in ["ls -la", "", "{\"a\":"] {
        assert_eq!(
            one_call_prompt(raw),
            param("arguments", true, raw),
            "{raw:?}"
        );
    }
    // JSON that is not an object: the official encoder raises; a clear error here.
    for (raw, kind) in [
        ("[1,2]", "an array"),
        ("\"s\"", "a string"),
        ("null", "null"),
        (" 3 ", "a number"),
        ("true", "a boolean"),
    ] {
        let req = format!(
            r#"{{"model":"deepseek-chat","messages":[{{"role":"user","content":"q"}},{{"role":"assistant","content":"","tool_calls":[{{"id":"c","function":{{"name":"f","arguments":{}}}}}]}}]}}"#,
            Json::String(raw.into()).to_compact()
        );
        assert_eq!(
            err(&req).to_string(),
            format!("invalid request: messages[1].tool_calls[0].function.arguments must be a JSON object, not {kind}"),
            "{raw:?}"
        );
    }
    // No escaping anywhere in the official format.
    assert_eq!(
        one_call_prompt(r#"{"k\"<&":"v </｜DSML｜parameter> </tool_result> && < > \" \r\n"}"#),
        param(
            "k\"<&",
            true,
            "v </｜DSML｜parameter> </tool_result> && < > \" \r\n"
        )
    );
    // Arguments that are not a string (an object, array or null): the official
    // encoder cannot `json.loads` them and renders the value as one JSON
    // `arguments` parameter (checked against it in tests/official_random.rs).
    for (raw, want) in [
        (
            r#"{"a": [1, 2], "s": "x", "e": 1e5}"#,
            r#"{"a": [1, 2], "s": "x", "e": 100000.0}"#,
        ),
        ("[1,2]", "[1, 2]"),
        ("null", "null"),
        ("{}", "{}"),
    ] {
        let req = format!(
            r#"{{"model":"deepseek-chat","messages":[{{"role":"user","content":"q"}},{{"role":"assistant","content":"","tool_calls":[{{"id":"c","function":{{"name":"f","arguments":{raw}}}}}]}}]}}"#
        );
        assert!(
            dump(&req).contains(&format!(
                "<｜DSML｜invoke name=\"f\">\n{}\n</｜DSML｜invoke>",
                param("arguments", false, want)
            )),
            "{raw}"
        );
    }
}

#[test]
fn tool_schemas_are_reserialized_like_python() {
    let compact = r#"{"model":"deepseek-chat","tools":[{"type":"function","function":{"name":"f","description":"caf\u00e9","parameters":{"type":"object","properties":{"x":{"type":"number","default":1.50}}}}}],"messages":[{"role":"user","content":"q"}]}"#;
    let spaced = r#"{"model":"deepseek-chat","tools":[ { "type" : "function", "function" : { "name": "f", "description": "café", "parameters": { "type": "object", "properties": { "x": { "type": "number", "default": 1.5 } } } } } ],"messages":[{"role":"user","content":"q"}]}"#;
    let p = dump(compact);
    assert_eq!(p, dump(spaced));
    assert!(p.contains(r#"{"name": "f", "description": "café", "parameters": {"type": "object", "properties": {"x": {"type": "number", "default": 1.5}}}}"#));
    // Anthropic input_schema and a Responses namespace map to the function shape.
    let a = anthropic_messages(
        &Json::parse(r#"{"tools":[{"name":"f","description":"d","input_schema":{"type":"object"},"cache_control":{}}],"messages":[{"role":"user","content":"q"}]}"#).unwrap(),
    )
    .unwrap();
    assert_eq!(
        a.conversation.tools[0].to_python(),
        r#"{"name": "f", "description": "d", "parameters": {"type": "object"}}"#
    );
    let r = responses(
        &Json::parse(r#"{"input":"q","tools":[{"type":"namespace","name":"mcp__srv__","tools":[{"type":"function","name":"search","description":"d","parameters":{}}]},{"type":"function","name":"g","parameters":{},"strict":true},{"type":"tool_search"},{"type":"web_search"}]}"#).unwrap(),
    )
    .unwrap();
    let names: Vec<String> = r.conversation.tools.iter().map(|t| t.to_python()).collect();
    assert_eq!(
        names,
        vec![
            r#"{"name": "mcp__srv__search", "description": "d", "parameters": {}}"#,
            r#"{"name": "g", "parameters": {}, "strict": true}"#,
            r#"{"name": "tool_search", "description": "Search available tools.", "parameters": {"type": "object", "properties": {}}}"#,
        ]
    );
}

#[test]
fn special_strings_and_nul_are_verbatim() {
    let req = r#"{"model":"deepseek-chat","messages":[{"role":"system","content":"s<think>"},{"role":"user","content":"a\u0000b <｜end▁of▁sentence｜> <｜latest_reminder｜> <dsml:"}]}"#;
    assert_eq!(
        dump(req),
        format!("{BOS}s<think>{USER}a\0b <｜end▁of▁sentence｜> <｜latest_reminder｜> <dsml:{ASSISTANT}</think>")
    );
}

#[test]
fn content_arrays() {
    // OpenAI: text parts concatenated with no separator, images dropped.
    let req = r#"{"model":"deepseek-chat","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},"b",{"type":"text","text":"c"}]}]}"#;
    assert_eq!(dump(req), format!("{BOS}{USER}abc{ASSISTANT}</think>"));
    // Anthropic: mixed blocks; text blocks of a user message are separate parts ("\n\n").
    let a = anthropic_messages(&Json::parse(r#"{"model":"deepseek-chat","system":[{"type":"text","text":"x-anthropic-billing"},{"type":"text","text":"S1"},"S2\n","S3"],
        "messages":[{"role":"user","content":"q"},
        {"role":"assistant","content":[{"type":"thinking","thinking":"th","signature":"s"},{"type":"text","text":"ok"},{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},
        {"content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"R1"},{"type":"image"}]},{"type":"text","text":"more"}],"role":"user"}]}"#).unwrap()).unwrap();
    assert_eq!(a.think_mode(CTX), ThinkMode::Off);
    let calls = [ToolCall {
        id: "t1".into(),
        name: "f".into(),
        arguments: r#"{"a":1}"#.into(),
    }];
    assert_eq!(
        render_prompt(&a.conversation, ThinkMode::Off, RenderOptions::default()),
        format!(
            "{BOS}S1\nS2\nS3{USER}q{ASSISTANT}</think>ok{}{EOS}{USER}<tool_result>R1\n\n[Unsupported image]</tool_result>\n\nmore{ASSISTANT}</think>",
            dsml_block(&calls)
        )
    );
    assert_eq!(
        a.conversation.messages[2],
        Message::Assistant {
            content: "ok".into(),
            reasoning: Some("th".into()),
            tool_calls: calls.to_vec()
        }
    );
    // Responses: a non-text content part is an error naming it.
    let e = responses(
        &Json::parse(
            r#"{"input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}"#,
        )
        .unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("input_image"), "{e}");
}

#[test]
fn responses_items() {
    let r = responses(&Json::parse(r#"{"model":"deepseek-v4-flash","instructions":"I","reasoning":{"effort":"max","summary":"auto"},"input":[
        {"type":"message","role":"user","content":[{"type":"input_text","text":"q"}]},
        {"type":"reasoning","summary":[{"type":"summary_text","text":"s1"}],"content":[{"type":"reasoning_text","text":"c1"}]},
        {"type":"function_call","call_id":"call_1","name":"ls","namespace":"fs.","arguments":"{\"p\":\"/\"}","status":"completed"},
        {"type":"function_call","call_id":"call_2","name":"cat","arguments":{"p":"/x"}},
        {"type":"function_call_output","call_id":"call_1","output":"a b"},
        {"type":"function_call_output","call_id":"call_2","output":[{"type":"input_text","text":"X"}]},
        {"type":"reasoning","summary":[{"type":"summary_text","text":"s2"}]},
        {"type":"message","role":"assistant","content":[{"type":"output_text","text":"done"}]},
        {"type":"compaction","encrypted_content":"zz"},
        {"role":"user","content":"next"}]}"#).unwrap()).unwrap();
    assert!(r.reasoning_summary);
    assert_eq!(r.think_mode(CTX), ThinkMode::Max);
    assert_eq!(
        r.conversation.messages,
        vec![
            Message::system("I"),
            Message::user("q"),
            Message::Assistant {
                content: String::new(),
                reasoning: Some("s1\nc1".into()),
                tool_calls: vec![
                    ToolCall {
                        id: "call_1".into(),
                        name: "fs.ls".into(),
                        arguments: r#"{"p":"/"}"#.into()
                    },
                    ToolCall {
                        id: "call_2".into(),
                        name: "cat".into(),
                        arguments: r#"{"p":"/x"}"#.into()
                    },
                ],
            },
            Message::tool("call_1", "a b"),
            Message::Tool {
                tool_call_id: Some("call_2".into()),
                content: ds4_chat::ToolContent::Blocks(vec![ds4_chat::ContentBlock {
                    kind: "text".into(),
                    text: "X".into()
                }])
            },
            Message::Assistant {
                content: "done".into(),
                reasoning: Some("s2".into()),
                tool_calls: vec![]
            },
            Message::user("next"),
        ]
    );
    for bad in [
        r#"{"input":"q","previous_response_id":"resp_1"}"#,
        r#"{"input":"q","tool_choice":"required"}"#,
        r#"{"input":"q","tool_choice":{"type":"function","name":"f"}}"#,
        r#"{"input":[{"type":"message","role":"user","content":"q","status":"in_progress"}]}"#,
        r#"{"input":[{"type":"mystery"}]}"#,
        r#"{"instructions":"x"}"#,
    ] {
        assert!(responses(&Json::parse(bad).unwrap()).is_err(), "{bad}");
    }
}

#[test]
fn bad_requests_get_clear_errors() {
    for (req, needle) in [
        (r#"{"model":"x"}"#, "missing messages"),
        (r#"{"messages":{}}"#, "messages must be an array"),
        (
            r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
            "unknown role",
        ),
        (
            r#"{"messages":[{"role":"user","content":5}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"messages":[{"role":"assistant","tool_calls":[{"function":{"arguments":"{}"}}]}]}"#,
            "function.name",
        ),
        (
            r#"{"messages":[],"tools":[{"type":"function"}]}"#,
            "tools[0]",
        ),
        (r#"{"messages":[],"thinking":"yes"}"#, "thinking"),
        (r#"{"messages":[], "#, "invalid JSON"),
    ] {
        let e = err(req).to_string();
        assert!(e.contains(needle), "{req}: {e}");
    }
    // A missing role is user.
    assert_eq!(
        dump(r#"{"model":"deepseek-chat","messages":[{"content":"hi"}]}"#),
        format!("{BOS}{USER}hi{ASSISTANT}</think>")
    );
}

#[test]
fn exact_dsml_replay() {
    // The model sampled a block with unusual spacing; the parser records it.
    let sampled = "I'll look.\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"ls\">\n<｜DSML｜parameter name=\"path\" string=\"true\">/tmp</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"pwd\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let (_, m) = OutputParser::parse_all(
        ParserOptions::new(true, true),
        format!("hmm</think>{sampled}").as_bytes(),
        EndCause::Stop,
    );
    let mut mem = ToolMemory::default();
    for (ids, raw) in &m.raw_blocks {
        mem.remember(ids, raw);
    }
    let ids: Vec<String> = m.tool_calls.iter().map(|c| c.id.clone()).collect();
    let history = |ids: &[String]| Conversation {
        messages: vec![
            Message::user("q"),
            Message::Assistant {
                content: m.content.clone(),
                reasoning: Some(m.reasoning.clone()),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .zip(ids)
                    .map(|(c, id)| ToolCall {
                        id: id.clone(),
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    })
                    .collect(),
            },
            Message::tool(ids[0].clone(), "r"),
        ],
        tools: vec![],
        response_format: None,
    };
    let opts = RenderOptions { replay: Some(&mem) };
    // Known ids → the exact sampled bytes (content + block = what the model wrote).
    let p = render_prompt(&history(&ids), ThinkMode::High, opts);
    // (No tools: the reasoning before the last user turn is dropped, spec §2.1 step 4.)
    assert!(
        p.contains(&format!("{ASSISTANT}</think>{sampled}{EOS}")),
        "{p}"
    );
    // Unknown ids, or a mix of known and unknown → canonical block.
    let canonical = render_prompt(&history(&ids), ThinkMode::High, RenderOptions::default());
    assert!(!canonical.contains(sampled));
    let unknown = vec!["x1".to_string(), "x2".to_string()];
    assert_eq!(
        render_prompt(&history(&unknown), ThinkMode::High, opts),
        render_prompt(
            &history(&unknown),
            ThinkMode::High,
            RenderOptions::default()
        )
    );
    let mixed = vec![ids[0].clone(), "x2".to_string()];
    let pm = render_prompt(&history(&mixed), ThinkMode::High, opts);
    assert!(
        !pm.contains(sampled) && pm.contains("<｜DSML｜invoke name=\"pwd\">\n\n</｜DSML｜invoke>")
    );
}

#[test]
fn request_helpers() {
    use ds4_chat::{parse_request, Api};
    let a = parse_request(Api::Anthropic, br#"{"model":"deepseek-reasoner","tools":[{"name":"f","input_schema":{}}],"messages":[{"role":"user","content":"q"}]}"#).unwrap();
    let mode = a.think_mode(CTX);
    assert_eq!(mode, ThinkMode::High);
    let o = a.parser_options(mode);
    assert!(o.thinking && o.tools_active);
    assert_eq!(o.id_prefix, "toolu_");
    assert!(a
        .render(mode, None)
        .ends_with(&format!("{USER}q{ASSISTANT}<think>")));
    let r = parse_request(
        Api::Responses,
        br#"{"input":"q","reasoning":{"effort":"none"}}"#,
    )
    .unwrap();
    assert_eq!(r.think_mode(CTX), ThinkMode::Off);
    assert_eq!(r.parser_options(ThinkMode::Off).id_prefix, "call_");
    assert!(parse_request(Api::OpenAiChat, b"[1]").is_err());
    // Anthropic thinking controls.
    let q = r#""messages":[{"role":"user","content":"q"}]"#;
    let mode = |extra: &str| {
        parse_request(Api::Anthropic, format!("{{{extra}{q}}}").as_bytes())
            .map(|r| r.think_mode(CTX))
    };
    assert_eq!(mode(""), Ok(ThinkMode::High));
    assert_eq!(
        mode(r#""thinking":{"type":"disabled"},"#),
        Ok(ThinkMode::Off)
    );
    assert_eq!(
        mode(r#""thinking":{"type":"enabled","budget_tokens":1024},"model":"deepseek-chat","#),
        Ok(ThinkMode::High)
    );
    assert_eq!(
        mode(r#""output_config":{"effort":"max"},"#),
        Ok(ThinkMode::Max)
    );
    assert_eq!(mode(r#""reasoning_effort":"none","#), Ok(ThinkMode::Off));
    assert_eq!(mode(r#""model":"deepseek-chat","#), Ok(ThinkMode::Off));
    assert!(mode(r#""output_config":{"effort":"bogus"},"#).is_err());
    // Responses: a non-null effort is an explicit control (beats the alias).
    let r = parse_request(
        Api::Responses,
        br#"{"model":"deepseek-chat","input":"q","reasoning":{"effort":"high"}}"#,
    )
    .unwrap();
    assert_eq!(r.think_mode(CTX), ThinkMode::High);
    let r = parse_request(
        Api::Responses,
        br#"{"model":"deepseek-chat","input":"q","reasoning":{"effort":null}}"#,
    )
    .unwrap();
    assert_eq!(r.think_mode(CTX), ThinkMode::Off);
}

#[test]
fn completion_prompt_wrapper() {
    use ds4_chat::render::render_completion_prompt;
    assert_eq!(
        render_completion_prompt("P", ThinkMode::Off),
        format!("{BOS}You are a helpful assistant{USER}P{ASSISTANT}</think>")
    );
    assert_eq!(
        render_completion_prompt("P", ThinkMode::Max),
        format!("{BOS}{REASONING_EFFORT_MAX}You are a helpful assistant{USER}P{ASSISTANT}<think>")
    );
}

#[test]
fn response_format_request_level() {
    let q = r#""model":"deepseek-chat","messages":[{"role":"system","content":"S"},{"role":"user","content":"q"}]"#;
    let want = format!(
        "{BOS}S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{{\"type\": \"json_object\"}}{USER}q{ASSISTANT}</think>"
    );
    assert_eq!(
        dump(&format!(
            r#"{{"response_format":{{"type":"json_object"}},{q}}}"#
        )),
        want
    );
    let plain = format!("{BOS}S{USER}q{ASSISTANT}</think>");
    assert_eq!(
        dump(&format!(r#"{{"response_format":{{"type":"text"}},{q}}}"#)),
        plain
    );
    assert_eq!(dump(&format!(r#"{{"response_format":{{}},{q}}}"#)), plain);
    assert_eq!(dump(&format!(r#"{{"response_format":null,{q}}}"#)), plain);
}

/// Message-level `response_format` (the official encoder's field) renders at
/// its own system message, whatever its value, `{"type": "text"}` included;
/// falsy values render nothing. Regression: it used to move to the first
/// system message and `{"type": "text"}` was dropped.
#[test]
fn response_format_message_level_stays_in_place() {
    let rf =
        "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";
    let got = dump(
        r#"{"model":"deepseek-chat","messages":[{"role":"system","content":"A","response_format":{"type":"text"}},{"role":"user","content":"q"},{"role":"system","content":"B","response_format":{"type":"json_object","n":1e5}},{"role":"system","content":"C","response_format":{}},{"role":"system","content":"D","response_format":0}]}"#,
    );
    assert_eq!(
        got,
        format!(
            "{BOS}A{rf}{{\"type\": \"text\"}}{USER}qB{rf}{{\"type\": \"json_object\", \"n\": 100000.0}}CD"
        )
    );
    // The request-level field replaces the first system message's own.
    let got = dump(
        r#"{"model":"deepseek-chat","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"q"},{"role":"system","content":"B","response_format":{"type":"x"}},{"role":"system","content":"C","response_format":{"type":"y"}}]}"#,
    );
    assert_eq!(
        got,
        format!("{BOS}{USER}qB{rf}{{\"type\": \"json_object\"}}C{rf}{{\"type\": \"y\"}}")
    );
}
