//! Synthetic DeepSeek V4 Flash GGUF files with random weights (issue 2 item 6).
//!
//! The directory and metadata follow [`crate::layout`] exactly, so a synthetic file is
//! loadable by the same code as the published one. Weights are deterministic per seed:
//! every value comes from a counter-based generator keyed by (seed, tensor name,
//! element or block index), so tensors are generated in parallel chunks (rayon) and the
//! bytes do not depend on chunking, thread count or on which other tensors the file holds.
//!
//! Statistics (model.md §9.3): projections std ≈ 1/sqrt(fan_in), HC `fn` std 0.02,
//! HC `base` 0, HC `scale` 1, norm weights ≈ 1, `ape`/sinks/router bias std 1,
//! embedding std 1, `tid2eid` rows of distinct experts in `[0, n_expert)`.
//! Quantized tensors are produced directly as random valid blocks whose scales give the
//! target std (no quantizer runs), which keeps a full 81 GB q2 file I/O-bound.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use rayon::prelude::*;

use crate::layout::{
    expected_mtp_tensors, expected_tensors, total_data_bytes, type_census, Family, ModelConfig,
    Recipe, TensorSpec, MTP_ARCH,
};
use crate::{GgmlType, GgufError, GgufWriter, Value};

/// Where the token strings come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VocabSource {
    /// The real DeepSeek V4 vocabulary (129280 tokens, 127741 merges) from ds4-tokenizer.
    RealV4,
    /// `n` tokens: BOS, EOS, the 256 byte-level single-byte tokens, the other 5 special
    /// strings, then filler tokens; no merges. `n` must be at least 263.
    Placeholder(u32),
}

/// The 7 special strings ds4 looks up by name (spec §1.5), BOS and EOS first.
pub const SPECIAL_TOKENS: [&str; 7] = crate::convert::tokenizer::REQUIRED_SPECIALS;

pub use crate::convert::tokenizer::{byte_to_char, Vocab, MIN_PLACEHOLDER_VOCAB};

/// Everything that defines a synthetic file. Every field is public and may be changed
/// after taking a preset.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Model hyper-parameters. `vocab_size` is replaced by the size of `vocab`.
    pub model: ModelConfig,
    /// Types of the main file.
    pub recipe: Recipe,
    pub seed: u64,
    pub vocab: VocabSource,
    /// `general.alignment` to write; None leaves the key out (alignment 32).
    pub alignment: Option<u32>,
    /// Recipe of the MTP file; None: Q4 (the published MTP recipe) for quantized main
    /// recipes, else the main recipe.
    pub mtp_recipe: Option<Recipe>,
    /// Type of the MTP file's four "plain" tensors (hc_attn_fn, hc_ffn_fn, hc_head_fn,
    /// ffn_gate_inp); None: the recipe's choice (F32 for Q2/Q4). ds4 accepts F16 or F32.
    pub mtp_plain: Option<GgmlType>,
    /// `general.name`; None: a generated description.
    pub name: Option<String>,
    /// Scale a few random rows of the SwiGLU gate/up weights (routed and shared) so that
    /// |gate| and |up| exceed the clamp (10) and the clamp paths run (model.md §9.3).
    /// Off in both presets (so existing fixtures keep their bytes); e.g.
    /// `Some(HotRows { one_in: 256, scale: 20.0 })` gives about one hot row per expert.
    pub hot_rows: Option<HotRows>,
}

/// Rows (output units) of gate/up weights drawn with a larger std.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HotRows {
    /// On average one row in `one_in` is hot (chosen by hashing the row index).
    pub one_in: u32,
    /// Std multiplier of a hot row.
    pub scale: f32,
}

