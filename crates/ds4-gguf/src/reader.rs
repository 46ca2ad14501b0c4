//! GGUF v3 reader: parses the header, metadata and tensor directory of a
//! read-only memory map (or an owned buffer); tensor bytes are never copied.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use ds4_quant::GgmlType;
use memmap2::Mmap;

use crate::error::GgufError;
use crate::value::{Value, ValueType};

/// "GGUF" read as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// The only supported container version.
pub const GGUF_VERSION: u32 = 3;
/// Alignment used when `general.alignment` is absent or unusable.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest accepted array nesting (ds4.c `skip_value`: a value at depth > 8 is rejected,
/// the top-level value being depth 0 and array elements one deeper than their array).
pub const MAX_NESTING_DEPTH: u32 = 8;
/// Largest accepted `n_dims` of a tensor (ds4.c `DS4_MAX_DIMS`).
pub const MAX_DIMS: u32 = 8;
/// Files shorter than this are rejected (ds4.c `model_open`).
pub const MIN_FILE_LEN: u64 = 32;
/// Most metadata values (array elements included) decoded from one file. The published
/// files hold about 0.4 M (tokenizer arrays); the cap keeps a corrupt count inside an
/// 80 GB mmap from turning into a multi-GB `Vec<Value>` (at most 16 Mi × 32 bytes).
pub const MAX_METADATA_VALUES: u64 = 1 << 24;
/// Longest metadata string or key accepted (the published chat template is ~10 KB).
pub const MAX_STRING_LEN: u64 = 256 << 20;

/// One entry of the tensor directory.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the contiguous dimension.
    pub dims: Vec<u64>,
    /// Raw GGUF type id as stored.
    pub type_id: u32,
    /// The type, None for an id this crate does not know (then `n_bytes` is 0).
    pub ggml_type: Option<GgmlType>,
    /// Offset relative to the data section start.
    pub offset: u64,
    /// Absolute file offset (data start + offset).
    pub abs_offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

