//! Per-sequence ops of the CUDA backend: the compressor, the indexer's
//! top-k and attention (the 512-wide flash-decoding and prefill kernels, the
//! generic fallback).

use super::*;

impl Cuda {
    pub(super) fn compress_op(
        &self,
        ring_kv: &mut CudaBuf,
        ring_score: &mut CudaBuf,
        kv: &CudaBuf,
        score: &CudaBuf,
        seq: Seq,
        g: CompGeom,
    ) -> Result<Option<CudaBuf>> {
        let in_w = g.in_width();
        let rr = g.ring_rows();
        ensure!(
            ring_kv.n == rr * in_w && ring_score.n == rr * in_w,
            "compressor frontier size"
        );
        ensure!(
            (seq.row0 + seq.n) * in_w <= kv.n && kv.n == score.n,
            "compressor input size"
        );
        let (w0, count) = g.emitted(seq);
        let mut out = None;
        if count > 0 {
            let o = self.buf(count * g.width)?;
            let mut a = Args::new();
            a.p(ring_kv.m.ptr)
                .p(ring_score.m.ptr)
                .p(kv.m.ptr)
                .p(score.m.ptr)
                .i(seq.row0 as i32)
                .l(seq.p0 as i64)
                .i(w0 as i32)
                .i(count as i32)
                .i(g.ratio as i32)
                .i(g.width as i32)
                .i(g.overlap as i32)
                .p(o.m.ptr);
            self.launch(
                "comp_pool",
                (blocks(count * g.width, 256), 1, 1),
                256,
                0,
                &mut a,
            )?;
            out = Some(o);
        }
        let end = seq.p0 + seq.n;
        let first = end.saturating_sub(rr).max(seq.p0);
        let n = end - first;
        if n > 0 {
            let mut a = Args::new();
            a.p(ring_kv.m.ptr)
                .p(ring_score.m.ptr)
                .p(kv.m.ptr)
                .p(score.m.ptr)
                .i(seq.row0 as i32)
                .l(seq.p0 as i64)
                .l(first as i64)
                .i(n as i32)
                .i(rr as i32)
                .i(in_w as i32);
            self.launch(
                "comp_ring_store",
                (blocks(n * in_w, 256), 1, 1),
                256,
                0,
                &mut a,
            )?;
        }
        Ok(out)
    }

    pub(super) fn indexer_topk_op(
        &self,
        q: &CudaBuf,
        w: &CudaBuf,
        rows: &CudaKv,
        n_rows: usize,
        seq: Seq,
        heads: usize,
        dim: usize,
        k: usize,
    ) -> Result<CudaIdx> {
        ensure!(
            rows.width == dim && n_rows <= rows.rows,
            "indexer rows shape"
        );
        let ld = n_rows.max(1);
        let scores = self.buf(seq.n * ld)?;
        let smem = (heads * (dim + 1) + heads) * 4;
        ensure!(
            smem <= 48 * 1024,
            "indexer query of {heads} x {dim} exceeds shared memory"
        );
        let mut a = Args::new();
        a.p(q.m.ptr)
            .p(w.m.ptr)
            .p(rows.m.ptr)
            .i(rows.half as i32)
            .i(n_rows as i32)
            .i(seq.row0 as i32)
            .l(seq.p0 as i64)
            .i(heads as i32)
            .i(dim as i32)
            .i(ld as i32)
            .p(scores.m.ptr);
        self.launch(
            "idx_scores",
            (blocks(ld, 32), seq.n as u32, 1),
            256,
            smem as u32,
            &mut a,
        )?;
        let out = self.idx(seq.n * k)?;
        let mut a = Args::new();
        a.p(scores.m.ptr)
            .i(ld as i32)
            .i(n_rows as i32)
            .l(seq.p0 as i64)
            .i(k as i32)
            .p(out.m.ptr);
        self.launch("idx_topk", (seq.n as u32, 1, 1), 1024, 0, &mut a)?;
        Ok(out)
    }

    pub(super) fn attention_op(
        &self,
        out: &mut CudaBuf,
        q: &CudaBuf,
        kv: &CudaBuf,
        raw: &CudaKv,
        comp: Option<&CudaKv>,
        vis: CompVis<'_, Self>,
        seq: Seq,
        window: usize,
        heads: usize,
        hd: usize,
        sinks: &CudaBuf,
        scale: f32,
    ) -> Result<()> {
        ensure!(
            raw.width == hd && raw.rows == window,
            "raw window store shape"
        );
        ensure!(
            (seq.row0 + seq.n) * heads * hd <= q.n && (seq.row0 + seq.n) * heads * hd <= out.n,
            "attention buffers too small"
        );
        let (mode, ratio, sel, k) = match &vis {
            CompVis::None => (0, 1, 0, 0),
            CompVis::All { ratio } => (1, *ratio, 0, 0),
            CompVis::Selected { sel, k } => (2, 1, sel.m.ptr, *k),
        };
        ensure!(mode == 0 || comp.is_some(), "compressed rows missing");
        let (cptr, chalf) = comp.map_or((0, false), |c| (c.m.ptr, c.half));
        // the arguments every attention kernel starts with, after its output
        let args = |dst: CUdeviceptr| {
            let mut a = Args::new();
            a.p(dst)
                .p(q.m.ptr)
                .p(kv.m.ptr)
                .p(raw.m.ptr)
                .i(raw.half as i32)
                .i(window as i32)
                .p(cptr)
                .i(chalf as i32)
                .i(mode)
                .i(ratio as i32)
                .p(sel)
                .i(k as i32)
                .i(seq.row0 as i32)
                .l(seq.p0 as i64)
                .i(heads as i32);
            a
        };
        let mut a = args(out.m.ptr);
        let any = ATT_ANY.load(std::sync::atomic::Ordering::Relaxed);
        // the split decode kernel merges in its last block, one zeroed counter per
        // (token, 8-head group); a batch past the counters takes the prefill kernel
        let split_fits = seq.n * heads.div_ceil(8) <= ATT_COUNTERS;
        if hd == 512 && (seq.n >= 16 || !split_fits) && !any {
            a.p(sinks.m.ptr).f(scale);
            let g = heads.div_ceil(8) as u32;
            self.launch("attention512_h8", (seq.n as u32, g, 1), 256, 0, &mut a)
        } else if hd == 512 && !any {
            // flash-decoding: the visible rows of the last (longest) query in chunks
            let p_last = seq.p0 + seq.n.max(1) - 1;
            let nc = match vis {
                CompVis::None => 0,
                CompVis::All { ratio } => (p_last + 1) / ratio,
                CompVis::Selected { k, .. } => k,
            };
            let nvis = (p_last + 1).min(window) + nc;
            let ch = nvis.div_ceil(ATT_MAX_CHUNKS).next_multiple_of(ATT_CHUNK);
            let nch = nvis.div_ceil(ch);
            let part = self.buf(seq.n * heads * nch * (hd + 2))?;
            let mut a = args(part.m.ptr);
            a.p(sinks.m.ptr)
                .f(scale)
                .i(ch as i32)
                .i(nch as i32)
                .i(seq.n as i32);
            a.p(out.m.ptr).p(self.att_counters.ptr);
            let g = (nch as u32, seq.n as u32, heads.div_ceil(8) as u32);
            self.launch("attention512_split", g, 256, 0, &mut a)
        } else {
            ensure!(hd <= 1024, "head dim {hd}");
            a.i(hd as i32).p(sinks.m.ptr).f(scale);
            self.launch(
                "attention_any",
                (seq.n as u32, heads as u32, 1),
                128,
                0,
                &mut a,
            )
        }
    }
}
