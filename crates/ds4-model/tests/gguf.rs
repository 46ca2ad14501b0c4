//! Loading synthetic GGUF files (ds4_gguf::synth): validation, zero-copy
//! binding, forward, MTP, dump_logits, foreign files.

use ds4_gguf::synth::{synth_main, synth_mtp, SynthConfig, VocabSource};
use ds4_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use ds4_model::{dump_logits, load, Cpu, GgufSource, Numerics, TensorSource, Want};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ds4-model-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn synth_tiny(dir: &Path, seed: u64) -> (PathBuf, PathBuf, SynthConfig) {
    let mut cfg = SynthConfig::tiny();
    cfg.vocab = VocabSource::Placeholder(300);
    cfg.seed = seed;
    let main = dir.join("tiny.gguf");
    let mtp = dir.join("tiny-mtp.gguf");
    synth_main(&cfg, &main).unwrap();
    synth_mtp(&cfg, &mtp).unwrap();
    (main, mtp, cfg)
}

fn ids(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 97 + 13) % vocab).collect()
}

#[test]
fn synthetic_gguf_binds_zero_copy_and_runs() {
    let dir = tmp("run");
    let (main, mtp, _) = synth_tiny(&dir, 7);
    // every tensor view lies inside the file's mmap
    let src = GgufSource::new(GgufFile::open(&main).unwrap());
    let file = src.file.bytes();
    let range = file.as_ptr() as usize..file.as_ptr() as usize + file.len();
    for t in src.file.tensors() {
        let v = src.tensor(&t.name).unwrap();
        assert!(
            range.contains(&(v.as_ptr() as usize)),
            "{} was copied",
            t.name
        );
    }
    let model = load(Cpu, &main, Some(&mtp)).unwrap();
    assert!(model.has_mtp());
    let vocab = model.cfg.vocab as u32;
    let toks = ids(70, vocab);
    for num in [Numerics::Exact, Numerics::Official] {
        let mut s = model.session(num);
        let whole = model.forward(&mut s, &toks, Want::All).unwrap();
        assert!(whole.iter().all(|v| v.is_finite()));
        // chunked prefill reproduces the whole pass bit for bit
        let mut s2 = model.session(num);
        let mut got = Vec::new();
        for c in toks.chunks(9) {
            got.extend(model.forward(&mut s2, c, Want::All).unwrap());
        }
        assert_eq!(got, whole, "{num:?}");
        // MTP block: draft from the last hidden state; deterministic, own window
        let h = s.last_hidden().unwrap().clone();
        let (l1, x1) = model.mtp_forward(&mut s, &h, toks[0]).unwrap();
        let (l2, _) = model.mtp_forward(&mut s, &x1, toks[1]).unwrap();
        assert_eq!(l1.len(), vocab as usize);
        assert!(l1.iter().chain(&l2).all(|v| v.is_finite()));
        let h2 = s2.last_hidden().unwrap().clone();
        let (l1b, _) = model.mtp_forward(&mut s2, &h2, toks[0]).unwrap();
        assert_eq!(l1, l1b);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dump_logits_writes_every_prefix() {
    let dir = tmp("dump");
    let (main, _, _) = synth_tiny(&dir, 3);
    let model = load(Cpu, &main, None).unwrap();
    let toks = ids(20, model.cfg.vocab as u32);
    let out = dir.join("logits.npy");
    dump_logits(&main, &toks, Numerics::Exact, &out).unwrap();
    let (shape, data) = ds4_model::npy::read_f32(&out).unwrap();
    assert_eq!(shape, vec![20, model.cfg.vocab]);
    let mut s = model.session(Numerics::Exact);
    for (t, &id) in toks.iter().enumerate() {
        let row = model.forward(&mut s, &[id], Want::Last).unwrap();
        assert_eq!(
            &data[t * model.cfg.vocab..(t + 1) * model.cfg.vocab],
            &row[..],
            "row {t}"
        );
    }
    assert!(dump_logits(&main, &[], Numerics::Exact, &out).is_err());
    let err = dump_logits(&main, &[model.cfg.vocab as u32], Numerics::Official, &out).unwrap_err();
    assert!(
        format!("{err:#}").contains("outside the vocabulary"),
        "{err:#}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn foreign_or_broken_gguf_fails_at_load_with_the_validator_message() {
    let dir = tmp("foreign");
    // a valid GGUF container of another architecture
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    w.add_kv("llama.block_count", Value::U32(1));
    w.add_tensor("token_embd.weight", GgmlType::F32, &[4, 4]);
    let p = dir.join("llama.gguf");
    ds4_gguf::write_file(&p, &w, &[&[0u8; 64]]).unwrap();
    let err = format!("{:#}", load(Cpu, &p, None).err().unwrap());
    assert!(
        err.contains("not a loadable DeepSeek V4 Flash model"),
        "{err}"
    );
    assert!(
        err.contains("llama"),
        "the validator's message names the architecture: {err}"
    );
    // not a GGUF at all
    let q = dir.join("junk.gguf");
    std::fs::write(&q, vec![0x42u8; 4096]).unwrap();
    assert!(load(Cpu, &q, None).is_err());
    // missing file
    let err = format!(
        "{:#}",
        load(Cpu, &dir.join("absent.gguf"), None).err().unwrap()
    );
    assert!(err.contains("absent.gguf"), "{err}");
    // an MTP file is not a main model, and a main model is not an MTP file
    let (main, mtp, _) = synth_tiny(&dir, 1);
    assert!(load(Cpu, &mtp, None).is_err());
    let err = format!("{:#}", load(Cpu, &main, Some(&main)).err().unwrap());
    assert!(err.contains("MTP"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every tensor of a GGUF decoded to f32 by ds4-quant (the independent expectation
/// for the CPU backend's direct use of the stored blocks).
fn dequantized_copy(src: &GgufSource) -> ds4_model::MemSource {
    let mut m = ds4_model::MemSource::new();
    for t in src.file.tensors() {
        let v = src.tensor(&t.name).unwrap();
        if v.ty == GgmlType::I32 {
            let ids: Vec<i32> = v
                .bytes()
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            m.insert_i32(&t.name, v.dims.clone(), &ids).unwrap();
        } else {
            let mut out = vec![0f32; v.n_elems()];
            let rb = v.row_bytes();
            for (r, o) in out.chunks_mut(v.row_len()).enumerate() {
                ds4_quant::dequantize_row(v.ty, &v.bytes()[r * rb..(r + 1) * rb], o).unwrap();
            }
            m.insert_f32(&t.name, v.dims.clone(), out).unwrap();
        }
    }
    m
}

#[test]
fn quantized_recipes_match_their_dequantized_weights() {
    use ds4_gguf::layout::Recipe;
    let dir = tmp("quant");
    for recipe in [Recipe::Q2, Recipe::Q4, Recipe::F16] {
        let mut cfg = SynthConfig::tiny();
        cfg.vocab = VocabSource::Placeholder(300);
        cfg.recipe = recipe;
        cfg.seed = 21;
        let path = dir.join(format!("tiny-{}.gguf", recipe.name()));
        synth_main(&cfg, &path).unwrap();
        let model = load(Cpu, &path, None).unwrap();
        let src = GgufSource::new(GgufFile::open(&path).unwrap());
        let reference =
            ds4_model::Model::bind(Cpu, model.cfg.clone(), &dequantized_copy(&src), None).unwrap();
        let toks = ids(40, model.cfg.vocab as u32);
        let mut s = model.session(Numerics::Exact);
        let got = model.forward(&mut s, &toks, Want::All).unwrap();
        let mut s2 = reference.session(Numerics::Exact);
        let want = reference.forward(&mut s2, &toks, Want::All).unwrap();
        let max = want.iter().fold(0f32, |a, &b| a.max(b.abs()));
        let d = want
            .iter()
            .zip(&got)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        eprintln!(
            "{}: direct block dots vs dequantized f32: max|Δ|/max|logit| = {:e}",
            recipe.name(),
            d / max
        );
        assert!(d / max < 1e-4, "{}: {}", recipe.name(), d / max);
        // decode reproduces the batched pass bit for bit
        let mut s3 = model.session(Numerics::Exact);
        for (t, &id) in toks.iter().enumerate() {
            let row = model.forward(&mut s3, &[id], Want::Last).unwrap();
            assert_eq!(
                &row[..],
                &got[t * model.cfg.vocab..(t + 1) * model.cfg.vocab],
                "{} decode {t}",
                recipe.name()
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
