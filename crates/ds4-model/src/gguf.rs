//! Loading a model from GGUF files: validation, config, zero-copy tensor views.

use crate::backend::{Backend, Cpu};
use crate::config::Config;
use crate::model::{Model, Numerics, Want};
use crate::weights::{ByteOwner, TensorData, TensorSource};
use anyhow::{bail, Context, Result};
use ds4_gguf::layout::ModelConfig;
use ds4_gguf::validate::{validate, Variant};
use ds4_gguf::GgufFile;
use std::path::Path;
use std::sync::Arc;

struct FileOwner(Arc<GgufFile>);
impl ByteOwner for FileOwner {
    fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// Tensors of an open GGUF file, handed out as views of its mmap.
#[derive(Clone)]
pub struct GgufSource {
    pub file: Arc<GgufFile>,
    owner: Arc<dyn ByteOwner>,
}

impl GgufSource {
    pub fn new(file: GgufFile) -> GgufSource {
        let file = Arc::new(file);
        let owner: Arc<dyn ByteOwner> = Arc::new(FileOwner(file.clone()));
        GgufSource { file, owner }
    }
}

impl TensorSource for GgufSource {
    fn tensor(&self, name: &str) -> Option<TensorData> {
        let t = self.file.tensor(name)?;
        let ty = t.ggml_type?;
        let dims = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<_>>>()?;
        TensorData::new(
            self.owner.clone(),
            usize::try_from(t.abs_offset).ok()?,
            usize::try_from(t.n_bytes).ok()?,
            ty,
            dims,
        )
        .ok()
    }
}

/// The forward-pass config of a GGUF model config.
pub fn config_from_layout(m: &ModelConfig) -> Result<Config> {
    let n = m.n_layer as usize;
    if m.compress_ratios.len() < n || m.swiglu_clamp.len() < n {
        bail!(
            "model config lists {} ratios and {} clamps for {n} layers",
            m.compress_ratios.len(),
            m.swiglu_clamp.len()
        );
    }
    if m.n_expert_shared != 1 {
        bail!(
            "{} shared experts; the forward pass supports exactly 1",
            m.n_expert_shared
        );
    }
    if !m.expert_weights_norm {
        bail!("expert_weights_norm = false is not supported (DeepSeek V4 normalises the routing weights)");
    }
    if m.value_length != m.head_dim {
        bail!(
            "value length {} differs from key length {} (K = V in DeepSeek V4)",
            m.value_length,
            m.head_dim
        );
    }
    let cfg = Config {
        vocab: m.vocab_size as usize,
        dim: m.n_embd as usize,
        n_layers: n,
        n_heads: m.n_head as usize,
        head_dim: m.head_dim as usize,
        rope_dim: m.rope_dim as usize,
        q_lora: m.q_lora_rank as usize,
        o_groups: m.o_groups as usize,
        o_lora: m.o_lora_rank as usize,
        n_experts: m.n_expert as usize,
        n_experts_used: m.n_expert_used as usize,
        ffn_dim: m.expert_ffn as usize,
        routed_scale: m.expert_weights_scale,
        swiglu_limit: m.swiglu_clamp.clone(),
        n_hash: m.n_hash_layers as usize,
        window: m.sliding_window as usize,
        compress_ratios: m.compress_ratios[..n].iter().map(|&r| r as usize).collect(),
        idx_heads: m.indexer_heads as usize,
        idx_dim: m.indexer_head_dim as usize,
        idx_topk: m.indexer_top_k as usize,
        n_hc: m.hc_count as usize,
        sinkhorn_iters: m.sinkhorn_iters as usize,
        hc_eps: m.hc_eps,
        rms_eps: m.rms_eps,
        rope_theta: m.rope_freq_base,
        compress_rope_theta: m.compress_rope_freq_base,
        yarn_factor: m.rope_scaling_factor,
        yarn_orig_ctx: m.rope_orig_ctx as usize,
        yarn_beta_fast: m.yarn_beta_fast,
        yarn_beta_slow: m.yarn_beta_slow,
    };
    cfg.check()?;
    Ok(cfg)
}

/// Open and validate a GGUF main-model file; a bad or foreign file fails with
/// the validator's message.
pub fn open_validated(path: &Path) -> Result<(GgufFile, Config)> {
    let f = GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let report = validate(&f);
    if !report.is_ok() {
        bail!(
            "{}: not a loadable DeepSeek V4 Flash model ({}):\n  {}",
            path.display(),
            report.summary(),
            report.errors.join("\n  ")
        );
    }
    if report.variant == Variant::Mtp {
        bail!(
            "{}: this is an MTP support file, not a main model",
            path.display()
        );
    }
    let m = ModelConfig::from_gguf(&f)
        .with_context(|| format!("{}: reading the model config", path.display()))?;
    let cfg =
        config_from_layout(&m).with_context(|| format!("{}: model config", path.display()))?;
    Ok((f, cfg))
}

/// Open an MTP support file (validated as such).
pub fn open_mtp(path: &Path) -> Result<GgufFile> {
    let f = GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let report = validate(&f);
    if !report.is_ok() || report.variant != Variant::Mtp {
        bail!(
            "{}: not a DeepSeek V4 Flash MTP file ({}):\n  {}",
            path.display(),
            report.summary(),
            report.errors.join("\n  ")
        );
    }
    Ok(f)
}

const GIB: f64 = (1u64 << 30) as f64;
/// Device workspace reserved for a 2048-token prefill chunk (activations,
/// f16 weight and activation copies of the GEMM path).
pub const WORKSPACE_BYTES: u64 = 6 << 30;

/// Load a model onto `be` from a main GGUF (and optionally its MTP file).
pub fn load<B: Backend>(be: B, path: &Path, mtp: Option<&Path>) -> Result<Model<B>> {
    let (f, cfg) = open_validated(path)?;
    if let Some(free) = be.mem_free() {
        // weights as stored (Q8_0 repacked in the same bytes) plus the
        // prefill workspace; KV is allocated (and checked) per session
        let weights: u64 = f.tensors().iter().map(|t| t.n_bytes).sum();
        let work = WORKSPACE_BYTES;
        let need = weights + work;
        if need > free as u64 {
            bail!(
                "{}: does not fit the GPU: {:.1} GiB of weights + {:.1} GiB of workspace > {:.1} GiB free",
                path.display(),
                weights as f64 / GIB,
                work as f64 / GIB,
                free as f64 / GIB
            );
        }
    }
    let src = GgufSource::new(f);
    let msrc = match mtp {
        Some(p) => Some(GgufSource::new(open_mtp(p)?)),
        None => None,
    };
    Model::bind(be, cfg, &src, msrc.as_ref().map(|s| s as &dyn TensorSource))
        .with_context(|| format!("{}: binding weights", path.display()))
}

/// Logits of every prefix of `ids` as a float32 `.npy` `[T, vocab]` (row `t`
/// = logits after tokens `0..=t`), computed on the CPU.
pub fn dump_logits(
    model_path: &Path,
    ids: &[u32],
    numerics: Numerics,
    out_npy: &Path,
) -> Result<()> {
    if ids.is_empty() {
        bail!("no prompt tokens to evaluate");
    }
    let model = load(Cpu, model_path, None)?;
    let mut s = model.session(numerics);
    let logits = model.forward(&mut s, ids, Want::All)?;
    crate::npy::write_f32(out_npy, &[ids.len(), model.cfg.vocab], &logits)
}