impl SynthConfig {
    /// The smallest model that keeps every code path alive (spec §7.1/§7.3): 5 layers
    /// with ratios [0, 0, 4, 128, 4] (+ a trailing 0 for the MTP layer), 3 hash layers,
    /// n_embd 256, 8 heads of 128 (64 RoPE dims), q_lora 64, 2 output groups of 64,
    /// 16 experts (6 used) of width 256, indexer 4 × 128 with top-k 8, window 16 (§7.4),
    /// the real tokenizer, F32 weights.
    pub fn tiny() -> SynthConfig {
        let mut m = ModelConfig::published();
        m.n_embd = 256;
        m.n_layer = 5;
        m.n_head = 8;
        m.head_dim = 128;
        m.value_length = 128;
        m.rope_dim = 64;
        m.q_lora_rank = 64;
        m.o_groups = 2;
        m.o_lora_rank = 64;
        m.n_expert = 16;
        m.n_expert_used = 6;
        m.expert_ffn = 256;
        m.indexer_heads = 4;
        m.indexer_head_dim = 128;
        m.indexer_top_k = 8;
        m.sliding_window = 16;
        m.compress_ratios = vec![0, 0, 4, 128, 4, 0];
        m.swiglu_clamp = vec![10.0; 5];
        m.context_length = Some(1_048_576);
        SynthConfig {
            model: m,
            recipe: Recipe::F32,
            seed: 0,
            vocab: VocabSource::RealV4,
            alignment: None,
            mtp_recipe: None,
            mtp_plain: None,
            name: None,
            hot_rows: None,
        }
    }

    /// The published shape (43 layers, q2 recipe, real tokenizer).
    pub fn full() -> SynthConfig {
        SynthConfig {
            model: ModelConfig::published(),
            recipe: Recipe::Q2,
            seed: 0,
            vocab: VocabSource::RealV4,
            alignment: None,
            mtp_recipe: None,
            mtp_plain: None,
            name: None,
            hot_rows: None,
        }
    }

    /// Change the layer count, extending or truncating the ratio schedule (new layers
    /// follow the pattern 0,0 then 4 / HCA alternating, with the model's HCA ratio),
    /// the SwiGLU clamps, and capping the hash layers.
    pub fn with_layers(mut self, n: u32) -> SynthConfig {
        self.model = with_layers(&self.model, n);
        self
    }

    /// The model config with `vocab_size` taken from the vocabulary source.
    pub fn effective_model(&self) -> Result<ModelConfig, SynthError> {
        let mut m = self.model.clone();
        m.vocab_size = match self.vocab {
            VocabSource::RealV4 => REAL_V4_VOCAB,
            VocabSource::Placeholder(n) => n,
        };
        Ok(m)
    }

    fn mtp_recipe(&self) -> Recipe {
        self.mtp_recipe.unwrap_or(match self.recipe {
            Recipe::Q2 | Recipe::Q4 => Recipe::Q4,
            r => r,
        })
    }
}

/// Size of the real DeepSeek V4 vocabulary.
pub const REAL_V4_VOCAB: u32 = 129_280;

/// `cfg` with `n` layers (see [`SynthConfig::with_layers`]).
pub fn with_layers(cfg: &ModelConfig, n: u32) -> ModelConfig {
    let mut m = cfg.clone();
    let old = m.n_layer as usize;
    let hca = m.compress_ratios[..old.min(m.compress_ratios.len())]
        .iter()
        .copied()
        .find(|&r| r != 0 && r != crate::layout::CSA_RATIO)
        .unwrap_or(128);
    let mut ratios: Vec<u32> = m
        .compress_ratios
        .iter()
        .copied()
        .take(old.min(n as usize))
        .collect();
    for l in ratios.len() as u32..n {
        ratios.push(match crate::layout::published_ratio(l) {
            128 => hca,
            r => r,
        });
    }
    ratios.push(0); // MTP layer
    let fill = m.swiglu_clamp.last().copied().unwrap_or(10.0);
    m.swiglu_clamp.resize(n as usize, fill);
    m.compress_ratios = ratios;
    m.n_hash_layers = m.n_hash_layers.min(n);
    m.n_layer = n;
    m
}

/// Errors of the synthesizer.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("synth config: {0}")]
    Config(String),
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

/// What was (or would be) written.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthStats {
    pub tensors: usize,
    /// Tensor-data bytes, alignment padding included.
    pub data_bytes: u64,
    /// Header + metadata + tensor infos + padding up to the data section.
    pub header_bytes: u64,
    /// `header_bytes + data_bytes`.
    pub file_bytes: u64,
    /// (type, tensor count), sorted by GGUF type id.
    pub census: Vec<(GgmlType, usize)>,
    /// Wall time of the write (0 for a plan).
    pub seconds: f64,
}

/// A file to synthesize: metadata, directory and the generator keys.
struct Plan {
    writer: GgufWriter,
    specs: Vec<TensorSpec>,
    model: ModelConfig,
    seed: u64,
    hot: Option<HotRows>,
}

