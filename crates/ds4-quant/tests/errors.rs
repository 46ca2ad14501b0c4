//! Bad input gives an error (or NaN for the unchecked dot functions), never a panic.

use ds4_quant::{
    dequantize_row, kernels, quantize_q8_0_act, quantize_q8_k, quantize_row, reference, row_bytes,
    GgmlType, QuantError,
};

#[test]
fn dequantize_rejects_bad_lengths() {
    for ty in GgmlType::ALL {
        let n = ty.block_elems() * 2;
        let good = vec![0u8; row_bytes(ty, n)];
        let mut out = vec![0f32; n];
        assert!(dequantize_row(ty, &good, &mut out).is_ok());
        assert!(
            matches!(
                dequantize_row(ty, &good[1..], &mut out),
                Err(QuantError::Length { .. })
            ),
            "{ty}"
        );
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(
            dequantize_row(ty, &longer, &mut out),
            Err(QuantError::Length { .. })
        ));
        if ty.block_elems() > 1 {
            let mut odd = vec![0f32; n - 1];
            let e = dequantize_row(ty, &good, &mut odd).unwrap_err();
            assert!(matches!(e, QuantError::NotBlockMultiple { .. }));
            assert!(e.to_string().contains("not a multiple"), "{e}");
        }
        assert!(dequantize_row(ty, &[], &mut []).is_ok());
    }
}

#[test]
fn quantize_rejects_bad_input() {
    for ty in GgmlType::ALL {
        let n = ty.block_elems() * 2;
        let x = vec![if ty == GgmlType::I32 { 1.0 } else { 0.5f32 }; n];
        let mut dst = vec![0u8; row_bytes(ty, n)];
        assert!(quantize_row(ty, &x, &mut dst).is_ok(), "{ty}");
        assert!(matches!(
            quantize_row(ty, &x, &mut dst[1..]),
            Err(QuantError::Length { .. })
        ));
        if ty.block_elems() > 1 {
            assert!(matches!(
                quantize_row(ty, &x[1..], &mut dst),
                Err(QuantError::NotBlockMultiple { .. })
            ));
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut y = x.clone();
                y[n - 3] = bad;
                let e = quantize_row(ty, &y, &mut dst).unwrap_err();
                assert_eq!(
                    e,
                    QuantError::Value {
                        ty,
                        index: n - 3,
                        reason: "not a finite number"
                    }
                );
            }
            // a block scale that overflows f16
            if ty != GgmlType::Q8K {
                let mut y = x.clone();
                y[0] = 1e30;
                let e = quantize_row(ty, &y, &mut dst).expect_err(ty.name());
                assert!(e.to_string().contains("f16 range"), "{ty}: {e}");
            }
        }
    }
    let mut dst = vec![0u8; 4];
    assert!(quantize_row(GgmlType::I32, &[0.5], &mut dst).is_err());
    assert!(quantize_row(GgmlType::I32, &[3e9], &mut dst).is_err());
    assert!(quantize_row(GgmlType::I32, &[f32::NAN], &mut dst).is_err());
}

