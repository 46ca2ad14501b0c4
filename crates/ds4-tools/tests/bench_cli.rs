//! ds4-bench end to end on a tiny synthetic model (spec/server-and-cli.md §5).
//!
//! The model has a placeholder vocabulary (the 256 byte tokens, the 7 specials and
//! filler, no merges), so an ASCII prompt is exactly one token per byte: the token
//! counts the tool must see are known independently of its tokenizer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use ds4_gguf::synth::{synth_main, SynthConfig, VocabSource};

const VOCAB: u32 = 300;

struct Fixture {
    dir: PathBuf,
    model: PathBuf,
    prompt: PathBuf,
    prompt_len: usize,
}

/// Deterministic ASCII text of `n` bytes.
fn text(n: usize) -> String {
    let words = [
        "quel",
        "ramo",
        "del",
        "lago",
        "di",
        "Como",
        "che",
        "volge",
        "a",
        "mezzogiorno,",
        "tra",
        "due",
        "catene",
        "non",
        "interrotte",
        "di",
        "monti.",
    ];
    let mut s = String::new();
    let mut i = 0usize;
    while s.len() < n {
        s.push_str(words[(i * 7 + i / 3) % words.len()]);
        s.push(if i % 11 == 10 { '\n' } else { ' ' });
        i += 1;
    }
    s.truncate(n);
    s
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Under the target dir (cargo sets CARGO_TARGET_TMPDIR for integration tests).
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ds4-bench-cli");
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("tiny.gguf");
        let mut cfg = SynthConfig::tiny();
        cfg.vocab = VocabSource::Placeholder(VOCAB);
        cfg.seed = 7;
        synth_main(&cfg, &model).unwrap();
        let prompt = dir.join("prompt.txt");
        let prompt_len = 420;
        std::fs::write(&prompt, text(prompt_len)).unwrap();
        Fixture {
            dir,
            model,
            prompt,
            prompt_len,
        }
    })
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ds4-bench"))
        .args(["-t", "1"])
        .args(args)
        .output()
        .expect("running ds4-bench")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[derive(Debug)]
struct Row {
    ctx: usize,
    prefill: usize,
    prefill_tps: f64,
    gen: usize,
    gen_tps: f64,
    kv: u64,
}

fn parse_csv(csv: &str) -> Vec<Row> {
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 6, "row {l:?}");
            // %.2f: exactly two decimals.
            for x in [f[2], f[4]] {
                let (_, dec) = x.split_once('.').expect("a decimal point");
                assert_eq!(dec.len(), 2, "row {l:?}");
            }
            Row {
                ctx: f[0].parse().unwrap(),
                prefill: f[1].parse().unwrap(),
                prefill_tps: f[2].parse().unwrap(),
                gen: f[3].parse().unwrap(),
                gen_tps: f[4].parse().unwrap(),
                kv: f[5].parse().unwrap(),
            }
        })
        .collect()
}

/// The ds4 session payload size (spec §2.6) of the tiny layout after `n` tokens:
/// 5 layers with ratios [0, 0, 4, 128, 4], head dim 128, indexer dim 128, window 16.
fn tiny_payload(n: usize) -> u64 {
    let (hd, idx, layers, window) = (128usize, 128usize, 5usize, 16usize);
    let mut b = 52 + 4 * n + 4 * VOCAB as usize + 8 * layers;
    b += layers * n.min(window) * hd * 4;
    // Ratio-4 layers (2): compressed + indexer rows every 4 tokens, two frontier
    // buffers each of 2*dim*2*4 f32.
    b += 2 * ((n / 4) * hd * 4 + 2 * (2 * hd * 2 * 4 * 4));
    b += 2 * ((n / 4) * idx * 4 + 2 * (2 * idx * 2 * 4 * 4));
    // Ratio-128 layer: a row every 128 tokens, two frontier buffers of dim*128 f32.
    b += (n / 128) * hd * 4 + 2 * (hd * 128 * 4);
    b as u64
}

