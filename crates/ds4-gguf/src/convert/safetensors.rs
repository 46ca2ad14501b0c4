//! A small, strict safetensors reader (mmap, zero-copy) and a streaming writer.
//!
//! Format: `u64` little-endian header length `N`, then `N` bytes of JSON
//! (`{"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}`,
//! plus an optional `"__metadata__"` object of strings), then the data section.
//! `data_offsets` are relative to the start of the data section.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::ConvertError;

/// Element types a safetensors header may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F16,
    BF16,
    F32,
    F64,
    F8E4M3,
    F8E5M2,
    F8E8M0,
}

impl Dtype {
    /// Parse the dtype string of a header entry.
    pub fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E5M2" => Dtype::F8E5M2,
            "F8_E8M0" => Dtype::F8E8M0,
            _ => return None,
        })
    }

    /// The header spelling.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E8M0 => "F8_E8M0",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 | Dtype::F8E5M2 | Dtype::F8E8M0 => {
                1
            }
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    /// PyTorch order (`[rows, cols]`, slowest first).
    pub shape: Vec<u64>,
    /// Byte range inside the data section.
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Largest JSON header accepted (the real checkpoints have headers of a few hundred KiB).
const MAX_HEADER: u64 = 512 << 20;

/// One mapped safetensors file.
pub struct SafeTensorsFile {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
}

