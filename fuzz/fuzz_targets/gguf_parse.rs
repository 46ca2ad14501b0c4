//! Fuzz target: the GGUF parser must return Ok or Err on any input (no panic, no huge
//! allocation, no out-of-bounds slice), and whatever parses must be self-consistent.
#![no_main]

use ds4_gguf::{GgufFile, GgufWriter, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    assert_eq!(f.version(), 3);
    assert!(f.alignment().is_power_of_two());
    let mut sum = 0u64;
    for t in f.tensors() {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes, "tensor {}", t.name);
        sum = d.iter().fold(sum, |s, &b| s.wrapping_add(b as u64));
        assert!(f.tensor(&t.name).is_some());
    }
    std::hint::black_box(sum);
    for (k, v) in f.metadata() {
        assert!(f.get(k).is_some());
        std::hint::black_box(v.to_string());
    }
    // Parsed metadata re-encodes, and the encoding parses back to the same records.
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_kv(k.clone(), v.clone());
    }
    let mut header = w.header_bytes().expect("parsed metadata must re-encode");
    header.resize(header.len().max(32), 0);
    let g = GgufFile::from_bytes(header).expect("re-encoded metadata must parse");
    assert_eq!(g.metadata().len(), f.metadata().len());
    for ((ka, va), (kb, vb)) in g.metadata().iter().zip(f.metadata()) {
        assert_eq!(ka, kb);
        assert!(same(va, vb), "{ka}: {va:?} != {vb:?}");
    }
});

/// Bit-exact value equality (NaN payloads included).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(ta, va), Value::Array(tb, vb)) => {
            ta == tb && va.len() == vb.len() && va.iter().zip(vb).all(|(x, y)| same(x, y))
        }
        _ => a == b,
    }
}
