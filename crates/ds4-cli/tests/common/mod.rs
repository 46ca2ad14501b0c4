//! Shared helpers of the ds4 CLI tests: a tiny synthetic model file and an
//! independent greedy decoder straight on `ds4-model`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use ds4_model::{Cpu, Numerics, Want};

/// The tiny model (layout of the demo model: every attention kind, real
/// vocabulary, random F16 weights), written once per target dir.
pub fn tiny_model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("ds4-cli-tiny-v1.gguf");
        let cfg = ds4_engine::ds4::demo_config();
        let plan = ds4_gguf::synth::plan_main(&cfg).expect("plan");
        let ok = std::fs::metadata(&path)
            .map(|m| m.len() == plan.file_bytes)
            .unwrap_or(false);
        if !ok {
            // Unique temp name, then rename: parallel test binaries never
            // see a half-written file.
            let tmp = dir.join(format!("ds4-cli-tiny-v1.{}.tmp", std::process::id()));
            ds4_gguf::synth::synth_main(&cfg, &tmp).expect("synth tiny model");
            std::fs::rename(&tmp, &path).expect("rename tiny model");
        }
        path
    })
}

/// `ds4` with a clean environment (no DS4_*/HF_* variables, HOME in `home`).
pub fn ds4(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ds4"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("DS4_") || k.starts_with("HF_") {
            c.env_remove(&k);
        }
    }
    c.env("HOME", home)
        .env("DS4_THREADS", "2")
        .current_dir(home);
    c
}

pub fn run_ok(c: &mut Command) -> Output {
    let out = c.output().expect("run ds4");
    assert!(
        out.status.success(),
        "ds4 failed ({:?})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decode on the model directly: (generated ids before EOS, logits
/// of every step).
pub fn greedy(path: &Path, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let m = ds4_model::load(Cpu, path, None).expect("load");
    let mut s = m.session(Numerics::Official);
    let eos = ds4_tokenizer::Tokenizer::shared_v4().eos_id();
    let mut logits = m.forward(&mut s, prompt, Want::Last).expect("forward");
    let mut ids = Vec::new();
    let mut steps = Vec::new();
    for _ in 0..n {
        let id = argmax(&logits);
        steps.push(logits.clone());
        if id == eos {
            break;
        }
        ids.push(id);
        logits = m.forward(&mut s, &[id], Want::Last).expect("forward");
    }
    (ids, steps)
}

/// The ds4 CLI prompt of spec §3.2, spelled out with the token ids:
/// BOS, system (plain BPE), USER, prompt (plain BPE), ASSISTANT, think tag.
pub fn cli_prompt(system: &str, prompt: &str, thinking: bool) -> Vec<u32> {
    let tok = ds4_tokenizer::Tokenizer::shared_v4();
    let id = |s: &str| tok.token_id(s).expect("special token");
    let mut v = vec![tok.bos_id()];
    v.extend(tok.encode_ordinary(system));
    v.push(id("<｜User｜>"));
    v.extend(tok.encode_ordinary(prompt));
    v.push(id("<｜Assistant｜>"));
    v.push(id(if thinking { "<think>" } else { "</think>" }));
    v
}
