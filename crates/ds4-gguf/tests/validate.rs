//! Validator: valid synthetic files pass; each kind of corruption is reported by name
//! with expected vs found; published-shape files are classified (q2/q4/imatrix/mtp).

use ds4_gguf::layout::Recipe;
use ds4_gguf::synth::{
    main_writer, mtp_writer, plan_main, plan_mtp, synth_main_to, synth_mtp_to, SynthConfig,
    VocabSource,
};
use ds4_gguf::validate::{validate, ValidationReport, Variant};
use ds4_gguf::{GgmlType, GgufFile, GgufWriter, Value};

fn tiny(recipe: Recipe) -> SynthConfig {
    let mut c = SynthConfig::tiny();
    c.vocab = VocabSource::Placeholder(300);
    c.recipe = recipe;
    c.seed = 11;
    c
}

fn tiny_file(recipe: Recipe) -> GgufFile {
    GgufFile::from_bytes(synth_main_to(&tiny(recipe), Vec::new()).unwrap().0).unwrap()
}

struct T {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    data: Vec<u8>,
}

/// Re-write `f` after editing its metadata and tensors. A tensor whose type or dims
/// changed gets zero bytes of the new size.
fn rebuild(
    f: &GgufFile,
    edit_kv: impl FnOnce(&mut Vec<(String, Value)>),
    edit_t: impl FnOnce(&mut Vec<T>),
) -> GgufFile {
    let mut kvs = f.metadata().to_vec();
    edit_kv(&mut kvs);
    let mut ts: Vec<T> = f
        .tensors()
        .iter()
        .map(|t| T {
            name: t.name.clone(),
            ty: t.ggml_type.unwrap(),
            dims: t.dims.clone(),
            data: f.tensor_data(t).to_vec(),
        })
        .collect();
    edit_t(&mut ts);
    let mut w = GgufWriter::new();
    for (k, v) in kvs {
        w.add_kv(k, v);
    }
    for t in &ts {
        w.add_tensor(t.name.clone(), t.ty, &t.dims);
    }
    let mut s = w.begin(Vec::new()).unwrap();
    for t in &ts {
        let n = t.ty.bytes_for(t.dims.iter().product()).unwrap() as usize;
        if t.data.len() == n {
            s.write_data(&t.data).unwrap();
        } else {
            s.write_data(&vec![0u8; n]).unwrap();
        }
    }
    GgufFile::from_bytes(s.finish().unwrap()).unwrap()
}

fn set_kv(kvs: &mut [(String, Value)], key: &str, v: Value) {
    kvs.iter_mut().find(|(k, _)| k == key).unwrap().1 = v;
}

fn tensor<'a>(ts: &'a mut [T], name: &str) -> &'a mut T {
    ts.iter_mut().find(|t| t.name == name).unwrap()
}

fn has_error(r: &ValidationReport, parts: &[&str]) -> bool {
    r.errors.iter().any(|e| parts.iter().all(|p| e.contains(p)))
}

#[track_caller]
fn assert_error(r: &ValidationReport, parts: &[&str]) {
    assert!(
        has_error(r, parts),
        "no error containing {parts:?}; errors: {:#?}",
        r.errors
    );
    assert_eq!(r.variant, Variant::Unknown);
}

#[test]
fn valid_synthetic_files_pass() {
    for recipe in [Recipe::F32, Recipe::Q2, Recipe::Q4] {
        let r = validate(&tiny_file(recipe));
        assert!(r.is_ok(), "{recipe}: {:#?}", r.errors);
        assert_eq!(r.variant, Variant::Scaled);
        assert!(r.synthetic);
        assert!(!r.is_published_shape);
        assert_eq!(r.config.as_ref().unwrap().n_layer, 5);
    }
    // Q2/Q4 use exactly ds4's types: no warnings at all.
    assert!(validate(&tiny_file(Recipe::Q2)).warnings.is_empty());
    // F16 experts/projections are legal for a scaled model but ds4 would reject them.
    let r = validate(&tiny_file(Recipe::F16));
    assert!(r.is_ok(), "{:#?}", r.errors);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.contains("blk.0.attn_q_a.weight has type F16; ds4 expects Q8_0")));
}

