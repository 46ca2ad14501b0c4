//! HF checkpoint → GGUF conversion: element decoders against formulas computed here in
//! f64, a tiny official-name checkpoint written by this test (its own safetensors
//! writer and its own name table, both from the spec text) converted and compared with
//! independently dequantized values, quantized recipes against the quantizer, and bad
//! inputs rejected with errors naming the tensor/key.

#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ds4_gguf::convert::dequant::{e2m1_to_f32, e4m3_to_f32, e8m0_to_f32};
use ds4_gguf::convert::tokenizer::{byte_to_char, VocabSource};
use ds4_gguf::convert::{convert, ConvertError, ConvertOptions};
use ds4_gguf::layout::{expected_mtp_tensors, expected_tensors, Family, ModelConfig, Recipe};
use ds4_gguf::{GgmlType, GgufFile, Value};
use serde_json::json;

// ---------------------------------------------------------------------------------------
// Reference decoders (spec §4.3), f64.
// ---------------------------------------------------------------------------------------

fn e4m3_ref(x: u8) -> f64 {
    let sign = if x & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = ((x >> 3) & 0xF) as i32;
    let m = (x & 7) as f64;
    if x & 0x7F == 0x7F {
        return 0.0; // NaN → 0.0 as the reference converter does
    }
    let mag = if e == 0 {
        m * 2f64.powi(-9)
    } else {
        (1.0 + m / 8.0) * 2f64.powi(e - 7)
    };
    sign * mag
}

fn e8m0_ref(e: u8) -> f64 {
    if e == 0 {
        2f64.powi(-127)
    } else {
        2f64.powi(e as i32 - 127)
    }
}

fn e2m1_ref(n: u8) -> f64 {
    let sign = if n & 8 != 0 { -1.0 } else { 1.0 };
    let e = ((n >> 1) & 3) as i32;
    let m = (n & 1) as f64;
    let mag = if e == 0 {
        m * 0.5
    } else {
        (1.0 + m / 2.0) * 2f64.powi(e - 1)
    };
    sign * mag
}

#[test]
fn e4m3_all_256_codes() {
    for x in 0..=255u8 {
        let want = e4m3_ref(x) as f32;
        let got = e4m3_to_f32(x);
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "code {x:#04x}: {got} vs {want}"
        );
    }
    // Spot values from the format definition.
    assert_eq!(e4m3_to_f32(0x7E), 448.0);
    assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
    assert_eq!(e4m3_to_f32(0x38), 1.0);
    assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
}

#[test]
fn e8m0_all_256_codes() {
    for e in 0..=255u8 {
        let want = e8m0_ref(e) as f32; // 2^128 rounds to +inf in f32, as bits 0x7F800000
        let got = e8m0_to_f32(e);
        assert_eq!(got.to_bits(), want.to_bits(), "code {e}: {got} vs {want}");
    }
    assert_eq!(e8m0_to_f32(127), 1.0);
    assert_eq!(e8m0_to_f32(0).to_bits(), 0x0040_0000);
}

#[test]
fn e2m1_all_16_codes() {
    for n in 0..16u8 {
        let want = e2m1_ref(n) as f32;
        assert_eq!(e2m1_to_f32(n).to_bits(), want.to_bits(), "nibble {n}");
    }
    assert_eq!(e2m1_to_f32(7), 6.0);
    assert_eq!(e2m1_to_f32(15), -6.0);
}

// ---------------------------------------------------------------------------------------
// Test-side safetensors writer and random numbers.
// ---------------------------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[derive(Clone)]
struct StTensor {
    dtype: &'static str,
    shape: Vec<u64>,
    bytes: Vec<u8>,
}

fn write_st(path: &Path, tensors: &[(String, StTensor)]) {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, t) in tensors {
        header.insert(
            name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + t.bytes.len()]}),
        );
        off += t.bytes.len();
    }
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for (_, t) in tensors {
        out.extend_from_slice(&t.bytes);
    }
    std::fs::write(path, out).unwrap();
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ds4-convert-test-{}-{}-{tag}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------------------------------
// The tiny model and its official-name checkpoint.
// ---------------------------------------------------------------------------------------

/// Tiny dims where every FP8 matrix has both dims divisible by 128 and every expert
/// matrix a multiple of 256 columns (spec §7.3).
fn tiny_model_sized(vocab: u32, layers: u32, experts: u32) -> ModelConfig {
    let mut m = ModelConfig::published();
    m.n_embd = 256;
    m.n_layer = layers;
    m.vocab_size = vocab;
    m.n_head = 8;
    m.head_dim = 128;
    m.value_length = 128;
    m.rope_dim = 64;
    m.q_lora_rank = 128;
    m.o_groups = 2;
    m.o_lora_rank = 64;
    m.n_expert = experts;
    m.n_expert_used = 6;
    m.expert_ffn = 256;
    m.indexer_heads = 4;
    m.indexer_head_dim = 128;
    m.indexer_top_k = 8;
    m.sliding_window = 16;
    m.compress_ratios = [0, 0, 4, 128, 4][..layers as usize].to_vec();
    m.compress_ratios.push(0);
    m.swiglu_clamp = vec![10.0; layers as usize];
    m.context_length = Some(1_048_576);
    m
}

