//! Exact-mode forward vs the transformers oracle (fixtures from
//! tools/oracle/gen_fixtures.py), whole-sequence, chunked and decoded.

use ds4_model::{tiny, Cpu, Model, Numerics, Want};
use std::path::PathBuf;

struct Fixture {
    cfg: ds4_model::Config,
    tokens: Vec<u32>,
    logits: Vec<f32>,
    vocab: usize,
    max_abs: f32,
    model: Model<Cpu>,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(which: &str) -> Fixture {
    let dir = fixtures_dir();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("tiny_{which}.json"))).unwrap(),
    )
    .unwrap();
    let cfg = match which {
        "a" => tiny::config_a(),
        _ => tiny::config_b(),
    };
    let seed = meta["seed"].as_u64().unwrap();
    let m = tiny::generate(&cfg, seed).unwrap();
    let fp = format!("{:016x}", m.fingerprint);
    assert_eq!(
        fp,
        meta["fingerprint"].as_str().unwrap(),
        "fixture tiny_{which} is stale (weights changed): regenerate with python tools/oracle/gen_fixtures.py {which}"
    );
    let tokens: Vec<u32> = meta["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let (shape, logits) =
        ds4_model::npy::read_f32(&dir.join(format!("tiny_{which}_logits.npy"))).unwrap();
    assert_eq!(shape, vec![tokens.len(), cfg.vocab]);
    let max_abs = logits.iter().fold(0f32, |a, &b| a.max(b.abs()));
    let model = Model::bind(Cpu, cfg.clone(), &m.main, Some(&m.mtp)).unwrap();
    Fixture {
        vocab: cfg.vocab,
        cfg,
        tokens,
        logits,
        max_abs,
        model,
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut b = 0;
    for i in 1..v.len() {
        if v[i] > v[b] {
            b = i;
        }
    }
    b
}

/// Compare rows `start..` of the oracle with `got`; returns max|Δ|/max|logit|.
fn compare(f: &Fixture, start: usize, got: &[f32], what: &str) -> f32 {
    let v = f.vocab;
    let rows = got.len() / v;
    let mut worst = 0f32;
    for r in 0..rows {
        let want = &f.logits[(start + r) * v..(start + r + 1) * v];
        let g = &got[r * v..(r + 1) * v];
        let d = want
            .iter()
            .zip(g)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        worst = worst.max(d / f.max_abs);
        assert_eq!(
            argmax(g),
            argmax(want),
            "{what}: argmax differs at position {}",
            start + r
        );
    }
    assert!(
        worst <= 1e-4,
        "{what}: max|Δ|/max|logit| = {worst:e} > 1e-4"
    );
    worst
}

fn whole(which: &str) {
    let f = load(which);
    let mut s = f.model.session(Numerics::Exact);
    let got = f.model.forward(&mut s, &f.tokens, Want::All).unwrap();
    let worst = compare(&f, 0, &got, &format!("{which} whole"));
    eprintln!("fixture {which}: whole-sequence exact max|Δ|/max|logit| = {worst:e}");
    assert_eq!(s.pos(), f.tokens.len());
    let _ = f.cfg;
}

#[test]
fn exact_matches_transformers_a_whole() {
    whole("a");
}

#[test]
fn exact_matches_transformers_b_whole() {
    whole("b");
}

/// Deterministic chunk lengths summing to `n` (xorshift; lengths 1..=max).
fn splits(n: usize, seed: u64, max: usize) -> Vec<usize> {
    let mut s = seed | 1;
    let mut out = Vec::new();
    let mut left = n;
    while left > 0 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let l = (1 + (s % max as u64) as usize).min(left);
        out.push(l);
        left -= l;
    }
    out
}

fn chunked(f: &Fixture, lens: &[usize], what: &str) -> f32 {
    let mut s = f.model.session(Numerics::Exact);
    let mut start = 0;
    let mut worst = 0f32;
    for &l in lens {
        let got = f
            .model
            .forward(&mut s, &f.tokens[start..start + l], Want::All)
            .unwrap();
        worst = worst.max(compare(f, start, &got, what));
        start += l;
    }
    assert_eq!(s.pos(), f.tokens.len());
    worst
}

fn decoded(f: &Fixture, what: &str) -> f32 {
    let mut s = f.model.session(Numerics::Exact);
    let mut worst = 0f32;
    for (i, &t) in f.tokens.iter().enumerate() {
        let got = f.model.forward(&mut s, &[t], Want::Last).unwrap();
        worst = worst.max(compare(f, i, &got, what));
    }
    worst
}

#[test]
fn exact_matches_transformers_a_chunked_and_decoded() {
    let f = load("a");
    for seed in [1u64, 7, 42] {
        let lens = splits(f.tokens.len(), seed, 23);
        let w = chunked(&f, &lens, &format!("a chunks {lens:?}"));
        eprintln!("fixture a: chunks {lens:?}: {w:e}");
    }
    // chunk boundaries on and around window / ratio edges
    let w = chunked(&f, &[1, 3, 4, 5, 3, 16, 17, 15, 36], "a edge chunks");
    eprintln!("fixture a: edge chunks: {w:e}");
    let w = decoded(&f, "a decode");
    eprintln!("fixture a: token-by-token: {w:e}");
}

