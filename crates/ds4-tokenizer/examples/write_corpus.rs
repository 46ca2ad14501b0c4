//! Writes the deterministic oracle corpus (see tests/corpus_gen) to a file for
//! tools/tokenizer-fixtures/make_oracle_fixture.py.
//!
//! Usage: cargo run -p ds4-tokenizer --release --example write_corpus -- OUT.bin

#[path = "../tests/corpus_gen/mod.rs"]
mod corpus_gen;

use ds4_tokenizer::Tokenizer;

fn main() {
    let out = match std::env::args().nth(1) {
        Some(p) => p,
        None => {
            eprintln!("usage: write_corpus OUT.bin");
            std::process::exit(2);
        }
    };
    let tok = Tokenizer::embedded_v4();
    let specials: Vec<String> = tok
        .added_token_ids()
        .into_iter()
        .filter_map(|id| tok.token_string(id).map(str::to_string))
        .collect();
    let docs = corpus_gen::corpus(&specials);
    let bytes = corpus_gen::serialize(&docs);
    if let Err(e) = std::fs::write(&out, &bytes) {
        eprintln!("cannot write {out}: {e}");
        std::process::exit(1);
    }
    let text_bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    eprintln!(
        "wrote {out}: {} documents, {text_bytes} text bytes",
        docs.len()
    );
}
