//! `config.json` of the official checkpoint → [`ModelConfig`] (spec gguf-layout.md §4.5),
//! and the inverse for [`super::export_official_checkpoint`].

use serde_json::{json, Map, Value as Json};

use super::ConvertError;
use crate::layout::ModelConfig;

/// Settings of the checkpoint that are not model metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointConfig {
    pub model: ModelConfig,
    /// FP8 scale block `[rows, cols]` (`quantization_config.weight_block_size`, default 128×128).
    pub fp8_block: (usize, usize),
    /// `bos_token_id` / `eos_token_id` when config.json names them.
    pub bos_token_id: Option<u64>,
    pub eos_token_id: Option<u64>,
    /// `num_nextn_predict_layers` (MTP blocks in the checkpoint), 0 when absent.
    pub nextn_predict_layers: u64,
}

struct Cfg<'a> {
    obj: &'a Map<String, Json>,
}

fn missing(key: &str, what: &str) -> ConvertError {
    ConvertError::Config(format!("config.json: missing key {key} ({what})"))
}

fn bad(key: &str, problem: String) -> ConvertError {
    ConvertError::Config(format!("config.json: key {key}: {problem}"))
}

impl Cfg<'_> {
    fn get(&self, key: &str) -> Option<&Json> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn u64_of(key: &str, v: &Json) -> Result<u64, ConvertError> {
        if let Some(x) = v.as_u64() {
            return Ok(x);
        }
        // Integral floats ("4096.0") are accepted; anything else is an error.
        match v.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(f as u64),
            _ => Err(bad(key, format!("{v} is not a non-negative integer"))),
        }
    }

    fn u64(&self, key: &str, what: &str) -> Result<u64, ConvertError> {
        Self::u64_of(key, self.get(key).ok_or_else(|| missing(key, what))?)
    }

    fn u32(&self, key: &str, what: &str) -> Result<u32, ConvertError> {
        let v = self.u64(key, what)?;
        u32::try_from(v).map_err(|_| bad(key, format!("{v} does not fit in 32 bits")))
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>, ConvertError> {
        self.get(key).map(|v| Self::u64_of(key, v)).transpose()
    }

    fn f32(&self, key: &str, what: &str) -> Result<f32, ConvertError> {
        let v = self.get(key).ok_or_else(|| missing(key, what))?;
        v.as_f64()
            .map(|f| f as f32)
            .ok_or_else(|| bad(key, format!("{v} is not a number")))
    }
}

