//! Weights are used from the mmap: loading a model does not read its big
//! tensors, so the resident set grows far less than the file size until the
//! weights are touched. (Own test binary: RSS is per process.)

#[cfg(target_os = "linux")]
fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn rss_after_load_is_much_smaller_than_the_file() {
    use ds4_gguf::synth::{synth_main, SynthConfig, VocabSource};
    use ds4_model::{load, Cpu, Numerics, Want};
    let dir = std::env::temp_dir().join(format!("ds4-model-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = SynthConfig::tiny();
    // a large vocabulary makes the embedding and LM head dominate the file (~2 x 100 MB)
    cfg.vocab = VocabSource::Placeholder(100_000);
    let path = dir.join("big-vocab.gguf");
    synth_main(&cfg, &path).unwrap();
    let file_len = std::fs::metadata(&path).unwrap().len();
    let before = rss_bytes();
    let model = load(Cpu, &path, None).unwrap();
    let after_load = rss_bytes();
    let grew = after_load.saturating_sub(before);
    eprintln!(
        "file {} MB, RSS growth at load {} MB",
        file_len >> 20,
        grew >> 20
    );
    assert!(
        grew < file_len / 4,
        "load made {grew} bytes resident for a {file_len}-byte file"
    );
    // touching the weights (the LM head is read whole) makes them resident
    let mut s = model.session(Numerics::Exact);
    let l = model.forward(&mut s, &[1, 2, 3], Want::Last).unwrap();
    assert!(l.iter().all(|v| v.is_finite()));
    let after_use = rss_bytes();
    eprintln!(
        "RSS growth after one forward {} MB",
        after_use.saturating_sub(before) >> 20
    );
    assert!(
        after_use.saturating_sub(after_load) > file_len / 4,
        "the LM head should now be resident"
    );
    drop(model);
    std::fs::remove_dir_all(&dir).ok();
}
