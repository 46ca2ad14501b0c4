//! Layout tables against the independent numbers of spec gguf-layout.md §0.1/§2.6
//! (tensor count, type census and byte totals that a third party measured on the
//! published files).

use ds4_gguf::layout::{
    expected_mtp_tensors, expected_tensors, total_data_bytes, type_census, AttnKind, Family,
    LayoutError, ModelConfig, Recipe,
};
use ds4_gguf::{GgmlType, Value, ValueType};

fn census(recipe: Recipe) -> Vec<(GgmlType, usize)> {
    type_census(&expected_tensors(&ModelConfig::published(), recipe))
}

#[test]
fn published_q2_directory_matches_census_and_size() {
    let specs = expected_tensors(&ModelConfig::published(), Recipe::Q2);
    assert_eq!(specs.len(), 1328);
    let mut c = census(Recipe::Q2);
    c.sort_by_key(|(t, _)| t.name());
    let mut want = vec![
        (GgmlType::Iq2Xxs, 86),
        (GgmlType::Q8_0, 345),
        (GgmlType::Q2K, 43),
        (GgmlType::F16, 359),
        (GgmlType::F32, 492),
        (GgmlType::I32, 3),
    ];
    want.sort_by_key(|(t, _)| t.name());
    assert_eq!(c, want);
    assert_eq!(total_data_bytes(&specs, 32), 86_714_777_664);
    let names: std::collections::HashSet<_> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), specs.len(), "tensor names are unique");
}

#[test]
fn published_q4_directory_size() {
    let specs = expected_tensors(&ModelConfig::published(), Recipe::Q4);
    assert_eq!(specs.len(), 1328);
    let c = census(Recipe::Q4);
    assert!(c.contains(&(GgmlType::Q4K, 129)));
    assert!(c.contains(&(GgmlType::F32, 492)));
    assert!(c.contains(&(GgmlType::F16, 359)));
    assert!(c.contains(&(GgmlType::Q8_0, 345)));
    assert_eq!(total_data_bytes(&specs, 32), 164_628_168_768);
}

#[test]
fn published_mtp_directory_size() {
    let specs = expected_mtp_tensors(&ModelConfig::published(), Recipe::Q4);
    assert_eq!(specs.len(), 32);
    assert_eq!(total_data_bytes(&specs, 32), 3_807_600_192);
    for s in &specs {
        assert!(s.name.starts_with("mtp.0."), "{}", s.name);
    }
    let plain = specs
        .iter()
        .filter(|s| matches!(s.family, Family::HcFn | Family::Router))
        .count();
    assert_eq!(plain, 4);
}

#[test]
fn published_layer_kinds_and_per_tensor_sizes() {
    let cfg = ModelConfig::published();
    let kinds: Vec<_> = (0..43).map(|l| cfg.layer_kind(l)).collect();
    assert_eq!(kinds.iter().filter(|k| k.attn == AttnKind::Swa).count(), 2);
    assert_eq!(kinds.iter().filter(|k| k.attn == AttnKind::Csa).count(), 21);
    assert_eq!(kinds.iter().filter(|k| k.attn == AttnKind::Hca).count(), 20);
    assert_eq!(kinds.iter().filter(|k| k.hash).count(), 3);
    let specs = expected_tensors(&cfg, Recipe::Q2);
    let by = |n: &str| specs.iter().find(|s| s.name == n).unwrap().clone();
    // spot checks from the byte columns of spec §2.2-2.5
    assert_eq!(by("token_embd.weight").n_bytes(), 1_059_061_760);
    assert_eq!(by("output.weight").n_bytes(), 562_626_560);
    assert_eq!(by("blk.0.ffn_gate_exps.weight").n_bytes(), 553_648_128);
    assert_eq!(by("blk.0.ffn_down_exps.weight").n_bytes(), 704_643_072);
    assert_eq!(by("blk.0.ffn_gate_tid2eid.weight").dims, vec![6, 129280]);
    assert_eq!(by("blk.3.attn_compressor_ape.weight").dims, vec![512, 128]);
    assert_eq!(by("blk.2.attn_compressor_ape.weight").n_bytes(), 8192);
    assert_eq!(by("blk.2.indexer.attn_q_b.weight").n_bytes(), 16_777_216);
    assert_eq!(by("blk.5.attn_output_a.weight").dims, vec![4096, 8192]);
    assert!(specs.iter().all(|s| s.name != "blk.2.exp_probs_b.bias"));
    assert!(specs.iter().any(|s| s.name == "blk.3.exp_probs_b.bias"));
    assert!(specs.iter().all(|s| s.name != "blk.3.indexer.proj.weight"));
}

#[test]
fn published_config_roundtrips_through_metadata() {
    let cfg = ModelConfig::published();
    assert!(cfg.consistency_errors().is_empty());
    assert!(cfg.published_mismatches().is_empty());
    let md = cfg.metadata_kvs();
    let back = ModelConfig::from_metadata(&md).unwrap();
    assert_eq!(back, cfg);
    // published key types
    let ty = |k: &str| md.iter().find(|(n, _)| n == k).unwrap().1.value_type();
    assert_eq!(ty("deepseek4.block_count"), ValueType::U32);
    assert_eq!(ty("deepseek4.rope.freq_base"), ValueType::F32);
    assert_eq!(ty("deepseek4.expert_weights_norm"), ValueType::Bool);
    let ratios = md
        .iter()
        .find(|(n, _)| n == "deepseek4.attention.compress_ratios")
        .unwrap();
    assert_eq!(ratios.1.as_array().unwrap().0, ValueType::I32);
    assert_eq!(ratios.1.as_array().unwrap().1.len(), 44);
}