impl Plan {
    fn stats(&self, seconds: f64) -> Result<SynthStats, SynthError> {
        let header = self.writer.header_bytes()?.len() as u64;
        let data = total_data_bytes(&self.specs, self.writer.alignment());
        Ok(SynthStats {
            tensors: self.specs.len(),
            data_bytes: data,
            header_bytes: header,
            file_bytes: header + data,
            census: type_census(&self.specs),
            seconds,
        })
    }
}

impl Vocab {
    /// Build the vocabulary of a source (written with [`Vocab::kvs`]).
    pub fn from_source(src: &VocabSource) -> Result<Vocab, SynthError> {
        match *src {
            VocabSource::RealV4 => {
                let d = ds4_tokenizer::TokenizerData::embedded_v4();
                Ok(Vocab {
                    tokens: d.tokens,
                    token_types: d.token_types,
                    merges: d.merges,
                    bos: d.bos_id,
                    eos: d.eos_id,
                    pad: d.pad_id,
                    add_bos: false,
                    add_eos: false,
                    chat_template: None,
                    source: crate::convert::tokenizer::VocabSource::Tokenizer,
                })
            }
            VocabSource::Placeholder(n) => crate::convert::tokenizer::placeholder(n).ok_or_else(|| {
                SynthError::Config(format!(
                    "placeholder vocabulary of {n} tokens is too small: it needs the 256 byte tokens and the 7 special strings ({MIN_PLACEHOLDER_VOCAB})"
                ))
            }),
        }
    }
}

fn check_blocks(specs: &[TensorSpec]) -> Result<(), SynthError> {
    for s in specs {
        let be = s.recipe_type.block_elems() as u64;
        if s.dims[0] % be != 0 {
            return Err(SynthError::Config(format!(
                "tensor {} has ne0={} which is not a multiple of the {} block size {be}; choose another recipe or dims",
                s.name, s.dims[0], s.recipe_type
            )));
        }
        if s.n_bytes() == u64::MAX {
            return Err(SynthError::Config(format!(
                "tensor {} is too large",
                s.name
            )));
        }
    }
    Ok(())
}

fn base_writer(cfg: &SynthConfig, model: &ModelConfig, arch: &str, recipe: Recipe) -> GgufWriter {
    let mut w = GgufWriter::new();
    let mut kvs = model.kvs_with_arch(arch);
    let name = cfg.name.clone().unwrap_or_else(|| {
        format!(
            "DeepSeek-V4-Flash synthetic ({} layers, {recipe}, seed {})",
            model.n_layer, cfg.seed
        )
    });
    kvs.insert(1, ("general.name".into(), Value::String(name)));
    for (k, v) in kvs {
        w.add_kv(k, v);
    }
    if let Some(a) = cfg.alignment {
        w.set_alignment(a as u64);
    }
    w
}

fn synth_kvs(w: &mut GgufWriter, cfg: &SynthConfig, recipe: Recipe) {
    w.add_kv(SYNTH_SEED_KEY, Value::U64(cfg.seed));
    w.add_kv(SYNTH_RECIPE_KEY, Value::String(recipe.name().into()));
}

/// Metadata key marking a synthetic file (its seed).
pub const SYNTH_SEED_KEY: &str = "ds4rs.synth.seed";
/// Metadata key naming the recipe of a synthetic file.
pub const SYNTH_RECIPE_KEY: &str = "ds4rs.synth.recipe";

fn main_plan(cfg: &SynthConfig, vocab: Option<&Vocab>) -> Result<Plan, SynthError> {
    let model = cfg.effective_model()?;
    let problems = model.consistency_errors();
    if !problems.is_empty() {
        return Err(SynthError::Config(problems.join("; ")));
    }
    let specs = expected_tensors(&model, cfg.recipe);
    check_blocks(&specs)?;
    let mut w = base_writer(cfg, &model, crate::layout::ARCH, cfg.recipe);
    let owned;
    let vocab = match vocab {
        Some(v) => v,
        None => {
            owned = Vocab::from_source(&cfg.vocab)?;
            &owned
        }
    };
    if vocab.tokens.len() as u64 != model.vocab_size as u64 {
        return Err(SynthError::Config(format!(
            "vocabulary has {} tokens but vocab_size is {}",
            vocab.tokens.len(),
            model.vocab_size
        )));
    }
    for (k, v) in vocab.kvs() {
        w.add_kv(k, v);
    }
    synth_kvs(&mut w, cfg, cfg.recipe);
    for s in &specs {
        w.add_tensor(s.name.clone(), s.recipe_type, &s.dims);
    }
    Ok(Plan {
        writer: w,
        specs,
        model,
        seed: cfg.seed,
        hot: cfg.hot_rows,
    })
}

