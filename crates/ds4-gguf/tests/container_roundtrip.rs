//! read(write(x)) == x for random metadata of every type (nested arrays included)
//! and random tensors, plus the writer's layout conventions (spec §6.6).

mod container_common;

use container_common::*;
use ds4_gguf::{write_file, GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType};

fn check_round_trip(seed: u64) {
    let mut rng = Rng(seed);
    let mut w = GgufWriter::new();
    let alignment =
        [None, Some(1u64), Some(8), Some(32), Some(64), Some(4096)][rng.below(6) as usize];
    let mut expected_kvs = Vec::new();
    let n_kv = rng.below(30);
    for i in 0..n_kv {
        let t = ValueType::ALL[rng.below(13) as usize];
        // Keys: sometimes duplicated, sometimes non-ASCII.
        let key = if i > 0 && rng.below(10) == 0 {
            let (k, _): &(String, Value) = &expected_kvs[rng.below(i) as usize];
            k.clone()
        } else {
            format!("k{i}.{}", rng.string(6))
        };
        let v = random_value(&mut rng, t, 3);
        w.add_kv(key.clone(), v.clone());
        expected_kvs.push((key, v));
    }
    if let Some(a) = alignment {
        w.set_alignment(a);
        expected_kvs.push(("general.alignment".into(), Value::U32(a as u32)));
    }
    let n_t = rng.below(12);
    let mut expected_tensors = Vec::new();
    let mut datas = Vec::new();
    for i in 0..n_t {
        let (ty, dims) = random_tensor(&mut rng);
        let name = format!("blk.{i}.{}", rng.string(5));
        let idx = w.add_tensor(name.clone(), ty, &dims);
        assert_eq!(idx, i as usize);
        let n = w.tensor_bytes(idx).unwrap();
        datas.push(rng.bytes(n as usize));
        expected_tensors.push((name, ty, dims));
    }

    // Stream the data in random chunk sizes that straddle tensor boundaries.
    let all: Vec<u8> = datas.concat();
    let mut s = w.begin(Vec::new()).unwrap();
    let mut pos = 0;
    while pos < all.len() {
        let n = (1 + rng.below(300) as usize).min(all.len() - pos);
        s.write_data(&all[pos..pos + n]).unwrap();
        pos += n;
    }
    let bytes = s.finish().unwrap();

    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    let align = alignment.unwrap_or(32);
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), align);
    assert_eq!(f.data_start() % align, 0);
    assert_eq!(f.file_len(), bytes.len() as u64);
    assert_eq!(f.metadata().len(), expected_kvs.len(), "seed {seed}");
    for ((k, v), (ek, ev)) in f.metadata().iter().zip(&expected_kvs) {
        assert_eq!(k, ek);
        assert!(same_value(v, ev), "seed {seed} key {k}: {v:?} != {ev:?}");
    }
    // get(): first match.
    for (k, _) in &expected_kvs {
        let first = &expected_kvs.iter().find(|(ek, _)| ek == k).unwrap().1;
        assert!(same_value(f.get(k).unwrap(), first));
    }
    assert_eq!(f.tensors().len(), expected_tensors.len());
    let mut expected_rel = 0u64;
    for (i, (t, (name, ty, dims))) in f.tensors().iter().zip(&expected_tensors).enumerate() {
        assert_eq!(&t.name, name);
        assert_eq!(t.ggml_type, Some(*ty));
        assert_eq!(t.type_id, ty.id());
        assert_eq!(&t.dims, dims);
        assert_eq!(t.n_elements, dims.iter().product::<u64>());
        assert_eq!(t.n_bytes, datas[i].len() as u64);
        // Offsets: packed in order, each padded to the alignment.
        assert_eq!(t.offset, expected_rel, "seed {seed} tensor {name}");
        assert_eq!(t.abs_offset, f.data_start() + t.offset);
        expected_rel += t.n_bytes.div_ceil(align) * align;
        assert_eq!(f.tensor_data(t), &datas[i][..]);
        assert_eq!(f.tensor(name).unwrap().name, *name);
    }
    // Every tensor padded, the last one included; padding is zeros.
    assert_eq!(f.file_len(), f.data_start() + expected_rel);
    let mut covered = vec![false; bytes.len()];
    for t in f.tensors() {
        for c in &mut covered[t.abs_offset as usize..(t.abs_offset + t.n_bytes) as usize] {
            *c = true;
        }
    }
    for (i, &c) in covered.iter().enumerate().skip(f.data_start() as usize) {
        if !c {
            assert_eq!(bytes[i], 0, "padding byte {i} not zero (seed {seed})");
        }
    }
    // Writing what was read reproduces the file byte for byte.
    let mut w2 = GgufWriter::new();
    for (k, v) in f.metadata() {
        w2.add_kv(k.clone(), v.clone());
    }
    for t in f.tensors() {
        w2.add_tensor(t.name.clone(), t.ggml_type.unwrap(), &t.dims);
    }
    let datas2: Vec<Vec<u8>> = f
        .tensors()
        .iter()
        .map(|t| f.tensor_data(t).to_vec())
        .collect();
    assert_eq!(encode(&w2, &datas2), bytes, "seed {seed}");
}

