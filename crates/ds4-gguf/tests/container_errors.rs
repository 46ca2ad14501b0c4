//! Every parse error path: bad input yields a clear `GgufError`, never a panic or a
//! huge allocation.

mod container_common;

use container_common::*;
use ds4_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value};

/// Hand-assembled GGUF bytes (independent of the writer).
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 bytes and appends `n` data bytes.
    fn data(&mut self, n: usize) -> Vec<u8> {
        let mut v = self.0.clone();
        v.resize(v.len().next_multiple_of(32) + n, 0xAB);
        v
    }
    fn parse(&self) -> Result<GgufFile, GgufError> {
        let mut v = self.0.clone();
        if v.len() < 32 {
            v.resize(32, 0);
        }
        GgufFile::from_bytes(v)
    }
}

fn err_of(r: Result<GgufFile, GgufError>) -> GgufError {
    match r {
        Ok(f) => panic!("expected an error, parsed {f:?}"),
        Err(e) => e,
    }
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let (w, datas) = small_file();
    let bytes = encode(&w, &datas);
    let full = GgufFile::from_bytes(bytes.clone()).unwrap();
    let last_tensor_end = full
        .tensors()
        .iter()
        .map(|t| t.abs_offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    for len in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..len].to_vec());
        if len >= last_tensor_end {
            // Only trailing padding is missing: still a valid file.
            let f = r.unwrap();
            for t in f.tensors() {
                assert_eq!(
                    f.tensor_data(t),
                    full.tensor_data(full.tensor(&t.name).unwrap())
                );
            }
        } else {
            let e = err_of(r);
            let msg = e.to_string();
            if len < 32 {
                assert!(matches!(e, GgufError::TooSmall { .. }), "len {len}: {msg}");
            } else if len < full.data_start() as usize - 32 {
                // Cut inside the header, metadata or tensor infos (any alignment slack
                // before the data start is at most 31 bytes).
                assert!(
                    matches!(
                        e,
                        GgufError::Truncated { .. }
                            | GgufError::CountTooLarge { .. }
                            | GgufError::OutOfBounds { .. }
                    ),
                    "len {len}: {msg}"
                );
            } else {
                assert!(
                    matches!(
                        e,
                        GgufError::OutOfBounds { .. } | GgufError::Truncated { .. }
                    ),
                    "len {len}: {msg}"
                );
            }
        }
    }
}

#[test]
fn truncated_field_names_offset() {
    // A UINT32 value whose payload is cut after 2 of its 4 bytes (at byte 24 + 11 + 4).
    let mut r = Raw::header(3, 0, 1);
    r.str(b"key").u32(4);
    let mut v = r.0.clone();
    v.extend_from_slice(&[1, 2]);
    assert_eq!(v.len(), 41);
    let e = err_of(GgufFile::from_bytes(v));
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                offset: 39,
                need: 4,
                left: 2,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("truncated GGUF file at byte 39"), "{msg}");
}

#[test]
fn too_small_bad_magic_and_versions() {
    assert!(matches!(
        GgufFile::from_bytes(vec![]),
        Err(GgufError::TooSmall { len: 0 })
    ));
    assert!(matches!(
        GgufFile::from_bytes(b"GGUF".to_vec()),
        Err(GgufError::TooSmall { len: 4 })
    ));
    let mut v = Raw::header(3, 0, 0).data(0);
    v[0] = b'X';
    let e = err_of(GgufFile::from_bytes(v));
    assert!(matches!(e, GgufError::BadMagic { found } if &found == b"XGUF"));
    assert!(e.to_string().contains("not a GGUF file"));
    for version in [1u32, 2, 4, u32::MAX] {
        let e = err_of(GgufFile::from_bytes(Raw::header(version, 0, 0).data(0)));
        assert!(
            matches!(e, GgufError::UnsupportedVersion { found } if found == version),
            "{e}"
        );
        assert!(e.to_string().contains("only GGUF v3"), "{e}");
    }
    // Big-endian GGUF (version bytes swapped) is also "not v3".
    let mut v = Raw::header(3, 0, 0).data(0);
    v[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(
        GgufFile::from_bytes(v),
        Err(GgufError::UnsupportedVersion { .. })
    ));
}

