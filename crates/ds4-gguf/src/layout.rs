//! DeepSeek V4 Flash model layout: the `deepseek4.*` metadata keys and their types
//! (spec gguf-layout.md §1), the tensor directory per layer kind (§2), the fixed
//! published shape (§5) and the recipes that pick a type per tensor family (§4.4).
//!
//! The layout is parametrised by [`ModelConfig`]: the published model and any scaled-down
//! test model (§7) share names, key types, tensor ranks and dim relations; only the
//! numbers differ.

use std::fmt;

use crate::{GgmlType, GgufFile, GgufWriter, Value, ValueType};

/// `general.architecture` of the main model file.
pub const ARCH: &str = "deepseek4";
/// `general.architecture` third parties report for the MTP file.
pub const MTP_ARCH: &str = "deepseek4_mtp_support";
/// Key prefix of the model keys.
pub const PREFIX: &str = "deepseek4.";

/// Every model key the loader reads, with the GGUF type(s) it accepts (spec §1.2).
pub mod keys {
    pub const BLOCK_COUNT: &str = "deepseek4.block_count";
    pub const CONTEXT_LENGTH: &str = "deepseek4.context_length";
    pub const EMBEDDING_LENGTH: &str = "deepseek4.embedding_length";
    pub const VOCAB_SIZE: &str = "deepseek4.vocab_size";
    pub const HEAD_COUNT: &str = "deepseek4.attention.head_count";
    pub const HEAD_COUNT_KV: &str = "deepseek4.attention.head_count_kv";
    pub const KEY_LENGTH: &str = "deepseek4.attention.key_length";
    pub const VALUE_LENGTH: &str = "deepseek4.attention.value_length";
    pub const ROPE_DIM: &str = "deepseek4.rope.dimension_count";
    pub const Q_LORA_RANK: &str = "deepseek4.attention.q_lora_rank";
    pub const O_LORA_RANK: &str = "deepseek4.attention.output_lora_rank";
    pub const O_GROUPS: &str = "deepseek4.attention.output_group_count";
    pub const EXPERT_COUNT: &str = "deepseek4.expert_count";
    pub const EXPERT_USED: &str = "deepseek4.expert_used_count";
    pub const EXPERT_FFN: &str = "deepseek4.expert_feed_forward_length";
    pub const EXPERT_SHARED: &str = "deepseek4.expert_shared_count";
    pub const HASH_LAYERS: &str = "deepseek4.hash_layer_count";
    pub const SLIDING_WINDOW: &str = "deepseek4.attention.sliding_window";
    pub const INDEXER_HEADS: &str = "deepseek4.attention.indexer.head_count";
    pub const INDEXER_HEAD_DIM: &str = "deepseek4.attention.indexer.key_length";
    pub const INDEXER_TOP_K: &str = "deepseek4.attention.indexer.top_k";
    pub const HC_COUNT: &str = "deepseek4.hyper_connection.count";
    pub const SINKHORN_ITERS: &str = "deepseek4.hyper_connection.sinkhorn_iterations";
    pub const ROPE_ORIG_CTX: &str = "deepseek4.rope.scaling.original_context_length";
    pub const ROPE_FREQ_BASE: &str = "deepseek4.rope.freq_base";
    pub const ROPE_SCALING_FACTOR: &str = "deepseek4.rope.scaling.factor";
    pub const YARN_BETA_FAST: &str = "deepseek4.rope.scaling.yarn_beta_fast";
    pub const YARN_BETA_SLOW: &str = "deepseek4.rope.scaling.yarn_beta_slow";
    pub const COMPRESS_ROPE_FREQ_BASE: &str = "deepseek4.attention.compress_rope_freq_base";
    pub const EXPERT_WEIGHTS_SCALE: &str = "deepseek4.expert_weights_scale";
    pub const RMS_EPS: &str = "deepseek4.attention.layer_norm_rms_epsilon";
    pub const HC_EPS: &str = "deepseek4.hyper_connection.epsilon";
    pub const EXPERT_WEIGHTS_NORM: &str = "deepseek4.expert_weights_norm";
    pub const COMPRESS_RATIOS: &str = "deepseek4.attention.compress_ratios";
    pub const SWIGLU_CLAMP: &str = "deepseek4.swiglu_clamp_exp";
    pub const EXPERT_GROUP_COUNT: &str = "deepseek4.expert_group_count";
    pub const EXPERT_GROUP_USED: &str = "deepseek4.expert_group_used_count";
    pub const EXPERT_GATING_FUNC: &str = "deepseek4.expert_gating_func";
    pub const ROPE_SCALING_TYPE: &str = "deepseek4.rope.scaling.type";
    pub const NEXTN_PREDICT_LAYERS: &str = "deepseek4.nextn_predict_layers";
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const ALIGNMENT: &str = "general.alignment";
    pub const NAME: &str = "general.name";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const IMATRIX_PREFIX: &str = "quantize.imatrix.";
}

/// A problem with the model metadata. Messages name the key, what was expected and
/// what was found.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LayoutError {
    #[error("required metadata key {key} is missing (expected {expected})")]
    MissingKey { key: String, expected: String },
    #[error("metadata key {key} has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: String,
        found: String,
    },
    #[error("metadata key {key}: {problem}")]
    BadValue { key: String, problem: String },
    #[error(
        "general.architecture is {found:?}, expected {expected:?}: not a DeepSeek V4 Flash file"
    )]
    Architecture { found: String, expected: String },
    #[error("inconsistent model config: {0}")]
    Inconsistent(String),
}

/// Attention kind of a layer, identified by its compress ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttnKind {
    /// ratio 0: raw sliding window only.
    Swa,
    /// ratio 4: overlapping compressor (width 2·head_dim) plus lightning indexer.
    Csa,
    /// any other ratio (128 in the published model): compressor of width head_dim.
    Hca,
}

/// What a layer contains (spec §2.1 table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerKind {
    pub ratio: u32,
    pub attn: AttnKind,
    /// Hash routing (`ffn_gate_tid2eid`, no `exp_probs_b`): layer < hash_layer_count.
    pub hash: bool,
}

impl LayerKind {
    pub fn has_compressor(&self) -> bool {
        self.attn != AttnKind::Swa
    }
    pub fn has_indexer(&self) -> bool {
        self.attn == AttnKind::Csa
    }
}

/// The compress ratio that selects CSA (compressor + indexer).
pub const CSA_RATIO: u32 = 4;

