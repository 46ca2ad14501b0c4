//! synth → export (official names) → convert → the same GGUF tensors, byte for byte;
//! and the real DeepSeek V4 vocabulary through tokenizer.json and back.

use std::path::PathBuf;

use ds4_gguf::convert::tokenizer::{self, VocabSource};
use ds4_gguf::convert::{
    convert, export_official_checkpoint, export_official_checkpoint_with, ConvertOptions,
    ExportOptions,
};
use ds4_gguf::layout::{ModelConfig, Recipe};
use ds4_gguf::synth::{synth_main, synth_mtp, SynthConfig, VocabSource as SynthVocab};
use ds4_gguf::{GgufFile, Value};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ds4-convert-rt-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn assert_same_tensors(a: &GgufFile, b: &GgufFile) {
    assert_eq!(a.tensors().len(), b.tensors().len());
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.dims, y.dims, "{}", x.name);
        assert_eq!(x.ggml_type, y.ggml_type, "{}", x.name);
        assert!(
            a.tensor_data(x) == b.tensor_data(y),
            "{}: bytes differ",
            x.name
        );
    }
}

fn key<'a>(f: &'a GgufFile, k: &str) -> &'a Value {
    f.get(k).unwrap_or_else(|| panic!("key {k} missing"))
}

#[test]
fn synth_export_convert_is_byte_identical() {
    let dir = tmpdir("synth");
    let mut cfg = SynthConfig::tiny();
    cfg.vocab = SynthVocab::Placeholder(300);
    cfg.recipe = Recipe::F32;
    cfg.seed = 11;
    let main = dir.join("synth.gguf");
    let mtp = dir.join("synth-mtp.gguf");
    synth_main(&cfg, &main).unwrap();
    synth_mtp(&cfg, &mtp).unwrap();
    let main_f = GgufFile::open(&main).unwrap();
    let mtp_f = GgufFile::open(&mtp).unwrap();

    // Export with small shards so the index path is used.
    let hf = dir.join("hf");
    export_official_checkpoint_with(
        &main_f,
        Some(&mtp_f),
        &hf,
        &ExportOptions {
            max_shard_bytes: 8 << 20,
        },
    )
    .unwrap();
    assert!(hf.join("model.safetensors.index.json").exists());

    let out = dir.join("conv.gguf");
    let out_mtp = dir.join("conv-mtp.gguf");
    let mut opts = ConvertOptions::new(&hf, &out, Recipe::F32);
    opts.mtp_out = Some(out_mtp.clone());
    opts.threads = 2;
    let rep = convert(&opts, &mut |_: &str| {}).unwrap();
    // A tokenizer.json exported from a 300-token vocabulary has exactly 300 ids: the
    // real-tokenizer path, not the placeholder one.
    assert_eq!(rep.vocab, VocabSource::Tokenizer);
    assert_eq!(rep.mtp_tensors, 32);

    let conv = GgufFile::open(&out).unwrap();
    let conv_mtp = GgufFile::open(&out_mtp).unwrap();
    assert_same_tensors(&main_f, &conv);
    assert_same_tensors(&mtp_f, &conv_mtp);

    // Model keys and tokenizer.
    let a = ModelConfig::from_gguf(&main_f).unwrap();
    let mut b = ModelConfig::from_gguf(&conv).unwrap();
    b.swiglu_clamp.resize(a.swiglu_clamp.len(), 10.0);
    assert_eq!(a, b);
    for k in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
    ] {
        assert_eq!(key(&main_f, k), key(&conv, k), "{k}");
    }
    let v = ds4_gguf::validate::validate(&conv);
    assert!(v.is_ok(), "{:?}", v.errors);
    let v = ds4_gguf::validate::validate(&conv_mtp);
    assert!(v.is_ok(), "{:?}", v.errors);

    // The plain single-file export of the main model converts to the same bytes as well.
    let hf1 = dir.join("hf1");
    export_official_checkpoint(&main_f, &hf1).unwrap();
    assert!(hf1.join("model.safetensors").exists());
    let out1 = dir.join("conv1.gguf");
    let mut o1 = ConvertOptions::new(&hf1, &out1, Recipe::F32);
    o1.threads = 2;
    convert(&o1, &mut |_: &str| {}).unwrap();
    assert_same_tensors(&main_f, &GgufFile::open(&out1).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn real_v4_vocabulary_survives_tokenizer_json() {
    // The embedded DeepSeek V4 vocabulary (from the published tokenizer.json, token types
    // as llama.cpp writes them) → tokenizer.json → the converter's vocabulary.
    let d = ds4_tokenizer::TokenizerData::embedded_v4();
    let v = tokenizer::Vocab {
        tokens: d.tokens.clone(),
        token_types: d.token_types.clone(),
        merges: d.merges.clone(),
        bos: d.bos_id,
        eos: d.eos_id,
        pad: d.pad_id,
        add_bos: false,
        add_eos: false,
        chat_template: None,
        source: VocabSource::Tokenizer,
    };
    let tj = tokenizer::tokenizer_json(&v).to_string();
    let tc = tokenizer::tokenizer_config_json(&v).to_string();
    let back = tokenizer::build_vocab(&tj, Some(&tc), 129_280, Some(0), Some(1)).unwrap();
    assert_eq!(back.source, VocabSource::Tokenizer);
    assert_eq!(back.tokens, d.tokens);
    assert_eq!(back.merges, d.merges);
    assert_eq!(
        (back.bos, back.eos, back.pad),
        (d.bos_id, d.eos_id, d.pad_id)
    );
    // Token types as llama.cpp's converter classifies them (special or `<｜…｜>` added
    // tokens CONTROL, other added tokens USER_DEFINED, the rest NORMAL). (Also checked
    // by hand against DeepSeek's original tokenizer.json: identical tokens, merges, types.)
    assert_eq!(back.token_types, d.token_types);
    // A model smaller than the tokenizer gets the placeholder vocabulary.
    let small = tokenizer::build_vocab(&tj, Some(&tc), 400, None, None).unwrap();
    assert_eq!(small.source, VocabSource::Placeholder);
    assert_eq!(small.tokens.len(), 400);
    assert!(small.merges.is_empty());
    let e = tokenizer::build_vocab(&tj, Some(&tc), 200, None, None).unwrap_err();
    assert!(e.to_string().contains("too small"), "{e}");
}

#[test]
fn quantized_synth_exports_dequantized_values() {
    // A q4 synthetic file exported to official names carries the dequantized values;
    // converting that with recipe f32 gives exactly ds4_quant's dequantization.
    let dir = tmpdir("q4");
    let mut cfg = SynthConfig::tiny();
    cfg.vocab = SynthVocab::Placeholder(300);
    cfg.recipe = Recipe::Q4;
    cfg.seed = 5;
    let main = dir.join("q4.gguf");
    synth_main(&cfg, &main).unwrap();
    let q = GgufFile::open(&main).unwrap();
    export_official_checkpoint(&q, &dir.join("hf")).unwrap();
    let out = dir.join("f32.gguf");
    let mut opts = ConvertOptions::new(dir.join("hf"), &out, Recipe::F32);
    opts.threads = 2;
    convert(&opts, &mut |_: &str| {}).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.tensors().len(), q.tensors().len());
    for (a, b) in q.tensors().iter().zip(f.tensors()) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.dims, b.dims);
        let ty = a.ggml_type.unwrap();
        let got = f.tensor_data(b);
        if ty == ds4_gguf::GgmlType::I32 {
            assert_eq!(got, q.tensor_data(a), "{}", a.name);
            continue;
        }
        let ncol = a.dims[0] as usize;
        let rb = ds4_quant::row_bytes(ty, ncol);
        let mut row = vec![0f32; ncol];
        for (i, (src, dst)) in q
            .tensor_data(a)
            .chunks(rb)
            .zip(got.chunks(4 * ncol))
            .enumerate()
        {
            ds4_quant::dequantize_row(ty, src, &mut row).unwrap();
            let want: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert!(dst == want.as_slice(), "{} row {i}", a.name);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