/// Parse the text of `config.json`.
pub fn parse_config(text: &str) -> Result<CheckpointConfig, ConvertError> {
    let root: Json = serde_json::from_str(text)
        .map_err(|e| ConvertError::Config(format!("config.json is not valid JSON: {e}")))?;
    let obj = root
        .as_object()
        .ok_or_else(|| ConvertError::Config("config.json is not a JSON object".into()))?;
    let c = Cfg { obj };

    let n_layer = c.u32("num_hidden_layers", "layer count")?;
    let head_dim = c.u32("head_dim", "attention head dim")?;
    if let Some(kv) = c.opt_u64("num_key_value_heads")? {
        if kv != 1 {
            return Err(bad(
                "num_key_value_heads",
                format!("{kv}, but DeepSeek V4 uses a single shared KV head (1)"),
            ));
        }
    }
    if let Some(f) = c.get("scoring_func") {
        if f.as_str() != Some("sqrtsoftplus") {
            return Err(bad(
                "scoring_func",
                format!("{f}, but ds4 implements only \"sqrtsoftplus\" routing"),
            ));
        }
    }
    let rope_dim = match c.opt_u64("qk_rope_head_dim")? {
        Some(r) => {
            u32::try_from(r).map_err(|_| bad("qk_rope_head_dim", format!("{r} too large")))?
        }
        None => match c.get("partial_rotary_factor").and_then(|v| v.as_f64()) {
            Some(f) => (head_dim as f64 * f).round() as u32,
            None => return Err(missing("qk_rope_head_dim", "RoPE dims per head")),
        },
    };

    // compress_ratios: the official per-layer list, or transformers' layer_types.
    let compress_ratios: Vec<u32> = match c.get("compress_ratios") {
        Some(Json::Array(a)) => a
            .iter()
            .map(|v| {
                Cfg::u64_of("compress_ratios", v).and_then(|x| {
                    u32::try_from(x).map_err(|_| bad("compress_ratios", format!("{x} too large")))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(bad("compress_ratios", format!("{v} is not an array"))),
        None => match c.get("layer_types") {
            Some(Json::Array(a)) => a
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(0),
                    Some("compressed_sparse_attention") => Ok(4),
                    Some("heavily_compressed_attention") => Ok(128),
                    _ => Err(bad("layer_types", format!("unknown layer type {t}"))),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(missing("compress_ratios", "per-layer compression ratios")),
        },
    };
    if compress_ratios.len() < n_layer as usize {
        return Err(bad(
            "compress_ratios",
            format!(
                "{} entries, fewer than num_hidden_layers = {n_layer}",
                compress_ratios.len()
            ),
        ));
    }

    let n_hash_layers = match c.opt_u64("num_hash_layers")? {
        Some(n) => n as u32,
        None => match c.get("mlp_layer_types") {
            Some(Json::Array(a)) => a
                .iter()
                .take_while(|t| t.as_str() == Some("hash_moe"))
                .count() as u32,
            _ => return Err(missing("num_hash_layers", "hash-routed leading layers")),
        },
    };

    let swiglu_clamp: Vec<f32> = match c.get("swiglu_limit") {
        Some(Json::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| bad("swiglu_limit", format!("{v} is not a number")))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => vec![c.f32("swiglu_limit", "SwiGLU clamp")?; n_layer as usize],
        None => return Err(missing("swiglu_limit", "SwiGLU clamp")),
    };

    if swiglu_clamp.len() < n_layer as usize {
        return Err(bad(
            "swiglu_limit",
            format!(
                "{} entries, fewer than num_hidden_layers = {n_layer}",
                swiglu_clamp.len()
            ),
        ));
    }

    // YaRN parameters: official `rope_scaling`, or transformers' `rope_parameters.compress`.
    let rope_obj = match c.get("rope_scaling") {
        Some(Json::Object(o)) => o,
        Some(v) => return Err(bad("rope_scaling", format!("{v} is not an object"))),
        None => match c
            .get("rope_parameters")
            .and_then(|p| p.get("compress"))
            .and_then(|p| p.as_object())
        {
            Some(o) => o,
            None => return Err(missing("rope_scaling", "YaRN parameters")),
        },
    };
    let rs = Cfg { obj: rope_obj };
    let rkey = |k: &str| format!("rope_scaling.{k}");
    let rope_f32 = |k: &str| -> Result<f32, ConvertError> {
        rs.f32(k, "YaRN parameter").map_err(|_| match rs.get(k) {
            None => missing(&rkey(k), "YaRN parameter"),
            Some(v) => bad(&rkey(k), format!("{v} is not a number")),
        })
    };
    if let Some(t) = rs.get("type").or_else(|| rs.get("rope_type")) {
        if t.as_str() != Some("yarn") {
            return Err(bad(&rkey("type"), format!("{t}, expected \"yarn\"")));
        }
    }
    let rope_orig_ctx = rs
        .u64("original_max_position_embeddings", "YaRN original context")
        .map_err(|e| match rs.get("original_max_position_embeddings") {
            None => missing(
                &rkey("original_max_position_embeddings"),
                "YaRN original context",
            ),
            Some(_) => e,
        })?;

    let model = ModelConfig {
        n_embd: c.u32("hidden_size", "model width")?,
        n_layer,
        vocab_size: c.u32("vocab_size", "vocabulary size")?,
        n_head: c.u32("num_attention_heads", "query heads")?,
        head_dim,
        value_length: head_dim,
        rope_dim,
        q_lora_rank: c.u32("q_lora_rank", "query low-rank width")?,
        o_lora_rank: c.u32("o_lora_rank", "output low-rank width")?,
        o_groups: c.u32("o_groups", "output projection groups")?,
        n_expert: c.u32("n_routed_experts", "routed experts")?,
        n_expert_used: c.u32("num_experts_per_tok", "experts per token")?,
        expert_ffn: c.u32("moe_intermediate_size", "expert hidden width")?,
        n_expert_shared: c.u32("n_shared_experts", "shared experts")?,
        n_hash_layers,
        sliding_window: c.u32("sliding_window", "raw KV window")?,
        indexer_heads: c.u32("index_n_heads", "indexer heads")?,
        indexer_head_dim: c.u32("index_head_dim", "indexer head dim")?,
        indexer_top_k: c.u32("index_topk", "indexer top-k")?,
        hc_count: c.u32("hc_mult", "hyper-connection streams")?,
        sinkhorn_iters: c.u32("hc_sinkhorn_iters", "Sinkhorn iterations")?,
        rope_orig_ctx,
        rope_freq_base: c.f32("rope_theta", "RoPE base")?,
        rope_scaling_factor: rope_f32("factor")?,
        yarn_beta_fast: rope_f32("beta_fast")?,
        yarn_beta_slow: rope_f32("beta_slow")?,
        compress_rope_freq_base: c.f32("compress_rope_theta", "compressed-layer RoPE base")?,
        expert_weights_scale: c.f32("routed_scaling_factor", "routed weight multiplier")?,
        rms_eps: c.f32("rms_norm_eps", "RMSNorm epsilon")?,
        hc_eps: c.f32("hc_eps", "hyper-connection epsilon")?,
        expert_weights_norm: match c.get("norm_topk_prob") {
            Some(Json::Bool(b)) => *b,
            Some(v) => return Err(bad("norm_topk_prob", format!("{v} is not a boolean"))),
            None => return Err(missing("norm_topk_prob", "normalise routed weights")),
        },
        compress_ratios,
        swiglu_clamp,
        context_length: c.opt_u64("max_position_embeddings")?,
    };

    let fp8_block = match c
        .get("quantization_config")
        .and_then(|q| q.get("weight_block_size"))
    {
        None => (128, 128),
        Some(Json::Array(a)) if a.len() == 2 => {
            let r = Cfg::u64_of("quantization_config.weight_block_size", &a[0])?;
            let cc = Cfg::u64_of("quantization_config.weight_block_size", &a[1])?;
            if r == 0 || cc == 0 {
                return Err(bad(
                    "quantization_config.weight_block_size",
                    "a block dim is 0".into(),
                ));
            }
            (r as usize, cc as usize)
        }
        Some(v) => {
            return Err(bad(
                "quantization_config.weight_block_size",
                format!("{v} is not a [rows, cols] pair"),
            ))
        }
    };

    let errs = model.consistency_errors();
    if !errs.is_empty() {
        return Err(ConvertError::Config(format!(
            "config.json describes an inconsistent model: {}",
            errs.join("; ")
        )));
    }

    Ok(CheckpointConfig {
        model,
        fp8_block,
        bos_token_id: c.opt_u64("bos_token_id")?,
        eos_token_id: c.opt_u64("eos_token_id")?,
        nextn_predict_layers: c.opt_u64("num_nextn_predict_layers")?.unwrap_or(0),
    })
}

/// The official-style `config.json` of a model (inverse of [`parse_config`]).
pub fn config_json(cfg: &ModelConfig, has_mtp: bool, bos: u32, eos: u32) -> Json {
    let n = cfg.n_layer as usize;
    let clamp_uniform = cfg
        .swiglu_clamp
        .iter()
        .take(n)
        .all(|&x| x == cfg.swiglu_clamp[0]);
    let mut o = json!({
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": 1,
        "head_dim": cfg.head_dim,
        "qk_rope_head_dim": cfg.rope_dim,
        "q_lora_rank": cfg.q_lora_rank,
        "o_lora_rank": cfg.o_lora_rank,
        "o_groups": cfg.o_groups,
        "n_routed_experts": cfg.n_expert,
        "num_experts_per_tok": cfg.n_expert_used,
        "moe_intermediate_size": cfg.expert_ffn,
        "n_shared_experts": cfg.n_expert_shared,
        "num_hash_layers": cfg.n_hash_layers,
        "sliding_window": cfg.sliding_window,
        "index_n_heads": cfg.indexer_heads,
        "index_head_dim": cfg.indexer_head_dim,
        "index_topk": cfg.indexer_top_k,
        "hc_mult": cfg.hc_count,
        "hc_sinkhorn_iters": cfg.sinkhorn_iters,
        "hc_eps": cfg.hc_eps as f64,
        "rope_theta": cfg.rope_freq_base as f64,
        "compress_rope_theta": cfg.compress_rope_freq_base as f64,
        "rope_scaling": {
            "type": "yarn",
            "factor": cfg.rope_scaling_factor as f64,
            "original_max_position_embeddings": cfg.rope_orig_ctx,
            "beta_fast": cfg.yarn_beta_fast as f64,
            "beta_slow": cfg.yarn_beta_slow as f64,
        },
        "routed_scaling_factor": cfg.expert_weights_scale as f64,
        "rms_norm_eps": cfg.rms_eps as f64,
        "norm_topk_prob": cfg.expert_weights_norm,
        "scoring_func": "sqrtsoftplus",
        "compress_ratios": cfg.compress_ratios,
        "num_nextn_predict_layers": if has_mtp { 1 } else { 0 },
        "bos_token_id": bos,
        "eos_token_id": eos,
        "tie_word_embeddings": false,
    });
    let m = o.as_object_mut().expect("object");
    if clamp_uniform && !cfg.swiglu_clamp.is_empty() {
        m.insert("swiglu_limit".into(), json!(cfg.swiglu_clamp[0] as f64));
    } else {
        let v: Vec<f64> = cfg.swiglu_clamp.iter().map(|&x| x as f64).collect();
        m.insert("swiglu_limit".into(), json!(v));
    }
    if let Some(cl) = cfg.context_length {
        m.insert("max_position_embeddings".into(), json!(cl));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published_json() -> Json {
        let m = ModelConfig::published();
        let mut j = config_json(&m, true, 0, 1);
        j["quantization_config"] = json!({"weight_block_size": [128, 128]});
        j
    }

    #[test]
    fn official_config_gives_the_published_model() {
        let c = parse_config(&published_json().to_string()).unwrap();
        let mut want = ModelConfig::published();
        want.swiglu_clamp = vec![10.0; 43];
        assert_eq!(c.model, want);
        assert_eq!(c.fp8_block, (128, 128));
        assert_eq!((c.bos_token_id, c.eos_token_id), (Some(0), Some(1)));
        assert_eq!(c.nextn_predict_layers, 1);
    }

    #[test]
    fn transformers_spelling_is_accepted() {
        // transformers' DeepseekV4Config names: layer_types, mlp_layer_types,
        // partial_rotary_factor, rope_parameters.compress.
        let mut j = published_json();
        let o = j.as_object_mut().unwrap();
        let ratios: Vec<u32> = o
            .remove("compress_ratios")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let types: Vec<&str> = ratios[..43]
            .iter()
            .map(|r| match r {
                0 => "sliding_attention",
                4 => "compressed_sparse_attention",
                _ => "heavily_compressed_attention",
            })
            .collect();
        o.insert("layer_types".into(), json!(types));
        o.remove("num_hash_layers");
        let mlp: Vec<&str> = (0..43)
            .map(|l| if l < 3 { "hash_moe" } else { "moe" })
            .collect();
        o.insert("mlp_layer_types".into(), json!(mlp));
        o.remove("qk_rope_head_dim");
        o.insert("partial_rotary_factor".into(), json!(0.125));
        let rs = o.remove("rope_scaling").unwrap();
        o.insert(
            "rope_parameters".into(),
            json!({"main": {"rope_type": "default"}, "compress": {
            "rope_type": "yarn", "factor": rs["factor"], "beta_fast": rs["beta_fast"],
            "beta_slow": rs["beta_slow"],
            "original_max_position_embeddings": rs["original_max_position_embeddings"]}}),
        );
        let c = parse_config(&j.to_string()).unwrap();
        let mut want = ModelConfig::published();
        want.compress_ratios.truncate(43);
        assert_eq!(c.model, want);
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: [(&str, Json, &str); 5] = [
            ("scoring_func", json!("softmax"), "sqrtsoftplus"),
            ("num_key_value_heads", json!(2), "num_key_value_heads"),
            ("swiglu_limit", json!([10.0, 10.0]), "swiglu_limit"),
            ("hidden_size", json!("big"), "hidden_size"),
            ("compress_ratios", json!([0, 0, 4]), "compress_ratios"),
        ];
        for (k, v, needle) in cases {
            let mut j = published_json();
            j[k] = v;
            let e = parse_config(&j.to_string()).unwrap_err().to_string();
            assert!(e.contains(needle), "{k}: {e}");
        }
        let e = parse_config("[1]").unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
        let mut j = published_json();
        j["rope_scaling"]["type"] = json!("linear");
        let e = parse_config(&j.to_string()).unwrap_err().to_string();
        assert!(e.contains("rope_scaling.type"), "{e}");
    }
}