/// The model hyper-parameters stored in the `deepseek4.*` keys.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub n_embd: u32,
    pub n_layer: u32,
    pub vocab_size: u32,
    pub n_head: u32,
    /// `attention.key_length`: the head dim (K = V = the KV vector width).
    pub head_dim: u32,
    pub value_length: u32,
    pub rope_dim: u32,
    pub q_lora_rank: u32,
    pub o_lora_rank: u32,
    pub o_groups: u32,
    pub n_expert: u32,
    pub n_expert_used: u32,
    pub expert_ffn: u32,
    pub n_expert_shared: u32,
    pub n_hash_layers: u32,
    pub sliding_window: u32,
    pub indexer_heads: u32,
    pub indexer_head_dim: u32,
    pub indexer_top_k: u32,
    pub hc_count: u32,
    pub sinkhorn_iters: u32,
    pub rope_orig_ctx: u64,
    pub rope_freq_base: f32,
    pub rope_scaling_factor: f32,
    pub yarn_beta_fast: f32,
    pub yarn_beta_slow: f32,
    pub compress_rope_freq_base: f32,
    pub expert_weights_scale: f32,
    pub rms_eps: f32,
    pub hc_eps: f32,
    pub expert_weights_norm: bool,
    /// Per-layer compress ratio; at least `n_layer` entries (more are ignored; the
    /// published list has 44, the last one for the MTP block).
    pub compress_ratios: Vec<u32>,
    /// Per-layer SwiGLU clamp; at least `n_layer` entries.
    pub swiglu_clamp: Vec<f32>,
    /// `deepseek4.context_length` (optional, display only).
    pub context_length: Option<u64>,
}

/// The ratio schedule of the published model (ds4.c `ds4_layer_compress_ratio`).
pub fn published_ratio(layer: u32) -> u32 {
    if layer < 2 {
        0
    } else if layer.is_multiple_of(2) {
        4
    } else {
        128
    }
}

impl ModelConfig {
    /// The published DeepSeek V4 Flash configuration (spec §1.2 / §5).
    pub fn published() -> ModelConfig {
        let mut ratios: Vec<u32> = (0..43).map(published_ratio).collect();
        ratios.push(0); // the MTP layer, as in the HF config.json
        ModelConfig {
            n_embd: 4096,
            n_layer: 43,
            vocab_size: 129280,
            n_head: 64,
            head_dim: 512,
            value_length: 512,
            rope_dim: 64,
            q_lora_rank: 1024,
            o_lora_rank: 1024,
            o_groups: 8,
            n_expert: 256,
            n_expert_used: 6,
            expert_ffn: 2048,
            n_expert_shared: 1,
            n_hash_layers: 3,
            sliding_window: 128,
            indexer_heads: 64,
            indexer_head_dim: 128,
            indexer_top_k: 512,
            hc_count: 4,
            sinkhorn_iters: 20,
            rope_orig_ctx: 65536,
            rope_freq_base: 10000.0,
            rope_scaling_factor: 16.0,
            yarn_beta_fast: 32.0,
            yarn_beta_slow: 1.0,
            compress_rope_freq_base: 160000.0,
            expert_weights_scale: 1.5,
            rms_eps: 1e-6,
            hc_eps: 1e-6,
            expert_weights_norm: true,
            compress_ratios: ratios,
            swiglu_clamp: vec![10.0; 43],
            context_length: Some(1_048_576),
        }
    }

