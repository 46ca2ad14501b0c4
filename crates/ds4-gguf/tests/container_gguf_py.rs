//! Oracle test against ggml-org's gguf-py writer (fixtures made by
//! container_fixtures/make_fixtures.py, gguf==0.19.0): our reader decodes gguf-py's
//! files to exactly the content the script wrote, and our writer reproduces them byte
//! for byte.

use ds4_gguf::{GgmlType, GgufFile, GgufWriter, Value, ValueType};

const DEFAULT_ALIGN: &[u8] = include_bytes!("container_fixtures/gguf_py_default_align.gguf");
const ALIGN64: &[u8] = include_bytes!("container_fixtures/gguf_py_align64.gguf");

/// The tensors of make_fixtures.py (name, type, GGUF dims).
fn tensors() -> Vec<(&'static str, GgmlType, Vec<u64>)> {
    vec![
        ("token_embd.weight", GgmlType::F32, vec![3, 2]),
        ("blk.0.attn_norm.weight", GgmlType::F16, vec![5]),
        ("blk.0.attn_q_a.weight", GgmlType::Q8_0, vec![64, 3]),
        ("blk.0.ffn_gate_tid2eid.weight", GgmlType::I32, vec![4, 2]),
        ("blk.0.ffn_down_exps.weight", GgmlType::Q2K, vec![256, 1, 2]),
        ("blk.0.ffn_up_exps.weight", GgmlType::Q4K, vec![256, 2]),
        ("blk.0.ffn_gate_exps.weight", GgmlType::Iq2Xxs, vec![512, 1]),
        ("output.weight", GgmlType::Bf16, vec![7]),
    ]
}

/// make_fixtures.py `tensor_bytes`.
fn tensor_bytes(i: usize, n: u64) -> Vec<u8> {
    (0..n as usize)
        .map(|j| ((i * 37 + j * 11 + 5) % 256) as u8)
        .collect()
}

/// The metadata of make_fixtures.py `write`, in order.
fn metadata(alignment: Option<u32>) -> Vec<(&'static str, Value)> {
    let mut kv = vec![
        ("general.architecture", Value::String("deepseek4".into())),
        ("test.u8", Value::U8(200)),
        ("test.i8", Value::I8(-100)),
        ("test.u16", Value::U16(60000)),
        ("test.i16", Value::I16(-30000)),
        ("test.u32", Value::U32(4_000_000_000)),
        ("test.i32", Value::I32(-2_000_000_000)),
        ("test.f32", Value::F32(0.1)),
        ("test.bool", Value::Bool(true)),
        (
            "test.string",
            Value::String("Grüße, 世界 \u{2581}<｜end▁of▁sentence｜>".into()),
        ),
        ("test.u64", Value::U64(18_000_000_000_000_000_000)),
        ("test.i64", Value::I64(-9_000_000_000_000_000_000)),
        ("test.f64", Value::F64(0.1)),
    ];
    if let Some(a) = alignment {
        kv.push(("general.alignment", Value::U32(a)));
    }
    kv.extend([
        ("test.arr_u32", Value::u32_array(&[1, 2, 4_000_000_000])),
        ("test.arr_f32", Value::f32_array(&[0.5, -1.25, 3.0e-6])),
        (
            "test.arr_str",
            Value::string_array(
                ["a", "", "Ġthe", "<｜begin▁of▁sentence｜>"]
                    .map(String::from)
                    .to_vec(),
            ),
        ),
        (
            "test.arr_bool",
            Value::Array(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
        ),
        (
            "test.nested",
            Value::Array(
                ValueType::Array,
                vec![Value::i32_array(&[1, -2]), Value::i32_array(&[3])],
            ),
        ),
    ]);
    kv
}

fn check_reader(bytes: &[u8], alignment: Option<u32>) {
    let f = GgufFile::from_bytes(bytes.to_vec()).unwrap();
    let align = alignment.unwrap_or(32) as u64;
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), align);
    let want = metadata(alignment);
    let got: Vec<(&str, &Value)> = f.metadata().iter().map(|(k, v)| (k.as_str(), v)).collect();
    let want_ref: Vec<(&str, &Value)> = want.iter().map(|(k, v)| (*k, v)).collect();
    assert_eq!(got, want_ref);
    assert_eq!(f.get("test.f32").and_then(Value::as_f32), Some(0.1));
    assert_eq!(f.tensors().len(), tensors().len());
    for (i, (name, ty, dims)) in tensors().into_iter().enumerate() {
        let t = f.tensor(name).unwrap();
        assert_eq!((t.ggml_type, &t.dims), (Some(ty), &dims), "{name}");
        let n_el: u64 = dims.iter().product();
        let n_bytes = n_el / ty.block_elems() as u64 * ty.block_bytes() as u64;
        assert_eq!(t.n_elements, n_el);
        assert_eq!(t.n_bytes, n_bytes);
        assert_eq!(t.abs_offset % align, 0);
        assert_eq!(f.tensor_data(t), &tensor_bytes(i, n_bytes)[..], "{name}");
    }
}

fn build(alignment: Option<u32>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in metadata(alignment) {
        w.add_kv(k, v);
    }
    let mut datas = Vec::new();
    for (i, (name, ty, dims)) in tensors().into_iter().enumerate() {
        let idx = w.add_tensor(name, ty, &dims);
        datas.push(tensor_bytes(i, w.tensor_bytes(idx).unwrap()));
    }
    let mut s = w.begin(Vec::new()).unwrap();
    for d in &datas {
        s.write_data(d).unwrap();
    }
    s.finish().unwrap()
}

#[test]
fn reader_decodes_gguf_py_files() {
    check_reader(DEFAULT_ALIGN, None);
    check_reader(ALIGN64, Some(64));
}

#[test]
fn writer_matches_gguf_py_byte_for_byte() {
    assert!(
        build(None) == DEFAULT_ALIGN,
        "default alignment file differs"
    );
    assert!(build(Some(64)) == ALIGN64, "alignment 64 file differs");
}

#[test]
fn set_alignment_matches_gguf_py_add_custom_alignment() {
    // add_custom_alignment(64) appends general.alignment at its call position; so does
    // set_alignment when the key is not there yet.
    let mut w = GgufWriter::new();
    let md = metadata(None);
    for (k, v) in &md[..13] {
        w.add_kv(*k, v.clone());
    }
    w.set_alignment(64);
    for (k, v) in &md[13..] {
        w.add_kv(*k, v.clone());
    }
    let mut datas = Vec::new();
    for (i, (name, ty, dims)) in tensors().into_iter().enumerate() {
        let idx = w.add_tensor(name, ty, &dims);
        datas.push(tensor_bytes(i, w.tensor_bytes(idx).unwrap()));
    }
    let mut s = w.begin(Vec::new()).unwrap();
    s.write_data(&datas.concat()).unwrap();
    assert!(s.finish().unwrap() == ALIGN64);
}
