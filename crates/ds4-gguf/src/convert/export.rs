//! ds4 GGUF → official checkpoint names (the inverse of the converter), so a synthetic
//! GGUF can be turned into an official-style checkpoint and converted back.
//!
//! Dtypes: F16 tensors stay F16, F32 tensors become BF16 when every value is exactly
//! representable in BF16 and F32 otherwise (so the round trip is lossless), I32
//! (tid2eid) becomes I64, quantized tensors are dequantized to F32. No FP8/FP4.

use std::io::Write;
use std::path::Path;

use super::config::config_json;
use super::names::{expert_weight_name, gguf_to_hf, HfRef};
use super::safetensors::{write_safetensors, Dtype, WriteEntry};
use super::tokenizer::{self, token_type};
use super::ConvertError;
use crate::layout::ModelConfig;
use crate::reader::TensorInfo as GgufTensor;
use crate::{GgmlType, GgufFile};

/// Export settings.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Split the tensors into shards of at most this many data bytes (a shard holds at
    /// least one tensor); more than one shard adds `model.safetensors.index.json`.
    pub max_shard_bytes: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            max_shard_bytes: 4 << 30,
        }
    }
}

/// Export `gguf` (a ds4 main file) into `dir` with official names, as a single
/// `model.safetensors` (or shards for big files) plus config.json, tokenizer.json and
/// tokenizer_config.json.
pub fn export_official_checkpoint(gguf: &GgufFile, dir: &Path) -> Result<(), ConvertError> {
    export_official_checkpoint_with(gguf, None, dir, &ExportOptions::default())
}

/// One tensor to export.
struct Item<'a> {
    hf: String,
    dtype: Dtype,
    shape: Vec<u64>,
    src: &'a GgufTensor,
    /// Expert slice index for a 3-D expert tensor.
    expert: Option<u64>,
}

fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// As [`export_official_checkpoint`], with an optional MTP GGUF whose `mtp.0.*`
/// tensors are added under their official `mtp.0.*` names.
pub fn export_official_checkpoint_with(
    gguf: &GgufFile,
    mtp: Option<&GgufFile>,
    dir: &Path,
    opts: &ExportOptions,
) -> Result<(), ConvertError> {
    let cfg = ModelConfig::from_gguf(gguf)?;
    let vocab = tokenizer::vocab_from_metadata(gguf.metadata())?;
    std::fs::create_dir_all(dir).map_err(|e| ConvertError::io("create directory", dir, e))?;

    let mut items: Vec<(Item<'_>, &GgufFile)> = Vec::new();
    let files: Vec<&GgufFile> = std::iter::once(gguf).chain(mtp).collect();
    for f in files {
        for t in f.tensors() {
            let ty = t.ggml_type.ok_or_else(|| ConvertError::Tensor {
                name: t.name.clone(),
                problem: format!("unknown GGUF type id {}", t.type_id),
            })?;
            let hfref = gguf_to_hf(&t.name).ok_or_else(|| ConvertError::Tensor {
                name: t.name.clone(),
                problem: "not a tensor of the ds4 layout; no official name".into(),
            })?;
            let data = f.tensor_data(t);
            let dtype = match ty {
                GgmlType::F16 => Dtype::F16,
                GgmlType::Bf16 => Dtype::BF16,
                GgmlType::I32 => Dtype::I64,
                GgmlType::F32 => {
                    if f32s(data).all(|x| x.to_bits() & 0xFFFF == 0) {
                        Dtype::BF16
                    } else {
                        Dtype::F32
                    }
                }
                _ => Dtype::F32,
            };
            let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
            match hfref {
                HfRef::Tensor(hf) => items.push((
                    Item {
                        hf,
                        dtype,
                        shape,
                        src: t,
                        expert: None,
                    },
                    f,
                )),
                HfRef::Experts { prefix, wid } => {
                    if t.dims.len() != 3 {
                        return Err(ConvertError::Tensor {
                            name: t.name.clone(),
                            problem: format!("routed experts need 3 dims, found {:?}", t.dims),
                        });
                    }
                    for e in 0..t.dims[2] {
                        items.push((
                            Item {
                                hf: expert_weight_name(&prefix, e, wid),
                                dtype,
                                shape: vec![t.dims[1], t.dims[0]],
                                src: t,
                                expert: Some(e),
                            },
                            f,
                        ));
                    }
                }
            }
        }
    }

    // Shard greedily in directory order.
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut cur = 0u64;
    for (i, (it, _)) in items.iter().enumerate() {
        let n = it.shape.iter().product::<u64>() * it.dtype.size() as u64;
        if cur > 0 && cur + n > opts.max_shard_bytes {
            shards.push(Vec::new());
            cur = 0;
        }
        shards.last_mut().expect("one shard").push(i);
        cur += n;
    }
    let n_shards = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    for (si, shard) in shards.iter().enumerate() {
        let fname = if n_shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", si + 1, n_shards)
        };
        let mut entries = Vec::new();
        for &i in shard {
            let (it, f) = &items[i];
            weight_map.insert(it.hf.clone(), serde_json::json!(fname));
            total += it.shape.iter().product::<u64>() * it.dtype.size() as u64;
            let f: &GgufFile = f;
            let src = it.src;
            let dtype = it.dtype;
            let expert = it.expert;
            let name = src.name.clone();
            entries.push(WriteEntry {
                name: it.hf.clone(),
                dtype,
                shape: it.shape.clone(),
                data: Box::new(move |w: &mut dyn Write| {
                    write_item(f, src, expert, dtype, &name, w)
                }),
            });
        }
        write_safetensors(&dir.join(&fname), entries)?;
    }
    if n_shards > 1 {
        let idx = serde_json::json!({
            "metadata": {"total_size": total},
            "weight_map": weight_map,
        });
        write_json(&dir.join("model.safetensors.index.json"), &idx)?;
    }

    write_json(
        &dir.join("config.json"),
        &config_json(&cfg, mtp.is_some(), vocab.bos, vocab.eos),
    )?;
    // Exported tokens must be unique within model.vocab (a JSON object).
    let mut seen = std::collections::HashSet::new();
    for (t, &ty) in vocab.tokens.iter().zip(&vocab.token_types) {
        if ty != token_type::CONTROL && ty != token_type::USER_DEFINED && !seen.insert(t.as_str()) {
            return Err(ConvertError::Tokenizer(format!(
                "token {t:?} occurs twice; tokenizer.json cannot represent the vocabulary"
            )));
        }
    }
    write_json(
        &dir.join("tokenizer.json"),
        &tokenizer::tokenizer_json(&vocab),
    )?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &tokenizer::tokenizer_config_json(&vocab),
    )?;
    Ok(())
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), ConvertError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| ConvertError::Checkpoint(format!("cannot encode {}: {e}", path.display())))?;
    std::fs::write(path, text).map_err(|e| ConvertError::io("write", path, e))
}

