//! The CPU backend: f32 buffers in host memory, rayon over rows.

use super::math::{hc_weights, rms_row, sigmoid, softplus, swiglu_inplace, topk_desc};
use super::simd::{dot, f32_bytes, fused4, q8_0_fused};
#[cfg(target_arch = "x86_64")]
use super::simd::{iq2_xxs_dot_avx2, q2_k_dot_avx2, q8_0_dot_avx2};
use super::{Backend, CompGeom, CompVis, HashRoute, Pos, RopePos, RopeTable, Routing, Seq};
use crate::config::Config;
use crate::weights::{decodable, decode_row, TensorData};
use anyhow::{bail, ensure, Result};
use rayon::prelude::*;

const PAR_MIN: usize = 64;

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

/// A CPU KV store: `rows × width` f32 values (f16 storage is simulated by
/// the model's rounding; the CPU keeps f32).
#[derive(Clone, Debug)]
pub struct CpuKv {
    pub data: Vec<f32>,
    pub rows: usize,
    pub width: usize,
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

impl Cpu {
    fn hc_mix(&self, x: &[f32], rows: usize, cfg: &Config, fn_: &CpuMat) -> Vec<f32> {
        let (n, d) = (cfg.n_hc, cfg.dim);
        let mut normed = x.to_vec();
        rms_rows(&mut normed, n * d, None, cfg.rms_eps);
        fn_.apply(0, &normed, rows)
    }
}

fn rms_rows(x: &mut [f32], width: usize, w: Option<&[f32]>, eps: f32) {
    if x.len() >= PAR_MIN * width {
        x.par_chunks_mut(width).for_each(|r| rms_row(r, w, eps));
    } else {
        x.chunks_mut(width).for_each(|r| rms_row(r, w, eps));
    }
}

/// Row `q` (an absolute position) of a compressor input: from the chunk when
/// it lies inside it, else from the frontier ring.
#[inline]
fn comp_row<'a>(
    q: usize,
    seq: Seq,
    chunk: &'a [f32],
    ring: &'a [f32],
    ring_rows: usize,
    in_w: usize,
) -> &'a [f32] {
    if q >= seq.p0 {
        let r = seq.row0 + q - seq.p0;
        &chunk[r * in_w..(r + 1) * in_w]
    } else {
        let s = q % ring_rows;
        &ring[s * in_w..(s + 1) * in_w]
    }
}

impl Backend for Cpu {
    type Buf = Vec<f32>;
    type Idx = Vec<i32>;
    type Kv = CpuKv;
    type Mat = CpuMat;
    type Rope = RopeTable;

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

    fn bind_idx(&self, t: &TensorData) -> Result<Vec<i32>> {
        if t.ty != ds4_quant::GgmlType::I32 {
            bail!("index tensor of type {}, expected I32", t.ty);
        }
        Ok(t.bytes()
            .chunks_exact(4)
            .take(t.n_elems())
            .map(|q| i32::from_le_bytes([q[0], q[1], q[2], q[3]]))
            .collect())
    }

    fn bind_rope(&self, t: &RopeTable) -> Result<RopeTable> {
        Ok(t.clone())
    }

