//! The ds4-model forward pass behind the engine traits: the demo model builds,
//! and a session's incremental evaluation equals a one-shot evaluation.

use ds4_engine::ds4::{demo, Ds4Tokenizer};
use ds4_engine::{Model, Tokenizer};

#[test]
fn demo_model_incremental_eval_matches_one_shot() {
    let model = demo().expect("demo model");
    assert_eq!(model.vocab_size(), 129_280);
    let tok = Ds4Tokenizer::embedded();
    let ids = tok.encode("<｜begin▁of▁sentence｜><｜User｜>Hello there<｜Assistant｜></think>");
    assert!(ids.len() > 4);

    let mut one = model.new_session(64).unwrap();
    let full = one.eval(&ids, true).unwrap().unwrap();
    assert_eq!(full.len(), 129_280);
    assert!(full.iter().all(|x| x.is_finite()));
    assert_eq!(one.n_tokens(), ids.len());

    let mut inc = model.new_session(64).unwrap();
    let (a, b) = ids.split_at(3);
    assert!(inc.eval(a, false).unwrap().is_none());
    let last = inc.eval(b, true).unwrap().unwrap();
    let scale = full.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = full
        .iter()
        .zip(&last)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff <= 1e-4 * scale,
        "chunked eval differs: {diff} (scale {scale})"
    );

    inc.reset();
    assert_eq!(inc.n_tokens(), 0);
    assert!(inc.state_bytes() <= one.state_bytes());
}

#[test]
fn load_rejects_a_foreign_file_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("ds4-glue-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("not-a-model.gguf");
    std::fs::write(&p, b"definitely not a gguf file, just some bytes here....").unwrap();
    let err = match ds4_engine::ds4::load(&p, &Default::default()) {
        Ok(_) => panic!("a non-GGUF file loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("GGUF"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