fn mtp_plan(cfg: &SynthConfig) -> Result<Plan, SynthError> {
    let model = cfg.effective_model()?;
    let problems = model.consistency_errors();
    if !problems.is_empty() {
        return Err(SynthError::Config(problems.join("; ")));
    }
    let recipe = cfg.mtp_recipe();
    let mut specs = expected_mtp_tensors(&model, recipe);
    if let Some(t) = cfg.mtp_plain {
        if t != GgmlType::F16 && t != GgmlType::F32 {
            return Err(SynthError::Config(format!(
                "MTP plain tensors must be F16 or F32, got {t}"
            )));
        }
        for s in specs
            .iter_mut()
            .filter(|s| matches!(s.family, Family::HcFn | Family::Router) && s.dims.len() > 1)
        {
            s.recipe_type = t;
        }
    }
    check_blocks(&specs)?;
    let mut w = base_writer(cfg, &model, MTP_ARCH, recipe);
    synth_kvs(&mut w, cfg, recipe);
    for s in &specs {
        w.add_tensor(s.name.clone(), s.recipe_type, &s.dims);
    }
    Ok(Plan {
        writer: w,
        specs,
        model,
        seed: cfg.seed,
        hot: cfg.hot_rows,
    })
}

/// The writer (metadata + tensor directory, no data) of the main file, e.g. to write
/// only the header of a file whose data would be too large.
pub fn main_writer(cfg: &SynthConfig) -> Result<GgufWriter, SynthError> {
    Ok(main_plan(cfg, None)?.writer)
}

/// The writer (metadata + tensor directory, no data) of the MTP file.
pub fn mtp_writer(cfg: &SynthConfig) -> Result<GgufWriter, SynthError> {
    Ok(mtp_plan(cfg)?.writer)
}

/// Sizes and census of the main file without writing it.
pub fn plan_main(cfg: &SynthConfig) -> Result<SynthStats, SynthError> {
    main_plan(cfg, None)?.stats(0.0)
}

/// Sizes and census of the MTP file without writing it.
pub fn plan_mtp(cfg: &SynthConfig) -> Result<SynthStats, SynthError> {
    mtp_plan(cfg)?.stats(0.0)
}

/// Write the main model file to `out`.
pub fn synth_main(cfg: &SynthConfig, out: &Path) -> Result<SynthStats, SynthError> {
    let plan = main_plan(cfg, None)?;
    write_plan_to_path(&plan, out)
}

/// Write the MTP file (32 `mtp.0.*` tensors sharing the main model's dims) to `out`.
pub fn synth_mtp(cfg: &SynthConfig, out: &Path) -> Result<SynthStats, SynthError> {
    let plan = mtp_plan(cfg)?;
    write_plan_to_path(&plan, out)
}

/// Write the main model file to any writer (e.g. a `Vec<u8>`).
pub fn synth_main_to<W: Write + Send>(
    cfg: &SynthConfig,
    w: W,
) -> Result<(W, SynthStats), SynthError> {
    let plan = main_plan(cfg, None)?;
    write_plan(&plan, w)
}

/// Write the MTP file to any writer.
pub fn synth_mtp_to<W: Write + Send>(
    cfg: &SynthConfig,
    w: W,
) -> Result<(W, SynthStats), SynthError> {
    let plan = mtp_plan(cfg)?;
    write_plan(&plan, w)
}

fn write_plan_to_path(plan: &Plan, out: &Path) -> Result<SynthStats, SynthError> {
    let f = File::create(out).map_err(|source| SynthError::Create {
        path: out.to_path_buf(),
        source,
    })?;
    match write_plan(plan, f) {
        Ok((_f, stats)) => Ok(stats),
        Err(e) => {
            // Do not leave a truncated GGUF behind (but never unlink /dev/null & co).
            if std::fs::metadata(out).is_ok_and(|m| m.is_file()) {
                std::fs::remove_file(out).ok();
            }
            Err(e)
        }
    }
}

/// Bytes per generated chunk; a multiple of every block size (34, 66, 84, 144, 2, 4)
/// is not required: chunks are cut at whole units of the tensor's type.
const CHUNK_BYTES: usize = 16 << 20;
/// Bytes per rayon task inside a chunk.
const TASK_BYTES: usize = 256 << 10;