#[test]
fn huge_counts_and_lengths_are_rejected_before_allocating() {
    // n_kv and n_tensors far beyond the file.
    let e = err_of(Raw::header(3, 0, u64::MAX).parse());
    assert!(
        matches!(e, GgufError::CountTooLarge { offset: 16, .. }),
        "{e}"
    );
    let e = err_of(Raw::header(3, u64::MAX, 0).parse());
    assert!(
        matches!(e, GgufError::CountTooLarge { offset: 8, .. }),
        "{e}"
    );
    // A key length of 2^63.
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 63);
    let e = err_of(GgufFile::from_bytes(r.data(64)));
    assert!(
        matches!(e, GgufError::LimitExceeded { offset: 24, count, .. } if count == 1 << 63),
        "{e}"
    );
    // A string value length of u64::MAX.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(8).u64(u64::MAX);
    assert!(matches!(
        err_of(GgufFile::from_bytes(r.data(64))),
        GgufError::LimitExceeded { .. }
    ));
    // A plausible string length past the end of the file.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(8).u64(1000);
    let e = err_of(GgufFile::from_bytes(r.data(64)));
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                offset: 45,
                need: 1000,
                ..
            }
        ),
        "{e}"
    );
    // Array counts: u64::MAX of u8, of strings, of arrays, of u64.
    for elem in [0u32, 8, 9, 10] {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(9).u32(elem).u64(u64::MAX);
        let e = err_of(r.parse());
        assert!(matches!(e, GgufError::CountTooLarge { .. }), "{elem}: {e}");
        // A count that fits as bytes but not as u64 elements.
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(9).u32(elem).u64(100);
        let mut v = r.0.clone();
        v.resize(v.len() + 99, 0);
        let res = GgufFile::from_bytes(v);
        if elem == 0 {
            // 100 u8 elements need 100 bytes; 99 are there.
            assert!(matches!(res, Err(GgufError::CountTooLarge { .. })));
        } else {
            assert!(res.is_err());
        }
    }
    // Tensor name lengths: absurd, and plausible but past the end.
    for (len, truncated) in [(1u64 << 40, false), (40, true)] {
        let mut r = Raw::header(3, 1, 0);
        r.u64(len);
        let mut v = r.0.clone();
        v.resize(64, 0);
        let e = err_of(GgufFile::from_bytes(v));
        if truncated {
            assert!(
                matches!(
                    e,
                    GgufError::Truncated {
                        offset: 32,
                        need: 40,
                        left: 32,
                        ..
                    }
                ),
                "{e}"
            );
        } else {
            assert!(
                matches!(e, GgufError::LimitExceeded { offset: 24, .. }),
                "{e}"
            );
        }
    }
}

