//! The backend trait the forward pass is written against, and its CPU
//! implementation.
//!
//! Design: buffers (`Buf`) and bound weights (`Mat`) are opaque device handles;
//! every call is a whole operation over a batch of `rows` tokens; the host only
//! passes small index lists (positions, visible-row lists, selected experts).
//! A GPU backend implements the same calls with kernels and device memory.

use crate::config::Config;
use crate::weights::{decodable, decode_row, TensorData};
use anyhow::{bail, Result};
use rayon::prelude::*;

/// RoPE frequency table of one layer kind (spec §3.3).
#[derive(Clone, Debug)]
pub struct RopeTable {
    /// `ω_j` computed the way transformers does (f32 pow, f32 YaRN mix).
    pub inv_f32: Vec<f32>,
    /// `ω_j` in f64 (used with f64 angles in official mode, spec R1).
    pub inv_f64: Vec<f64>,
}

impl RopeTable {
    /// Plain RoPE (`yarn = false`) or YaRN-scaled (compressed layers).
    pub fn new(cfg: &Config, theta: f32, yarn: bool) -> RopeTable {
        let dim = cfg.rope_dim;
        let half = dim / 2;
        let base = theta as f64;
        let (low, high) = if yarn {
            let corr = |rot: f64| {
                dim as f64 * (cfg.yarn_orig_ctx as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()
                    / (2.0 * base.ln())
            };
            let low = corr(cfg.yarn_beta_fast as f64).floor().max(0.0);
            let mut high = corr(cfg.yarn_beta_slow as f64).ceil().min(dim as f64 - 1.0);
            if low == high {
                high += 0.001;
            }
            (low, high)
        } else {
            (0.0, 1.0)
        };
        let factor = cfg.yarn_factor;
        let mut inv_f32 = Vec::with_capacity(half);
        let mut inv_f64 = Vec::with_capacity(half);
        for j in 0..half {
            let x32 = (2 * j) as f32 / dim as f32;
            let pos_freq = base.powf(x32 as f64) as f32;
            let extrap = 1.0f32 / pos_freq;
            let pf64 = base.powf(2.0 * j as f64 / dim as f64);
            if yarn {
                let interp = 1.0f32 / (factor * pos_freq);
                let ramp = ((j as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                let ef = 1.0 - ramp;
                inv_f32.push(interp * (1.0 - ef) + extrap * ef);
                let r64 = ((j as f64 - low) / (high - low)).clamp(0.0, 1.0);
                inv_f64.push((1.0 / pf64) * ((1.0 - r64) + r64 / factor as f64));
            } else {
                inv_f32.push(extrap);
                inv_f64.push(1.0 / pf64);
            }
        }
        RopeTable { inv_f32, inv_f64 }
    }

    /// `(cos, sin)` of pair `j` at position `p`.
    #[inline]
    pub fn cos_sin(&self, p: usize, j: usize, precise: bool) -> (f32, f32) {
        let a = if precise {
            p as f64 * self.inv_f64[j]
        } else {
            (p as f32 * self.inv_f32[j]) as f64
        };
        (a.cos() as f32, a.sin() as f32)
    }
}

/// Per-token selection of rows that attention may read: for token `i`,
/// `rows[offsets[i]..offsets[i+1]]` index the concatenation `[raw ; comp]`.
#[derive(Clone, Debug, Default)]
pub struct Visibility {
    pub offsets: Vec<u32>,
    pub rows: Vec<u32>,
}

/// Routing decision for a batch: `k` experts and weights per token.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routing {
    pub k: usize,
    pub experts: Vec<u32>,
    pub weights: Vec<f32>,
}

/// Compressor frontier of one compressor (spec §7.1): slot buffers for the
/// previous window's A lane (overlap mode) and the current window.
pub struct CompFrontier<B: Backend + ?Sized> {
    /// `[2*ratio, width]` (overlap: slots 0..r = previous window A lanes,
    /// r..2r = current window full rows of 2*width) — stored as kv and score.
    pub kv: B::Buf,
    pub score: B::Buf,
    pub ratio: usize,
    /// Output width (512 main / 128 indexer in the full model).
    pub width: usize,
    pub overlap: bool,
    /// Whether a previous complete window exists (overlap mode).
    pub has_prev: bool,
}

impl<B: Backend + ?Sized> Clone for CompFrontier<B>
where
    B::Buf: Clone,
{
    fn clone(&self) -> Self {
        CompFrontier {
            kv: self.kv.clone(),
            score: self.score.clone(),
            ratio: self.ratio,
            width: self.width,
            overlap: self.overlap,
            has_prev: self.has_prev,
        }
    }
}

/// Whole-op device interface.
pub trait Backend: Send + Sync {
    type Buf: Send + Sync;
    type Mat: Send + Sync;

    fn name(&self) -> String;
    /// Bind a weight tensor (CPU: zero copy).
    fn bind(&self, t: &TensorData) -> Result<Self::Mat>;
    /// Bind a small f32 vector (norm weights, biases); decoded to f32.
    fn bind_vec(&self, t: &TensorData) -> Result<Self::Buf>;
    fn upload(&self, x: &[f32]) -> Self::Buf;
    fn download(&self, b: &Self::Buf) -> Vec<f32>;
    fn zeros(&self, n: usize) -> Self::Buf;
    fn len(&self, b: &Self::Buf) -> usize;

    /// Rows `ids` of an embedding matrix, replicated into `n_hc` streams: `[T, n_hc, dim]`.
    fn embed_hc(&self, table: &Self::Mat, ids: &[u32], n_hc: usize) -> Result<Self::Buf>;
    /// `y[t] = W x[t]` for `rows` tokens; `x` holds `rows * cols`.
    fn matmul(&self, w: &Self::Mat, x: &Self::Buf, rows: usize) -> Self::Buf;
    /// Grouped projection: `W` has `groups * out_g` rows of `cols`; group `g`
    /// of token `t` multiplies `x[t][g*cols..]` by rows `g*out_g..`.
    fn matmul_grouped(&self, w: &Self::Mat, x: &Self::Buf, rows: usize, groups: usize)
        -> Self::Buf;
    /// RMSNorm of each `width` row in place; `w = None` is unweighted.
    fn rms_norm(&self, x: &mut Self::Buf, width: usize, w: Option<&Self::Buf>, eps: f32);
    /// RoPE (or its inverse) on the last `table` dims of every `head_dim` head;
    /// `positions[t]` for token `t`, `heads` heads per token.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buf,
        heads: usize,
        head_dim: usize,
        positions: &[usize],
        table: &RopeTable,
        inverse: bool,
        precise: bool,
    );
    /// FP8 round trip of dims `0..nope` of every `width` row.
    fn fp8_sim(&self, x: &mut Self::Buf, width: usize, nope: usize);
    /// f16 rounding of every element.
    fn f16_round(&self, x: &mut Self::Buf);
    /// Hadamard transform + FP4 round trip of every `width` row.
    fn hadamard_fp4(&self, x: &mut Self::Buf, width: usize);
    /// `(y, post, comb)` of `hc_pre` for `T` tokens (spec §2.2).
    #[allow(clippy::too_many_arguments)]
    fn hc_pre(
        &self,
        x: &Self::Buf,
        rows: usize,
        cfg: &Config,
        fn_: &Self::Mat,
        base: &Self::Buf,
        scale: &Self::Buf,
    ) -> (Self::Buf, Self::Buf, Self::Buf);
    /// `X <- post ⊗ o + Cᵀ X` (spec §2.3).
    fn hc_post(
        &self,
        x: &mut Self::Buf,
        o: &Self::Buf,
        post: &Self::Buf,
        comb: &Self::Buf,
        cfg: &Config,
    );
    /// Output HC head (spec §2.5).
    fn hc_head(
        &self,
        x: &Self::Buf,
        rows: usize,
        cfg: &Config,
        fn_: &Self::Mat,
        base: &Self::Buf,
        scale: &Self::Buf,
    ) -> Self::Buf;
    /// `a += b`.
    fn add(&self, a: &mut Self::Buf, b: &Self::Buf);
    /// `a *= s`.
    fn scale(&self, a: &mut Self::Buf, s: f32);
    /// `x[t] += table[pos[t] mod table_rows]` per `width` row.
    fn add_position_rows(
        &self,
        x: &mut Self::Buf,
        width: usize,
        table: &Self::Buf,
        positions: &[usize],
    );
    /// Rows `start..start+n` of a `width`-row buffer.
    fn slice_rows(&self, b: &Self::Buf, width: usize, start: usize, n: usize) -> Self::Buf;
    /// Append all rows of `src` to `dst`.
    fn append(&self, dst: &mut Self::Buf, src: &Self::Buf);
    /// Feed tokens (kv, score rows of `2*width` in overlap mode or `width`
    /// otherwise) at absolute `positions` into the frontier; returns the
    /// pooled (un-normalised) rows emitted, `[n, width]`, and their window index.
    fn compress(
        &self,
        f: &mut CompFrontier<Self>,
        kv: &Self::Buf,
        score: &Self::Buf,
        positions: &[usize],
    ) -> (Self::Buf, Vec<usize>);
    /// Attention with sink over visible rows of `[raw ; comp]` (spec §3.8).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Buf,
        heads: usize,
        head_dim: usize,
        raw: &Self::Buf,
        comp: &Self::Buf,
        vis: &Visibility,
        sinks: &Self::Buf,
        scale: f32,
    ) -> Self::Buf;
    /// Indexer scores `Σ_h w_h relu(q_h·k_r)` for every token and every row
    /// `r < n_valid[t]`; entries at or past `n_valid[t]` are `-inf`. `[T, n_rows]`, on the host.
    fn indexer_scores(
        &self,
        q: &Self::Buf,
        heads: usize,
        dim: usize,
        w: &Self::Buf,
        rows: &Self::Buf,
        n_valid: &[usize],
    ) -> Vec<f32>;
    /// Router: sqrt(softplus) scores; selection by hash ids (`hash`: `k` ids per
    /// token) or top-k of score+bias (ties to the lower index); weights
    /// `scale * σ / Σσ`.
    fn route(
        &self,
        logits: &Self::Buf,
        n_exp: usize,
        k: usize,
        bias: Option<&Self::Buf>,
        hash: Option<&[i32]>,
        scale: f32,
    ) -> Result<Routing>;
    /// Routed experts: `Σ_i W2_e (w_i · swiglu(W1_e x, W3_e x))`.
    #[allow(clippy::too_many_arguments)]
    fn moe(
        &self,
        x: &Self::Buf,
        routing: &Routing,
        gate: &Self::Mat,
        up: &Self::Mat,
        down: &Self::Mat,
        limit: f32,
    ) -> Self::Buf;
    /// Dense SwiGLU FFN with clamp (shared expert).
    fn swiglu_ffn(
        &self,
        x: &Self::Buf,
        rows: usize,
        gate: &Self::Mat,
        up: &Self::Mat,
        down: &Self::Mat,
        limit: f32,
    ) -> Self::Buf;
    /// Bytes of a buffer as stored.
    fn buf_bytes(&self, b: &Self::Buf) -> usize;
}