#[test]
fn round_trip_random_files() {
    for seed in 0..300 {
        check_round_trip(seed);
    }
}

#[test]
fn empty_file_round_trips() {
    let w = GgufWriter::new();
    let bytes = encode(&w, &[]);
    // 24-byte header padded to the 32-byte data start.
    assert_eq!(bytes.len(), 32);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.metadata().len(), 0);
    assert_eq!(f.tensors().len(), 0);
    assert_eq!(f.data_start(), 32);
}

#[test]
fn header_encoding_matches_the_gguf_v3_format() {
    let mut w = GgufWriter::new();
    w.add_kv("k", Value::U16(0x1234));
    w.add_tensor("t", GgmlType::F32, &[2]);
    let bytes = encode(&w, &[vec![1, 2, 3, 4, 5, 6, 7, 8]]);
    let mut want = Vec::new();
    want.extend_from_slice(b"GGUF");
    want.extend_from_slice(&3u32.to_le_bytes());
    want.extend_from_slice(&1u64.to_le_bytes()); // n_tensors
    want.extend_from_slice(&1u64.to_le_bytes()); // n_kv
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b'k');
    want.extend_from_slice(&2u32.to_le_bytes()); // UINT16
    want.extend_from_slice(&0x1234u16.to_le_bytes());
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b't');
    want.extend_from_slice(&1u32.to_le_bytes()); // n_dims
    want.extend_from_slice(&2u64.to_le_bytes());
    want.extend_from_slice(&0u32.to_le_bytes()); // F32
    want.extend_from_slice(&0u64.to_le_bytes()); // offset
    want.resize(want.len().next_multiple_of(32), 0);
    want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    want.resize(want.len().next_multiple_of(32), 0);
    assert_eq!(bytes, want);
}

#[test]
fn open_maps_a_written_file() {
    let (w, datas) = small_file();
    let dir = std::env::temp_dir().join(format!("ds4-gguf-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small.gguf");
    let refs: Vec<&[u8]> = datas.iter().map(|d| &d[..]).collect();
    write_file(&path, &w, &refs).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.bytes(), &encode(&w, &datas)[..]);
    let t = f.tensor("b.weight").unwrap();
    assert_eq!(f.tensor_data(t), &datas[1][..]);
    // Zero-copy: the slice points into the file's bytes.
    let base = f.bytes().as_ptr() as usize;
    assert_eq!(
        f.tensor_data(t).as_ptr() as usize,
        base + t.abs_offset as usize
    );
    assert_eq!(f.get("test.u32").and_then(Value::as_u32), Some(7));
    assert!(f.is_mapped());
    f.prefetch().unwrap();
    assert!(!GgufFile::from_bytes(f.bytes().to_vec())
        .unwrap()
        .is_mapped());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn open_reports_missing_file() {
    let err = GgufFile::open(std::path::Path::new("/nonexistent/x.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/x.gguf"), "{err}");
}

fn is_sync_send<T: Send + Sync>() {}

#[test]
fn gguf_file_is_send_and_sync() {
    is_sync_send::<GgufFile>();
}

#[test]
fn duplicate_tensor_names_first_wins() {
    let mut w = GgufWriter::new();
    w.add_tensor("x", GgmlType::F32, &[1]);
    w.add_tensor("x", GgmlType::F32, &[2]);
    let f = GgufFile::from_bytes(encode(&w, &[vec![1; 4], vec![2; 8]])).unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.tensor("x").unwrap().dims, vec![1]);
    assert_eq!(f.tensor_data(f.tensor("x").unwrap()), &[1, 1, 1, 1]);
}

