//! Shared helpers for the container tests (included with `#[path]`/`mod`).
#![allow(dead_code)]

use ds4_gguf::{GgmlType, GgufWriter, Value, ValueType};

/// SplitMix64: a tiny deterministic RNG so tests need no extra dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn string(&mut self, max_chars: u64) -> String {
        let n = self.below(max_chars + 1);
        (0..n)
            .map(|_| match self.below(4) {
                0 => char::from(b'a' + self.below(26) as u8),
                1 => char::from(b' ' + self.below(95) as u8),
                // Any Unicode scalar value (multi-byte UTF-8, including U+0000).
                _ => loop {
                    if let Some(c) = char::from_u32(self.below(0x11_0000) as u32) {
                        break c;
                    }
                },
            })
            .collect()
    }
}

/// A random value of type `t`; arrays nest up to `depth_left` more levels.
pub fn random_value(rng: &mut Rng, t: ValueType, depth_left: u32) -> Value {
    match t {
        ValueType::U8 => Value::U8(rng.next_u64() as u8),
        ValueType::I8 => Value::I8(rng.next_u64() as i8),
        ValueType::U16 => Value::U16(rng.next_u64() as u16),
        ValueType::I16 => Value::I16(rng.next_u64() as i16),
        ValueType::U32 => Value::U32(rng.next_u64() as u32),
        ValueType::I32 => Value::I32(rng.next_u64() as i32),
        // Raw bit patterns: NaNs, infinities and subnormals included.
        ValueType::F32 => Value::F32(f32::from_bits(rng.next_u64() as u32)),
        ValueType::Bool => Value::Bool(rng.below(2) == 1),
        ValueType::String => Value::String(rng.string(24)),
        ValueType::U64 => Value::U64(rng.next_u64()),
        ValueType::I64 => Value::I64(rng.next_u64() as i64),
        ValueType::F64 => Value::F64(f64::from_bits(rng.next_u64())),
        ValueType::Array => {
            let elem = if depth_left == 0 {
                loop {
                    let e = ValueType::ALL[rng.below(13) as usize];
                    if e != ValueType::Array {
                        break e;
                    }
                }
            } else {
                ValueType::ALL[rng.below(13) as usize]
            };
            let n = rng.below(if elem == ValueType::Array { 4 } else { 20 });
            let items = (0..n)
                .map(|_| random_value(rng, elem, depth_left.saturating_sub(1)))
                .collect();
            Value::Array(elem, items)
        }
    }
}

/// Bit-exact equality (NaN payloads included), which `PartialEq` on floats is not.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(ta, va), Value::Array(tb, vb)) => {
            ta == tb && va.len() == vb.len() && va.iter().zip(vb).all(|(x, y)| same_value(x, y))
        }
        _ => a == b,
    }
}

/// A random tensor type and dims whose element count fits that type's block size.
pub fn random_tensor(rng: &mut Rng) -> (GgmlType, Vec<u64>) {
    let ty = GgmlType::ALL[rng.below(GgmlType::ALL.len() as u64) as usize];
    let n_dims = 1 + rng.below(4) as usize;
    let mut dims: Vec<u64> = (0..n_dims).map(|_| 1 + rng.below(3)).collect();
    dims[0] = ty.block_elems() as u64 * (1 + rng.below(3));
    if rng.below(20) == 0 {
        dims[n_dims - 1] = 0; // empty tensors are legal
    }
    (ty, dims)
}

/// A small valid file: a few KVs of several types and three tensors.
pub fn small_file() -> (GgufWriter, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("deepseek4".into()));
    w.add_kv("test.u32", Value::U32(7));
    w.add_kv("test.f32", Value::F32(0.5));
    w.add_kv(
        "test.nested",
        Value::Array(
            ValueType::Array,
            vec![Value::i32_array(&[1, -2]), Value::i32_array(&[3])],
        ),
    );
    w.add_kv(
        "tokenizer.ggml.tokens",
        Value::string_array(vec!["a".into(), "bc".into(), "<|end|>".into()]),
    );
    let mut datas = Vec::new();
    let mut rng = Rng(1);
    for (name, ty, dims) in [
        ("a.weight", GgmlType::F32, vec![3u64, 2]),
        ("b.weight", GgmlType::Q8_0, vec![64, 1]),
        ("c.weight", GgmlType::F16, vec![5]),
    ] {
        let i = w.add_tensor(name, ty, &dims);
        datas.push(rng.bytes(w.tensor_bytes(i).unwrap() as usize));
    }
    (w, datas)
}

pub fn encode(w: &GgufWriter, datas: &[Vec<u8>]) -> Vec<u8> {
    let mut s = w.begin(Vec::new()).unwrap();
    for d in datas {
        s.write_data(d).unwrap();
    }
    s.finish().unwrap()
}