/// config.json in DeepSeek's official spelling, written from the spec's §4.5 table.
fn official_config(m: &ModelConfig) -> serde_json::Value {
    json!({
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        "vocab_size": m.vocab_size,
        "hidden_size": m.n_embd,
        "num_hidden_layers": m.n_layer,
        "num_attention_heads": m.n_head,
        "num_key_value_heads": 1,
        "head_dim": m.head_dim,
        "qk_rope_head_dim": m.rope_dim,
        "q_lora_rank": m.q_lora_rank,
        "o_lora_rank": m.o_lora_rank,
        "o_groups": m.o_groups,
        "n_routed_experts": m.n_expert,
        "num_experts_per_tok": m.n_expert_used,
        "moe_intermediate_size": m.expert_ffn,
        "n_shared_experts": 1,
        "num_hash_layers": m.n_hash_layers,
        "sliding_window": m.sliding_window,
        "index_n_heads": m.indexer_heads,
        "index_head_dim": m.indexer_head_dim,
        "index_topk": m.indexer_top_k,
        "hc_mult": m.hc_count,
        "hc_sinkhorn_iters": 20,
        "hc_eps": 1e-6,
        "rope_theta": 10000.0,
        "compress_rope_theta": 160000.0,
        "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                         "beta_fast": 32, "beta_slow": 1},
        "routed_scaling_factor": 1.5,
        "rms_norm_eps": 1e-6,
        "norm_topk_prob": true,
        "scoring_func": "sqrtsoftplus",
        "swiglu_limit": 10.0,
        "compress_ratios": m.compress_ratios,
        "max_position_embeddings": 1048576,
        "num_nextn_predict_layers": 1,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]},
    })
}

/// Official HF name of a GGUF tensor (spec §4.1/§4.2 tables, written out here).
fn hf_name(gguf: &str) -> String {
    let top = [
        ("token_embd.weight", "embed.weight"),
        ("output_norm.weight", "norm.weight"),
        ("output.weight", "head.weight"),
        ("output_hc_base.weight", "hc_head_base"),
        ("output_hc_fn.weight", "hc_head_fn"),
        ("output_hc_scale.weight", "hc_head_scale"),
    ];
    if let Some((_, h)) = top.iter().find(|(g, _)| *g == gguf) {
        return h.to_string();
    }
    let (prefix, suffix) = if let Some(r) = gguf.strip_prefix("blk.") {
        let (l, s) = r.split_once('.').unwrap();
        (format!("layers.{l}."), s)
    } else {
        ("mtp.0.".to_string(), gguf.strip_prefix("mtp.0.").unwrap())
    };
    let hf = match suffix {
        "hc_attn_fn.weight" => "hc_attn_fn",
        "hc_attn_scale.weight" => "hc_attn_scale",
        "hc_attn_base.weight" => "hc_attn_base",
        "hc_ffn_fn.weight" => "hc_ffn_fn",
        "hc_ffn_scale.weight" => "hc_ffn_scale",
        "hc_ffn_base.weight" => "hc_ffn_base",
        "attn_norm.weight" => "attn_norm.weight",
        "ffn_norm.weight" => "ffn_norm.weight",
        "attn_sinks.weight" => "attn.attn_sink",
        "attn_q_a.weight" => "attn.wq_a.weight",
        "attn_q_a_norm.weight" => "attn.q_norm.weight",
        "attn_q_b.weight" => "attn.wq_b.weight",
        "attn_kv.weight" => "attn.wkv.weight",
        "attn_kv_a_norm.weight" => "attn.kv_norm.weight",
        "attn_output_a.weight" => "attn.wo_a.weight",
        "attn_output_b.weight" => "attn.wo_b.weight",
        "attn_compressor_ape.weight" => "attn.compressor.ape",
        "attn_compressor_kv.weight" => "attn.compressor.wkv.weight",
        "attn_compressor_gate.weight" => "attn.compressor.wgate.weight",
        "attn_compressor_norm.weight" => "attn.compressor.norm.weight",
        "indexer.attn_q_b.weight" => "attn.indexer.wq_b.weight",
        "indexer.proj.weight" => "attn.indexer.weights_proj.weight",
        "indexer_compressor_ape.weight" => "attn.indexer.compressor.ape",
        "indexer_compressor_kv.weight" => "attn.indexer.compressor.wkv.weight",
        "indexer_compressor_gate.weight" => "attn.indexer.compressor.wgate.weight",
        "indexer_compressor_norm.weight" => "attn.indexer.compressor.norm.weight",
        "ffn_gate_inp.weight" => "ffn.gate.weight",
        "exp_probs_b.bias" => "ffn.gate.bias",
        "ffn_gate_tid2eid.weight" => "ffn.gate.tid2eid",
        "ffn_gate_shexp.weight" => "ffn.shared_experts.w1.weight",
        "ffn_up_shexp.weight" => "ffn.shared_experts.w3.weight",
        "ffn_down_shexp.weight" => "ffn.shared_experts.w2.weight",
        "ffn_gate_exps.weight" => "ffn.experts.{E}.w1.weight",
        "ffn_up_exps.weight" => "ffn.experts.{E}.w3.weight",
        "ffn_down_exps.weight" => "ffn.experts.{E}.w2.weight",
        "e_proj.weight" => "e_proj.weight",
        "h_proj.weight" => "h_proj.weight",
        "enorm.weight" => "enorm.weight",
        "hnorm.weight" => "hnorm.weight",
        "norm.weight" => "norm.weight",
        "hc_head_fn.weight" => "hc_head_fn",
        "hc_head_base.weight" => "hc_head_base",
        "hc_head_scale.weight" => "hc_head_scale",
        other => panic!("test table lacks {other}"),
    };
    format!("{prefix}{hf}")
}

/// The checkpoint written for a test plus the f32 values every GGUF tensor must hold.
struct Fixture {
    dir: PathBuf,
    model: ModelConfig,
    /// GGUF name → expected values (f32 bits compared; I32 for tid2eid as f32-cast ints).
    expect: BTreeMap<String, Vec<f32>>,
    tid2eid: BTreeMap<String, Vec<i32>>,
    /// HF tensors by name (for mutation tests).
    hf: Vec<(String, StTensor)>,
}

