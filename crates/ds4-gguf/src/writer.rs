//! Streaming GGUF v3 writer: header, metadata and tensor infos first, then each
//! tensor's bytes in directory order, each padded with zeros to the alignment.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use ds4_quant::GgmlType;

use crate::error::GgufError;
use crate::reader::{
    align_up, alignment_from_metadata, GGUF_MAGIC, GGUF_VERSION, MAX_DIMS, MAX_METADATA_VALUES,
    MAX_NESTING_DEPTH, MAX_STRING_LEN,
};
use crate::value::Value;

/// Buffer size of the streaming writer; large chunks bypass it.
const WRITE_BUFFER: usize = 8 << 20;
const ZEROS: [u8; 4096] = [0u8; 4096];

#[derive(Clone, Debug)]
struct PendingTensor {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
}

/// Describes a GGUF file to write: metadata records and tensor infos in the order added.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    kvs: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
    bad_alignment: Option<u64>,
}

/// The directory laid out: offsets and byte sizes of every tensor.
struct Layout {
    alignment: u64,
    offsets: Vec<u64>,
    n_bytes: Vec<u64>,
    data_len: u64,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the data alignment by setting the `general.alignment` record (UINT32),
    /// replacing the first existing one or appending a new one. The reader derives its
    /// alignment from that record, so the two always agree. `a` must be a non-zero power
    /// of two that fits in u32, else [`GgufWriter::begin`] fails.
    pub fn set_alignment(&mut self, a: u64) {
        match u32::try_from(a) {
            Ok(v) if v != 0 && v.is_power_of_two() => {
                self.bad_alignment = None;
                let value = Value::U32(v);
                match self.kvs.iter_mut().find(|(k, _)| k == "general.alignment") {
                    Some(slot) => slot.1 = value,
                    None => self.kvs.push(("general.alignment".to_owned(), value)),
                }
            }
            _ => self.bad_alignment = Some(a),
        }
    }

    /// The alignment the written file will have (the reader's rule applied to the records).
    pub fn alignment(&self) -> u64 {
        alignment_from_metadata(&self.kvs)
    }

    /// Appends a metadata record (duplicates are written as given).
    pub fn add_kv(&mut self, key: impl Into<String>, v: Value) {
        self.kvs.push((key.into(), v));
    }

    /// Appends a tensor info and returns its index. The tensor's relative offset is the
    /// previous tensor's offset plus its size rounded up to the alignment.
    pub fn add_tensor(&mut self, name: impl Into<String>, ty: GgmlType, dims: &[u64]) -> usize {
        self.tensors.push(PendingTensor {
            name: name.into(),
            ty,
            dims: dims.to_vec(),
        });
        self.tensors.len() - 1
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.kvs
    }

    pub fn n_tensors(&self) -> usize {
        self.tensors.len()
    }

    /// Byte size of tensor `i` (None if `i` is out of range or the size overflows).
    pub fn tensor_bytes(&self, i: usize) -> Option<u64> {
        let t = self.tensors.get(i)?;
        n_elements(&t.dims).and_then(|n| t.ty.bytes_for(n))
    }

    fn layout(&self) -> Result<Layout, GgufError> {
        if let Some(alignment) = self.bad_alignment {
            return Err(GgufError::BadAlignment { alignment });
        }
        let alignment = self.alignment();
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut n_bytes = Vec::with_capacity(self.tensors.len());
        let mut next = 0u64;
        for t in &self.tensors {
            let bad = |problem: String| GgufError::BadTensor {
                name: t.name.clone(),
                problem,
            };
            if t.dims.is_empty() || t.dims.len() > MAX_DIMS as usize {
                return Err(bad(format!(
                    "{} dims, expected 1..={MAX_DIMS}",
                    t.dims.len()
                )));
            }
            let n = n_elements(&t.dims)
                .ok_or_else(|| bad(format!("element count overflow, dims {:?}", t.dims)))?;
            let bytes =
                t.ty.bytes_for(n)
                    .ok_or_else(|| bad(format!("byte size overflow, {n} elements")))?;
            offsets.push(next);
            n_bytes.push(bytes);
            next = next
                .checked_add(bytes)
                .and_then(|e| align_up(e, alignment))
                .ok_or_else(|| bad("tensor data offset overflow".to_owned()))?;
        }
        Ok(Layout {
            alignment,
            offsets,
            n_bytes,
            data_len: next,
        })
    }

    /// Encodes header, metadata, tensor infos and the padding up to the data section.
    pub fn header_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let layout = self.layout()?;
        self.encode_header(&layout)
    }

    fn encode_header(&self, layout: &Layout) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
        out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        // Refuse what the reader would refuse, so every written file reads back.
        let mut values = 0u64;
        for (key, v) in &self.kvs {
            let bad = |problem: String| GgufError::BadValue {
                key: key.clone(),
                problem,
            };
            check_str_len(key).map_err(bad)?;
            put_str(&mut out, key);
            out.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut out, v, 0, &mut values).map_err(bad)?;
        }
        for (i, t) in self.tensors.iter().enumerate() {
            check_str_len(&t.name).map_err(|problem| GgufError::BadTensor {
                name: t.name.clone(),
                problem,
            })?;
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&layout.offsets[i].to_le_bytes());
        }
        let end = out.len() as u64;
        let data_start = align_up(end, layout.alignment).ok_or(GgufError::DataStartOverflow {
            end,
            alignment: layout.alignment,
        })?;
        out.resize(data_start as usize, 0);
        Ok(out)
    }

    /// Writes header, metadata, tensor infos and padding to `w` and returns the stream
    /// that takes the tensor bytes.
    pub fn begin<W: Write>(&self, w: W) -> Result<TensorStream<W>, GgufError> {
        let layout = self.layout()?;
        let header = self.encode_header(&layout)?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, w);
        out.write_all(&header)?;
        let mut stream = TensorStream {
            out,
            names: self.tensors.iter().map(|t| t.name.clone()).collect(),
            n_bytes: layout.n_bytes,
            alignment: layout.alignment,
            expected: layout.data_len,
            current: 0,
            in_current: 0,
            written: 0,
        };
        stream.advance()?;
        Ok(stream)
    }
}

