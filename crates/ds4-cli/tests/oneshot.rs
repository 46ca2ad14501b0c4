//! One-shot generation and the diagnostics dumps against a tiny model,
//! checked against an independent greedy decode on `ds4-model`.

mod common;

use common::*;
use ds4_tokenizer::Tokenizer;

fn text_of(ids: &[u32]) -> String {
    String::from_utf8_lossy(&Tokenizer::shared_v4().decode(ids)).into_owned()
}

/// ds4's terminal rule: output ends with a newline when anything was printed.
fn with_newline(mut s: String) -> String {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

#[test]
fn one_shot_greedy_nothink_prints_the_greedy_continuation() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let out = run_ok(ds4(home.path()).args([
        "-m",
        model.to_str().unwrap(),
        "-p",
        "Hello, who are you?",
        "--nothink",
        "--temp",
        "0",
        "-n",
        "12",
    ]));
    let (ids, _) = greedy(
        model,
        &cli_prompt("You are a helpful assistant", "Hello, who are you?", false),
        12,
    );
    assert!(!ids.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        with_newline(text_of(&ids))
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ds4: prefill:"), "{err}");
    assert!(err.contains("ds4: context buffers"), "{err}");
}

#[test]
fn one_shot_thinking_strips_tags_and_respects_system_flag() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let out = run_ok(
        ds4(home.path())
            .args([
                "-m",
                model.to_str().unwrap(),
                "--prompt-file",
                "p.txt",
                "-sys",
                "",
                "--temp",
                "0",
                "-n",
                "10",
            ])
            .current_dir({
                std::fs::write(home.path().join("p.txt"), "Why is the sky blue?").unwrap();
                home.path()
            }),
    );
    let (ids, _) = greedy(model, &cli_prompt("", "Why is the sky blue?", true), 10);
    // Expected display: tags removed, a newline forced after </think>
    // unless one was just printed (not a terminal: no colour codes).
    let raw = text_of(&ids);
    let mut want = String::new();
    let mut rest = raw.as_str();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("<think>") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("</think>") {
            if !want.is_empty() && !want.ends_with('\n') {
                want.push('\n');
            }
            rest = r;
        } else {
            let c = rest.chars().next().unwrap();
            want.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout), with_newline(want));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model().to_str().unwrap();
    let run = |seed: &str| {
        run_ok(ds4(home.path()).args([
            "-m",
            model,
            "-p",
            "Tell me a story",
            "--seed",
            seed,
            "-n",
            "8",
            "--temp",
            "0.8",
            "--top-k",
            "40",
        ]))
        .stdout
    };
    assert_eq!(run("7"), run("7"));
}

#[test]
fn dump_tokens_prints_ds4_format() {
    let home = tempfile::tempdir().unwrap();
    let out = run_ok(ds4(home.path()).args([
        "--dump-tokens",
        "-p",
        "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hello!<｜Assistant｜><think>",
    ]));
    let s = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    // chat-and-tools.md §1.8
    assert_eq!(
        lines[0],
        "[0, 3476, 477, 260, 11502, 22896, 16, 128803, 19923, 3, 128804, 128821]"
    );
    assert_eq!(lines.len(), 13);
    assert_eq!(lines[1], "     0  <｜begin▁of▁sentence｜>");
    assert_eq!(lines[2], "  3476  You");
    assert_eq!(lines[3], "   477  Ġare");
    assert_eq!(lines[12], "128821  <think>");
    // Without a prompt: usage error.
    let out = ds4(home.path()).arg("--dump-tokens").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires -p"));
}