#[test]
fn exact_matches_transformers_b_chunked() {
    let f = load("b");
    let lens = splits(f.tokens.len(), 99, 300);
    let w = chunked(&f, &lens, "b random chunks");
    eprintln!("fixture b: chunks {lens:?}: {w:e}");
}

#[test]
fn exact_matches_transformers_b_decoded() {
    // every position one token at a time, through eviction (128), the first HCA
    // rows (127, 255, ...) and the indexer's pruning (from position 2051)
    let f = load("b");
    let w = decoded(&f, "b decode");
    eprintln!("fixture b: token-by-token: {w:e}");
}

#[test]
fn mtp_block_matches_transformers_layer_a() {
    // oracle: one transformers DeepseekV4DecoderLayer with the MTP block weights,
    // e_proj/h_proj input mixing, the MTP HC head and norm (tools/oracle), fed
    // (h_i, t_{i+1}) at MTP positions 0..T-2
    let f = load("a");
    let (shape, want) =
        ds4_model::npy::read_f32(&fixtures_dir().join("tiny_a_mtp_logits.npy")).unwrap();
    assert_eq!(shape, vec![f.tokens.len() - 1, f.vocab]);
    let max = want.iter().fold(0f32, |a, &b| a.max(b.abs()));
    let mut s = f.model.session(Numerics::Exact);
    let mut worst = 0f32;
    for i in 0..f.tokens.len() - 1 {
        f.model
            .forward(&mut s, &f.tokens[i..i + 1], Want::None)
            .unwrap();
        let h = s.last_hidden().unwrap().clone();
        let (got, _) = f.model.mtp_forward(&mut s, &h, f.tokens[i + 1]).unwrap();
        let w = &want[i * f.vocab..(i + 1) * f.vocab];
        let d = w
            .iter()
            .zip(&got)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        worst = worst.max(d / max);
        assert_eq!(argmax(&got), argmax(w), "MTP argmax differs at {i}");
    }
    eprintln!("fixture a: MTP block max|Δ|/max|logit| = {worst:e}");
    assert!(worst <= 1e-4, "MTP: {worst:e}");
}

#[test]
fn exact_matches_transformers_c_from_synth_gguf() {
    // fixture C: weights from a GGUF written by ds4_gguf::synth, read by gguf-py for
    // the oracle and through the validated, zero-copy GGUF path here
    let dir = fixtures_dir();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tiny_c.json")).unwrap()).unwrap();
    let seed = meta["seed"].as_u64().unwrap();
    let tmp = std::env::temp_dir().join(format!("ds4-model-oracle-c-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let path = tmp.join("c.gguf");
    ds4_gguf::synth::synth_main(&tiny::synth_config_c(seed), &path).unwrap();
    let (file, _) = ds4_model::gguf::open_validated(&path).unwrap();
    assert_eq!(
        format!("{:016x}", tiny::gguf_fingerprint(&file)),
        meta["fingerprint"].as_str().unwrap(),
        "fixture tiny_c is stale (synth output changed): regenerate with python tools/oracle/gen_fixtures.py c"
    );
    drop(file);
    let model = ds4_model::load(Cpu, &path, None).unwrap();
    let tokens: Vec<u32> = meta["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let (shape, logits) = ds4_model::npy::read_f32(&dir.join("tiny_c_logits.npy")).unwrap();
    assert_eq!(shape, vec![tokens.len(), model.cfg.vocab]);
    let f = Fixture {
        vocab: model.cfg.vocab,
        cfg: model.cfg.clone(),
        max_abs: logits.iter().fold(0f32, |a, &b| a.max(b.abs())),
        tokens,
        logits,
        model,
    };
    let mut s = f.model.session(Numerics::Exact);
    let got = f.model.forward(&mut s, &f.tokens, Want::All).unwrap();
    let w = compare(&f, 0, &got, "c whole");
    let w2 = chunked(&f, &splits(f.tokens.len(), 5, 40), "c chunks");
    let w3 = decoded(&f, "c decode");
    eprintln!("fixture c (synth GGUF): whole {w:e}, chunked {w2:e}, decoded {w3:e}");
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn fixture_b_exercises_indexer_pruning() {
    // Without the top-512 selection the logits agree with the oracle before position
    // 2051 (n_comp <= 512) and clearly differ after it: the fixture really tests pruning.
    let f = load("b");
    let mut cfg = f.cfg.clone();
    cfg.idx_topk = usize::MAX / 2;
    let m = tiny::generate(&cfg, 5678).unwrap();
    let unpruned = Model::bind(Cpu, cfg, &m.main, None).unwrap();
    let mut s = unpruned.session(Numerics::Exact);
    let got = unpruned.forward(&mut s, &f.tokens, Want::All).unwrap();
    let v = f.vocab;
    let row_diff = |t: usize| {
        f.logits[t * v..(t + 1) * v]
            .iter()
            .zip(&got[t * v..(t + 1) * v])
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()))
    };
    let before = (0..2051).map(row_diff).fold(0f32, f32::max) / f.max_abs;
    let after = (2051..f.tokens.len()).map(row_diff).fold(0f32, f32::max) / f.max_abs;
    eprintln!("fixture b without pruning: before 2051 {before:e}, from 2051 {after:e}");
    assert!(before <= 1e-4);
    assert!(
        after > 1e-3,
        "pruning made no visible difference ({after:e})"
    );
}
