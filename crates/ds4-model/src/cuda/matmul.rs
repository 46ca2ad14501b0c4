//! Matrix products of the CUDA backend: the decode matvec kernels (chunked
//! F32/F16/BF16/Q8_0, dedicated IQ2_XXS/Q2_K expert kernels, the generic
//! one-warp-per-row fallback) and the cuBLAS prefill path.

use super::{blocks, dev::Args, gemm, Cuda, CudaBuf, CudaMat, DevMem, MV_OLD, MV_TOK};
use crate::backend::{Backend, Routing};
use anyhow::{ensure, Result};
use cudarc::driver::sys::CUdeviceptr;

/// Rows per warp of the `mvx_*` expert kernels (`MVX_PROLOGUE(2)` in matvec.cu).
const MVX_ROWS: usize = 2;
/// Row groups (of 8 rows) per block of `mvs_down` (`mvs_gate_up` takes one:
/// its warps do twice the rows), and the most
/// shared memory their staged x row may take (the 48 KB default less the grid table).
const MVS_ITERS: usize = 2;
const MVS_SMEM_MAX: usize = 44 * 1024;
/// Matrices per `mvm_R` launch.
const MVM_MAX: usize = 8;

/// The `mvm_R` kernels' by-value table, field for field `MvTab` in matvec.cu
/// (the same C layout: 296 bytes).
#[repr(C)]
#[derive(Default)]
struct MvTab {
    w: [u64; MVM_MAX],
    y: [u64; MVM_MAX],
    d_off: [i64; MVM_MAX],
    fmt: [i32; MVM_MAX],
    rows: [i32; MVM_MAX],
    bstart: [i32; MVM_MAX + 1],
    n: i32,
}
const _: () = assert!(std::mem::size_of::<MvTab>() == 296);

impl MvTab {
    fn bytes(&self) -> &[u8] {
        // SAFETY: a repr(C) struct of integers without padding (296 = its
        // fields' sizes), viewed as bytes for its lifetime.
        unsafe {
            std::slice::from_raw_parts(
                self as *const MvTab as *const u8,
                std::mem::size_of::<MvTab>(),
            )
        }
    }
}