#[test]
fn writer_rejects_bad_input() {
    // Wrong array element type.
    let mut w = GgufWriter::new();
    w.add_kv("bad", Value::Array(ValueType::U32, vec![Value::U8(1)]));
    let e = w.begin(Vec::new()).err().unwrap();
    assert!(e.to_string().contains("bad"), "{e}");
    // Nesting deeper than a reader accepts.
    let mut v = Value::string_array(vec!["x".into()]);
    for _ in 0..9 {
        v = Value::Array(ValueType::Array, vec![v]);
    }
    let mut w = GgufWriter::new();
    w.add_kv("deep", v);
    assert!(matches!(
        w.begin(Vec::new()),
        Err(GgufError::BadValue { .. })
    ));
    // More metadata values than a reader decodes.
    let mut w = GgufWriter::new();
    w.add_kv(
        "a",
        Value::Array(ValueType::U8, vec![Value::U8(0); 1 << 23]),
    );
    w.add_kv(
        "b",
        Value::Array(ValueType::U8, vec![Value::U8(0); 1 << 23]),
    );
    let e = w.begin(Vec::new()).err().unwrap();
    assert!(
        matches!(&e, GgufError::BadValue { key, .. } if key == "b"),
        "{e}"
    );
    // Alignment not a power of two.
    let mut w = GgufWriter::new();
    w.set_alignment(48);
    assert!(matches!(
        w.begin(Vec::new()),
        Err(GgufError::BadAlignment { alignment: 48 })
    ));
    // Bad dims.
    let mut w = GgufWriter::new();
    w.add_tensor("t", GgmlType::F32, &[]);
    assert!(matches!(
        w.begin(Vec::new()),
        Err(GgufError::BadTensor { .. })
    ));
    let mut w = GgufWriter::new();
    w.add_tensor("t", GgmlType::F32, &[1; 9]);
    assert!(matches!(
        w.begin(Vec::new()),
        Err(GgufError::BadTensor { .. })
    ));
    let mut w = GgufWriter::new();
    w.add_tensor("t", GgmlType::F32, &[u64::MAX, 2]);
    assert!(matches!(
        w.begin(Vec::new()),
        Err(GgufError::BadTensor { .. })
    ));
}

#[test]
fn stream_checks_byte_counts() {
    let (w, datas) = small_file();
    // Too few bytes.
    let mut s = w.begin(Vec::new()).unwrap();
    s.write_data(&datas[0]).unwrap();
    s.write_data(&datas[1][..10]).unwrap();
    match s.finish() {
        Err(GgufError::IncompleteData {
            tensor, missing, ..
        }) => {
            assert_eq!(tensor, "b.weight");
            assert_eq!(missing, datas[1].len() as u64 - 10);
        }
        other => panic!("expected IncompleteData, got {:?}", other.map(|_| ())),
    }
    // Too many bytes.
    let mut s = w.begin(Vec::new()).unwrap();
    let mut all = datas.concat();
    all.extend_from_slice(&[9, 9, 9]);
    assert!(matches!(
        s.write_data(&all),
        Err(GgufError::TooMuchData { extra: 3, .. })
    ));
    // write_file checks slice count and sizes before creating the file.
    let path = std::env::temp_dir().join("ds4-gguf-never-created.gguf");
    let refs: Vec<&[u8]> = datas.iter().map(|d| &d[..]).collect();
    assert!(matches!(
        write_file(&path, &w, &refs[..2]),
        Err(GgufError::DataCountMismatch {
            expected: 3,
            found: 2
        })
    ));
    let short = [&datas[0][..], &datas[1][..], &datas[2][..1]];
    assert!(matches!(
        write_file(&path, &w, &short),
        Err(GgufError::DataSizeMismatch { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn value_getters_follow_ds4_rules() {
    assert_eq!(Value::U32(5).as_u32(), Some(5));
    assert_eq!(Value::U64(5).as_u32(), None);
    assert_eq!(Value::I32(5).as_u32(), None);
    assert_eq!(Value::U32(5).as_u64(), Some(5));
    assert_eq!(Value::U64(1 << 40).as_u64(), Some(1 << 40));
    assert_eq!(Value::I64(5).as_u64(), None);
    assert_eq!(Value::F32(1.5).as_f32(), Some(1.5));
    assert_eq!(Value::F64(0.1).as_f32(), Some(0.1f64 as f32));
    assert_eq!(Value::U32(3).as_f32(), Some(3.0));
    assert_eq!(Value::I32(-3).as_f32(), Some(-3.0));
    assert_eq!(Value::U64(3).as_f32(), None);
    assert_eq!(Value::Bool(true).as_bool(), Some(true));
    assert_eq!(Value::U8(1).as_bool(), None);
    assert_eq!(Value::String("x".into()).as_str(), Some("x"));
    let a = Value::u32_array(&[1, 2]);
    assert_eq!(
        a.as_array(),
        Some((ValueType::U32, &[Value::U32(1), Value::U32(2)][..]))
    );
    assert_eq!(Value::f32_array(&[1.0]).value_type(), ValueType::Array);
}
