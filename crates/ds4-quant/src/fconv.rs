//! Scalar float conversions: IEEE binary16 and bfloat16 (spec: gguf-layout.md §3.1).

/// IEEE binary16 bits → f32. Exact; subnormals, infinities and NaN payloads are preserved
/// (a NaN's 10-bit payload becomes the top of the f32 payload, as numpy and F16C do).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x3FF) as u32;
    if exp == 0 {
        // zero or subnormal: man · 2^-24, exact in f32
        let v = man as f32 * (1.0 / 16_777_216.0);
        return f32::from_bits(v.to_bits() | sign);
    }
    if exp == 31 {
        return f32::from_bits(sign | 0x7F80_0000 | (man << 13));
    }
    f32::from_bits(sign | ((exp + 112) << 23) | (man << 13))
}

/// f32 → IEEE binary16 bits, round to nearest, ties to even; overflow gives ±inf, values
/// below half the smallest subnormal give ±0, NaN gives 0x7E00 with the input's sign
/// (ggml `GGML_FP32_TO_FP16`, gguf-tools `ds4q_f32_to_f16`).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let abs = bits & 0x7FFF_FFFF;
    if abs > 0x7F80_0000 {
        return sign | 0x7E00;
    }
    if abs >= 0x477F_F000 {
        // >= 65520: rounds to infinity (65504 has an odd mantissa, so the tie goes up)
        return sign | 0x7C00;
    }
    let e = abs >> 23;
    if abs < 0x3880_0000 {
        // result is subnormal or zero: value / 2^-24 = m · 2^(e - 126)
        if e < 102 {
            return sign; // < 2^-25 (includes f32 subnormals): rounds to zero
        }
        let m = (abs & 0x7F_FFFF) | 0x80_0000;
        let s = 126 - e; // 14..=24
        let q = m >> s;
        let rem = m & ((1 << s) - 1);
        let half = 1 << (s - 1);
        let up = rem > half || (rem == half && (q & 1) == 1);
        return sign | (q + up as u32) as u16;
    }
    let base = ((e - 112) << 10) | ((abs >> 13) & 0x3FF);
    let rem = abs & 0x1FFF;
    let up = rem > 0x1000 || (rem == 0x1000 && (base & 1) == 1);
    sign | (base + up as u32) as u16
}

/// bfloat16 bits → f32 (the upper half of a binary32).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 → bfloat16 bits: NaN → quiet NaN keeping sign and the top payload bits;
/// otherwise round to nearest, ties to even (ggml `ggml_compute_fp32_to_bf16`).
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if bits & 0x7FFF_FFFF > 0x7F80_0000 {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_roundtrip_all_non_nan() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert_eq!(f32_to_f16(f) & 0x7E00, 0x7E00);
                assert_eq!(f32_to_f16(f) & 0x8000, h & 0x8000);
            } else {
                assert_eq!(f32_to_f16(f), h, "h={h:#06x}");
            }
        }
    }

    #[test]
    fn f16_known_values() {
        assert_eq!(f16_to_f32(0x3C00), 1.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7BFF), 65504.0);
        assert_eq!(f32_to_f16(65519.0), 0x7BFF);
        assert_eq!(f32_to_f16(65520.0), 0x7C00);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0); // tie to even (0)
        assert_eq!(f32_to_f16(3.0 * 2f32.powi(-25)), 2); // 1.5 ulp ties to 2
        assert_eq!(f32_to_f16(f32::NAN), 0x7E00);
        assert_eq!(f32_to_f16(-f32::NAN), 0xFE00);
    }

    #[test]
    fn bf16_known_values() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        assert_eq!(bf16_to_f32(0x3F80), 1.0);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80); // tie, even stays
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82); // tie, odd rounds up
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0);
    }
}