fn replace(md: &mut [(String, Value)], key: &str, v: Value) {
    md.iter_mut().find(|(k, _)| k == key).unwrap().1 = v;
}

#[test]
fn strict_getters_name_key_and_types() {
    let base = ModelConfig::published().metadata_kvs();

    let mut md = base.clone();
    md.retain(|(k, _)| k != "deepseek4.attention.sliding_window");
    let e = ModelConfig::from_metadata(&md).unwrap_err();
    assert!(
        matches!(&e, LayoutError::MissingKey { key, .. } if key == "deepseek4.attention.sliding_window")
    );
    assert!(e.to_string().contains("UINT32"), "{e}");

    let mut md = base.clone();
    replace(&mut md, "deepseek4.expert_count", Value::I32(256));
    let e = ModelConfig::from_metadata(&md).unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key deepseek4.expert_count has type INT32, expected UINT32"
    );

    // u64 keys accept UINT32 and UINT64, floats accept F64/U32/I32, not strings
    let mut md = base.clone();
    replace(
        &mut md,
        "deepseek4.rope.scaling.original_context_length",
        Value::U64(65536),
    );
    replace(&mut md, "deepseek4.rope.freq_base", Value::I32(10000));
    replace(&mut md, "deepseek4.rope.scaling.factor", Value::F64(16.0));
    assert_eq!(
        ModelConfig::from_metadata(&md).unwrap(),
        ModelConfig::published()
    );
    replace(
        &mut md,
        "deepseek4.rope.scaling.factor",
        Value::String("16".into()),
    );
    let e = ModelConfig::from_metadata(&md).unwrap_err();
    assert!(matches!(&e, LayoutError::WrongType { key, found, .. }
        if key == "deepseek4.rope.scaling.factor" && found == "STRING"));

    let mut md = base.clone();
    replace(&mut md, "deepseek4.expert_weights_norm", Value::U8(1));
    assert!(matches!(ModelConfig::from_metadata(&md).unwrap_err(),
        LayoutError::WrongType { key, .. } if key == "deepseek4.expert_weights_norm"));

    let mut md = base.clone();
    replace(
        &mut md,
        "deepseek4.attention.compress_ratios",
        Value::i32_array(&[0, 0, 4, -1]),
    );
    let e = ModelConfig::from_metadata(&md).unwrap_err();
    assert!(e.to_string().contains("negative"), "{e}");

    let mut md = base.clone();
    replace(
        &mut md,
        "deepseek4.attention.compress_ratios",
        Value::u32_array(&[0; 42]),
    );
    let e = ModelConfig::from_metadata(&md).unwrap_err();
    assert!(e.to_string().contains("shorter than block_count=43"), "{e}");

    let mut md = base.clone();
    replace(
        &mut md,
        "deepseek4.swiglu_clamp_exp",
        Value::i32_array(&[10; 43]),
    );
    let e = ModelConfig::from_metadata(&md).unwrap_err();
    assert!(e.to_string().contains("ARRAY of INT32"), "{e}");

    let mut md = base.clone();
    replace(
        &mut md,
        "general.architecture",
        Value::String("llama".into()),
    );
    let e = ModelConfig::from_metadata(&md).unwrap_err();
    assert!(matches!(&e, LayoutError::Architecture { found, .. } if found == "llama"));

    let mut md = base;
    md.push(("deepseek4.expert_group_count".into(), Value::U32(8)));
    let e = ModelConfig::from_metadata(&md).unwrap_err();
    assert!(e.to_string().contains("expert_group_count"), "{e}");
}

#[test]
fn published_mismatches_use_ds4_wording() {
    let mut cfg = ModelConfig::published();
    cfg.sliding_window = 64;
    cfg.compress_ratios[5] = 4;
    let m = cfg.published_mismatches();
    assert!(m.contains(
        &"expected attention.sliding_window=128 for DeepSeek4 Flash, got 64".to_string()
    ));
    assert!(m.contains(
        &"unexpected DeepSeek4 compression ratio at layer 5: got 4, expected 128".to_string()
    ));
}

#[test]
fn schedule_rules_for_scaled_models() {
    let mut cfg = ModelConfig::published();
    cfg.n_layer = 6;
    cfg.compress_ratios = vec![0, 0, 4, 16, 4, 16];
    cfg.swiglu_clamp.truncate(6);
    assert!(
        cfg.consistency_errors().is_empty(),
        "{:?}",
        cfg.consistency_errors()
    );
    assert_eq!(cfg.layer_kind(3).attn, AttnKind::Hca);
    cfg.compress_ratios = vec![0, 4, 0, 128, 4, 16];
    let e = cfg.consistency_errors();
    assert!(
        e.iter()
            .any(|m| m.contains("layer 2") && m.contains("got 0")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("layer 5") && m.contains("got 16")),
        "{e:?}"
    );
}
