//! Model hyper-parameters (spec/model.md §1) in the form the forward pass uses.

use anyhow::{bail, Result};

/// Attention kind of a layer (spec §1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnKind {
    /// Sliding window only (ratio 0).
    Swa,
    /// Compressed sparse attention: ratio 4, overlapping windows, lightning indexer.
    Csa,
    /// Heavily compressed attention: any other ratio, non-overlapping windows.
    Hca(usize),
}

impl AttnKind {
    pub fn from_ratio(r: usize) -> AttnKind {
        match r {
            0 => AttnKind::Swa,
            4 => AttnKind::Csa,
            r => AttnKind::Hca(r),
        }
    }
    pub fn ratio(self) -> usize {
        match self {
            AttnKind::Swa => 0,
            AttnKind::Csa => 4,
            AttnKind::Hca(r) => r,
        }
    }
}

/// Every shape and constant of the forward pass. Field names follow spec §1.1.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub vocab: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub rope_dim: usize,
    pub q_lora: usize,
    pub o_groups: usize,
    pub o_lora: usize,
    pub n_experts: usize,
    pub n_experts_used: usize,
    pub ffn_dim: usize,
    pub routed_scale: f32,
    /// SwiGLU clamp per main layer (the MTP block uses the last entry when the
    /// list has `n_layers + 1` entries, else the last main-layer value).
    pub swiglu_limit: Vec<f32>,
    pub n_hash: usize,
    pub window: usize,
    /// Compress ratio per main layer.
    pub compress_ratios: Vec<usize>,
    pub idx_heads: usize,
    pub idx_dim: usize,
    pub idx_topk: usize,
    pub n_hc: usize,
    pub sinkhorn_iters: usize,
    pub hc_eps: f32,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub compress_rope_theta: f32,
    pub yarn_factor: f32,
    pub yarn_orig_ctx: usize,
    pub yarn_beta_fast: f32,
    pub yarn_beta_slow: f32,
}

impl Config {
    /// The full DeepSeek V4 Flash configuration (spec §1.1, §1.2).
    pub fn flash() -> Config {
        let mut ratios = vec![0, 0];
        for l in 2..43 {
            ratios.push(if l % 2 == 0 { 4 } else { 128 });
        }
        Config {
            vocab: 129280,
            dim: 4096,
            n_layers: 43,
            n_heads: 64,
            head_dim: 512,
            rope_dim: 64,
            q_lora: 1024,
            o_groups: 8,
            o_lora: 1024,
            n_experts: 256,
            n_experts_used: 6,
            ffn_dim: 2048,
            routed_scale: 1.5,
            swiglu_limit: vec![10.0; 43],
            n_hash: 3,
            window: 128,
            compress_ratios: ratios,
            idx_heads: 64,
            idx_dim: 128,
            idx_topk: 512,
            n_hc: 4,
            sinkhorn_iters: 20,
            hc_eps: 1e-6,
            rms_eps: 1e-6,
            rope_theta: 10000.0,
            compress_rope_theta: 160000.0,
            yarn_factor: 16.0,
            yarn_orig_ctx: 65536,
            yarn_beta_fast: 32.0,
            yarn_beta_slow: 1.0,
        }
    }

    pub fn kind(&self, layer: usize) -> AttnKind {
        AttnKind::from_ratio(self.compress_ratios[layer])
    }
    pub fn limit(&self, layer: usize) -> f32 {
        let i = layer.min(self.swiglu_limit.len() - 1);
        self.swiglu_limit[i]
    }
    pub fn nope_dim(&self) -> usize {
        self.head_dim - self.rope_dim
    }
    pub fn hc_dim(&self) -> usize {
        self.n_hc * self.dim
    }
    pub fn hc_mix(&self) -> usize {
        (2 + self.n_hc) * self.n_hc
    }

    /// Reject configurations the forward pass cannot run (spec §9.1/§9.2 constraints).
    pub fn check(&self) -> Result<()> {
        let c = self;
        if c.vocab == 0 || c.dim == 0 || c.n_layers == 0 || c.n_heads == 0 {
            bail!("config: vocab, dim, layers and heads must be non-zero");
        }
        if c.compress_ratios.len() != c.n_layers {
            bail!(
                "config: {} compress ratios for {} layers",
                c.compress_ratios.len(),
                c.n_layers
            );
        }
        if c.swiglu_limit.is_empty() {
            bail!("config: empty swiglu clamp list");
        }
        if c.rope_dim == 0 || !c.rope_dim.is_multiple_of(2) || c.rope_dim > c.head_dim {
            bail!(
                "config: rope dims {} invalid for head dim {}",
                c.rope_dim,
                c.head_dim
            );
        }
        if !c.nope_dim().is_multiple_of(64) {
            bail!(
                "config: nope dims {} not a multiple of 64 (FP8 blocks)",
                c.nope_dim()
            );
        }
        if c.o_groups == 0 || !c.n_heads.is_multiple_of(c.o_groups) {
            bail!(
                "config: {} heads not divisible into {} groups",
                c.n_heads,
                c.o_groups
            );
        }
        if c.n_experts_used == 0 || c.n_experts_used > c.n_experts {
            bail!(
                "config: {} of {} experts used",
                c.n_experts_used,
                c.n_experts
            );
        }
        if c.n_hash > c.n_layers {
            bail!("config: {} hash layers > {} layers", c.n_hash, c.n_layers);
        }
        if c.window == 0 {
            bail!("config: zero sliding window");
        }
        if c.compress_ratios.contains(&4) {
            if !c.idx_dim.is_power_of_two()
                || !c.idx_dim.is_multiple_of(32)
                || c.idx_dim < c.rope_dim
            {
                bail!("config: indexer head dim {} must be a power of two, multiple of 32, >= rope dims", c.idx_dim);
            }
            if c.idx_heads == 0 || c.idx_topk == 0 {
                bail!("config: indexer heads and top-k must be non-zero");
            }
        }
        if c.compress_ratios.contains(&1) {
            bail!("config: compress ratio 1 is not a compression");
        }
        if c.n_hc == 0 || c.sinkhorn_iters == 0 {
            bail!("config: hyper-connection count and Sinkhorn iterations must be non-zero");
        }
        Ok(())
    }
}