#[test]
fn dots_reject_mismatches() {
    let x = vec![1.0f32; 512];
    let a = quantize_q8_k(&x);
    let w = vec![0u8; row_bytes(GgmlType::Q4K, 512)];
    // wrong weight length
    assert!(reference::vec_dot_q8k(GgmlType::Q4K, &w[..144], &a).is_nan());
    assert!(kernels::vec_dot_q8k(GgmlType::Q4K, &w[..144], &a).is_nan());
    assert!(matches!(
        reference::try_vec_dot_q8k(GgmlType::Q4K, &w[..144], &a),
        Err(QuantError::Length { .. })
    ));
    // wrong weight type for a Q8_K activation
    assert!(matches!(
        reference::try_vec_dot_q8k(GgmlType::F16, &w, &a),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(kernels::vec_dot_q8k(GgmlType::Q8_0, &w, &a).is_nan());
    // activation not a multiple of the block (padded row)
    let a_odd = quantize_q8_k(&x[..300]);
    assert_eq!(a_odd.blocks(), 2);
    assert!(reference::try_vec_dot_q8k(GgmlType::Q4K, &w, &a_odd).is_err());
    assert!(kernels::vec_dot_q8k(GgmlType::Q4K, &w, &a_odd).is_nan());
    // Q8_0
    let a0 = quantize_q8_0_act(&x);
    let w0 = vec![0u8; row_bytes(GgmlType::Q8_0, 512)];
    assert!(reference::vec_dot_q8_0(&w0[..34], &a0).is_nan());
    assert!(kernels::vec_dot_q8_0(&w0[..34], &a0).is_nan());
    assert!(reference::try_vec_dot_q8_0(&w0[..34], &a0).is_err());
    assert!(kernels::vec_dot_q8_0(&w0, &quantize_q8_0_act(&x[..40])).is_nan());
    // f32 activations
    assert!(reference::vec_dot_f32(GgmlType::F16, &[0u8; 6], &x[..4]).is_nan());
    assert!(kernels::vec_dot_f32(GgmlType::F16, &[0u8; 6], &x[..4]).is_nan());
    assert!(kernels::vec_dot_f32(GgmlType::Q4K, &w, &x[..300]).is_nan());
    // the fast dots' Result forms: an error, never NaN, on every mismatch above
    assert!(matches!(
        kernels::try_vec_dot_q8k(GgmlType::Q4K, &w[..144], &a),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        kernels::try_vec_dot_q8k(GgmlType::Q8_0, &w, &a),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(kernels::try_vec_dot_q8k(GgmlType::Q4K, &w, &a_odd).is_err());
    assert!(kernels::try_vec_dot_q8_0(&w0[..34], &a0).is_err());
    assert!(kernels::try_vec_dot_f32(GgmlType::F16, &[0u8; 6], &x[..4]).is_err());
    // and they agree with the NaN forms where the inputs fit
    assert_eq!(
        kernels::try_vec_dot_q8k(GgmlType::Q4K, &w, &a).unwrap(),
        kernels::vec_dot_q8k(GgmlType::Q4K, &w, &a)
    );
    assert!(reference::try_vec_dot_f32(GgmlType::Q2K, &w, &x).is_err());
}

#[test]
fn matvec_rejects_mismatches() {
    let cols = 256;
    let rows = 3;
    let w = vec![0u8; rows * row_bytes(GgmlType::Q4K, cols)];
    let x = vec![1.0f32; cols];
    let mut y = vec![0f32; rows];
    assert!(kernels::matvec(GgmlType::Q4K, &w, rows, cols, &x, &mut y).is_ok());
    assert!(kernels::matvec(GgmlType::Q4K, &w[1..], rows, cols, &x, &mut y).is_err());
    assert!(kernels::matvec(GgmlType::Q4K, &w, rows, cols, &x[1..], &mut y).is_err());
    assert!(kernels::matvec(GgmlType::Q4K, &w, rows, cols, &x, &mut y[1..]).is_err());
    assert!(kernels::matvec(GgmlType::Q4K, &w, rows, 100, &x[..100], &mut y).is_err());
    assert!(kernels::matvec(GgmlType::Q4K, &w, usize::MAX, cols, &x, &mut y).is_err());
    // an activation prepared for another type
    let act = kernels::prepare_activation(GgmlType::Q8_0, &x);
    assert!(kernels::matvec_prepared(GgmlType::Q4K, &w, rows, cols, &act, &mut y).is_err());
    let act = kernels::prepare_activation(GgmlType::Q4K, &x);
    let w0 = vec![0u8; rows * row_bytes(GgmlType::Q8_0, cols)];
    assert!(kernels::matvec_prepared(GgmlType::Q8_0, &w0, rows, cols, &act, &mut y).is_err());
    let act = kernels::prepare_activation(GgmlType::Q4K, &x[..255]);
    assert!(kernels::matvec_prepared(GgmlType::Q4K, &w, rows, cols, &act, &mut y).is_err());
    // zero rows is fine; zero columns gives zeros
    assert!(kernels::matvec(GgmlType::Q4K, &[], 0, cols, &x, &mut []).is_ok());
    for ty in [GgmlType::Q4K, GgmlType::Q8_0, GgmlType::F16] {
        let mut y = vec![f32::NAN; 2];
        assert!(kernels::matvec(ty, &[], 2, 0, &[], &mut y).is_ok());
        assert_eq!(y, [0.0, 0.0]);
    }
}