    /// Read the config from a GGUF file with ds4's strict getter rules (spec §1.1);
    /// the first problem found is returned.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig, LayoutError> {
        Self::from_metadata(f.metadata())
    }

    /// As [`ModelConfig::from_gguf`] over a metadata list (first record of a key wins).
    pub fn from_metadata(md: &[(String, Value)]) -> Result<ModelConfig, LayoutError> {
        Self::read_all(md).map_err(|mut e| e.remove(0))
    }

    /// As [`ModelConfig::from_metadata`] but collecting every problem.
    pub fn read_all(md: &[(String, Value)]) -> Result<ModelConfig, Vec<LayoutError>> {
        let mut r = Reader {
            md,
            errors: Vec::new(),
        };
        match r.get(keys::ARCHITECTURE) {
            Some(Value::String(s)) if s == ARCH || s == MTP_ARCH => {}
            Some(Value::String(s)) => r.errors.push(LayoutError::Architecture {
                found: s.clone(),
                expected: ARCH.into(),
            }),
            Some(v) => r.errors.push(LayoutError::WrongType {
                key: keys::ARCHITECTURE.into(),
                expected: "STRING".into(),
                found: type_desc(v),
            }),
            None => {}
        }
        let n_embd = r.u32(keys::EMBEDDING_LENGTH);
        let vocab_size = r.u32(keys::VOCAB_SIZE);
        let n_head = r.u32(keys::HEAD_COUNT);
        let n_head_kv = r.u32(keys::HEAD_COUNT_KV);
        let head_dim = r.u32(keys::KEY_LENGTH);
        let value_length = r.u32(keys::VALUE_LENGTH);
        let rope_dim = r.u32(keys::ROPE_DIM);
        let q_lora_rank = r.u32(keys::Q_LORA_RANK);
        let o_lora_rank = r.u32(keys::O_LORA_RANK);
        let o_groups = r.u32(keys::O_GROUPS);
        let n_expert = r.u32(keys::EXPERT_COUNT);
        let n_expert_used = r.u32(keys::EXPERT_USED);
        let expert_ffn = r.u32(keys::EXPERT_FFN);
        let n_expert_shared = r.u32(keys::EXPERT_SHARED);
        let n_hash_layers = r.u32(keys::HASH_LAYERS);
        for key in [keys::EXPERT_GROUP_COUNT, keys::EXPERT_GROUP_USED] {
            if let Some(Value::U32(v)) = r.get(key) {
                if *v != 0 {
                    r.errors.push(LayoutError::BadValue {
                        key: key.into(),
                        problem: format!(
                            "is {v}, expected 0 (group-limited routing is not part of DeepSeek V4)"
                        ),
                    });
                }
            }
        }
        let sliding_window = r.u32(keys::SLIDING_WINDOW);
        let indexer_heads = r.u32(keys::INDEXER_HEADS);
        let indexer_head_dim = r.u32(keys::INDEXER_HEAD_DIM);
        let indexer_top_k = r.u32(keys::INDEXER_TOP_K);
        let hc_count = r.u32(keys::HC_COUNT);
        let sinkhorn_iters = r.u32(keys::SINKHORN_ITERS);
        let n_layer = r.u32(keys::BLOCK_COUNT);
        let compress_ratios = r.ratios(n_layer);
        let swiglu_clamp = r.swiglu(n_layer);
        let rope_orig_ctx = r.u64(keys::ROPE_ORIG_CTX);
        let rope_freq_base = r.f32(keys::ROPE_FREQ_BASE);
        let rope_scaling_factor = r.f32(keys::ROPE_SCALING_FACTOR);
        let yarn_beta_fast = r.f32(keys::YARN_BETA_FAST);
        let yarn_beta_slow = r.f32(keys::YARN_BETA_SLOW);
        let compress_rope_freq_base = r.f32(keys::COMPRESS_ROPE_FREQ_BASE);
        let expert_weights_scale = r.f32(keys::EXPERT_WEIGHTS_SCALE);
        let rms_eps = r.f32(keys::RMS_EPS);
        let hc_eps = r.f32(keys::HC_EPS);
        let expert_weights_norm = r.bool(keys::EXPERT_WEIGHTS_NORM);
        let context_length = r.get(keys::CONTEXT_LENGTH).and_then(Value::as_u64);
        if let Some(kv) = n_head_kv {
            if kv != 1 {
                r.errors.push(LayoutError::BadValue {
                    key: keys::HEAD_COUNT_KV.into(),
                    problem: format!("is {kv}, expected 1 (one shared KV vector per token)"),
                });
            }
        }
        if !r.errors.is_empty() {
            return Err(r.errors);
        }
        // Every getter above pushed an error when it returned None, so these unwraps of
        // `Some` are guarded by the early return; still avoid panicking paths.
        let cfg = (|| {
            Some(ModelConfig {
                n_embd: n_embd?,
                n_layer: n_layer?,
                vocab_size: vocab_size?,
                n_head: n_head?,
                head_dim: head_dim?,
                value_length: value_length?,
                rope_dim: rope_dim?,
                q_lora_rank: q_lora_rank?,
                o_lora_rank: o_lora_rank?,
                o_groups: o_groups?,
                n_expert: n_expert?,
                n_expert_used: n_expert_used?,
                expert_ffn: expert_ffn?,
                n_expert_shared: n_expert_shared?,
                n_hash_layers: n_hash_layers?,
                sliding_window: sliding_window?,
                indexer_heads: indexer_heads?,
                indexer_head_dim: indexer_head_dim?,
                indexer_top_k: indexer_top_k?,
                hc_count: hc_count?,
                sinkhorn_iters: sinkhorn_iters?,
                rope_orig_ctx: rope_orig_ctx?,
                rope_freq_base: rope_freq_base?,
                rope_scaling_factor: rope_scaling_factor?,
                yarn_beta_fast: yarn_beta_fast?,
                yarn_beta_slow: yarn_beta_slow?,
                compress_rope_freq_base: compress_rope_freq_base?,
                expert_weights_scale: expert_weights_scale?,
                rms_eps: rms_eps?,
                hc_eps: hc_eps?,
                expert_weights_norm: expert_weights_norm?,
                compress_ratios: compress_ratios?,
                swiglu_clamp: swiglu_clamp?,
                context_length,
            })
        })();
        let Some(cfg) = cfg else {
            return Err(vec![LayoutError::Inconsistent(
                "metadata could not be read".into(),
            )]);
        };
        let problems = cfg.consistency_errors();
        if !problems.is_empty() {
            return Err(problems
                .into_iter()
                .map(LayoutError::Inconsistent)
                .collect());
        }
        Ok(cfg)
    }

    /// Structural relations every model (published or scaled) must satisfy so that the
    /// tensor shapes are well defined and the forward pass is meaningful (spec §7.3,
    /// model.md §9.1–9.2). Empty when all hold.
    pub fn consistency_errors(&self) -> Vec<String> {
        let mut e = Vec::new();
        let nonzero = [
            ("embedding_length", self.n_embd),
            ("block_count", self.n_layer),
            ("vocab_size", self.vocab_size),
            ("attention.head_count", self.n_head),
            ("attention.key_length", self.head_dim),
            ("attention.q_lora_rank", self.q_lora_rank),
            ("attention.output_lora_rank", self.o_lora_rank),
            ("attention.output_group_count", self.o_groups),
            ("expert_count", self.n_expert),
            ("expert_used_count", self.n_expert_used),
            ("expert_feed_forward_length", self.expert_ffn),
            ("attention.sliding_window", self.sliding_window),
            ("attention.indexer.head_count", self.indexer_heads),
            ("attention.indexer.key_length", self.indexer_head_dim),
            ("attention.indexer.top_k", self.indexer_top_k),
            ("hyper_connection.count", self.hc_count),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                e.push(format!("{name} is 0, expected a positive value"));
            }
        }
        if self.value_length != self.head_dim {
            e.push(format!(
                "attention.value_length={} differs from attention.key_length={} (K and V are one vector)",
                self.value_length, self.head_dim
            ));
        }
        if !self.rope_dim.is_multiple_of(2) || self.rope_dim > self.head_dim {
            e.push(format!(
                "rope.dimension_count={} must be even and at most key_length={}",
                self.rope_dim, self.head_dim
            ));
        } else if !(self.head_dim - self.rope_dim).is_multiple_of(64) {
            e.push(format!(
                "key_length - rope.dimension_count = {} must be a multiple of 64 (FP8 KV blocks)",
                self.head_dim - self.rope_dim
            ));
        }
        if self.o_groups != 0 && !self.n_head.is_multiple_of(self.o_groups) {
            e.push(format!(
                "attention.head_count={} is not divisible by attention.output_group_count={}",
                self.n_head, self.o_groups
            ));
        }
        if self.n_expert_used > self.n_expert {
            e.push(format!(
                "expert_used_count={} exceeds expert_count={}",
                self.n_expert_used, self.n_expert
            ));
        }
        if self.n_expert_shared != 1 {
            e.push(format!(
                "expert_shared_count={}, expected 1 (the shared-expert tensors hold one expert)",
                self.n_expert_shared
            ));
        }
        if self.n_hash_layers > self.n_layer {
            e.push(format!(
                "hash_layer_count={} exceeds block_count={}",
                self.n_hash_layers, self.n_layer
            ));
        }
        if self.indexer_head_dim != 0
            && (!self.indexer_head_dim.is_power_of_two()
                || !self.indexer_head_dim.is_multiple_of(32))
        {
            e.push(format!(
                "attention.indexer.key_length={} must be a power of two and a multiple of 32 (Hadamard, FP4 blocks)",
                self.indexer_head_dim
            ));
        }
        if (self.compress_ratios.len() as u64) < self.n_layer as u64 {
            e.push(format!(
                "attention.compress_ratios has {} entries, shorter than block_count={}",
                self.compress_ratios.len(),
                self.n_layer
            ));
        } else {
            e.extend(self.schedule_errors());
        }
        if (self.swiglu_clamp.len() as u64) < self.n_layer as u64 {
            e.push(format!(
                "swiglu_clamp_exp has {} entries, shorter than block_count={}",
                self.swiglu_clamp.len(),
                self.n_layer
            ));
        }
        e
    }

    /// Generic rules of the compress-ratio schedule: ratio-0 layers form a prefix, and
    /// every compressed layer uses ratio 4 (CSA) or a single other ratio ≥ 2 (HCA).
    fn schedule_errors(&self) -> Vec<String> {
        let mut e = Vec::new();
        let ratios = &self.compress_ratios[..self.n_layer as usize];
        let mut seen_compressed = None;
        let mut hca: Option<(usize, u32)> = None;
        for (l, &r) in ratios.iter().enumerate() {
            if r == 0 {
                if let Some(prev) = seen_compressed {
                    e.push(format!(
                        "unexpected compression ratio at layer {l}: got 0 after compressed layer {prev} (ratio-0 layers must come first)"
                    ));
                }
                continue;
            }
            seen_compressed.get_or_insert(l);
            if r == CSA_RATIO {
                continue;
            }
            if r == 1 {
                e.push(format!(
                    "unexpected compression ratio at layer {l}: got 1, expected 0, 4 or an HCA ratio >= 2"
                ));
                continue;
            }
            match hca {
                None => hca = Some((l, r)),
                Some((l0, r0)) if r0 != r => e.push(format!(
                    "unexpected compression ratio at layer {l}: got {r}, expected {r0} like layer {l0} (one HCA ratio per model)"
                )),
                _ => {}
            }
        }
        e
    }

    /// Set one field by name from text (`n_embd=64`-style overrides of the CLI). Field
    /// names are the struct's; `compress_ratios` and `swiglu_clamp` take comma lists,
    /// `context_length` takes a number or `none`.
    pub fn set_field(&mut self, field: &str, value: &str) -> Result<(), String> {
        fn num<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, String> {
            v.trim()
                .parse()
                .map_err(|_| format!("{field}: cannot parse {v:?}"))
        }
        fn list<T: std::str::FromStr>(field: &str, v: &str) -> Result<Vec<T>, String> {
            v.split(',').map(|x| num(field, x)).collect()
        }
        match field {
            "n_embd" => self.n_embd = num(field, value)?,
            "n_layer" => self.n_layer = num(field, value)?,
            "vocab_size" => self.vocab_size = num(field, value)?,
            "n_head" => self.n_head = num(field, value)?,
            "head_dim" => {
                self.head_dim = num(field, value)?;
                self.value_length = self.head_dim;
            }
            "value_length" => self.value_length = num(field, value)?,
            "rope_dim" => self.rope_dim = num(field, value)?,
            "q_lora_rank" => self.q_lora_rank = num(field, value)?,
            "o_lora_rank" => self.o_lora_rank = num(field, value)?,
            "o_groups" => self.o_groups = num(field, value)?,
            "n_expert" => self.n_expert = num(field, value)?,
            "n_expert_used" => self.n_expert_used = num(field, value)?,
            "expert_ffn" => self.expert_ffn = num(field, value)?,
            "n_expert_shared" => self.n_expert_shared = num(field, value)?,
            "n_hash_layers" => self.n_hash_layers = num(field, value)?,
            "sliding_window" => self.sliding_window = num(field, value)?,
            "indexer_heads" => self.indexer_heads = num(field, value)?,
            "indexer_head_dim" => self.indexer_head_dim = num(field, value)?,
            "indexer_top_k" => self.indexer_top_k = num(field, value)?,
            "hc_count" => self.hc_count = num(field, value)?,
            "sinkhorn_iters" => self.sinkhorn_iters = num(field, value)?,
            "rope_orig_ctx" => self.rope_orig_ctx = num(field, value)?,
            "rope_freq_base" => self.rope_freq_base = num(field, value)?,
            "rope_scaling_factor" => self.rope_scaling_factor = num(field, value)?,
            "yarn_beta_fast" => self.yarn_beta_fast = num(field, value)?,
            "yarn_beta_slow" => self.yarn_beta_slow = num(field, value)?,
            "compress_rope_freq_base" => self.compress_rope_freq_base = num(field, value)?,
            "expert_weights_scale" => self.expert_weights_scale = num(field, value)?,
            "rms_eps" => self.rms_eps = num(field, value)?,
            "hc_eps" => self.hc_eps = num(field, value)?,
            "expert_weights_norm" => self.expert_weights_norm = num(field, value)?,
            "compress_ratios" => self.compress_ratios = list(field, value)?,
            "swiglu_clamp" => self.swiglu_clamp = list(field, value)?,
            "context_length" => {
                self.context_length = if value == "none" {
                    None
                } else {
                    Some(num(field, value)?)
                }
            }
            _ => return Err(format!("unknown model config field {field:?}")),
        }
        Ok(())
    }

    /// True when the metadata claims the real model (`block_count == 43`): the strict
    /// published-shape checks of spec §5 then apply.
    pub fn claims_published_shape(&self) -> bool {
        self.n_layer == 43
    }

    /// Differences from the published constants, as ds4.c words them
    /// (`expected NAME=EXPECTED for DeepSeek4 Flash, got GOT`). Empty for the real model.
    pub fn published_mismatches(&self) -> Vec<String> {
        let p = ModelConfig::published();
        let mut e = Vec::new();
        let mut u = |name: &str, got: u64, exp: u64| {
            if got != exp {
                e.push(format!(
                    "expected {name}={exp} for DeepSeek4 Flash, got {got}"
                ));
            }
        };
        u("embedding_length", self.n_embd as u64, p.n_embd as u64);
        u("vocab_size", self.vocab_size as u64, p.vocab_size as u64);
        u("attention.head_count", self.n_head as u64, p.n_head as u64);
        u(
            "attention.key_length",
            self.head_dim as u64,
            p.head_dim as u64,
        );
        u(
            "attention.value_length",
            self.value_length as u64,
            p.value_length as u64,
        );
        u(
            "rope.dimension_count",
            self.rope_dim as u64,
            p.rope_dim as u64,
        );
        u(
            "attention.q_lora_rank",
            self.q_lora_rank as u64,
            p.q_lora_rank as u64,
        );
        u(
            "attention.output_lora_rank",
            self.o_lora_rank as u64,
            p.o_lora_rank as u64,
        );
        u(
            "attention.output_group_count",
            self.o_groups as u64,
            p.o_groups as u64,
        );
        u("expert_count", self.n_expert as u64, p.n_expert as u64);
        u(
            "expert_used_count",
            self.n_expert_used as u64,
            p.n_expert_used as u64,
        );
        u(
            "expert_feed_forward_length",
            self.expert_ffn as u64,
            p.expert_ffn as u64,
        );
        u(
            "expert_shared_count",
            self.n_expert_shared as u64,
            p.n_expert_shared as u64,
        );
        u(
            "hash_layer_count",
            self.n_hash_layers as u64,
            p.n_hash_layers as u64,
        );
        u(
            "attention.sliding_window",
            self.sliding_window as u64,
            p.sliding_window as u64,
        );
        u(
            "attention.indexer.head_count",
            self.indexer_heads as u64,
            p.indexer_heads as u64,
        );
        u(
            "attention.indexer.key_length",
            self.indexer_head_dim as u64,
            p.indexer_head_dim as u64,
        );
        u(
            "attention.indexer.top_k",
            self.indexer_top_k as u64,
            p.indexer_top_k as u64,
        );
        u(
            "hyper_connection.count",
            self.hc_count as u64,
            p.hc_count as u64,
        );
        u(
            "hyper_connection.sinkhorn_iterations",
            self.sinkhorn_iters as u64,
            p.sinkhorn_iters as u64,
        );
        u("block_count", self.n_layer as u64, p.n_layer as u64);
        u(
            "rope.scaling.original_context_length",
            self.rope_orig_ctx,
            p.rope_orig_ctx,
        );
        let n = p.n_layer as usize;
        for l in 0..n.min(self.compress_ratios.len()) {
            let (got, exp) = (self.compress_ratios[l], published_ratio(l as u32));
            if got != exp {
                e.push(format!(
                    "unexpected DeepSeek4 compression ratio at layer {l}: got {got}, expected {exp}"
                ));
            }
        }
        for l in 0..n.min(self.swiglu_clamp.len()) {
            let got = self.swiglu_clamp[l];
            if (got - 10.0).abs() > 1e-5 {
                e.push(format!(
                    "unexpected DeepSeek4 swiglu_clamp_exp at layer {l}: got {got}, expected 10"
                ));
            }
        }
        let mut f = |name: &str, got: f32, exp: f32| {
            if (got - exp).abs() > exp.abs().max(1.0) * 1e-6 {
                e.push(format!(
                    "expected {name}={exp} for DeepSeek4 Flash, got {got}"
                ));
            }
        };
        f("rope.freq_base", self.rope_freq_base, p.rope_freq_base);
        f(
            "rope.scaling.factor",
            self.rope_scaling_factor,
            p.rope_scaling_factor,
        );
        f(
            "rope.scaling.yarn_beta_fast",
            self.yarn_beta_fast,
            p.yarn_beta_fast,
        );
        f(
            "rope.scaling.yarn_beta_slow",
            self.yarn_beta_slow,
            p.yarn_beta_slow,
        );
        f(
            "attention.compress_rope_freq_base",
            self.compress_rope_freq_base,
            p.compress_rope_freq_base,
        );
        f(
            "expert_weights_scale",
            self.expert_weights_scale,
            p.expert_weights_scale,
        );
        f("attention.layer_norm_rms_epsilon", self.rms_eps, p.rms_eps);
        f("hyper_connection.epsilon", self.hc_eps, p.hc_eps);
        if !self.expert_weights_norm {
            e.push("expected expert_weights_norm=true for DeepSeek4 Flash, got false".into());
        }
        e
    }

    /// The kind of layer `l` (derived from `compress_ratios[l]` and `hash_layer_count`).
    /// Layers past the ratio list are treated as ratio 0.
    pub fn layer_kind(&self, l: u32) -> LayerKind {
        let ratio = self.compress_ratios.get(l as usize).copied().unwrap_or(0);
        let attn = match ratio {
            0 => AttnKind::Swa,
            CSA_RATIO => AttnKind::Csa,
            _ => AttnKind::Hca,
        };
        LayerKind {
            ratio,
            attn,
            hash: l < self.n_hash_layers,
        }
    }

    /// HC state width `hc_count · n_embd`.
    pub fn hc_dim(&self) -> u64 {
        self.hc_count as u64 * self.n_embd as u64
    }

    /// HC mix width `2·C + C²`.
    pub fn hc_mix(&self) -> u64 {
        let c = self.hc_count as u64;
        2 * c + c * c
    }

    /// Compressor output width of a layer kind (2·head_dim for CSA, head_dim for HCA).
    pub fn compressor_width(&self, kind: LayerKind) -> u64 {
        match kind.attn {
            AttnKind::Swa => 0,
            AttnKind::Csa => 2 * self.head_dim as u64,
            AttnKind::Hca => self.head_dim as u64,
        }
    }

    /// The `deepseek4.*` and `general.architecture` records in the published key types
    /// (UINT32 scalars, FLOAT32 floats, BOOL, INT32 ratio array, FLOAT32 clamp array),
    /// plus the keys llama.cpp's loader wants (spec §7.2).
    pub fn metadata_kvs(&self) -> Vec<(String, Value)> {
        self.kvs_with_arch(ARCH)
    }

    /// As [`ModelConfig::metadata_kvs`] with another `general.architecture` value (the
    /// MTP file uses [`MTP_ARCH`]).
    pub fn kvs_with_arch(&self, arch: &str) -> Vec<(String, Value)> {
        let mut v: Vec<(String, Value)> = Vec::new();
        let mut put = |k: &str, val: Value| v.push((k.to_string(), val));
        put(keys::ARCHITECTURE, Value::String(arch.into()));
        if let Some(c) = self.context_length {
            put(keys::CONTEXT_LENGTH, u32_or_u64(c));
        }
        put(keys::BLOCK_COUNT, Value::U32(self.n_layer));
        put(keys::EMBEDDING_LENGTH, Value::U32(self.n_embd));
        put(keys::VOCAB_SIZE, Value::U32(self.vocab_size));
        put(keys::HEAD_COUNT, Value::U32(self.n_head));
        put(keys::HEAD_COUNT_KV, Value::U32(1));
        put(keys::KEY_LENGTH, Value::U32(self.head_dim));
        put(keys::VALUE_LENGTH, Value::U32(self.value_length));
        put(keys::ROPE_DIM, Value::U32(self.rope_dim));
        put(keys::Q_LORA_RANK, Value::U32(self.q_lora_rank));
        put(keys::O_LORA_RANK, Value::U32(self.o_lora_rank));
        put(keys::O_GROUPS, Value::U32(self.o_groups));
        put(keys::EXPERT_COUNT, Value::U32(self.n_expert));
        put(keys::EXPERT_USED, Value::U32(self.n_expert_used));
        put(keys::EXPERT_FFN, Value::U32(self.expert_ffn));
        put(keys::EXPERT_SHARED, Value::U32(self.n_expert_shared));
        put(keys::HASH_LAYERS, Value::U32(self.n_hash_layers));
        put(keys::SLIDING_WINDOW, Value::U32(self.sliding_window));
        put(keys::INDEXER_HEADS, Value::U32(self.indexer_heads));
        put(keys::INDEXER_HEAD_DIM, Value::U32(self.indexer_head_dim));
        put(keys::INDEXER_TOP_K, Value::U32(self.indexer_top_k));
        put(keys::HC_COUNT, Value::U32(self.hc_count));
        put(keys::SINKHORN_ITERS, Value::U32(self.sinkhorn_iters));
        put(keys::ROPE_ORIG_CTX, u32_or_u64(self.rope_orig_ctx));
        put(keys::ROPE_FREQ_BASE, Value::F32(self.rope_freq_base));
        put(
            keys::ROPE_SCALING_FACTOR,
            Value::F32(self.rope_scaling_factor),
        );
        put(keys::YARN_BETA_FAST, Value::F32(self.yarn_beta_fast));
        put(keys::YARN_BETA_SLOW, Value::F32(self.yarn_beta_slow));
        put(
            keys::COMPRESS_ROPE_FREQ_BASE,
            Value::F32(self.compress_rope_freq_base),
        );
        put(
            keys::EXPERT_WEIGHTS_SCALE,
            Value::F32(self.expert_weights_scale),
        );
        put(keys::RMS_EPS, Value::F32(self.rms_eps));
        put(keys::HC_EPS, Value::F32(self.hc_eps));
        put(
            keys::EXPERT_WEIGHTS_NORM,
            Value::Bool(self.expert_weights_norm),
        );
        let ratios_fit_i32 = self.compress_ratios.iter().all(|&r| r <= i32::MAX as u32);
        put(
            keys::COMPRESS_RATIOS,
            if ratios_fit_i32 {
                Value::i32_array(
                    &self
                        .compress_ratios
                        .iter()
                        .map(|&r| r as i32)
                        .collect::<Vec<_>>(),
                )
            } else {
                Value::u32_array(&self.compress_ratios)
            },
        );
        put(keys::SWIGLU_CLAMP, Value::f32_array(&self.swiglu_clamp));
        put(keys::EXPERT_GATING_FUNC, Value::U32(4));
        put(keys::ROPE_SCALING_TYPE, Value::String("yarn".into()));
        v
    }

    /// Add [`ModelConfig::metadata_kvs`] to a writer.
    pub fn write_metadata(&self, w: &mut GgufWriter) {
        for (k, v) in self.metadata_kvs() {
            w.add_kv(k, v);
        }
    }
}