fn fp8_tensor(rng: &mut Rng, rows: u64, cols: u64) -> (StTensor, StTensor, Vec<f32>) {
    let (br, bc) = (128u64, 128u64);
    let mut codes = Vec::with_capacity((rows * cols) as usize);
    for _ in 0..rows * cols {
        let mut c = (rng.next() & 0xFF) as u8;
        if c & 0x7F == 0x7F {
            c ^= 1; // avoid NaN codes
        }
        codes.push(c);
    }
    let scales: Vec<u8> = (0..(rows / br) * (cols / bc))
        .map(|_| 120 + (rng.next() % 11) as u8)
        .collect();
    let mut vals = Vec::with_capacity(codes.len());
    for r in 0..rows {
        for c in 0..cols {
            let s = scales[((r / br) * (cols / bc) + c / bc) as usize];
            vals.push((e4m3_ref(codes[(r * cols + c) as usize]) * e8m0_ref(s)) as f32);
        }
    }
    (
        StTensor {
            dtype: "F8_E4M3",
            shape: vec![rows, cols],
            bytes: codes,
        },
        StTensor {
            dtype: "F8_E8M0",
            shape: vec![rows / br, cols / bc],
            bytes: scales,
        },
        vals,
    )
}

fn fp4_tensor(rng: &mut Rng, rows: u64, cols: u64) -> (StTensor, StTensor, Vec<f32>) {
    let packed: Vec<u8> = (0..rows * cols / 2)
        .map(|_| (rng.next() & 0xFF) as u8)
        .collect();
    let scales: Vec<u8> = (0..rows * cols / 32)
        .map(|_| 120 + (rng.next() % 11) as u8)
        .collect();
    let mut vals = Vec::with_capacity((rows * cols) as usize);
    for r in 0..rows {
        for c in 0..cols {
            let b = packed[(r * cols / 2 + c / 2) as usize];
            let nib = if c % 2 == 0 { b & 0xF } else { b >> 4 };
            let s = scales[(r * (cols / 32) + c / 32) as usize];
            vals.push((e2m1_ref(nib) * e8m0_ref(s)) as f32);
        }
    }
    (
        StTensor {
            dtype: "I8",
            shape: vec![rows, cols / 2],
            bytes: packed,
        },
        StTensor {
            dtype: "F8_E8M0",
            shape: vec![rows, cols / 32],
            bytes: scales,
        },
        vals,
    )
}

fn float_tensor(rng: &mut Rng, shape: Vec<u64>, dtype: &'static str) -> (StTensor, Vec<f32>) {
    let n: u64 = shape.iter().product();
    let mut bytes = Vec::new();
    let mut vals = Vec::new();
    for _ in 0..n {
        let x = rng.unit() * 2.0;
        match dtype {
            "F32" => {
                bytes.extend_from_slice(&x.to_le_bytes());
                vals.push(x);
            }
            "BF16" => {
                let b = (x.to_bits() >> 16) as u16;
                bytes.extend_from_slice(&b.to_le_bytes());
                vals.push(f32::from_bits((b as u32) << 16));
            }
            "F16" => {
                // Exactly representable in F16: a multiple of 2^-10 in [-2, 2].
                let q = (x * 1024.0).round() / 1024.0;
                let h = half_bits(q);
                bytes.extend_from_slice(&h.to_le_bytes());
                vals.push(q);
            }
            _ => unreachable!(),
        }
    }
    (
        StTensor {
            dtype,
            shape,
            bytes,
        },
        vals,
    )
}

/// IEEE half bits of a value that is exactly representable (normal or zero).
fn half_bits(x: f32) -> u16 {
    if x == 0.0 {
        return if x.is_sign_negative() { 0x8000 } else { 0 };
    }
    let sign = if x < 0.0 { 0x8000u16 } else { 0 };
    let a = x.abs() as f64;
    let e = a.log2().floor() as i32;
    if e < -14 {
        // subnormal: a = m · 2^-24
        return sign | (a / 2f64.powi(-24)).round() as u16;
    }
    let m = ((a / 2f64.powi(e) - 1.0) * 1024.0).round() as u16;
    sign | (((e + 15) as u16) << 10) | m
}

