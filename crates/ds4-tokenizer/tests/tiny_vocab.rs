//! Tokenizers built from small GGUF-style vocabularies (tiny test models) and invalid data.

use ds4_tokenizer::bytelevel::BYTE_TO_CHAR;
use ds4_tokenizer::{token_type, StreamDecoder, Tokenizer, TokenizerData, DS4_REQUIRED_TOKENS};

/// 256 byte tokens (id = byte value), then `extra`.
fn byte_vocab(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = (0..256).map(|b| BYTE_TO_CHAR[b].to_string()).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn data(tokens: Vec<String>, types: Vec<i32>, merges: &[&str]) -> TokenizerData {
    TokenizerData {
        tokens,
        token_types: types,
        merges: merges.iter().map(|s| s.to_string()).collect(),
        bos_id: 0,
        eos_id: 1,
        pad_id: None,
    }
}

#[test]
fn byte_vocab_without_merges_gives_one_token_per_byte() {
    let t = Tokenizer::from_data(&data(byte_vocab(&[]), vec![], &[])).unwrap();
    let text = "héllo 🎉\n";
    assert_eq!(t.encode_checked(text), Ok(t.encode(text)));
    let ids = t.encode(text);
    let want: Vec<u32> = text.bytes().map(u32::from).collect();
    assert_eq!(ids, want);
    assert_eq!(t.decode(&ids), text.as_bytes());
    assert!(t.missing_byte_tokens().is_empty());
}

#[test]
fn merges_apply_by_rank_and_missing_results_fall_back_to_bytes() {
    // "ab" is not a token, but the merge "a b" exists and feeds "ab c" -> "abc".
    let t = Tokenizer::from_data(&data(
        byte_vocab(&["abc", "Ġx", "xx"]),
        vec![],
        &["a b", "ab c", "Ġ x", "x x"],
    ))
    .unwrap();
    let abc = t.token_id("abc").unwrap();
    let gx = t.token_id("Ġx").unwrap();
    let xx = t.token_id("xx").unwrap();
    assert_eq!(t.encode("abc"), [abc]);
    assert_eq!(t.encode("ab"), [b'a' as u32, b'b' as u32]);
    // " xxx": one piece " xxx" (space + letters); (Ġ,x) has rank 2 < (x,x) rank 3.
    assert_eq!(t.encode(" xxx"), [gx, xx]);
    assert_eq!(t.encode("xxx"), [xx, b'x' as u32]);
}

#[test]
fn without_token_types_ds4_specials_are_recognised() {
    let t = Tokenizer::from_data(&data(byte_vocab(&DS4_REQUIRED_TOKENS), vec![], &[])).unwrap();
    for (k, s) in DS4_REQUIRED_TOKENS.iter().enumerate() {
        let id = 256 + k as u32;
        assert!(t.is_added_token(id));
        assert_eq!(t.encode(&format!("x{s}y")), [b'x' as u32, id, b'y' as u32]);
    }
}

#[test]
fn token_types_decide_what_is_recognised() {
    let mut types = vec![token_type::NORMAL; 256];
    types.extend([
        token_type::USER_DEFINED,
        token_type::NORMAL,
        token_type::CONTROL,
        token_type::NORMAL,
    ]);
    let t = Tokenizer::from_data(&data(
        byte_vocab(&["<tool>", "<plain>", "<|x|>", "</think>"]),
        types,
        &[],
    ))
    .unwrap();
    assert_eq!(t.encode("<tool>"), [256]);
    assert_eq!(t.encode("<|x|>"), [258]);
    // A NORMAL token is not matched as an added token ...
    assert_eq!(t.encode("<plain>").len(), 7);
    assert!(!t.is_added_token(257));
    // ... except the strings ds4 always recognises.
    assert_eq!(t.encode("</think>"), [259]);
    assert_eq!(t.added_token_ids(), [256, 258, 259]);
}

#[test]
fn placeholder_vocabulary_is_handled_gracefully() {
    let tokens: Vec<String> = (0..64).map(|i| format!("<tok{i}>")).collect();
    let t = Tokenizer::from_data(&data(tokens, vec![], &[])).unwrap();
    assert_eq!(t.missing_byte_tokens().len(), 256);
    // Nothing can be encoded; nothing panics.
    assert!(t.encode("hello world").is_empty());
    let e = t.encode_checked("hello").unwrap_err();
    assert!(e.to_string().contains("byte 0x68"), "{e}");
    assert_eq!(t.encode_checked(""), Ok(vec![]));
    assert_eq!(t.decode(&[3, 1000]), b"<tok3>");
    let mut sd = StreamDecoder::new(&t);
    assert_eq!(sd.push(5), "<tok5>");
    assert_eq!(sd.push(99999), "");
    assert_eq!(sd.finish(), "");
}

#[test]
fn invalid_data_is_rejected_with_a_message() {
    let err = |d: TokenizerData| Tokenizer::from_data(&d).unwrap_err().to_string();
    assert!(err(data(vec![], vec![], &[])).contains("empty"));
    assert!(err(data(byte_vocab(&[]), vec![1; 3], &[])).contains("3 token types for 256 tokens"));
    for bad in ["ab", "a b c", " a", "a ", ""] {
        let e = err(data(byte_vocab(&[]), vec![], &["a b", bad]));
        assert!(e.contains("merge 1"), "{bad:?}: {e}");
    }
    let mut d = data(byte_vocab(&[]), vec![], &[]);
    d.eos_id = 256;
    assert!(err(d).contains("eos id 256"));
    let mut d = data(byte_vocab(&[]), vec![], &[]);
    d.pad_id = Some(1000);
    assert!(err(d).contains("pad id 1000"));
}

#[test]
fn gguf_style_data_of_the_real_vocab_matches_the_embedded_tokenizer() {
    let d = TokenizerData::embedded_v4();
    let a = Tokenizer::from_data(&d).unwrap();
    let b = Tokenizer::shared_v4();
    let text = "<｜begin▁of▁sentence｜>Ciao, mondo! 你好 🎉 <think>x</think> fn main() {}\r\n";
    assert_eq!(a.encode(text), b.encode(text));
    assert_eq!(a.vocab_size(), b.vocab_size());
    for id in (0..129280).step_by(97) {
        assert_eq!(a.token_bytes(id), b.token_bytes(id));
        assert_eq!(a.token_string(id), Some(d.tokens[id as usize].as_str()));
    }
}

#[test]
fn asset_parser_rejects_corrupt_input() {
    assert!(TokenizerData::from_asset(b"not zlib").is_err());
    // A valid zlib stream with the wrong content.
    let z = [0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];
    let e = TokenizerData::from_asset(&z).unwrap_err();
    assert!(e.to_string().contains("tokenizer asset"), "{e}");
}
