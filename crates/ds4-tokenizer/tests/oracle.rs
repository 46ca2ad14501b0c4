//! Oracle test: the Rust-generated corpus (tests/corpus_gen) tokenized by the Hugging Face
//! tokenizer (fixture written by tools/tokenizer-fixtures/make_oracle_fixture.py) must be
//! reproduced exactly, document by document.

#[path = "corpus_gen/mod.rs"]
mod corpus_gen;

use ds4_tokenizer::{StreamDecoder, Tokenizer};
use sha1::{Digest, Sha1};
use std::sync::OnceLock;

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(Tokenizer::embedded_v4)
}

fn specials(t: &Tokenizer) -> Vec<String> {
    t.added_token_ids()
        .into_iter()
        .filter_map(|id| t.token_string(id).map(str::to_string))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ids_sha1(ids: &[u32]) -> String {
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    hex(&h.finalize())
}

struct Fixture {
    corpus_sha1: String,
    docs: Vec<(String, usize, String)>,
    full: Vec<(usize, Vec<u32>)>,
}

fn fixture() -> Fixture {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/oracle.json")).expect("oracle.json parses");
    let docs = v["docs"]
        .as_array()
        .expect("docs")
        .iter()
        .map(|d| {
            (
                d[0].as_str().expect("kind").to_string(),
                d[1].as_u64().expect("n_ids") as usize,
                d[2].as_str().expect("sha1").to_string(),
            )
        })
        .collect();
    let full = v["full"]
        .as_object()
        .expect("full")
        .iter()
        .map(|(k, ids)| {
            (
                k.parse().expect("doc index"),
                ids.as_array()
                    .expect("ids")
                    .iter()
                    .map(|x| x.as_u64().expect("id") as u32)
                    .collect(),
            )
        })
        .collect();
    Fixture {
        corpus_sha1: v["corpus_sha1"].as_str().expect("corpus_sha1").to_string(),
        docs,
        full,
    }
}

fn corpus() -> &'static Vec<corpus_gen::Doc> {
    static C: OnceLock<Vec<corpus_gen::Doc>> = OnceLock::new();
    C.get_or_init(|| {
        let docs = corpus_gen::corpus(&specials(tok()));
        let f = fixture();
        let h = hex(&Sha1::digest(corpus_gen::serialize(&docs)));
        assert_eq!(
            h, f.corpus_sha1,
            "the corpus generator changed; regenerate the fixture with \
             tools/tokenizer-fixtures/make_oracle_fixture.sh"
        );
        docs
    })
}

fn snippet(s: &str) -> String {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", &s[..end])
}

#[test]
fn corpus_is_large_and_covers_every_kind() {
    let docs = corpus();
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    assert!(bytes >= 1 << 20, "corpus has only {bytes} bytes");
    let non_sweep: usize = docs
        .iter()
        .filter(|d| d.kind != "sweep")
        .map(|d| d.text.len())
        .sum();
    assert!(
        non_sweep >= 1 << 20,
        "mixed-text part has only {non_sweep} bytes"
    );
    for kind in [
        "special-alone",
        "english",
        "italian",
        "chinese",
        "japanese",
        "korean",
        "code",
        "emoji",
        "whitespace",
        "digits",
        "specials",
        "unicode",
        "runs",
        "mixed",
        "sweep",
    ] {
        assert!(docs.iter().any(|d| d.kind == kind), "no {kind} document");
    }
}

#[test]
fn encode_matches_hf_oracle_on_corpus() {
    let docs = corpus();
    let f = fixture();
    assert_eq!(docs.len(), f.docs.len());
    let t = tok();
    let mut failures = Vec::new();
    for (i, (d, (kind, n, h))) in docs.iter().zip(&f.docs).enumerate() {
        assert_eq!(d.kind, kind);
        let ids = t.encode(&d.text);
        if ids.len() != *n || &ids_sha1(&ids) != h {
            failures.push(format!(
                "doc {i} ({kind}): {} ids, oracle {n}; text {}",
                ids.len(),
                snippet(&d.text)
            ));
        }
    }
    for (i, want) in &f.full {
        let got = t.encode(&docs[*i].text);
        if &got != want {
            let k = got.iter().zip(want).take_while(|(a, b)| a == b).count();
            let from = k.saturating_sub(3);
            failures.push(format!(
                "doc {i}: first difference at id {k}: got {:?}, oracle {:?}",
                &got[from..(k + 5).min(got.len())],
                &want[from..(k + 5).min(want.len())]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}

#[test]
fn decode_inverts_encode_and_streaming_keeps_utf8() {
    let t = tok();
    for (i, d) in corpus().iter().enumerate() {
        let ids = t.encode(&d.text);
        assert_eq!(t.decode(&ids), d.text.as_bytes(), "doc {i} round trip");
        if d.kind == "sweep" && i % 8 != 0 {
            continue;
        }
        let mut sd = StreamDecoder::new(t);
        let mut s = String::new();
        for &id in &ids {
            s.push_str(&sd.push(id));
        }
        assert!(sd.pending().len() < 4);
        s.push_str(&sd.finish());
        assert_eq!(s, d.text, "doc {i} streamed");
        let ord = t.encode_ordinary(&d.text);
        assert_eq!(
            t.decode(&ord),
            d.text.as_bytes(),
            "doc {i} ordinary round trip"
        );
    }
}

#[test]
fn every_added_token_encodes_to_its_id() {
    let t = tok();
    let ids = t.added_token_ids();
    assert_eq!(ids.len(), 1283);
    for id in ids {
        let s = t.token_string(id).expect("token string");
        assert_eq!(t.encode(s), [id], "{s}");
        let (a, b) = (t.token_id("a").expect("a"), t.token_id("b").expect("b"));
        assert_eq!(t.encode(&format!("a{s}b")), [a, id, b], "{s}");
        assert_eq!(t.decode(&[id]), s.as_bytes());
        let ord = t.encode_ordinary(s);
        assert!(!ord.contains(&id), "{s}");
    }
}
