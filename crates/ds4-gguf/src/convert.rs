//! DeepSeek's official Hugging Face checkpoint (safetensors shards + config.json +
//! tokenizer.json) → the ds4 GGUF layout (spec gguf-layout.md §4), and the inverse
//! exporter used to test the converter against synthetic GGUF files.
//!
//! Streaming: shards are memory-mapped and every output tensor is produced in row
//! chunks (dense) or one expert at a time (routed experts), so peak memory is a few
//! hundred MiB regardless of the model size. The tensor directory, dims and types come
//! from [`crate::layout`]; the metadata from [`ModelConfig::kvs_with_arch`].

pub mod config;
pub mod dequant;
mod export;
pub mod names;
pub mod safetensors;
pub mod tokenizer;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::layout::{self, ModelConfig, Recipe, TensorSpec};
use crate::{GgmlType, GgufError, GgufWriter, Value};
use dequant::{ints_to_i32, Source};
use names::{expert_weight_name, gguf_to_hf, scale_name, HfRef};
use safetensors::{Checkpoint, Dtype, TensorInfo};
use tokenizer::{Vocab, VocabSource};

pub use config::{parse_config, CheckpointConfig};
pub use export::{export_official_checkpoint, export_official_checkpoint_with, ExportOptions};

/// What can go wrong while converting or exporting. Every message names the file,
/// key or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad safetensors file {path}: {problem}")]
    Safetensors { path: PathBuf, problem: String },
    #[error("bad JSON file {path}: {problem}")]
    Json { path: PathBuf, problem: String },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("{0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("checkpoint tensor {name} is missing ({context})")]
    MissingTensor { name: String, context: String },
    #[error("tensor {name}: {problem}")]
    Tensor { name: String, problem: String },
    #[error(
        "shape mismatch for {gguf}: checkpoint tensor {hf} has shape {found:?}, expected {expected:?} (the reverse of the GGUF dims)"
    )]
    Shape {
        gguf: String,
        hf: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("checkpoint has {count} tensor(s) the ds4 layout does not use: {names}")]
    Unused { count: usize, names: String },
    #[error("GGUF: {0}")]
    Gguf(#[from] GgufError),
    #[error("GGUF metadata: {0}")]
    Layout(#[from] layout::LayoutError),
}

impl ConvertError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> ConvertError {
        ConvertError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    fn tensor(name: &str, problem: impl Into<String>) -> ConvertError {
        ConvertError::Tensor {
            name: name.to_string(),
            problem: problem.into(),
        }
    }
}

/// What to convert.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Checkpoint directory (config.json, tokenizer.json, safetensors).
    pub hf_dir: PathBuf,
    /// Main GGUF file to write.
    pub out: PathBuf,
    pub recipe: Recipe,
    /// Where to write the MTP block (`mtp.0.*`); without it the MTP tensors are skipped.
    pub mtp_out: Option<PathBuf>,
    /// Worker threads for dequantization/quantization (0 = all cores).
    pub threads: usize,
    /// Checkpoint tensors the layout does not use become a note instead of an error.
    pub allow_unused: bool,
}