fn write_plan<W: Write + Send>(plan: &Plan, w: W) -> Result<(W, SynthStats), SynthError> {
    let t0 = Instant::now();
    let mut stream = plan.writer.begin(w)?;
    // Producer: generate chunks in parallel; consumer (this thread): write them in order.
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(2);
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
    let result = std::thread::scope(|s| -> Result<(), SynthError> {
        let specs = &plan.specs;
        let model = &plan.model;
        let seed = plan.seed;
        let hot = plan.hot;
        let producer = s.spawn(move || {
            for spec in specs {
                let gen = Generator::new(spec, model, seed, hot);
                let unit = gen.unit_bytes();
                let total = spec.n_bytes() as usize;
                let per_chunk = (CHUNK_BYTES / unit).max(1) * unit;
                let mut done = 0usize;
                while done < total {
                    let n = per_chunk.min(total - done);
                    let mut buf = recycle_rx.try_recv().unwrap_or_default();
                    buf.clear();
                    buf.resize(n, 0);
                    gen.fill(done / unit, &mut buf);
                    if tx.send(buf).is_err() {
                        return; // consumer stopped on an error
                    }
                    done += n;
                }
            }
        });
        let mut err = None;
        for buf in rx {
            if err.is_none() {
                if let Err(e) = stream.write_data(&buf) {
                    err = Some(e);
                    break;
                }
            }
            recycle_tx.send(buf).ok();
        }
        producer
            .join()
            .map_err(|_| SynthError::Config("generator thread panicked".into()))?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    });
    result?;
    let w = stream.finish()?;
    let stats = plan.stats(t0.elapsed().as_secs_f64())?;
    Ok((w, stats))
}