#[test]
fn real_vocab_tiny_and_mtp_pass() {
    let mut cfg = SynthConfig::tiny();
    cfg.recipe = Recipe::Q4;
    let f = GgufFile::from_bytes(synth_main_to(&cfg, Vec::new()).unwrap().0).unwrap();
    let r = validate(&f);
    assert!(r.is_ok(), "{:#?}", r.errors);
    let m = GgufFile::from_bytes(synth_mtp_to(&cfg, Vec::new()).unwrap().0).unwrap();
    let r = validate(&m);
    assert!(r.is_ok(), "{:#?}", r.errors);
    assert_eq!(r.variant, Variant::Mtp);
}

#[test]
fn missing_key() {
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |kv| kv.retain(|(k, _)| k != "deepseek4.attention.sliding_window"),
        |_| {},
    );
    assert_error(
        &validate(&f),
        &["deepseek4.attention.sliding_window", "missing", "UINT32"],
    );
}

#[test]
fn wrong_key_type() {
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |kv| set_kv(kv, "deepseek4.expert_count", Value::I32(16)),
        |_| {},
    );
    assert_error(
        &validate(&f),
        &["deepseek4.expert_count has type INT32, expected UINT32"],
    );
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |kv| set_kv(kv, "tokenizer.ggml.tokens", Value::U32(3)),
        |_| {},
    );
    assert_error(
        &validate(&f),
        &["tokenizer.ggml.tokens has type UINT32, expected ARRAY of STRING"],
    );
}

#[test]
fn wrong_dims() {
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |_| {},
        |ts| tensor(ts, "blk.2.attn_kv.weight").dims = vec![256, 64],
    );
    assert_error(
        &validate(&f),
        &["tensor blk.2.attn_kv.weight has dim[1]=64, expected 128"],
    );
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |_| {},
        |ts| tensor(ts, "blk.0.attn_norm.weight").dims = vec![256, 1],
    );
    assert_error(
        &validate(&f),
        &["tensor blk.0.attn_norm.weight has 2 dimensions, expected 1"],
    );
}

#[test]
fn wrong_type() {
    let f = rebuild(
        &tiny_file(Recipe::Q2),
        |_| {},
        |ts| tensor(ts, "blk.0.attn_norm.weight").ty = GgmlType::F16,
    );
    assert_error(
        &validate(&f),
        &["tensor blk.0.attn_norm.weight has type F16, expected F32"],
    );
    let f = rebuild(
        &tiny_file(Recipe::Q2),
        |_| {},
        |ts| tensor(ts, "blk.3.ffn_up_exps.weight").ty = GgmlType::Q4K,
    );
    assert_error(
        &validate(&f),
        &[
            "routed gate/up experts use different quant types in layer 3",
            "IQ2_XXS",
            "Q4_K",
        ],
    );
    let f = rebuild(
        &tiny_file(Recipe::Q2),
        |_| {},
        |ts| tensor(ts, "blk.1.ffn_gate_tid2eid.weight").ty = GgmlType::F32,
    );
    assert_error(
        &validate(&f),
        &["tensor blk.1.ffn_gate_tid2eid.weight has type F32, expected I32"],
    );
}

#[test]
fn missing_tensor_and_routing_tensors() {
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |_| {},
        |ts| ts.retain(|t| t.name != "blk.3.attn_compressor_norm.weight"),
    );
    assert_error(
        &validate(&f),
        &["required tensor is missing: blk.3.attn_compressor_norm.weight"],
    );
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |_| {},
        |ts| ts.retain(|t| t.name != "blk.4.exp_probs_b.bias"),
    );
    assert_error(
        &validate(&f),
        &["required tensor is missing: blk.4.exp_probs_b.bias"],
    );
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |_| {},
        |ts| {
            ts.push(T {
                name: "blk.1.exp_probs_b.bias".into(),
                ty: GgmlType::F32,
                dims: vec![16],
                data: vec![0; 64],
            })
        },
    );
    assert_error(
        &validate(&f),
        &["blk.1.exp_probs_b.bias is present in hash layer 1"],
    );
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |_| {},
        |ts| {
            let t = tensor(ts, "blk.2.ffn_gate_tid2eid.weight");
            t.data[24 * 7..24 * 7 + 4].copy_from_slice(&16i32.to_le_bytes());
        },
    );
    assert_error(
        &validate(&f),
        &["blk.2.ffn_gate_tid2eid.weight row 7 holds expert id 16, expected a value in [0, 16)"],
    );
}

