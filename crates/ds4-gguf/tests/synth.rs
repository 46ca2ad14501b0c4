//! Synthetic files: metadata round trip, directory equal to the layout tables,
//! determinism per seed, and the full-shape totals of spec §0.1 (computed, not written).

use ds4_gguf::layout::{expected_mtp_tensors, expected_tensors, ModelConfig, Recipe};
use ds4_gguf::synth::{
    plan_main, plan_mtp, synth_main, synth_main_to, synth_mtp_to, HotRows, SynthConfig,
    VocabSource, SPECIAL_TOKENS,
};
use ds4_gguf::{GgmlType, GgufFile};

fn tiny_placeholder(recipe: Recipe, seed: u64) -> SynthConfig {
    let mut c = SynthConfig::tiny();
    c.vocab = VocabSource::Placeholder(512);
    c.recipe = recipe;
    c.seed = seed;
    c
}

fn build(cfg: &SynthConfig) -> Vec<u8> {
    synth_main_to(cfg, Vec::new()).unwrap().0
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

#[test]
fn tiny_metadata_gives_back_the_config_and_directory() {
    for recipe in [Recipe::F32, Recipe::F16, Recipe::Q2, Recipe::Q4] {
        let cfg = tiny_placeholder(recipe, 1);
        let (bytes, stats) = synth_main_to(&cfg, Vec::new()).unwrap();
        assert_eq!(stats.file_bytes, bytes.len() as u64);
        let f = GgufFile::from_bytes(bytes).unwrap();
        let model = ModelConfig::from_gguf(&f).unwrap();
        assert_eq!(model, cfg.effective_model().unwrap());
        assert_eq!(model.vocab_size, 512);
        let want = expected_tensors(&model, recipe);
        assert_eq!(f.tensors().len(), want.len());
        for (t, s) in f.tensors().iter().zip(&want) {
            assert_eq!(t.name, s.name);
            assert_eq!(t.dims, s.dims);
            assert_eq!(t.ggml_type, Some(s.recipe_type), "{}", t.name);
            assert_eq!(t.abs_offset % 32, 0);
        }
        let tokens = f
            .get("tokenizer.ggml.tokens")
            .unwrap()
            .as_array()
            .unwrap()
            .1;
        assert_eq!(tokens.len(), 512);
        for s in SPECIAL_TOKENS {
            assert!(tokens.iter().any(|t| t.as_str() == Some(s)), "{s}");
        }
        assert!(f.get("general.alignment").is_none());
    }
}

#[test]
fn tiny_with_real_vocab_and_alignment_64() {
    let mut cfg = SynthConfig::tiny();
    cfg.recipe = Recipe::Q2;
    cfg.alignment = Some(64);
    let bytes = build(&cfg);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.alignment(), 64);
    let model = ModelConfig::from_gguf(&f).unwrap();
    assert_eq!(model.vocab_size, 129_280);
    let tokens = f
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap()
        .1;
    assert_eq!(tokens.len(), 129_280);
    let merges = f
        .get("tokenizer.ggml.merges")
        .unwrap()
        .as_array()
        .unwrap()
        .1;
    assert_eq!(merges.len(), 127_741);
    for t in f.tensors() {
        assert_eq!(t.abs_offset % 64, 0, "{}", t.name);
    }
    let tid = f.tensor("blk.1.ffn_gate_tid2eid.weight").unwrap();
    assert_eq!(tid.dims, vec![6, 129_280]);
    let data = f.tensor_data(tid);
    for row in data.chunks_exact(24) {
        let mut v: Vec<i32> = row
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(v.iter().all(|&e| (0..16).contains(&e)), "{v:?}");
        v.sort();
        v.dedup();
        assert_eq!(v.len(), 6);
    }
}

#[test]
fn deterministic_per_seed() {
    for recipe in [Recipe::F32, Recipe::Q2, Recipe::Q4] {
        let a = fnv(&build(&tiny_placeholder(recipe, 42)));
        let b = fnv(&build(&tiny_placeholder(recipe, 42)));
        let c = fnv(&build(&tiny_placeholder(recipe, 43)));
        assert_eq!(a, b, "{recipe}: same seed, same bytes");
        assert_ne!(a, c, "{recipe}: different seed, different bytes");
    }
}

#[test]
fn tensors_do_not_depend_on_the_rest_of_the_file() {
    // Same seed, 5 vs 3 layers: the shared tensors have identical bytes.
    let five = GgufFile::from_bytes(build(&tiny_placeholder(Recipe::Q2, 9))).unwrap();
    let three =
        GgufFile::from_bytes(build(&tiny_placeholder(Recipe::Q2, 9).with_layers(3))).unwrap();
    assert_eq!(ModelConfig::from_gguf(&three).unwrap().n_layer, 3);
    for t in three.tensors() {
        let u = five.tensor(&t.name).unwrap();
        assert_eq!(three.tensor_data(t), five.tensor_data(u), "{}", t.name);
    }
}