impl ConvertOptions {
    pub fn new(hf_dir: impl Into<PathBuf>, out: impl Into<PathBuf>, recipe: Recipe) -> Self {
        ConvertOptions {
            hf_dir: hf_dir.into(),
            out: out.into(),
            recipe,
            mtp_out: None,
            threads: 0,
            allow_unused: false,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertReport {
    pub tensors: usize,
    /// Tensor-data bytes of the main file (without padding).
    pub data_bytes: u64,
    /// Tensors written to the MTP file (0 when none was written).
    pub mtp_tensors: usize,
    pub vocab: VocabSource,
    pub config: ModelConfig,
    /// Informational notes (e.g. MTP tensors skipped for lack of `mtp_out`).
    pub notes: Vec<String>,
}

/// How the bytes of one output tensor are produced.
enum Plan<'a> {
    /// A float tensor (any float dtype, FP8 with block scales).
    Float(Source<'a>),
    /// Hash routing table: integers → I32.
    Ints {
        hf: String,
        info: &'a TensorInfo,
        data: &'a [u8],
    },
    /// Routed experts, one `[out, in]` source per expert, stacked in expert order.
    Experts(Vec<Source<'a>>),
}

struct Planner<'a> {
    ckpt: &'a Checkpoint,
    cfg: &'a CheckpointConfig,
    used: BTreeSet<String>,
}

impl<'a> Planner<'a> {
    fn get(&mut self, hf: &str, gguf: &str) -> Result<(&'a TensorInfo, &'a [u8]), ConvertError> {
        let r = self
            .ckpt
            .get(hf)
            .ok_or_else(|| ConvertError::MissingTensor {
                name: hf.to_string(),
                context: format!("needed for GGUF tensor {gguf}"),
            })?;
        self.used.insert(hf.to_string());
        Ok(r)
    }

    /// A float source for an HF weight: FP8 (+ `.scale`), FP4 experts (I8 + `.scale`) or
    /// a plain float dtype.
    fn float_source(&mut self, hf: &str, gguf: &str) -> Result<Source<'a>, ConvertError> {
        let (info, data) = self.get(hf, gguf)?;
        match info.dtype {
            Dtype::F8E4M3 | Dtype::I8 | Dtype::U8 => {
                let sname = scale_name(hf).ok_or_else(|| {
                    ConvertError::tensor(
                        hf,
                        format!(
                            "{} weight without a .weight suffix, so it has no .scale sibling",
                            info.dtype
                        ),
                    )
                })?;
                if !self.ckpt.contains(&sname) {
                    return Err(ConvertError::MissingTensor {
                        name: sname,
                        context: format!(
                            "the block scale of {} weight {hf} (GGUF {gguf})",
                            if info.dtype == Dtype::F8E4M3 {
                                "FP8"
                            } else {
                                "packed FP4"
                            }
                        ),
                    });
                }
                let s = self.get(&sname, gguf)?;
                if info.dtype == Dtype::F8E4M3 {
                    Source::fp8(hf, (info, data), s, self.cfg.fp8_block)
                } else {
                    Source::fp4(hf, (info, data), s)
                }
            }
            _ => Source::plain(hf, info, data),
        }
    }

    fn plan(&mut self, spec: &TensorSpec) -> Result<Plan<'a>, ConvertError> {
        let hfref = gguf_to_hf(&spec.name).ok_or_else(|| {
            ConvertError::tensor(
                &spec.name,
                "no official checkpoint name maps to this GGUF tensor",
            )
        })?;
        let expect: Vec<u64> = spec.dims.iter().rev().copied().collect();
        match hfref {
            HfRef::Tensor(hf) => {
                if spec.recipe_type == GgmlType::I32 {
                    let (info, data) = self.get(&hf, &spec.name)?;
                    if info.shape != expect {
                        return Err(shape_err(spec, &hf, info.shape.clone(), expect));
                    }
                    if !matches!(
                        info.dtype,
                        Dtype::I64
                            | Dtype::I32
                            | Dtype::I16
                            | Dtype::I8
                            | Dtype::U64
                            | Dtype::U32
                            | Dtype::U16
                            | Dtype::U8
                    ) {
                        return Err(ConvertError::tensor(
                            &hf,
                            format!(
                                "dtype {} is not an integer type (expected I64 or I32 expert ids)",
                                info.dtype
                            ),
                        ));
                    }
                    return Ok(Plan::Ints { hf, info, data });
                }
                let src = self.float_source(&hf, &spec.name)?;
                let found = logical_shape(&src, self.ckpt.get(&hf).map(|(i, _)| i));
                if found != expect {
                    return Err(shape_err(spec, &hf, found, expect));
                }
                check_block(spec)?;
                Ok(Plan::Float(src))
            }
            HfRef::Experts { prefix, wid } => {
                if spec.dims.len() != 3 {
                    return Err(ConvertError::tensor(
                        &spec.name,
                        format!("routed experts need 3 dims, layout gives {:?}", spec.dims),
                    ));
                }
                let per = [spec.dims[1], spec.dims[0]];
                let mut v = Vec::with_capacity(spec.dims[2] as usize);
                for e in 0..spec.dims[2] {
                    let hf = expert_weight_name(&prefix, e, wid);
                    let src = self.float_source(&hf, &spec.name)?;
                    let found = vec![src.rows() as u64, src.cols() as u64];
                    if found != per {
                        return Err(ConvertError::Shape {
                            gguf: format!("{} (expert {e})", spec.name),
                            hf,
                            found,
                            expected: per.to_vec(),
                        });
                    }
                    v.push(src);
                }
                check_block(spec)?;
                Ok(Plan::Experts(v))
            }
        }
    }
}

fn shape_err(spec: &TensorSpec, hf: &str, found: Vec<u64>, expected: Vec<u64>) -> ConvertError {
    ConvertError::Shape {
        gguf: spec.name.clone(),
        hf: hf.to_string(),
        found,
        expected,
    }
}

/// The logical (dequantized) HF shape of a source.
fn logical_shape(src: &Source<'_>, info: Option<&TensorInfo>) -> Vec<u64> {
    match (src, info) {
        (Source::Plain { .. }, Some(i)) => i.shape.clone(),
        _ => vec![src.rows() as u64, src.cols() as u64],
    }
}

fn check_block(spec: &TensorSpec) -> Result<(), ConvertError> {
    if spec.dims.contains(&0) {
        return Err(ConvertError::tensor(
            &spec.name,
            format!("dims {:?} contain a zero", spec.dims),
        ));
    }
    let be = spec.recipe_type.block_elems() as u64;
    if !spec.dims[0].is_multiple_of(be) {
        return Err(ConvertError::tensor(
            &spec.name,
            format!(
                "row length {} is not a multiple of the {} block size {be}",
                spec.dims[0], spec.recipe_type
            ),
        ));
    }
    Ok(())
}

/// Encode f32 rows (`src.len()` a multiple of `cols`) as `ty`, in parallel over rows.
fn encode_rows(
    name: &str,
    ty: GgmlType,
    cols: usize,
    src: &[f32],
    out: &mut [u8],
) -> Result<(), ConvertError> {
    if ty == GgmlType::F32 {
        out.par_chunks_mut(4 * cols.max(1))
            .zip(src.par_chunks(cols.max(1)))
            .for_each(|(o, s)| {
                for (d, x) in o.chunks_exact_mut(4).zip(s) {
                    d.copy_from_slice(&x.to_le_bytes());
                }
            });
        return Ok(());
    }
    let rb = ds4_quant::row_bytes(ty, cols);
    out.par_chunks_mut(rb)
        .zip(src.par_chunks(cols))
        .enumerate()
        .try_for_each(|(r, (o, s))| {
            ds4_quant::quantize_row(ty, s, o).map_err(|e| {
                ConvertError::tensor(name, format!("row {r}: cannot encode as {ty}: {e}"))
            })
        })
}

/// Elements per dense chunk (16 MiB of f32).
const CHUNK_ELEMS: usize = 4 << 20;

fn write_plan(
    spec: &TensorSpec,
    plan: &Plan<'_>,
    n_expert: u32,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    let ty = spec.recipe_type;
    match plan {
        Plan::Ints { hf, info, data } => {
            if ty != GgmlType::I32 {
                return Err(ConvertError::tensor(
                    &spec.name,
                    format!("integer source {hf} cannot become {ty}"),
                ));
            }
            let v = ints_to_i32(hf, info, data, 0..n_expert as i64)?;
            let mut bytes = Vec::with_capacity(4 * v.len());
            for x in v {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            sink(&bytes)
        }
        Plan::Float(src) => {
            let (rows, cols) = (src.rows(), src.cols());
            let rb = ds4_quant::row_bytes(ty, cols);
            let chunk = (CHUNK_ELEMS / cols.max(1)).max(1);
            let mut f = Vec::new();
            let mut q = Vec::new();
            let mut r0 = 0;
            while r0 < rows {
                let n = chunk.min(rows - r0);
                f.resize(n * cols, 0.0f32);
                f.par_chunks_mut(cols.max(1))
                    .enumerate()
                    .for_each(|(k, row)| src.read_rows(r0 + k, row));
                q.resize(n * rb, 0u8);
                encode_rows(&spec.name, ty, cols, &f, &mut q)?;
                sink(&q)?;
                r0 += n;
            }
            Ok(())
        }
        Plan::Experts(srcs) => {
            // Experts in flight at once (each holds its f32 matrix and its encoding).
            let group = rayon::current_num_threads().clamp(1, 32);
            for (g, batch) in srcs.chunks(group).enumerate() {
                let outs: Vec<Result<Vec<u8>, ConvertError>> = batch
                    .par_iter()
                    .enumerate()
                    .map(|(k, src)| {
                        let e = g * group + k;
                        let (rows, cols) = (src.rows(), src.cols());
                        let mut f = vec![0.0f32; rows * cols];
                        src.read_rows(0, &mut f);
                        let mut q = vec![0u8; rows * ds4_quant::row_bytes(ty, cols)];
                        encode_rows(&format!("{} (expert {e})", spec.name), ty, cols, &f, &mut q)?;
                        Ok(q)
                    })
                    .collect();
                for o in outs {
                    sink(&o?)?;
                }
            }
            Ok(())
        }
    }
}

fn read_text(path: &Path) -> Result<String, ConvertError> {
    std::fs::read_to_string(path).map_err(|e| ConvertError::io("read", path, e))
}

/// The tokenizer of a checkpoint directory (tokenizer.json required,
/// tokenizer_config.json optional).
pub fn load_vocab(dir: &Path, cfg: &CheckpointConfig) -> Result<Vocab, ConvertError> {
    let tj = dir.join("tokenizer.json");
    if !tj.exists() {
        return Err(ConvertError::Tokenizer(format!(
            "{} is missing (the GGUF needs the tokenizer's tokens and merges)",
            tj.display()
        )));
    }
    let text = read_text(&tj)?;
    let tc = dir.join("tokenizer_config.json");
    let tc_text = if tc.exists() {
        Some(read_text(&tc)?)
    } else {
        None
    };
    tokenizer::build_vocab(
        &text,
        tc_text.as_deref(),
        cfg.model.vocab_size,
        cfg.bos_token_id,
        cfg.eos_token_id,
    )
}

/// Write one GGUF file: metadata, directory, then the streamed tensor data.
/// Goes through `PATH.partial` and renames at the end, so a failed run leaves no
/// truncated output behind.
fn write_gguf(
    path: &Path,
    kvs: Vec<(String, Value)>,
    specs: &[TensorSpec],
    plans: &[Plan<'_>],
    n_expert: u32,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<u64, ConvertError> {
    let mut w = GgufWriter::new();
    for (k, v) in kvs {
        w.add_kv(k, v);
    }
    for s in specs {
        w.add_tensor(s.name.clone(), s.recipe_type, &s.dims);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let file = File::create(&tmp).map_err(|e| ConvertError::io("create", &tmp, e))?;
    let result = (|| -> Result<u64, ConvertError> {
        let mut stream = w.begin(file)?;
        let mut total = 0u64;
        for (i, (spec, plan)) in specs.iter().zip(plans).enumerate() {
            progress(&format!(
                "[{}/{}] {} {:?} {}",
                i + 1,
                specs.len(),
                spec.name,
                spec.dims,
                spec.recipe_type
            ));
            write_plan(spec, plan, n_expert, &mut |b: &[u8]| {
                total += b.len() as u64;
                stream.write_data(b).map_err(ConvertError::from)
            })?;
        }
        let f = stream.finish()?;
        f.sync_all()
            .map_err(|e| ConvertError::io("sync", &tmp, e))?;
        Ok(total)
    })();
    match result {
        Ok(total) => {
            std::fs::rename(&tmp, path).map_err(|e| ConvertError::io("rename into", path, e))?;
            Ok(total)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Convert a checkpoint directory. `progress` receives one line per tensor.
pub fn convert(
    opts: &ConvertOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ConvertReport, ConvertError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| ConvertError::Checkpoint(format!("cannot start worker threads: {e}")))?;
    pool.install(|| convert_inner(opts, progress))
}

fn convert_inner(
    opts: &ConvertOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ConvertReport, ConvertError> {
    let dir = &opts.hf_dir;
    let cfg_path = dir.join("config.json");
    let cfg = parse_config(&read_text(&cfg_path)?)?;
    let model = &cfg.model;
    let vocab = load_vocab(dir, &cfg)?;
    let ckpt = Checkpoint::open(dir)?;

    let specs = layout::expected_tensors(model, opts.recipe);
    let mut planner = Planner {
        ckpt: &ckpt,
        cfg: &cfg,
        used: BTreeSet::new(),
    };
    let plans = specs
        .iter()
        .map(|s| planner.plan(s))
        .collect::<Result<Vec<_>, _>>()?;

    let mut notes = Vec::new();
    let has_mtp = ckpt.names().any(|n| n.starts_with("mtp."));
    let (mtp_specs, mtp_plans) = match &opts.mtp_out {
        Some(_) => {
            if !has_mtp {
                return Err(ConvertError::Checkpoint(
                    "an MTP output was requested but the checkpoint has no mtp.* tensors".into(),
                ));
            }
            let s = layout::expected_mtp_tensors(model, opts.recipe);
            let p = s
                .iter()
                .map(|t| planner.plan(t))
                .collect::<Result<Vec<_>, _>>()?;
            (s, p)
        }
        None => {
            if has_mtp {
                let n = ckpt.names().filter(|n| n.starts_with("mtp.")).count();
                notes.push(format!(
                    "skipped {n} MTP checkpoint tensors (mtp.*): no MTP output file was given"
                ));
                let skipped: Vec<String> = ckpt
                    .names()
                    .filter(|n| n.starts_with("mtp."))
                    .map(String::from)
                    .collect();
                planner.used.extend(skipped);
            }
            (Vec::new(), Vec::new())
        }
    };
    let unused: Vec<&str> = ckpt
        .names()
        .filter(|n| !planner.used.contains(*n))
        .collect();
    if !unused.is_empty() {
        let mut names = unused
            .iter()
            .take(10)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if unused.len() > 10 {
            names.push_str(", ...");
        }
        if !opts.allow_unused {
            return Err(ConvertError::Unused {
                count: unused.len(),
                names,
            });
        }
        notes.push(format!(
            "ignored {} checkpoint tensor(s) the layout does not use: {names}",
            unused.len()
        ));
    }

    let mut kvs = model.kvs_with_arch(layout::ARCH);
    kvs.insert(
        1,
        (
            layout::keys::NAME.to_string(),
            Value::String(checkpoint_name(dir)),
        ),
    );
    kvs.extend(vocab.kvs());
    let data_bytes = write_gguf(&opts.out, kvs, &specs, &plans, model.n_expert, progress)?;

    if let Some(mtp_out) = &opts.mtp_out {
        let mut kvs = model.kvs_with_arch(layout::MTP_ARCH);
        kvs.insert(
            1,
            (
                layout::keys::NAME.to_string(),
                Value::String(format!("{} MTP", checkpoint_name(dir))),
            ),
        );
        write_gguf(
            mtp_out,
            kvs,
            &mtp_specs,
            &mtp_plans,
            model.n_expert,
            progress,
        )?;
    }

    Ok(ConvertReport {
        tensors: specs.len(),
        data_bytes,
        mtp_tensors: mtp_specs.len(),
        vocab: vocab.source,
        config: model.clone(),
        notes,
    })
}

/// `general.name`: the checkpoint directory's name.
fn checkpoint_name(dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canon
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "DeepSeek-V4".to_string())
}