/// Minimal independent `.npy` reader: float32 little-endian, C order.
fn read_npy(bytes: &[u8]) -> (Vec<usize>, Vec<f32>) {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

#[test]
fn dump_logits_rows_equal_token_by_token_evaluation() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let ids: Vec<u32> = vec![0, 128803, 3085, 344, 223, 20, 13, 20, 33, 128804, 128822];
    std::fs::write(
        home.path().join("ids.txt"),
        "0, 128803 3085\n344,223,  20\t13 20 33\n128804, 128822\n",
    )
    .unwrap();
    for numerics in ["exact", "official"] {
        run_ok(ds4(home.path()).args([
            "-m",
            model.to_str().unwrap(),
            "--dump-logits",
            "out.npy",
            "--prompt-tokens",
            "ids.txt",
            "--numerics",
            numerics,
        ]));
        let (shape, data) = read_npy(&std::fs::read(home.path().join("out.npy")).unwrap());
        let vocab = Tokenizer::shared_v4().vocab_size();
        assert_eq!(shape, vec![ids.len(), vocab]);
        // Row t = logits after tokens 0..=t: the same as feeding the ids one
        // at a time and taking each step's logits.
        let m = ds4_model::load(ds4_model::Cpu, model, None).unwrap();
        let mut s = m.session(numerics.parse().unwrap());
        for (t, &id) in ids.iter().enumerate() {
            let row = m.forward(&mut s, &[id], ds4_model::Want::Last).unwrap();
            let got = &data[t * vocab..(t + 1) * vocab];
            let scale = row.iter().fold(0f32, |a, &b| a.max(b.abs()));
            let diff = row
                .iter()
                .zip(got)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{numerics}: row {t} differs by {diff} (scale {scale})"
            );
            assert_eq!(argmax(&row), argmax(got), "{numerics}: row {t} argmax");
        }
    }
    // Bad id files are refused with the reason.
    std::fs::write(home.path().join("bad.txt"), "1 2 999999").unwrap();
    let out = ds4(home.path())
        .args([
            "-m",
            model.to_str().unwrap(),
            "--dump-logits",
            "o.npy",
            "--prompt-tokens",
            "bad.txt",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the vocabulary"));
    assert!(!home.path().join("o.npy").exists());
}

#[test]
fn dump_logprobs_matches_direct_greedy_run() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model();
    run_ok(ds4(home.path()).args([
        "-m",
        model.to_str().unwrap(),
        "-p",
        "Count to five",
        "--nothink",
        "--dump-logprobs",
        "lp.json",
        "--logprobs-top-k",
        "5",
        "-n",
        "6",
        "-c",
        "4096",
    ]));
    let text = std::fs::read_to_string(home.path().join("lp.json")).unwrap();
    // Key order of ds4.c's writer.
    let order = [
        "\"source\"",
        "\"prompt_tokens\"",
        "\"ctx\"",
        "\"top_k\"",
        "\"steps\"",
    ];
    let pos: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompt = cli_prompt("You are a helpful assistant", "Count to five", false);
    assert_eq!(v["source"], "ds4");
    assert_eq!(v["prompt_tokens"], prompt.len());
    assert_eq!(v["ctx"], 4096);
    assert_eq!(v["top_k"], 5);
    let (ids, steps_logits) = greedy(model, &prompt, 6);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), steps_logits.len());
    let tok = Tokenizer::shared_v4();
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(step["step"], i);
        let sel = step["selected"]["id"].as_u64().unwrap() as u32;
        let logits = &steps_logits[i];
        assert_eq!(sel, argmax(logits));
        if i < ids.len() {
            assert_eq!(sel, ids[i]);
        }
        let bytes: Vec<u8> = step["selected"]["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, tok.token_bytes(sel).unwrap());
        if let Ok(s) = std::str::from_utf8(&bytes) {
            assert_eq!(step["selected"]["text"], s);
        }
        // Independent top-5 with log-softmax in f64.
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + logits
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
        let top = step["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        for (j, e) in top.iter().enumerate() {
            let id = order[j];
            assert_eq!(e["token"]["id"].as_u64().unwrap() as usize, id);
            let logit = e["logit"].as_f64().unwrap();
            let lp = e["logprob"].as_f64().unwrap();
            assert!((logit - logits[id] as f64).abs() <= 1e-6 * logit.abs().max(1.0));
            assert!((lp - (logits[id] as f64 - lse)).abs() <= 1e-5 * lp.abs().max(1.0));
        }
    }
}