#[test]
fn file_on_disk_matches_in_memory() {
    let cfg = tiny_placeholder(Recipe::F16, 5);
    let dir = std::env::temp_dir().join(format!("ds4-synth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    let stats = synth_main(&cfg, &path).unwrap();
    let disk = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(disk.len() as u64, stats.file_bytes);
    assert_eq!(disk, build(&cfg));
}

#[test]
fn mtp_file_directory() {
    for (recipe, plain) in [
        (Recipe::Q4, None),
        (Recipe::Q4, Some(GgmlType::F16)),
        (Recipe::F32, None),
    ] {
        let mut cfg = tiny_placeholder(recipe, 3);
        cfg.mtp_plain = plain;
        let (bytes, stats) = synth_mtp_to(&cfg, Vec::new()).unwrap();
        assert_eq!(stats.tensors, 32);
        let f = GgufFile::from_bytes(bytes).unwrap();
        let model = ModelConfig::from_gguf(&f).unwrap();
        let want = expected_mtp_tensors(&model, recipe);
        assert_eq!(f.tensors().len(), 32);
        for (t, s) in f.tensors().iter().zip(&want) {
            assert_eq!(t.name, s.name);
            assert_eq!(t.dims, s.dims);
        }
        let fn_t = f.tensor("mtp.0.hc_attn_fn.weight").unwrap().ggml_type;
        let want_plain = plain.unwrap_or(GgmlType::F32);
        assert_eq!(fn_t, Some(want_plain));
        if recipe == Recipe::Q4 {
            let e = f.tensor("mtp.0.ffn_down_exps.weight").unwrap();
            assert_eq!(e.ggml_type, Some(GgmlType::Q4K));
        }
    }
}

#[test]
fn full_shape_plans_match_published_totals() {
    let cfg = SynthConfig::full();
    let s = plan_main(&cfg).unwrap();
    assert_eq!(s.tensors, 1328);
    assert_eq!(s.data_bytes, 86_714_777_664);
    let mut census = s.census.clone();
    census.sort_by_key(|(t, _)| t.name());
    let mut want = vec![
        (GgmlType::Iq2Xxs, 86),
        (GgmlType::Q8_0, 345),
        (GgmlType::Q2K, 43),
        (GgmlType::F16, 359),
        (GgmlType::F32, 492),
        (GgmlType::I32, 3),
    ];
    want.sort_by_key(|(t, _)| t.name());
    assert_eq!(census, want);
    // The header (metadata incl. the real tokenizer) is a few MB, as in the published
    // file (86,720,111,488 - 86,714,777,664 = 5,333,824 bytes there).
    assert!(
        s.header_bytes > 3_000_000 && s.header_bytes < 8_000_000,
        "{}",
        s.header_bytes
    );

    let mut q4 = SynthConfig::full();
    q4.recipe = Recipe::Q4;
    assert_eq!(plan_main(&q4).unwrap().data_bytes, 164_628_168_768);
    let m = plan_mtp(&cfg).unwrap();
    assert_eq!(m.tensors, 32);
    assert_eq!(m.data_bytes, 3_807_600_192);
}

#[test]
fn bad_configs_are_rejected_with_a_reason() {
    let mut cfg = tiny_placeholder(Recipe::Q2, 0);
    cfg.model.n_embd = 64; // IQ2_XXS needs ne0 % 256 == 0
    let e = plan_main(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("not a multiple of the IQ2_XXS block size 256"),
        "{e}"
    );

    let mut cfg = tiny_placeholder(Recipe::F32, 0);
    cfg.vocab = VocabSource::Placeholder(100);
    let e = plan_main(&cfg).unwrap_err().to_string();
    assert!(e.contains("too small"), "{e}");

    let mut cfg = tiny_placeholder(Recipe::F32, 0);
    cfg.model.n_head = 7; // not divisible by 2 output groups
    let e = plan_main(&cfg).unwrap_err().to_string();
    assert!(e.contains("not divisible"), "{e}");
}

/// Dequantize a whole tensor with ds4-quant (the reference block decoders) and return
/// (mean, std) of its values.
fn moments(f: &GgufFile, name: &str) -> (f64, f64) {
    let t = f.tensor(name).unwrap();
    let ty = t.ggml_type.unwrap();
    let row = t.dims[0] as usize;
    let rb = ds4_quant::row_bytes(ty, row);
    let data = f.tensor_data(t);
    let mut buf = vec![0f32; row];
    let (mut s, mut s2, mut n) = (0f64, 0f64, 0f64);
    for r in data.chunks_exact(rb) {
        ds4_quant::dequantize_row(ty, r, &mut buf).unwrap();
        for &x in &buf {
            s += x as f64;
            s2 += (x as f64) * (x as f64);
            n += 1.0;
        }
    }
    let mean = s / n;
    (mean, (s2 / n - mean * mean).sqrt())
}

#[test]
fn random_weights_have_the_target_statistics() {
    // n_embd = expert_ffn = q_lora... see SynthConfig::tiny(): fan-in 256 except q_b (64)
    let plain = |r: Recipe| {
        let mut c = tiny_placeholder(r, 21);
        c.hot_rows = None;
        GgufFile::from_bytes(build(&c)).unwrap()
    };
    let (q2, q4, f32f) = (plain(Recipe::Q2), plain(Recipe::Q4), plain(Recipe::F32));
    let cases: [(&GgufFile, &str, f64, f64); 11] = [
        (&q2, "blk.3.ffn_gate_exps.weight", 0.0, 1.0 / 16.0), // IQ2_XXS
        (&q2, "blk.3.ffn_down_exps.weight", 0.0, 1.0 / 16.0), // Q2_K
        (&q4, "blk.3.ffn_up_exps.weight", 0.0, 1.0 / 16.0),   // Q4_K
        (&q2, "blk.0.attn_q_a.weight", 0.0, 1.0 / 16.0),      // Q8_0
        (&q2, "blk.0.attn_q_b.weight", 0.0, 1.0 / 8.0),       // Q8_0, fan-in 64
        (&q2, "output.weight", 0.0, 1.0 / 16.0),              // Q8_0
        (&q2, "token_embd.weight", 0.0, 1.0),                 // F16
        (&q2, "blk.0.hc_attn_fn.weight", 0.0, 0.02),          // F16
        (&q2, "blk.2.attn_compressor_ape.weight", 0.0, 1.0),  // F16
        (&f32f, "blk.4.ffn_gate_exps.weight", 0.0, 1.0 / 16.0),
        (&f32f, "blk.0.attn_norm.weight", 1.0, 0.05),
    ];
    for (f, name, want_mean, want_std) in cases {
        let (mean, std) = moments(f, name);
        assert!(
            (std / want_std - 1.0).abs() < 0.1,
            "{name}: std {std}, want {want_std}"
        );
        assert!(
            (mean - want_mean).abs() < 0.05 * want_std.max(0.1) + 3.0 * want_std / 16.0,
            "{name}: mean {mean}, want {want_mean}"
        );
    }
    for (f, name, v) in [
        (&f32f, "blk.1.hc_ffn_scale.weight", 1.0),
        (&f32f, "blk.1.hc_ffn_base.weight", 0.0),
        (&f32f, "output_hc_scale.weight", 1.0),
    ] {
        let (mean, std) = moments(f, name);
        assert_eq!((mean, std), (v, 0.0), "{name}");
    }
}

#[test]
fn hot_rows_make_a_few_gate_up_rows_large() {
    let mut cfg = tiny_placeholder(Recipe::F32, 4);
    cfg.hot_rows = Some(HotRows {
        one_in: 256,
        scale: 20.0,
    });
    let f = GgufFile::from_bytes(build(&cfg)).unwrap();
    let row_rms = |name: &str| -> Vec<f64> {
        let t = f.tensor(name).unwrap();
        let row = t.dims[0] as usize;
        f.tensor_data(t)
            .chunks_exact(4 * row)
            .map(|r| {
                let ss: f64 = r
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .map(|x| x * x)
                    .sum();
                (ss / row as f64).sqrt()
            })
            .collect()
    };
    let sigma = 1.0 / 16.0; // fan-in 256
    for name in [
        "blk.3.ffn_gate_exps.weight",
        "blk.3.ffn_up_exps.weight",
        "blk.3.ffn_down_exps.weight",
        "blk.3.ffn_gate_shexp.weight",
    ] {
        let rms = row_rms(name);
        let hot = rms.iter().filter(|&&r| r > 5.0 * sigma).count();
        let cold_ok = rms
            .iter()
            .all(|&r| r > 5.0 * sigma || (r / sigma - 1.0).abs() < 0.3);
        assert!(cold_ok, "{name}: a normal row is off");
        if name.contains("down") {
            assert_eq!(hot, 0, "{name}");
        } else {
            // one row in 256 on average
            let want = rms.len() as f64 / 256.0;
            assert!(
                (hot as f64) > want / 4.0 && (hot as f64) < want * 3.0 + 3.0,
                "{name}: {hot} hot rows of {}",
                rms.len()
            );
            let hot_rms = rms.iter().copied().fold(0f64, f64::max);
            assert!(
                (hot_rms / sigma / 20.0 - 1.0).abs() < 0.3,
                "{name}: {hot_rms}"
            );
        }
    }
}

/// A writer that fails once `limit` bytes have been written.
#[derive(Debug)]
struct FailAfter {
    written: usize,
    limit: usize,
}

impl std::io::Write for FailAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() > self.limit {
            return Err(std::io::Error::other("disk full (test)"));
        }
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_errors_are_reported_not_panics() {
    let cfg = tiny_placeholder(Recipe::Q2, 0);
    for limit in [10, 100_000, 5_000_000] {
        let e = synth_main_to(&cfg, FailAfter { written: 0, limit }).unwrap_err();
        assert!(e.to_string().contains("disk full (test)"), "{e}");
    }
}