fn u32_or_u64(v: u64) -> Value {
    match u32::try_from(v) {
        Ok(x) => Value::U32(x),
        Err(_) => Value::U64(v),
    }
}

/// "UINT32" or "ARRAY of INT32".
pub fn type_desc(v: &Value) -> String {
    match v {
        Value::Array(t, _) => format!("ARRAY of {t}"),
        other => other.value_type().name().to_string(),
    }
}

struct Reader<'a> {
    md: &'a [(String, Value)],
    errors: Vec<LayoutError>,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.md.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn missing(&mut self, key: &str, expected: &str) {
        self.errors.push(LayoutError::MissingKey {
            key: key.into(),
            expected: expected.into(),
        });
    }

    fn wrong(&mut self, key: &str, expected: &str, v: &Value) {
        self.errors.push(LayoutError::WrongType {
            key: key.into(),
            expected: expected.into(),
            found: type_desc(v),
        });
    }

    fn typed<T>(&mut self, key: &str, expected: &str, conv: fn(&Value) -> Option<T>) -> Option<T> {
        match self.get(key) {
            None => {
                self.missing(key, expected);
                None
            }
            Some(v) => match conv(v) {
                Some(x) => Some(x),
                None => {
                    let v = v.clone();
                    self.wrong(key, expected, &v);
                    None
                }
            },
        }
    }

    fn u32(&mut self, key: &str) -> Option<u32> {
        self.typed(key, "UINT32", Value::as_u32)
    }

    fn u64(&mut self, key: &str) -> Option<u64> {
        self.typed(key, "UINT64 or UINT32", Value::as_u64)
    }

    fn f32(&mut self, key: &str) -> Option<f32> {
        self.typed(key, "FLOAT32, FLOAT64, UINT32 or INT32", Value::as_f32)
    }

    fn bool(&mut self, key: &str) -> Option<bool> {
        self.typed(key, "BOOL", Value::as_bool)
    }

    fn array(&mut self, key: &str, expected: &str, elems: &[ValueType]) -> Option<Vec<Value>> {
        match self.get(key) {
            None => {
                self.missing(key, expected);
                None
            }
            Some(Value::Array(t, items)) if elems.contains(t) => Some(items.clone()),
            Some(v) => {
                let v = v.clone();
                self.wrong(key, expected, &v);
                None
            }
        }
    }

    fn check_len(&mut self, key: &str, len: usize, n_layer: Option<u32>) -> bool {
        match n_layer {
            Some(n) if (len as u64) < n as u64 => {
                self.errors.push(LayoutError::BadValue {
                    key: key.into(),
                    problem: format!("has {len} entries, shorter than block_count={n}"),
                });
                false
            }
            _ => true,
        }
    }

    fn ratios(&mut self, n_layer: Option<u32>) -> Option<Vec<u32>> {
        let key = keys::COMPRESS_RATIOS;
        let items = self.array(
            key,
            "ARRAY of UINT32 or INT32",
            &[ValueType::U32, ValueType::I32],
        )?;
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            match *v {
                Value::U32(x) => out.push(x),
                Value::I32(x) if x >= 0 => out.push(x as u32),
                Value::I32(x) => {
                    self.errors.push(LayoutError::BadValue {
                        key: key.into(),
                        problem: format!("entry {i} is negative ({x})"),
                    });
                    return None;
                }
                _ => {
                    self.errors.push(LayoutError::BadValue {
                        key: key.into(),
                        problem: format!("entry {i} is not an integer"),
                    });
                    return None;
                }
            }
        }
        self.check_len(key, out.len(), n_layer).then_some(out)
    }

    fn swiglu(&mut self, n_layer: Option<u32>) -> Option<Vec<f32>> {
        let key = keys::SWIGLU_CLAMP;
        let items = self.array(
            key,
            "ARRAY of FLOAT32 or FLOAT64",
            &[ValueType::F32, ValueType::F64],
        )?;
        let out: Vec<f32> = items
            .iter()
            .map(|v| match *v {
                Value::F32(x) => x,
                Value::F64(x) => x as f32,
                _ => f32::NAN,
            })
            .collect();
        if let Some(i) = out.iter().position(|x| !x.is_finite()) {
            self.errors.push(LayoutError::BadValue {
                key: key.into(),
                problem: format!("entry {i} is not a finite number"),
            });
            return None;
        }
        self.check_len(key, out.len(), n_layer).then_some(out)
    }
}