#[test]
fn unknown_value_type_names_offset() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"key").u32(13);
    let e = err_of(r.parse());
    assert!(
        matches!(
            e,
            GgufError::UnknownValueType {
                offset: 35,
                type_id: 13
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("byte 35"));
    // Unknown array element type.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"key").u32(9).u32(99).u64(0);
    assert!(matches!(
        err_of(r.parse()),
        GgufError::UnknownValueType {
            offset: 39,
            type_id: 99
        }
    ));
}

#[test]
fn invalid_utf8_names_offset() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"ab\xffc").u32(4).u32(1);
    let e = err_of(r.parse());
    // Key bytes start at 24 + 8 = 32; the bad byte is the third.
    assert!(
        matches!(e, GgufError::InvalidUtf8 { offset: 34, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("byte 34"), "{e}");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(8).str(b"\xc3");
    assert!(matches!(err_of(r.parse()), GgufError::InvalidUtf8 { .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("\u{1F600}", &[1], 0, 0);
    let mut v = r.data(4);
    v[32] = 0xF0; // still valid: first byte of the emoji
    v[33] = 0x28; // invalid continuation
    assert!(matches!(
        GgufFile::from_bytes(v),
        Err(GgufError::InvalidUtf8 { offset: 32, .. })
    ));
}

/// An array value nested `levels` deep (level 1 = a plain array) around `inner`.
fn nested(levels: u32, inner_type: u32, inner: &[u8]) -> Vec<u8> {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9);
    for _ in 1..levels {
        r.u32(9).u64(1);
    }
    r.u32(inner_type).u64(1);
    r.0.extend_from_slice(inner);
    r.0.resize(r.0.len().max(32), 0);
    r.0
}

#[test]
fn nesting_depth_limit_matches_ds4() {
    // Arrays at depths 0..=8 hold scalars at depth 9: accepted (ds4 skips scalars in bulk).
    let f = GgufFile::from_bytes(nested(9, 4, &7u32.to_le_bytes())).unwrap();
    let mut v = f.get("k").unwrap();
    let mut levels = 0;
    while let Some((_, items)) = v.as_array() {
        levels += 1;
        v = &items[0];
    }
    assert_eq!((levels, v), (9, &Value::U32(7)));
    // A string at depth 9 (9 arrays around it) is too deep, as is a 10th array.
    let mut s = Vec::new();
    s.extend_from_slice(&1u64.to_le_bytes());
    s.push(b'x');
    let e = err_of(GgufFile::from_bytes(nested(9, 8, &s)));
    assert!(
        matches!(
            e,
            GgufError::NestingTooDeep {
                depth: 9,
                max: 8,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("too deep"));
    let mut inner = Vec::new();
    inner.extend_from_slice(&4u32.to_le_bytes());
    inner.extend_from_slice(&0u64.to_le_bytes());
    assert!(matches!(
        GgufFile::from_bytes(nested(9, 9, &inner)),
        Err(GgufError::NestingTooDeep { .. })
    ));
    // A string at depth 8 is fine.
    assert!(GgufFile::from_bytes(nested(8, 8, &s)).is_ok());
}

#[test]
fn n_dims_out_of_range() {
    for n_dims in [0u32, 9, u32::MAX] {
        let mut r = Raw::header(3, 1, 0);
        r.str(b"t").u32(n_dims);
        let v = r.data(256);
        let e = err_of(GgufFile::from_bytes(v));
        assert!(
            matches!(&e, GgufError::BadDims { name, n_dims: n, offset: 33 } if name == "t" && *n == n_dims),
            "{e}"
        );
        assert!(e.to_string().contains("tensor t"), "{e}");
    }
    // 8 dims are accepted.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1; 8], 0, 0);
    let f = GgufFile::from_bytes(r.data(4)).unwrap();
    assert_eq!(f.tensors()[0].dims.len(), 8);
}

#[test]
fn tensor_outside_file() {
    // 4 F32 elements = 16 bytes, only 15 present.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("blk.0.x", &[4], 0, 0);
    let v = r.data(15);
    let e = err_of(GgufFile::from_bytes(v));
    assert!(
        matches!(&e, GgufError::OutOfBounds { name, start: 64, end: 80, file_len: 79, .. } if name == "blk.0.x"),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("tensor blk.0.x points outside the GGUF file"),
        "{e}"
    );
    // Exactly fitting is fine.
    assert!(GgufFile::from_bytes(r.data(16)).is_ok());
    // Offset beyond the end.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1], 0, 1000);
    assert!(matches!(
        GgufFile::from_bytes(r.data(64)),
        Err(GgufError::OutOfBounds { .. })
    ));
}

#[test]
fn overflow_checks() {
    // Element count overflow.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("big", &[1 << 32, 1 << 32], 0, 0);
    let e = err_of(GgufFile::from_bytes(r.data(0)));
    assert!(
        matches!(&e, GgufError::ElementCountOverflow { name, .. } if name == "big"),
        "{e}"
    );
    // Byte size overflow: u64::MAX / 2 F32 elements.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("big", &[u64::MAX / 2], 0, 0);
    assert!(matches!(
        GgufFile::from_bytes(r.data(0)),
        Err(GgufError::ByteSizeOverflow { .. })
    ));
    // Offset overflow: data start + u64::MAX.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1], 0, u64::MAX);
    let e = err_of(GgufFile::from_bytes(r.data(4)));
    assert!(
        matches!(&e, GgufError::OffsetOverflow { name, .. } if name == "t"),
        "{e}"
    );
    // Offset + size overflow is an out-of-bounds error, not a wrap-around.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[4], 0, u64::MAX - 100);
    assert!(matches!(
        GgufFile::from_bytes(r.data(4)),
        Err(GgufError::OutOfBounds { .. })
    ));
}

#[test]
fn unknown_tensor_type_is_kept() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("odd", &[7, 3], 99, 1 << 50);
    r.tensor("ok", &[2], 0, 0);
    let f = GgufFile::from_bytes(r.data(8)).unwrap();
    let t = f.tensor("odd").unwrap();
    assert_eq!(
        (t.type_id, t.ggml_type, t.n_bytes, t.n_elements),
        (99, None, 0, 21)
    );
    assert_eq!(f.tensor_data(t), &[] as &[u8]);
    assert_eq!(f.tensor("ok").unwrap().ggml_type, Some(GgmlType::F32));
}

#[test]
fn alignment_rule() {
    let file_with = |v: Value| {
        let mut w = GgufWriter::new();
        w.add_kv("general.alignment", v);
        w.add_tensor("t", GgmlType::F32, &[1]);
        GgufFile::from_bytes(encode(&w, &[vec![0; 4]])).unwrap()
    };
    assert_eq!(file_with(Value::U32(64)).alignment(), 64);
    assert_eq!(file_with(Value::U32(64)).data_start() % 64, 0);
    // Not UINT32, zero, or not a power of two: the default 32.
    assert_eq!(file_with(Value::U64(64)).alignment(), 32);
    assert_eq!(file_with(Value::U32(0)).alignment(), 32);
    assert_eq!(file_with(Value::U32(48)).alignment(), 32);
    // Hand-built: general.alignment = 16 moves the data start to a multiple of 16.
    let mut r = Raw::header(3, 1, 1);
    r.str(b"general.alignment").u32(4).u32(16);
    r.tensor("t", &[1], 0, 0);
    let end = r.0.len();
    let mut v = r.0.clone();
    v.resize(end.next_multiple_of(16) + 4, 7);
    let f = GgufFile::from_bytes(v).unwrap();
    assert_eq!(f.data_start(), end.next_multiple_of(16) as u64);
    assert_eq!(f.tensor_data(&f.tensors()[0]), &[7, 7, 7, 7]);
}

#[test]
fn metadata_value_budget_and_string_limit() {
    use ds4_gguf::reader::{MAX_METADATA_VALUES, MAX_STRING_LEN};
    // A u8 array one element over the budget, with every byte present: refused before
    // decoding (a corrupt count inside a huge mmap must not become a huge Vec).
    let n = MAX_METADATA_VALUES; // + the top-level value itself = budget + 1
    let mut r = Raw::header(3, 0, 1);
    r.str(b"big").u32(9).u32(0).u64(n);
    let count_offset = r.0.len() as u64 - 8;
    let mut v = r.0.clone();
    v.resize(v.len() + n as usize, 1);
    let e = err_of(GgufFile::from_bytes(v));
    assert!(
        matches!(e, GgufError::LimitExceeded { offset, count, limit, .. }
            if offset == count_offset && count == n + 1 && limit == n),
        "{e}"
    );
    // One element fewer fits.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"big").u32(9).u32(0).u64(n - 1);
    let mut v = r.0.clone();
    v.resize(v.len() + n as usize - 1, 1);
    let f = GgufFile::from_bytes(v).unwrap();
    assert_eq!(
        f.get("big").unwrap().as_array().unwrap().1.len() as u64,
        n - 1
    );
    // A string length over MAX_STRING_LEN is refused whether or not its bytes are there.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(8).u64(MAX_STRING_LEN + 1);
    let e = err_of(GgufFile::from_bytes(r.data(64)));
    assert!(
        matches!(e, GgufError::LimitExceeded { offset: 37, count, .. } if count == MAX_STRING_LEN + 1),
        "{e}"
    );
    assert!(e.to_string().contains("metadata string at byte 37"), "{e}");
}
