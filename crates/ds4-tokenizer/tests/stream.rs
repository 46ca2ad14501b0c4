//! Streaming decode over the real vocabulary: arbitrary id sequences (which may form
//! invalid UTF-8) and valid text, compared with whole-buffer decoding.

#[path = "corpus_gen/mod.rs"]
mod corpus_gen;

use corpus_gen::Rng;
use ds4_tokenizer::{utf8_stream_safe_len, StreamDecoder, Tokenizer};

#[test]
fn random_id_sequences_stream_like_lossy_decode() {
    let t = Tokenizer::shared_v4();
    let mut rng = Rng::new(7);
    // Ids of tokens that are partial UTF-8 (bytes >= 0x80) are the interesting ones.
    let partial: Vec<u32> = (0..t.vocab_size() as u32)
        .filter(|&id| {
            let b = t.token_bytes(id).unwrap_or(&[]);
            std::str::from_utf8(b).is_err()
        })
        .collect();
    assert!(partial.len() > 100);
    for round in 0..2000 {
        let n = rng.range(1, 40) as usize;
        let ids: Vec<u32> = (0..n)
            .map(|_| {
                if rng.chance(70) {
                    partial[rng.below(partial.len() as u64) as usize]
                } else {
                    rng.below(t.vocab_size() as u64 + 10) as u32
                }
            })
            .collect();
        let mut sd = StreamDecoder::new(t);
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&sd.push(id));
            assert!(sd.pending().len() <= 3, "round {round}");
        }
        out.push_str(&sd.finish());
        assert_eq!(
            out,
            String::from_utf8_lossy(&t.decode(&ids)),
            "round {round}: {ids:?}"
        );
    }
}

#[test]
fn ds4_safe_len_agrees_with_stream_decoder_on_valid_text() {
    let t = Tokenizer::shared_v4();
    let texts = [
        "🎉 a 🎉🎉 ünïcödé 中文字 한국어 👨‍👩‍👧‍👦 \u{10FFFF}x",
        "<｜User｜>ciao «mondo»…\n<think>思考</think>｜DSML｜",
        "ðŁİī literal mojibake, ¼ ½ ¾ ①②③ 𝟘𝟙𝟚",
    ];
    for text in texts {
        let ids = t.encode(text);
        let mut sd = StreamDecoder::new(t);
        let mut buf = Vec::new();
        let mut sent = 0usize;
        for &id in &ids {
            buf.extend_from_slice(t.token_bytes(id).unwrap());
            let emitted = sd.push(id);
            let safe = utf8_stream_safe_len(&buf, sent, buf.len(), false);
            assert_eq!(safe, sent + emitted.len(), "{text:?}");
            sent = safe;
        }
        assert_eq!(sd.finish(), "");
        assert_eq!(utf8_stream_safe_len(&buf, sent, buf.len(), true), buf.len());
    }
}