// ---------------------------------------------------------------------------------------
// Tensor directory
// ---------------------------------------------------------------------------------------

/// Which weights a file's variable-type tensors use (spec §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Recipe {
    /// Published q2 family: IQ2_XXS gate/up, Q2_K down, Q8_0 projections, F16 dense, F32 1-D.
    Q2,
    /// Published q4 family: Q4_K experts, otherwise as Q2.
    Q4,
    /// Every tensor of rank ≥ 2 in F16 (1-D stay F32, tid2eid I32).
    F16,
    /// Every float tensor in F32 (tid2eid I32).
    F32,
}

impl Recipe {
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Q2 => "q2",
            Recipe::Q4 => "q4",
            Recipe::F16 => "f16",
            Recipe::F32 => "f32",
        }
    }

    pub fn parse(s: &str) -> Option<Recipe> {
        match s.to_ascii_lowercase().as_str() {
            "q2" => Some(Recipe::Q2),
            "q4" => Some(Recipe::Q4),
            "f16" => Some(Recipe::F16),
            "f32" => Some(Recipe::F32),
            _ => None,
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Tensor families: tensors with the same type rule and the same random-init statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `token_embd.weight` (F16).
    TokenEmbd,
    /// `output.weight`, the LM head (Q8_0).
    Output,
    /// HC control projections `hc_attn_fn`, `hc_ffn_fn`, `output_hc_fn`, MTP `hc_head_fn`
    /// (F16 in the main file; F16 or F32 in the MTP file).
    HcFn,
    /// HC scales `*_scale` (F32, 1-D).
    HcScale,
    /// HC biases `*_base` (F32, 1-D).
    HcBase,
    /// RMSNorm weights (F32, 1-D).
    Norm,
    /// `attn_sinks` (F32, 1-D).
    Sinks,
    /// attention projections q_a, q_b, kv, output_a, output_b and MTP e_proj/h_proj (Q8_0).
    AttnProj,
    /// compressor kv/gate and indexer q_b/proj/compressor kv/gate (F16).
    AuxProj,
    /// compressor positional biases `*_compressor_ape` (F16).
    Ape,
    /// router `ffn_gate_inp` (F16 main; F16 or F32 MTP).
    Router,
    /// router selection bias `exp_probs_b.bias` (F32, 1-D).
    RouterBias,
    /// hash routing table `ffn_gate_tid2eid` (I32).
    Tid2Eid,
    /// routed experts gate (IQ2_XXS / Q2_K / Q4_K; same type as up).
    ExpertGate,
    /// routed experts up.
    ExpertUp,
    /// routed experts down.
    ExpertDown,
    /// shared expert gate/up/down (Q8_0).
    SharedExpert,
}

impl Family {
    pub fn is_routed_expert(self) -> bool {
        matches!(
            self,
            Family::ExpertGate | Family::ExpertUp | Family::ExpertDown
        )
    }
}

/// Types ds4 accepts for routed experts.
pub const ROUTED_EXPERT_TYPES: [GgmlType; 3] = [GgmlType::Iq2Xxs, GgmlType::Q2K, GgmlType::Q4K];

/// One expected tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    /// GGUF order (`dims[0]` contiguous); `dims.len()` is the required n_dims.
    pub dims: Vec<u64>,
    pub family: Family,
    /// The types ds4 accepts for this tensor (spec §2.1).
    pub allowed: Vec<GgmlType>,
    /// The type the recipe writes.
    pub recipe_type: GgmlType,
}