// ---------------------------------------------------------------------------
// CPU backend
// ---------------------------------------------------------------------------

/// Bound CPU weight: a zero-copy view of the tensor bytes plus shape.
pub struct CpuMat {
    t: TensorData,
    /// Rows per matrix (`dims[1]`), columns (`dims[0]`), matrices (`dims[2]`, experts).
    pub rows: usize,
    pub cols: usize,
    pub mats: usize,
}

/// The CPU backend: f32 buffers in host memory, rayon over rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

const PAR_MIN: usize = 64;

#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx_dot() {
        // SAFETY: AVX checked at run time.
        return unsafe { dot_avx(a, b) };
    }
    dot_scalar(a, b)
}

/// Whether [`dot`] uses its AVX form (x86_64 with AVX, unless
/// `DS4_QUANT_NO_SIMD` switches SIMD off).
#[cfg(target_arch = "x86_64")]
#[inline]
fn avx_dot() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        std::env::var_os("DS4_QUANT_NO_SIMD").is_none() && is_x86_feature_detected!("avx")
    })
}

/// [`dot_scalar`] with the 8 lanes in one AVX register: the same separate
/// multiply and add per lane (no FMA) and the same final combination, so the
/// result is bit-identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dot_avx(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / 8;
    let mut acc = _mm256_setzero_ps();
    for c in 0..chunks {
        let va = _mm256_loadu_ps(a.as_ptr().add(c * 8));
        let vb = _mm256_loadu_ps(b.as_ptr().add(c * 8));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(va, vb));
    }
    let mut l = [0f32; 8];
    _mm256_storeu_ps(l.as_mut_ptr(), acc);
    let mut s = 0f32;
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7])) + s
}

#[inline]
pub(crate) fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let o = c * 8;
        for l in 0..8 {
            acc[l] += a[o + l] * b[o + l];
        }
    }
    let mut s = 0f32;
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + s
}

