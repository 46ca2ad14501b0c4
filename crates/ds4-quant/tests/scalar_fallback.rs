//! The kernels' scalar fallback (forced with DS4_QUANT_NO_SIMD) dispatches to the right
//! reference dot for every type. Its own test binary: the switch is read once per process.

mod common;
use common::Rng;
use ds4_quant::{kernels, quantize_row, reference, row_bytes, GgmlType};

#[test]
fn forced_scalar_path_matches_reference() {
    std::env::set_var("DS4_QUANT_NO_SIMD", "1");
    assert!(!kernels::simd_available());
    let mut r = Rng::new(48);
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q4K,
        GgmlType::Iq2Xxs,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::Bf16,
        GgmlType::F32,
    ] {
        let (rows, cols) = (4, 512);
        let rb = row_bytes(ty, cols);
        let mut w = vec![0u8; rows * rb];
        for i in 0..rows {
            quantize_row(ty, &r.gauss_vec(cols, 0.1), &mut w[i * rb..(i + 1) * rb]).unwrap();
        }
        let x = r.gauss_vec(cols, 1.0);
        let mut y = vec![0f32; rows];
        kernels::matvec(ty, &w, rows, cols, &x, &mut y).unwrap();
        let act = kernels::prepare_activation(ty, &x);
        for i in 0..rows {
            let wr = &w[i * rb..(i + 1) * rb];
            let want = match &act {
                kernels::Activation::Q8K(a) => reference::vec_dot_q8k(ty, wr, a),
                kernels::Activation::Q8_0(a) => reference::vec_dot_q8_0(wr, a),
                kernels::Activation::F32(x) => reference::vec_dot_f32(ty, wr, x),
            };
            assert_eq!(y[i].to_bits(), want.to_bits(), "{ty} row {i}");
        }
    }
}