#[test]
fn extra_tensor_is_a_warning() {
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |_| {},
        |ts| {
            ts.push(T {
                name: "blk.0.something_new.weight".into(),
                ty: GgmlType::F32,
                dims: vec![4],
                data: vec![0; 16],
            })
        },
    );
    let r = validate(&f);
    assert!(r.is_ok(), "{:#?}", r.errors);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.contains("unexpected tensor blk.0.something_new.weight")));
}

#[test]
fn wrong_ratio_schedule() {
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |kv| {
            set_kv(
                kv,
                "deepseek4.attention.compress_ratios",
                Value::i32_array(&[0, 0, 4, 128, 0, 0]),
            )
        },
        |_| {},
    );
    let r = validate(&f);
    assert_error(
        &r,
        &[
            "compression ratio at layer 4",
            "got 0 after compressed layer 2",
        ],
    );
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |kv| {
            set_kv(
                kv,
                "deepseek4.attention.compress_ratios",
                Value::i32_array(&[0, 0, 4, 128]),
            )
        },
        |_| {},
    );
    assert_error(
        &validate(&f),
        &[
            "deepseek4.attention.compress_ratios",
            "shorter than block_count=5",
        ],
    );
}

#[test]
fn missing_special_token() {
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |kv| {
            let toks = kv
                .iter_mut()
                .find(|(k, _)| k == "tokenizer.ggml.tokens")
                .unwrap();
            if let Value::Array(_, items) = &mut toks.1 {
                for it in items.iter_mut() {
                    if it.as_str() == Some("</think>") {
                        *it = Value::String("</thonk>".into());
                    }
                }
            }
        },
        |_| {},
    );
    assert_error(
        &validate(&f),
        &["required tokenizer token is missing: </think>"],
    );
}

#[test]
fn foreign_architecture() {
    let f = rebuild(
        &tiny_file(Recipe::F32),
        |kv| set_kv(kv, "general.architecture", Value::String("llama".into())),
        |_| {},
    );
    let r = validate(&f);
    assert_error(&r, &["\"llama\"", "not a DeepSeek V4 Flash file"]);
    assert_eq!(r.errors.len(), 1);
}