impl CpuMat {
    /// Row `r` of matrix `m` as f32 (borrowed when F32 and aligned).
    fn row<'a>(&'a self, m: usize, r: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        let rb = self.t.row_bytes();
        let start = (m * self.rows + r) * rb;
        let bytes = &self.t.bytes()[start..start + rb];
        if self.t.ty == ds4_quant::GgmlType::F32 {
            // SAFETY: f32 has no invalid bit patterns; align_to only yields the aligned middle.
            let (pre, mid, post) = unsafe { bytes.align_to::<f32>() };
            if pre.is_empty() && post.is_empty() {
                return mid;
            }
        }
        scratch.resize(self.cols, 0.0);
        decode_row(self.t.ty, bytes, scratch).expect("type checked at bind");
        &scratch[..]
    }

    /// Raw bytes of row `r` of matrix `m`.
    fn row_bytes(&self, m: usize, r: usize) -> &[u8] {
        let rb = self.t.row_bytes();
        let start = (m * self.rows + r) * rb;
        &self.t.bytes()[start..start + rb]
    }

    /// `row_r(m) · x` for one weight row (already decoded when F32).
    /// F32 weights use the crate's own dot (the same summation order for
    /// every batch split); F16/BF16 the SIMD f32-activation kernels of
    /// ds4-quant; block formats are decoded once per row into `scratch` and
    /// dotted with ds4-quant's SIMD f32 kernel (f32 lanes flushed to f64
    /// every 256 values), so a prefill batch decodes each row once.
    #[inline]
    fn dot_decoded(&self, row: &[f32], raw: &[u8], x: &[f32]) -> f32 {
        match self.t.ty {
            ds4_quant::GgmlType::F32 => dot(row, x),
            ds4_quant::GgmlType::F16 | ds4_quant::GgmlType::Bf16 => {
                ds4_quant::kernels::vec_dot_f32(self.t.ty, raw, x)
            }
            #[cfg(target_arch = "x86_64")]
            ds4_quant::GgmlType::Q8_0 if q8_0_fused() => {
                // SAFETY: AVX2 + FMA checked at run time; `raw` is a whole Q8_0
                // row of `x.len()` values (checked at bind).
                unsafe { q8_0_dot_avx2(raw, x) }
            }
            #[cfg(target_arch = "x86_64")]
            ds4_quant::GgmlType::Q2K if q8_0_fused() => {
                // SAFETY: as above, whole Q2_K blocks.
                unsafe { q2_k_dot_avx2(raw, x) }
            }
            #[cfg(target_arch = "x86_64")]
            ds4_quant::GgmlType::Iq2Xxs if q8_0_fused() => {
                // SAFETY: as above, whole IQ2_XXS blocks.
                unsafe { iq2_xxs_dot_avx2(raw, x) }
            }
            _ => ds4_quant::kernels::vec_dot_f32(ds4_quant::GgmlType::F32, f32_bytes(row), x),
        }
    }

    /// Decode row `r` of matrix `m` when the dot needs it (block formats and
    /// unaligned F32); F16/BF16 are dotted straight from their bytes.
    #[inline]
    fn prep_row<'a>(&'a self, m: usize, r: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        match self.t.ty {
            ds4_quant::GgmlType::F16 | ds4_quant::GgmlType::Bf16 => &[],
            ds4_quant::GgmlType::Q8_0 | ds4_quant::GgmlType::Q2K | ds4_quant::GgmlType::Iq2Xxs
                if q8_0_fused() =>
            {
                &[]
            }
            _ => self.row(m, r, scratch),
        }
    }

    /// `out[t * n_rows + i] = row_{r0+i}(m) · xs[t]` for `n` tokens
    /// `xs: [n, cols]` and the `n_rows = out.len() / n` rows from `r0`.
    fn rows_tokens(&self, m: usize, r0: usize, xs: &[f32], n: usize, out: &mut [f32]) {
        let cols = self.cols;
        let n_rows = out.len() / n.max(1);
        let mut scratch = Vec::new();
        let x = |t: usize| &xs[t * cols..(t + 1) * cols];
        for i in 0..n_rows {
            let raw = self.row_bytes(m, r0 + i);
            let row = self.prep_row(m, r0 + i, &mut scratch);
            let mut t = 0;
            // fused block formats: each weight decoded once per 4 tokens
            // (bit-identical to the one-token kernel)
            while t + 4 <= n {
                match fused4(self.t.ty, raw, [x(t), x(t + 1), x(t + 2), x(t + 3)]) {
                    Some(v) => {
                        for (k, val) in v.into_iter().enumerate() {
                            out[(t + k) * n_rows + i] = val;
                        }
                        t += 4;
                    }
                    None => break,
                }
            }
            for t in t..n {
                out[t * n_rows + i] = self.dot_decoded(row, raw, x(t));
            }
        }
    }

    /// `Y[t] = W_m X[t]` with `X: [n, cols]`, `Y: [n, rows]`: parallel over
    /// chunks of output rows; each row is decoded once for all `n` tokens.
    /// Every (row, token) value is the same kernel call whatever `n` is, so
    /// chunked prefill and decode round identically.
    fn apply(&self, m: usize, x: &[f32], n: usize) -> Vec<f32> {
        let rows = self.rows;
        let mut y = vec![0f32; rows * n];
        if rows == 0 || n == 0 {
            return y;
        }
        let work = rows * self.cols * n;
        let threads = rayon::current_num_threads().max(1);
        if work <= 1 << 15 || rows < 2 {
            self.rows_tokens(m, 0, x, n, &mut y);
            return y;
        }
        // ~8 chunks per thread for balance, at least 8 rows each
        let chunk = rows.div_ceil(threads * 8).max(8);
        if n == 1 {
            y.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(c, out)| self.rows_tokens(m, c * chunk, x, 1, out));
            return y;
        }
        // chunk-major scratch `[chunk][t][row]`, then scattered to `[t][rows]`
        let mut tmp = vec![0f32; rows * n];
        tmp.par_chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(c, out)| self.rows_tokens(m, c * chunk, x, n, out));
        for (c, blk) in tmp.chunks(chunk * n).enumerate() {
            let nr = blk.len() / n;
            for t in 0..n {
                y[t * rows + c * chunk..t * rows + c * chunk + nr]
                    .copy_from_slice(&blk[t * nr..(t + 1) * nr]);
            }
        }
        y
    }
}

/// Whether the fused AVX2 Q8_0 × f32 dot is used (x86_64 with AVX2 + FMA,
/// unless ds4-quant's SIMD is switched off with `DS4_QUANT_NO_SIMD`).
#[inline]
fn q8_0_fused() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            ds4_quant::kernels::simd_available()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Horizontal f64 sum of 8 f32 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_f64(s: std::arch::x86_64::__m256) -> f64 {
    use std::arch::x86_64::*;
    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s));
    let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(s));
    let s2 = _mm256_add_pd(lo, hi);
    let s1 = _mm_add_pd(_mm256_castpd256_pd128(s2), _mm256_extractf128_pd::<1>(s2));
    _mm_cvtsd_f64(_mm_add_sd(s1, _mm_unpackhi_pd(s1, s1)))
}

/// One Q8_0 weight row · f32 activations without a dequantised copy: each
/// weight is `i8 · d` in f32 exactly as ds4-quant's dequantisation computes
/// it, multiplied-added into f32 lanes that are flushed to an f64 sum every
/// 256 values (8 blocks), like ds4-quant's f32 dot.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q8_0_dot_avx2(row: &[u8], x: &[f32]) -> f32 {
    q8_0_dot_n::<1>(row, [x])[0]
}