fn bad(path: &Path, problem: impl Into<String>) -> ConvertError {
    ConvertError::Safetensors {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

impl SafeTensorsFile {
    /// Open and validate a safetensors file (header only; data is mapped, not read).
    pub fn open(path: &Path) -> Result<SafeTensorsFile, ConvertError> {
        let file = File::open(path).map_err(|e| ConvertError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ConvertError::io("stat", path, e))?
            .len();
        if len < 8 {
            return Err(bad(
                path,
                format!("file is {len} bytes, too small for the 8-byte header length"),
            ));
        }
        // SAFETY: the file is opened read-only; the converter never writes to its
        // inputs, and a concurrent external modification is outside what we support.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ConvertError::io("mmap", path, e))?;
        let (data_start, tensors) = parse_header(path, &map)?;
        Ok(SafeTensorsFile {
            path: path.to_path_buf(),
            map,
            data_start,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensors by name (sorted).
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// The raw bytes of a tensor, or None if there is no tensor of that name.
    pub fn data(&self, name: &str) -> Option<&[u8]> {
        let info = self.tensors.get(name)?;
        Some(self.bytes_of(info))
    }

    /// Raw bytes of an entry of this file (bounds were checked at open).
    pub fn bytes_of(&self, info: &TensorInfo) -> &[u8] {
        &self.map[self.data_start + info.begin as usize..self.data_start + info.end as usize]
    }
}

/// Parse and validate the header of a mapped file. Returns the data start and the entries.
fn parse_header(
    path: &Path,
    bytes: &[u8],
) -> Result<(usize, BTreeMap<String, TensorInfo>), ConvertError> {
    let len = bytes.len() as u64;
    let n = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(bad(
            path,
            format!("header length {n} is larger than the {MAX_HEADER}-byte limit"),
        ));
    }
    if n > len - 8 {
        return Err(bad(
            path,
            format!(
                "header length {n} runs past the end of the file ({} bytes after the length field)",
                len - 8
            ),
        ));
    }
    let header = &bytes[8..8 + n as usize];
    let value: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| bad(path, format!("header is not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad(path, "header is not a JSON object"))?;
    let data_start = 8 + n as usize;
    let data_len = len - 8 - n;
    let mut tensors = BTreeMap::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            if !entry.is_object() {
                return Err(bad(path, "__metadata__ is not a JSON object"));
            }
            continue;
        }
        let info = parse_entry(path, name, entry, data_len)?;
        tensors.insert(name.clone(), info);
    }
    // Entries must not overlap.
    let mut ranges: Vec<(&String, &TensorInfo)> =
        tensors.iter().filter(|(_, t)| t.end > t.begin).collect();
    ranges.sort_by_key(|(_, t)| (t.begin, t.end));
    for w in ranges.windows(2) {
        if w[1].1.begin < w[0].1.end {
            return Err(bad(
                path,
                format!(
                    "tensors {} [{}, {}) and {} [{}, {}) overlap",
                    w[0].0, w[0].1.begin, w[0].1.end, w[1].0, w[1].1.begin, w[1].1.end
                ),
            ));
        }
    }
    Ok((data_start, tensors))
}

fn parse_entry(
    path: &Path,
    name: &str,
    entry: &serde_json::Value,
    data_len: u64,
) -> Result<TensorInfo, ConvertError> {
    let e = |p: String| bad(path, format!("tensor {name}: {p}"));
    let obj = entry
        .as_object()
        .ok_or_else(|| e("header entry is not a JSON object".into()))?;
    let dtype_s = obj
        .get("dtype")
        .and_then(|v| v.as_str())
        .ok_or_else(|| e("missing string field \"dtype\"".into()))?;
    let dtype = Dtype::parse(dtype_s).ok_or_else(|| e(format!("unknown dtype {dtype_s:?}")))?;
    let shape_v = obj
        .get("shape")
        .and_then(|v| v.as_array())
        .ok_or_else(|| e("missing array field \"shape\"".into()))?;
    let mut shape = Vec::with_capacity(shape_v.len());
    for d in shape_v {
        shape.push(
            d.as_u64()
                .ok_or_else(|| e(format!("shape entry {d} is not a non-negative integer")))?,
        );
    }
    let offs = obj
        .get("data_offsets")
        .and_then(|v| v.as_array())
        .ok_or_else(|| e("missing array field \"data_offsets\"".into()))?;
    if offs.len() != 2 {
        return Err(e(format!(
            "data_offsets has {} entries, expected 2",
            offs.len()
        )));
    }
    let begin = offs[0]
        .as_u64()
        .ok_or_else(|| e(format!("data_offsets[0] = {} is not an integer", offs[0])))?;
    let end = offs[1]
        .as_u64()
        .ok_or_else(|| e(format!("data_offsets[1] = {} is not an integer", offs[1])))?;
    if end < begin {
        return Err(e(format!("data_offsets [{begin}, {end}) end before begin")));
    }
    if end > data_len {
        return Err(e(format!(
            "data_offsets [{begin}, {end}) run past the end of the data section ({data_len} bytes)"
        )));
    }
    let n_el = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| e(format!("element count of shape {shape:?} overflows")))?;
    let want = n_el
        .checked_mul(dtype.size() as u64)
        .ok_or_else(|| e(format!("byte size of shape {shape:?} overflows")))?;
    if end - begin != want {
        return Err(e(format!(
            "data_offsets [{begin}, {end}) hold {} bytes, but {dtype} {shape:?} needs {want}",
            end - begin
        )));
    }
    Ok(TensorInfo {
        dtype,
        shape,
        begin,
        end,
    })
}

/// A checkpoint directory: one or more shards plus an optional index.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<SafeTensorsFile>,
    /// Name with any `model.` prefix stripped → (shard index, original name).
    names: BTreeMap<String, (usize, String)>,
}

impl Checkpoint {
    /// Open `DIR/model.safetensors.index.json` (all shards of its `weight_map`) or,
    /// without an index, `DIR/model.safetensors`.
    pub fn open(dir: &Path) -> Result<Checkpoint, ConvertError> {
        let index = dir.join("model.safetensors.index.json");
        let mut shards = Vec::new();
        let mut names = BTreeMap::new();
        if index.exists() {
            let text =
                std::fs::read_to_string(&index).map_err(|e| ConvertError::io("read", &index, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ConvertError::Json {
                    path: index.clone(),
                    problem: e.to_string(),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ConvertError::Json {
                    path: index.clone(),
                    problem: "missing object \"weight_map\"".into(),
                })?;
            let mut shard_of: BTreeMap<String, usize> = BTreeMap::new();
            for (tname, file) in map {
                let file = file.as_str().ok_or_else(|| ConvertError::Json {
                    path: index.clone(),
                    problem: format!("weight_map entry {tname} is not a string"),
                })?;
                if file.contains('/') || file.contains('\\') || file == ".." {
                    return Err(ConvertError::Json {
                        path: index.clone(),
                        problem: format!(
                            "weight_map entry {tname} names {file:?}, which is not a file in the checkpoint directory"
                        ),
                    });
                }
                let idx = match shard_of.get(file) {
                    Some(&i) => i,
                    None => {
                        let f = SafeTensorsFile::open(&dir.join(file))?;
                        shards.push(f);
                        shard_of.insert(file.to_string(), shards.len() - 1);
                        shards.len() - 1
                    }
                };
                if !shards[idx].tensors.contains_key(tname) {
                    return Err(ConvertError::MissingTensor {
                        name: tname.clone(),
                        context: format!(
                            "model.safetensors.index.json maps it to {file}, which has no such tensor"
                        ),
                    });
                }
                insert_name(&mut names, tname, idx)?;
            }
            // Tensors present in a shard but absent from the index are ignored by
            // every loader; list them as an error so nothing is silently dropped.
            for (i, s) in shards.iter().enumerate() {
                for t in s.tensors.keys() {
                    let key = strip_model_prefix(t);
                    if names.get(key).map(|(si, _)| *si) != Some(i) {
                        return Err(ConvertError::Checkpoint(format!(
                            "tensor {t} is stored in {} but model.safetensors.index.json does not list it there",
                            s.path.display()
                        )));
                    }
                }
            }
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(ConvertError::Checkpoint(format!(
                    "{} has neither model.safetensors.index.json nor model.safetensors",
                    dir.display()
                )));
            }
            let f = SafeTensorsFile::open(&single)?;
            for t in f.tensors.keys() {
                insert_name(&mut names, t, 0)?;
            }
            shards.push(f);
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            shards,
            names,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every tensor name (prefix-stripped), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(|s| s.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// Header entry and bytes of a tensor by (prefix-stripped) name.
    pub fn get(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let (shard, orig) = self.names.get(name)?;
        let f = &self.shards[*shard];
        let info = f.tensors.get(orig)?;
        Some((info, f.bytes_of(info)))
    }
}

/// Strip one leading `model.` (DeepSeek's files have none; some re-uploads do).
pub fn strip_model_prefix(name: &str) -> &str {
    name.strip_prefix("model.").unwrap_or(name)
}

fn insert_name(
    names: &mut BTreeMap<String, (usize, String)>,
    name: &str,
    shard: usize,
) -> Result<(), ConvertError> {
    let key = strip_model_prefix(name).to_string();
    if let Some((_, prev)) = names.get(&key) {
        return Err(ConvertError::Checkpoint(format!(
            "tensor names {prev} and {name} both map to {key} after stripping the model. prefix"
        )));
    }
    names.insert(key, (shard, name.to_string()));
    Ok(())
}

/// Produces a tensor's bytes into a writer.
pub type DataFn<'a> = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + 'a>;

/// A tensor to write: header entry fields plus a way to produce its bytes.
pub struct WriteEntry<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Produces exactly `n_elements · dtype.size()` bytes into the writer.
    pub data: DataFn<'a>,
}

/// Write a safetensors file, streaming the tensor data in the given order.
pub fn write_safetensors(path: &Path, entries: Vec<WriteEntry<'_>>) -> Result<(), ConvertError> {
    let mut header = serde_json::Map::new();
    let mut off = 0u64;
    let mut sizes = Vec::with_capacity(entries.len());
    for e in &entries {
        let n: u64 = e.shape.iter().product();
        let bytes = n * e.dtype.size() as u64;
        header.insert(
            e.name.clone(),
            serde_json::json!({
                "dtype": e.dtype.name(),
                "shape": e.shape,
                "data_offsets": [off, off + bytes],
            }),
        );
        sizes.push(bytes);
        off += bytes;
    }
    let mut text = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| ConvertError::Checkpoint(format!("cannot encode safetensors header: {e}")))?;
    // Pad the header with spaces so the data section is 8-byte aligned (as the
    // reference writer does).
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let file = File::create(path).map_err(|e| ConvertError::io("create", path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let werr = |e| ConvertError::io("write", path, e);
    w.write_all(&(text.len() as u64).to_le_bytes())
        .map_err(werr)?;
    w.write_all(&text).map_err(werr)?;
    for (e, want) in entries.into_iter().zip(sizes) {
        let mut counter = CountingWriter {
            inner: &mut w,
            n: 0,
        };
        let name = e.name.clone();
        (e.data)(&mut counter).map_err(werr)?;
        if counter.n != want {
            return Err(ConvertError::Checkpoint(format!(
                "internal: tensor {name} produced {} bytes, expected {want}",
                counter.n
            )));
        }
    }
    w.flush().map_err(werr)?;
    Ok(())
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