#[test]
fn dump_prompt_renders_the_official_prompt() {
    let home = tempfile::tempdir().unwrap();
    // chat-golden/04_system_chat (official encoder output).
    std::fs::write(
        home.path().join("req.json"),
        r#"{"model":"deepseek-v4-flash","thinking":{"type":"disabled"},
            "messages":[{"role":"system","content":"You are a helpful assistant."},
                        {"role":"user","content":"Hello!"}]}"#,
    )
    .unwrap();
    let out = run_ok(ds4(home.path()).args(["--dump-prompt", "req.json"]));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hello!<｜Assistant｜></think>"
    );
    std::fs::write(home.path().join("bad.json"), "{").unwrap();
    let out = ds4(home.path())
        .args(["--dump-prompt", "bad.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
}

#[test]
fn memory_check_refuses_before_loading_and_can_be_overridden() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model().to_str().unwrap().to_string();
    std::fs::write(
        home.path().join("meminfo"),
        "MemTotal: 2048 kB\nMemAvailable: 1024 kB\n",
    )
    .unwrap();
    let args = ["-m", &model, "-p", "hi", "-n", "2", "--temp", "0", "--cpu"];
    let out = ds4(home.path())
        .env("DS4_MEMINFO", home.path().join("meminfo"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not fit in memory"), "{err}");
    assert!(err.contains("0.00 GiB is available"), "{err}");
    assert!(!err.contains("ds4: loaded"), "{err}");
    assert!(out.stdout.is_empty());
    run_ok(
        ds4(home.path())
            .env("DS4_MEMINFO", home.path().join("meminfo"))
            .args(args)
            .arg("--no-mem-check"),
    );
}

#[test]
fn memory_check_counts_a_tmpfs_model_as_already_in_memory() {
    // /dev/shm is a tmpfs on Linux machines (CI included)
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: no /dev/shm");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let file = tempfile::NamedTempFile::new_in(shm).unwrap();
    std::fs::copy(tiny_model(), file.path()).unwrap();
    let model = file.path().to_str().unwrap().to_string();
    let est = ds4_cli::memcheck::estimate(file.path(), 4096).unwrap();
    if !est.tmpfs {
        eprintln!("skipped: /dev/shm is not a tmpfs here");
        return;
    }
    assert!(est.weights > est.context + (2 << 20));
    // room for the context and 1 MiB, far less than the weights: it starts
    let avail_kb = (est.context >> 10) + 1024;
    std::fs::write(
        home.path().join("meminfo"),
        format!("MemTotal: {avail_kb} kB\nMemAvailable: {avail_kb} kB\n"),
    )
    .unwrap();
    let args = [
        "-m", &model, "-c", "4096", "-p", "hi", "-n", "2", "--temp", "0", "--cpu",
    ];
    let out = run_ok(
        ds4(home.path())
            .env("DS4_MEMINFO", home.path().join("meminfo"))
            .args(args),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already resident, tmpfs"), "{err}");
    assert!(!out.stdout.is_empty());
    // room for less than the context: still refused, with the numbers
    let small_kb = (est.context >> 10) / 2;
    std::fs::write(
        home.path().join("meminfo"),
        format!("MemTotal: {small_kb} kB\nMemAvailable: {small_kb} kB\n"),
    )
    .unwrap();
    let out = ds4(home.path())
        .env("DS4_MEMINFO", home.path().join("meminfo"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not fit in memory"), "{err}");
    assert!(err.contains("already in memory (tmpfs)"), "{err}");
}

#[test]
fn a_demo_answer_ends_after_64_tokens_unless_n_is_given() {
    let home = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["-p", "hi", "--temp", "0"];
        args.extend_from_slice(extra);
        let out = run_ok(ds4(home.path()).args(&args));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (plain, err) = run(&[]);
    assert!(
        err.contains("each answer stops after 64 tokens (-n N to change)"),
        "{err}"
    );
    // Greedy: the default stops exactly where -n 64 does, and -n 200 goes on.
    let (n64, err64) = run(&["-n", "64"]);
    assert_eq!(plain, n64);
    assert!(!err64.contains("stops after"), "{err64}");
    let (n200, _) = run(&["-n", "200"]);
    assert!(
        n200.len() > n64.len() && n200.starts_with(n64.trim_end()),
        "{n64:?} / {n200:?}"
    );
}

#[test]
fn default_model_is_ds4flash_link_else_demo() {
    let home = tempfile::tempdir().unwrap();
    // No -m and no ./ds4flash.gguf: the demo model, announced.
    let out = run_ok(ds4(home.path()).args(["-p", "hi", "-n", "3", "--temp", "0"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("EMBEDDED DEMO MODEL"), "{err}");
    // With ./ds4flash.gguf: that file, no notice.
    std::os::unix::fs::symlink(tiny_model(), home.path().join("ds4flash.gguf")).unwrap();
    let out = run_ok(ds4(home.path()).args(["-p", "hi", "-n", "3", "--temp", "0", "--nothink"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("DEMO"), "{err}");
    assert!(err.contains("loaded ds4flash.gguf"), "{err}");
    let (ids, _) = greedy(
        tiny_model(),
        &cli_prompt("You are a helpful assistant", "hi", false),
        3,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        with_newline(text_of(&ids))
    );
    // A dangling link is an error, not a silent demo.
    std::fs::remove_file(home.path().join("ds4flash.gguf")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/x.gguf", home.path().join("ds4flash.gguf")).unwrap();
    let out = ds4(home.path()).args(["-p", "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken link"));
}

#[test]
fn inspect_and_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model().to_str().unwrap().to_string();
    let out = run_ok(ds4(home.path()).args(["-m", &model, "--inspect"]));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("layers: 5"), "{s}");
    assert!(s.contains("vocab: 129280"), "{s}");
    for (args, code) in [
        (vec!["--bogus"], 2),
        (vec!["-n", "0"], 2),
        (vec!["--temp", "-1"], 2),
        (vec!["-m", "/nonexistent.gguf", "-p", "x"], 1),
        (vec!["--cuda", "-p", "x"], 1),
        (vec!["--server"], 2),
    ] {
        let out = ds4(home.path()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let out = run_ok(ds4(home.path()).arg("--help"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--dump-logprobs"));
    // A file that is not a model is refused with the validator's reason.
    std::fs::write(home.path().join("junk.gguf"), b"not a gguf file at all").unwrap();
    let out = ds4(home.path())
        .args(["-m", "junk.gguf", "-p", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.gguf"));
}

#[test]
fn perplexity_file_matches_a_batch_forward() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(6);
    std::fs::write(home.path().join("t.txt"), &text).unwrap();
    let out = run_ok(ds4(home.path()).args([
        "-m",
        model.to_str().unwrap(),
        "--perplexity-file",
        "t.txt",
        "-n",
        "20",
    ]));
    let line = String::from_utf8(out.stdout).unwrap();
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
            .parse()
            .unwrap()
    };
    let ids = Tokenizer::shared_v4().encode_ordinary(&text);
    assert_eq!(field("tokens") as usize, ids.len());
    assert_eq!(field("scored"), 20.0);
    // Independent: one batch forward with every position's logits.
    let m = ds4_model::load(ds4_model::Cpu, model, None).unwrap();
    let mut s = m.session(ds4_model::Numerics::Official);
    let n = 32 + 20;
    let all = m.forward(&mut s, &ids[..n], ds4_model::Want::All).unwrap();
    let vocab = m.cfg.vocab;
    let mut nll = 0.0f64;
    for i in 32..n {
        let row = &all[(i - 1) * vocab..i * vocab];
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        nll -= row[ids[i] as usize] as f64 - lse;
    }
    assert!(
        (field("nll") - nll).abs() <= 1e-4 * nll.abs(),
        "{line} vs nll={nll}"
    );
    assert!((field("avg_nll") - nll / 20.0).abs() <= 1e-4 * nll.abs() / 20.0);
    assert!((field("ppl").ln() - nll / 20.0).abs() <= 1e-4 * nll.abs() / 20.0);
    // Too short a file, and -p together with it, are refused.
    std::fs::write(home.path().join("short.txt"), "hi").unwrap();
    let out = ds4(home.path())
        .args([
            "-m",
            model.to_str().unwrap(),
            "--perplexity-file",
            "short.txt",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than 32 tokens"));
    let out = ds4(home.path())
        .args(["--perplexity-file", "t.txt", "-p", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