/// A sparse file holding only the header of a full-shape file: every tensor's bytes
/// read as zeros, the file takes a few MB on disk.
fn sparse_file(w: &GgufWriter, data_bytes: u64, name: &str) -> GgufFile {
    let dir = std::env::temp_dir().join(format!("ds4-validate-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f.gguf");
    let header = w.header_bytes().unwrap();
    std::fs::write(&path, &header).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(header.len() as u64 + data_bytes).unwrap();
    drop(file);
    let f = GgufFile::open(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok(); // the mapping stays valid after unlink
    f
}

#[test]
fn published_shape_variants() {
    let mut q2 = SynthConfig::full();
    let stats = plan_main(&q2).unwrap();
    let f = sparse_file(&main_writer(&q2).unwrap(), stats.data_bytes, "q2");
    let r = validate(&f);
    assert!(r.is_ok(), "{:#?}", r.errors);
    assert!(r.is_published_shape);
    assert_eq!(r.variant, Variant::Q2);
    // zero tid2eid rows repeat expert 0: a warning, not an error
    assert!(r.warnings.iter().any(|w| w.contains("repeat an expert id")));

    let mut w = main_writer(&q2).unwrap();
    w.add_kv("quantize.imatrix.file", Value::String("x.dat".into()));
    w.add_kv("quantize.imatrix.entries_count", Value::U64(3));
    let f = sparse_file(&w, stats.data_bytes, "q2i");
    assert_eq!(validate(&f).variant, Variant::Q2Imatrix);

    q2.recipe = Recipe::Q4;
    let stats = plan_main(&q2).unwrap();
    let f = sparse_file(&main_writer(&q2).unwrap(), stats.data_bytes, "q4");
    let r = validate(&f);
    assert!(r.is_ok(), "{:#?}", r.errors);
    assert_eq!(r.variant, Variant::Q4);

    let stats = plan_mtp(&q2).unwrap();
    let f = sparse_file(&mtp_writer(&q2).unwrap(), stats.data_bytes, "mtp");
    let r = validate(&f);
    assert!(r.is_ok(), "{:#?}", r.errors);
    assert_eq!(r.variant, Variant::Mtp);
    assert!(r.is_published_shape);
}

#[test]
fn published_shape_is_strict() {
    // A 43-layer file with one published constant changed, and an F16 recipe (legal for a
    // scaled model, rejected by ds4 for the real shape).
    let mut cfg = SynthConfig::full();
    cfg.model.sliding_window = 64;
    let stats = plan_main(&cfg).unwrap();
    let f = sparse_file(&main_writer(&cfg).unwrap(), stats.data_bytes, "strict1");
    assert_error(
        &validate(&f),
        &["expected attention.sliding_window=128 for DeepSeek4 Flash, got 64"],
    );

    let mut cfg = SynthConfig::full();
    cfg.recipe = Recipe::F16;
    cfg.vocab = VocabSource::RealV4;
    let stats = plan_main(&cfg).unwrap();
    let f = sparse_file(&main_writer(&cfg).unwrap(), stats.data_bytes, "strict2");
    let r = validate(&f);
    assert_error(&r, &["tensor output.weight has type F16, expected Q8_0"]);
    assert!(has_error(
        &r,
        &["tensor blk.7.ffn_down_exps.weight has type F16, expected a routed expert quant type (IQ2_XXS, Q2_K or Q4_K)"]
    ));
}

/// The oracle configurations of model.md §9.3 (T1 structure-preserving, T2 fully shrunk
/// with window 8, HCA ratio 16, top-k 2) synthesize and pass the generic validator.
#[test]
fn model_md_oracle_configs() {
    let mut c = SynthConfig::tiny();
    c.vocab = VocabSource::Placeholder(512);
    c.recipe = Recipe::F32;
    for (k, v) in [
        ("n_embd", "64"),
        ("n_layer", "6"),
        ("compress_ratios", "0,0,4,128,4,128,0"),
        ("swiglu_clamp", "10,10,10,10,10,10"),
        ("n_head", "4"),
        ("head_dim", "128"),
        ("rope_dim", "64"),
        ("q_lora_rank", "32"),
        ("o_groups", "2"),
        ("o_lora_rank", "16"),
        ("n_expert", "8"),
        ("n_expert_used", "2"),
        ("expert_ffn", "32"),
        ("indexer_heads", "4"),
        ("indexer_head_dim", "128"),
        ("indexer_top_k", "4"),
        ("sliding_window", "128"),
    ] {
        c.model.set_field(k, v).unwrap();
    }
    let t1 = GgufFile::from_bytes(synth_main_to(&c, Vec::new()).unwrap().0).unwrap();
    let r = validate(&t1);
    assert!(r.is_ok(), "{:#?}", r.errors);
    assert_eq!(r.variant, Variant::Scaled);
    let m = r.config.unwrap();
    assert_eq!(
        (m.n_embd, m.n_layer, m.vocab_size, m.indexer_top_k),
        (64, 6, 512, 4)
    );
    assert_eq!(
        t1.tensor("blk.5.attn_compressor_ape.weight").unwrap().dims,
        vec![128, 128]
    );

    c.model.set_field("sliding_window", "8").unwrap();
    c.model
        .set_field("compress_ratios", "0,0,4,16,4,16,0")
        .unwrap();
    c.model.set_field("indexer_top_k", "2").unwrap();
    let t2 = GgufFile::from_bytes(synth_main_to(&c, Vec::new()).unwrap().0).unwrap();
    let r = validate(&t2);
    assert!(r.is_ok(), "{:#?}", r.errors);
    assert_eq!(
        t2.tensor("blk.3.attn_compressor_ape.weight").unwrap().dims,
        vec![128, 16]
    );
    let m = GgufFile::from_bytes(synth_mtp_to(&c, Vec::new()).unwrap().0).unwrap();
    assert_eq!(validate(&m).variant, Variant::Mtp);
}