fn n_elements(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn check_str_len(s: &str) -> Result<(), String> {
    if s.len() as u64 > MAX_STRING_LEN {
        return Err(format!(
            "string of {} bytes exceeds the limit of {MAX_STRING_LEN}",
            s.len()
        ));
    }
    Ok(())
}

/// Encodes a value's payload (without its type id); `values` counts decoded values
/// against the reader's budget. Err describes a malformed value.
fn put_value(out: &mut Vec<u8>, v: &Value, depth: u32, values: &mut u64) -> Result<(), String> {
    if matches!(v, Value::String(_) | Value::Array(..)) && depth > MAX_NESTING_DEPTH {
        return Err(format!(
            "array nesting depth {depth} exceeds the maximum {MAX_NESTING_DEPTH}"
        ));
    }
    *values += 1;
    if *values > MAX_METADATA_VALUES {
        return Err(format!(
            "more than {MAX_METADATA_VALUES} metadata values (array elements included) in the file"
        ));
    }
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => {
            check_str_len(s)?;
            put_str(out, s)
        }
        Value::Array(elem, items) => {
            out.extend_from_slice(&elem.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for (i, item) in items.iter().enumerate() {
                if item.value_type() != *elem {
                    return Err(format!(
                        "array of {elem} has element {i} of type {}",
                        item.value_type()
                    ));
                }
                put_value(out, item, depth + 1, values)?;
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
    }
    Ok(())
}

/// Takes the tensor bytes after [`GgufWriter::begin`]: all tensors in directory order,
/// in chunks of any size. Padding is inserted when a tensor's bytes are complete.
pub struct TensorStream<W: Write> {
    out: BufWriter<W>,
    names: Vec<String>,
    n_bytes: Vec<u64>,
    alignment: u64,
    /// Total data section bytes, padding included.
    expected: u64,
    /// Index of the tensor being written (== names.len() when all are done).
    current: usize,
    /// Bytes of the current tensor written so far.
    in_current: u64,
    /// Data section bytes written so far, padding included.
    written: u64,
}

impl<W: Write> TensorStream<W> {
    /// Index of the tensor the next byte belongs to (None once every tensor is complete).
    pub fn current_tensor(&self) -> Option<usize> {
        (self.current < self.names.len()).then_some(self.current)
    }

    /// Closes every complete tensor from `current` on: writes its padding and moves on.
    fn advance(&mut self) -> Result<(), GgufError> {
        while self.current < self.n_bytes.len() && self.in_current == self.n_bytes[self.current] {
            let size = self.n_bytes[self.current];
            let padded = align_up(size, self.alignment).unwrap_or(size);
            let mut pad = padded - size;
            while pad > 0 {
                let n = pad.min(ZEROS.len() as u64) as usize;
                self.out.write_all(&ZEROS[..n])?;
                pad -= n as u64;
            }
            self.written += padded;
            self.current += 1;
            self.in_current = 0;
        }
        Ok(())
    }

    /// Appends tensor bytes. A chunk may span several tensors.
    pub fn write_data(&mut self, mut chunk: &[u8]) -> Result<(), GgufError> {
        while !chunk.is_empty() {
            if self.current >= self.n_bytes.len() {
                return Err(GgufError::TooMuchData {
                    expected: self.expected,
                    extra: chunk.len() as u64,
                });
            }
            let room = self.n_bytes[self.current] - self.in_current;
            let n = (chunk.len() as u64).min(room) as usize;
            self.out.write_all(&chunk[..n])?;
            self.in_current += n as u64;
            chunk = &chunk[n..];
            self.advance()?;
        }
        Ok(())
    }

    /// Flushes and returns the inner writer; fails if any tensor is incomplete.
    pub fn finish(self) -> Result<W, GgufError> {
        if self.current < self.names.len() {
            return Err(GgufError::IncompleteData {
                expected: self.expected,
                found: self.written + self.in_current,
                tensor: self.names[self.current].clone(),
                missing: self.n_bytes[self.current] - self.in_current,
            });
        }
        self.out.into_inner().map_err(|e| e.into_error().into())
    }
}

/// Writes `w` to `path` with `datas[i]` as the bytes of tensor `i`.
pub fn write_file(path: &Path, w: &GgufWriter, datas: &[&[u8]]) -> Result<(), GgufError> {
    if datas.len() != w.tensors.len() {
        return Err(GgufError::DataCountMismatch {
            expected: w.tensors.len(),
            found: datas.len(),
        });
    }
    let layout = w.layout()?;
    for (i, d) in datas.iter().enumerate() {
        if d.len() as u64 != layout.n_bytes[i] {
            return Err(GgufError::DataSizeMismatch {
                name: w.tensors[i].name.clone(),
                expected: layout.n_bytes[i],
                found: d.len() as u64,
            });
        }
    }
    let file = File::create(path).map_err(|source| GgufError::Io {
        action: "create",
        path: path.to_path_buf(),
        source,
    })?;
    let mut s = w.begin(file)?;
    for d in datas {
        s.write_data(d)?;
    }
    let file = s.finish()?;
    file.sync_all().map_err(|source| GgufError::Io {
        action: "sync",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}