fn io_err(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Stream one exported tensor (or one expert slice) in `dtype`.
fn write_item(
    f: &GgufFile,
    t: &GgufTensor,
    expert: Option<u64>,
    dtype: Dtype,
    name: &str,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let ty = t.ggml_type.expect("checked when planning");
    let data = f.tensor_data(t);
    let row_b = ds4_quant::row_bytes(ty, t.dims[0] as usize);
    let rows_per = if t.dims.len() >= 2 {
        t.dims[1] as usize
    } else {
        1
    };
    let bytes = match expert {
        Some(e) => {
            let per = row_b * rows_per;
            &data[e as usize * per..(e as usize + 1) * per]
        }
        None => data,
    };
    match (ty, dtype) {
        (GgmlType::F16, Dtype::F16)
        | (GgmlType::Bf16, Dtype::BF16)
        | (GgmlType::F32, Dtype::F32) => w.write_all(bytes),
        (GgmlType::F32, Dtype::BF16) => {
            let mut out = Vec::with_capacity(bytes.len() / 2);
            for x in f32s(bytes) {
                out.extend_from_slice(&((x.to_bits() >> 16) as u16).to_le_bytes());
            }
            w.write_all(&out)
        }
        (GgmlType::I32, Dtype::I64) => {
            let mut out = Vec::with_capacity(bytes.len() * 2);
            for c in bytes.chunks_exact(4) {
                let v = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64;
                out.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&out)
        }
        (_, Dtype::F32) => {
            let cols = t.dims[0] as usize;
            let mut row = vec![0f32; cols];
            let mut out = Vec::with_capacity(cols * 4);
            for rb in bytes.chunks_exact(row_b) {
                ds4_quant::dequantize_row(ty, rb, &mut row)
                    .map_err(|e| io_err(format!("tensor {name}: cannot dequantize {ty}: {e}")))?;
                out.clear();
                for x in &row {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                w.write_all(&out)?;
            }
            Ok(())
        }
        _ => Err(io_err(format!(
            "tensor {name}: no export from {ty} to {dtype}"
        ))),
    }
}