/// [`q8_0_dot_avx2`] for `N` activation rows sharing each decoded weight:
/// every token sees exactly the operations of the one-token call, so the
/// results are bit-identical to it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q8_0_dot_n<const N: usize>(row: &[u8], xs: [&[f32]; N]) -> [f32; N] {
    use std::arch::x86_64::*;
    let len = xs[0].len();
    debug_assert_eq!(row.len() / 34 * 32, len);
    let nb = len / 32;
    let mut total = [0f64; N];
    let mut b = 0;
    while b < nb {
        let end = (b + 8).min(nb);
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        while b < end {
            let blk = row.as_ptr().add(b * 34);
            let d = half::f16::from_bits(u16::from_le_bytes([*blk, *blk.add(1)])).to_f32();
            let dv = _mm256_set1_ps(d);
            let q = blk.add(2);
            for g in 0..4 {
                let qi = _mm_loadl_epi64(q.add(g * 8) as *const __m128i);
                let w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(qi)), dv);
                for t in 0..N {
                    let xv = _mm256_loadu_ps(xs[t].as_ptr().add(b * 32 + g * 8));
                    if g % 2 == 0 {
                        acc0[t] = _mm256_fmadd_ps(w, xv, acc0[t]);
                    } else {
                        acc1[t] = _mm256_fmadd_ps(w, xv, acc1[t]);
                    }
                }
            }
            b += 1;
        }
        for t in 0..N {
            total[t] += hsum_f64(_mm256_add_ps(acc0[t], acc1[t]));
        }
    }
    total.map(|v| v as f32)
}

/// One Q2_K weight row · f32 activations, fused: each weight is
/// `d·(s&15)·q − dmin·(s>>4)` in f32 as ds4-quant dequantises it, multiplied-
/// added into f32 lanes flushed to f64 once per 256-value block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q2_k_dot_avx2(row: &[u8], x: &[f32]) -> f32 {
    q2_k_dot_n::<1>(row, [x])[0]
}

/// [`q2_k_dot_avx2`] for `N` activation rows (bit-identical per token).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q2_k_dot_n<const N: usize>(row: &[u8], xs: [&[f32]; N]) -> [f32; N] {
    use std::arch::x86_64::*;
    let nb = xs[0].len() / 256;
    debug_assert_eq!(row.len(), nb * 84);
    let three = _mm256_set1_epi32(3);
    let mut total = [0f64; N];
    for b in 0..nb {
        let blk = &row[b * 84..(b + 1) * 84];
        let d = half::f16::from_bits(u16::from_le_bytes([blk[80], blk[81]])).to_f32();
        let dmin = half::f16::from_bits(u16::from_le_bytes([blk[82], blk[83]])).to_f32();
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        for n in 0..2 {
            for j in 0..4 {
                let shift = _mm256_set1_epi32(2 * j as i32);
                for h in 0..4 {
                    let sc = blk[8 * n + 2 * j + h / 2];
                    let dl = _mm256_set1_ps(d * (sc & 0xF) as f32);
                    let ml = _mm256_set1_ps(dmin * (sc >> 4) as f32);
                    let qb =
                        _mm_loadl_epi64(blk.as_ptr().add(16 + 32 * n + 8 * h) as *const __m128i);
                    let q =
                        _mm256_and_si256(_mm256_srlv_epi32(_mm256_cvtepu8_epi32(qb), shift), three);
                    let w = _mm256_sub_ps(_mm256_mul_ps(dl, _mm256_cvtepi32_ps(q)), ml);
                    let off = b * 256 + 128 * n + 32 * j + 8 * h;
                    for t in 0..N {
                        let xv = _mm256_loadu_ps(xs[t].as_ptr().add(off));
                        if h % 2 == 0 {
                            acc0[t] = _mm256_fmadd_ps(w, xv, acc0[t]);
                        } else {
                            acc1[t] = _mm256_fmadd_ps(w, xv, acc1[t]);
                        }
                    }
                }
            }
        }
        for t in 0..N {
            total[t] += hsum_f64(_mm256_add_ps(acc0[t], acc1[t]));
        }
    }
    total.map(|v| v as f32)
}

/// One IQ2_XXS weight row · f32 activations, fused: each weight is
/// `±d·(0.5+s)·0.25·grid` in f32 as ds4-quant dequantises it, multiplied-added
/// into f32 lanes flushed to f64 once per 256-value block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn iq2_xxs_dot_avx2(row: &[u8], x: &[f32]) -> f32 {
    iq2_xxs_dot_n::<1>(row, [x])[0]
}

/// [`iq2_xxs_dot_avx2`] for `N` activation rows (bit-identical per token).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn iq2_xxs_dot_n<const N: usize>(row: &[u8], xs: [&[f32]; N]) -> [f32; N] {
    use ds4_quant::tables::{IQ2XXS_GRID, KSIGNS_IQ2XS};
    use std::arch::x86_64::*;
    let nb = xs[0].len() / 256;
    debug_assert_eq!(row.len(), nb * 66);
    let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let sign = _mm256_set1_epi32(i32::MIN);
    let mut total = [0f64; N];
    for b in 0..nb {
        let blk = &row[b * 66..(b + 1) * 66];
        let d = half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        for g in 0..8 {
            let o = 2 + 8 * g;
            let a1 = u32::from_le_bytes([blk[o + 4], blk[o + 5], blk[o + 6], blk[o + 7]]);
            let db = _mm256_set1_ps(d * (0.5 + (a1 >> 28) as f32) * 0.25);
            for k in 0..4 {
                let grid = IQ2XXS_GRID[blk[o + k] as usize];
                let signs = KSIGNS_IQ2XS[((a1 >> (7 * k)) & 0x7F) as usize];
                let gv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(grid as i64)));
                let v = _mm256_mul_ps(db, gv);
                let neg = _mm256_cmpeq_epi32(
                    _mm256_and_si256(_mm256_set1_epi32(signs as i32), bits),
                    bits,
                );
                let w = _mm256_xor_ps(v, _mm256_castsi256_ps(_mm256_and_si256(neg, sign)));
                let off = b * 256 + 32 * g + 8 * k;
                for t in 0..N {
                    let xv = _mm256_loadu_ps(xs[t].as_ptr().add(off));
                    if k % 2 == 0 {
                        acc0[t] = _mm256_fmadd_ps(w, xv, acc0[t]);
                    } else {
                        acc1[t] = _mm256_fmadd_ps(w, xv, acc1[t]);
                    }
                }
            }
        }
        for t in 0..N {
            total[t] += hsum_f64(_mm256_add_ps(acc0[t], acc1[t]));
        }
    }
    total.map(|v| v as f32)
}

/// Four tokens at once through the fused kernel of `ty`, if there is one.
#[inline]
fn fused4(ty: ds4_quant::GgmlType, raw: &[u8], xs: [&[f32]; 4]) -> Option<[f32; 4]> {
    #[cfg(target_arch = "x86_64")]
    if q8_0_fused() {
        // SAFETY: AVX2 + FMA checked at run time; `raw` is a whole row of
        // `xs[t].len()` values of `ty` (checked at bind).
        unsafe {
            return match ty {
                ds4_quant::GgmlType::Q8_0 => Some(q8_0_dot_n::<4>(raw, xs)),
                ds4_quant::GgmlType::Q2K => Some(q2_k_dot_n::<4>(raw, xs)),
                ds4_quant::GgmlType::Iq2Xxs => Some(iq2_xxs_dot_n::<4>(raw, xs)),
                _ => None,
            };
        }
    }
    let _ = (ty, raw, xs);
    None
}

