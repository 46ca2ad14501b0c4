//! Tensor sources: where the forward pass gets its weights from. A GGUF file
//! (zero copy from its mmap) or an in-memory set (synthetic test models).

use anyhow::{bail, Result};
use ds4_quant::GgmlType;
use std::collections::HashMap;
use std::sync::Arc;

/// Something that keeps a byte region alive (an mmap, an owned buffer).
pub trait ByteOwner: Send + Sync {
    fn bytes(&self) -> &[u8];
}

/// One tensor: element type, GGUF dims (fastest first) and a view of its
/// bytes inside an owner (never copied).
#[derive(Clone)]
pub struct TensorData {
    owner: Arc<dyn ByteOwner>,
    off: usize,
    len: usize,
    pub ty: GgmlType,
    /// GGUF order: `dims[0]` is the row length.
    pub dims: Vec<usize>,
}

impl std::fmt::Debug for TensorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TensorData({} {:?}, {} bytes)",
            self.ty, self.dims, self.len
        )
    }
}

impl TensorData {
    /// A view of `len` bytes at `off` inside `owner`; checks that the region
    /// exists and matches the element type and dims.
    pub fn new(
        owner: Arc<dyn ByteOwner>,
        off: usize,
        len: usize,
        ty: GgmlType,
        dims: Vec<usize>,
    ) -> Result<TensorData> {
        let n: u64 = dims.iter().map(|&d| d as u64).product();
        let need = ty
            .bytes_for(n)
            .ok_or_else(|| anyhow::anyhow!("tensor size overflows"))?;
        if need != len as u64 {
            bail!("tensor of type {ty} with dims {dims:?} needs {need} bytes, region has {len}");
        }
        if off.checked_add(len).is_none_or(|e| e > owner.bytes().len()) {
            bail!("tensor region {off}+{len} lies outside its buffer");
        }
        if !dims.is_empty() && !dims[0].is_multiple_of(ty.block_elems()) {
            bail!(
                "row length {} is not a multiple of the {ty} block size",
                dims[0]
            );
        }
        Ok(TensorData {
            owner,
            off,
            len,
            ty,
            dims,
        })
    }

    /// A tensor over an owned byte buffer (tests, benchmarks).
    pub fn from_bytes(bytes: Vec<u8>, ty: GgmlType, dims: Vec<usize>) -> Result<TensorData> {
        let len = bytes.len();
        TensorData::new(Arc::new(BytesOwner(bytes)), 0, len, ty, dims)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.owner.bytes()[self.off..self.off + self.len]
    }
    pub fn n_elems(&self) -> usize {
        self.dims.iter().product()
    }
    /// Row length (GGUF `dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1)
    }
    /// Number of rows of length `row_len` across all outer dims.
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product()
    }
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.row_len() / self.ty.block_elems() * self.ty.block_bytes()
    }
    /// Address of the first byte (for residency checks in tests).
    pub fn as_ptr(&self) -> *const u8 {
        self.bytes().as_ptr()
    }
}

/// Anything that can hand out tensors by GGUF name.
pub trait TensorSource {
    fn tensor(&self, name: &str) -> Option<TensorData>;
}

/// Owned f32 storage exposed as bytes.
struct F32Owner(Vec<f32>);
impl ByteOwner for F32Owner {
    fn bytes(&self) -> &[u8] {
        // SAFETY: any f32 slice is a valid, aligned byte slice of 4x the length.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.0.len() * 4) }
    }
}
struct BytesOwner(Vec<u8>);
impl ByteOwner for BytesOwner {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// In-memory tensors (synthetic models, tests).
#[derive(Default, Clone)]
pub struct MemSource {
    map: HashMap<String, TensorData>,
    order: Vec<String>,
}

impl MemSource {
    pub fn new() -> MemSource {
        MemSource::default()
    }
    /// Insert an f32 tensor with GGUF dims.
    pub fn insert_f32(&mut self, name: &str, dims: Vec<usize>, data: Vec<f32>) -> Result<()> {
        let len = data.len() * 4;
        let t = TensorData::new(Arc::new(F32Owner(data)), 0, len, GgmlType::F32, dims)?;
        self.insert(name, t);
        Ok(())
    }
    /// Insert an i32 tensor with GGUF dims.
    pub fn insert_i32(&mut self, name: &str, dims: Vec<usize>, data: &[i32]) -> Result<()> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let len = bytes.len();
        let t = TensorData::new(Arc::new(BytesOwner(bytes)), 0, len, GgmlType::I32, dims)?;
        self.insert(name, t);
        Ok(())
    }
    pub fn insert(&mut self, name: &str, t: TensorData) {
        if self.map.insert(name.to_string(), t).is_none() {
            self.order.push(name.to_string());
        }
    }
    /// Names in insertion order.
    pub fn names(&self) -> &[String] {
        &self.order
    }
}

impl TensorSource for MemSource {
    fn tensor(&self, name: &str) -> Option<TensorData> {
        self.map.get(name).cloned()
    }
}

/// Fetch a tensor and check its GGUF dims.
pub fn expect(src: &dyn TensorSource, name: &str, dims: &[usize]) -> Result<TensorData> {
    let t = src
        .tensor(name)
        .ok_or_else(|| anyhow::anyhow!("missing tensor {name}"))?;
    if t.dims != dims {
        bail!("tensor {name}: dims {:?}, expected {:?}", t.dims, dims);
    }
    Ok(t)
}

/// Decode one row (or any whole-block run) of `ty` into f32.
pub fn decode_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    if ty == GgmlType::I32 {
        bail!("I32 tensors hold indices, not weights");
    }
    ds4_quant::dequantize_row(ty, bytes, out)
        .map_err(|e| anyhow::anyhow!("decoding a {ty} row: {e}"))
}

/// Whether [`decode_row`] handles `ty`.
pub fn decodable(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::I32 | GgmlType::Q8K)
}
