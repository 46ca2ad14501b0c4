//! Prints the token ids of a file's text (one line, space separated); for comparing with
//! the HF oracle: tools/tokenizer-fixtures/check_file.py FILE.
//!
//! Usage: cargo run -p ds4-tokenizer --release --example encode_file -- FILE

use ds4_tokenizer::Tokenizer;

fn main() {
    let path = match std::env::args().nth(1) {
        Some(p) => p,
        None => {
            eprintln!("usage: encode_file FILE");
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path} as UTF-8 text: {e}");
            std::process::exit(1);
        }
    };
    let ids = Tokenizer::embedded_v4().encode(&text);
    let line: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    println!("{}", line.join(" "));
}