// ---------------------------------------------------------------------------------------
// Counter-based random numbers
// ---------------------------------------------------------------------------------------

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finaliser.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`-th output of the SplitMix64 stream with state `key`.
#[inline]
fn rand_at(key: u64, i: u64) -> u64 {
    mix64(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Stream key of one tensor: (seed, name) → 64 bits.
fn tensor_key(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325; // FNV-1a
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(mix64(seed ^ GOLDEN) ^ h)
}

/// Approximately standard normal from 64 random bits (sum of four 16-bit uniforms,
/// Irwin–Hall, rescaled to unit variance).
#[inline]
fn gauss(r: u64) -> f32 {
    let s = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
    (s as f32 - 131_070.0) * (1.732_050_8 / 65_536.0)
}

/// Uniform in [0, 1) from the top 24 bits.
#[inline]
fn unit(r: u64) -> f32 {
    (r >> 40) as f32 * (1.0 / 16_777_216.0)
}

// ---------------------------------------------------------------------------------------
// Per-tensor generators
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Init {
    /// mean + std · N(0,1)
    Normal { mean: f32, std: f32 },
    /// every element the same value
    Const(f32),
    /// rows of `used` distinct expert ids in [0, n_expert)
    Tid2Eid { used: u32, n_expert: u32 },
}

fn init_for(spec: &TensorSpec, model: &ModelConfig) -> Init {
    let fan_in = (spec.fan_in() as f32).max(1.0);
    let proj = Init::Normal {
        mean: 0.0,
        std: 1.0 / fan_in.sqrt(),
    };
    match spec.family {
        Family::TokenEmbd => Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
        Family::HcFn => Init::Normal {
            mean: 0.0,
            std: 0.02,
        },
        Family::HcScale => Init::Const(1.0),
        Family::HcBase => Init::Const(0.0),
        Family::Norm => Init::Normal {
            mean: 1.0,
            std: 0.05,
        },
        Family::Sinks | Family::Ape | Family::RouterBias => Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
        Family::Tid2Eid => Init::Tid2Eid {
            used: model.n_expert_used,
            n_expert: model.n_expert,
        },
        Family::Output
        | Family::AttnProj
        | Family::AuxProj
        | Family::Router
        | Family::ExpertGate
        | Family::ExpertUp
        | Family::ExpertDown
        | Family::SharedExpert => proj,
    }
}

struct Generator {
    ty: GgmlType,
    init: Init,
    key: u64,
    /// tid2eid row length (n_expert_used); 0 otherwise.
    row: usize,
    /// (one_in, scale, units per row) for gate/up weights with hot rows.
    hot: Option<(u64, f32, u64)>,
}

/// Mean-square of the IQ2_XXS grid bytes over all 256 grid entries (computed from
/// ggml's `iq2xxs_grid`; every byte is 8, 25 or 43).
const IQ2XXS_GRID_MEAN_SQ: f32 = 534.430_2;
/// E[((2s+1)/8)²] for the 4-bit group scale s uniform in 0..=15: (Σ odd² 1..31)/16/64.
const IQ2XXS_SCALE_MEAN_SQ: f32 = 341.0 / 64.0;
/// E[f²] for the per-block scale jitter f uniform in [0.5, 1.5).
const JITTER_MEAN_SQ: f32 = 1.083_333_3;

impl Generator {
    fn new(spec: &TensorSpec, model: &ModelConfig, seed: u64, hot: Option<HotRows>) -> Generator {
        let init = init_for(spec, model);
        let swiglu_in = [
            "ffn_gate_exps.weight",
            "ffn_up_exps.weight",
            "ffn_gate_shexp.weight",
            "ffn_up_shexp.weight",
        ]
        .iter()
        .any(|sfx| spec.name.ends_with(sfx));
        let hot = match hot {
            Some(h) if swiglu_in && h.one_in > 0 && spec.dims.len() > 1 => Some((
                h.one_in as u64,
                h.scale,
                (spec.dims[0] / spec.recipe_type.block_elems() as u64).max(1),
            )),
            _ => None,
        };
        Generator {
            ty: spec.recipe_type,
            init,
            key: tensor_key(seed, &spec.name),
            row: if let Init::Tid2Eid { used, .. } = init {
                used as usize
            } else {
                0
            },
            hot,
        }
    }

    /// Std multiplier of the row holding unit `u` (element or block).
    #[inline]
    fn hot_factor(&self, u: u64) -> f32 {
        match self.hot {
            Some((one_in, scale, per_row)) => {
                let row = u / per_row;
                if mix64(self.key ^ row.wrapping_add(1).wrapping_mul(GOLDEN)).is_multiple_of(one_in)
                {
                    scale
                } else {
                    1.0
                }
            }
            None => 1.0,
        }
    }

    /// Bytes of one independently generated unit: a block, an element, or a tid2eid row.
    fn unit_bytes(&self) -> usize {
        if self.row > 0 {
            return self.row * 4;
        }
        self.ty.block_bytes()
    }

    /// Fill `out` (a whole number of units) starting at unit `first`.
    fn fill(&self, first: usize, out: &mut [u8]) {
        let unit = self.unit_bytes();
        let per_task = (TASK_BYTES / unit).max(1) * unit;
        out.par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(t, chunk)| {
                let start = first + t * (per_task / unit);
                self.fill_serial(start as u64, chunk);
            });
    }

    fn std_mean(&self) -> (f32, f32) {
        match self.init {
            Init::Normal { mean, std } => (mean, std),
            Init::Const(c) => (c, 0.0),
            Init::Tid2Eid { .. } => (0.0, 0.0),
        }
    }

    #[inline]
    fn value(&self, i: u64) -> f32 {
        match self.init {
            Init::Normal { mean, std } => {
                mean + std * self.hot_factor(i) * gauss(rand_at(self.key, i))
            }
            Init::Const(c) => c,
            Init::Tid2Eid { .. } => 0.0,
        }
    }

    fn fill_serial(&self, first: u64, out: &mut [u8]) {
        if let Init::Tid2Eid { used, n_expert } = self.init {
            return fill_tid2eid(self.key, first, used, n_expert, out);
        }
        let (_, std) = self.std_mean();
        match self.ty {
            GgmlType::F32 => {
                for (j, c) in out.chunks_exact_mut(4).enumerate() {
                    c.copy_from_slice(&self.value(first + j as u64).to_le_bytes());
                }
            }
            GgmlType::F16 | GgmlType::Bf16 => {
                use half::slice::HalfFloatSliceExt;
                const N: usize = 512;
                let mut vals = [0f32; N];
                let mut halves = [half::f16::ZERO; N];
                let mut bhalves = [half::bf16::ZERO; N];
                for (k, c) in out.chunks_mut(2 * N).enumerate() {
                    let n = c.len() / 2;
                    let base = first + (k * N) as u64;
                    for (j, v) in vals[..n].iter_mut().enumerate() {
                        *v = self.value(base + j as u64);
                    }
                    let bits: &[u16] = if self.ty == GgmlType::F16 {
                        halves[..n].convert_from_f32_slice(&vals[..n]);
                        halves[..n].reinterpret_cast()
                    } else {
                        bhalves[..n].convert_from_f32_slice(&vals[..n]);
                        bhalves[..n].reinterpret_cast()
                    };
                    for (d, b) in c.chunks_exact_mut(2).zip(bits) {
                        d.copy_from_slice(&b.to_le_bytes());
                    }
                }
            }
            GgmlType::I32 => {
                for (j, c) in out.chunks_exact_mut(4).enumerate() {
                    c.copy_from_slice(&(self.value(first + j as u64) as i32).to_le_bytes());
                }
            }
            GgmlType::Q8_0 => {
                for (j, b) in out.chunks_exact_mut(34).enumerate() {
                    self.q8_0_block(first + j as u64, std, b);
                }
            }
            GgmlType::Q2K => {
                for (j, b) in out.chunks_exact_mut(84).enumerate() {
                    self.q2_k_block(first + j as u64, std, b);
                }
            }
            GgmlType::Q4K => {
                for (j, b) in out.chunks_exact_mut(144).enumerate() {
                    self.q4_k_block(first + j as u64, std, b);
                }
            }
            GgmlType::Iq2Xxs => {
                for (j, b) in out.chunks_exact_mut(66).enumerate() {
                    self.iq2_xxs_block(first + j as u64, std, b);
                }
            }
            GgmlType::Q8K => {
                // Activation-only format; never part of a recipe. Zero-filled if asked.
                out.fill(0);
            }
        }
    }

    /// Random words of block `b`: word `w` is `rand_at(key, b·64 + w)`.
    #[inline]
    fn word(&self, b: u64, w: u64) -> u64 {
        rand_at(self.key, b.wrapping_mul(64).wrapping_add(w))
    }

    /// Per-block scale jitter in [0.5, 1.5), E[f²] = JITTER_MEAN_SQ.
    #[inline]
    fn jitter(&self, b: u64) -> f32 {
        (0.5 + unit(self.word(b, 63))) * self.hot_factor(b)
    }

    fn fill_random(&self, b: u64, first_word: u64, out: &mut [u8]) {
        for (k, c) in out.chunks_mut(8).enumerate() {
            let r = self.word(b, first_word + k as u64).to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
    }

    /// Q8_0: y = d·q, q uniform in [-127, 127] (std 127/sqrt 3 · d).
    fn q8_0_block(&self, b: u64, std: f32, out: &mut [u8]) {
        let d = std * self.jitter(b) * (3.0f32).sqrt() / 127.0 / JITTER_MEAN_SQ.sqrt();
        out[..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        self.fill_random(b, 0, &mut out[2..34]);
        for q in &mut out[2..34] {
            if *q == 0x80 {
                *q = 0x81; // keep qs in [-127, 127] like the reference quantizer
            }
        }
    }

    /// Q2_K: sub-block scale sc uniform in 8..=15 with min m = sc and dmin = 1.5·d, so
    /// y = d·sc·(q − 1.5) has mean 0; q uniform in 0..=3 (std sqrt(1.25)).
    fn q2_k_block(&self, b: u64, std: f32, out: &mut [u8]) {
        const SC_MEAN_SQ: f32 = 125.0; // mean of sc² for sc in 8..=15
        let d = std * self.jitter(b) / (1.25f32 * SC_MEAN_SQ * JITTER_MEAN_SQ).sqrt();
        let r = self.word(b, 0);
        for (s, byte) in out[..16].iter_mut().enumerate() {
            let sc = 8 + ((r >> (3 * s)) & 7) as u8;
            *byte = sc | (sc << 4);
        }
        self.fill_random(b, 1, &mut out[16..80]);
        out[80..82].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        out[82..84].copy_from_slice(&half::f16::from_f32(1.5 * d).to_bits().to_le_bytes());
    }

    /// Q4_K: 6-bit scale sc uniform in 32..=63 with min m = sc and dmin = 7.5·d, so
    /// y = d·sc·(q − 7.5) has mean 0; q uniform in 0..=15 (std sqrt(21.25)).
    fn q4_k_block(&self, b: u64, std: f32, out: &mut [u8]) {
        const SC_MEAN_SQ: f32 = 2341.5; // mean of sc² for sc in 32..=63
        let d = std * self.jitter(b) / (21.25f32 * SC_MEAN_SQ * JITTER_MEAN_SQ).sqrt();
        let r = self.word(b, 0);
        let sc: [u8; 8] = std::array::from_fn(|j| 32 + ((r >> (5 * j)) & 31) as u8);
        let m = sc;
        out[0..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        out[2..4].copy_from_slice(&half::f16::from_f32(7.5 * d).to_bits().to_le_bytes());
        let scales = &mut out[4..16];
        for j in 0..4 {
            scales[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            scales[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
            scales[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
        }
        self.fill_random(b, 1, &mut out[16..144]);
    }

    /// IQ2_XXS: random grid indices, sign indices and 4-bit group scales; `d` chosen from
    /// the grid's mean square so that the dequantized std matches.
    fn iq2_xxs_block(&self, b: u64, std: f32, out: &mut [u8]) {
        let d = std * self.jitter(b)
            / (IQ2XXS_GRID_MEAN_SQ * IQ2XXS_SCALE_MEAN_SQ * JITTER_MEAN_SQ).sqrt();
        out[0..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        // each group: a0 = 4 grid indices (any byte), a1 = 4×7 sign bits + 4-bit scale
        self.fill_random(b, 0, &mut out[2..66]);
    }
}

fn fill_tid2eid(key: u64, first_row: u64, used: u32, n_expert: u32, out: &mut [u8]) {
    let used = used as usize;
    let n = n_expert.max(1) as u64;
    let mut row = Vec::with_capacity(used);
    for (j, c) in out.chunks_exact_mut(used * 4).enumerate() {
        let r = first_row + j as u64;
        row.clear();
        let mut attempt = 0u64;
        while row.len() < used {
            let v = (rand_at(key, r.wrapping_mul(1 << 16).wrapping_add(attempt)) % n) as i32;
            attempt += 1;
            if !row.contains(&v) || row.len() as u64 >= n {
                row.push(v);
            }
        }
        for (k, v) in row.iter().enumerate() {
            c[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_to_char_matches_gpt2_table() {
        assert_eq!(byte_to_char(b'!'), '!');
        assert_eq!(byte_to_char(b' '), '\u{120}');
        assert_eq!(byte_to_char(0), '\u{100}');
        assert_eq!(byte_to_char(b'\n'), '\u{10A}');
        assert_eq!(byte_to_char(173), '\u{143}');
        let all: std::collections::HashSet<char> = (0..=255u8).map(byte_to_char).collect();
        assert_eq!(all.len(), 256);
        for b in 0..=255u8 {
            assert_eq!(
                ds4_tokenizer::bytelevel::bytes_to_token_string(&[b]),
                byte_to_char(b).to_string()
            );
        }
    }

    #[test]
    fn gauss_has_unit_variance() {
        let n = 200_000u64;
        let (mut s, mut s2) = (0f64, 0f64);
        for i in 0..n {
            let g = gauss(rand_at(12345, i)) as f64;
            s += g;
            s2 += g * g;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
    }

    #[test]
    fn q4_k_scale_packing_roundtrips_through_the_unpack_rule() {
        let spec = TensorSpec {
            name: "x".into(),
            dims: vec![256, 4],
            family: Family::ExpertGate,
            allowed: vec![GgmlType::Q4K],
            recipe_type: GgmlType::Q4K,
        };
        let g = Generator::new(&spec, &ModelConfig::published(), 7, None);
        for b in 0..50u64 {
            let mut blk = [0u8; 144];
            g.q4_k_block(b, 0.1, &mut blk);
            let r = g.word(b, 0);
            let s = &blk[4..16];
            for j in 0..8 {
                let want = 32 + ((r >> (5 * j)) & 31) as u8;
                let (sc, m) = if j < 4 {
                    (s[j] & 63, s[j + 4] & 63)
                } else {
                    (
                        (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
                        (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
                    )
                };
                assert_eq!((sc, m), (want, want), "block {b} sub-block {j}");
            }
        }
    }

    #[test]
    fn tid2eid_rows_are_distinct_and_in_range() {
        let mut out = vec![0u8; 1000 * 6 * 4];
        fill_tid2eid(99, 0, 6, 16, &mut out);
        for row in out.chunks_exact(24) {
            let v: Vec<i32> = row
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let set: std::collections::HashSet<_> = v.iter().collect();
            assert_eq!(set.len(), 6, "{v:?}");
            assert!(v.iter().all(|&x| (0..16).contains(&x)));
        }
    }
}
