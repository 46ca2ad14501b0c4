//! Bit-for-bit agreement with the Python oracles (fixtures from tools/quant-fixtures/gen.py:
//! gguf-py 0.19.0 `gguf.quants`, numpy float16 casts, numpy transcription of ggml Q8_K).

mod common;
use common::{f32s, fixture, u16s};
use ds4_quant::{
    dequantize_row, f16_to_f32, f32_to_bf16, f32_to_f16, quantize_q8_k, quantize_row, row_bytes,
    GgmlType,
};

fn check_deq(file: &str, ty: GgmlType) {
    let (n, data) = fixture(file);
    let nbytes = n * ty.block_bytes();
    let elems = n * ty.block_elems();
    assert_eq!(data.len(), nbytes + 4 * elems, "{file}: size");
    let expected = f32s(&data[nbytes..]);
    let mut out = vec![0f32; elems];
    dequantize_row(ty, &data[..nbytes], &mut out).unwrap();
    for (i, (a, e)) in out.iter().zip(&expected).enumerate() {
        assert_eq!(
            a.to_bits(),
            e.to_bits(),
            "{file}: element {i}: got {a:e}, gguf-py {e:e}"
        );
    }
    // block by block gives the same answer as the whole row
    let be = ty.block_elems();
    let bb = ty.block_bytes();
    let mut one = vec![0f32; be];
    for b in 0..n {
        dequantize_row(ty, &data[b * bb..(b + 1) * bb], &mut one).unwrap();
        assert_eq!(
            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            out[b * be..(b + 1) * be]
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn dequant_matches_gguf_py() {
    check_deq("deq_q8_0.bin", GgmlType::Q8_0);
    check_deq("deq_q2_k.bin", GgmlType::Q2K);
    check_deq("deq_q4_k.bin", GgmlType::Q4K);
    check_deq("deq_iq2_xxs.bin", GgmlType::Iq2Xxs);
    check_deq("deq_bf16.bin", GgmlType::Bf16);
    check_deq("deq_f16.bin", GgmlType::F16);
}

#[test]
fn dequant_q8_k_matches_numpy() {
    check_deq("deq_q8_k.bin", GgmlType::Q8K);
}

#[test]
fn iq2_xxs_fixture_covers_every_grid_index() {
    let (n, data) = fixture("deq_iq2_xxs.bin");
    let mut seen = [false; 256];
    for b in 0..n {
        let blk = &data[b * 66..(b + 1) * 66];
        for g in 0..8 {
            for k in 0..4 {
                seen[blk[2 + 8 * g + k] as usize] = true;
            }
        }
    }
    assert!(
        seen.iter().all(|&s| s),
        "fixture does not exercise every grid entry"
    );
}

#[test]
fn f16_to_f32_matches_numpy() {
    let (n, data) = fixture("deq_f16.bin");
    let h = u16s(&data[..2 * n]);
    let e = f32s(&data[2 * n..]);
    for (hv, ev) in h.iter().zip(&e) {
        assert_eq!(f16_to_f32(*hv).to_bits(), ev.to_bits(), "h={hv:#06x}");
    }
}

#[test]
fn f32_to_f16_matches_numpy() {
    let (n, data) = fixture("quant_f16.bin");
    let x = f32s(&data[..4 * n]);
    let e = u16s(&data[4 * n..]);
    let mut nans = 0;
    for (xv, ev) in x.iter().zip(&e) {
        let got = f32_to_f16(*xv);
        if xv.is_nan() {
            // numpy keeps NaN payload bits; ggml/ds4 (and this crate) write the quiet NaN 0x7E00
            // with the input's sign. Both must be a NaN of the same sign.
            assert!(f16_to_f32(got).is_nan() && f16_to_f32(*ev).is_nan());
            assert_eq!(got & 0x8000, ev & 0x8000);
            assert_eq!(got & 0x7FFF, 0x7E00);
            nans += 1;
        } else {
            assert_eq!(got, *ev, "x={xv:e} ({:#010x})", xv.to_bits());
        }
    }
    assert!(nans >= 2);
    // through quantize_row as well
    let mut bytes = vec![0u8; 2 * n];
    quantize_row(GgmlType::F16, &x, &mut bytes).unwrap();
    for (i, c) in bytes.chunks_exact(2).enumerate() {
        if !x[i].is_nan() {
            assert_eq!(u16::from_le_bytes([c[0], c[1]]), e[i]);
        }
    }
}

#[test]
fn bf16_quantize_matches_gguf_py() {
    let (n, data) = fixture("quant_bf16.bin");
    let x = f32s(&data[..4 * n]);
    let e = u16s(&data[4 * n..]);
    let mut bytes = vec![0u8; row_bytes(GgmlType::Bf16, n)];
    quantize_row(GgmlType::Bf16, &x, &mut bytes).unwrap();
    for (i, (xv, ev)) in x.iter().zip(&e).enumerate() {
        assert_eq!(f32_to_bf16(*xv), *ev, "x bits {:#010x}", xv.to_bits());
        assert_eq!(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]), *ev);
    }
}

#[test]
fn q8_0_quantize_matches_gguf_py() {
    let (n, data) = fixture("quant_q8_0.bin");
    let x = f32s(&data[..4 * 32 * n]);
    let e = &data[4 * 32 * n..];
    let mut out = vec![0u8; n * 34];
    quantize_row(GgmlType::Q8_0, &x, &mut out).unwrap();
    for b in 0..n {
        assert_eq!(
            &out[b * 34..(b + 1) * 34],
            &e[b * 34..(b + 1) * 34],
            "block {b}"
        );
    }
}

#[test]
fn q8_k_quantize_matches_numpy_reference() {
    let (n, data) = fixture("quant_q8_k.bin");
    let x = f32s(&data[..4 * 256 * n]);
    let e = &data[4 * 256 * n..];
    let mut out = vec![0u8; n * 292];
    quantize_row(GgmlType::Q8K, &x, &mut out).unwrap();
    assert_eq!(out, e);
    assert_eq!(quantize_q8_k(&x).to_bytes(), e);
}