/// A BPE tokenizer.json with 256 byte tokens, a few merged tokens and the 7 special
/// strings as added tokens, `size` ids in total (holes left at the end for padding).
fn tokenizer_json(size_ids: u32) -> (serde_json::Value, Vec<String>) {
    let mut vocab = serde_json::Map::new();
    let mut tokens: Vec<String> = Vec::new();
    for b in 0..=255u8 {
        let s = byte_to_char(b).to_string();
        vocab.insert(s.clone(), json!(tokens.len()));
        tokens.push(s);
    }
    for m in ["Ġt", "he", "Ġthe", "in"] {
        vocab.insert(m.to_string(), json!(tokens.len()));
        tokens.push(m.to_string());
    }
    let specials = [
        ("<｜begin▁of▁sentence｜>", true),
        ("<｜end▁of▁sentence｜>", true),
        ("<｜User｜>", false),
        ("<｜Assistant｜>", false),
        ("<think>", false),
        ("</think>", false),
        ("｜DSML｜", false),
    ];
    let mut added = Vec::new();
    // Specials go at the top of the id range (as in DeepSeek's file, after a hole).
    let first = size_ids - specials.len() as u32;
    while tokens.len() < first as usize {
        tokens.push(format!("[PAD{}]", tokens.len()));
    }
    for (i, (s, special)) in specials.iter().enumerate() {
        added.push(
            json!({"id": first + i as u32, "content": s, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": !special, "special": special}),
        );
        tokens.push(s.to_string());
    }
    let t = json!({
        "version": "1.0",
        "added_tokens": added,
        "model": {"type": "BPE", "vocab": vocab,
                  // both merge spellings of the tokenizers library
                  "merges": ["Ġ t", ["h", "e"], "Ġt he", "i n"]},
    });
    (t, tokens)
}

struct FixtureOpts {
    layers: u32,
    experts: u32,
    vocab: u32,
    tokenizer_ids: u32,
    mtp: bool,
    shards: bool,
}

fn build_fixture(tag: &str, o: &FixtureOpts) -> Fixture {
    let dir = tmpdir(tag);
    let model = tiny_model_sized(o.vocab, o.layers, o.experts);
    let mut rng = Rng(0x5eed ^ o.vocab as u64);
    let mut specs = expected_tensors(&model, Recipe::F32);
    if o.mtp {
        specs.extend(expected_mtp_tensors(&model, Recipe::F32));
    }
    let mut hf: Vec<(String, StTensor)> = Vec::new();
    let mut expect = BTreeMap::new();
    let mut tid2eid = BTreeMap::new();
    for s in &specs {
        let shape: Vec<u64> = s.dims.iter().rev().copied().collect();
        let name = hf_name(&s.name);
        let fp8 = matches!(s.family, Family::AttnProj | Family::SharedExpert)
            || s.name.ends_with("indexer.attn_q_b.weight");
        if s.family.is_routed_expert() {
            let mut all = Vec::new();
            for e in 0..s.dims[2] {
                let (w, sc, v) = fp4_tensor(&mut rng, s.dims[1], s.dims[0]);
                let wn = name.replace("{E}", &e.to_string());
                hf.push((wn.replace(".weight", ".scale"), sc));
                hf.push((wn, w));
                all.extend(v);
            }
            expect.insert(s.name.clone(), all);
        } else if fp8 {
            let (w, sc, v) = fp8_tensor(&mut rng, shape[0], shape[1]);
            hf.push((name.replace(".weight", ".scale"), sc));
            hf.push((name, w));
            expect.insert(s.name.clone(), v);
        } else if s.family == Family::Tid2Eid {
            let n = (shape[0] * shape[1]) as usize;
            let ids: Vec<i32> = (0..n)
                .map(|_| (rng.next() % model.n_expert as u64) as i32)
                .collect();
            let mut bytes = Vec::new();
            for &i in &ids {
                bytes.extend_from_slice(&(i as i64).to_le_bytes());
            }
            hf.push((
                name,
                StTensor {
                    dtype: "I64",
                    shape,
                    bytes,
                },
            ));
            tid2eid.insert(s.name.clone(), ids);
        } else {
            let dtype = match s.family {
                Family::Norm | Family::AuxProj | Family::Router | Family::Output => "BF16",
                Family::TokenEmbd => "F16",
                _ => "F32",
            };
            let (t, v) = float_tensor(&mut rng, shape, dtype);
            hf.push((name, t));
            expect.insert(s.name.clone(), v);
        }
    }
    write_checkpoint(&dir, &hf, o.shards);
    std::fs::write(dir.join("config.json"), official_config(&model).to_string()).unwrap();
    let (tok, _) = tokenizer_json(o.tokenizer_ids);
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"add_bos_token": false, "add_eos_token": false,
               "bos_token": {"content": "<｜begin▁of▁sentence｜>"},
               "eos_token": "<｜end▁of▁sentence｜>",
               "pad_token": "<｜end▁of▁sentence｜>",
               "chat_template": "{{ messages }}"})
        .to_string(),
    )
    .unwrap();
    Fixture {
        dir,
        model,
        expect,
        tid2eid,
        hf,
    }
}

