//! Activation rows quantized once and reused against many weight rows.

/// A row quantized to Q8_K (spec §3.6): per 256 elements an f32 scale `d`, 256 int8 quants and
/// 16 int16 sums of 16 quants. The row is zero-padded to a multiple of 256 elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Q8KRow {
    pub(crate) n: usize,
    pub(crate) d: Vec<f32>,
    pub(crate) qs: Vec<i8>,
    pub(crate) bsums: Vec<i16>,
}

/// A row quantized to the in-memory Q8_0 activation form of ds4 (`quantize_q8_0_activation`):
/// per 32 elements an f32 scale `d = amax/127` and 32 int8 quants `clamp(lrint(x/d))`.
/// The row is zero-padded to a multiple of 32 elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Q8_0Row {
    pub(crate) n: usize,
    pub(crate) d: Vec<f32>,
    pub(crate) qs: Vec<i8>,
}

/// Quantizes one activation row to Q8_K (ggml `quantize_row_q8_K_ref`, bit-identical): per block
/// the element of largest magnitude `max` (first one on ties) gives `iscale = -127/max`,
/// `q = min(127, round_half_even(iscale·x))`, `d = 1/iscale`; an all-zero block has d = 0.
/// A length that is not a multiple of 256 is zero-padded.
pub fn quantize_q8_k(src: &[f32]) -> Q8KRow {
    let nb = src.len().div_ceil(256);
    let mut row = Q8KRow {
        n: src.len(),
        d: vec![0.0; nb],
        qs: vec![0; nb * 256],
        bsums: vec![0; nb * 16],
    };
    let mut buf = [0f32; 256];
    for b in 0..nb {
        let lo = b * 256;
        let hi = (lo + 256).min(src.len());
        buf.fill(0.0);
        buf[..hi - lo].copy_from_slice(&src[lo..hi]);
        let mut amax = 0f32;
        let mut max = 0f32;
        for &x in &buf {
            let ax = x.abs();
            if ax > amax {
                amax = ax;
                max = x;
            }
        }
        if amax == 0.0 {
            continue;
        }
        let iscale = -127.0f32 / max;
        let qs = &mut row.qs[lo..lo + 256];
        for (q, &x) in qs.iter_mut().zip(&buf) {
            let v = (iscale * x).round_ties_even();
            // |iscale·x| <= 127 up to rounding; the clamp only guards NaN inputs (cast gives 0)
            *q = v.clamp(-128.0, 127.0) as i8;
        }
        for j in 0..16 {
            row.bsums[b * 16 + j] = qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
        }
        row.d[b] = 1.0 / iscale;
    }
    row
}

impl Q8KRow {
    /// Number of logical elements (before padding).
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Number of 256-element blocks.
    pub fn blocks(&self) -> usize {
        self.d.len()
    }
    /// Per-block scales.
    pub fn d(&self) -> &[f32] {
        &self.d
    }
    /// All quants (padded length).
    pub fn qs(&self) -> &[i8] {
        &self.qs
    }
    /// Sums of each 16 quants.
    pub fn bsums(&self) -> &[i16] {
        &self.bsums
    }
    /// The represented values `d·q` (padded length).
    pub fn dequantize(&self) -> Vec<f32> {
        self.qs
            .iter()
            .enumerate()
            .map(|(i, &q)| self.d[i / 256] * q as f32)
            .collect()
    }
    /// The GGUF Q8_K block encoding (292 bytes per block).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.blocks() * 292);
        for b in 0..self.blocks() {
            out.extend_from_slice(&self.d[b].to_le_bytes());
            out.extend(self.qs[b * 256..b * 256 + 256].iter().map(|&q| q as u8));
            for s in &self.bsums[b * 16..b * 16 + 16] {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        out
    }
}

/// Quantizes one activation row to the Q8_0 activation form (see [`Q8_0Row`]).
/// A length that is not a multiple of 32 is zero-padded.
pub fn quantize_q8_0_act(src: &[f32]) -> Q8_0Row {
    let nb = src.len().div_ceil(32);
    let mut row = Q8_0Row {
        n: src.len(),
        d: vec![0.0; nb],
        qs: vec![0; nb * 32],
    };
    for b in 0..nb {
        let lo = b * 32;
        let hi = (lo + 32).min(src.len());
        let x = &src[lo..hi];
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        row.d[b] = d;
        for (q, &v) in row.qs[lo..hi].iter_mut().zip(x) {
            *q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
    row
}

impl Q8_0Row {
    /// Number of logical elements (before padding).
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Number of 32-element blocks.
    pub fn blocks(&self) -> usize {
        self.d.len()
    }
    /// Per-block scales.
    pub fn d(&self) -> &[f32] {
        &self.d
    }
    /// All quants (padded length).
    pub fn qs(&self) -> &[i8] {
        &self.qs
    }
    /// The represented values `d·q` (padded length).
    pub fn dequantize(&self) -> Vec<f32> {
        self.qs
            .iter()
            .enumerate()
            .map(|(i, &q)| self.d[i / 32] * q as f32)
            .collect()
    }
}
