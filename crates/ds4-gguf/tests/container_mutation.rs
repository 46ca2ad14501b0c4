//! Bounded pseudo-random mutation fuzzing of the parser (runs in CI without cargo-fuzz):
//! thousands of corrupted variants of valid files must parse to Ok or Err, never panic,
//! and whatever parses must be internally consistent.

mod container_common;

use container_common::*;
use ds4_gguf::{GgufFile, GgufWriter, ValueType};

/// A valid file with metadata of every type and some tensors, from `seed`.
fn seed_file(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut w = GgufWriter::new();
    for (i, t) in ValueType::ALL.into_iter().enumerate() {
        w.add_kv(format!("k{i}"), random_value(&mut rng, t, 2));
    }
    let mut datas = Vec::new();
    for i in 0..4 {
        let (ty, dims) = random_tensor(&mut rng);
        let idx = w.add_tensor(format!("t{i}"), ty, &dims);
        datas.push(rng.bytes(w.tensor_bytes(idx).unwrap() as usize));
    }
    encode(&w, &datas)
}

const INTERESTING_U64: [u64; 10] = [
    0,
    1,
    7,
    9,
    13,
    255,
    1 << 32,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

fn mutate(rng: &mut Rng, mut v: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            break;
        }
        let at = rng.below(v.len() as u64) as usize;
        match rng.below(7) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = rng.next_u64() as u8,
            2 => {
                // An interesting u64 / u32 written over a (possible) length or count field.
                let x = INTERESTING_U64[rng.below(10) as usize].to_le_bytes();
                let n = if rng.below(2) == 0 { 8 } else { 4 };
                for (i, b) in x.iter().take(n).enumerate() {
                    if at + i < v.len() {
                        v[at + i] = *b;
                    }
                }
            }
            3 => v.truncate(at),
            4 => {
                let n = (1 + rng.below(16) as usize).min(v.len() - at);
                v.drain(at..at + n);
            }
            5 => {
                let n = 1 + rng.below(16) as usize;
                let bytes = rng.bytes(n);
                v.splice(at..at, bytes);
            }
            _ => {
                // Small increment of a field, e.g. a type id or an n_dims.
                v[at] = v[at].wrapping_add(1 + rng.below(3) as u8);
            }
        }
    }
    v
}

fn check(bytes: Vec<u8>) {
    let len = bytes.len() as u64;
    let Ok(f) = GgufFile::from_bytes(bytes) else {
        return;
    };
    assert_eq!(f.version(), 3);
    assert!(f.alignment().is_power_of_two());
    assert_eq!(f.data_start() % f.alignment(), 0);
    for t in f.tensors() {
        assert!((1..=8).contains(&t.dims.len()));
        assert_eq!(
            Some(t.n_elements),
            t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
        );
        assert_eq!(t.abs_offset, f.data_start() + t.offset);
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes, "{}", t.name);
        if t.n_bytes > 0 {
            assert!(t.abs_offset + t.n_bytes <= len);
        }
        assert!(f.tensor(&t.name).is_some());
    }
    for (k, v) in f.metadata() {
        assert!(f.get(k).is_some());
        let _ = v.to_string();
    }
    // What parsed re-encodes, and the re-encoded metadata reads back identically.
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_kv(k.clone(), v.clone());
    }
    let Ok(header) = w.header_bytes() else {
        panic!("parsed metadata does not re-encode");
    };
    let mut padded = header;
    padded.resize(padded.len().max(32), 0);
    let g = GgufFile::from_bytes(padded).unwrap();
    assert_eq!(g.metadata().len(), f.metadata().len());
    for ((ka, va), (kb, vb)) in g.metadata().iter().zip(f.metadata()) {
        assert_eq!(ka, kb);
        assert!(same_value(va, vb));
    }
}

#[test]
fn mutated_files_never_panic() {
    let seeds: Vec<Vec<u8>> = (0..4).map(seed_file).collect();
    let mut rng = Rng(0xD5_4D5);
    let mut parsed_ok = 0;
    for i in 0..6000 {
        let base = &seeds[i % seeds.len()];
        let m = mutate(&mut rng, base.clone());
        if GgufFile::from_bytes(m.clone()).is_ok() {
            parsed_ok += 1;
        }
        check(m);
    }
    // The loop must exercise both outcomes, or it is not testing much.
    assert!(
        parsed_ok > 100 && parsed_ok < 5900,
        "{parsed_ok} of 6000 parsed"
    );
}

#[test]
fn every_single_byte_flip_of_a_small_file() {
    let (w, datas) = small_file();
    let bytes = encode(&w, &datas);
    let header_len = GgufFile::from_bytes(bytes.clone()).unwrap().data_start() as usize;
    for at in 0..header_len {
        for x in [0x01u8, 0x80, 0xFF] {
            let mut m = bytes.clone();
            m[at] ^= x;
            check(m);
        }
    }
}