    fn upload(&self, x: &[f32]) -> Result<Vec<f32>> {
        Ok(x.to_vec())
    }
    fn upload_idx(&self, x: &[i32]) -> Result<Vec<i32>> {
        Ok(x.to_vec())
    }
    fn download(&self, b: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(b.clone())
    }
    fn download_idx(&self, b: &Vec<i32>) -> Result<Vec<i32>> {
        Ok(b.clone())
    }
    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn len(&self, b: &Vec<f32>) -> usize {
        b.len()
    }
    fn buf_bytes(&self, b: &Vec<f32>) -> usize {
        b.len() * 4
    }
    fn slice_rows(&self, b: &Vec<f32>, width: usize, start: usize, n: usize) -> Result<Vec<f32>> {
        ensure!(
            (start + n) * width <= b.len(),
            "rows {start}..{} outside a buffer of {} rows",
            start + n,
            b.len() / width.max(1)
        );
        Ok(b[start * width..(start + n) * width].to_vec())
    }
    fn gather_rows(&self, b: &Vec<f32>, width: usize, rows: &[usize]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(rows.len() * width);
        for &r in rows {
            ensure!((r + 1) * width <= b.len(), "row {r} outside the buffer");
            out.extend_from_slice(&b[r * width..(r + 1) * width]);
        }
        Ok(out)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn kv_alloc(&self, rows: usize, width: usize, _half: bool) -> Result<CpuKv> {
        let n = rows
            .checked_mul(width)
            .ok_or_else(|| anyhow::anyhow!("KV store of {rows} x {width} overflows"))?;
        // vec![0.0; n] is a calloc: untouched capacity costs no memory
        Ok(CpuKv {
            data: vec![0.0; n],
            rows,
            width,
        })
    }
    fn kv_bytes(&self, k: &CpuKv) -> usize {
        k.data.len() * 4
    }
    fn kv_clone(&self, k: &CpuKv) -> Result<CpuKv> {
        Ok(k.clone())
    }
    fn buf_clone(&self, b: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(b.clone())
    }
    fn kv_write(
        &self,
        dst: &mut CpuKv,
        dst_row: usize,
        src: &Vec<f32>,
        src_row: usize,
        n: usize,
        ring: bool,
    ) -> Result<()> {
        let w = dst.width;
        ensure!(
            (src_row + n) * w <= src.len(),
            "KV write reads rows past its source"
        );
        if !ring {
            ensure!(
                dst_row + n <= dst.rows,
                "KV store full: {} rows, writing {}..{}",
                dst.rows,
                dst_row,
                dst_row + n
            );
        }
        for i in 0..n {
            let d = if ring {
                (dst_row + i) % dst.rows
            } else {
                dst_row + i
            };
            dst.data[d * w..(d + 1) * w]
                .copy_from_slice(&src[(src_row + i) * w..(src_row + i + 1) * w]);
        }
        Ok(())
    }
    fn kv_read(&self, k: &CpuKv, row: usize, n: usize) -> Result<Vec<f32>> {
        ensure!(row + n <= k.rows, "KV read past the store");
        Ok(k.data[row * k.width..(row + n) * k.width].to_vec())
    }

    fn embed_hc(
        &self,
        table: &CpuMat,
        _ids: &Vec<i32>,
        host_ids: &[u32],
        n_hc: usize,
    ) -> Result<Vec<f32>> {
        let d = table.cols;
        let mut out = vec![0f32; host_ids.len() * n_hc * d];
        let mut scratch = Vec::new();
        for (i, &id) in host_ids.iter().enumerate() {
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

    fn matmul(&self, w: &CpuMat, x: &Vec<f32>, rows: usize) -> Result<Vec<f32>> {
        ensure!(
            x.len() == rows * w.cols,
            "matmul input of {} values for {rows} rows of {}",
            x.len(),
            w.cols
        );
        Ok(w.apply(0, x, rows))
    }

    fn matmul_grouped(
        &self,
        w: &CpuMat,
        x: &Vec<f32>,
        rows: usize,
        groups: usize,
    ) -> Result<Vec<f32>> {
        ensure!(
            x.len() == rows * groups * w.cols,
            "grouped matmul input size"
        );
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
        Ok(y)
    }

    fn rms_norm(
        &self,
        x: &mut Vec<f32>,
        width: usize,
        w: Option<&Vec<f32>>,
        eps: f32,
    ) -> Result<()> {
        rms_rows(x, width, w.map(|v| v.as_slice()), eps);
        Ok(())
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        heads: usize,
        head_dim: usize,
        pos: RopePos<'_, '_, Self>,
        table: &RopeTable,
        inverse: bool,
        precise: bool,
    ) -> Result<()> {
        let rd = table.inv_f32.len() * 2;
        let tok = heads * head_dim;
        let n = x.len() / tok.max(1);
        let positions: Vec<usize> = match pos {
            RopePos::Tokens(p) => p.host.to_vec(),
            RopePos::Arith { start, step } => (0..n).map(|i| start + i * step).collect(),
        };
        ensure!(
            positions.len() == n,
            "RoPE: {} positions for {n} rows",
            positions.len()
        );
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
        Ok(())
    }

    fn fp8_sim(&self, x: &mut Vec<f32>, width: usize, nope: usize) -> Result<()> {
        x.chunks_mut(width)
            .for_each(|r| crate::quantsim::fp8_round_trip(&mut r[..nope]));
        Ok(())
    }

    fn f16_round(&self, x: &mut Vec<f32>) -> Result<()> {
        crate::quantsim::f16_round(x);
        Ok(())
    }

    fn hadamard_fp4(&self, x: &mut Vec<f32>, width: usize) -> Result<()> {
        x.par_chunks_mut(width).for_each(|r| {
            crate::quantsim::hadamard_inplace(r);
            crate::quantsim::fp4_round_trip(r);
        });
        Ok(())
    }

    fn hc_pre(
        &self,
        x: &Vec<f32>,
        rows: usize,
        cfg: &Config,
        fn_: &CpuMat,
        base: &Vec<f32>,
        scale: &Vec<f32>,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (n, d) = (cfg.n_hc, cfg.dim);
        let mix = self.hc_mix(x, rows, cfg, fn_);
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
        Ok((y, post, comb))
    }

    fn hc_post(
        &self,
        x: &mut Vec<f32>,
        o: &Vec<f32>,
        post: &Vec<f32>,
        comb: &Vec<f32>,
        cfg: &Config,
    ) -> Result<()> {
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
        Ok(())
    }

    fn hc_head(
        &self,
        x: &Vec<f32>,
        rows: usize,
        cfg: &Config,
        fn_: &CpuMat,
        base: &Vec<f32>,
        scale: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let (n, d) = (cfg.n_hc, cfg.dim);
        let mix = self.hc_mix(x, rows, cfg, fn_);
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
        Ok(y)
    }

    fn add(&self, a: &mut Vec<f32>, b: &Vec<f32>) -> Result<()> {
        ensure!(
            a.len() == b.len(),
            "add of {} and {} values",
            a.len(),
            b.len()
        );
        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        Ok(())
    }

    fn add_row_broadcast(&self, a: &mut Vec<f32>, row: &Vec<f32>) -> Result<()> {
        ensure!(
            !row.is_empty() && a.len().is_multiple_of(row.len()),
            "broadcast add of a {}-row to {} values",
            row.len(),
            a.len()
        );
        for r in a.chunks_mut(row.len()) {
            r.iter_mut().zip(row).for_each(|(x, y)| *x += y);
        }
        Ok(())
    }

    fn scale(&self, a: &mut Vec<f32>, s: f32) -> Result<()> {
        a.iter_mut().for_each(|x| *x *= s);
        Ok(())
    }

    fn add_position_rows(
        &self,
        x: &mut Vec<f32>,
        width: usize,
        table: &Vec<f32>,
        pos: &Pos<'_, Self>,
    ) -> Result<()> {
        let n = table.len() / width;
        for (r, &p) in x.chunks_mut(width).zip(pos.host) {
            let row = &table[(p % n) * width..(p % n + 1) * width];
            r.iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    fn route(
        &self,
        logits: &Vec<f32>,
        rows: usize,
        n_exp: usize,
        k: usize,
        bias: Option<&Vec<f32>>,
        hash: Option<HashRoute<'_, Self>>,
        scale: f32,
    ) -> Result<Routing<Self>> {
        ensure!(logits.len() == rows * n_exp, "router logits size");
        let mut ids = Vec::with_capacity(rows * k);
        let mut weights = Vec::with_capacity(rows * k);
        for t in 0..rows {
            let sc: Vec<f32> = logits[t * n_exp..(t + 1) * n_exp]
                .iter()
                .map(|&l| softplus(l).sqrt())
                .collect();
            let sel: Vec<usize> = match &hash {
                Some(h) => {
                    let tok = h.tokens[t] as usize;
                    let row = h
                        .table
                        .get(tok * k..(tok + 1) * k)
                        .ok_or_else(|| anyhow::anyhow!("token {tok} outside the hash table"))?;
                    let mut v = Vec::with_capacity(k);
                    for &e in row {
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
                ids.push(e as i32);
                weights.push(scale * sc[e] / sum);
            }
        }
        Ok(Routing { k, ids, weights })
    }

    fn moe(
        &self,
        x: &Vec<f32>,
        rows: usize,
        routing: &Routing<Self>,
        gate: &CpuMat,
        up: &CpuMat,
        down: &CpuMat,
        limit: f32,
    ) -> Result<Vec<f32>> {
        let d = gate.cols;
        let k = routing.k;
        let t_n = rows;
        ensure!(
            x.len() == t_n * d && routing.ids.len() == t_n * k,
            "MoE input size"
        );
        // tokens of each selected expert (only selected experts are computed;
        // each expert's rows are shared by all its tokens of the batch)
        let mut by_e: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for s in 0..t_n * k {
            let e = routing.ids[s];
            ensure!(
                e >= 0 && (e as usize) < gate.mats,
                "routing names expert {e} of {}",
                gate.mats
            );
            by_e.entry(e as usize).or_default().push(s);
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
        Ok(out)
    }

    fn swiglu_ffn(
        &self,
        x: &Vec<f32>,
        rows: usize,
        gate: &CpuMat,
        up: &CpuMat,
        down: &CpuMat,
        limit: f32,
    ) -> Result<Vec<f32>> {
        let mut g = gate.apply(0, x, rows);
        let u = up.apply(0, x, rows);
        swiglu_inplace(&mut g, &u, limit, 1.0);
        Ok(down.apply(0, &g, rows))
    }

    fn argmax(&self, x: &Vec<f32>, width: usize) -> Result<Vec<u32>> {
        ensure!(width > 0 && x.len().is_multiple_of(width), "argmax shape");
        Ok(x.chunks(width)
            .map(|r| {
                let mut best = 0usize;
                for (i, &v) in r.iter().enumerate() {
                    if v > r[best] {
                        best = i;
                    }
                }
                best as u32
            })
            .collect())
    }

    fn compress(
        &self,
        ring_kv: &mut Vec<f32>,
        ring_score: &mut Vec<f32>,
        kv: &Vec<f32>,
        score: &Vec<f32>,
        seq: Seq,
        g: CompGeom,
    ) -> Result<Option<Vec<f32>>> {
        let (r, w) = (g.ratio, g.width);
        let in_w = g.in_width();
        let rr = g.ring_rows();
        ensure!(
            ring_kv.len() == rr * in_w && ring_score.len() == rr * in_w,
            "compressor frontier size"
        );
        ensure!(
            (seq.row0 + seq.n) * in_w <= kv.len() && kv.len() == score.len(),
            "compressor input size"
        );
        let (w0, count) = g.emitted(seq);
        let mut out = Vec::new();
        if count > 0 {
            out = vec![0f32; count * w];
            out.par_chunks_mut(w).enumerate().for_each(|(i, pooled)| {
                let win = w0 + i;
                // candidates in order: previous window A lanes (overlap, w > 0),
                // then the window's own rows (B lanes in overlap mode)
                let mut cands: Vec<(usize, usize)> = Vec::with_capacity(2 * r);
                if g.overlap && win > 0 {
                    for q in (win - 1) * r..win * r {
                        cands.push((q, 0));
                    }
                }
                let lane = if g.overlap { w } else { 0 };
                for q in win * r..(win + 1) * r {
                    cands.push((q, lane));
                }
                for c in 0..w {
                    let cand = |&(q, off): &(usize, usize)| -> (f32, f32) {
                        let s = comp_row(q, seq, score, ring_score, rr, in_w);
                        let v = comp_row(q, seq, kv, ring_kv, rr, in_w);
                        (s[off + c], v[off + c])
                    };
                    let mut m = f32::NEG_INFINITY;
                    for cd in &cands {
                        m = m.max(cand(cd).0);
                    }
                    let mut den = 0f32;
                    let mut num = 0f32;
                    for cd in &cands {
                        let (s, v) = cand(cd);
                        let e = (s - m).exp();
                        den += e;
                        num += e * v;
                    }
                    pooled[c] = num / den;
                }
            });
        }
        // the chunk's last rows become the frontier (after pooling read the old ones)
        let first = (seq.p0 + seq.n).saturating_sub(rr).max(seq.p0);
        for q in first..seq.p0 + seq.n {
            let s = q % rr;
            let src = seq.row0 + q - seq.p0;
            ring_kv[s * in_w..(s + 1) * in_w].copy_from_slice(&kv[src * in_w..(src + 1) * in_w]);
            ring_score[s * in_w..(s + 1) * in_w]
                .copy_from_slice(&score[src * in_w..(src + 1) * in_w]);
        }
        Ok(if count > 0 { Some(out) } else { None })
    }

    fn indexer_topk(
        &self,
        q: &Vec<f32>,
        w: &Vec<f32>,
        rows: &CpuKv,
        n_rows: usize,
        seq: Seq,
        heads: usize,
        dim: usize,
        k: usize,
    ) -> Result<Vec<i32>> {
        ensure!(
            rows.width == dim && n_rows <= rows.rows,
            "indexer rows shape"
        );
        let mut out = vec![-1i32; seq.n * k];
        out.par_chunks_mut(k).enumerate().for_each(|(i, sel)| {
            let t = seq.row0 + i;
            let p = seq.p0 + i;
            let nv = ((p + 1) / 4).min(n_rows);
            if nv <= k {
                for (j, s) in sel.iter_mut().enumerate().take(nv) {
                    *s = j as i32;
                }
                return;
            }
            let qt = &q[t * heads * dim..(t + 1) * heads * dim];
            let wt = &w[t * heads..(t + 1) * heads];
            let scores: Vec<f32> = (0..nv)
                .map(|r| {
                    let kr = &rows.data[r * dim..(r + 1) * dim];
                    let mut acc = 0f32;
                    for h in 0..heads {
                        let d = dot(&qt[h * dim..(h + 1) * dim], kr);
                        acc += wt[h] * d.max(0.0);
                    }
                    acc
                })
                .collect();
            let mut v: Vec<i32> = topk_desc(&scores, k)
                .into_iter()
                .map(|i| i as i32)
                .collect();
            v.sort_unstable();
            sel.copy_from_slice(&v);
        });
        Ok(out)
    }

    fn attention(
        &self,
        out: &mut Vec<f32>,
        q: &Vec<f32>,
        kv: &Vec<f32>,
        raw: &CpuKv,
        comp: Option<&CpuKv>,
        vis: CompVis<'_, Self>,
        seq: Seq,
        window: usize,
        heads: usize,
        hd: usize,
        sinks: &Vec<f32>,
        scale: f32,
    ) -> Result<()> {
        let tok = heads * hd;
        ensure!(
            raw.width == hd && raw.rows == window,
            "raw window store shape"
        );
        ensure!(
            (seq.row0 + seq.n) * tok <= q.len() && (seq.row0 + seq.n) * tok <= out.len(),
            "attention buffers too small"
        );
        let empty: &[f32] = &[];
        let comp_data = comp.map_or(empty, |c| c.data.as_slice());
        let raw_row = |p: usize| -> &[f32] {
            if p >= seq.p0 {
                let r = seq.row0 + p - seq.p0;
                &kv[r * hd..(r + 1) * hd]
            } else {
                let s = p % window;
                &raw.data[s * hd..(s + 1) * hd]
            }
        };
        let comp_row = |c: usize| -> &[f32] { &comp_data[c * hd..(c + 1) * hd] };
        let rows_out = &mut out[seq.row0 * tok..(seq.row0 + seq.n) * tok];
        rows_out
            .par_chunks_mut(hd)
            .enumerate()
            .for_each(|(th, oh)| {
                let (i, h) = (th / heads, th % heads);
                let t = seq.row0 + i;
                let p = seq.p0 + i;
                let qh = &q[t * tok + h * hd..t * tok + (h + 1) * hd];
                let lo = (p + 1).saturating_sub(window);
                let mut list: Vec<&[f32]> = (lo..=p).map(raw_row).collect();
                match &vis {
                    CompVis::None => {}
                    CompVis::All { ratio } => {
                        let nv = (p + 1) / ratio;
                        list.extend((0..nv).map(comp_row));
                    }
                    CompVis::Selected { sel, k } => {
                        for &c in &sel[i * k..(i + 1) * k] {
                            if c >= 0 {
                                list.push(comp_row(c as usize));
                            }
                        }
                    }
                }
                let s: Vec<f32> = list.iter().map(|r| dot(qh, r) * scale).collect();
                let z = sinks[h];
                let m = s.iter().fold(z, |a, &b| a.max(b));
                let mut den = (z - m).exp();
                let e: Vec<f32> = s.iter().map(|&v| (v - m).exp()).collect();
                den += e.iter().sum::<f32>();
                oh.iter_mut().for_each(|v| *v = 0.0);
                for (r, &ev) in list.iter().zip(&e) {
                    let pr = ev / den;
                    for (ov, &kv) in oh.iter_mut().zip(r.iter()) {
                        *ov += pr * kv;
                    }
                }
            });
        Ok(())
    }
}