/// The bytes of an f32 slice (native little-endian on every supported target).
#[inline]
fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: u8 has no alignment or validity requirements; same memory, 4x the length.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn rms_row(x: &mut [f32], w: Option<&[f32]>, eps: f32) {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let r = 1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt();
    match w {
        Some(w) => x.iter_mut().zip(w).for_each(|(v, &g)| *v = *v * r * g),
        None => x.iter_mut().for_each(|v| *v *= r),
    }
}

#[inline]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

#[inline]
fn softplus(z: f32) -> f32 {
    if z > 20.0 {
        z
    } else if z < -20.0 {
        z.exp()
    } else {
        z.exp().ln_1p()
    }
}

#[inline]
fn silu(z: f32) -> f32 {
    z / (1.0 + (-z).exp())
}

/// `hc_pre` mixing of one token: returns `(pre, post, comb)` (spec §2.2).
pub fn hc_weights(
    mix: &[f32],
    base: &[f32],
    scale: &[f32],
    n: usize,
    iters: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let pre: Vec<f32> = (0..n)
        .map(|s| sigmoid(mix[s] * scale[0] + base[s]) + eps)
        .collect();
    let post: Vec<f32> = (0..n)
        .map(|s| 2.0 * sigmoid(mix[n + s] * scale[1] + base[n + s]))
        .collect();
    let mut c: Vec<f32> = (0..n * n)
        .map(|i| mix[2 * n + i] * scale[2] + base[2 * n + i])
        .collect();
    sinkhorn(&mut c, n, iters, eps);
    (pre, post, c)
}

/// Sinkhorn-Knopp in the spec order: row softmax, +eps, column norm, then
/// `iters-1` × (row norm, column norm). `c` is row-major `n×n`.
pub fn sinkhorn(c: &mut [f32], n: usize, iters: usize, eps: f32) {
    for j in 0..n {
        let row = &mut c[j * n..(j + 1) * n];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0f32;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        for v in row.iter_mut() {
            *v = *v / s + eps;
        }
    }
    let col_norm = |c: &mut [f32]| {
        for k in 0..n {
            let s: f32 = (0..n).map(|j| c[j * n + k]).sum();
            for j in 0..n {
                c[j * n + k] /= s + eps;
            }
        }
    };
    col_norm(c);
    for _ in 1..iters {
        for j in 0..n {
            let row = &mut c[j * n..(j + 1) * n];
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s + eps);
        }
        col_norm(c);
    }
}