impl TensorSpec {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes in the recipe type.
    pub fn n_bytes(&self) -> u64 {
        self.recipe_type
            .bytes_for(self.n_elements())
            .unwrap_or(u64::MAX)
    }

    /// Fan-in (row length `ne0`).
    pub fn fan_in(&self) -> u64 {
        self.dims[0]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Main,
    Mtp,
}

fn pick(family: Family, recipe: Recipe, file: FileKind, ndims: usize) -> (Vec<GgmlType>, GgmlType) {
    use GgmlType as T;
    let one = |t: T| (vec![t], t);
    let float = |published: T, allowed: Vec<T>| {
        let t = match recipe {
            Recipe::Q2 | Recipe::Q4 => published,
            Recipe::F16 => T::F16,
            Recipe::F32 => T::F32,
        };
        (allowed, t)
    };
    if ndims == 1 {
        return one(T::F32);
    }
    match family {
        Family::Tid2Eid => one(T::I32),
        Family::HcFn | Family::Router if file == FileKind::Mtp => {
            let (a, t) = float(T::F32, vec![T::F16, T::F32]);
            (a, t)
        }
        Family::TokenEmbd | Family::HcFn | Family::Router | Family::AuxProj | Family::Ape => {
            float(T::F16, vec![T::F16])
        }
        Family::Output | Family::AttnProj | Family::SharedExpert => float(T::Q8_0, vec![T::Q8_0]),
        Family::ExpertGate | Family::ExpertUp | Family::ExpertDown => {
            let t = match (recipe, family) {
                (Recipe::Q2, Family::ExpertDown) => T::Q2K,
                (Recipe::Q2, _) => T::Iq2Xxs,
                (Recipe::Q4, _) => T::Q4K,
                (Recipe::F16, _) => T::F16,
                (Recipe::F32, _) => T::F32,
            };
            (ROUTED_EXPERT_TYPES.to_vec(), t)
        }
        // rank ≥ 2 members of 1-D families do not occur; keep them F32.
        Family::HcScale | Family::HcBase | Family::Norm | Family::Sinks | Family::RouterBias => {
            one(T::F32)
        }
    }
}

struct Builder {
    recipe: Recipe,
    file: FileKind,
    out: Vec<TensorSpec>,
}

impl Builder {
    fn add(&mut self, name: String, dims: &[u64], family: Family) {
        let (allowed, recipe_type) = pick(family, self.recipe, self.file, dims.len());
        self.out.push(TensorSpec {
            name,
            dims: dims.to_vec(),
            family,
            allowed,
            recipe_type,
        });
    }
}

/// The tensors shared by main layers and the MTP block, in directory order:
/// HC/attention part (before the compressor), then the FFN part.
fn attn_part(b: &mut Builder, cfg: &ModelConfig, p: &str) {
    let e = cfg.n_embd as u64;
    let d = cfg.head_dim as u64;
    let h = cfg.n_head as u64;
    let gq = cfg.q_lora_rank as u64;
    let g = cfg.o_groups.max(1) as u64;
    let go = cfg.o_lora_rank as u64;
    b.add(
        format!("{p}hc_attn_fn.weight"),
        &[cfg.hc_dim(), cfg.hc_mix()],
        Family::HcFn,
    );
    b.add(format!("{p}hc_attn_scale.weight"), &[3], Family::HcScale);
    b.add(
        format!("{p}hc_attn_base.weight"),
        &[cfg.hc_mix()],
        Family::HcBase,
    );
    b.add(format!("{p}attn_norm.weight"), &[e], Family::Norm);
    b.add(format!("{p}attn_q_a.weight"), &[e, gq], Family::AttnProj);
    b.add(format!("{p}attn_q_a_norm.weight"), &[gq], Family::Norm);
    b.add(
        format!("{p}attn_q_b.weight"),
        &[gq, h * d],
        Family::AttnProj,
    );
    b.add(format!("{p}attn_kv.weight"), &[e, d], Family::AttnProj);
    b.add(format!("{p}attn_kv_a_norm.weight"), &[d], Family::Norm);
    b.add(format!("{p}attn_sinks.weight"), &[h], Family::Sinks);
    b.add(
        format!("{p}attn_output_a.weight"),
        &[d * h / g, g * go],
        Family::AttnProj,
    );
    b.add(
        format!("{p}attn_output_b.weight"),
        &[g * go, e],
        Family::AttnProj,
    );
}

fn compressor_part(b: &mut Builder, cfg: &ModelConfig, p: &str, kind: LayerKind) {
    if !kind.has_compressor() {
        return;
    }
    let e = cfg.n_embd as u64;
    let d = cfg.head_dim as u64;
    let w = cfg.compressor_width(kind);
    b.add(
        format!("{p}attn_compressor_ape.weight"),
        &[w, kind.ratio as u64],
        Family::Ape,
    );
    b.add(
        format!("{p}attn_compressor_kv.weight"),
        &[e, w],
        Family::AuxProj,
    );
    b.add(
        format!("{p}attn_compressor_gate.weight"),
        &[e, w],
        Family::AuxProj,
    );
    b.add(
        format!("{p}attn_compressor_norm.weight"),
        &[d],
        Family::Norm,
    );
    if kind.has_indexer() {
        let gq = cfg.q_lora_rank as u64;
        let ih = cfg.indexer_heads as u64;
        let id = cfg.indexer_head_dim as u64;
        b.add(
            format!("{p}indexer.attn_q_b.weight"),
            &[gq, ih * id],
            Family::AuxProj,
        );
        b.add(format!("{p}indexer.proj.weight"), &[e, ih], Family::AuxProj);
        b.add(
            format!("{p}indexer_compressor_ape.weight"),
            &[2 * id, CSA_RATIO as u64],
            Family::Ape,
        );
        b.add(
            format!("{p}indexer_compressor_kv.weight"),
            &[e, 2 * id],
            Family::AuxProj,
        );
        b.add(
            format!("{p}indexer_compressor_gate.weight"),
            &[e, 2 * id],
            Family::AuxProj,
        );
        b.add(
            format!("{p}indexer_compressor_norm.weight"),
            &[id],
            Family::Norm,
        );
    }
}

fn ffn_part(b: &mut Builder, cfg: &ModelConfig, p: &str, hash: bool) {
    let e = cfg.n_embd as u64;
    let x = cfg.n_expert as u64;
    let f = cfg.expert_ffn as u64;
    b.add(
        format!("{p}hc_ffn_fn.weight"),
        &[cfg.hc_dim(), cfg.hc_mix()],
        Family::HcFn,
    );
    b.add(format!("{p}hc_ffn_scale.weight"), &[3], Family::HcScale);
    b.add(
        format!("{p}hc_ffn_base.weight"),
        &[cfg.hc_mix()],
        Family::HcBase,
    );
    b.add(format!("{p}ffn_norm.weight"), &[e], Family::Norm);
    b.add(format!("{p}ffn_gate_inp.weight"), &[e, x], Family::Router);
    if hash {
        b.add(
            format!("{p}ffn_gate_tid2eid.weight"),
            &[cfg.n_expert_used as u64, cfg.vocab_size as u64],
            Family::Tid2Eid,
        );
    } else {
        b.add(format!("{p}exp_probs_b.bias"), &[x], Family::RouterBias);
    }
    b.add(
        format!("{p}ffn_gate_exps.weight"),
        &[e, f, x],
        Family::ExpertGate,
    );
    b.add(
        format!("{p}ffn_up_exps.weight"),
        &[e, f, x],
        Family::ExpertUp,
    );
    b.add(
        format!("{p}ffn_down_exps.weight"),
        &[f, e, x],
        Family::ExpertDown,
    );
    b.add(
        format!("{p}ffn_gate_shexp.weight"),
        &[e, f],
        Family::SharedExpert,
    );
    b.add(
        format!("{p}ffn_up_shexp.weight"),
        &[e, f],
        Family::SharedExpert,
    );
    b.add(
        format!("{p}ffn_down_shexp.weight"),
        &[f, e],
        Family::SharedExpert,
    );
}

/// The tensors of one main layer, in directory order.
pub fn expected_layer_tensors(cfg: &ModelConfig, recipe: Recipe, l: u32) -> Vec<TensorSpec> {
    let mut b = Builder {
        recipe,
        file: FileKind::Main,
        out: Vec::new(),
    };
    let p = format!("blk.{l}.");
    let kind = cfg.layer_kind(l);
    attn_part(&mut b, cfg, &p);
    compressor_part(&mut b, cfg, &p, kind);
    ffn_part(&mut b, cfg, &p, kind.hash);
    b.out
}

/// The full tensor directory of a main model file, in the order synth writes it:
/// `token_embd`, layers 0..n_layer, then the output head tensors.
pub fn expected_tensors(cfg: &ModelConfig, recipe: Recipe) -> Vec<TensorSpec> {
    let mut b = Builder {
        recipe,
        file: FileKind::Main,
        out: Vec::new(),
    };
    let e = cfg.n_embd as u64;
    let v = cfg.vocab_size as u64;
    let c = cfg.hc_count as u64;
    b.add("token_embd.weight".into(), &[e, v], Family::TokenEmbd);
    for l in 0..cfg.n_layer {
        b.out.extend(expected_layer_tensors(cfg, recipe, l));
    }
    b.add("output_hc_base.weight".into(), &[c], Family::HcBase);
    b.add(
        "output_hc_fn.weight".into(),
        &[cfg.hc_dim(), c],
        Family::HcFn,
    );
    b.add("output_hc_scale.weight".into(), &[1], Family::HcScale);
    b.add("output_norm.weight".into(), &[e], Family::Norm);
    b.add("output.weight".into(), &[e, v], Family::Output);
    b.out
}

/// The 32 tensors of the MTP file (spec §2.7). Recipe Q4 is the published file
/// (Q4_K experts, Q8_0 projections, F32 plain tensors); Q2 uses IQ2_XXS/Q2_K experts
/// with the same other types; F16/F32 make every rank-≥2 tensor that type.
pub fn expected_mtp_tensors(cfg: &ModelConfig, recipe: Recipe) -> Vec<TensorSpec> {
    let mut b = Builder {
        recipe,
        file: FileKind::Mtp,
        out: Vec::new(),
    };
    let e = cfg.n_embd as u64;
    let c = cfg.hc_count as u64;
    let p = "mtp.0.";
    b.add(format!("{p}hc_head_base.weight"), &[c], Family::HcBase);
    b.add(
        format!("{p}hc_head_fn.weight"),
        &[cfg.hc_dim(), c],
        Family::HcFn,
    );
    b.add(format!("{p}hc_head_scale.weight"), &[1], Family::HcScale);
    b.add(format!("{p}e_proj.weight"), &[e, e], Family::AttnProj);
    b.add(format!("{p}h_proj.weight"), &[e, e], Family::AttnProj);
    b.add(format!("{p}enorm.weight"), &[e], Family::Norm);
    b.add(format!("{p}hnorm.weight"), &[e], Family::Norm);
    b.add(format!("{p}norm.weight"), &[e], Family::Norm);
    attn_part(&mut b, cfg, p);
    ffn_part(&mut b, cfg, p, false);
    b.out
}

/// Tensor-data bytes of a directory with every tensor padded to `alignment`.
pub fn total_data_bytes(specs: &[TensorSpec], alignment: u64) -> u64 {
    specs
        .iter()
        .map(|s| s.n_bytes().div_ceil(alignment) * alignment)
        .sum()
}

/// (type, count) census of a directory, sorted by type id.
pub fn type_census(specs: &[TensorSpec]) -> Vec<(GgmlType, usize)> {
    let mut v: Vec<(GgmlType, usize)> = Vec::new();
    for s in specs {
        match v.iter_mut().find(|(t, _)| *t == s.recipe_type) {
            Some((_, n)) => *n += 1,
            None => v.push((s.recipe_type, 1)),
        }
    }
    v.sort_by_key(|(t, _)| t.id());
    v
}