/// Write `hf` as one model.safetensors, or as 3 shards + index with some names carrying
/// a `model.` prefix (stripped by the converter).
fn write_checkpoint(dir: &Path, hf: &[(String, StTensor)], shards: bool) {
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "safetensors")
            || p.ends_with("model.safetensors.index.json")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    if !shards {
        write_st(&dir.join("model.safetensors"), hf);
        return;
    }
    let n = 3;
    let mut parts: Vec<Vec<(String, StTensor)>> = vec![Vec::new(); n];
    for (i, (name, t)) in hf.iter().enumerate() {
        let name = if i % 5 == 0 {
            format!("model.{name}")
        } else {
            name.clone()
        };
        parts[i % n].push((name, t.clone()));
    }
    let mut map = serde_json::Map::new();
    for (k, p) in parts.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", k + 1, n);
        write_st(&dir.join(&file), p);
        for (name, _) in p {
            map.insert(name.clone(), json!(file));
        }
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn i32s(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn run(
    fx: &Fixture,
    recipe: Recipe,
    mtp: bool,
) -> Result<(PathBuf, Option<PathBuf>, ds4_gguf::convert::ConvertReport), ConvertError> {
    let out = fx.dir.join(format!("out-{recipe}.gguf"));
    let mut opts = ConvertOptions::new(&fx.dir, &out, recipe);
    opts.threads = 2;
    let mtp_out = mtp.then(|| fx.dir.join(format!("mtp-{recipe}.gguf")));
    opts.mtp_out = mtp_out.clone();
    let mut lines = 0usize;
    let rep = convert(&opts, &mut |_l: &str| lines += 1)?;
    assert_eq!(lines, rep.tensors + rep.mtp_tensors);
    Ok((out, mtp_out, rep))
}

/// Directory and metadata checks shared by all recipes.
fn check_layout(f: &GgufFile, model: &ModelConfig, recipe: Recipe, mtp: bool) {
    let want = if mtp {
        expected_mtp_tensors(model, recipe)
    } else {
        expected_tensors(model, recipe)
    };
    assert_eq!(f.tensors().len(), want.len());
    for (t, s) in f.tensors().iter().zip(&want) {
        assert_eq!(t.name, s.name);
        assert_eq!(t.dims, s.dims, "{}", t.name);
        assert_eq!(t.ggml_type, Some(s.recipe_type), "{}", t.name);
    }
    let cfg = ModelConfig::from_gguf(f).unwrap();
    assert_eq!(&cfg, model);
    let v = ds4_gguf::validate::validate(f);
    assert!(v.is_ok(), "validator errors: {:?}", v.errors);
}

#[test]
fn tiny_checkpoint_f32_equals_independent_dequantization() {
    let fx = build_fixture(
        "f32",
        &FixtureOpts {
            layers: 5,
            experts: 16,
            vocab: 300,
            tokenizer_ids: 280,
            mtp: true,
            shards: true,
        },
    );
    let (out, mtp_out, rep) = run(&fx, Recipe::F32, true).unwrap();
    assert_eq!(rep.vocab, VocabSource::Tokenizer);
    let f = GgufFile::open(&out).unwrap();
    check_layout(&f, &fx.model, Recipe::F32, false);
    let m = GgufFile::open(mtp_out.as_ref().unwrap()).unwrap();
    check_layout(&m, &fx.model, Recipe::F32, true);
    assert_eq!(
        m.get("general.architecture").and_then(|v| v.as_str()),
        Some("deepseek4_mtp_support")
    );

    let mut checked = 0;
    for file in [&f, &m] {
        for t in file.tensors() {
            let data = file.tensor_data(t);
            if let Some(ids) = fx.tid2eid.get(&t.name) {
                assert_eq!(t.ggml_type, Some(GgmlType::I32));
                assert_eq!(&i32s(data), ids, "{}", t.name);
            } else {
                let want = &fx.expect[&t.name];
                let got = f32s(data);
                assert_eq!(got.len(), want.len(), "{}", t.name);
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{} element {i}: {g} vs {w}",
                        t.name
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, fx.expect.len() + fx.tid2eid.len());

    // Tokenizer: tokens by id from the hand-built tokenizer.json, holes and the tail padded.
    let (_, mut want_tokens) = tokenizer_json(280);
    for i in want_tokens.len()..300 {
        want_tokens.push(format!("[PAD{i}]"));
    }
    let strings = |k: &str| -> Vec<String> {
        f.get(k)
            .unwrap()
            .as_array()
            .unwrap()
            .1
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(strings("tokenizer.ggml.tokens"), want_tokens);
    assert_eq!(
        strings("tokenizer.ggml.merges"),
        ["Ġ t", "h e", "Ġt he", "i n"]
    );
    let types: Vec<i32> = f
        .get("tokenizer.ggml.token_type")
        .unwrap()
        .as_array()
        .unwrap()
        .1
        .iter()
        .map(|v| match v {
            Value::I32(x) => *x,
            _ => panic!("token_type element {v}"),
        })
        .collect();
    assert_eq!(types[0], 1); // byte token: NORMAL
    assert_eq!(types[260], 5); // hole: UNUSED
    assert_eq!(types[273], 3); // BOS (special): CONTROL
    assert_eq!(types[275], 3); // <｜User｜> looks special: CONTROL
    assert_eq!(types[277], 4); // <think>: USER_DEFINED
    assert_eq!(types[299], 5); // tail padding: UNUSED
                               // tokenizer_config.json names BOS/EOS by string; its ids win over config.json's 0/1.
    assert_eq!(f.get("tokenizer.ggml.bos_token_id"), Some(&Value::U32(273)));
    assert_eq!(f.get("tokenizer.ggml.eos_token_id"), Some(&Value::U32(274)));
    assert_eq!(
        f.get("tokenizer.ggml.padding_token_id"),
        Some(&Value::U32(274))
    );
    assert_eq!(
        f.get("tokenizer.ggml.model").and_then(|v| v.as_str()),
        Some("gpt2")
    );
    assert_eq!(
        f.get("tokenizer.ggml.pre").and_then(|v| v.as_str()),
        Some("joyai-llm")
    );
    assert_eq!(
        f.get("tokenizer.chat_template").and_then(|v| v.as_str()),
        Some("{{ messages }}")
    );
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn quantized_recipes_match_the_quantizer_on_the_f32_result() {
    let fx = build_fixture(
        "quant",
        &FixtureOpts {
            layers: 3,
            experts: 8,
            vocab: 300,
            tokenizer_ids: 1000, // larger than vocab_size: placeholder vocabulary
            mtp: false,
            shards: false,
        },
    );
    let (out32, _, rep) = run(&fx, Recipe::F32, false).unwrap();
    assert_eq!(rep.vocab, VocabSource::Placeholder);
    let f32file = GgufFile::open(&out32).unwrap();
    let tokens = f32file
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap()
        .1;
    assert_eq!(tokens.len(), 300);
    for s in ds4_gguf::convert::tokenizer::REQUIRED_SPECIALS {
        assert!(tokens.iter().any(|t| t.as_str() == Some(s)), "{s}");
    }
    for b in 0..=255u8 {
        let c = byte_to_char(b).to_string();
        assert!(
            tokens.iter().any(|t| t.as_str() == Some(c.as_str())),
            "byte {b}"
        );
    }
    for recipe in [Recipe::Q2, Recipe::Q4, Recipe::F16] {
        let (out, _, _) = run(&fx, recipe, false).unwrap();
        let q = GgufFile::open(&out).unwrap();
        check_layout(&q, &fx.model, recipe, false);
        for (t, r) in q.tensors().iter().zip(f32file.tensors()) {
            assert_eq!(t.name, r.name);
            let ty = t.ggml_type.unwrap();
            let ref_bytes = f32file.tensor_data(r);
            if ty == GgmlType::I32 || ty == GgmlType::F32 {
                assert_eq!(q.tensor_data(t), ref_bytes, "{}", t.name);
                continue;
            }
            // Same bytes as quantizing the f32 conversion row by row (every row of dense
            // tensors, every 3rd row of the expert stacks to keep the test fast) ...
            let vals = f32s(ref_bytes);
            let ncol = t.dims[0] as usize;
            let rb = ds4_quant::row_bytes(ty, ncol);
            let stride = if t.dims.len() == 3 { 3 } else { 1 };
            let mut want = vec![0u8; rb];
            for (i, (row, got)) in vals
                .chunks(ncol)
                .zip(q.tensor_data(t).chunks(rb))
                .enumerate()
                .step_by(stride)
            {
                ds4_quant::quantize_row(ty, row, &mut want).unwrap();
                assert!(
                    got == want.as_slice(),
                    "{} row {i} differs from quantize_row",
                    t.name
                );
            }
            // ... and, where the format gives a closed-form bound, within it.
            let mut deq = vec![0f32; vals.len()];
            for (src, dst) in q.tensor_data(t).chunks(rb).zip(deq.chunks_mut(ncol)) {
                ds4_quant::dequantize_row(ty, src, dst).unwrap();
            }
            match ty {
                GgmlType::F16 => {
                    // RNE to 11 significant bits: relative error ≤ 2^-11 (normal range).
                    for (a, b) in deq.iter().zip(&vals) {
                        assert!(
                            (a - b).abs() as f64
                                <= (b.abs() as f64) * 2f64.powi(-11) + 2f64.powi(-24),
                            "{}",
                            t.name
                        );
                    }
                }
                GgmlType::Q8_0 => {
                    // q = round(x/d), d = amax/127 stored as f16: |x - f16(d)·q| ≤
                    // d/2 + 127·|d - f16(d)|.
                    for (xb, yb) in vals.chunks(32).zip(deq.chunks(32)) {
                        let amax = xb.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
                        let d = amax / 127.0;
                        let bound = d / 2.0 + 127.0 * d * 2f64.powi(-11) + 1e-12;
                        for (x, y) in xb.iter().zip(yb) {
                            assert!(
                                ((x - y) as f64).abs() <= bound,
                                "{}: {x} vs {y}, bound {bound}",
                                t.name
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Bad inputs.
// ---------------------------------------------------------------------------------------

fn small_fixture(tag: &str) -> Fixture {
    build_fixture(
        tag,
        &FixtureOpts {
            layers: 5,
            experts: 16,
            vocab: 300,
            tokenizer_ids: 300,
            mtp: false,
            shards: false,
        },
    )
}

fn err_of(fx: &Fixture) -> String {
    match run(fx, Recipe::F32, false) {
        Ok(_) => panic!("conversion unexpectedly succeeded"),
        Err(e) => e.to_string(),
    }
}

fn mutate(fx: &Fixture, f: impl FnOnce(&mut Vec<(String, StTensor)>)) {
    let mut hf = fx.hf.clone();
    f(&mut hf);
    write_checkpoint(&fx.dir, &hf, false);
}

#[test]
fn bad_inputs_name_the_problem() {
    let fx = small_fixture("bad");
    // Sanity: the unmodified fixture converts, and no partial output is left behind.
    run(&fx, Recipe::F32, false).unwrap();

    // Missing config key.
    let mut cfg = official_config(&fx.model);
    cfg.as_object_mut().unwrap().remove("o_groups");
    std::fs::write(fx.dir.join("config.json"), cfg.to_string()).unwrap();
    let e = err_of(&fx);
    assert!(e.contains("o_groups") && e.contains("missing"), "{e}");
    let mut cfg = official_config(&fx.model);
    cfg["rope_scaling"]
        .as_object_mut()
        .unwrap()
        .remove("beta_fast");
    std::fs::write(fx.dir.join("config.json"), cfg.to_string()).unwrap();
    let e = err_of(&fx);
    assert!(e.contains("rope_scaling.beta_fast"), "{e}");
    std::fs::write(
        fx.dir.join("config.json"),
        official_config(&fx.model).to_string(),
    )
    .unwrap();

    // Missing tensor.
    mutate(&fx, |hf| hf.retain(|(n, _)| n != "layers.3.ffn.gate.bias"));
    let e = err_of(&fx);
    assert!(
        e.contains("layers.3.ffn.gate.bias") && e.contains("blk.3.exp_probs_b.bias"),
        "{e}"
    );

    // Missing expert.
    mutate(&fx, |hf| {
        hf.retain(|(n, _)| n != "layers.1.ffn.experts.7.w2.weight")
    });
    let e = err_of(&fx);
    assert!(e.contains("layers.1.ffn.experts.7.w2.weight"), "{e}");

    // Shape mismatch (a BF16 norm one element short).
    mutate(&fx, |hf| {
        let t = &mut hf
            .iter_mut()
            .find(|(n, _)| n == "layers.2.attn.kv_norm.weight")
            .unwrap()
            .1;
        t.shape = vec![127];
        t.bytes.truncate(254);
    });
    let e = err_of(&fx);
    assert!(
        e.contains("layers.2.attn.kv_norm.weight") && e.contains("shape"),
        "{e}"
    );

    // FP8 weight without its scale.
    mutate(&fx, |hf| {
        hf.retain(|(n, _)| n != "layers.0.attn.wq_a.scale")
    });
    let e = err_of(&fx);
    assert!(
        e.contains("layers.0.attn.wq_a.scale") && e.contains("layers.0.attn.wq_a.weight"),
        "{e}"
    );

    // FP8 scale of the wrong shape.
    mutate(&fx, |hf| {
        let t = &mut hf
            .iter_mut()
            .find(|(n, _)| n == "layers.0.attn.wkv.scale")
            .unwrap()
            .1;
        t.shape = vec![2, 1];
    });
    let e = err_of(&fx);
    assert!(
        e.contains("layers.0.attn.wkv.weight") && e.contains("scale"),
        "{e}"
    );

    // FP4 expert scale of the wrong dtype.
    mutate(&fx, |hf| {
        let t = &mut hf
            .iter_mut()
            .find(|(n, _)| n == "layers.4.ffn.experts.0.w1.scale")
            .unwrap()
            .1;
        t.dtype = "U8";
    });
    let e = err_of(&fx);
    assert!(
        e.contains("layers.4.ffn.experts.0.w1.weight") && e.contains("F8_E8M0"),
        "{e}"
    );

    // Unused checkpoint tensor.
    mutate(&fx, |hf| {
        hf.push((
            "layers.0.attn.extra.weight".into(),
            StTensor {
                dtype: "F32",
                shape: vec![2],
                bytes: vec![0; 8],
            },
        ))
    });
    let e = err_of(&fx);
    assert!(e.contains("layers.0.attn.extra.weight"), "{e}");
    let mut opts = ConvertOptions::new(&fx.dir, fx.dir.join("extra.gguf"), Recipe::F32);
    opts.allow_unused = true;
    let rep = convert(&opts, &mut |_: &str| {}).unwrap();
    assert!(
        rep.notes
            .iter()
            .any(|n| n.contains("layers.0.attn.extra.weight")),
        "{:?}",
        rep.notes
    );

    // tid2eid value outside [0, n_expert).
    mutate(&fx, |hf| {
        let t = &mut hf
            .iter_mut()
            .find(|(n, _)| n == "layers.1.ffn.gate.tid2eid")
            .unwrap()
            .1;
        t.bytes[8..16].copy_from_slice(&16i64.to_le_bytes());
    });
    let e = err_of(&fx);
    assert!(
        e.contains("layers.1.ffn.gate.tid2eid") && e.contains("16"),
        "{e}"
    );

    // tid2eid stored as floats.
    mutate(&fx, |hf| {
        let t = &mut hf
            .iter_mut()
            .find(|(n, _)| n == "layers.0.ffn.gate.tid2eid")
            .unwrap()
            .1;
        t.dtype = "F64";
    });
    let e = err_of(&fx);
    assert!(
        e.contains("layers.0.ffn.gate.tid2eid") && e.contains("not an integer"),
        "{e}"
    );

    // MTP output requested but no MTP tensors.
    mutate(&fx, |_| {});
    let mut opts = ConvertOptions::new(&fx.dir, fx.dir.join("x.gguf"), Recipe::F32);
    opts.mtp_out = Some(fx.dir.join("m.gguf"));
    let e = convert(&opts, &mut |_: &str| {}).unwrap_err().to_string();
    assert!(e.contains("mtp"), "{e}");
    assert!(!fx.dir.join("x.gguf").exists());
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn dims_not_divisible_by_the_block_are_rejected() {
    // FP8: a q_lora_rank of 64 makes wq_a [64, 256], not divisible by the 128x128 block.
    let fx = small_fixture("block");
    let mut m = fx.model.clone();
    m.q_lora_rank = 64;
    let specs = expected_tensors(&m, Recipe::F32);
    let mut rng = Rng(7);
    let mut hf = fx.hf.clone();
    for s in specs
        .iter()
        .filter(|s| s.dims.contains(&64) && !s.family.is_routed_expert())
    {
        let name = hf_name(&s.name);
        let shape: Vec<u64> = s.dims.iter().rev().copied().collect();
        hf.retain(|(n, _)| *n != name && *n != name.replace(".weight", ".scale"));
        if s.family == Family::AttnProj {
            // FP8 codes with a (necessarily wrong) 1x1 scale.
            let n: u64 = shape.iter().product();
            hf.push((
                name.replace(".weight", ".scale"),
                StTensor {
                    dtype: "F8_E8M0",
                    shape: vec![1, 1],
                    bytes: vec![127],
                },
            ));
            hf.push((
                name,
                StTensor {
                    dtype: "F8_E4M3",
                    shape,
                    bytes: vec![0x38; n as usize],
                },
            ));
        } else {
            let dtype = if s.family == Family::Norm || s.family == Family::AuxProj {
                "BF16"
            } else {
                "F32"
            };
            hf.push((name, float_tensor(&mut rng, shape, dtype).0));
        }
    }
    write_checkpoint(&fx.dir, &hf, false);
    let mut cfg = official_config(&m);
    cfg["q_lora_rank"] = json!(64);
    std::fs::write(fx.dir.join("config.json"), cfg.to_string()).unwrap();
    let e = err_of(&fx);
    assert!(
        e.contains("attn.wq_a.weight") && e.contains("not divisible by the 128x128"),
        "{e}"
    );

    // Quantized recipe: a row length that is not a multiple of 256 for the experts.
    let fx2 = small_fixture("block2");
    let mut m2 = fx2.model.clone();
    m2.expert_ffn = 128;
    let mut hf2 = fx2.hf.clone();
    for s in expected_tensors(&m2, Recipe::F32)
        .iter()
        .filter(|s| s.family.is_routed_expert() || s.family == Family::SharedExpert)
    {
        let name = hf_name(&s.name);
        if s.family.is_routed_expert() {
            for e in 0..s.dims[2] {
                let wn = name.replace("{E}", &e.to_string());
                hf2.retain(|(n, _)| *n != wn && *n != wn.replace(".weight", ".scale"));
                let (w, sc, _) = fp4_tensor(&mut rng, s.dims[1], s.dims[0]);
                hf2.push((wn.replace(".weight", ".scale"), sc));
                hf2.push((wn, w));
            }
        } else {
            hf2.retain(|(n, _)| *n != name && *n != name.replace(".weight", ".scale"));
            let (w, sc, _) = fp8_tensor(&mut rng, s.dims[1], s.dims[0]);
            hf2.push((name.replace(".weight", ".scale"), sc));
            hf2.push((name, w));
        }
    }
    write_checkpoint(&fx2.dir, &hf2, false);
    let mut cfg2 = official_config(&m2);
    cfg2["moe_intermediate_size"] = json!(128);
    std::fs::write(fx2.dir.join("config.json"), cfg2.to_string()).unwrap();
    // f32 works; q4 (Q4_K down experts need ne0 = 128 % 256) fails naming the tensor.
    run(&fx2, Recipe::F32, false).unwrap();
    let e = match run(&fx2, Recipe::Q4, false) {
        Ok(_) => panic!("q4 with ffn 128 unexpectedly converted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("ffn_down_exps.weight") && e.contains("block size 256"),
        "{e}"
    );
    assert!(!fx2.dir.join("out-q4.gguf").exists());
    assert!(!fx2.dir.join("out-q4.gguf.partial").exists());
    std::fs::remove_dir_all(&fx.dir).unwrap();
    std::fs::remove_dir_all(&fx2.dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// safetensors reader: an oracle file written by the official library from torch
// tensors (tests/convert_fixtures/make_fixture.py), and malformed headers.
// ---------------------------------------------------------------------------------------

use ds4_gguf::convert::dequant::{ints_to_i32, Source};
use ds4_gguf::convert::safetensors::{Dtype, SafeTensorsFile};

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/convert_fixtures/oracle.safetensors")
}

fn read_all(src: &Source<'_>) -> Vec<f32> {
    let mut v = vec![0f32; src.rows() * src.cols()];
    src.read_rows(0, &mut v);
    v
}

#[test]
fn torch_oracle_fixture() {
    let f = SafeTensorsFile::open(&fixture_path()).unwrap();
    let get = |n: &str| {
        let info = f.tensors().get(n).unwrap_or_else(|| panic!("{n}"));
        (info, f.data(n).unwrap())
    };
    let expected = |n: &str| f32s(get(n).1);

    let w = get("fp8.weight");
    let s = get("fp8.scale");
    assert_eq!(w.0.dtype, Dtype::F8E4M3);
    assert_eq!(s.0.dtype, Dtype::F8E8M0);
    let src = Source::fp8("fp8.weight", w, s, (128, 128)).unwrap();
    let got = read_all(&src);
    let want = expected("fp8.expected");
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "fp8 element {i}: {g} vs torch {w}"
        );
    }
    // Every E4M3 code except NaN, decoded alone, equals torch's value (row 0 holds
    // codes 0..255; columns 0..127 have scale code 120 = 2^-7, columns 128..255 code 127 = 1).
    let codes = f.data("fp8.weight").unwrap();
    for c in 0..256usize {
        if codes[c] & 0x7F != 0x7F {
            let scale = if c < 128 { 2f32.powi(-7) } else { 1.0 };
            assert_eq!(e4m3_to_f32(codes[c]) * scale, want[c], "code {c:#x}");
        }
    }

    let e8 = f.data("e8m0.codes").unwrap();
    for (c, w) in e8.iter().zip(expected("e8m0.expected")) {
        assert_eq!(e8m0_to_f32(*c).to_bits(), w.to_bits(), "e8m0 code {c}");
    }
    for n in ["bf16", "f16", "f64"] {
        let (info, data) = get(n);
        let src = Source::plain(n, info, data).unwrap();
        assert_eq!(read_all(&src), expected(&format!("{n}.expected")), "{n}");
    }
    let (info, data) = get("i64");
    assert_eq!(info.shape, vec![5, 3]);
    let ids = ints_to_i32("i64", info, data, 0..16).unwrap();
    assert_eq!(ids.len(), 15);
    let raw: Vec<i32> = data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i32)
        .collect();
    assert_eq!(ids, raw);
}

fn st_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn open_err(tag: &str, bytes: &[u8]) -> String {
    let d = tmpdir(tag);
    let p = d.join("x.safetensors");
    std::fs::write(&p, bytes).unwrap();
    let e = match SafeTensorsFile::open(&p) {
        Ok(_) => panic!("{tag}: malformed file accepted"),
        Err(e) => e.to_string(),
    };
    std::fs::remove_dir_all(&d).unwrap();
    assert!(e.contains("x.safetensors"), "{e}");
    e
}

#[test]
fn malformed_safetensors_headers_are_rejected() {
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    // Sanity: the well-formed file opens.
    let d = tmpdir("st-ok");
    std::fs::write(d.join("x.safetensors"), st_bytes(ok, &[0; 8])).unwrap();
    let f = SafeTensorsFile::open(&d.join("x.safetensors")).unwrap();
    assert_eq!(f.data("a").unwrap().len(), 8);
    std::fs::remove_dir_all(&d).unwrap();

    let e = open_err("short", &[1, 2, 3]);
    assert!(e.contains("too small"), "{e}");
    let mut b = st_bytes(ok, &[0; 8]);
    b[0..8].copy_from_slice(&1000u64.to_le_bytes());
    let e = open_err("hlen", &b);
    assert!(e.contains("header length 1000"), "{e}");
    let e = open_err("json", &st_bytes("{not json", &[]));
    assert!(e.contains("not valid JSON"), "{e}");
    let e = open_err("notobj", &st_bytes("[1,2]", &[]));
    assert!(e.contains("not a JSON object"), "{e}");
    let e = open_err(
        "dtype",
        &st_bytes(
            r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    );
    assert!(e.contains("tensor a") && e.contains("unknown dtype"), "{e}");
    let e = open_err(
        "past",
        &st_bytes(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 4],
        ),
    );
    assert!(e.contains("tensor a") && e.contains("past the end"), "{e}");
    let e = open_err(
        "size",
        &st_bytes(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    );
    assert!(e.contains("tensor a") && e.contains("needs 12"), "{e}");
    let e = open_err(
        "order",
        &st_bytes(
            r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#,
            &[0; 8],
        ),
    );
    assert!(e.contains("end before begin"), "{e}");
    let e = open_err(
        "overlap",
        &st_bytes(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12],
        ),
    );
    assert!(e.contains("overlap"), "{e}");
    let e = open_err(
        "noshape",
        &st_bytes(r#"{"a":{"dtype":"F32","data_offsets":[0,8]}}"#, &[0; 8]),
    );
    assert!(e.contains("tensor a") && e.contains("shape"), "{e}");
    let e = open_err(
        "negshape",
        &st_bytes(
            r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    );
    assert!(e.contains("tensor a") && e.contains("-2"), "{e}");
}

#[test]
fn index_pointing_at_a_missing_tensor_is_rejected() {
    let fx = small_fixture("index");
    write_checkpoint(&fx.dir, &fx.hf, true);
    let idx = fx.dir.join("model.safetensors.index.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    v["weight_map"]["layers.0.attn.ghost"] = json!("model-00001-of-00003.safetensors");
    std::fs::write(&idx, v.to_string()).unwrap();
    let e = err_of(&fx);
    assert!(
        e.contains("layers.0.attn.ghost") && e.contains("model-00001-of-00003"),
        "{e}"
    );
    v["weight_map"]["layers.0.attn.ghost"] = json!("../elsewhere.safetensors");
    std::fs::write(&idx, v.to_string()).unwrap();
    let e = err_of(&fx);
    assert!(e.contains("elsewhere"), "{e}");
    std::fs::remove_dir_all(&fx.dir).unwrap();
}