/// Indices of the `k` largest values, ties to the lower index, in descending order.
pub fn topk_desc(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| {
        v[b].partial_cmp(&v[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}

fn swiglu_inplace(g: &mut [f32], u: &[f32], limit: f32, w: f32) {
    for (gv, &uv) in g.iter_mut().zip(u) {
        let gc = gv.min(limit);
        let uc = uv.clamp(-limit, limit);
        *gv = w * (silu(gc) * uc);
    }
}

impl Backend for Cpu {
    type Buf = Vec<f32>;
    type Mat = CpuMat;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn bind(&self, t: &TensorData) -> Result<CpuMat> {
        if !decodable(t.ty) {
            bail!(
                "weights of type {} are not supported by the CPU backend",
                t.ty
            );
        }
        if t.dims.is_empty() || t.dims.len() > 3 {
            bail!("weight with dims {:?} is not a matrix", t.dims);
        }
        let cols = t.dims[0];
        let rows = t.dims.get(1).copied().unwrap_or(1);
        let mats = t.dims.get(2).copied().unwrap_or(1);
        Ok(CpuMat {
            t: t.clone(),
            rows,
            cols,
            mats,
        })
    }

    fn bind_vec(&self, t: &TensorData) -> Result<Vec<f32>> {
        if !decodable(t.ty) {
            bail!("vector of type {} is not supported", t.ty);
        }
        let mut v = vec![0f32; t.n_elems()];
        decode_row(t.ty, t.bytes(), &mut v)?;
        Ok(v)
    }

    fn upload(&self, x: &[f32]) -> Vec<f32> {
        x.to_vec()
    }
    fn download(&self, b: &Vec<f32>) -> Vec<f32> {
        b.clone()
    }
    fn zeros(&self, n: usize) -> Vec<f32> {
        vec![0.0; n]
    }
    fn len(&self, b: &Vec<f32>) -> usize {
        b.len()
    }

    fn embed_hc(&self, table: &CpuMat, ids: &[u32], n_hc: usize) -> Result<Vec<f32>> {
        let d = table.cols;
        let mut out = vec![0f32; ids.len() * n_hc * d];
        let mut scratch = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= table.rows {
                bail!("token id {id} outside the vocabulary of {}", table.rows);
            }
            let row = table.row(0, id, &mut scratch);
            for s in 0..n_hc {
                out[(i * n_hc + s) * d..(i * n_hc + s + 1) * d].copy_from_slice(row);
            }
        }
        Ok(out)
    }

    fn matmul(&self, w: &CpuMat, x: &Vec<f32>, rows: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), rows * w.cols);
        w.apply(0, x, rows)
    }

    fn matmul_grouped(&self, w: &CpuMat, x: &Vec<f32>, rows: usize, groups: usize) -> Vec<f32> {
        let out_g = w.rows / groups;
        let cols = w.cols;
        let mut y = vec![0f32; rows * w.rows];
        // parallel over (token, group, row chunk): one chunk's rows share a group
        let chunk = out_g
            .div_ceil(rayon::current_num_threads().max(1) * 4)
            .max(8);
        y.par_chunks_mut(w.rows).enumerate().for_each(|(t, yt)| {
            yt.par_chunks_mut(out_g).enumerate().for_each(|(g, yg)| {
                let xg = &x[(t * groups + g) * cols..(t * groups + g + 1) * cols];
                yg.par_chunks_mut(chunk)
                    .enumerate()
                    .for_each(|(c, out)| w.rows_tokens(0, g * out_g + c * chunk, xg, 1, out));
            });
        });
        y
    }

    fn rms_norm(&self, x: &mut Vec<f32>, width: usize, w: Option<&Vec<f32>>, eps: f32) {
        let w = w.map(|v| v.as_slice());
        if x.len() >= PAR_MIN * width {
            x.par_chunks_mut(width).for_each(|r| rms_row(r, w, eps));
        } else {
            x.chunks_mut(width).for_each(|r| rms_row(r, w, eps));
        }
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        heads: usize,
        head_dim: usize,
        positions: &[usize],
        table: &RopeTable,
        inverse: bool,
        precise: bool,
    ) {
        let rd = table.inv_f32.len() * 2;
        let tok = heads * head_dim;
        x.par_chunks_mut(tok)
            .zip(positions.par_iter())
            .for_each(|(xt, &p)| {
                let cs: Vec<(f32, f32)> =
                    (0..rd / 2).map(|j| table.cos_sin(p, j, precise)).collect();
                for h in 0..heads {
                    let tail = &mut xt[h * head_dim + head_dim - rd..(h + 1) * head_dim];
                    for (j, &(c, s)) in cs.iter().enumerate() {
                        let s = if inverse { -s } else { s };
                        let (u, v) = (tail[2 * j], tail[2 * j + 1]);
                        tail[2 * j] = u * c - v * s;
                        tail[2 * j + 1] = v * c + u * s;
                    }
                }
            });
    }

    fn fp8_sim(&self, x: &mut Vec<f32>, width: usize, nope: usize) {
        x.chunks_mut(width)
            .for_each(|r| crate::quantsim::fp8_round_trip(&mut r[..nope]));
    }

    fn f16_round(&self, x: &mut Vec<f32>) {
        crate::quantsim::f16_round(x);
    }

    fn hadamard_fp4(&self, x: &mut Vec<f32>, width: usize) {
        x.par_chunks_mut(width).for_each(|r| {
            crate::quantsim::hadamard_inplace(r);
            crate::quantsim::fp4_round_trip(r);
        });
    }

    fn hc_pre(
        &self,
        x: &Vec<f32>,
        rows: usize,
        cfg: &Config,
        fn_: &CpuMat,
        base: &Vec<f32>,
        scale: &Vec<f32>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (n, d) = (cfg.n_hc, cfg.dim);
        let mut normed = x.clone();
        self.rms_norm(&mut normed, n * d, None, cfg.rms_eps);
        let mix = fn_.apply(0, &normed, rows);
        let m = cfg.hc_mix();
        let mut y = vec![0f32; rows * d];
        let mut post = vec![0f32; rows * n];
        let mut comb = vec![0f32; rows * n * n];
        for t in 0..rows {
            let (pre, po, c) = hc_weights(
                &mix[t * m..(t + 1) * m],
                base,
                scale,
                n,
                cfg.sinkhorn_iters,
                cfg.hc_eps,
            );
            let yt = &mut y[t * d..(t + 1) * d];
            for (s, &pw) in pre.iter().enumerate() {
                let xs = &x[(t * n + s) * d..(t * n + s + 1) * d];
                for (yv, &xv) in yt.iter_mut().zip(xs) {
                    *yv += pw * xv;
                }
            }
            post[t * n..(t + 1) * n].copy_from_slice(&po);
            comb[t * n * n..(t + 1) * n * n].copy_from_slice(&c);
        }
        (y, post, comb)
    }

    fn hc_post(
        &self,
        x: &mut Vec<f32>,
        o: &Vec<f32>,
        post: &Vec<f32>,
        comb: &Vec<f32>,
        cfg: &Config,
    ) {
        let (n, d) = (cfg.n_hc, cfg.dim);
        x.par_chunks_mut(n * d).enumerate().for_each(|(t, xt)| {
            let old = xt.to_vec();
            let ot = &o[t * d..(t + 1) * d];
            for k in 0..n {
                let pk = post[t * n + k];
                let out = &mut xt[k * d..(k + 1) * d];
                for i in 0..d {
                    let mut acc = pk * ot[i];
                    for j in 0..n {
                        acc += comb[t * n * n + j * n + k] * old[j * d + i];
                    }
                    out[i] = acc;
                }
            }
        });
    }

    fn hc_head(
        &self,
        x: &Vec<f32>,
        rows: usize,
        cfg: &Config,
        fn_: &CpuMat,
        base: &Vec<f32>,
        scale: &Vec<f32>,
    ) -> Vec<f32> {
        let (n, d) = (cfg.n_hc, cfg.dim);
        let mut normed = x.clone();
        self.rms_norm(&mut normed, n * d, None, cfg.rms_eps);
        let mix = fn_.apply(0, &normed, rows);
        let mut y = vec![0f32; rows * d];
        for t in 0..rows {
            for s in 0..n {
                let w = sigmoid(mix[t * n + s] * scale[0] + base[s]) + cfg.hc_eps;
                let xs = &x[(t * n + s) * d..(t * n + s + 1) * d];
                for (yv, &xv) in y[t * d..(t + 1) * d].iter_mut().zip(xs) {
                    *yv += w * xv;
                }
            }
        }
        y
    }

    fn add(&self, a: &mut Vec<f32>, b: &Vec<f32>) {
        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    }

    fn scale(&self, a: &mut Vec<f32>, s: f32) {
        a.iter_mut().for_each(|x| *x *= s);
    }

    fn add_position_rows(
        &self,
        x: &mut Vec<f32>,
        width: usize,
        table: &Vec<f32>,
        positions: &[usize],
    ) {
        let n = table.len() / width;
        for (r, &p) in x.chunks_mut(width).zip(positions) {
            let row = &table[(p % n) * width..(p % n + 1) * width];
            r.iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
    }

    fn slice_rows(&self, b: &Vec<f32>, width: usize, start: usize, n: usize) -> Vec<f32> {
        b[start * width..(start + n) * width].to_vec()
    }

    fn append(&self, dst: &mut Vec<f32>, src: &Vec<f32>) {
        dst.extend_from_slice(src);
    }

    fn compress(
        &self,
        f: &mut CompFrontier<Self>,
        kv: &Vec<f32>,
        score: &Vec<f32>,
        positions: &[usize],
    ) -> (Vec<f32>, Vec<usize>) {
        let (r, w) = (f.ratio, f.width);
        let in_w = if f.overlap { 2 * w } else { w };
        let mut out = Vec::new();
        let mut wins = Vec::new();
        for (i, &p) in positions.iter().enumerate() {
            let slot = p % r;
            let cur = if f.overlap { r } else { 0 };
            // current-window slot rows are `in_w` wide, stored at row (cur+slot) of an in_w-strided buffer
            let dst = (cur + slot) * in_w;
            f.kv[dst..dst + in_w].copy_from_slice(&kv[i * in_w..(i + 1) * in_w]);
            f.score[dst..dst + in_w].copy_from_slice(&score[i * in_w..(i + 1) * in_w]);
            if (p + 1) % r != 0 {
                continue;
            }
            let mut pooled = vec![0f32; w];
            for c in 0..w {
                // candidates: (score, kv) pairs
                let mut m = f32::NEG_INFINITY;
                let cand = |j: usize| -> (f32, f32) {
                    if f.overlap {
                        if j < r {
                            // previous window, A lane (first w of the stored row)
                            (f.score[j * in_w + c], f.kv[j * in_w + c])
                        } else {
                            // current window, B lane
                            let row = (r + j - r) * in_w;
                            (f.score[row + w + c], f.kv[row + w + c])
                        }
                    } else {
                        (f.score[j * in_w + c], f.kv[j * in_w + c])
                    }
                };
                let (lo, hi) = if f.overlap {
                    (if f.has_prev { 0 } else { r }, 2 * r)
                } else {
                    (0, r)
                };
                for j in lo..hi {
                    m = m.max(cand(j).0);
                }
                let mut den = 0f32;
                let mut num = 0f32;
                for j in lo..hi {
                    let (s, v) = cand(j);
                    let e = (s - m).exp();
                    den += e;
                    num += e * v;
                }
                pooled[c] = num / den;
            }
            out.extend_from_slice(&pooled);
            wins.push((p + 1) / r - 1);
            if f.overlap {
                // current window becomes the previous one
                let (prev, cur) = f.kv.split_at_mut(r * in_w);
                prev.copy_from_slice(&cur[..r * in_w]);
                let (prev, cur) = f.score.split_at_mut(r * in_w);
                prev.copy_from_slice(&cur[..r * in_w]);
                f.has_prev = true;
            }
        }
        (out, wins)
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        heads: usize,
        hd: usize,
        raw: &Vec<f32>,
        comp: &Vec<f32>,
        vis: &Visibility,
        sinks: &Vec<f32>,
        scale: f32,
    ) -> Vec<f32> {
        let n_raw = raw.len() / hd;
        let tok = heads * hd;
        let mut o = vec![0f32; q.len()];
        let row = |r: u32| -> &[f32] {
            let r = r as usize;
            if r < n_raw {
                &raw[r * hd..(r + 1) * hd]
            } else {
                let c = r - n_raw;
                &comp[c * hd..(c + 1) * hd]
            }
        };
        o.par_chunks_mut(hd).enumerate().for_each(|(th, oh)| {
            let (t, h) = (th / heads, th % heads);
            let qh = &q[t * tok + h * hd..t * tok + (h + 1) * hd];
            let list = &vis.rows[vis.offsets[t] as usize..vis.offsets[t + 1] as usize];
            let s: Vec<f32> = list.iter().map(|&r| dot(qh, row(r)) * scale).collect();
            let z = sinks[h];
            let m = s.iter().fold(z, |a, &b| a.max(b));
            let mut den = (z - m).exp();
            let e: Vec<f32> = s.iter().map(|&v| (v - m).exp()).collect();
            den += e.iter().sum::<f32>();
            for (&r, &ev) in list.iter().zip(&e) {
                let p = ev / den;
                for (ov, &kv) in oh.iter_mut().zip(row(r)) {
                    *ov += p * kv;
                }
            }
        });
        o
    }

    fn indexer_scores(
        &self,
        q: &Vec<f32>,
        heads: usize,
        dim: usize,
        w: &Vec<f32>,
        rows: &Vec<f32>,
        n_valid: &[usize],
    ) -> Vec<f32> {
        let n = rows.len() / dim;
        let mut out = vec![f32::NEG_INFINITY; n_valid.len() * n];
        out.par_chunks_mut(n.max(1))
            .enumerate()
            .for_each(|(t, st)| {
                if n == 0 {
                    return;
                }
                let qt = &q[t * heads * dim..(t + 1) * heads * dim];
                let wt = &w[t * heads..(t + 1) * heads];
                for (r, sv) in st.iter_mut().enumerate().take(n_valid[t].min(n)) {
                    let k = &rows[r * dim..(r + 1) * dim];
                    let mut acc = 0f32;
                    for h in 0..heads {
                        let d = dot(&qt[h * dim..(h + 1) * dim], k);
                        acc += wt[h] * d.max(0.0);
                    }
                    *sv = acc;
                }
            });
        out
    }

    fn route(
        &self,
        logits: &Vec<f32>,
        n_exp: usize,
        k: usize,
        bias: Option<&Vec<f32>>,
        hash: Option<&[i32]>,
        scale: f32,
    ) -> Result<Routing> {
        let t_n = logits.len() / n_exp;
        let mut experts = Vec::with_capacity(t_n * k);
        let mut weights = Vec::with_capacity(t_n * k);
        for t in 0..t_n {
            let sc: Vec<f32> = logits[t * n_exp..(t + 1) * n_exp]
                .iter()
                .map(|&l| softplus(l).sqrt())
                .collect();
            let sel: Vec<usize> = match hash {
                Some(h) => {
                    let ids = &h[t * k..(t + 1) * k];
                    let mut v = Vec::with_capacity(k);
                    for &e in ids {
                        if e < 0 || e as usize >= n_exp {
                            bail!("hash routing table names expert {e}, model has {n_exp}");
                        }
                        v.push(e as usize);
                    }
                    v
                }
                None => {
                    let biased: Vec<f32> = match bias {
                        Some(b) => sc.iter().zip(b).map(|(s, b)| s + b).collect(),
                        None => sc.clone(),
                    };
                    topk_desc(&biased, k)
                }
            };
            let sum: f32 = sel.iter().map(|&e| sc[e]).sum();
            for &e in &sel {
                experts.push(e as u32);
                weights.push(scale * sc[e] / sum);
            }
        }
        Ok(Routing {
            k,
            experts,
            weights,
        })
    }

    fn moe(
        &self,
        x: &Vec<f32>,
        routing: &Routing,
        gate: &CpuMat,
        up: &CpuMat,
        down: &CpuMat,
        limit: f32,
    ) -> Vec<f32> {
        let d = gate.cols;
        let k = routing.k;
        let t_n = x.len() / d;
        // tokens of each selected expert (only selected experts are computed;
        // each expert's rows are shared by all its tokens of the batch)
        let mut by_e: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for s in 0..t_n * k {
            by_e.entry(routing.experts[s] as usize).or_default().push(s);
        }
        // experts in parallel (each also parallel over its rows when large)
        let by_e: Vec<(usize, Vec<usize>)> = by_e.into_iter().collect();
        let ys: Vec<Vec<f32>> = by_e
            .par_iter()
            .map(|(e, list)| {
                let (e, n) = (*e, list.len());
                let mut xe = Vec::with_capacity(n * d);
                for &s in list {
                    let t = s / k;
                    xe.extend_from_slice(&x[t * d..(t + 1) * d]);
                }
                let mut g = gate.apply(e, &xe, n);
                let u = up.apply(e, &xe, n);
                let f = gate.rows;
                for (j, &s) in list.iter().enumerate() {
                    swiglu_inplace(
                        &mut g[j * f..(j + 1) * f],
                        &u[j * f..(j + 1) * f],
                        limit,
                        routing.weights[s],
                    );
                }
                down.apply(e, &g, n)
            })
            .collect();
        // per (token, slot) expert outputs, summed per token in slot order below
        let mut slots = vec![0f32; t_n * k * d];
        for ((_, list), y) in by_e.iter().zip(&ys) {
            for (j, &s) in list.iter().enumerate() {
                slots[s * d..(s + 1) * d].copy_from_slice(&y[j * d..(j + 1) * d]);
            }
        }
        let mut out = vec![0f32; t_n * d];
        for t in 0..t_n {
            let ot = &mut out[t * d..(t + 1) * d];
            for i in 0..k {
                let y = &slots[(t * k + i) * d..(t * k + i + 1) * d];
                ot.iter_mut().zip(y).for_each(|(a, b)| *a += b);
            }
        }
        out
    }

    fn swiglu_ffn(
        &self,
        x: &Vec<f32>,
        rows: usize,
        gate: &CpuMat,
        up: &CpuMat,
        down: &CpuMat,
        limit: f32,
    ) -> Vec<f32> {
        let mut g = gate.apply(0, x, rows);
        let u = up.apply(0, x, rows);
        swiglu_inplace(&mut g, &u, limit, 1.0);
        down.apply(0, &g, rows)
    }

    fn buf_bytes(&self, b: &Vec<f32>) -> usize {
        b.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused Q8_0 × f32 dot agrees with ds4-quant's reference (block
    /// dequantisation, f64 sum) to f32 accumulation error, for row lengths
    /// that are and are not a multiple of the 8-block flush span.
    #[test]
    fn fused_q8_0_dot_matches_reference() {
        if !q8_0_fused() {
            return; // no AVX2 + FMA here: the fused kernel is never used
        }
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for blocks in [1usize, 7, 8, 9, 13, 128] {
            let mut row = Vec::with_capacity(blocks * 34);
            for _ in 0..blocks {
                let d = ds4_quant::f32_to_f16(((rnd() % 1000) as f32 + 1.0) * 1e-5);
                row.extend_from_slice(&d.to_le_bytes());
                row.extend((0..32).map(|_| rnd() as u8));
            }
            let x: Vec<f32> = (0..blocks * 32)
                .map(|_| (rnd() % 20001) as f32 / 10000.0 - 1.0)
                .collect();
            let want = ds4_quant::reference::vec_dot_f32(ds4_quant::GgmlType::Q8_0, &row, &x);
            let mut w = vec![0f32; x.len()];
            ds4_quant::dequantize_row(ds4_quant::GgmlType::Q8_0, &row, &mut w).unwrap();
            let mag: f64 = w.iter().zip(&x).map(|(a, b)| (a * b).abs() as f64).sum();
            // SAFETY: q8_0_fused() checked AVX2 + FMA; row holds `blocks` whole blocks.
            let got = unsafe { q8_0_dot_avx2(&row, &x) };
            assert!(
                ((got - want) as f64).abs() <= 1e-6 * mag,
                "{blocks} blocks: {got} vs {want} (Σ|wx| = {mag})"
            );
        }
    }

    /// The fused Q2_K and IQ2_XXS dots agree with ds4-quant's reference.
    #[test]
    fn fused_q2_k_and_iq2_xxs_dots_match_reference() {
        if !q8_0_fused() {
            return;
        }
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for ty in [ds4_quant::GgmlType::Q2K, ds4_quant::GgmlType::Iq2Xxs] {
            for blocks in [1usize, 3, 16] {
                let n = blocks * 256;
                let rb = ds4_quant::row_bytes(ty, n);
                let mut row: Vec<u8> = (0..rb).map(|_| rnd() as u8).collect();
                for b in 0..blocks {
                    // finite scales: d (and dmin) as small positive f16s
                    let (d_off, bsz) = if ty == ds4_quant::GgmlType::Q2K {
                        (80, 84)
                    } else {
                        (0, 66)
                    };
                    for k in 0..if ty == ds4_quant::GgmlType::Q2K { 2 } else { 1 } {
                        let h = ds4_quant::f32_to_f16(((rnd() % 1000) as f32 + 1.0) * 1e-4);
                        let o = b * bsz + d_off + 2 * k;
                        row[o..o + 2].copy_from_slice(&h.to_le_bytes());
                    }
                }
                let x: Vec<f32> = (0..n)
                    .map(|_| (rnd() % 20001) as f32 / 10000.0 - 1.0)
                    .collect();
                let want = ds4_quant::reference::vec_dot_f32(ty, &row, &x);
                let mut w = vec![0f32; n];
                ds4_quant::dequantize_row(ty, &row, &mut w).unwrap();
                let mag: f64 = w.iter().zip(&x).map(|(a, b)| (a * b).abs() as f64).sum();
                // SAFETY: AVX2 + FMA checked; whole blocks.
                let got = unsafe {
                    if ty == ds4_quant::GgmlType::Q2K {
                        q2_k_dot_avx2(&row, &x)
                    } else {
                        iq2_xxs_dot_avx2(&row, &x)
                    }
                };
                assert!(
                    ((got - want) as f64).abs() <= 1e-6 * mag,
                    "{ty} {blocks} blocks: {got} vs {want} (Σ|wx| = {mag})"
                );
            }
        }
    }

    /// The AVX f32 dot is bit-identical to the scalar one (lengths with and
    /// without a tail, values of mixed magnitude).
    #[test]
    fn avx_dot_equals_scalar_dot() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in [0usize, 1, 7, 8, 9, 255, 256, 1000] {
            let a: Vec<f32> = (0..n)
                .map(|_| ((rnd() % 2001) as f32 - 1000.0) * 10f32.powi((rnd() % 7) as i32 - 3))
                .collect();
            let b: Vec<f32> = (0..n).map(|_| (rnd() % 20001) as f32 / 1e4 - 1.0).collect();
            assert_eq!(
                dot(&a, &b).to_bits(),
                dot_scalar(&a, &b).to_bits(),
                "n = {n}"
            );
        }
    }

    /// The 4-token fused kernels give bit for bit the one-token results (so a
    /// prefill batch and token-by-token decoding round identically).
    #[test]
    fn four_token_fused_dots_equal_one_token_dots() {
        if !q8_0_fused() {
            return;
        }
        let mut seed = 0x853c49e6748fea9bu64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (ty, d_offs, bsz) in [
            (ds4_quant::GgmlType::Q8_0, &[0usize][..], 34usize),
            (ds4_quant::GgmlType::Q2K, &[80, 82][..], 84),
            (ds4_quant::GgmlType::Iq2Xxs, &[0][..], 66),
        ] {
            let n = 768;
            let rb = ds4_quant::row_bytes(ty, n);
            let mut row: Vec<u8> = (0..rb).map(|_| rnd() as u8).collect();
            for b in 0..rb / bsz {
                for &o in d_offs {
                    let h = ds4_quant::f32_to_f16(((rnd() % 1000) as f32 + 1.0) * 1e-4);
                    row[b * bsz + o..b * bsz + o + 2].copy_from_slice(&h.to_le_bytes());
                }
            }
            let xs: Vec<Vec<f32>> = (0..4)
                .map(|_| (0..n).map(|_| (rnd() % 20001) as f32 / 1e4 - 1.0).collect())
                .collect();
            let four = fused4(ty, &row, [&xs[0], &xs[1], &xs[2], &xs[3]]).unwrap();
            for t in 0..4 {
                // SAFETY: AVX2 + FMA checked; whole blocks.
                let one = unsafe {
                    match ty {
                        ds4_quant::GgmlType::Q8_0 => q8_0_dot_avx2(&row, &xs[t]),
                        ds4_quant::GgmlType::Q2K => q2_k_dot_avx2(&row, &xs[t]),
                        _ => iq2_xxs_dot_avx2(&row, &xs[t]),
                    }
                };
                assert_eq!(four[t].to_bits(), one.to_bits(), "{ty} token {t}");
            }
        }
    }
}