impl Cuda {
    /// y rows for `ntok` tokens (dense) or `slots` slots (mat_ids given).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mv(
        &self,
        w: &CudaMat,
        mat_ids: CUdeviceptr,
        x: CUdeviceptr,
        x_stride: usize,
        rows_per_group: usize,
        x_div: usize,
        ntok: usize,
        y: CUdeviceptr,
        y_stride: usize,
        slots: usize,
    ) -> Result<()> {
        let scalar = !w.cols.is_multiple_of(32) || !x_stride.is_multiple_of(4);
        if mat_ids == 0 && !scalar && rows_per_group == 0 && w.rows < 512 && w.mats == 1 {
            return self.splitk(w, x, x_stride, ntok, y, y_stride, 0);
        }
        ensure!(
            slots <= 65535,
            "{slots} expert slots in one launch (limit 65535)"
        );
        let grid_y = slots.max(1) as u32;
        let new_kernels = !MV_OLD.load(std::sync::atomic::Ordering::Relaxed);
        if new_kernels
            && !scalar
            && ntok == 1
            && (w.fmt == 4 || w.fmt == 6)
            && w.cols.is_multiple_of(256)
        {
            // IQ2_XXS / Q2_K (routed experts): MVX_ROWS rows per warp, 4 warps per block
            let mut a = Args::new();
            a.p(w.m.ptr)
                .l(w.mat_bytes)
                .p(mat_ids)
                .i(w.rows as i32)
                .i(w.cols as i32)
                .p(x)
                .l(x_stride as i64)
                .i(x_div.max(1) as i32)
                .p(y)
                .l(y_stride as i64);
            let name = if w.fmt == 6 { "mvx_iq2" } else { "mvx_q2k" };
            let grid = (blocks(w.rows.div_ceil(MVX_ROWS), 4), grid_y, 1);
            return self.launch(name, grid, 128, 0, &mut a);
        }
        // the chunked kernels and the one-warp-per-row fallback share their arguments
        let mut a = Args::new();
        a.i(w.fmt)
            .p(w.m.ptr)
            .l(w.mat_bytes)
            .l(w.d_off)
            .p(mat_ids)
            .i(w.rows as i32)
            .i(w.cols as i32)
            .p(x)
            .l(x_stride as i64)
            .i(rows_per_group as i32)
            .i(x_div.max(1) as i32)
            .i(ntok as i32)
            .p(y)
            .l(y_stride as i64);
        let chunked = match !scalar && new_kernels && ntok <= MV_TOK {
            true => self.chunked_kernel(w, rows_per_group, ntok, slots),
            false => None,
        };
        if let Some((r, name)) = chunked {
            let grid = (blocks(w.rows.div_ceil(r), 4), grid_y, 1);
            return self.launch(name, grid, 128, 0, &mut a);
        }
        let name = if scalar { "matvec_scalar" } else { "matvec" };
        self.launch(name, (blocks(w.rows, 8), grid_y, 1), 256, 0, &mut a)
    }

    /// Routed experts summed over each token's slots (+ `addend`), by the
    /// cuBLAS path for big batches, else the fused or per-matrix kernels.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn moe_sum(
        &self,
        x: &CudaBuf,
        rows: usize,
        routing: &Routing<Self>,
        gate: &CudaMat,
        up: &CudaMat,
        down: &CudaMat,
        limit: f32,
        addend: Option<&CudaBuf>,
    ) -> Result<CudaBuf> {
        ensure!(x.n == rows * gate.cols, "MoE input size");
        ensure!(
            gate.mats == up.mats && up.mats == down.mats && down.cols == gate.rows,
            "expert stacks disagree in shape"
        );
        let ys = match self.use_gemm(rows) {
            Some(blas) => self.moe_gemm(blas, x, rows, routing, gate, up, down, limit)?,
            None => match self.moe_fused(x, rows, routing, gate, up, down, limit)? {
                Some(ys) => ys,
                None => self.moe_unfused(x, rows, routing, gate, up, down, limit)?,
            },
        };
        self.sum_slots(&ys, routing.k, gate.cols, rows, addend)
    }

    /// Routed experts of a matvec-sized batch in two launches (`mvs_gate_up`
    /// with the SwiGLU fused, `mvs_down`): the slot outputs `[slots][d]`, if the stacks are IQ2_XXS / Q2_K
    /// with rows of whole 256-blocks that fit in shared memory; `None`: the
    /// caller takes the per-matrix path.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn moe_fused(
        &self,
        x: &CudaBuf,
        rows: usize,
        routing: &Routing<Self>,
        gate: &CudaMat,
        up: &CudaMat,
        down: &CudaMat,
        limit: f32,
    ) -> Result<Option<CudaBuf>> {
        let (d, f, k) = (gate.cols, gate.rows, routing.k);
        let slots = rows * k;
        let two_bit = |w: &CudaMat| w.fmt == 4 || w.fmt == 6;
        let fits = |cols: usize| cols.is_multiple_of(256) && cols * 4 <= MVS_SMEM_MAX;
        if MV_OLD.load(std::sync::atomic::Ordering::Relaxed)
            || !(two_bit(gate) && two_bit(down) && fits(d) && fits(f))
            || gate.fmt != up.fmt
            || gate.mat_bytes != up.mat_bytes
            || up.rows != f
            || slots == 0
        {
            return Ok(None);
        }
        ensure!(slots <= 65535, "{slots} expert slots in one launch");
        let ids = routing.ids.m.ptr;
        let mid = self.buf(slots * f)?;
        let mut a = Args::new();
        a.i(gate.fmt)
            .p(gate.m.ptr)
            .p(up.m.ptr)
            .l(gate.mat_bytes)
            .p(ids)
            .i(f as i32)
            .i(d as i32)
            .p(x.m.ptr)
            .i(k as i32)
            .p(routing.weights.m.ptr)
            .f(limit)
            .p(mid.m.ptr)
            .i(1);
        let bx = f.div_ceil(8) as u32;
        self.launch(
            "mvs_gate_up",
            (bx, slots as u32, 1),
            128,
            (d * 4) as u32,
            &mut a,
        )?;
        let ys = self.buf(slots * d)?;
        let mut a = Args::new();
        a.i(down.fmt)
            .p(down.m.ptr)
            .l(down.mat_bytes)
            .p(ids)
            .i(d as i32)
            .i(f as i32)
            .p(mid.m.ptr)
            .p(ys.m.ptr)
            .i(MVS_ITERS as i32);
        let bx = d.div_ceil(8 * MVS_ITERS) as u32;
        self.launch(
            "mvs_down",
            (bx, slots as u32, 1),
            128,
            (f * 4) as u32,
            &mut a,
        )?;
        Ok(Some(ys))
    }

    /// Routed experts of a matvec-sized batch, one launch per matrix: the slot
    /// outputs `[slots][d]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn moe_unfused(
        &self,
        x: &CudaBuf,
        rows: usize,
        routing: &Routing<Self>,
        gate: &CudaMat,
        up: &CudaMat,
        down: &CudaMat,
        limit: f32,
    ) -> Result<CudaBuf> {
        let (d, f, k) = (gate.cols, gate.rows, routing.k);
        let slots = rows * k;
        let g = self.buf(slots * f)?;
        let u = self.buf(slots * f)?;
        let ids = routing.ids.m.ptr;
        self.mv(gate, ids, x.m.ptr, d, 0, k, 1, g.m.ptr, f, slots)?;
        self.mv(up, ids, x.m.ptr, d, 0, k, 1, u.m.ptr, f, slots)?;
        let mid = self.swiglu_k(&g, &u, routing.weights.m.ptr, f, limit)?;
        let ys = self.buf(slots * d)?;
        self.mv(down, ids, mid.m.ptr, f, 0, 1, 1, ys.m.ptr, d, slots)?;
        Ok(ys)
    }

    /// `matmul` of several matrices on one decode row: the F32/F16/BF16/Q8_0
    /// ones whose rows split into whole chunks run together in `mvm_R`
    /// launches (up to MVM_MAX matrices each), the rest one by one.
    pub(super) fn matmul_many_impl(
        &self,
        ws: &[&CudaMat],
        x: &CudaBuf,
        rows: usize,
    ) -> Result<Vec<CudaBuf>> {
        let cw = |w: &CudaMat| match w.fmt {
            0 => Some(4),
            1 | 2 => Some(8),
            3 => Some(16),
            _ => None,
        };
        let cols = ws.first().map_or(0, |w| w.cols);
        let fits = |w: &CudaMat, r: usize| {
            cw(w).is_some_and(|c| w.cols.is_multiple_of(c) && (w.cols / c).is_multiple_of(256 / r))
        };
        let on = rows == 1
            && x.n == cols
            && self.use_gemm(rows).is_none()
            && !MV_OLD.load(std::sync::atomic::Ordering::Relaxed);
        let group: Vec<usize> = (0..ws.len())
            .filter(|&i| on && ws[i].mats == 1 && ws[i].cols == cols && fits(ws[i], 1))
            .collect();
        let mut out: Vec<Option<CudaBuf>> = ws.iter().map(|_| None).collect();
        for part in group.chunks(MVM_MAX) {
            if part.len() < 2 {
                continue;
            }
            // most rows per warp (x reuse) that still gives two blocks per SM
            let want = 2 * self.dev.n_sm.max(1) as usize;
            let nblocks = |r: usize| -> usize {
                part.iter()
                    .map(|&i| ws[i].rows.div_ceil(r).div_ceil(4))
                    .sum()
            };
            let r = [8, 4, 2, 1]
                .into_iter()
                .find(|&r| part.iter().all(|&i| fits(ws[i], r)) && nblocks(r) >= want)
                .unwrap_or(1);
            let mut tab = MvTab::default();
            let mut ys = Vec::with_capacity(part.len());
            for (e, &i) in part.iter().enumerate() {
                let y = self.buf(ws[i].rows)?;
                tab.w[e] = ws[i].m.ptr;
                tab.y[e] = y.m.ptr;
                tab.d_off[e] = ws[i].d_off;
                tab.fmt[e] = ws[i].fmt;
                tab.rows[e] = ws[i].rows as i32;
                tab.bstart[e + 1] = tab.bstart[e] + ws[i].rows.div_ceil(r).div_ceil(4) as i32;
                ys.push(y);
            }
            let total = tab.bstart[part.len()];
            tab.bstart[part.len()..].fill(total);
            tab.n = part.len() as i32;
            let mut a = Args::new();
            a.blob(tab.bytes()).i(cols as i32).p(x.m.ptr);
            let name = match r {
                8 => "mvm_8",
                4 => "mvm_4",
                2 => "mvm_2",
                _ => "mvm_1",
            };
            self.launch(name, (total as u32, 1, 1), 128, 0, &mut a)?;
            for (&i, y) in part.iter().zip(ys) {
                out[i] = Some(y);
            }
        }
        ws.iter()
            .zip(out)
            .map(|(w, y)| match y {
                Some(y) => Ok(y),
                None => self.matmul(w, x, rows),
            })
            .collect()
    }

    pub(super) fn swiglu_k(
        &self,
        g: &CudaBuf,
        u: &CudaBuf,
        w: CUdeviceptr,
        width: usize,
        limit: f32,
    ) -> Result<CudaBuf> {
        let out = self.buf(g.n)?;
        let mut a = Args::new();
        a.p(g.m.ptr)
            .p(u.m.ptr)
            .p(w)
            .i(width as i32)
            .l(g.n as i64)
            .f(limit)
            .p(out.m.ptr);
        self.launch("swiglu", (blocks(g.n, 256), 1, 1), 256, 0, &mut a)?;
        Ok(out)
    }

    /// `matmul` of a short matrix (the split-K kernel) for at most MV_TOK
    /// rows, with each row's sum of x² (f64, as pairs of f32 slots) from the
    /// same pass; `None` where that kernel does not apply.
    pub(super) fn matmul_with_ss(
        &self,
        w: &CudaMat,
        x: &CudaBuf,
        rows: usize,
    ) -> Result<Option<(CudaBuf, CudaBuf)>> {
        let splitk = w.mats == 1
            && w.rows < 512
            && w.cols.is_multiple_of(32)
            && (1..=MV_TOK).contains(&rows)
            && x.n == rows * w.cols
            && self.use_gemm(rows).is_none()
            && !MV_OLD.load(std::sync::atomic::Ordering::Relaxed);
        if !splitk {
            return Ok(None);
        }
        let y = self.buf(rows * w.rows)?;
        let ss = self.buf(2 * rows)?;
        self.splitk(w, x.m.ptr, w.cols, rows, y.m.ptr, w.rows, ss.m.ptr)?;
        Ok(Some((y, ss)))
    }

    /// The split-K kernel (one block per output row) for `ntok` tokens; with
    /// `ss` non-null it also writes each token's sum of x² (f64).
    #[allow(clippy::too_many_arguments)]
    fn splitk(
        &self,
        w: &CudaMat,
        x: CUdeviceptr,
        x_stride: usize,
        ntok: usize,
        y: CUdeviceptr,
        y_stride: usize,
        ss: CUdeviceptr,
    ) -> Result<()> {
        let mut a = Args::new();
        a.i(w.fmt)
            .p(w.m.ptr)
            .l(w.d_off)
            .i(w.rows as i32)
            .i(w.cols as i32)
            .p(x)
            .l(x_stride as i64)
            .i(ntok as i32)
            .p(y)
            .l(y_stride as i64)
            .p(ss);
        self.launch("matvec_splitk", (w.rows as u32, 1, 1), 256, 0, &mut a)
    }

    /// `down · SwiGLU(g, u)` of one token in one launch (`mvc_sw_R`, the
    /// SwiGLU formed while x is read), where the chunked kernels take `down`.
    pub(super) fn down_swiglu(
        &self,
        down: &CudaMat,
        g: &CudaBuf,
        u: &CudaBuf,
        rows: usize,
        limit: f32,
    ) -> Result<Option<CudaBuf>> {
        let on = rows == 1
            && down.mats == 1
            && g.n == down.cols
            && u.n == down.cols
            && down.cols.is_multiple_of(4)
            && self.use_gemm(rows).is_none()
            && !MV_OLD.load(std::sync::atomic::Ordering::Relaxed);
        let Some((r, _)) = on.then(|| self.chunked_kernel(down, 0, 1, 1)).flatten() else {
            return Ok(None);
        };
        let name = match r {
            8 => "mvc_sw_8",
            4 => "mvc_sw_4",
            2 => "mvc_sw_2",
            _ => "mvc_sw_1",
        };
        let y = self.buf(down.rows)?;
        let mut a = Args::new();
        a.i(down.fmt)
            .p(down.m.ptr)
            .l(down.d_off)
            .i(down.rows as i32)
            .i(down.cols as i32)
            .p(g.m.ptr)
            .p(u.m.ptr)
            .f(limit)
            .p(y.m.ptr);
        let grid = (blocks(down.rows.div_ceil(r), 4), 1, 1);
        self.launch(name, grid, 128, 0, &mut a)?;
        Ok(Some(y))
    }

    /// Sum of each token's `k` slot rows of width `d` (routed experts), plus
    /// `addend` (the shared expert) when given.
    pub(super) fn sum_slots(
        &self,
        ys: &CudaBuf,
        k: usize,
        d: usize,
        rows: usize,
        addend: Option<&CudaBuf>,
    ) -> Result<CudaBuf> {
        ensure!(
            ys.n == rows * k * d && addend.is_none_or(|b| b.n == rows * d),
            "expert slot sum shapes"
        );
        let out = self.buf(rows * d)?;
        let mut a = Args::new();
        a.p(ys.m.ptr)
            .i(k as i32)
            .i(d as i32)
            .i(rows as i32)
            .p(addend.map_or(0, |b| b.m.ptr))
            .p(out.m.ptr);
        self.launch("sum_slots", (blocks(rows * d, 256), 1, 1), 256, 0, &mut a)?;
        Ok(out)
    }

    /// The chunked matvec kernel for `w` (rows per warp, name), if its format
    /// and shape fit: F32/F16/BF16/Q8_0 rows whose 16-byte chunk count is a
    /// multiple of 32*K. Takes the most rows per warp (x reuse) that still
    /// gives two blocks per SM, else the fewest.
    pub(super) fn chunked_kernel(
        &self,
        w: &CudaMat,
        rows_per_group: usize,
        ntok: usize,
        slots: usize,
    ) -> Option<(usize, &'static str)> {
        let cw = match w.fmt {
            0 => 4,
            1 | 2 => 8,
            3 => 16,
            _ => return None,
        };
        if !w.cols.is_multiple_of(cw) {
            return None;
        }
        let cpr = w.cols / cw;
        let names: [(usize, &'static str, &'static str); 4] = [
            (8, "mvc_8_1", "mvc_8_8"),
            (4, "mvc_4_1", "mvc_4_8"),
            (2, "mvc_2_1", "mvc_2_8"),
            (1, "mvc_1_1", "mvc_1_8"),
        ];
        let valid = |r: usize| {
            let k = 8 / r;
            cpr.is_multiple_of(32 * k) && (rows_per_group == 0 || rows_per_group.is_multiple_of(r))
        };
        let want = 2 * self.dev.n_sm.max(1) as usize;
        let pick = names
            .iter()
            .filter(|n| valid(n.0))
            .find(|n| w.rows.div_ceil(n.0).div_ceil(4) * slots.max(1) >= want)
            .or_else(|| names.iter().rev().find(|n| valid(n.0)))?;
        Some((pick.0, if ntok == 1 { pick.1 } else { pick.2 }))
    }

    pub(super) fn dense(
        &self,
        w: &CudaMat,
        x: &CudaBuf,
        rows: usize,
        groups: usize,
    ) -> Result<CudaBuf> {
        let in_cols = w.cols * groups.max(1);
        ensure!(
            x.n == rows * in_cols,
            "matmul input of {} values for {rows} rows of {in_cols}",
            x.n
        );
        let y = self.buf(rows * w.rows)?;
        if let Some(blas) = self.use_gemm(rows) {
            let wh = self.weights_f16(w, 0)?;
            let xh = self.to_f16(x)?;
            let g = groups.max(1);
            let out_g = w.rows / g;
            blas.gemm(
                out_g,
                rows,
                w.cols,
                wh.ptr,
                w.cols,
                out_g * w.cols,
                xh.ptr,
                in_cols,
                w.cols,
                y.m.ptr,
                w.rows,
                out_g,
                g,
            )?;
            return Ok(y);
        }
        let rpg = if groups > 1 { w.rows / groups } else { 0 };
        let mut t = 0;
        while t < rows {
            let nt = (rows - t).min(MV_TOK);
            self.mv(
                w,
                0,
                x.m.ptr + (t * in_cols * 4) as u64,
                in_cols,
                rpg,
                1,
                nt,
                y.m.ptr + (t * w.rows * 4) as u64,
                w.rows,
                1,
            )?;
            t += nt;
        }
        Ok(y)
    }

    /// Unweighted RMSNorm of every `width` row of `x` into a new buffer.
    pub(super) fn rms_to(&self, x: &CudaBuf, width: usize, eps: f32) -> Result<CudaBuf> {
        let o = self.buf(x.n)?;
        let mut a = Args::new();
        a.p(x.m.ptr).p(o.m.ptr).i(width as i32).p(0).f(eps);
        let bs = if width >= 1024 { 1024 } else { 256 };
        self.launch(
            "rms_norm",
            ((x.n / width.max(1)) as u32, 1, 1),
            bs,
            0,
            &mut a,
        )?;
        Ok(o)
    }

    pub(super) fn use_gemm(&self, rows: usize) -> Option<&gemm::Blas> {
        match &self.blas {
            Some(b) if self.gemm_min > 0 && rows >= self.gemm_min => Some(b),
            _ => None,
        }
    }

    /// Matrix `e` of `w` decoded to f16 `[rows][cols]`.
    pub(super) fn weights_f16(&self, w: &CudaMat, e: usize) -> Result<DevMem> {
        let n = w.rows * w.cols;
        let out = DevMem::new(&self.dev, n * 2)?;
        let nsub = w.cols.div_ceil(32);
        let mut a = Args::new();
        a.i(w.fmt)
            .p(w.m.ptr + (e as i64 * w.mat_bytes) as u64)
            .l(w.d_off)
            .i(w.cols as i32)
            .l(0)
            .l(w.rows as i64)
            .p(out.ptr);
        self.launch(
            "dequant_f16",
            (blocks(w.rows * nsub, 256), 1, 1),
            256,
            0,
            &mut a,
        )?;
        Ok(out)
    }

    pub(super) fn to_f16(&self, x: &CudaBuf) -> Result<DevMem> {
        let out = DevMem::new(&self.dev, x.n * 2)?;
        let mut a = Args::new();
        a.p(x.m.ptr).l(x.n as i64).p(out.ptr);
        self.launch("f32_to_f16", (blocks(x.n, 256), 1, 1), 256, 0, &mut a)?;
        Ok(out)
    }

    /// Routed experts of a prefill batch through cuBLAS: one host read of the
    /// routing, tokens grouped by expert, one GEMM per expert and matrix; the
    /// slot outputs `[slots][d]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn moe_gemm(
        &self,
        blas: &gemm::Blas,
        x: &CudaBuf,
        rows: usize,
        routing: &Routing<Self>,
        gate: &CudaMat,
        up: &CudaMat,
        down: &CudaMat,
        limit: f32,
    ) -> Result<CudaBuf> {
        let (d, f, k) = (gate.cols, gate.rows, routing.k);
        let slots = rows * k;
        let ids = self.download_idx(&routing.ids)?;
        let mut lists: Vec<Vec<i32>> = vec![Vec::new(); gate.mats];
        for (s, &e) in ids.iter().enumerate() {
            ensure!(
                e >= 0 && (e as usize) < gate.mats,
                "routing names expert {e}"
            );
            lists[e as usize].push(s as i32);
        }
        let perm: Vec<i32> = lists.concat();
        let dperm = self.upload_idx(&perm)?;
        let xg = DevMem::new(&self.dev, slots * d * 2)?;
        let mut a = Args::new();
        a.p(x.m.ptr)
            .i(d as i32)
            .p(dperm.m.ptr)
            .i(k as i32)
            .i(slots as i32)
            .p(xg.ptr);
        self.launch("gather_f16", (blocks(slots * d, 256), 1, 1), 256, 0, &mut a)?;
        let g = self.buf(slots * f)?;
        let u = self.buf(slots * f)?;
        let mut off = 0usize;
        for (e, l) in lists.iter().enumerate() {
            let c = l.len();
            if c == 0 {
                continue;
            }
            for (mat, out) in [(gate, &g), (up, &u)] {
                let wh = self.weights_f16(mat, e)?;
                blas.gemm(
                    f,
                    c,
                    d,
                    wh.ptr,
                    d,
                    0,
                    xg.ptr + (off * d * 2) as u64,
                    d,
                    0,
                    out.m.ptr + (off * f * 4) as u64,
                    f,
                    0,
                    1,
                )?;
            }
            off += c;
        }
        let mid = DevMem::new(&self.dev, slots * f * 2)?;
        let mut a = Args::new();
        a.p(g.m.ptr)
            .p(u.m.ptr)
            .p(routing.weights.m.ptr)
            .p(dperm.m.ptr)
            .i(f as i32)
            .i(slots as i32)
            .f(limit)
            .p(mid.ptr);
        self.launch("swiglu_f16", (blocks(slots * f, 256), 1, 1), 256, 0, &mut a)?;
        drop((g, u));
        let yp = self.buf(slots * d)?;
        let mut off = 0usize;
        for (e, l) in lists.iter().enumerate() {
            let c = l.len();
            if c == 0 {
                continue;
            }
            let wh = self.weights_f16(down, e)?;
            blas.gemm(
                d,
                c,
                f,
                wh.ptr,
                f,
                0,
                mid.ptr + (off * f * 2) as u64,
                f,
                0,
                yp.m.ptr + (off * d * 4) as u64,
                d,
                0,
                1,
            )?;
            off += c;
        }
        let ys = self.buf(slots * d)?;
        let mut a = Args::new();
        a.p(yp.m.ptr)
            .i(d as i32)
            .p(dperm.m.ptr)
            .i(slots as i32)
            .p(ys.m.ptr);
        self.launch(
            "scatter_rows",
            (blocks(slots * d, 256), 1, 1),
            256,
            0,
            &mut a,
        )?;
        Ok(ys)
    }
}
