//! Spec chat-and-tools.md §1.2/§1.6/§1.8 examples and the chat-golden prompts
//! (fixture extracted and re-verified against the HF oracle by
//! tools/tokenizer-fixtures/make_golden_fixture.py).

use ds4_tokenizer::{StreamDecoder, Tokenizer, TokenizerData};
use std::sync::OnceLock;

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(Tokenizer::embedded_v4)
}

#[test]
fn embedded_data_shape() {
    let d = TokenizerData::embedded_v4();
    assert_eq!(d.tokens.len(), 129280);
    assert_eq!(d.token_types.len(), 129280);
    assert_eq!(d.merges.len(), 127741);
    assert_eq!((d.bos_id, d.eos_id, d.pad_id), (0, 1, Some(1)));
    assert_eq!(d.tokens[0], "<｜begin▁of▁sentence｜>");
    assert_eq!(d.merges[0], "Ġ t");
    let t = tok();
    assert_eq!(t.vocab_size(), 129280);
    assert_eq!(t.merge_count(), 127741);
    assert!(t.missing_byte_tokens().is_empty());
    assert_eq!(t.added_token_ids().len(), 1283);
}

#[test]
fn special_token_ids() {
    let t = tok();
    let cases = [
        ("<｜begin▁of▁sentence｜>", 0),
        ("<｜end▁of▁sentence｜>", 1),
        ("<｜▁pad▁｜>", 2),
        ("<｜place▁holder▁no▁0｜>", 128000),
        ("<｜place▁holder▁no▁799｜>", 128799),
        ("<｜User｜>", 128803),
        ("<｜Assistant｜>", 128804),
        ("<|EOT|>", 128805),
        ("<think>", 128821),
        ("</think>", 128822),
        ("｜DSML｜", 128825),
        ("<｜latest_reminder｜>", 128828),
        ("<dsml:", 128840),
        ("</dsml:", 128841),
        ("<|place_holder_mm_span_0021|>", 128847),
        ("<|place_holder_mm_span_0435|>", 129261),
        ("<｜image｜>", 129279),
    ];
    for (s, id) in cases {
        assert_eq!(t.token_id(s), Some(id), "{s}");
        assert_eq!(t.encode(s), [id], "{s}");
        assert_eq!(t.token_bytes(id), Some(s.as_bytes()), "{s}");
        assert!(t.is_added_token(id));
    }
    assert_eq!(t.bos_id(), 0);
    assert_eq!(t.eos_id(), 1);
    assert_eq!(t.token_bytes(129280), None);
    assert_eq!(t.token_id("no such token"), None);
}

#[test]
fn spec_1_8_examples() {
    let t = tok();
    let cases: [(&str, &[u32]); 8] = [
        (
            "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜></think>",
            &[0, 128803, 3085, 344, 223, 20, 13, 20, 33, 128804, 128822],
        ),
        (
            "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>",
            &[0, 128803, 3085, 344, 223, 20, 13, 20, 33, 128804, 128821],
        ),
        (
            "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hello!<｜Assistant｜><think>",
            &[0, 3476, 477, 260, 11502, 22896, 16, 128803, 19923, 3, 128804, 128821],
        ),
        ("    int x;\n", &[361, 688, 1527, 510]),
        ("12345", &[6895, 1883]),
        ("a\n\n\nb", &[67, 6328, 68]),
        ("你好世界", &[30594, 3427]),
        (
            "\n\n<｜DSML｜tool_calls>\n",
            &[271, 30, 128825, 72461, 4941, 12548, 1018],
        ),
    ];
    for (s, ids) in cases {
        assert_eq!(t.encode(s), ids, "{s:?}");
        assert_eq!(t.decode(ids), s.as_bytes());
    }
    assert_eq!(
        t.encode("<｜DSML｜tool_calls>"),
        [30, 128825, 72461, 4941, 12548, 32]
    );
    assert_eq!(t.encode("<tool_result>"), [30, 72461, 46148, 32]);
    assert_eq!(t.encode("</tool_result>"), [1718, 72461, 46148, 32]);
    assert_eq!(t.encode("🎉"), [53153, 234]);
    assert_eq!(t.encode(" 🎉"), [7351, 239, 234]);
    assert_eq!(t.token_bytes(53153), Some(&[0xF0, 0x9F, 0x8E][..]));
}

#[test]
fn encode_into_appends_without_merging_across_calls() {
    let t = tok();
    let mut out = t.encode("Hello");
    t.encode_into(" world<think>", &mut out);
    let mut want = t.encode("Hello");
    want.extend(t.encode(" world<think>"));
    assert_eq!(out, want);
    assert_eq!(out.last(), Some(&128821));
}

#[test]
fn encode_ordinary_ignores_added_tokens() {
    let t = tok();
    let ids = t.encode_ordinary("<｜User｜>");
    assert!(ids.len() > 1);
    assert!(ids.iter().all(|&i| !t.is_added_token(i)));
    assert_eq!(t.decode(&ids), "<｜User｜>".as_bytes());
}

#[test]
fn chat_golden_prompts() {
    let text = include_str!("fixtures/chat_golden.json");
    let v: serde_json::Value = serde_json::from_str(text).expect("fixture parses");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 39);
    let t = tok();
    for c in cases {
        let rendered = c["rendered"].as_str().expect("rendered");
        let want: Vec<u32> = c["token_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        let got = t.encode(rendered);
        assert_eq!(got, want, "case {}", c["name"]);
        assert_eq!(t.decode(&got), rendered.as_bytes());
        let mut sd = StreamDecoder::new(t);
        let mut s = String::new();
        for &id in &got {
            s.push_str(&sd.push(id));
        }
        s.push_str(&sd.finish());
        assert_eq!(s, rendered);
    }
}