enum Backing {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// A parsed GGUF v3 file. Metadata and the tensor directory are decoded at open;
/// tensor bytes stay in the map and are handed out as slices.
pub struct GgufFile {
    backing: Backing,
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, Value)>,
    kv_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_start", &self.data_start)
            .field("file_len", &self.file_len())
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps `path` read-only and parses it. Nothing is copied.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |action: &'static str| {
            let path = path.to_path_buf();
            move |source| GgufError::Io {
                action,
                path,
                source,
            }
        };
        let file = File::open(path).map_err(io("open"))?;
        let len = file.metadata().map_err(io("stat"))?.len();
        if len < MIN_FILE_LEN {
            return Err(GgufError::TooSmall { len });
        }
        // SAFETY: the map is read-only; like every mmap-based loader (ds4.c included)
        // we rely on the file not being truncated or rewritten while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(io("mmap"))?;
        Self::parse(Backing::Mmap(map))
    }

    /// Parses an owned buffer with the same parser as [`GgufFile::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::parse(Backing::Owned(bytes))
    }

    fn parse(backing: Backing) -> Result<GgufFile, GgufError> {
        let parsed = parse_container(backing.bytes())?;
        let mut kv_index = HashMap::with_capacity(parsed.metadata.len());
        for (i, (k, _)) in parsed.metadata.iter().enumerate() {
            kv_index.entry(k.clone()).or_insert(i);
        }
        let mut tensor_index = HashMap::with_capacity(parsed.tensors.len());
        for (i, t) in parsed.tensors.iter().enumerate() {
            tensor_index.entry(t.name.clone()).or_insert(i);
        }
        Ok(GgufFile {
            backing,
            version: parsed.version,
            alignment: parsed.alignment,
            data_start: parsed.data_start,
            metadata: parsed.metadata,
            kv_index,
            tensors: parsed.tensors,
            tensor_index,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment` if it is a UINT32, non-zero power of two, else 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    pub fn file_len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// All KV records in file order, duplicates kept.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of the first record with this key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The tensor directory in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The first tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's bytes, a zero-copy slice of the map. Bounds were checked at open;
    /// a `TensorInfo` that does not lie inside this file yields an empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let bytes = self.bytes();
        let start = usize::try_from(t.abs_offset).ok();
        let end = t
            .abs_offset
            .checked_add(t.n_bytes)
            .and_then(|e| usize::try_from(e).ok());
        match (start, end) {
            (Some(s), Some(e)) if t.n_bytes != 0 && e <= bytes.len() => &bytes[s..e],
            _ => &[],
        }
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Whether the bytes are a memory map (from [`GgufFile::open`]) rather than an
    /// owned buffer.
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Mmap(_))
    }

    /// Asks the kernel to read the mapped file ahead (`madvise(MADV_WILLNEED)`, what
    /// ds4.c does for its CPU backend). A no-op for an owned buffer or on non-Unix hosts.
    pub fn prefetch(&self) -> std::io::Result<()> {
        match &self.backing {
            #[cfg(unix)]
            Backing::Mmap(m) => m.advise(memmap2::Advice::WillNeed),
            _ => Ok(()),
        }
    }
}

/// The result of parsing a container (without the backing buffer).
struct Parsed {
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

/// The alignment a reader derives from a metadata list: the first `general.alignment`
/// if it is UINT32, non-zero and a power of two, else [`DEFAULT_ALIGNMENT`].
pub fn alignment_from_metadata(metadata: &[(String, Value)]) -> u64 {
    match metadata.iter().find(|(k, _)| k == "general.alignment") {
        Some((_, Value::U32(a))) if *a != 0 && a.is_power_of_two() => *a as u64,
        _ => DEFAULT_ALIGNMENT,
    }
}

/// `x` rounded up to a multiple of `a` (a power of two), None on overflow.
pub fn align_up(x: u64, a: u64) -> Option<u64> {
    debug_assert!(a.is_power_of_two());
    x.checked_add(a - 1).map(|v| v & !(a - 1))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Metadata values that may still be decoded (see [`MAX_METADATA_VALUES`]).
    values_left: u64,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        let left = self.left();
        match usize::try_from(n) {
            Ok(n) if n <= left => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(GgufError::Truncated {
                offset: self.pos as u64,
                what,
                need: n,
                left: left as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// u64 length + UTF-8 bytes. The length is checked against the remaining bytes
    /// before anything is allocated.
    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len_offset = self.pos as u64;
        let len = self.u64(what)?;
        let start = self.pos as u64;
        if len > MAX_STRING_LEN {
            return Err(GgufError::LimitExceeded {
                offset: len_offset,
                what,
                count: len,
                limit: MAX_STRING_LEN,
            });
        }
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(source) => Err(GgufError::InvalidUtf8 {
                offset: start + source.valid_up_to() as u64,
                what,
                source,
            }),
        }
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in what is left.
    fn check_count(
        &self,
        count: u64,
        min_size: usize,
        what: &'static str,
        offset: u64,
    ) -> Result<(), GgufError> {
        let need = count as u128 * min_size as u128;
        if need > self.left() as u128 {
            return Err(GgufError::CountTooLarge {
                offset,
                what,
                count,
                need,
                left: self.left() as u64,
            });
        }
        Ok(())
    }

    /// Takes `n` from the decoded-value budget.
    fn spend_values(&mut self, n: u64, offset: u64) -> Result<(), GgufError> {
        if n > self.values_left {
            return Err(GgufError::LimitExceeded {
                offset,
                what: "metadata values (array elements included)",
                count: MAX_METADATA_VALUES - self.values_left + n,
                limit: MAX_METADATA_VALUES,
            });
        }
        self.values_left -= n;
        Ok(())
    }

    fn value_type(&mut self) -> Result<ValueType, GgufError> {
        let offset = self.pos as u64;
        let id = self.u32("metadata value type")?;
        ValueType::from_id(id).ok_or(GgufError::UnknownValueType {
            offset,
            type_id: id,
        })
    }

    /// A value of type `t` at nesting `depth` (top-level values are depth 0, array
    /// elements one deeper than their array). Like ds4.c `skip_value`, only string and
    /// array values are depth-checked (scalar array elements are read in bulk there).
    fn value(&mut self, t: ValueType, depth: u32) -> Result<Value, GgufError> {
        const W: &str = "metadata value";
        if depth == 0 {
            self.spend_values(1, self.pos as u64)?;
        }
        if matches!(t, ValueType::String | ValueType::Array) && depth > MAX_NESTING_DEPTH {
            return Err(GgufError::NestingTooDeep {
                offset: self.pos as u64,
                depth,
                max: MAX_NESTING_DEPTH,
            });
        }
        Ok(match t {
            ValueType::U8 => Value::U8(self.u8(W)?),
            ValueType::I8 => Value::I8(self.u8(W)? as i8),
            ValueType::U16 => Value::U16(self.u16(W)?),
            ValueType::I16 => Value::I16(self.u16(W)? as i16),
            ValueType::U32 => Value::U32(self.u32(W)?),
            ValueType::I32 => Value::I32(self.u32(W)? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32(W)?)),
            ValueType::Bool => Value::Bool(self.u8(W)? != 0),
            ValueType::U64 => Value::U64(self.u64(W)?),
            ValueType::I64 => Value::I64(self.u64(W)? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64(W)?)),
            ValueType::String => Value::String(self.string("metadata string")?),
            ValueType::Array => {
                let elem = self.value_type()?;
                let count_offset = self.pos as u64;
                let count = self.u64("metadata array length")?;
                self.check_count(
                    count,
                    elem.min_encoded_size(),
                    "metadata array element",
                    count_offset,
                )?;
                self.spend_values(count, count_offset)?;
                // `count` items fit in the remaining bytes and in the value budget, so
                // this allocation is bounded by MAX_METADATA_VALUES * size_of::<Value>().
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
}

fn parse_container(buf: &[u8]) -> Result<Parsed, GgufError> {
    let file_len = buf.len() as u64;
    if file_len < MIN_FILE_LEN {
        return Err(GgufError::TooSmall { len: file_len });
    }
    let mut c = Cursor {
        buf,
        pos: 0,
        values_left: MAX_METADATA_VALUES,
    };
    let magic = c.array::<4>("magic")?;
    if u32::from_le_bytes(magic) != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32("version")?;
    if version != GGUF_VERSION {
        return Err(GgufError::UnsupportedVersion { found: version });
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv_offset = c.pos as u64;
    let n_kv = c.u64("metadata count")?;

    // Key string length (8) + value type (4) + smallest value (1).
    c.check_count(n_kv, 13, "metadata record", n_kv_offset)?;
    let mut metadata = Vec::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let t = c.value_type()?;
        let v = c.value(t, 0)?;
        metadata.push((key, v));
    }
    let alignment = alignment_from_metadata(&metadata);

    // Name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
    c.check_count(n_tensors, 32, "tensor info", 8)?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let dims_offset = c.pos as u64;
        let n_dims = c.u32("tensor n_dims")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadDims {
                name,
                offset: dims_offset,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dimension")?);
        }
        let type_id = c.u32("tensor type")?;
        let offset = c.u64("tensor offset")?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| GgufError::ElementCountOverflow {
                name: name.clone(),
                dims: dims.clone(),
            })?;
        let ggml_type = GgmlType::from_id(type_id);
        let n_bytes = match ggml_type {
            Some(t) => t
                .bytes_for(n_elements)
                .ok_or_else(|| GgufError::ByteSizeOverflow {
                    name: name.clone(),
                    n_elements,
                    type_name: t.name(),
                })?,
            None => 0,
        };
        tensors.push(TensorInfo {
            name,
            dims,
            type_id,
            ggml_type,
            offset,
            abs_offset: 0,
            n_elements,
            n_bytes,
        });
    }

    let end = c.pos as u64;
    let data_start =
        align_up(end, alignment).ok_or(GgufError::DataStartOverflow { end, alignment })?;
    for t in &mut tensors {
        let abs = data_start
            .checked_add(t.offset)
            .ok_or_else(|| GgufError::OffsetOverflow {
                name: t.name.clone(),
                data_start,
                offset: t.offset,
            })?;
        t.abs_offset = abs;
        // Like ds4.c, a zero-byte tensor (unknown type or a zero dim) is not bounds-checked.
        if t.n_bytes != 0 && (abs > file_len || t.n_bytes > file_len - abs) {
            return Err(GgufError::OutOfBounds {
                name: t.name.clone(),
                offset: t.offset,
                data_start,
                start: abs,
                end: abs as u128 + t.n_bytes as u128,
                file_len,
            });
        }
    }

    Ok(Parsed {
        version,
        alignment,
        data_start,
        metadata,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_to_power_of_two() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(32, 32), Some(32));
        assert_eq!(align_up(33, 32), Some(64));
        assert_eq!(align_up(u64::MAX - 3, 32), None);
    }

    #[test]
    fn value_type_ids_round_trip() {
        for t in ValueType::ALL {
            assert_eq!(ValueType::from_id(t.id()), Some(t));
        }
        assert_eq!(ValueType::from_id(13), None);
    }
}