#[test]
fn linear_sweep_rows_and_payload() {
    let fx = fixture();
    let csv = fx.dir.join("linear.csv");
    let o = bench(&[
        "-m",
        s(&fx.model),
        "--prompt-file",
        s(&fx.prompt),
        "--ctx-start",
        "64",
        "--ctx-max",
        "200",
        "--step-incr",
        "64",
        "--gen-tokens",
        "5",
        "--csv",
        s(&csv),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "CSV went to the file");
    let rows = parse_csv(&std::fs::read_to_string(&csv).unwrap());
    let ctx: Vec<usize> = rows.iter().map(|r| r.ctx).collect();
    assert_eq!(ctx, vec![64, 128, 192, 200]);
    let pre: Vec<usize> = rows.iter().map(|r| r.prefill).collect();
    assert_eq!(pre, vec![64, 64, 64, 8]);
    for r in &rows {
        assert_eq!(r.gen, 5);
        assert!(r.prefill_tps >= 0.0 && r.gen_tps >= 0.0);
        assert_eq!(r.kv, tiny_payload(r.ctx), "payload at {}", r.ctx);
    }
    assert!(rows.windows(2).all(|w| w[0].kv < w[1].kv));
}

#[test]
fn multiplicative_sweep_to_stdout() {
    let fx = fixture();
    let o = bench(&[
        "--model",
        s(&fx.model),
        "--prompt-file",
        s(&fx.prompt),
        "--ctx-start",
        "100",
        "--ctx-max",
        "400",
        "--step-mul",
        "1.5",
        "-n",
        "2",
        "--numerics",
        "exact",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = parse_csv(&String::from_utf8(o.stdout).unwrap());
    // 100, 150, 225, ceil(337.5) = 338, capped 400.
    let ctx: Vec<usize> = rows.iter().map(|r| r.ctx).collect();
    assert_eq!(ctx, vec![100, 150, 225, 338, 400]);
    let pre: Vec<usize> = rows.iter().map(|r| r.prefill).collect();
    assert_eq!(pre, vec![100, 50, 75, 113, 62]);
    assert!(rows.iter().all(|r| r.gen == 2));
    assert!(rows.iter().all(|r| r.kv == tiny_payload(r.ctx)));
}

#[test]
fn chat_prompt_token_count() {
    let fx = fixture();
    let chat = fx.dir.join("chat.txt");
    std::fs::write(&chat, text(90)).unwrap();
    let system = "Be brief.";
    // BOS + system + <｜User｜> + text + <｜Assistant｜> + </think>.
    let n = 1 + system.len() + 1 + 90 + 2;
    let run = |ctx_max: usize| {
        let m = ctx_max.to_string();
        bench(&[
            "-m",
            s(&fx.model),
            "--chat-prompt-file",
            s(&chat),
            "-sys",
            system,
            "--ctx-start",
            &m,
            "--ctx-max",
            &m,
            "-n",
            "1",
        ])
    };
    let ok = run(n);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let rows = parse_csv(&String::from_utf8(ok.stdout).unwrap());
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].ctx, rows[0].prefill, rows[0].gen), (n, n, 1));
    let short = run(n + 1);
    assert_eq!(short.status.code(), Some(1));
    assert!(
        stderr(&short).contains(&format!(
            "prompt has {n} tokens, need at least --ctx-max={}",
            n + 1
        )),
        "{}",
        stderr(&short)
    );
    // The default system text ("You are a helpful assistant." with its period).
    let default_n = 1 + "You are a helpful assistant.".len() + 1 + 90 + 2;
    let m = default_n.to_string();
    let o = bench(&[
        "-m",
        s(&fx.model),
        "--chat-prompt-file",
        s(&chat),
        "--ctx-start",
        &m,
        "--ctx-max",
        &m,
        "-n",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bench(&[
        "-m",
        s(&fx.model),
        "--chat-prompt-file",
        s(&chat),
        "--ctx-start",
        "8",
        "--ctx-max",
        &(default_n + 1).to_string(),
        "-n",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn too_short_prompt_fails() {
    let fx = fixture();
    let max = (fx.prompt_len + 1).to_string();
    let o = bench(&[
        "-m",
        s(&fx.model),
        "--prompt-file",
        s(&fx.prompt),
        "--ctx-start",
        "16",
        "--ctx-max",
        &max,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "prompt has {} tokens, need at least --ctx-max={max}",
            fx.prompt_len
        )),
        "{e}"
    );
    assert!(o.stdout.is_empty(), "no CSV for a failed run");
}

#[test]
fn usage_errors_exit_2() {
    let fx = fixture();
    let p = s(&fx.prompt);
    let m = s(&fx.model);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-m", m, "--prompt-file", p, "--chat-prompt-file", p],
            "specify exactly one of --prompt-file or --chat-prompt-file",
        ),
        (
            vec!["-m", m],
            "specify exactly one of --prompt-file or --chat-prompt-file",
        ),
        (
            vec![
                "-m",
                m,
                "--prompt-file",
                p,
                "--ctx-start",
                "300",
                "--ctx-max",
                "200",
            ],
            "--ctx-start must be <= --ctx-max",
        ),
        (
            vec!["--prompt-file", p, "--step-mul", "0.5"],
            "--step-mul must be >= 1",
        ),
        (
            vec![
                "--prompt-file",
                p,
                "--ctx-start",
                "50",
                "--ctx-max",
                "100",
                "-n",
                "10",
                "--ctx-alloc",
                "110",
            ],
            "--ctx-alloc must be greater than ctx-max + gen-tokens",
        ),
        (
            vec!["--prompt-file", p, "-n", "0"],
            "invalid value for -n: 0",
        ),
        (
            vec!["--prompt-file", p, "--ctx-max", "12x"],
            "invalid value for --ctx-max: 12x",
        ),
        (
            vec!["--prompt-file", p, "--step-mul", "inf"],
            "invalid value for --step-mul: inf",
        ),
        (
            vec!["--prompt-file", p, "--backend", "tpu"],
            "valid backends are: metal, cuda, cpu",
        ),
        (
            vec!["--prompt-file", p, "--numerics", "fast"],
            "invalid value for --numerics: fast",
        ),
        (
            vec!["--prompt-file", p, "--csv"],
            "--csv requires an argument",
        ),
        (
            vec!["--prompt-file", p, "--bogus"],
            "unknown option: --bogus",
        ),
        (
            vec!["--prompt-file", p, "--demo", "-m", m],
            "mutually exclusive",
        ),
    ];
    for (args, msg) in cases {
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    let h = bench(&["--help"]);
    assert!(h.status.success());
    assert!(String::from_utf8_lossy(&h.stdout).starts_with("Usage: ds4-bench"));
}

#[test]
fn runtime_errors_exit_1() {
    let fx = fixture();
    let p = s(&fx.prompt);
    let missing = fx.dir.join("no-such-model.gguf");
    let not_gguf = fx.dir.join("not.gguf");
    std::fs::write(&not_gguf, b"this is not a gguf file").unwrap();
    let absent = fx.dir.join("absent.txt");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--cuda", "-m", s(&fx.model), "--prompt-file", p],
            "--cuda: no CUDA",
        ),
        (
            vec!["--backend", "metal", "-m", s(&fx.model), "--prompt-file", p],
            "metal backend is not available",
        ),
        (
            vec!["-m", s(&missing), "--prompt-file", p],
            "no-such-model.gguf",
        ),
        (vec!["-m", s(&not_gguf), "--prompt-file", p], "not.gguf"),
        (
            vec![
                "-m",
                s(&fx.model),
                "--prompt-file",
                s(&absent),
                "--ctx-max",
                "10",
                "--ctx-start",
                "10",
            ],
            "failed to open",
        ),
    ];
    for (args, msg) in cases {
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
    // An unwritable CSV path.
    let o = bench(&[
        "-m",
        s(&fx.model),
        "--prompt-file",
        p,
        "--ctx-start",
        "8",
        "--ctx-max",
        "8",
        "--csv",
        s(&fx.dir.join("no-dir").join("x.csv")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("failed to open"), "{}", stderr(&o));
}

#[test]
fn demo_model_with_real_tokenizer() {
    let fx = fixture();
    let o = bench(&[
        "--demo",
        "--prompt-file",
        s(&fx.prompt),
        "--ctx-start",
        "16",
        "--ctx-max",
        "40",
        "--step-incr",
        "16",
        "-n",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = parse_csv(&String::from_utf8(o.stdout).unwrap());
    let v: Vec<(usize, usize, usize)> = rows.iter().map(|r| (r.ctx, r.prefill, r.gen)).collect();
    assert_eq!(v, vec![(16, 16, 3), (32, 16, 3), (40, 8, 3)]);
    assert!(rows.windows(2).all(|w| w[0].kv < w[1].kv));
}
